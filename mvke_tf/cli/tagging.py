"""``mvke-tf tag-users``: batch tagging with a SavedModel, locally (resumable by shard) or with Beam."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mvke_tf.cli.errors import CLIError


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
