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
    p.add_argument(
        "--schema", default="", help="curated schema.pbtxt to validate the data against (default: infer each run)"
    )
    p.add_argument("--auc-floor", type=float, default=0.5, help="least click AUC the Evaluator blesses")
    p.add_argument("--output", default="pipeline.json", help="compile-kubeflow: output JSON file")
    p.add_argument("--image", default="tensorflow/tfx:1.16.0", help="compile-kubeflow: component image")
    return p


EXIT_BLOCKED = 3  # the run finished or stopped without a (new) blessed model: anomalies or no blessing


def _run(config) -> int:
    """Runs the pipeline locally, prints what the run did; 0 only for clean data and a blessed model."""
    from pipelines.pipeline import run_local
    from pipelines.report import run_report

    error: Exception | None = None
    try:
        run_local(config)
    except Exception as e:  # noqa: BLE001 - a stopped run is reported below (anomalies) or re-raised
        error = e
    try:
        report = run_report(config.metadata_path, config.pipeline_name)
    except (LookupError, FileNotFoundError):
        if error is not None:
            raise error from None
        raise
    if error is not None and not report.anomalies:
        raise error
    print("\n".join(report.lines()))
    if report.anomalies:
        print(
            f"error: data validation found {len(report.anomalies)} anomalies; the run stopped before training and "
            f"nothing was pushed (the models under {config.serving_dir} are unchanged). "
            "fix: repair the data, or pass an updated --schema",
            file=sys.stderr,
        )
        return EXIT_BLOCKED
    if report.blessed is not True:
        print(
            f"error: the model was not blessed (click AUC floor {config.eval_auc_floor}, largest drop "
            f"{config.eval_auc_change}); nothing was pushed. See the evaluation at {report.evaluation_uri}",
            file=sys.stderr,
        )
        return EXIT_BLOCKED
    print(f"pipeline finished; blessed models are pushed under {config.serving_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from pipelines.config import PipelineConfig
    from pipelines.pipeline import compile_kubeflow

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
        schema_path=args.schema,
    )
    if args.command == "run":
        return _run(config)
    else:
        print(f"wrote {compile_kubeflow(config, args.output, image=args.image)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
