"""``mvke-tf bench``: list the benchmarks, or run one (``python -m benchmarks.<name>``) from a source checkout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mvke_tf.cli.errors import CLIError

BENCHMARKS = {
    "models": "the MVKE paper's model line-up on synthetic data",
    "pipeline": "TFX pipeline wall time, whole run and per component",
    "tagging": "batch tagging: naive pair scoring vs the matrix-product decomposition",
    "serving_latency": "user_tower latency over gRPC vs in-process",
    "census": "MMoE vs baselines on census-income (needs --data DIR with the UCI files)",
    "multidomain_lineup": "M3oE vs multi-domain baselines on synthetic multi-domain data",
    "multidomain_grid": "M3oE vs MMoE / PLE / STAR across domain and task relatedness, two training presets",
    "gate_routing": "MVKE's gate routing: gate variants, entropy and taxonomy separation on synthetic data",
    "task_correlation": "MMoE's synthetic task-correlation study (Ma et al., KDD 2018)",
    "learning_curves": "user-tagging models' AUC against training rows, next to the oracle and references",
    "first_fit": "the fixed cost of a first train_and_evaluate: stock Keras tracing vs the library's",
    "ingestion": "own data through ExampleGen + StatisticsGen: CSV vs Parquet vs typed TFRecord (data convert)",
    "batch_dependence": "how much a prediction's last bits depend on the other rows in its batch",
}


def cmd_bench(args: argparse.Namespace) -> int:
    """Runs one benchmark module (``python -m benchmarks.<name>``) with its own flags."""
    import importlib

    if not args.rest or args.rest[0] in ("-h", "--help"):
        print("usage: mvke-tf bench NAME [flags of that benchmark; NAME --help lists them]\n\nbenchmarks:")
        for name, what in BENCHMARKS.items():
            print(f"  {name:<{max(map(len, BENCHMARKS))}}  {what}")
        return 0
    name, rest = args.rest[0], args.rest[1:]
    if name not in BENCHMARKS:
        raise CLIError(f"bench: unknown benchmark {name!r}; pick one of {', '.join(BENCHMARKS)}")
    # benchmarks/ is not installed: it is found beside the package's folder in a source checkout.
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "benchmarks" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ImportError as e:
        raise CLIError(f"benchmark {name!r} is not importable ({e}); run from a source checkout") from e
    return int(module.main(rest) or 0)
