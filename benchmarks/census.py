"""MMoE paper reproduction on UCI census-income (KDD): single-task, shared-bottom, OMoE and MMoE.

    python -m benchmarks.census --data DIR --seeds 5

``DIR`` holds the UCI files (``census-income.test.gz`` by default; see ``--files``). For both
task groups of Ma et al. (KDD 2018), group 1 (income > 50K, never married) and group 2
(education >= college, never married), every model trains on the same 70% of the rows with the
same optimiser, stops on the mean VALIDATION AUC of its two tasks (best epoch's weights kept)
and is scored on the held-out test rows; mean ± std of the test AUC over the training seeds.

Sizes (equal hidden-unit budget, 128 units below the towers in every model):

* single-task: per task its own embeddings and one hidden layer of 64 (2 x 64 = 128);
* shared-bottom: one shared hidden layer of 128;
* OMoE / MMoE: 8 experts of 16 units (as in common public census setups), one gate (OMoE) or
  one per task (MMoE);
* all: embedding dim 4 per categorical field, the 7 standardised continuous inputs
  concatenated, a tower of 8 units per task, Adam lr 3e-3, batch 512, at most 12 epochs
  (patience 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from benchmarks.report import machine, section, write_section
from mvke_tf.data import census
from mvke_tf.data.census import TASK_GROUPS
from mvke_tf.metrics import auc

MODELS = ("single_task", "shared_bottom", "omoe", "mmoe")
LABELS = {"single_task": "single-task", "shared_bottom": "shared-bottom", "omoe": "OMoE", "mmoe": "MMoE"}
TASK_TITLES = {"income": "income > 50K", "marital": "never married", "education": "education >= college"}


def model_config(model_type: str, tasks: tuple[str, ...], embedding_dim: int):
    """The benchmark's architecture for ``model_type`` (see the module docstring)."""
    from mvke_tf.models.ranking import RankingConfig

    return RankingConfig(
        model_type=f"ranking_{model_type}",
        tasks=tasks,
        embedding_dim=embedding_dim,
        expert_units=(16,),
        num_experts=8,
        bottom_units=(64,) if model_type == "single_task" else (128,),
        tower_units=(8,),
    )


