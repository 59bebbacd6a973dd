"""When does M3oE help? M3oE vs MMoE, PLE and STAR over a grid of domain and task relatedness.

    python -m benchmarks.multidomain_grid                 # the default grid (both presets)
    python -m benchmarks.multidomain_grid --quick         # a smoke run: 1 cell, 1 seed, tiny data
    python -m benchmarks.multidomain_grid --full          # 100k rows, the official 50 epochs

The data (:mod:`mvke_tf.data.multidomain` with its relatedness knobs): the world's own logits
and the domain preference tables are switched off, so each (domain, task) logit is an offset plus
``w[d, t] . z(user, ad)``, where the cosine between two domains' weight vectors is
``domain_correlation`` and between two tasks' is ``task_correlation``. Each cell of the grid is one
generated data set (3 domains of 25 / 50 / 25 %, CTR 0.3, conversions per click 0.5), split
70 / 10 / 20 into train / validation / test. Every model trains on the train split under the
preset's schedule (M3oE's upper level reads the validation split in bi-level mode; early stopping,
where the preset has it, scores it too) and is scored on the test split: the mean AUC over the six
(domain, task) pairs, mean ± std over training seeds. M3oE's fusion weights are traced at every
fusion step (the upper-level loss and its gradient w.r.t. the raw α/β).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from benchmarks.report import machine, section, write_section
from mvke_tf.data import multidomain as md
from mvke_tf.models.multidomain import MultiDomainModel, preset
from mvke_tf.models.multidomain_metrics import mdmt_metrics, predict_multidomain
from mvke_tf.models.multidomain_training import train_multidomain

MODELS = ("m3oe", "mmoe", "ple", "star")
LABELS = {"m3oe": "M3oE", "mmoe": "MMoE", "ple": "PLE (CGC)", "star": "STAR"}
FUSION = ("alpha_domain", "alpha_task", "beta_domain", "beta_task")
FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"


def data_config(rows: int, domain_correlation: float, task_correlation: float, seed: int = 0):
    return md.MultiDomainDataConfig(
        num_rows=rows,
        domain_shares=(0.25, 0.5, 0.25),
        world_scale=0.0,
        preference_scale=0.0,
        target_ctr=0.3,
        target_cvr=0.5,
        relatedness_scale=1.5,
        domain_correlation=domain_correlation,
        task_correlation=task_correlation,
        seed=seed,
    )


def _reset(model: MultiDomainModel, fresh: MultiDomainModel, learning_rate: float, fusion_lr: float) -> None:
    """A new seed's run on an already traced model: its weights from ``fresh``, optimisers zeroed."""
    model.set_weights(fresh.get_weights())
    for opt, lr in ((model.optimizer, learning_rate), (model.fusion_optimizer, fusion_lr)):
        for v in opt.variables:
            v.assign(np.zeros(v.shape, v.dtype.as_numpy_dtype))
        opt.learning_rate = lr


def run_model(
    preset_name: str, model_type: str, cells: list[dict[str, Any]], seeds: int, epochs: int, specs: Any
) -> dict[str, Any]:
    """Trains ``model_type`` under a preset on every cell and seed; returns results per cell."""
    import tensorflow as tf

    arch, schedule = preset(preset_name, f"multi_domain_{model_type}")
    schedule = dataclasses.replace(schedule, epochs=epochs)
    model: MultiDomainModel | None = None
    out: dict[str, Any] = {}
    for cell in cells:
        train, val, test = cell["splits"]
        res = out.setdefault(cell["key"], {"mean": [], "seconds": [], "epochs": [], **{n: [] for n in FUSION}})
        for seed in range(seeds):
            t0 = time.perf_counter()
            tf.keras.utils.set_random_seed(seed)  # Keras' initialisers draw from Python's random
            fresh = MultiDomainModel(arch, specs)
            fresh.build_weights()
            if model is None:
                model = fresh
                decay = {"weight_decay": schedule.weight_decay} if schedule.weight_decay else {}
                model.compile(
                    optimizer=tf.keras.optimizers.Adam(schedule.learning_rate, **decay),
                    fusion_optimizer=tf.keras.optimizers.Adam(schedule.fusion_learning_rate, **decay),
                )
            else:
                _reset(model, fresh, schedule.learning_rate, schedule.fusion_learning_rate)
            bs = schedule.batch_size
            validation = md.make_dataset(*val, batch_size=4096, shuffle=False) if schedule.patience else None
            kwargs = schedule.train_kwargs()
            history = train_multidomain(
                model,
                md.make_dataset(*train, batch_size=bs, seed=seed),
                md.make_dataset(*val, batch_size=bs, seed=seed),
                validation=validation,
                trace_fusion=model_type == "m3oe",
                **kwargs,
            )
            probs = predict_multidomain(model, md.make_dataset(*test, batch_size=4096, shuffle=False))
            m = mdmt_metrics(test[1], probs, test[0][md.DOMAIN_FIELD], 3)
            res["mean"].append(m["mean_auc"])
            res["seconds"].append(time.perf_counter() - t0)
            res["epochs"].append(len(history["loss"]))
            for name, value in model.fusion_values().items():
                res[name].append(value)
            if "trace" in history:
                res.setdefault("traces", []).append(history["trace"])
            print(
                f"{preset_name:<8} {cell['key']:<14} {model_type:<5} seed {seed}: mean AUC {m['mean_auc']:.4f} "
                f"({time.perf_counter() - t0:.0f} s, {len(history['loss'])} epochs) {model.fusion_values() or ''}",
                file=sys.stderr,
                flush=True,
            )
    return out


