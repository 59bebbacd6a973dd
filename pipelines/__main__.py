"""``mvke-tf pipeline {run,compile}``: run the TFX pipeline locally, or compile it for Kubeflow Pipelines v2.

Settings come from the flags, from YAML files (``--config``; their keys are the flags' names with
``_`` for ``-``, plus any other :class:`~mvke_tf.pipelines.config.PipelineConfig` field), or both: a flag
given on the command line wins over the files, a later file over an earlier one (a job's settings,
then a runner profile from ``pipelines/configs/beam/``), the files over the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from mvke_tf.config import STRATEGIES, ConfigError

EXIT_BLOCKED = 3  # the run finished or stopped without a (new) blessed model: anomalies or no blessing

# Flag defaults; kept apart from argparse so a --config file can tell given flags from defaults.
DEFAULTS: dict[str, Any] = {
    "name": "mvke-tf",
    "root": "runs/tfx",
    "data_root": "runs/data",
    "input_format": "csv",
    "input_pattern": "",
    "eval_pattern": "",
    "val_pattern": "",
    "features_yaml": "",
    "serving_dir": "",
    "model": "mvke_mt",
    "model_overrides": {},
    "train_steps": 0,
    "epochs": 1,
    "eval_steps": 100,
    "batch_size": 256,
    "no_warm_start": False,
    "schema": "",
    "auc_floor": 0.5,
    "distribution": "default",
    "output": "pipeline.json",
    "image": "tensorflow/tfx:1.16.0",
    "target": "kubeflow",
}
DEFAULT_PATTERNS = {"csv": "*/part-*.csv", "parquet": "*/part-*.parquet", "tfrecord": "*/part-*.tfrecord.gz"}
# PipelineConfig fields a --config file may set that have no flag of their own.
_FILE_ONLY = (
    "learning_rate",
    "num_buckets",
    "seed",
    "eval_auc_change",
    "train_eval_split",
    "beam_pipeline_args",
    "block_on_anomalies",
    "evaluator",
    "infra_validation",
    "top_tags_vocabulary",
    "top_tags_max_k",
    "slice_keys",
)


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line (no usage dump) and exit status 2, as for every ``mvke-tf`` command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (--help shows the flags)", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mvke-tf pipeline", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run the pipeline here (LocalDagRunner, Beam DirectRunner, SQLite MLMD)")
    compile_ = sub.add_parser("compile", help="compile the pipeline for an orchestrator (--target kubeflow)")
    S = argparse.SUPPRESS  # noqa: N806 - defaults stay out of the namespace: only flags given on the command line are in it
    for q in (run, compile_):
        q.add_argument(
            "--config",
            action="append",
            help="YAML file of settings (keys: these flags' names, or PipelineConfig fields); repeat it to layer "
            "files, the later wins (e.g. a runner profile from pipelines/configs/beam/)",
        )
        q.add_argument("--name", default=S, help="pipeline name (default mvke-tf)")
        q.add_argument("--root", default=S, help="pipeline root: artifacts/, metadata.db, serving/ (default runs/tfx)")
        q.add_argument("--data-root", default=S, help="directory of the input files (default runs/data)")
        q.add_argument(
            "--input-format", choices=tuple(DEFAULT_PATTERNS), default=S, help="csv (default), parquet or tfrecord"
        )
        q.add_argument(
            "--input-pattern",
            default=S,
            help="glob relative to --data-root (default */part-*.csv, */part-*.tfrecord.gz); "
            "a '{SPAN}' (e.g. 'span-{SPAN}/*.csv') reads the latest span only",
        )
        q.add_argument(
            "--eval-pattern",
            default=S,
            help="eval files' glob: --input-pattern is then the train split (e.g. train/*.csv + eval/*.csv, "
            "train on day D and test on day D+1); default: a 4:1 hash split of --input-pattern",
        )
        q.add_argument(
            "--val-pattern",
            default=S,
            help="held-out training files' glob (with --eval-pattern): the Trainer's validation split, and the "
            "upper level of M3oE's bi-level schedule (e.g. val/part-*.tfrecord.gz)",
        )
        q.add_argument("--features-yaml", default=S, help="FeatureConfig YAML (default <data-root>/features.yaml)")
        q.add_argument("--serving-dir", default=S, help="push destination (default <root>/serving)")
        q.add_argument(
            "--model",
            default=S,
            help="model name, e.g. mvke_mt, ranking_app_store, multi_domain_m3oe (default mvke_mt)",
        )
        q.add_argument("--model-overrides", default=S, help="JSON of other fields of the model family's config")
        q.add_argument(
            "--train-steps", type=int, default=S, help="train this many steps (default 0: epochs over the train split)"
        )
        q.add_argument("--epochs", type=int, default=S, help="passes over the train split (default 1)")
        q.add_argument("--eval-steps", type=int, default=S, help="default 100")
        q.add_argument("--batch-size", type=int, default=S, help="default 256")
        q.add_argument("--no-warm-start", action="store_true", default=S, help="train from scratch every run")
        q.add_argument(
            "--schema",
            default=S,
            help="curated schema.pbtxt (ImportSchemaGen); default: the one `mvke-tf data describe` wrote next to "
            "features.yaml, else inferred each run",
        )
        q.add_argument(
            "--auc-floor",
            type=float,
            default=S,
            help="least AUC the Evaluator blesses: the first task's, or a multi-domain model's mean over "
            "(domain, task) (0.5)",
        )
        q.add_argument("--distribution", choices=STRATEGIES, default=S)
    run.add_argument("--verbose", action="store_true", help="show TFX/Beam/TensorFlow output live (always in the log)")
    run.add_argument(
        "--no-data-check",
        action="store_true",
        help="skip the start-of-run check of a sample of each split against features.yaml (the ExampleValidator "
        "still checks every row against the schema)",
    )
    compile_.add_argument("--target", choices=("kubeflow",), default=S, help="orchestrator (default kubeflow)")
    for q in (compile_,):
        q.add_argument("--output", default=S, help="output JSON file (default pipeline.json)")
        q.add_argument("--image", default=S, help="container image of the components (default tensorflow/tfx:1.16.0)")
    return p


def _load_settings(path: str) -> dict[str, Any]:
    from mvke_tf.config import load_yaml

    loaded = load_yaml(path, "--config") or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings, got {type(loaded).__name__}")
    known = set(DEFAULTS) | set(_FILE_ONLY)
    settings = {str(k).replace("-", "_"): v for k, v in loaded.items()}
    unknown = sorted(set(settings) - known)
    if unknown:
        valid = ", ".join(sorted(known))
        raise ConfigError(f"--config {path}: unknown setting(s) {', '.join(unknown)}; fix: use {valid}")
    return settings


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then each --config file in order, then the flags given on the command line."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    file_settings: dict[str, Any] = {}
    for path in getattr(args, "config", None) or ():
        file_settings.update(_load_settings(path))
    settings = {**DEFAULTS, **file_settings, **given}
    if isinstance(settings["model_overrides"], str):
        try:
            settings["model_overrides"] = json.loads(settings["model_overrides"])
        except json.JSONDecodeError as e:
            fix = "e.g. '{\"embedding_dim\": 16}'"
            raise ConfigError(f"--model-overrides is not valid JSON ({e}); fix: {fix}") from e
    if not settings["input_pattern"]:
        settings["input_pattern"] = DEFAULT_PATTERNS[settings["input_format"]]
    return settings


def config_from_settings(settings: dict[str, Any], for_run: bool = True):
    """The :class:`PipelineConfig` the settings describe."""
    from mvke_tf.pipelines.config import PipelineConfig

    root, data_root = settings["root"], settings["data_root"]
    features = settings["features_yaml"] or os.path.join(data_root, "features.yaml")
    extra = {k: settings[k] for k in _FILE_ONLY if k in settings}
    if "train_eval_split" in extra:
        extra["train_eval_split"] = tuple(extra["train_eval_split"])
    if isinstance(extra.get("slice_keys"), list):
        extra["slice_keys"] = tuple(extra["slice_keys"])
    if "beam_pipeline_args" in extra:
        extra["beam_pipeline_args"] = tuple(extra["beam_pipeline_args"])
    if settings["features_yaml"] and not os.path.exists(features):
        raise FileNotFoundError(f"--features-yaml {features}: no such file")
    schema = settings["schema"]
    described = os.path.join(os.path.dirname(features), "schema.pbtxt")
    if not schema and os.path.exists(features) and os.path.exists(described):
        schema = described  # written with features.yaml by `mvke-tf data describe`
    return PipelineConfig(
        pipeline_name=settings["name"],
        pipeline_root=os.path.join(root, "artifacts"),
        data_root=data_root,
        serving_dir=settings["serving_dir"] or os.path.join(root, "serving"),
        metadata_path=os.path.join(root, "metadata.db") if for_run else "",
        features_yaml=features if os.path.exists(features) else "",
        input_format=settings["input_format"],
        input_pattern=settings["input_pattern"],
        eval_pattern=settings["eval_pattern"],
        val_pattern=settings["val_pattern"],
        model_type=settings["model"],
        model_overrides=settings["model_overrides"],
        train_steps=settings["train_steps"],
        epochs=settings["epochs"],
        eval_steps=settings["eval_steps"],
        batch_size=settings["batch_size"],
        eval_auc_floor=settings["auc_floor"],
        warm_start=not settings["no_warm_start"],
        schema_path=schema,
        distribution=settings["distribution"],
        **extra,
    )


def _oracle_auc(config) -> list[str]:
    """The synthetic generator's oracle AUC per task, when the eval split is exactly its eval day."""
    path = os.path.join(config.data_root, "metadata.json")
    if not config.eval_pattern.startswith("eval/") or "{SPAN}" in config.eval_pattern:
        return []  # the generator's eval/ directory is its last day; anything else is another split
    try:
        with open(path) as f:
            oracle = json.load(f).get("oracle_auc_eval", {})
    except (OSError, ValueError):
        return []
    return [f"{task} {value:.4f}" for task, value in oracle.items()]


