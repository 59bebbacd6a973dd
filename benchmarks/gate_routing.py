"""Do MVKE's virtual-kernel gates route? Gate variants on the synthetic data, with known truth.

    python -m benchmarks.gate_routing --rows 400000 --seeds 3

MVKE-mt is trained with each gate variant (same data, sizes, optimiser and seeds as
``benchmarks.models``) and every leaf tag's VKG weights are read off the trained model.
Routing has a known truth here: the synthetic world builds tag vectors down a taxonomy, so
tags of one level-1 branch share latent structure, and click and conversion facets differ.
Per variant: eval AUC per task, and per task the gate's normalised entropy (1 = uniform), the
mean |w - 1/S|, the share of the gate weights' variance explained by the level-1 branch
(eta^2; about (branches - 1) / (tags - 1) for routing unrelated to the branch) and the
nearest-branch-centroid accuracy of the gate vectors (leave-one-out; chance 1 / branches).
A diagnosis of the released code's gate comes with it: the virtual kernels' and tag
embeddings' norms, the spread of the gate's scores, and the gradient reaching the kernels
through the gate vs through the VKE attention, at initialisation and after training.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from benchmarks.report import add_synthetic_training_flags, cached_synthetic_data, machine, section, write_section
from mvke_tf.data import synthetic

# name -> UserTagConfig overrides. "code" is the released code's gate (and today's default).
VARIANTS: dict[str, dict[str, Any]] = {
    "code": {"gate": "dot"},
    "attention": {"gate": "attention"},
    "dot+scale": {"gate": "dot", "gate_scale": 5.0},
    "kernel-init": {"gate": "dot", "kernel_stddev": 0.2},
    "cosine": {"gate": "cosine", "gate_scale": 10.0},
    "cosine-soft": {"gate": "cosine", "gate_scale": 3.0},
}
# dot+scale and kernel-init left the gate as uniform as the code's in a small run (the tag embeddings
# stay short, so the scores stay tiny whatever multiplies them); they stay selectable.
DEFAULT_VARIANTS = ("code", "attention", "cosine", "cosine-soft")


def gate_routing(weights: np.ndarray, branch: np.ndarray) -> dict[str, float]:
    """Routing statistics of gate vectors ``weights [T, S]`` (rows sum to 1) of tags in level-1 ``branch [T]``.

    ``entropy``: mean normalised entropy ``H(w) / log S`` (1 = uniform); ``deviation``: mean
    ``|w - 1/S|``; ``eta2``: between-branch share of the weights' total variance;
    ``centroid_accuracy``: leave-one-out nearest-branch-centroid accuracy (chance ``1 / branches``).
    """
    t, s = weights.shape
    w = np.clip(weights, 1e-12, 1.0)
    entropy = float(np.mean(-(w * np.log(w)).sum(1) / math.log(s))) if s > 1 else 1.0
    deviation = float(np.mean(np.abs(weights - 1.0 / s)))
    labels, inverse, counts = np.unique(branch, return_inverse=True, return_counts=True)
    sums = np.zeros((len(labels), s))
    np.add.at(sums, inverse, weights)
    means = sums / counts[:, None]
    total = float(((weights - weights.mean(0)) ** 2).sum())
    between = float((counts[:, None] * (means - weights.mean(0)) ** 2).sum())
    eta2 = between / total if total > 0 else 0.0
    # Leave-one-out: a tag's own branch centroid without the tag itself.
    own = (sums[inverse] - weights) / np.maximum(counts[inverse] - 1, 1)[:, None]
    dist = ((weights[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    dist[np.arange(t), inverse] = ((weights - own) ** 2).sum(-1)
    accuracy = float(np.mean(dist.argmin(1) == inverse))
    return {"entropy": entropy, "deviation": deviation, "eta2": eta2, "centroid_accuracy": accuracy}


def kernel_gradients(model: Any, features: dict, labels: dict) -> dict[str, float]:
    """Norm of the loss's gradient on the virtual kernels: in all, and through the gate alone.

    The gate path is the total minus the gradient with the gate's view of the kernels cut
    (``stop_gradient``), which leaves only the VKE attention's path.
    """
    import tensorflow as tf

    tower = model.user_tower
    kernels = [layer.virtual_kernels for layer in tower.vke.values()]

    def loss() -> tf.Tensor:
        preds = model(features, training=True)
        return tf.add_n(
            [tf.reduce_mean(tf.keras.losses.binary_crossentropy(labels[t][:, None], preds[t][:, None])) for t in preds]
        )

    with tf.GradientTape() as tape:
        value = loss()
    total = tape.gradient(value, kernels)
    original = tower.kernels
    tower.kernels = lambda task: tf.stop_gradient(original(task))
    try:
        with tf.GradientTape() as tape:
            value = loss()
        attention_only = tape.gradient(value, kernels)
    finally:
        del tower.kernels  # back to the class's method
    gate = [a - b for a, b in zip(total, attention_only)]
    return {
        "grad_total": float(tf.linalg.global_norm(total)),
        "grad_gate": float(tf.linalg.global_norm(gate)),
        "grad_attention": float(tf.linalg.global_norm(attention_only)),
    }


def gate_state(model: Any, tags: list[str]) -> dict[str, dict[str, Any]]:
    """Per task: gate weights ``[T, S]``, and the norms / score spread behind them."""
    import tensorflow as tf

    out = model.tag_tower_outputs(tf.constant(tags))
    state = {}
    for task, (embedding, weights) in out.items():
        kernels = model.user_tower.kernels(task)
        gate = model.gates[task]
        scores = gate.scores(embedding, kernels).numpy()
        state[task] = {
            "weights": weights.numpy(),
            "kernel_norm": float(np.mean(np.linalg.norm(kernels.numpy(), axis=-1))),
            "tag_norm": float(np.mean(np.linalg.norm(embedding.numpy(), axis=-1))),
            "score_spread": float(np.mean(scores.std(axis=1))),
            "scale": float(np.exp(gate.log_scale.numpy())) if gate.scale is not None else None,
        }
    return state


def run_variant(data: Path, overrides: dict, seed: int, args: argparse.Namespace, tags: list[str]) -> dict:
    from mvke_tf.config import FeatureConfig
    from mvke_tf.data.dataset import make_dataset
    from mvke_tf.models import UserTagConfig
    from mvke_tf.models.family import family_of
    from mvke_tf.train import TrainConfig, train_and_evaluate

    mc = UserTagConfig(model_type="mvke_mt", **overrides).scaled(args.scale)
    fc = FeatureConfig.from_yaml(data / "features.yaml")
    features, labels = next(iter(make_dataset(data / "train", fc, batch_size=2048, shuffle=True, seed=99)))
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    family = family_of(mc)
    fresh = family.build(fc, mc, family.input_fields(fc, mc, None))
    at_init = kernel_gradients(fresh, features, labels)
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=seed)
    report = train_and_evaluate(data, mc, tc, verbose=0)
    model = report["model"]
    trained = kernel_gradients(model, features, labels)
    branch = np.array([t.split("_")[0] for t in tags])
    result = {
        "auc": {t: report["eval"][t]["auc"] for t in mc.tasks},
        "grad_init": at_init,
        "grad_trained": trained,
        "tasks": {},
    }
    for task, st in gate_state(model, tags).items():
        routing = gate_routing(st.pop("weights"), branch)
        result["tasks"][task] = {**routing, **st}
    return result


def summarise(results: dict[str, list[dict]], oracle: dict, num_branches: int, num_tags: int) -> str:
    def ms(values: list[float], digits: int = 4) -> str:
        return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"

    lines = [
        "| gate | seeds | click AUC | conversion AUC | task | entropy (1 = uniform) | mean abs(w − 1/S) "
        "| η² by level-1 branch | branch-centroid accuracy | learned scale |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        for i, task in enumerate(runs[0]["tasks"]):
            per = [r["tasks"][task] for r in runs]
            scales = [p["scale"] for p in per if p["scale"] is not None]
            lines.append(
                "| "
                + " | ".join(
                    [
                        name if i == 0 else "",
                        str(len(runs)) if i == 0 else "",
                        ms([r["auc"]["click"] for r in runs]) if i == 0 else "",
                        ms([r["auc"]["conversion"] for r in runs]) if i == 0 else "",
                        task,
                        ms([p["entropy"] for p in per], 3),
                        ms([p["deviation"] for p in per], 3),
                        ms([p["eta2"] for p in per], 3),
                        ms([p["centroid_accuracy"] for p in per], 3),
                        ms(scales, 2) if scales else "—",
                    ]
                )
                + " |"
            )
    lines.append(f"| *oracle* | | {oracle['click']:.4f} | {oracle['conversion']:.4f} | | | | | | |")
    lines.append(
        f"| *chance routing* | | | | | | | {(num_branches - 1) / (num_tags - 1):.3f} | {1 / num_branches:.3f} | |"
    )
    return "\n".join(lines)


def diagnosis(results: dict[str, list[dict]]) -> str:
    lines = [
        "| gate | task | kernel norm | tag-embedding norm | score spread over kernels "
        "| ‖∂L/∂VK‖ via gate, init → trained | via VKE attention, init → trained |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        for task in runs[0]["tasks"]:
            per = [r["tasks"][task] for r in runs]

            def mean(key: str, where: str, runs: list[dict] = runs) -> float:
                return float(np.mean([r[where][key] for r in runs]))

            lines.append(
                f"| {name} | {task} | {np.mean([p['kernel_norm'] for p in per]):.3f} "
                f"| {np.mean([p['tag_norm'] for p in per]):.2f} | {np.mean([p['score_spread'] for p in per]):.3f} "
                f"| {mean('grad_gate', 'grad_init'):.1e} → {mean('grad_gate', 'grad_trained'):.1e} "
                f"| {mean('grad_attention', 'grad_init'):.1e} → {mean('grad_attention', 'grad_trained'):.1e} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_synthetic_training_flags(p, work_dir="runs/bench_gates")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    args = p.parse_args(argv)

    work = Path(args.work_dir)
    data = work / "data"
    cfg, meta = cached_synthetic_data(data, args.rows, args.users)
    tags = synthetic.all_tags(cfg)
    num_branches = cfg.taxonomy[0]

    # Finished (variant, seed) cells are cached, so an interrupted run resumes.
    cache_path = work / "results.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    key_base = json.dumps(
        {
            "rows": args.rows,
            "users": args.users,
            "scale": args.scale,
            "epochs": args.epochs,
            "batch": args.batch_size,
            "lr": args.learning_rate,
        },
        sort_keys=True,
    )
    results: dict[str, list[dict]] = {}
    trained = 0
    start = time.perf_counter()
    for name in args.variants:
        for seed in range(args.seeds):
            key = f"{key_base}|{json.dumps(VARIANTS[name], sort_keys=True)}|{seed}"
            if key not in cache:
                t0 = time.perf_counter()
                cache[key] = run_variant(data, VARIANTS[name], seed, args, tags)
                cache[key]["seconds"] = time.perf_counter() - t0
                trained += 1
                cache_path.write_text(json.dumps(cache))
                r = cache[key]
                print(
                    f"{name:<12} seed {seed}: click {r['auc']['click']:.4f} conversion {r['auc']['conversion']:.4f} "
                    + " ".join(f"{t} H={v['entropy']:.3f} eta2={v['eta2']:.3f}" for t, v in r["tasks"].items())
                    + f" ({time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            results.setdefault(name, []).append(cache[key])
    wall = time.perf_counter() - start

    table = summarise(results, meta["oracle_auc_eval"], num_branches, len(tags))
    diag = diagnosis(results)
    print(table + "\n\n" + diag)
    if not args.no_write:
        cmd = "python -m benchmarks.gate_routing " + " ".join(sys.argv[1:] if argv is None else argv)
        facts = {
            "Data": f"{args.rows:,} impressions (train on {meta['splits']['train']['rows']:,}, eval on the last day), "
            f"{args.users:,} users, {len(tags):,} leaf tags in {num_branches} level-1 branches",
            "Model": f"mvke_mt, the paper's Table 5 sizes scaled by {args.scale}, 5 VKEs "
            "(click ← 0–2, conversion ← 1–4); Adam lr "
            f"{args.learning_rate}, batch {args.batch_size}, {args.epochs} epoch(s); "
            f"mean ± std over {args.seeds} seeds",
            "Variants": "; ".join(f"{n}: {VARIANTS[n]}" for n in args.variants),
            "Wall time": f"{wall / 60:.1f} min for the {trained} cell(s) trained by this run; the other cells come "
            "from the work directory's cache (the same command, run earlier), so an interrupted run resumes",
            "Machine": machine(),
        }
        body = section("MVKE gate routing (VKG variants, known truth)", cmd, facts, table, note=reading(results))
        body += "\nDiagnosis (means over seeds; gradients on one training batch of 2,048):\n\n" + diag + "\n"
        body += "\n" + EXPLAIN + "\n\n![gate routing](figures/gates.png)\n"
        write_section("gates", body)
        FIGURES.mkdir(parents=True, exist_ok=True)
        (FIGURES / "gates.json").write_text(json.dumps({"command": cmd, "results": results}, indent=1))
        plot(results, FIGURES / "gates.png")
    return 0


FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"

EXPLAIN = """How to read the diagnosis. The code's gate scores are `e_t · VK_k`: the *tag-embedding norm* and
*kernel norm* columns are both of order 0.1 after training, so the *score spread over kernels* is a
few thousandths and the softmax is uniform to three decimals (entropy 1.000). Nothing pushes either
factor to grow: the score `u · e_t` takes its scale from the user side, and the kernels' gradient
comes almost entirely through the gate (the VKE attention's share is 10 to 60 times smaller), in
proportion to those same tiny scores. The *direction* of the deviations is learned: η² by level-1
branch is about 0.7 against 0.009 for routing unrelated to the taxonomy, so the gate knows the
taxonomy but at a temperature that makes it irrelevant to the prediction. The paper's attention
gate (scaled by 1/sqrt(d)) is as uniform. A learned scale on the dot scores or larger kernels do not
help: in a small run (`--rows 20000 --users 2000 --seeds 1 --variants dot+scale kernel-init`) the
scale moved from 5.00 to 5.03 and the entropy stayed 1.000, because the scale's gradient is as small
as the scores it multiplies. The normalised gate (`gate="cosine"`, a learned temperature) is free of
those norms and routes for real; sharply routed (start 10) it costs AUC beyond seed noise, softly
routed (start 3) it is within noise of the code's gate on both tasks but below it on the mean. On this
data routing buys no accuracy, so the default stays the code's gate and the cosine gate is an option
(`UserTagConfig(gate="cosine", gate_scale=3.0)`). A cell (one variant, one seed) took 1.5 min on the idle
machine and 5 to 8 min while other jobs shared its 2 cores."""


def plot(results: dict[str, list[dict]], path: str | Path | None = None) -> Any:
    """Per gate variant: eval AUC per task and the gate's entropy / branch separation (mean and seed std).

    ``results`` is ``json.load(open("docs/figures/gates.json"))["results"]``; returns the figure.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (
        ("eval AUC", lambda r, t: r["auc"][t]),
        ("gate entropy (1 = uniform)", lambda r, t: r["tasks"][t]["entropy"]),
        ("η² of gate weights by level-1 branch", lambda r, t: r["tasks"][t]["eta2"]),
    )
    for ax, (title, value) in zip(axes, panels):
        for i, task in enumerate(("click", "conversion")):
            v = [[value(r, task) for r in results[n]] for n in names]
            ax.bar(x + (i - 0.5) * 0.38, [np.mean(a) for a in v], 0.38, yerr=[np.std(a) for a in v], label=task)
        ax.set_xticks(x, names, rotation=20)
        ax.set_title(title)
    aucs = [r["auc"][t] for runs in results.values() for r in runs for t in ("click", "conversion")]
    axes[0].set_ylim(min(aucs) - 0.03, max(aucs) + 0.02)  # bars from 0 would hide differences of a point
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def reading(results: dict[str, list[dict]]) -> str:
    """A short reading computed from the numbers (filled in below the table)."""
    if "code" not in results:
        return ""
    base = results["code"]
    lines = []
    for name, runs in results.items():
        if name == "code":
            continue
        parts = []
        for task in ("click", "conversion"):
            d = np.mean([r["auc"][task] for r in runs]) - np.mean([r["auc"][task] for r in base])
            noise = 2 * max(np.std([r["auc"][task] for r in runs]), np.std([r["auc"][task] for r in base]))
            verdict = "beyond" if abs(d) > noise else "within"
            parts.append(f"{task} {d:+.4f} ({verdict} twice the larger seed std)")
        h = {t: np.mean([r["tasks"][t]["entropy"] for r in runs]) for t in runs[0]["tasks"]}
        e = {t: np.mean([r["tasks"][t]["eta2"] for r in runs]) for t in runs[0]["tasks"]}
        lines.append(
            f"- **{name}** vs code: AUC {', '.join(parts)}; entropy "
            + ", ".join(f"{t} {h[t]:.3f}" for t in h)
            + "; η² "
            + ", ".join(f"{t} {e[t]:.3f}" for t in e)
            + "."
        )
    return "Reading (computed from the table):\n\n" + "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
