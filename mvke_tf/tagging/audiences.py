"""Audience top-N state of ``--by tag``: per task and tag the best users so far (:class:`AudienceState`,
``[tasks, T, <= N]``), merged batch by batch in one compiled graph (:class:`AudienceScorer`), or merged from
partial states in any grouping (:func:`combine_audiences`, what the Beam combiner does).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from mvke_tf.tagging.errors import TaggingError
from mvke_tf.tagging.resume import _sha256, _temp_path
from mvke_tf.tagging.scoring import TaggingModel


@dataclasses.dataclass
class AudienceState:
    """The best users so far per task and tag, best first: each array ``[tasks, T, n]``, ``n <= top_n``.

    ``positions`` order the users as the job reads them (the first row of each user, files in sorted
    order); among equal logits the user with the lower position ranks first. The arrays never grow past
    ``top_n`` along the last axis, whatever the number of users.
    """

    logits: np.ndarray  # float32
    positions: np.ndarray  # int64
    user_ids: np.ndarray  # object (str)

    @classmethod
    def empty(cls, num_tasks: int, num_tags: int) -> AudienceState:
        shape = (num_tasks, num_tags, 0)
        return cls(np.zeros(shape, np.float32), np.zeros(shape, np.int64), np.empty(shape, object))

    def __getitem__(self, task_index: int) -> AudienceState:
        """One task's state (arrays ``[T, n]``)."""
        return AudienceState(self.logits[task_index], self.positions[task_index], self.user_ids[task_index])

    def take(self, values: np.ndarray, indices: np.ndarray, positions: np.ndarray, user_ids: np.ndarray):
        """The state after a top-k over ``concat([self, batch], -1)``: ``indices [..., k]`` index that concatenation.

        ``positions`` and ``user_ids`` ``[B]`` are the batch's users (the last ``B`` columns).
        """
        n = self.logits.shape[-1]
        in_state = indices < n
        batch_index = np.maximum(indices - n, 0)
        if n:
            state_index = np.minimum(indices, n - 1)
            pos = np.where(in_state, np.take_along_axis(self.positions, state_index, -1), positions[batch_index])
            ids = np.where(in_state, np.take_along_axis(self.user_ids, state_index, -1), user_ids[batch_index])
        else:
            pos, ids = positions[batch_index], user_ids[batch_index]
        return AudienceState(np.asarray(values, np.float32), pos.astype(np.int64), ids.astype(object))

    def save(self, path: Path) -> str:
        """Writes the state (``.npz``, via a temporary file and a rename); returns its SHA-256."""
        unique_ids, inverse = np.unique(self.user_ids.astype(str).ravel(), return_inverse=True)
        tmp = _temp_path(path)
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                logits=self.logits,
                positions=self.positions,
                user_index=inverse.reshape(self.user_ids.shape).astype(np.int64),
                unique_ids=unique_ids,
            )
        os.replace(tmp, path)
        return _sha256(path)

    @classmethod
    def load(cls, path: Path) -> AudienceState:
        with np.load(path, allow_pickle=False) as z:
            ids = z["unique_ids"].astype(object)[z["user_index"]] if z["unique_ids"].size else None
            logits, positions = z["logits"], z["positions"]
        return cls(logits, positions, ids if ids is not None else np.empty(logits.shape, object))


def combine_audiences(a: AudienceState, b: AudienceState, top_n: int) -> AudienceState:
    """The top-``top_n`` of two states with any positions (e.g. partial states of parallel workers).

    Sorts the concatenation by (logit descending, position ascending): the same order as the running
    merge, so combining in any grouping gives the same result.
    """
    logits = np.concatenate([a.logits, b.logits], -1)
    positions = np.concatenate([a.positions, b.positions], -1)
    ids = np.concatenate([a.user_ids, b.user_ids], -1)
    order = np.lexsort((positions, -logits), axis=-1)[..., :top_n]
    return AudienceState(
        np.take_along_axis(logits, order, -1),
        np.take_along_axis(positions, order, -1),
        np.take_along_axis(ids, order, -1),
    )


class AudienceScorer:
    """Serialized user examples -> the running top-N users per (task, tag), merged batch by batch.

    One compiled graph per batch: ``user_tower``, per task one ``[B, S*d] x [S*d, T]`` product,
    transposed to ``[T, B]``, concatenated after the state's ``[T, n]`` logits, and one
    ``tf.math.top_k`` over the last axis (``[tasks, T, n + B] -> [tasks, T, min(N, n + B)]``).
    """

    def __init__(self, model: TaggingModel, tags: Sequence[str], top_n: int) -> None:
        if top_n < 1:
            raise TaggingError(f"--top-n: must be at least 1, got {top_n}")
        self.model = model
        self.tags = list(tags)
        self.top_n = top_n
        self.scorer = model.scorer(self.tags)
        spec = [
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([len(model.tasks), len(self.tags), None], tf.float32),
        ]
        self._fn = tf.function(self._merge, input_signature=spec)

    def empty(self) -> AudienceState:
        return AudienceState.empty(len(self.model.tasks), len(self.tags))

    def _merge(self, examples: tf.Tensor, state_logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        experts = self.model.user_experts(examples)
        batch = tf.stack([tf.transpose(self.scorer.logits(t, experts[t])) for t in self.model.tasks])
        return _top_n_of_concat(state_logits, batch, self.top_n)

    def update(
        self, state: AudienceState, user_ids: Sequence[str], examples: Sequence[bytes], positions: Sequence[int]
    ) -> AudienceState:
        """``state`` merged with one batch of users; returns the new state (``state`` is not changed).

        The batch's ``positions`` must be ascending and above every position in ``state``: then the
        order ``tf.math.top_k`` keeps among equal values (the lower index first) is the position order.
        """
        positions = _check_batch_order(state, positions)
        values, indices = self._fn(tf.constant(self.model.retype(examples), tf.string), tf.constant(state.logits))
        return state.take(values.numpy(), indices.numpy(), positions, np.asarray(user_ids, dtype=object))


def _top_n_of_concat(state_logits: tf.Tensor, batch_logits: tf.Tensor, top_n: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``tf.math.top_k`` over ``concat([state [..., n], batch [..., B]], -1)``: values and indices ``[..., k]``.

    ``k = min(top_n, n + B)``. Among equal values ``top_k`` keeps the lower index first.
    """
    both = tf.concat([state_logits, batch_logits], axis=-1)
    return tf.math.top_k(both, k=tf.minimum(top_n, tf.shape(both)[-1]))


def _check_batch_order(state: AudienceState, positions: Sequence[int]) -> np.ndarray:
    positions = np.asarray(positions, np.int64)
    if len(positions) > 1 and np.any(np.diff(positions) <= 0):
        raise ValueError("positions: must be strictly ascending within a batch; sort the batch by position")
    if state.positions.size and len(positions) and positions[0] <= state.positions.max():
        raise ValueError("positions: a batch must come after every user in the state; merge with combine_audiences")
    return positions


def merge_batch(
    state: AudienceState, batch_logits: np.ndarray, positions: Sequence[int], user_ids: Sequence[str], top_n: int
) -> AudienceState:
    """``state`` merged with a batch's logits ``[tasks, T, B]`` (what :meth:`AudienceScorer.update` does in its graph).

    The batch's ``positions`` ``[B]`` must be ascending and above every position in ``state``.
    """
    positions = _check_batch_order(state, positions)
    values, indices = _top_n_of_concat(tf.constant(state.logits), tf.constant(batch_logits, tf.float32), top_n)
    return state.take(values.numpy(), indices.numpy(), positions, np.asarray(user_ids, dtype=object))
