"""One training cell (model, rows, seed, epochs): trained through the library path, its result cached as JSON."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.learning_curves.data_prefixes import TASKS, size_dir


def cell_path(root: Path, model_type: str, train_rows: int, seed: int, epochs: int = 1) -> Path:
    """Where a cell's result is cached; one-epoch cells keep the name they always had."""
    rows = str(train_rows) if epochs == 1 else f"{train_rows}x{epochs}"
    return root / "cells" / f"{model_type}-{rows}-{seed}.json"


def run_cell(
    root: Path, model_type: str, train_rows: int, seed: int, args: argparse.Namespace, epochs: int = 1
) -> dict[str, Any]:
    """Trains one (model, rows, seed, epochs) cell through the library path, or loads its cached result."""
    path = cell_path(root, model_type, train_rows, seed, epochs)
    settings = {
        "scale": args.scale,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "epochs": epochs,
    }
    if path.exists():
        cell = json.loads(path.read_text())
        if cell["settings"] == settings:
            return cell
    from mvke_tf.models import UserTagConfig
    from mvke_tf.train import TrainConfig, train_and_evaluate

    data_dir = size_dir(root, train_rows)
    mc = UserTagConfig(model_type=model_type).scaled(args.scale)
    tc = TrainConfig(epochs=epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=seed)
    start = time.perf_counter()
    report = train_and_evaluate(data_dir, mc, tc, verbose=0)
    cell = {
        "model": model_type,
        "train_rows": train_rows,
        "seed": seed,
        "settings": settings,
        "auc": {t: report["eval"][t]["auc"] for t in TASKS},
        "oracle_auc": {t: report["eval"][t].get("oracle_auc") for t in TASKS},
        "eval_examples": report["eval"]["click"]["examples"],
        "eval_positives": {t: report["eval"][t]["positives"] for t in TASKS},
        "train_seconds": report["train_seconds"],
        "train_examples_per_second": report["train_examples_per_second"],
        "wall_seconds": time.perf_counter() - start,
        "num_parameters": report["num_parameters"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cell, indent=2))
    return cell
