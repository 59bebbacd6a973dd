"""The ``mvke-tf`` command line.

Errors are one line on stderr with exit status 2 (no traceback unless ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

# mvke_tf's __init__ has set the environment (Keras 2); the command line also quiets start-up unless
# --debug: TensorFlow's C++ logs (CUDA probing on CPU machines) and a Python-version notice from
# google-api-core that TFX's dependencies print at import. Nothing above or below imports TensorFlow.
from mvke_tf import _env
from mvke_tf.config import STRATEGIES, ConfigError, load_yaml

_DEBUG = "--debug" in sys.argv
_env.configure(quiet=not _DEBUG)
if not _DEBUG:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``mvke-tf: error:`` line (exit 2) like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{self.prog}: {message} (see {self.prog} --help)")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _add_synth_args(p: argparse.ArgumentParser) -> None:
    from mvke_tf.data.synthetic import SyntheticConfig

    d = SyntheticConfig()
    p.add_argument("--rows", type=int, default=d.num_rows, help="impressions to generate (default %(default)s)")
    p.add_argument("--users", type=int, default=d.num_users, help="distinct users (default %(default)s)")
    p.add_argument("--ads", type=int, default=d.num_ads, help="distinct ads (default %(default)s)")
    p.add_argument(
        "--taxonomy", type=_int_tuple, default=d.taxonomy, help="children per level, e.g. 18,5,20 (= 1,800 leaf tags)"
    )
    p.add_argument("--days", type=int, default=d.days, help="days spanned; the last is the eval split")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")


def _synth_config(args: argparse.Namespace):
    from mvke_tf.data.synthetic import SyntheticConfig

    return SyntheticConfig(
        num_rows=args.rows,
        num_users=args.users,
        num_ads=args.ads,
        taxonomy=args.taxonomy,
        days=args.days,
        seed=args.seed,
    )


def _generate(config, out: Path, formats: tuple[str, ...], shard_rows: int) -> dict:
    from tqdm import tqdm

    from mvke_tf.data import synthetic

    with tqdm(
        total=config.num_rows, unit="rows", desc="generating", file=sys.stderr, disable=not sys.stderr.isatty()
    ) as bar:
        return synthetic.generate(config, out, formats=formats, shard_rows=shard_rows, progress=bar.update)


def _synth_multidomain(args: argparse.Namespace) -> int:
    from mvke_tf.data import multidomain as md

    config = md.MultiDomainDataConfig(
        num_rows=args.rows, num_users=args.users, num_ads=args.ads, taxonomy=args.taxonomy, seed=args.seed
    )
    start = time.perf_counter()
    meta = md.write_files(config, Path(args.out), tuple(args.format), args.shard_rows)
    secs = time.perf_counter() - start
    splits = ", ".join(f"{s} {m['rows']:,}" for s, m in meta["splits"].items())
    print(f"wrote {config.num_rows:,} multi-domain rows to {args.out} in {secs:.1f} s ({splits})")
    shares = ", ".join(f"domain {d} {n:,}" for d, n in enumerate(meta["splits"]["train"]["domain_rows"]))
    print(f"{meta['domains']} domains in the '{meta['domain_field']}' column; train rows per domain: {shares}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    if args.multidomain:
        return _synth_multidomain(args)
    config = _synth_config(args)
    start = time.perf_counter()
    meta = _generate(config, Path(args.out), tuple(args.format), args.shard_rows)
    secs = time.perf_counter() - start
    print(
        f"wrote {config.num_rows:,} rows to {args.out} in {secs:.1f} s "
        f"(train {meta['splits']['train']['rows']:,}, eval {meta['splits']['eval']['rows']:,})"
    )
    print(f"click rate {meta['rates']['ctr']:.4f}, conversions per click {meta['rates']['conversion_per_click']:.4f}")
    print("oracle AUC on eval: " + ", ".join(f"{t} {v:.4f}" for t, v in meta["oracle_auc_eval"].items()))
    return 0


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def cmd_data_describe(args: argparse.Namespace) -> int:
    from mvke_tf.data.own_data import describe_data

    out = args.out
    if not out:
        if len(args.data) != 1:
            raise CLIError("data describe: give --out DIR (where features.yaml goes) for several DATA arguments")
        out = args.data[0] if Path(args.data[0]).is_dir() else str(Path(args.data[0]).parent)
    roles = {
        "labels": _names(args.labels),
        "categorical": _names(args.categorical),
        "numeric": _names(args.numeric),
        "drop": _names(args.drop),
        "tag_field": args.tag_field or "",
        "user_id": args.user_id,
        "separator": args.separator,
        "max_categorical_ints": args.max_categorical_ints,
    }
    lines = describe_data(args.data, out, sample_rows=args.sample_rows, overwrite=args.overwrite, **roles)
    print("\n".join(lines))
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from mvke_tf.config import FeatureConfig
    from mvke_tf.data.own_data import convert

    features_yaml = Path(args.features or Path(args.data_root) / "features.yaml")
    if not features_yaml.is_file():
        raise CLIError(
            f"data convert: no {features_yaml}; fix: write it with `mvke-tf data describe {args.data_root}` "
            "or pass --features"
        )
    start = time.perf_counter()
    written = convert(
        args.data_root, args.out, FeatureConfig.from_yaml(features_yaml), args.pattern or ["*/*"], progress=print
    )
    secs = time.perf_counter() - start
    print(f"wrote {len(written)} file(s) of typed, gzipped tf.Examples to {args.out} in {secs:.1f} s")
    return 0


def _model_config(args: argparse.Namespace, features_yaml: Path):
    """The model's config: ``--model``, ``--config``'s fields, ``--scale``; its tasks are the data's labels
    (``features_yaml``'s) unless ``--config`` names them."""
    from mvke_tf.config import FeatureConfig
    from mvke_tf.models.family import config_for_data

    overrides = {}
    if args.config:
        overrides = load_yaml(args.config, "--config") or {}
        if not isinstance(overrides, dict):
            raise CLIError(
                f"--config {args.config}: holds a {type(overrides).__name__}, not a mapping of model config fields; "
                "fix: write one field per line, e.g. 'embedding_dim: 16'"
            )
    return config_for_data(args.model, FeatureConfig.from_yaml(features_yaml), overrides, args.scale)


def _train(data_dir: Path, args: argparse.Namespace) -> dict:
    from mvke_tf.train import TrainConfig, format_report, train_and_evaluate

    tc = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        strategy=getattr(args, "strategy", "default"),
    )
    model_config = _model_config(args, data_dir / "features.yaml")
    report = train_and_evaluate(
        data_dir, model_config, tc, out_dir=args.model_dir, verbose=2 if sys.stdout.isatty() else 0
    )
    model = report.pop("model")
    if args.model_dir:
        from mvke_tf import distribute
        from mvke_tf.config import FeatureConfig
        from mvke_tf.models.model_dir import save_model_dir

        # Every worker saves (saving may run collective ops); only the chief's copy is kept.
        with distribute.write_dir(args.model_dir, model.distribute_strategy) as out:
            save_model_dir(model, out, FeatureConfig.from_yaml(data_dir / "features.yaml"))
    print(format_report(report))
    return report


