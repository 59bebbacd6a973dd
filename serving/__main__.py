"""``python -m mvke_tf.serving``: run the gRPC model server.

    python -m mvke_tf.serving --model mvke=/path/to/serving_dir --port 8500
    python -m mvke_tf.serving --model_name mvke --model_base_path /path/to/serving_dir   # tensorflow_model_server style

``serving_dir`` holds numeric version subdirectories (``<serving_dir>/<version>/saved_model.pb``),
the layout the TFX Pusher writes. SIGTERM / SIGINT stop the server gracefully. ``--ssl_config_file``
takes TF Serving's text-proto ``SSLConfig`` (``server_key``, ``server_cert``, ``custom_ca``,
``client_verify``; the fields hold PEM text) and serves over TLS.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

# TensorFlow's C++ warnings include one per rejected request that quotes the request's bytes (a whole
# unparsable tf.Example) over many lines; the server logs its own one-line record instead.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_models(pairs: list[str]) -> dict[str, str]:
    models: dict[str, str] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise argparse.ArgumentTypeError(f"--model expects name=base_path, got {pair!r}")
        if name in models:
            raise argparse.ArgumentTypeError(f"model {name!r} given twice")
        models[name] = path
    return models


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mvke_tf.serving", description="TF Serving compatible gRPC model server."
    )
    p.add_argument("--model", action="append", default=[], metavar="NAME=BASE_PATH", help="a model to serve (repeat)")
    p.add_argument("--model_name", help="with --model_base_path: one model, tensorflow_model_server style")
    p.add_argument("--model_base_path", help="base path of --model_name (numeric version subdirectories)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500; 0 picks a free one)")
    p.add_argument("--poll_seconds", type=float, default=1.0, help="version poll interval; 0 disables (default 1)")
    p.add_argument("--max_message_mb", type=int, default=64, help="max gRPC request / response size in MiB")
    p.add_argument("--workers", type=int, default=8, help="request threads (default 8)")
    p.add_argument(
        "--max_batch_size",
        type=int,
        default=8192,
        help="rows one request may declare per input; more is INVALID_ARGUMENT (default 8192; 0: no cap)",
    )
    p.add_argument(
        "--max_request_bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="bytes a request's inputs may expand to (one value repeated over a shape counts once per element); "
        "more is RESOURCE_EXHAUSTED (default 64 MiB)",
    )
    p.add_argument(
        "--ssl_config_file",
        help="TF Serving's SSLConfig text proto (server_key, server_cert, custom_ca, client_verify): serve over TLS",
    )
    p.add_argument("--load_retries", type=int, default=5, help="retries of a version that fails to load")
    p.add_argument(
        "--enable_model_warmup",
        type=lambda v: v.lower() in ("1", "true", "yes"),
        default=True,
        help="replay assets.extra/tf_serving_warmup_requests before a version is AVAILABLE (default true)",
    )
    p.add_argument("--grace", type=float, default=5.0, help="seconds in-flight requests get on shutdown")
    p.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def build_server(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> Any:
    """The (not yet started) ``ModelServer`` the parsed flags describe; flag errors exit via ``parser``."""
    parser = parser or build_parser()
    try:
        models = parse_models(args.model)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    if args.model_name or args.model_base_path:
        if not (args.model_name and args.model_base_path):
            parser.error("--model_name and --model_base_path go together")
        if args.model_name in models:
            parser.error(f"model {args.model_name!r} given twice")
        models[args.model_name] = args.model_base_path
    if not models:
        parser.error("no model: pass --model NAME=BASE_PATH (or --model_name and --model_base_path)")
    if args.max_batch_size < 0:
        parser.error(f"--max_batch_size must be >= 0 (0: no cap), got {args.max_batch_size}")
    if args.max_request_bytes < 1:
        parser.error(f"--max_request_bytes must be >= 1, got {args.max_request_bytes}")
    if not 0 <= args.port <= 65535:
        # gRPC would take the port modulo 65536 and serve elsewhere (99999 on 34463) without a word.
        parser.error(f"--port must be a TCP port in 1..65535 (or 0 for a free one), got {args.port}")

    from mvke_tf.serving.server import ModelServer, load_ssl_config  # imports TensorFlow

    ssl_config = None
    if args.ssl_config_file:
        try:
            ssl_config = load_ssl_config(args.ssl_config_file)
        except (OSError, ValueError) as e:
            parser.error(f"--ssl_config_file: {e}")
    return ModelServer(
        models,
        host=args.host,
        port=args.port,
        poll_seconds=args.poll_seconds,
        max_message_bytes=args.max_message_mb * 1024 * 1024,
        max_workers=args.workers,
        load_retries=args.load_retries,
        warmup=args.enable_model_warmup,
        max_batch_size=args.max_batch_size or None,
        ssl_config=ssl_config,
        max_request_bytes=args.max_request_bytes,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    build_server(args, parser).serve(grace=args.grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
