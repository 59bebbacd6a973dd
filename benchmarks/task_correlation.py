"""MMoE's synthetic task-correlation study (Ma et al., KDD 2018): shared-bottom, OMoE and MMoE on two
regression tasks whose weight vectors have cosine p.

    python -m benchmarks.task_correlation            # p = 1.0 0.9 0.5, 10 runs each (~15 min on 2 cores)
    python -m benchmarks.task_correlation --p 1 0.9 0.7 0.5 0.3   # the two extra points (~25 min)
    python -m benchmarks.task_correlation --quick --no-write      # smoke test
    python -m benchmarks.task_correlation --replot   # figure and doc section again from the saved JSON

Data (:mod:`mvke_tf.data.task_correlation`): d = 100, c = 1, m = 10 sine terms (the paper's), α, β ~
N(0, 1) and noise std 0.1 (chosen). A run is one data seed (u1, u2, α, β, x, ε) and one initialisation
seed per model; run r uses the same data seed at every p (only w2 moves with p) and the three models
of a run see the same data and the same batches, so comparisons across models and across p are paired.

Models (the paper's sizes, as library rankers with regression heads on the dense input x [batch, 100]):

* shared-bottom: one shared ReLU layer of 113 units, a tower of 8 units per task;
* OMoE / MMoE: 8 single-layer ReLU experts of 16 units, one softmax gate (OMoE) or one per task (MMoE),
  a tower of 8 units per task.

Training (chosen; the paper grid-searches Adam's learning rate): Adam lr 3e-3, batch 128, 2,000 steps, loss =
MSE(task 1) + MSE(task 2) on the training rows, held-out MSE per task every ``--eval-every`` steps.
All runs of one p train side by side in one compiled step (the sum of independent losses, so each
model's gradient is its own and Adam, being per-weight, is the same as one optimiser per model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from benchmarks.report import machine, section, write_section
from mvke_tf.data import task_correlation as tc

MODELS = ("shared_bottom", "omoe", "mmoe")
LABELS = {"shared_bottom": "shared-bottom", "omoe": "OMoE", "mmoe": "MMoE"}
TASKS = ("y1", "y2")
DEFAULT_PS = (1.0, 0.9, 0.5)
FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"
FIGURE = FIGURES / "task_correlation.png"
RESULTS = FIGURES / "task_correlation.json"


def model_config(model_type: str):
    """The paper's architecture for ``model_type`` (see the module docstring)."""
    from mvke_tf.models.ranking import RankingConfig

    return RankingConfig(
        model_type=f"ranking_{model_type}",
        tasks=TASKS,
        task_heads=("regression",) * len(TASKS),
        expert_units=(16,),
        num_experts=8,
        bottom_units=(113,),
        tower_units=(8,),
    )


def build(model_type: str, dim: int):
    """A library ranker of ``model_type`` reading one dense vector ``x [batch, dim]``."""
    from mvke_tf.models.ranking import build_ranking_model

    return build_ranking_model((), model_config(model_type), dense_fields=("x",), dense_sizes=(dim,))


def init_seed(run: int, model_index: int) -> int:
    return 1_000 * (run + 1) + model_index


