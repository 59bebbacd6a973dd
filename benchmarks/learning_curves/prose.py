"""The section's generated prose: the reading (conclusions computed from the numbers, each difference
tested against the seed noise)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from benchmarks.learning_curves.data_prefixes import TASKS
from benchmarks.learning_curves.seed_summary import (
    FLOOR_AUC,
    _rows_label,
    _same_steps_parts,
    _steps,
    gap_share,
    seed_noise,
    summarize,
)


def _compare(diff: float, noise: float | None, more: str, less: str) -> str:
    if noise is None:
        return f"{more if diff > 0 else less} ({diff:+.4f}; one seed per cell, so not tested against seed noise)"
    if abs(diff) > 2 * noise:
        return f"{more if diff > 0 else less} ({diff:+.4f}, beyond twice the seed std {noise:.4f})"
    return f"no measured difference ({diff:+.4f}, within twice the seed std {noise:.4f})"


def reading(results: Mapping[str, Any]) -> str:
    """The section's conclusions, computed from the numbers."""
    summary = summarize(results["cells"])
    refs = results["references"]
    oracle = refs["oracle"]
    head = {t: oracle[t] - FLOOR_AUC for t in TASKS}
    sizes_all = sorted({n for s in summary.values() for n in s})
    small, top = sizes_all[0], sizes_all[-1]
    noise = seed_noise(summary)
    both_noise = None if noise is None else max(noise.values())
    out: list[str] = []
    if noise is None:
        out.append("- Every cell ran with one seed: no seed std was measured, so no difference below is tested.")
    else:
        out.append(
            f"- Seed noise: the largest seed std of a multi-seed cell is {noise['click']:.4f} (click) and "
            f"{noise['conversion']:.4f} (conversion); a change counts as measured beyond twice that."
        )
    for a, b in zip(sizes_all, sizes_all[1:]):
        both = [m for m, s in summary.items() if a in s and b in s]
        if not both:
            continue
        d = {t: np.array([summary[m][b][t]["mean"] - summary[m][a][t]["mean"] for m in both]) for t in TASKS}
        diff = float(d["conversion"].mean() - d["click"].mean())
        out.append(
            f"- **{_rows_label(a)} → {_rows_label(b)} rows** ({', '.join(both)}): click AUC "
            f"{d['click'].mean():+.4f} on average ({d['click'].mean() / head['click']:+.1%} of its oracle gap), "
            f"conversion {d['conversion'].mean():+.4f} ({d['conversion'].mean() / head['conversion']:+.1%}). "
            "Conversion vs click gain: " + _compare(diff, both_noise, "conversion gains more", "click gains more") + "."
        )
    common = [m for m, s in summary.items() if all(n in s for n in sizes_all)]
    if common and top != small:
        out.append(
            f"- **Gap share, mean over {', '.join(common)}, "
            + " → ".join(_rows_label(n) for n in sizes_all)
            + ":** click "
            + " → ".join(
                f"{np.mean([gap_share(summary[m][n]['click']['mean'], oracle['click']) for m in common]):.1%}"
                for n in sizes_all
            )
            + "; conversion "
            + " → ".join(
                f"{np.mean([gap_share(summary[m][n]['conversion']['mean'], oracle['conversion']) for m in common]):.1%}"
                for n in sizes_all
            )
            + "."
        )
    lab = refs["observable_on_labels"]
    first_labels = min(lab, key=int)
    for t in TASKS:
        best_auc, best_model = max((s[top][t]["mean"], m) for m, s in summary.items() if top in s)
        unobs = oracle[t] - refs["observable"][t]
        unlearned = refs["observable"][t] - best_auc
        learned_part = (
            f"at least {unlearned / head[t]:.0%} is unlearned (observable reference − best model, "
            f"{best_model} {best_auc:.4f})"
            if unlearned > 0
            else f"the best model ({best_model} {best_auc:.4f}) is above the observable reference, so none of it "
            "is shown to be unlearned"
        )
        out.append(
            f"- **{t} at {_rows_label(top)} rows:** of the oracle's headroom over {FLOOR_AUC} ({head[t]:.4f}), at "
            f"most {unobs / head[t]:.0%} is out of reach of the features (oracle {oracle[t]:.4f} − observable "
            f"reference {refs['observable'][t]:.4f}; of that, {(oracle[t] - refs['latent_facets'][t]) / head[t]:.0%} "
            f"of the headroom is the biases, the rest the facets being seen only through the behaviour lists), and "
            f"{learned_part}. Fitted on the 0/1 labels of only the first {int(first_labels):,} rows "
            f"({lab[first_labels]['conversions']} conversions), the observable reference reaches "
            f"{lab[first_labels][t]:.4f}."
        )
    if common and top != small:
        d_conv = float(
            np.mean([summary[m][top]["conversion"]["mean"] - summary[m][small]["conversion"]["mean"] for m in common])
        )
        d_click = float(
            np.mean([summary[m][top]["click"]["mean"] - summary[m][small]["click"]["mean"] for m in common])
        )
        verdict = _compare(
            d_conv - d_click,
            both_noise,
            "conversion rises with rows more than click does",
            "click rises with rows more than conversion does",
        )
        best_conv = max(summary[m][top]["conversion"]["mean"] for m in common)
        ref_conv = lab[first_labels]["conversion"]
        closed = np.mean(
            [
                (summary[m][top]["conversion"]["mean"] - summary[m][small]["conversion"]["mean"])
                / (refs["observable"]["conversion"] - summary[m][small]["conversion"]["mean"])
                for m in common
            ]
        )
        if ref_conv > best_conv + 2 * (both_noise or 0.0):
            signal = (
                f"The signal is in the rows already: the observable reference fitted on the labels of the first "
                f"{int(first_labels):,} rows ({lab[first_labels]['conversions']} conversions) reaches {ref_conv:.4f}, "
                f"above every model at {_rows_label(top)} rows (best {best_conv:.4f}). The reference is *given* the "
                "tag geometry and the generator's max-over-facets form; the models have to learn the tag and "
                f"behaviour-list embeddings from the labels. From {_rows_label(small)} to {_rows_label(top)} rows "
                f"they close {closed:.0%} of their conversion gap to the observable reference. "
                + (
                    "So conversion is data-starved for these models (their sample efficiency), not for lack of "
                    "information in the features: more rows keep helping"
                    + (" (one seed per cell, so untested against seed noise)." if both_noise is None else ".")
                    if d_conv > 2 * (both_noise or 0.0)
                    else "More rows do not measurably help here, so the limit is how the models learn (one epoch, "
                    "architecture, optimisation), not the number of rows nor the information in the features."
                )
            )
        else:
            signal = (
                f"The observable reference fitted on the labels of the first {int(first_labels):,} rows reaches "
                f"{ref_conv:.4f}, not above the best model at {_rows_label(top)} rows ({best_conv:.4f})."
            )
        out.append(
            f"- **Is conversion data-starved?** From {_rows_label(small)} to {_rows_label(top)} rows, averaged over "
            f"{', '.join(common)}, conversion AUC moves {d_conv:+.4f} and click {d_click:+.4f}: {verdict}. " + signal
        )
    rows_or_steps = same_steps_reading(results, both_noise)
    if rows_or_steps:
        out.append(rows_or_steps)
    return "\n".join(out)


