"""The cells summarized over seeds (mean ± std per model, rows and task), the gap share, the seed noise,
and the labels (``200k``, steps) the tables, the prose and the figure share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks.learning_curves.data_prefixes import TASKS

# Gap share floor: the AUC of a random score. gap share = (AUC - floor) / (oracle - floor).
FLOOR_AUC = 0.5


def gap_share(auc: float, oracle: float, floor: float = FLOOR_AUC) -> float:
    """Share of the oracle's headroom over ``floor`` an AUC reaches: ``(auc - floor) / (oracle - floor)``."""
    if not oracle > floor:
        raise ValueError(f"oracle={oracle} must exceed floor={floor}")
    return (auc - floor) / (oracle - floor)


def summarize(cells: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """``{model: {train_rows: {task: {"mean", "std", "n", "values"}}}}`` over seeds (population std)."""
    grouped: dict[str, dict[int, dict[str, list[float]]]] = {}
    for c in cells:
        per = grouped.setdefault(c["model"], {}).setdefault(int(c["train_rows"]), {t: [] for t in TASKS})
        for t in TASKS:
            per[t].append(float(c["auc"][t]))
    return {
        m: {
            n: {
                t: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v), "values": v}
                for t, v in per.items()
            }
            for n, per in sorted(sizes.items())
        }
        for m, sizes in grouped.items()
    }


def _rows_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def _rows_by_size(cells: Sequence[Mapping[str, Any]]) -> str:
    """Minutes of training and evaluation per training size, e.g. ``200k 25 min, 1M 75 min``."""
    minutes: dict[int, float] = {}
    for c in cells:
        minutes[c["train_rows"]] = minutes.get(c["train_rows"], 0.0) + c["wall_seconds"] / 60
    return ", ".join(f"{_rows_label(n)} {m:.0f} min" for n, m in sorted(minutes.items()))


def seed_noise(summary: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, float] | None:
    """Per task, the largest seed std over the (model, rows) cells run with more than one seed; None if none was."""
    multi = [v for sizes in summary.values() for v in sizes.values() if v["click"]["n"] > 1]
    return {t: max(v[t]["std"] for v in multi) for t in TASKS} if multi else None


def _steps(rows: int, batch_size: int, epochs: int = 1) -> int:
    return -(-rows // batch_size) * epochs


def _same_steps_parts(results: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict, dict, list[str]] | None:
    """The same-steps block, the one-epoch and the repeated-epoch summaries, and the models that have
    all three cells (small × 1 epoch, small × k epochs, next size × 1 epoch); None if none has."""
    block = results.get("same_steps")
    if not block or not block["cells"]:
        return None
    one, rep = summarize(results["cells"]), summarize(block["cells"])
    small, big = block["rows"], block["compare_rows"]
    models = [m for m in rep if small in rep[m] and small in one.get(m, {}) and big in one.get(m, {})]
    return (block, one, rep, models) if models else None