class SideBySide:
    """``runs`` x :data:`MODELS` models trained together in one compiled step.

    The data of all runs lives in variables ``x [runs, n, dim]``, ``y [runs, n, 2]``, so one traced step
    serves every p: :meth:`start` loads a p's labels, re-initialises every model (a freshly built
    model's weights under its run's seed) and zeroes Adam's state.
    """

    def __init__(self, runs: int, n_train: int, n_test: int, dim: int, batch: int, learning_rate: float) -> None:
        import tensorflow as tf

        self.runs, self.n_train, self.dim, self.batch = runs, n_train, dim, batch
        self.models = [[build(t, dim) for t in MODELS] for _ in range(runs)]
        self.weights = [v for per_run in self.models for m in per_run for v in m.trainable_variables]
        self.x_train = tf.Variable(tf.zeros([runs, n_train, dim]), trainable=False)
        self.y_train = tf.Variable(tf.zeros([runs, n_train, len(TASKS)]), trainable=False)
        self.x_test = tf.Variable(tf.zeros([runs, n_test, dim]), trainable=False)
        self.y_test = tf.Variable(tf.zeros([runs, n_test, len(TASKS)]), trainable=False)
        # Adam (Kingma & Ba) as one fused op per weight: Keras' optimiser costs seconds of tracing per
        # model here, which for dozens of tiny models outweighs their whole training.
        self.moments = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in self.weights]
        self.step_count = tf.Variable(0.0)
        self.lr, self.beta1, self.beta2, self.epsilon = learning_rate, 0.9, 0.999, 1e-7
        self.batches = tf.random.Generator.from_seed(0)
        self.train_step = tf.function(self._train_step, autograph=False)
        self.evaluate = tf.function(self._evaluate, autograph=False)

    def _predict(self, model, x):
        import tensorflow as tf

        out = model({"x": x}, training=False)
        return tf.stack([out[t] for t in TASKS], axis=-1)  # [B, 2]

    def _train_step(self):
        """One Adam step of every model on its run's batch; returns each model's training loss ``[runs, 3]``."""
        import tensorflow as tf

        idx = self.batches.uniform([self.runs, self.batch], 0, self.n_train, dtype=tf.int32)
        xb = tf.gather(self.x_train, idx, batch_dims=1)  # [R, B, d]
        yb = tf.gather(self.y_train, idx, batch_dims=1)  # [R, B, 2]
        with tf.GradientTape() as tape:
            losses = [
                [tf.reduce_sum(tf.reduce_mean(tf.square(self._predict(m, xb[r]) - yb[r]), axis=0)) for m in per_run]
                for r, per_run in enumerate(self.models)
            ]
            total = tf.add_n([loss for per_run in losses for loss in per_run])
        grads = tape.gradient(total, self.weights)
        t = self.step_count.assign_add(1.0)
        b1_power, b2_power = tf.pow(self.beta1, t), tf.pow(self.beta2, t)
        for w, g, (m, v) in zip(self.weights, grads, self.moments):
            tf.raw_ops.ResourceApplyAdam(
                var=w.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=b1_power,
                beta2_power=b2_power,
                lr=tf.constant(self.lr),
                beta1=tf.constant(self.beta1),
                beta2=tf.constant(self.beta2),
                epsilon=tf.constant(self.epsilon),
                grad=g,
            )
        return tf.stack([tf.stack(per_run) for per_run in losses])

    def _evaluate(self):
        """Held-out MSE per run, model and task, ``[runs, 3, 2]``."""
        import tensorflow as tf

        return tf.stack(
            [
                tf.stack([tf.reduce_mean(tf.square(self._predict(m, self.x_test[r]) - self.y_test[r]), 0) for m in ms])
                for r, ms in enumerate(self.models)
            ]
        )

    def start(self, train: Sequence[tc.TaskCorrelationData], test: Sequence[tc.TaskCorrelationData], seed: int):
        """Loads one p's data sets (one per run) and gives every model a fresh initialisation."""
        import tensorflow as tf

        self.x_train.assign(np.stack([d.x for d in train]))
        self.y_train.assign(np.stack([d.y for d in train]))
        self.x_test.assign(np.stack([d.x for d in test]))
        self.y_test.assign(np.stack([d.y for d in test]))
        for r, per_run in enumerate(self.models):
            for k, (model_type, model) in enumerate(zip(MODELS, per_run)):
                tf.keras.utils.set_random_seed(init_seed(r, k))
                model.set_weights(build(model_type, self.dim).get_weights())
        for m, v in self.moments:
            m.assign(tf.zeros_like(m))
            v.assign(tf.zeros_like(v))
        self.step_count.assign(0.0)
        self.batches.reset_from_seed(seed)


def datasets(p: float, runs: int, n_train: int, n_test: int, dim: int, noise_std: float, data_seed: int):
    """Per run: (train, test) data sets of weight cosine ``p``; run r's seed is ``data_seed + r``.

    Test rows are the last ``n_test`` rows of one generated set, so train and test share the task."""
    train, test = [], []
    for r in range(runs):
        d = tc.generate(n_train + n_test, p, dim=dim, noise_std=noise_std, seed=data_seed + r)
        cut = n_train
        common = dict(weights=d.weights, alpha=d.alpha, beta=d.beta, p=d.p, label_correlation=d.label_correlation)
        train.append(tc.TaskCorrelationData(x=d.x[:cut], y=d.y[:cut], **common))
        test.append(tc.TaskCorrelationData(x=d.x[cut:], y=d.y[cut:], **common))
    return train, test


