"""``mvke-tf demo``: the main job on the embedded default (synthesize data, train, print per-task AUC)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mvke_tf.cli.data import _generate, _synth_config
from mvke_tf.cli.train import _train


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: synthesize data, train, print per-task AUC."""
    start = time.perf_counter()
    out = Path(args.out)
    data_dir = out / "data"
    config = _synth_config(args)
    meta_path = data_dir / "metadata.json"
    if meta_path.exists() and json.loads(meta_path.read_text())["generator"] == config.to_dict():
        print(f"reusing synthetic data in {data_dir}")
    else:
        print(f"generating {config.num_rows:,} synthetic impressions into {data_dir} ...")
        _generate(config, data_dir, ("csv",), 500_000)
    args.model_dir = str(out / "model")
    print(f"training {args.model} on {data_dir / 'train'} and evaluating on {data_dir / 'eval'} ...")
    _train(data_dir, args)
    print(f"done in {time.perf_counter() - start:.1f} s; report in {out / 'model' / 'report.json'}")
    return 0
