"""The tagging job's arguments: one :class:`TagRequest`, checked once, for the local job
(:func:`mvke_tf.tagging.tag_users`) and the Beam pipeline (:func:`mvke_tf.tagging.beam.run_beam`).

Every check names the argument (as the command line spells it) and the fix. The settings are checked when
the request is made, before anything is read; :meth:`TagRequest.inputs` then resolves the users files and
the tag vocabulary.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mvke_tf.config import FeatureConfig
from mvke_tf.data.dataset import resolve_files
from mvke_tf.tagging.errors import TaggingError

FORMATS = ("parquet", "tfrecord")
DIRECTIONS = ("user", "tag")  # --by: top-K tags per user, or top-N users per tag (audience lists)
DEFAULT_TOP_N = 100


@dataclasses.dataclass(frozen=True)
class TagRequest:
    """What to tag: the arguments of :func:`~mvke_tf.tagging.tag_users` and
    :func:`~mvke_tf.tagging.beam.run_beam` (see :func:`~mvke_tf.tagging.tag_users` for each).

    Made, it is valid: the settings are checked in the order the job always checked them (``fmt``, ``by``
    and ``top_n``, ``top_k``, ``batch_size``, ``min_score``, then pyarrow for Parquet), and ``top_n`` is
    resolved (``None`` for ``by="user"``, default 100 for ``by="tag"``).
    """

    model: str | os.PathLike
    users: str | os.PathLike | Sequence[str]
    tags: Sequence[str]
    out: str | os.PathLike
    top_k: int = 20
    min_score: float = 0.0
    fmt: str = "parquet"
    batch_size: int = 1024
    tasks: Sequence[str] | None = None
    features: str | os.PathLike | FeatureConfig | None = None
    user_id_column: str = "user_id"
    by: str = "user"
    top_n: int | None = None

    def __post_init__(self) -> None:
        # Everything is checked before anything is written: a rejected run leaves the output directory as it was.
        if self.fmt not in FORMATS:
            raise TaggingError(f"--format: {self.fmt!r} not supported; use one of {list(FORMATS)}")
        object.__setattr__(self, "top_n", check_direction(self.by, self.top_n))  # frozen: set once, here
        if self.top_k < 1:
            raise TaggingError(f"--top-k: must be at least 1, got {self.top_k}")
        if self.batch_size < 1:
            raise TaggingError(f"--batch-size: must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.min_score <= 1.0:
            raise TaggingError(f"--min-score: a probability in [0, 1], got {self.min_score}")
        if self.fmt == "parquet":
            try:
                import pyarrow.parquet  # noqa: F401
            except ImportError as e:
                raise TaggingError(
                    "--format parquet needs pyarrow (pip install pyarrow), or use --format tfrecord"
                ) from e

    def inputs(self) -> tuple[list[str], list[str]]:
        """The users files (sorted, as :func:`~mvke_tf.data.dataset.resolve_files` finds them) and the tag
        vocabulary (duplicates dropped, the first kept); an empty vocabulary is a :class:`TaggingError`."""
        files = resolve_files(self.users)
        tags = list(dict.fromkeys(self.tags))
        if not tags:
            raise TaggingError("no tags to score against; fix: pass a non-empty tag vocabulary")
        return files, tags

    def direction(self) -> dict[str, Any]:
        """The job's direction as its job file and manifest record it: ``{"top_k"}`` for ``by="user"`` (the
        job of earlier versions, whose outputs still resume), ``{"by", "top_n"}`` for ``by="tag"``."""
        return {"top_k": self.top_k} if self.by == "user" else {"by": self.by, "top_n": self.top_n}


def check_direction(by: str, top_n: int | None) -> int | None:
    """Validates ``--by`` and ``--top-n``; returns ``top_n`` (``None`` for ``--by user``, default 100 for ``tag``)."""
    if by not in DIRECTIONS:
        raise TaggingError(f"--by: {by!r} not supported; use user (top-K tags per user) or tag (top-N users per tag)")
    if by == "user":
        if top_n is not None:
            raise TaggingError(
                "--top-n: applies to --by tag (the N best users per tag); with --by user give --top-k, or add --by tag"
            )
        return None
    top_n = DEFAULT_TOP_N if top_n is None else top_n
    if top_n < 1:
        raise TaggingError(f"--top-n: must be at least 1, got {top_n}")
    return top_n


def check_out_dir(out: str | os.PathLike) -> Path:
    """``--out`` if it is, or can be made, a directory this run writes; else a one-line :class:`TaggingError`.
    Nothing is created here (the job makes the directory when it writes)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TaggingError(f"--out {out}: is a file, not a directory; fix: give a directory path (made if missing)")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise TaggingError(f"--out {out}: {existing} is a file, not a directory; fix: give a directory path")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise TaggingError(f"--out {out}: {existing} is not writable; fix: give a directory you can write to")
    return out
