"""The Evaluator's metrics as a table: one row per slice, AUC (and GAUC, examples) per task.

::

  rows = slice_metrics("<pipeline_root>/Evaluator/evaluation/<id>")
  print("\\n".join(format_auc_table(rows, tasks=("click", "conversion"))))
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class SliceMetrics:
    """Metrics of one slice: ``slice`` is ``"overall"`` or ``"gender=gen1"``; ``metrics[task][name]``."""

    slice: str
    metrics: dict[str, dict[str, float]]


def _slice_name(key: tuple) -> str:
    return " & ".join(f"{k}={v}" for k, v in key) if key else "overall"


def slice_metrics(evaluation_uri: str | os.PathLike) -> list[SliceMetrics]:
    """Reads a TFMA evaluation directory: the overall slice first, then the others sorted by name."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_eval_result(str(evaluation_uri))
    rows = []
    for key, by_output in result.slicing_metrics:
        metrics = {}
        for task, by_sub_key in by_output.items():
            values = by_sub_key.get("", {})
            metrics[task] = {n: float(v["doubleValue"]) for n, v in values.items() if "doubleValue" in v}
        rows.append(SliceMetrics(_slice_name(tuple(key)), metrics))
    return sorted(rows, key=lambda r: (r.slice != "overall", r.slice))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def format_auc_table(rows: Sequence[SliceMetrics], tasks: Sequence[str]) -> list[str]:
    """Lines of a per-slice, per-task table: examples, AUC and GAUC of every task (GAUC only where the
    evaluation has it: data without a user id has none).

    A slice without positives or negatives has no AUC; it shows ``-``.
    """
    with_gauc = any("gauc" in m for row in rows for m in row.metrics.values() if isinstance(m, dict))
    columns = [(t, "auc", f"{t} AUC") for t in tasks]
    if with_gauc:
        columns = [c for t in tasks for c in ((t, "auc", f"{t} AUC"), (t, "gauc", f"{t} GAUC"))]
    widths = [max(12, len(title) + 2) for _, _, title in columns]
    header = f"{'slice':<24}{'examples':>9}" + "".join(f"{title:>{w}}" for (_, _, title), w in zip(columns, widths))
    lines = [header]
    for row in rows:
        first = row.metrics.get(tasks[0], {}) if tasks else {}
        count = first.get("example_count")
        cells = "".join(
            f"{_fmt(row.metrics.get(t, {}).get(key), '.4f'):>{w}}" for (t, key, _), w in zip(columns, widths)
        )
        lines.append(f"{row.slice[:23]:<24}{_fmt(count, ',.0f'):>9}{cells}")
    return lines
