"""``python -m pipelines {run,compile-kubeflow}``: run the TFX pipeline locally or compile it for KFP v2."""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mvke-tf pipeline", description=__doc__)
    p.add_argument("command", choices=("run", "compile-kubeflow"))
    p.add_argument("--name", default="mvke-tf", help="pipeline name")
    p.add_argument("--root", default="runs/tfx", help="pipeline root (artifacts, metadata.db, serving/)")
    p.add_argument("--data-root", default="runs/data", help="directory of raw CSV files")
    p.add_argument(
        "--input-pattern",
        default="*/part-*.csv",
        help="CSV glob relative to --data-root; a '{SPAN}' (e.g. 'span-{SPAN}/*.csv') reads the latest span only",
    )
    p.add_argument("--features-yaml", default="", help="FeatureConfig YAML (default: <data-root>/features.yaml)")
    p.add_argument("--serving-dir", default="", help="push destination (default: <root>/serving)")
    p.add_argument("--model", default="mvke_mt", help="model_type")
    p.add_argument("--model-overrides", default="{}", help="JSON of other ModelConfig fields")
    p.add_argument("--train-steps", type=int, default=1000)
    p.add_argument("--eval-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-warm-start", action="store_true", help="train from scratch, not from the last blessed model")
    p.add_argument("--auc-floor", type=float, default=0.5, help="least click AUC the Evaluator blesses")
    p.add_argument("--output", default="pipeline.json", help="compile-kubeflow: output JSON file")
    p.add_argument("--image", default="tensorflow/tfx:1.16.0", help="compile-kubeflow: component image")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from pipelines.config import PipelineConfig
    from pipelines.pipeline import compile_kubeflow, run_local

    args = _parser().parse_args(argv)
    features = args.features_yaml or os.path.join(args.data_root, "features.yaml")
    config = PipelineConfig(
        pipeline_name=args.name,
        pipeline_root=os.path.join(args.root, "artifacts"),
        data_root=args.data_root,
        serving_dir=args.serving_dir or os.path.join(args.root, "serving"),
        metadata_path=os.path.join(args.root, "metadata.db") if args.command == "run" else "",
        features_yaml=features if os.path.exists(features) else "",
        input_pattern=args.input_pattern,
        model_type=args.model,
        model_overrides=json.loads(args.model_overrides),
        train_steps=args.train_steps,
        eval_steps=args.eval_steps,
        batch_size=args.batch_size,
        eval_auc_floor=args.auc_floor,
        warm_start=not args.no_warm_start,
    )
    if args.command == "run":
        run_local(config)
        print(f"pipeline finished; blessed models are pushed under {config.serving_dir}")
    else:
        print(f"wrote {compile_kubeflow(config, args.output, image=args.image)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