def _trace_summary(traces: list[dict[str, list[Any]]]) -> dict[str, Any]:
    """Per fusion weight: mean |gradient|, |mean gradient| (the consistent part), and the upper-level
    loss at the first and last fusion step, pooled over runs."""
    grads = np.concatenate([np.asarray(t["fusion_grad"]) for t in traces if t["fusion_grad"]])
    first = [t["fusion_loss"][0] for t in traces if t["fusion_loss"]]
    last = [t["fusion_loss"][-1] for t in traces if t["fusion_loss"]]
    return {
        "steps_per_run": float(np.mean([len(t["fusion_loss"]) for t in traces])),
        "mean_abs_grad": dict(zip(FUSION, np.mean(np.abs(grads), axis=0).tolist())),
        "abs_mean_grad": dict(zip(FUSION, np.abs(np.mean(grads, axis=0)).tolist())),
        "upper_loss_first": float(np.mean(first)),
        "upper_loss_last": float(np.mean(last)),
    }


def _verdict(m3oe: list[float], best: list[float]) -> tuple[float, float, str]:
    diff, spread = float(np.mean(m3oe) - np.mean(best)), float(max(np.std(m3oe), np.std(best)))
    if abs(diff) <= 2 * spread:
        return diff, spread, "within twice the larger std"
    return diff, spread, ("wins" if diff > 0 else "loses") + " beyond twice the larger std"


