"""SavedModel scoring of the tagging job: the export's ``user_tower`` and ``tag_tower`` signatures
(:class:`TaggingModel`) and the top-K tags per user in one compiled graph per batch (:class:`TopKTagger`).

The tag side is packed once by :func:`mvke_tf.models.exported_tags.tag_scorer`, the same tables the export's
``top_tags`` signature holds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from mvke_tf.export.input_types import read_input_types, retype_examples
from mvke_tf.models.exported_tags import TAG_BATCH, tag_scorer
from mvke_tf.models.fast import FastScorer
from mvke_tf.tagging.errors import TaggingError


def resolve_model_dir(path: str | os.PathLike) -> str:
    """A SavedModel directory, or a Pusher base directory -> its newest numeric version."""
    path = str(path)
    if not tf.io.gfile.isdir(path):
        raise TaggingError(f"--model {path}: no such directory")
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = [
        d.rstrip("/")
        for d in tf.io.gfile.listdir(path)
        if d.rstrip("/").isdigit() and tf.io.gfile.exists(os.path.join(path, d.rstrip("/"), "saved_model.pb"))
    ]
    if not versions:
        raise TaggingError(
            f"--model {path}: neither a SavedModel (no saved_model.pb) nor a Pusher base directory "
            "(no numeric version subdirectory holding one)"
        )
    return os.path.join(path, max(versions, key=int))


class TaggingModel:
    """The SavedModel's ``user_tower`` and ``tag_tower`` plus the per-task score parameters."""

    def __init__(self, model_dir: str | os.PathLike, tasks: Sequence[str] | None = None) -> None:
        self.dir = resolve_model_dir(model_dir)
        try:
            self.loaded = tf.saved_model.load(self.dir)
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise TaggingError(f"--model {self.dir}: cannot load the SavedModel: {e}") from e
        sigs = self.loaded.signatures
        for name in ("user_tower", "tag_tower"):
            if name not in sigs:
                raise TaggingError(
                    f"--model {self.dir}: the SavedModel has no '{name}' signature (it has {sorted(sigs)}); "
                    "export it with mvke_tf.export.export_saved_model or the TFX pipeline"
                )
        self._user_fn = sigs["user_tower"]
        self._tag_fn = sigs["tag_tower"]
        # Signature outputs are a dict in no fixed order: sort for reproducible output rows.
        available = sorted(k[: -len("_experts")] for k in self._user_fn.structured_outputs if k.endswith("_experts"))
        if tasks is None:
            tasks = available
        unknown = [t for t in tasks if t not in available]
        if unknown or not tasks:
            raise TaggingError(f"--tasks: unknown task(s) {unknown or list(tasks)}; the model has {available}")
        self.tasks = list(tasks)
        _, inputs = self._user_fn.structured_input_signature
        if set(inputs) != {"examples"}:
            raise TaggingError(
                f"--model {self.dir}: 'user_tower' takes {sorted(inputs)}, not serialized tf.Examples ('examples'); "
                "re-export it with mvke_tf.export.export_saved_model or the TFX pipeline"
            )
        # The score's bias (and the cosine score's scale) per task: constant over tags, from tag_tower itself.
        probe = self._tag_fn(tags=tf.constant([""]))
        missing = [t for t in self.tasks if f"{t}_bias" not in probe]
        if missing:
            raise TaggingError(f"--model {self.dir}: 'tag_tower' has no '<task>_bias' output for {missing}; re-export")
        self.bias: dict[str, float] = {t: float(probe[f"{t}_bias"][0]) for t in self.tasks}
        self.scale: dict[str, float] = {t: float(probe[f"{t}_scale"][0]) for t in self.tasks if f"{t}_scale" in probe}
        self.score = "cosine" if self.scale else "dot"
        # How the model parses each raw column (the training data's types, for a pipeline export).
        self.input_types = read_input_types(self.dir)

    def retype(self, examples: Sequence[bytes]) -> list[bytes]:
        """Users' examples in the types the model parses (the typing rule: an id as an integer or a string, ...)."""
        try:
            return retype_examples(examples, self.input_types)
        except ValueError as e:
            raise TaggingError(f"--users: {e}") from None

    def user_experts(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        """Serialized user ``tf.Example`` ``[B]`` -> per task ``[B, S, d]``."""
        out = self._user_fn(examples=examples)
        return {t: out[f"{t}_experts"] for t in self.tasks}

    def scorer(self, tags: Sequence[str], batch_size: int = TAG_BATCH) -> FastScorer:
        """Runs ``tag_tower`` once over ``tags`` and packs the per-task tag tables
        (:func:`mvke_tf.models.exported_tags.tag_scorer`, as the export's ``top_tags`` signature does)."""
        if not tags:
            raise TaggingError("no tags to score against")
        return tag_scorer(self._tag_fn, tags, self.tasks, batch_size)


class TopKTagger:
    """Serialized user examples -> per task top-K ``(probabilities [B, k], tag indices [B, k])``.

    One compiled graph per batch: ``user_tower``, per task one ``[B, S*d] x [S*d, T]`` product, top-K.
    """

    def __init__(self, model: TaggingModel, tags: Sequence[str], top_k: int) -> None:
        if top_k < 1:
            raise TaggingError(f"--top-k: must be at least 1, got {top_k}")
        self.model = model
        self.tags = list(tags)
        self.scorer = model.scorer(self.tags)
        self.k = min(top_k, len(self.tags))
        self._fn = tf.function(self._top_k, input_signature=[tf.TensorSpec([None], tf.string)])

    def _top_k(self, examples: tf.Tensor) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
        experts = self.model.user_experts(examples)
        out = {}
        for t in self.model.tasks:
            values, indices = tf.math.top_k(self.scorer.logits(t, experts[t]), k=self.k)
            out[t] = (tf.sigmoid(values), indices)
        return out

    def __call__(self, examples: Sequence[bytes]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = self._fn(tf.constant(self.model.retype(examples), tf.string))
        return {t: (v.numpy(), i.numpy()) for t, (v, i) in out.items()}

    def rows(self, user_ids: Sequence[str], examples: Sequence[bytes], min_score: float = 0.0) -> dict[str, np.ndarray]:
        """Output rows (user-major, then task, then rank) as column arrays, scores >= ``min_score``."""
        res = self(examples)
        tasks = self.model.tasks
        scores = np.stack([res[t][0] for t in tasks], axis=1)  # [B, T, k]
        idx = np.stack([res[t][1] for t in tasks], axis=1)
        b, n_tasks, k = scores.shape
        keep = scores >= min_score
        cols = {
            "user_id": np.broadcast_to(np.asarray(user_ids, dtype=object)[:, None, None], scores.shape)[keep],
            "task": np.broadcast_to(np.asarray(tasks, dtype=object)[None, :, None], scores.shape)[keep],
            "rank": np.broadcast_to(np.arange(1, k + 1, dtype=np.int32)[None, None, :], scores.shape)[keep],
            "tag_index": idx[keep].astype(np.int32),
            "score": scores[keep].astype(np.float32),
        }
        return cols