def same_steps_reading(results: Mapping[str, Any], noise: float | None) -> str | None:
    """One bullet: at equal steps, how much of the gain distinct rows give beyond repeated ones."""
    parts = _same_steps_parts(results)
    if parts is None:
        return None
    block, one, rep, models = parts
    small, big, k = block["rows"], block["compare_rows"], block["epochs"]
    multi = [v[t]["std"] for sizes in rep.values() for v in sizes.values() if v["click"]["n"] > 1 for t in TASKS]
    noise = max([noise or 0.0, *multi]) if (noise is not None or multi) else None
    mean = {
        t: {
            key: float(np.mean([src[m][n][t]["mean"] for m in models]))
            for key, src, n in (("one", one, small), ("rep", rep, small), ("big", one, big))
        }
        for t in TASKS
    }
    share = {
        t: (mean[t]["rep"] - mean[t]["one"]) / (mean[t]["big"] - mean[t]["one"])
        if mean[t]["big"] > mean[t]["one"]
        else float("nan")
        for t in TASKS
    }
    rows_effect = {t: mean[t]["big"] - mean[t]["rep"] for t in TASKS}
    conv = rows_effect["conversion"]
    if noise is not None and abs(conv) <= 2 * noise:
        verdict = (
            f"at equal steps, {k} passes over {_rows_label(small)} rows do as well as one over {_rows_label(big)}: "
            "the one-epoch curve's conversion gain is optimisation steps, so at one epoch these models are "
            "under-trained rather than short of rows"
        )
    elif conv > 0:
        verdict = (
            "distinct rows help beyond the steps they bring: conversion is data-starved in the strict sense "
            "(repeating rows does not replace new ones)"
        )
    else:
        verdict = f"{k} passes over the same rows do better than one pass over new ones at equal steps"
    below = [t for t in TASKS if mean[t]["rep"] < mean[t]["one"]]
    if below:
        verdict += (
            f"; {k} passes over the same rows even score below one pass ({' and '.join(below)}), a sign of "
            "overfitting: the extra passes fit the training rows, not the eval day"
        )
    return (
        f"- **Rows or steps?** At equal steps ({_steps(small, results['settings']['batch_size'], k):,} vs "
        f"{_steps(big, results['settings']['batch_size']):,}), {_rows_label(small)} rows × {k} epochs against "
        f"{_rows_label(big)} rows × 1 epoch, mean over {', '.join(models)}: click "
        f"{mean['click']['rep']:.4f} vs {mean['click']['big']:.4f}, conversion {mean['conversion']['rep']:.4f} vs "
        f"{mean['conversion']['big']:.4f}. The extra steps alone give {share['click']:.0%} (click) and "
        f"{share['conversion']:.0%} (conversion) of the {_rows_label(small)} → {_rows_label(big)} gain; distinct "
        f"rows at equal steps add {rows_effect['click']:+.4f} click AUC ({_vs_noise(rows_effect['click'], noise)}) "
        f"and {conv:+.4f} conversion ({_vs_noise(conv, noise)}). So {verdict}."
    )


def _vs_noise(diff: float, noise: float | None) -> str:
    if noise is None:
        return "one seed per cell, not tested against seed noise"
    return f"{'beyond' if abs(diff) > 2 * noise else 'within'} twice the seed std {noise:.4f}"