class Trainer:
    """One compiled model per (task group, model type), re-initialised for every seed.

    Tracing the Keras train step of a 31-field model takes ~30 CPU seconds, far more than an
    epoch; so the compiled model is kept and each seed gets a freshly built model's initial
    weights and a zeroed optimiser state, which is the same as a new model with that seed.
    """

    def __init__(self, data: census.CensusData, model_type: str, args: argparse.Namespace) -> None:
        from mvke_tf.models.ranking import build_ranking_model
        from mvke_tf.train import compile_model

        self.data, self.args = data, args
        self.config = model_config(model_type, data.tasks, args.embedding_dim)
        self.model = build_ranking_model(data.fields, self.config, data.dense_fields)
        compile_model(self.model, learning_rate=args.learning_rate)
        self.val = data.to_dataset("val", 4096)
        self.test = data.to_dataset("test", 4096)

    def _reset(self, seed: int) -> None:
        import tensorflow as tf

        from mvke_tf.models.ranking import build_ranking_model

        tf.keras.utils.set_random_seed(seed)
        fresh = build_ranking_model(self.data.fields, self.config, self.data.dense_fields)
        self.model.set_weights(fresh.get_weights())
        for v in self.model.optimizer.variables:  # Adam moments and the step counter start at 0
            v.assign(tf.zeros_like(v))

    def run(self, seed: int) -> dict:
        """Trains with early stopping on the mean validation AUC; returns test AUCs and the best epoch."""
        data, args, model = self.data, self.args, self.model
        self._reset(seed)
        train = data.to_dataset("train", args.batch_size, shuffle=True, seed=seed)
        best: dict = {"score": -np.inf, "epoch": 0, "weights": None, "curve": []}
        for epoch in range(1, args.epochs + 1):
            model.fit(train, epochs=1, verbose=0)
            # Exact AUC on the validation rows (not Keras' thresholded estimate) picks the epoch.
            pred = model.predict(self.val, verbose=0)
            score = float(np.mean([auc(data.labels["val"][t], pred[t]) for t in data.tasks]))
            best["curve"].append(score)
            if score > best["score"]:
                best.update(score=score, epoch=epoch, weights=model.get_weights())
            elif epoch - best["epoch"] >= args.patience:
                break
        model.set_weights(best["weights"])
        pred = model.predict(self.test, verbose=0)
        return {
            "test": {t: auc(data.labels["test"][t], pred[t]) for t in data.tasks},
            "epoch": best["epoch"],
            "curve": best["curve"],
            "params": model.count_params(),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="directory holding the census-income files")
    p.add_argument(
        "--files",
        nargs="+",
        default=["census-income.test.gz"],
        help="file names under --data whose rows are pooled, then split 70/15/15",
    )
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=12, help="most epochs; the best by validation AUC is kept")
    p.add_argument("--patience", type=int, default=2, help="stop after this many epochs without a better val AUC")
    p.add_argument("--groups", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--embedding-dim", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--split-seed", type=int, default=census.SPLIT_SEED)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args(argv)

    paths = [Path(args.data) / f for f in args.files]
    start_all = time.perf_counter()
    tables = []
    rows_info = ""
    results: dict[int, dict[str, dict[str, list[float]]]] = {}
    best_epochs: dict[tuple[int, str], list[int]] = {}
    for group in args.groups:
        data = census.load_census(paths, group=group, seed=args.split_seed, encoding="ids")
        rows_info = ", ".join(f"{data.num_rows(s):,} {s}" for s in census.SPLITS)
        t1, t2 = data.tasks
        lines = [
            f"| group {group} model | {TASK_TITLES[t1]} AUC | {TASK_TITLES[t2]} AUC | best epoch | parameters |",
            "| --- | --- | --- | --- | --- |",
        ]
        for model_type in args.models:
            runs = []
            trainer = Trainer(data, model_type, args)
            for seed in range(args.seeds):
                start = time.perf_counter()
                runs.append(trainer.run(seed))
                print(
                    f"group {group} {model_type:<13} seed {seed}: "
                    + " ".join(f"{t} {runs[-1]['test'][t]:.4f}" for t in data.tasks)
                    + f" epoch {runs[-1]['epoch']} ({time.perf_counter() - start:.0f} s) val "
                    + " ".join(f"{v:.4f}" for v in runs[-1]["curve"]),
                    file=sys.stderr,
                    flush=True,
                )
            cells = [f"{np.mean(v):.4f} ± {np.std(v):.4f}" for v in ([r["test"][t] for r in runs] for t in data.tasks)]
            epochs = best_epochs[(group, model_type)] = [r["epoch"] for r in runs]
            results.setdefault(group, {})[model_type] = {t: [r["test"][t] for r in runs] for t in data.tasks}
            lines.append(
                f"| {LABELS[model_type]} | {cells[0]} | {cells[1]} | {np.mean(epochs):.1f} "
                f"({min(epochs)}-{max(epochs)}) | {runs[0]['params']:,} |"
            )
        tables.append("\n".join(lines))
    wall = time.perf_counter() - start_all
    table = "\n\n".join(tables)
    print(table)
    print(f"wall time {wall / 60:.1f} min", file=sys.stderr)

    if not args.no_write:
        # The command names a placeholder, never this machine's data path.
        command = (
            f"python -m benchmarks.census --data DATA_DIR --files {' '.join(args.files)} --seeds {args.seeds} "
            f"--epochs {args.epochs} --patience {args.patience}"
        )
        facts = {
            "Data": f"UCI census-income (KDD), files {', '.join(args.files)}: {rows_info} rows "
            f"(70/15/15, split seed {args.split_seed})",
            "Inputs": f"{len(data.fields)} categorical fields (one vocabulary over all rows, embedding dim "
            f"{args.embedding_dim}) + {len(data.dense_fields)} continuous inputs standardised with train "
            "statistics; education, marital status, income and the instance weight are not inputs",
            "Models": "single-task 2 x (own embeddings, 64 units); shared-bottom 128 units; OMoE / MMoE 8 experts "
            "x 16 units (1 gate / 1 gate per task); tower 8 units per task",
            "Training": f"Adam lr {args.learning_rate}, batch {args.batch_size}, at most {args.epochs} epochs, "
            f"stop after {args.patience} without a better mean validation AUC, best epoch's weights kept; "
            f"test AUC mean ± std over {args.seeds} training seeds",
            "Wall time": f"{wall / 60:.1f} min for the whole run",
            "Machine": machine(),
        }
        body = section(
            "Census-income (KDD): MMoE vs OMoE, shared-bottom, single-task (Ma et al., KDD 2018)",
            command,
            facts,
            table,
            note=note(results, args.seeds, args.files, best_epochs, args.epochs),
        )
        write_section("census", body)
    return 0