def run_study(args: argparse.Namespace, log=print) -> dict[str, Any]:
    """Trains every (p, run, model); returns the JSON-able results (see :func:`plot`)."""
    start = time.perf_counter()
    trainer = SideBySide(args.runs, args.n_train, args.n_test, args.dim, args.batch_size, args.learning_rate)
    eval_steps = sorted({0, *range(args.eval_every, args.steps + 1, args.eval_every), args.steps})
    params = {t: int(trainer.models[0][k].count_params()) for k, t in enumerate(MODELS)}
    cells = []
    trace_s = None
    for p in args.p:
        t0 = time.perf_counter()
        train, test = datasets(p, args.runs, args.n_train, args.n_test, args.dim, args.noise_std, args.data_seed)
        trainer.start(train, test, seed=int(round(p * 1000)))
        curve = [trainer.evaluate().numpy()]  # [R, 3, 2] per evaluation
        for step in range(1, args.steps + 1):
            if trace_s is None:
                t_trace = time.perf_counter()
                trainer.train_step()
                trace_s = time.perf_counter() - t_trace
            else:
                trainer.train_step()
            if step in eval_steps:
                curve.append(trainer.evaluate().numpy())
        curve = np.stack(curve, axis=2)  # [R, 3, evals, 2]
        for r in range(args.runs):
            for k, model_type in enumerate(MODELS):
                cells.append(
                    {
                        "p": p,
                        "run": r,
                        "model": model_type,
                        "label_correlation": train[r].label_correlation,
                        "label_variance": [float(v) for v in test[r].y.var(axis=0)],
                        "curve": curve[r, k].tolist(),  # [evals, 2]: held-out MSE per task
                        "final": float(curve[r, k, -1].mean()),
                    }
                )
        means = {t: np.mean([c["final"] for c in cells if c["p"] == p and c["model"] == t]) for t in MODELS}
        log(
            f"p={p:.2f}: "
            + ", ".join(f"{LABELS[t]} {means[t]:.4f}" for t in MODELS)
            + f" (label corr {np.mean([d.label_correlation for d in train]):.3f}, {time.perf_counter() - t0:.0f} s)"
        )
    return {
        "settings": {
            k: getattr(args, k)
            for k in (
                "p",
                "runs",
                "steps",
                "batch_size",
                "learning_rate",
                "n_train",
                "n_test",
                "dim",
                "noise_std",
                "eval_every",
                "data_seed",
            )
        },
        "models": list(MODELS),
        "tasks": list(TASKS),
        "params": params,
        "eval_steps": eval_steps,
        "cells": cells,
        "first_step_s": trace_s,
        "wall_s": time.perf_counter() - start,
    }


# ----------------------------------------------------------------------------- summaries
def finals(results: Mapping[str, Any], p: float, model: str) -> np.ndarray:
    """Final held-out loss (mean MSE over the two tasks) per run, ``[runs]`` in run order."""
    rows = sorted((c for c in results["cells"] if c["p"] == p and c["model"] == model), key=lambda c: c["run"])
    return np.array([c["final"] for c in rows])


