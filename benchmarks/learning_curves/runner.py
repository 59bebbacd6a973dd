"""Learning curves on the synthetic user-tagging data: AUC vs training rows, next to the oracle.

The benchmark's command line (:func:`main`; the line above is its ``--help`` description): the plan of
cells in run order, each trained or loaded from the cache, the references, then the tables, the figure
and the section in docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmarks.learning_curves.cell_cache import cell_path, run_cell
from benchmarks.learning_curves.data_prefixes import EVAL_ROWS, MAX_TRAIN_ROWS, TASKS, prepare_data, world_config
from benchmarks.learning_curves.markdown_tables import same_steps_table, tables
from benchmarks.learning_curves.plots import plot
from benchmarks.learning_curves.prose import reading
from benchmarks.learning_curves.reference import compute_references
from benchmarks.learning_curves.seed_summary import FLOOR_AUC, _rows_by_size, _rows_label

# In run priority: MVKE-mt and the no-MTL baseline first (see _plan_cells); MVKE-st trains slowest.
MODELS = ("mvke_mt", "two_tower", "mmoe", "cgc", "mvke_st")
DEFAULT_PLAN = {200_000: 3, 1_000_000: 1}
FULL_PLAN = {200_000: 3, 1_000_000: 3, 4_000_000: 1}
# Seeds of the same-steps cells (smallest size, as many epochs as the next size's steps) in --full.
FULL_SAME_STEPS_SEEDS = 3
FIGURES = Path(__file__).resolve().parent.parent.parent / "docs" / "figures"


def _plan_cells(plan: Mapping[int, int], models: Sequence[str]) -> list[tuple[str, int, int]]:
    """Cells in run order, so that a run cut short by ``--max-minutes`` still has whole curves: seed 0 at
    every size for two models at a time (smallest size first), then the further seeds."""
    order = []
    for first in range(0, len(models), 2):
        for n in sorted(plan):
            order += [(m, n, 0) for m in models[first : first + 2]]
    for seed in range(1, max(plan.values())):
        for n in sorted(plan):
            if seed < plan[n]:
                order += [(m, n, seed) for m in models]
    return order


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--full",
        action="store_true",
        help="200k / 1M rows x 3 seeds, 4M rows x 1 seed, and the same-steps cells (200k rows x 5 epochs) x 3 seeds",
    )
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument(
        "--sizes", nargs="+", type=int, default=None, help="train only these sizes of the plan (the report keeps all)"
    )
    p.add_argument(
        "--same-steps",
        type=int,
        default=None,
        metavar="SEEDS",
        help="seeds of the same-steps cells: the smallest size for as many epochs as the next size's steps "
        f"(default: {FULL_SAME_STEPS_SEEDS} with --full, else 0)",
    )
    p.add_argument("--scale", type=float, default=0.25, help="hidden layer scale vs the paper's Table 5")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--max-minutes", type=float, default=None, help="start no new cell after this much training time")
    p.add_argument("--report-only", action="store_true", help="train nothing: tabulate the cached cells")
    p.add_argument("--work-dir", default="runs/learning_curves")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args(argv)
    from mvke_tf.models import USER_TAG_MODEL_NAMES

    bad = [m for m in args.models if m not in USER_TAG_MODEL_NAMES]
    if bad:
        p.error(f"--models: {bad} unknown; use some of {list(USER_TAG_MODEL_NAMES)}")
    plan = FULL_PLAN if args.full else DEFAULT_PLAN
    if args.sizes is not None and not set(args.sizes) <= set(plan):
        p.error(f"--sizes: {sorted(set(args.sizes) - set(plan))} not in the plan; use some of {sorted(plan)}")
    same_seeds = args.same_steps if args.same_steps is not None else FULL_SAME_STEPS_SEEDS * args.full
    if same_seeds < 0:
        p.error(f"--same-steps {same_seeds}: a number of seeds is 0 or more; fix: --same-steps 3")
    root = Path(args.work_dir)
    config = world_config()
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {msg}", file=sys.stderr, flush=True)

    info = prepare_data(config, root, max(args.sizes or plan), log=log)
    log(f"data ready: eval {info['eval']['rows']:,} rows, sha256 {info['eval']['sha256'][:16]}")
    cells, not_run = [], []
    train_start = time.perf_counter()
    small, following = sorted(plan)[:2]
    repeat = following // small  # epochs over the smallest size that take the next size's steps
    same_cells, same_not_run = [], []
    runs = [(model, n, seed, 1) for model, n, seed in _plan_cells(plan, args.models)]
    runs += [(model, small, seed, repeat) for seed in range(same_seeds) for model in args.models]
    for model, n, seed, epochs in runs:
        cached = cell_path(root, model, n, seed, epochs).exists()
        over = args.max_minutes is not None and time.perf_counter() - train_start > 60 * args.max_minutes
        skipped = args.sizes is not None and n not in args.sizes
        if (over or skipped or args.report_only) and not cached:
            (not_run if epochs == 1 else same_not_run).append({"model": model, "train_rows": n, "seed": seed})
            continue
        cell = run_cell(root, model, n, seed, args, epochs=epochs)
        (cells if epochs == 1 else same_cells).append(cell)
        log(
            f"{model:<10} {n:>9,} rows{f' x {epochs} epochs' if epochs > 1 else ''} seed {seed}: click "
            f"{cell['auc']['click']:.4f} conversion {cell['auc']['conversion']:.4f} "
            f"({cell['train_examples_per_second']:,.0f} ex/s)"
        )
    ref_path = root / "references.json"
    refs = json.loads(ref_path.read_text()) if ref_path.exists() else None
    if refs is None or refs.get("generator") != config.to_dict():
        log("fitting the references")
        refs = {**compute_references(config, root), "generator": config.to_dict()}
        ref_path.write_text(json.dumps(refs, indent=2))
    # The eval day is one file shared by every size: each cell must have scored the same rows.
    same_eval = all(
        c["eval_examples"] == info["eval"]["rows"] and c["eval_positives"] == info["eval"]["positives"]
        for c in cells + same_cells
    )
    # (to 1e-5: the files round probabilities to 6 decimals, the data's own figure is from unrounded ones)
    oracle_agrees = all(
        abs(refs["oracle"][t] - info["eval"]["oracle_auc"][t]) < 1e-5
        and all(abs(c["oracle_auc"][t] - refs["oracle"][t]) < 1e-9 for c in cells + same_cells)
        for t in TASKS
    )
    results = {
        "plan": {str(n): s for n, s in plan.items()},
        "settings": {"scale": args.scale, "batch_size": args.batch_size, "learning_rate": args.learning_rate},
        "epochs": 1,
        "eval": info["eval"],
        "eval_identical_across_cells": same_eval,
        "floor_auc": FLOOR_AUC,
        "cells": cells,
        "not_run": not_run,
        "same_steps": {
            "rows": small,
            "epochs": repeat,
            "compare_rows": following,
            "seeds": same_seeds,
            "cells": same_cells,
            "not_run": same_not_run,
        },
        "references": refs,
    }
    table = tables(results)
    rows_or_steps = same_steps_table(results)
    if rows_or_steps:
        table += (
            f"\n\nRows or steps: the {_rows_label(small)}-row prefix trained for {repeat} epochs takes the steps of "
            f"{_rows_label(following)} rows in one (mean ± seed std):\n\n{rows_or_steps}"
        )
    print(table)
    text = reading(results)
    print(text)
    if args.no_write:
        return 0
    from benchmarks.report import machine, section, write_section

    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "learning_curves.json").write_text(json.dumps(results, indent=2))
    plot(results, FIGURES / "learning_curves.png")
    cmd = "python -m benchmarks.learning_curves " + " ".join(sys.argv[1:] if argv is None else argv)
    ran = ", ".join(f"{_rows_label(n)} rows × {s} seed{'s' * (s > 1)}" for n, s in sorted(plan.items()))
    missing = "; ".join(
        [f"{c['model']} {_rows_label(c['train_rows'])} seed {c['seed']}" for c in not_run]
        + [f"{c['model']} {_rows_label(c['train_rows'])} × {repeat} epochs seed {c['seed']}" for c in same_not_run]
    )
    train_minutes = sum(c["wall_seconds"] for c in cells + same_cells) / 60
    facts = {
        "Data": (
            f"one world (`SyntheticConfig(num_rows={config.num_rows:,}, num_users={config.num_users:,}, "
            f"days={config.days}, seed=0)`): the first {MAX_TRAIN_ROWS:,} rows are training rows, the last day "
            f"({EVAL_ROWS:,} rows, {info['eval']['positives']['click']:,} clicks, "
            f"{info['eval']['positives']['conversion']:,} conversions) the eval split. A size of N rows trains on "
            f"the first N training rows (whole 200k-row files); only the rows a run needs are generated, "
            "byte-identical to `synthetic.generate` for that config"
        ),
        "Eval set": (
            f"one file shared by every size, sha256 `{info['eval']['sha256'][:16]}…`; "
            + (
                "every cell's evaluation counted the same rows and positives"
                if same_eval
                else "WARNING: a cell's evaluation counted other rows"
            )
            + ("; the references' oracle AUC equals the data's" if oracle_agrees else "; WARNING: oracle AUCs disagree")
        ),
        "Models": (
            f"through `train_and_evaluate`, as `benchmarks.models`: Table 5 layers × {args.scale}, Adam lr "
            f"{args.learning_rate}, batch {args.batch_size}, 1 epoch (so more rows also means more steps)"
        ),
        "Plan": f"{ran}"
        + ("" if args.full else "; 4M rows: not run here (`python -m benchmarks.learning_curves --full`)")
        + (
            f"; same steps: {_rows_label(small)} rows × {repeat} epochs × {same_seeds} seed{'s' * (same_seeds > 1)}"
            if same_seeds
            else ""
        ),
        "Run here": (
            (
                "tabulated from the cache (`--report-only`), trained by earlier runs of this plan in parts "
                "(`--max-minutes`, `--sizes`): "
                if args.report_only
                else ""
            )
            + f"{len(cells)} cells ("
            + ", ".join(f"{c['model']} {_rows_label(c['train_rows'])} seed {c['seed']}" for c in cells)
            + (f") and {len(same_cells)} same-steps cells (" if same_cells else "")
            + ", ".join(f"{c['model']} seed {c['seed']}" for c in same_cells)
            + f"), {train_minutes:.0f} min of training and evaluation"
            + (f" ({_rows_by_size(cells)})" if len({c["train_rows"] for c in cells}) > 1 else "")
            + " at "
            f"{np.mean([c['train_examples_per_second'] for c in cells]):,.0f} training examples/s on average"
            + (f"; **not run** (out of the compute budget): {missing}" if missing else "")
            + "; every cell is cached under the work directory, so a re-run (or `--full`) trains only the missing "
            "ones"
        ),
        "Gap share": (
            f"(AUC − {FLOOR_AUC}) / (oracle − {FLOOR_AUC}): the floor is a random score's AUC; Δgap share "
            "is an AUC change in units of the oracle's headroom"
        ),
        "Machine": f"{machine()} (shared with other jobs: throughput figures are indicative only)",
    }
    steps = ", ".join(f"{-(-n // args.batch_size):,} steps at {_rows_label(n)} rows" for n in sorted(plan))
    separation = (
        f"The same-steps cells below separate them: {_rows_label(small)} rows × {repeat} epochs take the steps of "
        f"{_rows_label(following)} rows × 1 epoch."
        if same_cells
        else f"This run does not separate the two; {repeat} epochs over {_rows_label(small)} rows against one over "
        f"{_rows_label(following)} would (`--same-steps 3`)."
    )
    note = REFERENCE_NOTE.format(fit_rows=refs["fit_rows"], steps=steps, separation=separation)
    body = section("Learning curves: is conversion data-starved?", cmd, facts, table, note)
    body += f"\n![learning curves](figures/learning_curves.png)\n\nReading (computed from the table):\n\n{text}\n"
    write_section("learning_curves", body)
    return 0


REFERENCE_NOTE = """\
References (numpy logistic regressions, fitted on the true probabilities of the first {fit_rows:,}
training rows, so without label noise; conversion is scored as P(click) × P(conversion | click), the
generator's form). The oracle's click logit is `user_bias + ad_bias + 5·max_f <facet_f, ad_vec>`
(conversion alike, with its own facets and biases). *All latents* feeds those three inputs and must
recover the oracle (a check of the fitting). *True facets + statistics* gets the true facet affinity
but sees the biases only through what the features carry: the user's historical CTR / CVR
statistics; the ad bias has no feature (no ad id). *Observable features only* sees nothing a model
cannot see: a behaviour-list entry names a facet's taxonomy node, so each facet's affinity to the ad
is estimated as the best affinity of a listed level-2 (or level-1) node's mean tag vector to the
ad's vector (the ad's vector is a function of its tags), plus the statistics. It uses the
generator's tag geometry, which a model has to learn, so it is a *lower* bound on what the features
allow: oracle − observable reference bounds the unobservable part from above, observable reference −
model bounds the unlearned part from below.

One epoch at every size (as `benchmarks.models`): a larger size is both more distinct rows and more
optimisation steps ({steps}). {separation}"""