def compare(results: dict, group: int, tasks: tuple[str, ...], a: str, b: str) -> tuple[str, list[str]]:
    """``a`` minus ``b`` in mean test AUC per task, and the verdicts.

    A difference counts ("better" / "worse") only beyond two standard errors of the difference
    of the two seed means (about a 95% two-sample test); otherwise it is "within seed noise".
    """
    parts, verdicts = [], []
    for t in tasks:
        va, vb = np.asarray(results[group][a][t]), np.asarray(results[group][b][t])
        diff = float(va.mean() - vb.mean())
        stderr = float(np.sqrt(va.var(ddof=1) / len(va) + vb.var(ddof=1) / len(vb))) if len(va) > 1 else 0.0
        verdict = "within seed noise" if abs(diff) <= 2 * stderr else ("better" if diff > 0 else "worse")
        verdicts.append(verdict)
        parts.append(f"{TASK_TITLES[t]} {diff:+.4f} ({verdict})")
    return ", ".join(parts), verdicts


def note(results: dict, seeds: int, files: list[str], epochs: dict | None = None, max_epochs: int = 0) -> str:
    """The caveats and what the numbers show (comparisons computed from this run's results)."""
    if any(Path(f).name.startswith("census-income.data") for f in files):
        data_caveat = (
            f"Caveats: the rows of {', '.join(files)} are pooled and split 70/15/15 with the seed above, "
            "so the test rows are not the official test set."
        )
    else:
        data_caveat = (
            "Caveats: the official 199,523-row training file (`census-income.data.gz`) was not available, only the "
            "official 99,762-row test file (`census-income.test.gz`); its rows are split 70/15/15 with the seed "
            "above, so the training set here (~70k rows) is ~35% of the paper's and the test rows are not the "
            "official test set."
        )
    lines = [
        data_caveat + " As a public reference on the full data, PaddleRec reports MMoE AUCs of about "
        "0.945 (income) and 0.993 (marital status) for group 1; the MMoE paper's own table was not at hand, "
        "so no paper figure is compared here. The marital task is nearly solved by inputs that encode it "
        "indirectly (household status such as 'Child 18+ never marr'), as in every public setup.",
        "",
        f"What this run shows (differences of mean test AUC over {seeds} seeds; 'better' / 'worse' only beyond "
        "two standard errors of the difference, else 'within seed noise'):",
    ]
    mmoe_wins = []
    for group, per_model in results.items():
        tasks = TASK_GROUPS[group]
        for a, b in (("mmoe", "shared_bottom"), ("mmoe", "omoe"), ("mmoe", "single_task")):
            if a in per_model and b in per_model:
                text, verdicts = compare(results, group, tasks, a, b)
                lines.append(f"- group {group}, {LABELS[a]} vs {LABELS[b]}: {text}")
                if b == "shared_bottom":
                    mmoe_wins += [v == "better" for v in verdicts]
    spread = max(
        max(np.mean(m[t]) for m in per_model.values()) - min(np.mean(m[t]) for m in per_model.values())
        for group, per_model in results.items()
        for t in TASK_GROUPS[group]
    )
    if mmoe_wins and not any(mmoe_wins):
        lines += [
            "",
            "So on this reduced data MMoE does not beat shared-bottom beyond seed noise on any task: the "
            "MMoE-over-shared-bottom gain the paper reports is not reproduced here. On every task the model "
            f"means lie within {spread:.4f} AUC of each other.",
        ]
    else:
        lines += ["", f"On every task the model means lie within {spread:.4f} AUC of each other."]
    if epochs and max_epochs:
        capped = sum(e == max_epochs for runs in epochs.values() for e in runs)
        total = sum(len(runs) for runs in epochs.values())
        if capped:
            lines += [
                "",
                f"{capped} of {total} runs had their best validation AUC at the last allowed epoch ({max_epochs}); "
                "those models might gain a little from longer training (the cap keeps the run short).",
            ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
