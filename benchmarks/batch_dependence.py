"""How much a prediction depends on the other rows in its batch (why runners that batch differently differ).

    python -m benchmarks.batch_dependence --rows 1500 --cuts 20 --trials 5

One seeded MVKE-mt model (the tests' tiny size, weights drawn N(0, 0.1)) scores the same eval rows of the
synthetic data once as one batch and then cut at random places into ``cuts + 1`` batches; per task and
trial: how many predictions differ at all, and the largest relative difference. The portable-runner test
(tests/pipelines/test_portable_runner.py) takes its metric tolerances from this figure, and
tests/models/test_batch_invariance.py keeps it under four float32 ulps.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from benchmarks.report import machine, section, write_section

TINY = dict(embedding_dim=8, dnn_units=(16,), top_units=(16, 8), tag_units=(16, 8))


def measure(rows: int, cuts: int, trials: int) -> list[dict]:
    """One row per (trial, task): ``differ`` (of ``rows``) and ``max_rel``."""
    from mvke_tf.config import FeatureConfig
    from mvke_tf.data import synthetic
    from mvke_tf.data.dataset import make_dataset
    from mvke_tf.models import UserTagConfig, build_model

    with tempfile.TemporaryDirectory() as tmp:
        cfg = synthetic.SyntheticConfig(num_rows=3 * rows, num_users=300, num_ads=200, taxonomy=(4, 3, 5), seed=1)
        synthetic.generate(cfg, tmp, formats=("tfrecord",))
        fc = FeatureConfig.from_yaml(Path(tmp) / "features.yaml")
        x, _ = next(iter(make_dataset(Path(tmp) / "eval", fc, batch_size=rows)))
    n = int(next(iter(x.values())).shape[0])
    model = build_model(fc, UserTagConfig(model_type="mvke_mt", **TINY))
    model(x)
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(0.0, 0.1, w.shape).astype(w.dtype.as_numpy_dtype))
    whole = {k: v.numpy() for k, v in model(x).items()}
    out = []
    for trial in range(trials):
        edges = np.r_[0, np.sort(rng.choice(np.arange(1, n), size=cuts, replace=False)), n]
        parts = [model({k: v[a:b] for k, v in x.items()}) for a, b in zip(edges[:-1], edges[1:])]
        for task, want in whole.items():
            got = np.concatenate([p[task].numpy() for p in parts])
            rel = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float32).tiny)
            out.append(dict(trial=trial, task=task, rows=n, differ=int((got != want).sum()), max_rel=float(rel.max())))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1500, help="eval rows scored")
    p.add_argument("--cuts", type=int, default=20, help="random cut points: cuts + 1 batches")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args(argv)
    results = measure(args.rows, args.cuts, args.trials)
    ulp = float(np.finfo(np.float32).eps)
    lines = ["| trial | task | predictions that differ | largest relative difference | / float32 eps |"]
    lines.append("| ---: | --- | ---: | ---: | ---: |")
    for r in results:
        differ = f"{r['differ']} of {r['rows']}"
        lines.append(f"| {r['trial']} | {r['task']} | {differ} | {r['max_rel']:.2e} | {r['max_rel'] / ulp:.2f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        cmd = "python -m benchmarks.batch_dependence " + " ".join(sys.argv[1:] if argv is None else argv)
        facts = {"Machine": machine(), "Model": "MVKE-mt, the tests' tiny size, seeded weights N(0, 0.1)"}
        note = (
            "The same rows, scored as one batch and then cut into random batches: a prediction's last float32 "
            "bits depend on its batch (the CPU matmul blocks by batch size). Two Beam workers batch differently, "
            "so metrics of the portable runner and the DirectRunner agree to this, not to the last bit."
        )
        write_section("batch_dependence", section("Batch dependence of predictions", cmd, facts, table, note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
