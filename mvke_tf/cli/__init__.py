"""The ``mvke-tf`` command line.

Errors are one line on stderr with exit status 2 (no traceback unless ``--debug``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

# Nothing imported here loads TensorFlow (the command modules import it inside their functions), so the
# start-up settings below still come first: mvke_tf's __init__ has set the environment (Keras 2), and the
# command line also quiets start-up unless --debug: TensorFlow's C++ logs (CUDA probing on CPU machines)
# and a Python-version notice from google-api-core that TFX's dependencies print at import.
from mvke_tf import _env
from mvke_tf.cli.bench import BENCHMARKS as BENCHMARKS  # re-exported: callers (tests) import it from here
from mvke_tf.cli.bench import cmd_bench
from mvke_tf.cli.data import _add_synth_args, cmd_data_convert, cmd_data_describe, cmd_data_synth
from mvke_tf.cli.delegates import cmd_pipeline, cmd_serve
from mvke_tf.cli.demo import cmd_demo
from mvke_tf.cli.errors import CLIError, _Parser
from mvke_tf.cli.tagging import cmd_tag_users
from mvke_tf.cli.train import _add_train_args, cmd_export, cmd_train
from mvke_tf.cli.train import _model_config as _model_config  # re-exported, as BENCHMARKS
from mvke_tf.config import STRATEGIES, ConfigError

_DEBUG = "--debug" in sys.argv
_env.configure(quiet=not _DEBUG)
if not _DEBUG:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")

__all__ = ["BENCHMARKS", "CLIError", "build_parser", "main"]


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
