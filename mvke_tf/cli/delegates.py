"""``mvke-tf serve`` and ``mvke-tf pipeline``: hand their arguments to the server's and the pipeline's command lines."""

from __future__ import annotations

import argparse

from mvke_tf.cli.errors import CLIError


def cmd_serve(args: argparse.Namespace) -> int:
    """Delegates to the gRPC model server (``python -m mvke_tf.serving``), with its own flags."""
    try:
        from mvke_tf.serving.__main__ import main as serving_main
    except ImportError as e:
        raise CLIError(f"the serving package is not importable ({e}); install with: pip install -e '.[serving]'") from e
    return serving_main(args.rest)


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