def _failure(error: BaseException) -> str:
    """The first line of what stopped a component (the rest is in the log)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def check_data(config) -> list[str]:
    """Before any component runs: the first rows of each split's files read as features.yaml says (the typing
    rule of :mod:`mvke_tf.data.table`), and the schema knows every column features.yaml names. One line per
    problem, naming the file, the row, the column and the fix."""
    from mvke_tf.data.own_data import check_files

    features = config.feature_config()
    patterns = [p for p in (config.input_pattern, config.eval_pattern, config.val_pattern) if p]
    if config.uses_spans:
        return []  # the span is resolved by ExampleGen
    problems = check_files(features, [os.path.join(config.data_root, p) for p in patterns])
    problems = [
        f"{p}; fix: pass --input-format and --input-pattern for the files there" if "no data files" in p else p
        for p in problems
    ]
    if config.schema_path:
        from mvke_tf.pipelines.schema import load_schema

        in_schema = {f.name for f in load_schema(config.schema_path).feature}
        wanted = (*features.feature_names, *features.labels, *([features.user_id] if features.user_id else []))
        absent = [n for n in wanted if n not in in_schema]
        if absent:
            problems.append(
                f"--schema {config.schema_path}: no column(s) {absent} that features.yaml names; fix: describe the "
                "data again (mvke-tf data describe --overwrite) or add them to the schema"
            )
    return problems


def _run(config, log_dir: str, verbose: bool = False, data_check: bool = True) -> int:
    """Runs the pipeline locally, a line per component; 0 only for clean data and a blessed, pushed model.

    Everything TFX, Beam, absl and TensorFlow print goes to a log file under ``log_dir`` (``verbose``:
    also to the terminal as it happens).
    """
    from mvke_tf.pipelines.progress import ProgressReporter, console_output
    from mvke_tf.pipelines.report import run_report

    if not os.path.isdir(config.data_root):
        raise FileNotFoundError(
            f"--data-root {config.data_root}: no such directory; fix: `mvke-tf data synth --out {config.data_root}`"
        )
    problems = check_data(config) if data_check else []
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        print(
            f"error: the data does not read as {config.features_yaml or 'the feature config'} says; nothing was run",
            file=sys.stderr,
        )
        return 2
    log_path = os.path.join(log_dir, time.strftime("run-%Y%m%d-%H%M%S.log"))
    print(f"pipeline {config.pipeline_name}: {config.data_root} -> {config.serving_dir} (log: {log_path})", flush=True)
    start = time.perf_counter()
    error: BaseException | None = None
    with console_output(log_path, verbose=verbose) as console:
        from mvke_tf.pipelines.pipeline import run_local

        try:
            with ProgressReporter(config.metadata_path, config.pipeline_name, out=console):
                run_local(config)
        except Exception as e:  # noqa: BLE001 - reported below in one line, the traceback is in the log
            import traceback

            traceback.print_exc()
            error = e
    seconds = time.perf_counter() - start
    try:
        report = run_report(config.metadata_path, config.pipeline_name)
    except (LookupError, FileNotFoundError):
        report = None
    if report is None or (error is not None and not report.anomalies):
        reason = _failure(error) if error is not None else "no run was recorded"
        print(
            f"error: the pipeline stopped after {seconds:.0f} s: {reason}; nothing was pushed. See the log {log_path}",
            file=sys.stderr,
        )
        return EXIT_BLOCKED
    if report.evaluation_uri:
        from mvke_tf.pipelines.evaluation import format_auc_table, slice_metrics

        print("\nevaluation (eval split, per slice):")
        print("\n".join(format_auc_table(slice_metrics(report.evaluation_uri), config.model_config().tasks)))
        oracle = _oracle_auc(config)
        if oracle:
            print("oracle AUC of the eval day (the generator's true probabilities): " + ", ".join(oracle))
    if report.anomalies:
        print("\n".join(report.lines()))
        print(
            f"error: data validation found anomalies in {len({a.field for a in report.anomalies})} field(s); the run "
            f"stopped before training and nothing was pushed (the models under {config.serving_dir} are unchanged). "
            f"fix: repair the data, or pass an updated --schema. Log: {log_path}",
            file=sys.stderr,
        )
        return EXIT_BLOCKED
    if report.blessed is not True:
        from mvke_tf.pipelines.pipeline import blessing_metric

        print("\n".join(report.lines()))
        print(
            f"error: the model was not blessed ({blessing_metric(config)} floor {config.eval_auc_floor}, largest drop "
            f"{config.eval_auc_change} vs the last blessed model); nothing was pushed. "
            f"See the evaluation at {report.evaluation_uri} and the log {log_path}",
            file=sys.stderr,
        )
        return EXIT_BLOCKED
    if report.infra_blessed is False or not report.pushed:
        why = "the Pusher did not push it"
        if report.infra_blessed is False:
            why = f"the C++ runtime (TF Serving's loader) cannot serve it: {report.infra_reason or 'see the log'}"
        print("\n".join(report.lines()))
        print(
            f"error: the model was not pushed: {why}; the models under {config.serving_dir} are unchanged. "
            f"Log: {log_path}",
            file=sys.stderr,
        )
        return EXIT_BLOCKED
    print(f"\npipeline finished in {seconds:.0f} s; the blessed model is pushed to {report.pushed}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    settings = settings_from_args(args)
    config = config_from_settings(settings, for_run=args.command == "run")
    if args.command == "run":
        logs = os.path.join(settings["root"], "logs")
        return _run(config, logs, verbose=bool(args.verbose), data_check=not args.no_data_check)
    from mvke_tf.pipelines.pipeline import compile_kubeflow

    path = compile_kubeflow(config, settings["output"], image=settings["image"])
    print(f"wrote {path} (Kubeflow Pipelines v2 spec; components run in {settings['image']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
