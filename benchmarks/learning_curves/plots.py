"""The figure: AUC against training rows per model and task, with the oracle and the references."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.learning_curves.data_prefixes import TASKS
from benchmarks.learning_curves.seed_summary import _rows_label, summarize


def plot(results: Mapping[str, Any], path: str | Path) -> Path:
    """AUC vs training rows per model (mean ± seed std), one panel per task, with the oracle and
    the references as horizontal lines. ``results`` is the dict saved as ``learning_curves.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(results["cells"])
    refs = results["references"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, task in zip(axes, TASKS):
        for model, sizes in summary.items():
            xs = sorted(sizes)
            ax.errorbar(
                xs,
                [sizes[n][task]["mean"] for n in xs],
                yerr=[sizes[n][task]["std"] for n in xs],
                marker="o",
                capsize=3,
                label=model,
            )
        for value, style, label in (
            (refs["oracle"][task], "k-", "oracle (true probabilities)"),
            (refs["latent_facets"][task], "k--", "reference: true facets + statistics"),
            (refs["observable"][task], "k:", "reference: observable features only"),
        ):
            ax.axhline(value, color=style[0], linestyle=style[1:], linewidth=1, label=label)
        labels = refs.get("observable_on_labels", {})
        if labels:
            xs = sorted(int(n) for n in labels)
            ax.plot(
                xs, [labels[str(n)][task] for n in xs], "kx-", linewidth=0.8, label="observable reference on N labels"
            )
        ax.set_xscale("log")
        ax.set_xticks(sorted({int(c["train_rows"]) for c in results["cells"]} | {int(n) for n in labels}))
        ax.set_xticklabels([_rows_label(n) for n in ax.get_xticks()])
        ax.minorticks_off()
        ax.set_xlabel("training rows (first N of one generated world; same eval day)")
        ax.set_ylabel("eval AUC")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    handles, names = axes[1].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))  # room for the legend below the panels
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