def table_and_reading(preset_name: str, results: dict[str, Any], cells: list[dict[str, Any]]) -> tuple[str, str]:
    header = ["domain corr.", "task corr.", "oracle"] + [LABELS[m] for m in results] + ["M3oE − best baseline"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    wins, losses, ties = [], [], []
    for cell in cells:
        k = cell["key"]
        row = [f"{cell['rd']:.1f}", f"{cell['rt']:.1f}", f"{cell['oracle']:.4f}"]
        row += [f"{np.mean(results[m][k]['mean']):.4f} ± {np.std(results[m][k]['mean']):.4f}" for m in results]
        base = {m: results[m][k]["mean"] for m in results if m != "m3oe"}
        if "m3oe" in results and base:
            best = max(base, key=lambda m: np.mean(base[m]))
            diff, spread, verdict = _verdict(results["m3oe"][k]["mean"], base[best])
            row.append(f"{diff:+.4f} vs {LABELS[best]}: {verdict}")
            (wins if verdict.startswith("wins") else losses if verdict.startswith("loses") else ties).append(
                f"({cell['rd']:.1f}, {cell['rt']:.1f})"
            )
        lines.append("| " + " | ".join(row) + " |")
    reading = []
    if wins:
        reading.append(f"M3oE wins beyond twice the larger seed std in cell(s) {', '.join(wins)}.")
    else:
        reading.append("M3oE wins beyond twice the larger seed std in no cell.")
    if losses:
        reading.append(f"It loses beyond that in {', '.join(losses)}")
    if ties:
        reading.append(
            ("; it is" if losses else " It is") + f" within noise of the best baseline in {', '.join(ties)}."
        )
    elif losses:
        reading[-1] += "."
    return "\n".join(lines), " ".join(reading)


def diagnosis(preset_name: str, res: dict[str, Any], start: float) -> tuple[str, dict[str, Any]]:
    traces = [t for cell in res.values() for t in cell.get("traces", [])]
    if not traces:
        return "", {}
    s = _trace_summary(traces)
    final = {n: float(np.mean([v for cell in res.values() for v in cell[n]])) for n in FUSION}
    drift = max(abs(v - start) for v in final.values())
    ratio = {n: s["abs_mean_grad"][n] / max(s["mean_abs_grad"][n], 1e-12) for n in FUSION}
    text = (
        f"{preset_name}: {s['steps_per_run']:.0f} fusion steps per run; mean |dL_val/d raw| per step "
        + ", ".join(f"{n} {s['mean_abs_grad'][n]:.2e}" for n in FUSION)
        + "; |mean| / mean|·| (sign consistency, 1 = always the same sign) "
        + ", ".join(f"{n} {ratio[n]:.2f}" for n in FUSION)
        + f"; upper-level loss {s['upper_loss_first']:.4f} at the first step, {s['upper_loss_last']:.4f} at the last;"
        + " final α/β (mean over cells and seeds) "
        + ", ".join(f"{n} {v:.3f}" for n, v in final.items())
        + f", at most {drift:.3f} from the start {start:.3f}"
    )
    return text, {**s, "sign_consistency": ratio, "final": final, "max_drift": drift}


def plot(all_results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = [p for p in all_results if "m3oe" in all_results[p]["results"]]
    fig, axes = plt.subplots(2, max(len(presets), 1), figsize=(6 * max(len(presets), 1), 7), squeeze=False)
    for j, p in enumerate(presets):
        cells = all_results[p]["results"]["m3oe"]
        key = next(iter(cells))
        trace = cells[key]["traces"][0]
        grads = np.abs(np.asarray(trace["fusion_grad"]))
        for i, n in enumerate(FUSION):
            axes[0, j].semilogy(trace["step"], grads[:, i] + 1e-12, ".", ms=3, label=n)
        axes[0, j].set_title(f"{p}: |d upper loss / d raw α/β| per fusion step (cell {key}, seed 0)")
        axes[0, j].set_xlabel("training step")
        axes[0, j].legend(fontsize=7)
        axes[1, j].plot(trace["step"], trace["fusion_loss"], ".-", ms=3)
        axes[1, j].set_title(f"{p}: upper-level (fusion-step) loss")
        axes[1, j].set_xlabel("training step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--domain-corr", type=float, nargs="+", default=[0.2, 0.9])
    p.add_argument("--task-corr", type=float, nargs="+", default=[0.2, 0.9])
    p.add_argument("--presets", nargs="+", default=["small", "official"], choices=["small", "official"])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--small-epochs", type=int, default=2, help="epochs of the small preset (its default is 3)")
    p.add_argument("--official-epochs", type=int, default=4, help="epoch cap of the official preset (official: 50)")
    p.add_argument("--full", action="store_true", help="100k rows, small 3 epochs, official 50 (hours on 2 cores)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3,000 rows, 1 cell, 1 seed, 1 epoch; no writing")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args(argv)
    if args.full:
        args.rows, args.small_epochs, args.official_epochs = 100_000, 3, 50
    if args.quick:
        args.rows, args.seeds, args.small_epochs, args.official_epochs = 3_000, 1, 1, 1
        args.domain_corr, args.task_corr, args.no_write = [0.5], [0.5], True
    start_all = time.perf_counter()
    specs = md.relatedness_fields()
    cells = []
    for rd in args.domain_corr:
        for rt in args.task_corr:
            data = md.generate(data_config(args.rows, rd, rt))
            oracle = np.nanmean([v for row in data["oracle_auc"]["test"].values() for v in row.values()])
            splits = [md.to_features(data[s], specs) for s in md.SPLITS]
            cells.append({"key": f"d{rd:.1f}/t{rt:.1f}", "rd": rd, "rt": rt, "oracle": float(oracle), "splits": splits})
    epochs = {"small": args.small_epochs, "official": args.official_epochs}
    all_results: dict[str, Any] = {}
    for name in args.presets:
        t0 = time.perf_counter()
        results = {m: run_model(name, m, cells, args.seeds, epochs[name], specs) for m in args.models}
        all_results[name] = {"results": results, "seconds": time.perf_counter() - t0}
    wall = time.perf_counter() - start_all

    start = float(1 / (1 + np.exp(-1.0)))
    blocks, json_out = (
        [],
        {"args": vars(args), "cells": [{k: c[k] for k in ("key", "rd", "rt", "oracle")} for c in cells]},
    )
    for name, entry in all_results.items():
        table, reading = table_and_reading(name, entry["results"], cells)
        diag, diag_values = diagnosis(name, entry["results"].get("m3oe", {}), start)
        arch, schedule = preset(name)
        blocks.append((name, table, reading, diag, arch, schedule, entry["seconds"]))
        json_out[name] = {
            "seconds": entry["seconds"],
            "diagnosis": diag_values,
            "results": {
                m: {k: {n: v for n, v in r.items() if n != "traces"} for k, r in cells_r.items()}
                for m, cells_r in entry["results"].items()
            },
            "m3oe_traces": {k: r.get("traces", []) for k, r in entry["results"].get("m3oe", {}).items()},
        }
        print(f"\n{name} preset ({epochs[name]} epochs)\n{table}\nReading: {reading}\nα/β: {diag}")
    print(f"wall time {wall:.0f} s", file=sys.stderr)
    if args.no_write:
        return 0
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "multidomain_grid.json").write_text(json.dumps(json_out))
    plot(all_results, FIGURES / "multidomain_grid.png")
    cmd = "python -m benchmarks.multidomain_grid " + " ".join(sys.argv[1:] if argv is None else argv)
    facts = {
        "Data": (
            f"per cell {args.rows:,} rows (train {int(args.rows * 0.7):,} / val {int(args.rows * 0.1):,} / "
            f"test {int(args.rows * 0.2):,}), 3 domains of 25 / 50 / 25 %, CTR 0.3, conversions per click 0.5; "
            "each (domain, task) logit = offset + w[d, t] · z(user, ad) with |w| = 1.5 "
            "(world logits and preference tables off); inputs: gender, age_bucket, income_level, tags, tag_l1"
        ),
        "Grid": f"domain_correlation ∈ {args.domain_corr} × task_correlation ∈ {args.task_corr}; {args.seeds} seeds",
        "Wall time": f"{wall / 60:.1f} min (" + ", ".join(f"{b[0]} {b[6] / 60:.1f} min" for b in blocks) + ")",
        "Machine": machine() + " (shared with other jobs; wall times are loose)",
    }
    body = [section("When does M3oE help? Domain × task relatedness grid (synthetic)", cmd, facts, "", NOTE).rstrip()]
    for name, table, reading, diag, arch, schedule, seconds in blocks:
        ep = epochs[name]
        sched = (
            f"Adam lr {schedule.learning_rate}, weight decay {schedule.weight_decay}, fusion lr "
            f"{schedule.fusion_learning_rate}, StepLR ×{schedule.lr_decay} every "
            f"{schedule.lr_decay_every or '—'} epochs, "
            f"batch {schedule.batch_size}, {ep} epochs"
            + (f" (capped; the official code runs up to {schedule.epochs})" if ep < schedule.epochs else "")
            + (f", early stopping on val mean AUC with patience {schedule.patience}" if schedule.patience else "")
        )
        body.append(
            f"### Preset `{name}`\n\n"
            f"Architecture: embedding {arch.embedding_dim}, STAR/bottom {list(arch.bottom_units)} + skip "
            f"{list(arch.skip_units)}, experts {list(arch.expert_units)} ({arch.num_shared_experts} shared), towers "
            f"[{arch.tower_units}], M3oE fusion `{arch.fusion}`. Training: {sched}. {seconds / 60:.1f} min.\n\n"
            f"Mean (domain, task) test AUC, mean ± std over seeds:\n\n{table}\n\n"
            f"Reading (computed): {reading}\n\nα/β diagnosis (computed): {diag}."
        )
    body.append(
        "![fusion-weight gradients and upper-level loss](figures/multidomain_grid.png) "
        "(raw results and every M3oE fusion-step trace: `docs/figures/multidomain_grid.json`)\n\n" + EXPLAIN
    )
    write_section("multidomain_grid", "\n\n".join(body))
    return 0


NOTE = """\
One model per (preset, model type) is traced once and re-initialised for every seed and cell
(weights of a freshly built model of that seed, optimiser state zeroed), so runs differ only in
their data, initialisation and shuffling. "M3oE − best baseline" compares M3oE with the
baseline of the highest mean in that cell; a win or loss counts only beyond twice the larger of
the two seed stds."""

EXPLAIN = """\
Why α/β barely move. (1) Scale symmetry: each expert group ends in LayerNorm → ReLU, so scaling its
last LayerNorm (γ, β) by s scales the group's output by s, exactly what α does; hence
α·∂L/∂α = Σ(γ·∂L/∂γ + β·∂L/∂β) over that group (tested to 1e-3 in
tests/models/test_multidomain_fusion.py). The lower level drives the right side of the *training*
loss to zero, so the training loss has no slope along α, and the validation loss, drawn from the
same distribution, only the generalisation gap's. (2) Adam moves a raw weight by at most about lr per
step when the gradient keeps its sign: with lr 1e-3 and a few hundred steps the raw weight can move
a few tenths at most, i.e. α by a few hundredths through the sigmoid's slope 0.2 at the start;
a sign consistency well below 1 in the line above means the steps mostly cancel. Not a defect: the
gradient reaches α/β with the right sign (a branch made useless is switched down by the upper level
in the test above: with the other three held, its validation gradient takes raw α_domain down by more
than 0.3 in 40 Adam steps at lr 0.05), and nothing stops it. Stepping all four together (`fusion_step`)
did not reliably do so in that test: β_domain moves too and the loss along α is not convex. What is
missing is a reason for α/β to move on this data."""


if __name__ == "__main__":
    sys.exit(main())