def cmd_train(args: argparse.Namespace) -> int:
    data_dir = Path(args.data)
    if not (data_dir / "features.yaml").exists():
        raise CLIError(
            f"--data {data_dir}: no features.yaml there; fix: describe your data's fields in DIR/features.yaml "
            "(docs/pipeline.md), or generate data with `mvke-tf data synth --out DIR`"
        )
    _train(data_dir, args)
    return 0


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


def cmd_export(args: argparse.Namespace) -> int:
    """Rebuilds a model trained by ``mvke-tf train --model-dir`` and writes a servable SavedModel."""
    from mvke_tf.export import export_saved_model
    from mvke_tf.models.family import family_of
    from mvke_tf.models.model_dir import load_model_dir

    try:
        model, feature_config = load_model_dir(args.model_dir)
    except ConfigError as e:
        raise CLIError(f"--model-dir {e.args[0].removeprefix('model dir ')}") from e
    base = Path(args.out)
    if args.version is None:
        versions = [int(p.name) for p in base.glob("*") if p.is_dir() and p.name.isdigit()]
        version = max(versions, default=0) + 1
    else:
        version = args.version
    target = base / str(version)
    if target.exists():
        raise CLIError(f"{target} already exists; TF Serving versions are immutable: pick another --version")
    family = family_of(model)
    if args.tags and not family.has_tag_tower:
        raise CLIError(f"--tags: a top_tags signature needs a user-tagging model, not {model.config.model_type}")
    if args.top_tags_max_k < 1:
        raise CLIError(f"--top-tags-max-k: must be at least 1, got {args.top_tags_max_k}")
    try:
        export_saved_model(
            model, target, feature_config=feature_config, tags=args.tags, top_tags_max_k=args.top_tags_max_k
        )
    except (FileNotFoundError, ValueError) as e:  # the tag vocabulary: no such file, no tags in it
        raise CLIError(str(e)) from e
    signatures = ", ".join([*family.signatures, *(["top_tags"] if args.tags else [])])
    print(f"exported {model.config.model_type} to {target} (signatures {signatures})")
    print(f"serve it with: mvke-tf serve --model {args.name}={base}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Delegates to the gRPC model server (``python -m mvke_tf.serving``), with its own flags."""
    try:
        from mvke_tf.serving.__main__ import main as serving_main
    except ImportError as e:
        raise CLIError(f"the serving package is not importable ({e}); install with: pip install -e '.[serving]'") from e
    return serving_main(args.rest)


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
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "benchmarks" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ImportError as e:
        raise CLIError(f"benchmark {name!r} is not importable ({e}); run from a source checkout") from e
    return int(module.main(rest) or 0)


def cmd_pipeline(args: argparse.Namespace) -> int:
    """Delegates to the TFX pipeline's command line (kept out of the library: it imports TFX)."""
    try:
        from mvke_tf.pipelines.__main__ import main as pipeline_main
    except ImportError as e:
        raise CLIError(f"the TFX pipeline is not importable ({e}); install with: pip install -e '.[pipeline]'") from e
    try:
        return pipeline_main(args.pipeline_args)
    except SystemExit as e:  # its own argument errors (already printed, one line) and --help
        return int(e.code or 0)


def cmd_tag_users(args: argparse.Namespace) -> int:
    """Batch tagging: per user and task the top-K tags of a SavedModel (locally or with Beam)."""
    import shlex

    from mvke_tf import tagging

    if args.tags and args.tags_from_data:
        raise CLIError("--tags and --tags-from-data: give one of them")
    if args.tags:
        tags = tagging.read_tags(args.tags)
    elif args.tags_from_data:
        tags = tagging.tags_from_data(args.tags_from_data)
    else:
        raise CLIError("give the tag vocabulary with --tags FILE (one tag per line) or --tags-from-data DIR")
    tagging.check_out_dir(args.out)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    if args.by == "tag" and args.top_k is not None:
        raise CLIError("--top-k: applies to --by user (the K best tags per user); with --by tag give --top-n")
    top_n = tagging.check_direction(args.by, args.top_n)
    common = dict(
        top_k=20 if args.top_k is None else args.top_k,
        by=args.by,
        top_n=top_n,
        min_score=args.min_score,
        batch_size=args.batch_size,
        tasks=tasks,
        features=args.features,
        user_id_column=args.user_id_column or tagging.default_user_id_column(args.users, args.features),
    )
    if args.runner == "beam":
        if args.format != "parquet":
            raise CLIError("--runner beam writes Parquet only; use --format parquet")
        from mvke_tf.tagging.beam import run_beam

        manifest = run_beam(
            args.model, args.users, tags, args.out, beam_args=shlex.split(args.beam_args or ""), **common
        )
        what = f"top-{top_n} users per tag" if args.by == "tag" else "users"
        print(f"tagged {what} against {len(tags):,} tags with Beam in {manifest['seconds']:.1f} s -> {args.out}")
        return 0
    if args.beam_args:
        raise CLIError("--beam-args needs --runner beam")
    from tqdm import tqdm

    with tqdm(unit="users", desc="tagging", file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
        try:
            manifest = tagging.tag_users(
                args.model, args.users, tags, args.out, fmt=args.format, progress=bar.update, **common
            )
        except PermissionError as e:  # e.g. a directory made read-only while the job runs
            raise CLIError(
                f"--out {args.out}: cannot write {Path(e.filename).name if e.filename else 'there'} "
                f"({e.strerror or e}); fix: give a directory you can write to"
            ) from None
    what = f" (top-{top_n} users per tag and task)" if args.by == "tag" else ""
    print(
        f"tagged {manifest['users']:,} users{what} against {len(tags):,} tags ({', '.join(manifest['tasks'])}) "
        f"in {manifest['seconds']:.1f} s: {manifest['shards_computed']} shard(s) computed, "
        f"{manifest['shards_skipped']} already done; manifest in {Path(args.out) / tagging.MANIFEST}"
    )
    return 0


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from mvke_tf.models.family import MODEL_NAMES, canonical_model_name

    p.add_argument(
        "--model",
        default="mvke_mt",
        type=canonical_model_name,  # an old name (app_store, m3oe, ...): its new name, with a warning
        choices=MODEL_NAMES,
        help="model name: a two-tower (user-tag) model, a pair-ranking one (ranking_<architecture>; "
        "ranking_app_store = MMoE + FM cross + ESMM) or a multi-domain one (multi_domain_<architecture>) "
        "(default %(default)s)",
    )
    p.add_argument(
        "--config",
        help="YAML file of fields of the model family's config (UserTagConfig, RankingConfig or MultiDomainConfig) "
        "overriding the defaults",
    )
    p.add_argument("--scale", type=float, default=1.0, help="scale hidden layer sizes (e.g. 0.25 for quick runs)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--learning-rate", type=float, default=1e-3)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mvke-tf", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="data utilities").add_subparsers(
        dest="data_command", metavar="ACTION", required=True
    )
    synth = data.add_parser("synth", help="generate synthetic user-tagging data")
    _add_synth_args(synth)
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--format", nargs="+", choices=("csv", "tfrecord"), default=["csv"])
    synth.add_argument("--shard-rows", type=int, default=500_000, help="rows per output file")
    synth.add_argument(
        "--multidomain",
        action="store_true",
        help="the multi-domain data instead (docs/multidomain.md): a 'domain' column and train/val/eval splits",
    )
    synth.set_defaults(func=cmd_data_synth)

    describe = data.add_parser(
        "describe",
        help="write features.yaml and schema.pbtxt for your own table (CSV, Parquet or TFRecord files) from a sample",
    )
    describe.add_argument("data", nargs="+", help="data files, globs or directories (e.g. DIR with train/ and eval/)")
    describe.add_argument(
        "--out", help="where features.yaml, schema.pbtxt, profile.json go (default: DATA's directory)"
    )
    describe.add_argument(
        "--labels", help="the 0/1 task label columns in task order, e.g. click,like (default: guessed)"
    )
    describe.add_argument("--user-id", help="the user id column ('' for none; default: guessed from its name)")
    describe.add_argument("--tag-field", help="the tag column (the tag tower's input; default: guessed)")
    describe.add_argument("--categorical", help="columns read as ids whatever their values, e.g. zip,occupation")
    describe.add_argument("--numeric", help="columns read as numbers (bucketized)")
    describe.add_argument("--drop", help="columns that are no model input (timestamps, text, leaks)")
    describe.add_argument("--separator", default="|", help="separator of list values in one cell (default |)")
    describe.add_argument(
        "--max-categorical-ints",
        type=int,
        default=64,
        help="an integer column with at most this many distinct values is categorical (default %(default)s)",
    )
    describe.add_argument("--sample-rows", type=int, default=20_000, help="rows read (default %(default)s)")
    describe.add_argument("--overwrite", action="store_true", help="replace an existing features.yaml and schema")
    describe.set_defaults(func=cmd_data_describe)

    conv = data.add_parser(
        "convert", help="rewrite CSV / Parquet files as typed, gzipped tf.Examples (the pipeline's fastest input)"
    )
    conv.add_argument("data_root", help="the data directory (with features.yaml, e.g. train/ and eval/ under it)")
    conv.add_argument("--out", required=True, help="output directory: the same layout, .tfrecord.gz files")
    conv.add_argument("--features", help="features.yaml (default: DATA_ROOT/features.yaml)")
    conv.add_argument("--pattern", action="append", help="files to convert, relative to DATA_ROOT (default */*)")
    conv.set_defaults(func=cmd_data_convert)

    train = sub.add_parser("train", help="train and evaluate a model with the Keras library (no TFX)")
    train.add_argument(
        "--data",
        required=True,
        help="a directory with features.yaml and train/ and eval/ files (CSV or TFRecord), e.g. one written by "
        "`mvke-tf data synth`; the model's tasks are features.yaml's labels unless --config names tasks",
    )
    train.add_argument("--model-dir", help="where to write report.json and weights")
    train.add_argument("--seed", type=int, default=0)
    _add_train_args(train)
    train.add_argument(
        "--strategy",
        default="default",
        choices=STRATEGIES,
        help="tf.distribute strategy: default (one device), mirrored (local GPUs) or multi_worker "
        "(one process per worker, each with its TF_CONFIG; worker 0 writes the report); "
        "--batch-size is the global batch",
    )
    train.set_defaults(func=cmd_train)

    pipe = sub.add_parser(
        "pipeline",
        help="the TFX pipeline: `pipeline run` locally, `pipeline compile --target kubeflow` (see `pipeline -h`)",
        add_help=False,
    )
    pipe.add_argument("pipeline_args", nargs=argparse.REMAINDER)
    pipe.set_defaults(func=cmd_pipeline)

    demo = sub.add_parser("demo", help="the main job: synthesize data, train, print per-task AUC vs oracle")
    _add_synth_args(demo)
    _add_train_args(demo)
    demo.add_argument("--out", default="runs/demo", help="output directory (default %(default)s)")
    # On 200k training rows a model at 1/4 of Table 5's hidden sizes with batch 512 generalizes
    # better than the full size with batch 2048 (fewer than 100 steps); see docs/benchmarks.md.
    demo.set_defaults(func=cmd_demo, scale=0.25, batch_size=512)

    tag = sub.add_parser(
        "tag-users",
        help="batch tagging: per user and task the top-K tags of a SavedModel, or per tag the top-N users "
        "(resumable by shard)",
    )
    tag.add_argument("--model", required=True, help="a SavedModel directory, or a Pusher base dir (newest version)")
    tag.add_argument(
        "--users", required=True, help="CSV, Parquet or TFRecord (tf.Example) files: a glob or a directory"
    )
    tag.add_argument("--tags", help="the tag vocabulary: a file with one tag per line")
    tag.add_argument("--tags-from-data", help="or: every tag in the tag column of the data files under DIR")
    tag.add_argument(
        "--out",
        required=True,
        help="output directory (rerun to resume: the shards of unchanged users files are skipped)",
    )
    tag.add_argument(
        "--by",
        default="user",
        choices=("user", "tag"),
        help="user: the top-K tags of every user (default); tag: audience lists, the top-N users of every tag",
    )
    tag.add_argument("--top-k", type=int, help="tags per user and task, with --by user (default 20)")
    tag.add_argument("--top-n", type=int, help="users per tag and task, with --by tag (default 100)")
    tag.add_argument("--min-score", type=float, default=0.0, help="drop tags with a lower probability")
    tag.add_argument("--format", default="parquet", choices=("parquet", "tfrecord"), help="output format")
    tag.add_argument("--batch-size", type=int, default=1024, help="users per batch (default %(default)s)")
    tag.add_argument("--tasks", help="comma-separated tasks, e.g. click,conversion (default: all the model has)")
    tag.add_argument("--features", help="features.yaml for CSV or Parquet users (default: found next to the data)")
    tag.add_argument("--user-id-column", help="the user id column (default: features.yaml's user_id, else user_id)")
    tag.add_argument("--runner", default="local", choices=("local", "beam"), help="local job or Beam pipeline")
    tag.add_argument("--beam-args", help="Beam pipeline options, e.g. '--runner=DirectRunner --direct_num_workers=2'")
    tag.set_defaults(func=cmd_tag_users)

    export = sub.add_parser(
        "export", help="write a model trained by `mvke-tf train --model-dir` as a versioned, servable SavedModel"
    )
    export.add_argument("--model-dir", required=True, help="the --model-dir of `mvke-tf train`")
    export.add_argument("--out", required=True, help="the model's base path; the version is a subdirectory")
    export.add_argument("--version", type=int, help="version number (default: one above the newest there)")
    export.add_argument("--name", default="mvke", help="model name in the printed serve command")
    export.add_argument(
        "--tags",
        help="the top_tags signature's tag vocabulary: a file with one tag per line, or a data directory whose "
        "tag column is read (as tag-users --tags / --tags-from-data); without it, no top_tags signature",
    )
    export.add_argument(
        "--top-tags-max-k", type=int, default=100, help="the largest k a top_tags request may ask for (default 100)"
    )
    export.set_defaults(func=cmd_export)

    serve = sub.add_parser(
        "serve",
        help="the local TF Serving-compatible gRPC server (`serve --model NAME=BASE_PATH`; see `serve -h`)",
        add_help=False,
    )
    serve.add_argument("rest", nargs=argparse.REMAINDER)
    serve.set_defaults(func=cmd_serve)

    bench = sub.add_parser(
        "bench", help="run a benchmark (`bench NAME ...`; `bench --help` lists them)", add_help=False
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    return parser


def _attach_option_values(argv: list[str], flags: Sequence[str]) -> list[str]:
    """``--beam-args '--runner=X ...'`` -> ``--beam-args=--runner=X ...``: argparse would read a value that
    starts like one of the command's own flags (``--runner``) as that flag and report a missing value."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in flags and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    passthrough = {"pipeline": "pipeline_args", "serve": "rest", "bench": "rest"}
    first = next((a for a in argv if a != "--debug"), None)
    try:
        if first in passthrough:
            # Everything after the command (including -h) belongs to that tool's own parser.
            cut = argv.index(first) + 1
            args = parser.parse_args(argv[:cut])
            setattr(args, passthrough[first], argv[cut:])
        else:
            args = parser.parse_args(_attach_option_values(argv, ("--beam-args",)))
    except CLIError as e:
        print(f"mvke-tf: error: {e}", file=sys.stderr)
        return 2
    if not args.debug:
        warnings.filterwarnings("ignore")
        # An old model name (app_store, m3oe, ...; accepted until mvke-tf 0.2) is still said, in one line.
        warnings.filterwarnings("default", message=r"model name '.*' is now ", category=FutureWarning)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except (CLIError, ConfigError, FileNotFoundError, ValueError, KeyError) as e:
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mvke-tf: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mvke-tf: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - anything unexpected is still one line; --debug shows the traceback
        if args.debug:
            raise
        lines = str(e).strip().splitlines()
        print(
            f"mvke-tf: error: {type(e).__name__}: {lines[0] if lines else ''} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
