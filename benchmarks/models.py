"""MVKE paper line-up on the synthetic data: per model click / conversion AUC vs the oracle.

    python -m benchmarks.models --rows 400000 --seeds 3

Every model trains on the same generated data (train days) with the same optimiser and
is evaluated on the last day; three training seeds each. Prints a table and writes it to
docs/benchmarks.md. The claim under test (paper, Table 3): MVKE-mt >= MVKE-st > noMTL
(two_tower) and MVKE >= MMoE / CGC on both tasks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from benchmarks.report import add_synthetic_training_flags, cached_synthetic_data, machine, write_section
from mvke_tf.models import USER_TAG_MODEL_NAMES, UserTagConfig
from mvke_tf.train import TrainConfig, train_and_evaluate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_synthetic_training_flags(p, work_dir="runs/bench_models")
    p.add_argument("--models", nargs="+", default=list(USER_TAG_MODEL_NAMES), choices=USER_TAG_MODEL_NAMES)
    args = p.parse_args(argv)

    data = Path(args.work_dir) / "data"
    _, meta = cached_synthetic_data(data, args.rows, args.users)
    oracle = meta["oracle_auc_eval"]

    results: dict[str, dict[str, list[float]]] = {}
    for model_type in args.models:
        mc = UserTagConfig(model_type=model_type).scaled(args.scale)
        res = results.setdefault(model_type, {"click": [], "conversion": [], "eps": [], "params": []})
        for seed in range(args.seeds):
            tc = TrainConfig(
                epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=seed
            )
            start = time.perf_counter()
            report = train_and_evaluate(data, mc, tc, verbose=0)
            for t in ("click", "conversion"):
                res[t].append(report["eval"][t]["auc"])
            res["eps"].append(report["train_examples_per_second"])
            res["params"].append(report["num_parameters"])
            print(
                f"{model_type:<13} seed {seed}: click {res['click'][-1]:.4f} conversion {res['conversion'][-1]:.4f} "
                f"({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    def ms(v: list[float]) -> str:
        return f"{np.mean(v):.4f} ± {np.std(v):.4f}"

    lines = [
        "| model | click AUC | conversion AUC | train examples/s | parameters |",
        "| --- | --- | --- | --- | --- |",
    ]
    for m, r in results.items():
        lines.append(
            f"| {m} | {ms(r['click'])} | {ms(r['conversion'])} | {np.mean(r['eps']):,.0f} | {r['params'][0]:,} |"
        )
    lines.append(f"| *oracle (true probabilities)* | {oracle['click']:.4f} | {oracle['conversion']:.4f} | | |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        cmd = "python -m benchmarks.models " + " ".join(sys.argv[1:] if argv is None else argv)
        body = (
            "## Model line-up on the synthetic data (MVKE paper, Table 3)\n\n"
            f"Command: `{cmd.strip()}`  \n"
            f"Data: {args.rows:,} impressions ({meta['splits']['train']['rows']:,} train / "
            f"{meta['splits']['eval']['rows']:,} eval, the last day), {args.users:,} users, 1,800 leaf tags, "
            f"CTR {meta['rates']['ctr']:.3f}, conversions per click {meta['rates']['conversion_per_click']:.3f}.  \n"
            f"Models: the paper's Table 5 architecture with hidden layers scaled by {args.scale} "
            f"(embedding 30, output 30), Adam lr {args.learning_rate}, batch {args.batch_size}, "
            f"{args.epochs} epoch(s); mean ± std over {args.seeds} training seeds.  \n"
            f"Machine: {machine()}.\n\n" + table + "\n"
        )
        write_section("models", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