def table(results: Mapping[str, Any]) -> str:
    ps = results["settings"]["p"]
    lines = [
        "| p | label corr. | model | final loss mean ± std | min | max | MMoE − model (paired, ± s.e.) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in ps:
        corr = np.mean([c["label_correlation"] for c in results["cells"] if c["p"] == p and c["model"] == MODELS[0]])
        mmoe = finals(results, p, "mmoe")
        for model in results["models"]:
            v = finals(results, p, model)
            diff = ""
            if model != "mmoe":
                d = mmoe - v
                diff = f"{d.mean():+.4f} ± {_stderr(d):.4f}"
            lines.append(
                f"| {p:.1f} | {corr:.3f} | {LABELS[model]} | {v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f} "
                f"| {v.min():.4f} | {v.max():.4f} | {diff} |"
            )
    return "\n".join(lines)


def _stderr(v: np.ndarray) -> float:
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def reading(results: Mapping[str, Any]) -> str:
    """The paper's two findings, checked against this run's numbers."""
    ps = sorted(results["settings"]["p"], reverse=True)
    runs = results["settings"]["runs"]
    lines = [f"Reading (computed from the numbers above; {runs} runs per p, differences paired by run):", ""]
    # (a) MMoE's advantage over each baseline, per p.
    for base in ("omoe", "shared_bottom"):
        adv = {p: finals(results, p, base) - finals(results, p, "mmoe") for p in ps}
        parts = []
        for p in ps:
            m, se = adv[p].mean(), _stderr(adv[p])
            verdict = "MMoE lower" if m > 2 * se else ("MMoE higher" if m < -2 * se else "within 2 s.e.")
            parts.append(f"p={p:.1f}: {m:+.4f} ± {se:.4f} ({verdict})")
        first, last = adv[ps[0]], adv[ps[-1]]
        growth = last.mean() - first.mean()
        growth_se = float(np.sqrt(_stderr(first) ** 2 + _stderr(last) ** 2))
        means = [adv[p].mean() for p in ps]
        monotone = all(b >= a for a, b in zip(means, means[1:]))
        if growth > 2 * growth_se:
            verdict = (
                f"grows from p={ps[0]:.1f} to p={ps[-1]:.1f} by {growth:+.4f} "
                f"(more than twice its s.e. {growth_se:.4f}); "
                + ("it grows at every step down in p" if monotone else "not at every step down in p")
            )
        else:
            verdict = (
                f"does not grow beyond noise from p={ps[0]:.1f} to p={ps[-1]:.1f} ({growth:+.4f}, s.e. {growth_se:.4f})"
            )
        lines.append(f"- (a) {LABELS[base]} loss minus MMoE loss: " + "; ".join(parts) + f". The advantage {verdict}.")
    # (b) Spread across runs.
    wins, total, ratios = 0, 0, []
    parts = []
    for p in ps:
        stds = {m: finals(results, p, m).std(ddof=1) for m in results["models"]}
        others = min(stds["omoe"], stds["shared_bottom"])
        wins += stds["mmoe"] < others
        total += 1
        ratios.append(stds["mmoe"] / max(stds["omoe"], stds["shared_bottom"]))
        parts.append(f"p={p:.1f}: " + " / ".join(f"{stds[m]:.4f}" for m in ("shared_bottom", "omoe", "mmoe")))
    lines.append(
        "- (b) std of the final loss across runs (shared-bottom / OMoE / MMoE): "
        + "; ".join(parts)
        + f". MMoE's is the smallest of the three at {wins} of {total} p values"
        + f" (MMoE std / largest baseline std: {min(ratios):.2f} to {max(ratios):.2f}). With {runs} runs a std"
        " is known to about ±" + f"{100 / np.sqrt(2 * (runs - 1)):.0f}% (one s.e.), so only large ratios count."
    )
    worst = {int(np.argmax(finals(results, p, m))) for p in ps for m in results["models"]}
    if len(worst) == 1:
        lines.append(
            f"- The highest final loss of every model at every p comes from one run (data seed "
            f"{results['settings'].get('data_seed', 0) + worst.pop()}), so the spread across runs here is "
            "mostly the data seeds' difficulty, shared by the three models, rather than initialisation luck."
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figure
def plot(results: Mapping[str, Any], path: str | Path = FIGURE) -> Path:
    """Four panels from the saved results (``task_correlation.json``): final held-out loss vs p (mean,
    band = ± std across runs, dots = runs); held-out loss over training at the highest and lowest p
    (mean over runs); histogram of the final losses at the lowest p (the paper's trainability plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = sorted(results["settings"]["p"])
    steps = results["eval_steps"]
    colors = {"shared_bottom": "tab:gray", "omoe": "tab:blue", "mmoe": "tab:red"}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0, 0]
    for model in results["models"]:
        values = [finals(results, p, model) for p in ps]
        mean = np.array([v.mean() for v in values])
        std = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
        ax.plot(ps, mean, "o-", color=colors[model], label=LABELS[model])
        ax.fill_between(ps, mean - std, mean + std, color=colors[model], alpha=0.15)
        for p, v in zip(ps, values):
            ax.scatter(np.full(len(v), p), v, s=6, color=colors[model], alpha=0.4)
    ax.set_xlabel("p = cos(w1, w2)")
    ax.set_ylabel("final held-out MSE (mean of 2 tasks)")
    ax.set_title("final loss vs task correlation (band: ± std over runs)")
    ax.invert_xaxis()
    ax.legend()
    ax.grid(alpha=0.3)
    for ax, p in ((axes[0, 1], ps[-1]), (axes[1, 0], ps[0])):
        for model in results["models"]:
            curves = np.array(
                [np.mean(c["curve"], axis=1) for c in results["cells"] if c["p"] == p and c["model"] == model]
            )
            ax.plot(steps, curves.mean(axis=0), color=colors[model], label=LABELS[model])
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out MSE (mean over runs)")
        ax.set_title(f"loss over training, p = {p:.1f}")
        ax.grid(alpha=0.3)
        ax.legend()
    ax = axes[1, 1]
    p = ps[0]
    all_values = np.concatenate([finals(results, p, m) for m in results["models"]])
    bins = np.linspace(all_values.min(), all_values.max(), 16)
    for model in results["models"]:
        ax.hist(finals(results, p, model), bins=bins, color=colors[model], alpha=0.45, label=LABELS[model])
    ax.set_xlabel("final held-out MSE")
    ax.set_ylabel("runs")
    ax.set_title(f"trainability: final losses of the runs, p = {p:.1f}")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=float, nargs="+", default=list(DEFAULT_PS), help="weight cosines to study")
    ap.add_argument("--runs", type=int, default=10, help="runs per p (fresh data seed and initialisation)")
    ap.add_argument("--steps", type=int, default=2_000, help="training steps per run")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--learning-rate", type=float, default=3e-3)
    ap.add_argument("--n-train", type=int, default=20_000, help="training rows per run")
    ap.add_argument("--n-test", type=int, default=2_000, help="held-out rows per run")
    ap.add_argument("--dim", type=int, default=tc.PAPER_DIM)
    ap.add_argument("--noise-std", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100, help="held-out loss every this many steps")
    ap.add_argument("--data-seed", type=int, default=0, help="run r's data seed is data_seed + r")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 p values, 2 runs, 20 steps, small data")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    ap.add_argument(
        "--replot", action="store_true", help="no training: redraw the figure and rewrite the section from the JSON"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.p, args.runs, args.steps, args.n_train, args.n_test, args.eval_every = [1.0, 0.5], 2, 20, 500, 100, 10
    for p in args.p:
        tc.check_p(p)
    if args.runs < 2:
        ap.error(f"--runs {args.runs}: a spread across runs needs at least 2; fix: --runs 10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        results = json.loads(RESULTS.read_text())
        args = parse_args([f"--{k.replace('_', '-')}={v}" for k, v in results["settings"].items() if k != "p"])
        args.p = results["settings"]["p"]
    else:
        results = run_study(args, log=lambda s: print(s, file=sys.stderr, flush=True))
    text = table(results)
    note = reading(results)
    print(text)
    print()
    print(note)
    print(f"wall time {results['wall_s'] / 60:.1f} min", file=sys.stderr)
    if args.no_write:
        return 0
    if not args.replot:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results) + "\n")
    plot(results, FIGURE)
    default = parse_args([])
    flags = []
    if args.p != default.p:
        flags.append("--p " + " ".join(f"{p:g}" for p in args.p))
    for name in ("runs", "steps", "batch_size", "learning_rate", "n_train", "n_test", "noise_std"):
        if getattr(args, name) != getattr(default, name):
            flags.append(f"--{name.replace('_', '-')} {getattr(args, name)}")
    s = results["settings"]
    facts = {
        "Data": f"per run {s['n_train']:,} training + {s['n_test']:,} held-out rows of "
        f"`mvke_tf.data.task_correlation.generate` (d = {s['dim']}, c = 1, m = 10 sines: the paper's; "
        f"α, β ~ N(0, 1), noise std {s['noise_std']}: chosen); run r has data seed {s['data_seed']} + r at every p",
        "Models": "the paper's sizes as library rankers with regression heads (`task_heads: [regression, "
        "regression]`, dense input x [batch, 100]): shared-bottom 113 ReLU units; OMoE / MMoE 8 experts × 16 "
        "ReLU units, 1 gate / 1 gate per task; towers of 8 units; parameters "
        + ", ".join(f"{LABELS[m]} {n:,}" for m, n in results["params"].items()),
        "Training": f"Adam lr {s['learning_rate']} (chosen; the paper grid-searches it), batch {s['batch_size']}, "
        f"{s['steps']:,} steps, loss MSE(y1) + MSE(y2); {s['runs']} runs per p, each a fresh data seed and "
        "fresh initialisation (the paper: 200 runs)",
        "Metric": "final loss = held-out MSE after the last step, mean over the two tasks (noise floor 0.01); "
        "label corr. = realised Pearson correlation of y1 and y2 (mean over runs)",
        "Figure": "[task_correlation.png](figures/task_correlation.png) (raw numbers: "
        "[task_correlation.json](figures/task_correlation.json); redraw with "
        "`benchmarks.task_correlation.plot(json.load(...), path)`)",
        "Wall time": f"{results['wall_s'] / 60:.1f} min for the whole run (first step, tracing every model: "
        f"{results['first_step_s']:.0f} s)",
        "Machine": machine(),
    }
    body = section(
        "Task correlation: MMoE vs OMoE and shared-bottom on synthetic tasks (Ma et al., KDD 2018)",
        " ".join(["python -m benchmarks.task_correlation", *flags]),
        facts,
        text,
        note=note,
    )
    body += "\n![task correlation](figures/task_correlation.png)\n"
    write_section("task_correlation", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
