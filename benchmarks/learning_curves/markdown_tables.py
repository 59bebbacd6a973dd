"""The section's markdown tables: AUC and gap share per model and size, the gains between sizes,
and the same-steps comparison (rows or steps)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmarks.learning_curves.data_prefixes import TASKS
from benchmarks.learning_curves.seed_summary import (
    FLOOR_AUC,
    _rows_label,
    _same_steps_parts,
    _steps,
    gap_share,
    summarize,
)


def _ms(stats: Mapping[str, Any]) -> str:
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}" if stats["n"] > 1 else f"{stats['mean']:.4f}"


def tables(results: Mapping[str, Any]) -> str:
    """The AUC / gap-share table and the per-model gain table, as markdown."""
    summary = summarize(results["cells"])
    refs = results["references"]
    oracle = refs["oracle"]
    lines = [
        "| model | training rows | seeds | click AUC | click gap share | conversion AUC | conversion gap share |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for model, sizes in summary.items():
        for n, s in sizes.items():
            shares = {t: gap_share(s[t]["mean"], oracle[t]) for t in TASKS}
            lines.append(
                f"| {model} | {n:,} | {s['click']['n']} | {_ms(s['click'])} | {shares['click']:.1%} | "
                f"{_ms(s['conversion'])} | {shares['conversion']:.1%} |"
            )
    labels = refs["observable_on_labels"]
    ref_rows = [
        ("*oracle (true probabilities)*", oracle),
        ("*check: all latents (the oracle's inputs), fitted*", refs["all_latents"]),
        ("*reference: true facets + statistics*", refs["latent_facets"]),
        ("*reference: observable features only*", refs["observable"]),
        *[
            (f"*observable reference fitted on 0/1 labels of the first {int(n):,} rows*", labels[n])
            for n in sorted(labels, key=int)
        ],
    ]
    for name, aucs in ref_rows:
        lines.append(
            f"| {name} | | | {aucs['click']:.4f} | {gap_share(aucs['click'], oracle['click']):.1%} | "
            f"{aucs['conversion']:.4f} | {gap_share(aucs['conversion'], oracle['conversion']):.1%} |"
        )
    sizes_all = sorted({n for s in summary.values() for n in s})
    gains = [
        "",
        "| model | step | click ΔAUC | conversion ΔAUC | click Δgap share | conversion Δgap share |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for model, sizes in summary.items():
        for a, b in zip(sizes_all, sizes_all[1:]):
            if a in sizes and b in sizes:
                d = {t: sizes[b][t]["mean"] - sizes[a][t]["mean"] for t in TASKS}
                ds = {t: d[t] / (oracle[t] - FLOOR_AUC) for t in TASKS}
                gains.append(
                    f"| {model} | {_rows_label(a)} → {_rows_label(b)} | {d['click']:+.4f} | {d['conversion']:+.4f} | "
                    f"{ds['click']:+.1%} | {ds['conversion']:+.1%} |"
                )
    return "\n".join(lines + gains)


def same_steps_table(results: Mapping[str, Any]) -> str:
    """Per model and task: the smallest size at one epoch and at k epochs against the next size at one
    epoch (the same steps as k epochs), and the share of the one-epoch gain the extra steps alone give."""
    parts = _same_steps_parts(results)
    if parts is None:
        return ""
    block, one, rep, models = parts
    small, big, k = block["rows"], block["compare_rows"], block["epochs"]
    batch = results["settings"]["batch_size"]
    lines = [
        f"| model | task | {_rows_label(small)} × 1 epoch ({_steps(small, batch):,} steps) | "
        f"{_rows_label(small)} × {k} epochs ({_steps(small, batch, k):,} steps), seeds | "
        f"{_rows_label(big)} × 1 epoch ({_steps(big, batch):,} steps) | share of the {_rows_label(small)} → "
        f"{_rows_label(big)} gain from steps alone |",
        "| --- | --- | --- | --- | --- | ---: |",
    ]
    for m in models:
        for t in TASKS:
            a, r, b = one[m][small][t], rep[m][small][t], one[m][big][t]
            gain = b["mean"] - a["mean"]
            share = f"{(r['mean'] - a['mean']) / gain:.0%}" if gain > 0 else "n/a (no gain)"
            lines.append(f"| {m} | {t} | {_ms(a)} | {_ms(r)}, {r['n']} | {_ms(b)} | {share} |")
    return "\n".join(lines)
