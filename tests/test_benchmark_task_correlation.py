"""The task-correlation benchmark: the smoke run, and its summaries and figure on made-up results."""

import numpy as np
import pytest

from benchmarks import task_correlation as bench


def made_up_results(runs: int = 4) -> dict:
    """Results where MMoE's loss is lowest and least spread, and its lead grows as p falls."""
    ps = [1.0, 0.5]
    steps = [0, 10, 20]
    cells = []
    for p in ps:
        for r in range(runs):
            for model, base, spread in (("shared_bottom", 0.2, 0.05), ("omoe", 0.2, 0.04), ("mmoe", 0.1, 0.01)):
                final = base + (1 - p) * (0.3 if model != "mmoe" else 0.0) + spread * (r - (runs - 1) / 2)
                curve = [[1.0, 1.0], [0.5, 0.5], [final, final]]
                cells.append(
                    {
                        "p": p,
                        "run": r,
                        "model": model,
                        "label_correlation": p,
                        "label_variance": [1.0, 1.0],
                        "curve": curve,
                        "final": final,
                    }
                )
    settings = {"p": ps, "runs": runs, "steps": 20}
    return {"settings": settings, "models": list(bench.MODELS), "eval_steps": steps, "cells": cells}


# About 13 CPU seconds (tracing six models), but over 30 s of wall time on a busy 2-core machine.
@pytest.mark.slow
def test_quick_main_runs():
    assert bench.main(["--quick", "--no-write"]) == 0


def test_table_reading_and_plot_from_results(tmp_path):
    results = made_up_results()
    assert bench.finals(results, 0.5, "omoe") == pytest.approx(0.2 + 0.15 + 0.04 * (np.arange(4) - 1.5))
    text = bench.table(results)
    assert "| 0.5 | 0.500 | OMoE | 0.3500 ± " in text
    note = bench.reading(results)
    assert "OMoE loss minus MMoE loss: p=1.0: +0.1000 ± 0.0194 (MMoE lower)" in note
    assert "The advantage grows from p=1.0 to p=0.5 by +0.1500" in note
    assert "MMoE's is the smallest of the three at 2 of 2 p values" in note
    path = bench.plot(results, tmp_path / "tc.png")
    assert path.stat().st_size > 10_000
