"""Learning curves on the synthetic user-tagging data: AUC vs training rows, next to the oracle.

    python -m benchmarks.learning_curves            # 200k rows x 3 seeds, 1M rows x 1 seed
    python -m benchmarks.learning_curves --full     # 200k / 1M x 3 seeds, 4M x 1 seed, 200k x 5 epochs x 3 seeds

Is conversion data-starved? Every model of the MVKE line-up trains through the library path
(:func:`mvke_tf.train.train_and_evaluate`, the settings of ``benchmarks.models``) on the first N
training rows of one generated world and is evaluated on one fixed eval day, so the only thing
that changes along a curve is the number of training rows. Two references bracket what is
reachable: the oracle (true probabilities) and an *observable reference*, a logistic model that
sees only what the features carry (see :func:`reference_features`), fitted on the true
probabilities instead of the 0/1 labels. Each (model, rows, seed) result is cached as JSON under
the work directory, so an interrupted or extended run (``--full`` after the default) reuses them.

One epoch at every size means a larger size is both more distinct rows and more optimisation
steps. The *same-steps* cells (``--same-steps SEEDS``, part of ``--full``) separate the two: the
smallest size trained for as many epochs as it takes to match the next size's steps (200k rows x 5
epochs against 1M rows x 1 epoch), so what is left between them is the effect of distinct rows.

Modules, one job each (``python -m benchmarks.learning_curves`` runs :func:`runner.main`):

* :mod:`~benchmarks.learning_curves.data_prefixes`: the world on disk, one prefix per size, the shared eval day;
* :mod:`~benchmarks.learning_curves.cell_cache`: one training cell, trained or loaded from its cached JSON result;
* :mod:`~benchmarks.learning_curves.reference`: the reference models (logistic regressions) and their AUC;
* :mod:`~benchmarks.learning_curves.seed_summary`: the cells over seeds (mean ± std), the gap share, the seed noise;
* :mod:`~benchmarks.learning_curves.plots`: the figure;
* :mod:`~benchmarks.learning_curves.markdown_tables`: the section's tables;
* :mod:`~benchmarks.learning_curves.prose`: the section's reading, computed from the numbers;
* :mod:`~benchmarks.learning_curves.runner`: the command line: the plan, the run, the section in docs/benchmarks.md.
"""

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from benchmarks.learning_curves.cell_cache import cell_path, run_cell
from benchmarks.learning_curves.data_prefixes import (
    EVAL_ROWS,
    MAX_TRAIN_ROWS,
    NUM_USERS,
    SHARD_ROWS,
    TASKS,
    file_sha256,
    prepare_data,
    size_dir,
    world_config,
)
from benchmarks.learning_curves.markdown_tables import same_steps_table, tables
from benchmarks.learning_curves.plots import plot
from benchmarks.learning_curves.prose import reading, same_steps_reading
from benchmarks.learning_curves.reference import (
    REFERENCE_KINDS,
    _group_ids,
    _repeated,
    compute_references,
    fit_logistic,
    fit_reference,
    fit_reference_on_labels,
    logistic_score,
    read_rows,
    reference_features,
    reference_scores,
)
from benchmarks.learning_curves.runner import (
    DEFAULT_PLAN,
    FULL_PLAN,
    FULL_SAME_STEPS_SEEDS,
    MODELS,
    _plan_cells,
    main,
)
from benchmarks.learning_curves.seed_summary import FLOOR_AUC, _rows_by_size, gap_share, seed_noise, summarize

# What callers and tests used from the single module this package was: still importable from here.
__all__ = [
    "DEFAULT_PLAN",
    "EVAL_ROWS",
    "FLOOR_AUC",
    "FULL_PLAN",
    "FULL_SAME_STEPS_SEEDS",
    "MAX_TRAIN_ROWS",
    "MODELS",
    "NUM_USERS",
    "REFERENCE_KINDS",
    "SHARD_ROWS",
    "TASKS",
    "_group_ids",
    "_plan_cells",
    "_repeated",
    "_rows_by_size",
    "cell_path",
    "compute_references",
    "file_sha256",
    "fit_logistic",
    "fit_reference",
    "fit_reference_on_labels",
    "gap_share",
    "logistic_score",
    "main",
    "plot",
    "prepare_data",
    "read_rows",
    "reading",
    "reference_features",
    "reference_scores",
    "run_cell",
    "same_steps_reading",
    "same_steps_table",
    "seed_noise",
    "size_dir",
    "summarize",
    "tables",
    "world_config",
]
