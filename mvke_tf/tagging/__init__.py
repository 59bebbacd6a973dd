"""Batch tagging: every user x every tag through an exported SavedModel (the paper's user-profile job).

The job needs only the SavedModel contract (``mvke_tf.export`` or the TFX Pusher):

* ``user_tower`` (serialized ``tf.Example`` ``[B]`` -> ``<task>_experts [B, S, d]``) runs once per
  user, in batches;
* ``tag_tower`` (tags ``[T]`` -> ``<task>_embedding [T, d]``, ``<task>_gate [T, S]``) runs once over
  the whole tag vocabulary;
* the two are combined exactly with the decomposition of :mod:`mvke_tf.models.fast`: per task one
  ``[B, S*d] x [S*d, T]`` matrix product (plus the score bias, and for the cosine score the Gram
  term), then top-K per user.

Output: per user and task the top-K tags with their probabilities, one output shard per input
shard (``part-NNNNN.parquet`` with columns ``user_id, task, rank, tag, score``, or
``part-NNNNN.tfrecord.gz`` with one ``tf.Example`` per user and task: ``user_id``, ``task``,
``tags`` and ``scores``, best first). Each shard is written to a temporary file and renamed, then recorded in
``_manifest.json`` with the size, modification time and SHA-256 of its users file (and of the files
before it, whose users it excludes); a rerun of the same job (same model, tags and settings,
``_job.json``) skips exactly the shards recorded there whose inputs are unchanged, and recomputes the
rest. The leading ``_`` keeps the job's own files out of dataset readers: ``pandas.read_parquet(out)``
and ``pyarrow.parquet.read_table(out)`` read the shards alone.

Everything is checked (settings, model, tags, each users file's header and first row) before anything
is written, and a run that fails before finishing a shard leaves nothing behind that would refuse or
mislead the next run.

Users are deduplicated by ``user_id``: the first row of a user (files in sorted order) is scored,
in the shard that row is in.

``by="tag"`` (``--by tag``) writes audience lists instead: per task and tag the ``top_n`` users with
the highest probability, ties broken by the order users are read. It streams over user batches with
a running top-N per (task, tag) (:class:`AudienceState`, ``[tasks, T, <= N]``) merged batch by batch
(:class:`AudienceScorer`), checkpoints that state after each users file, and writes one output file
(``tag, task, rank, user_id, score``) at the end (see :func:`mvke_tf.tagging.job._tag_audiences`).

One module per job:

* :mod:`~mvke_tf.tagging.request`: the arguments (:class:`TagRequest`), checked once for both runners;
* :mod:`~mvke_tf.tagging.readers`: the users files (the tag vocabulary: :mod:`mvke_tf.data.tag_vocabulary`);
* :mod:`~mvke_tf.tagging.scoring`: the SavedModel's towers and the top-K tags per user;
* :mod:`~mvke_tf.tagging.audiences`: the running top-N users per tag (``--by tag``);
* :mod:`~mvke_tf.tagging.writers`: the output files, and :func:`read_output`;
* :mod:`~mvke_tf.tagging.resume`: job file, manifest, fingerprints and temporary files;
* :mod:`~mvke_tf.tagging.job`: the local job (:func:`tag_users`);
* :mod:`~mvke_tf.tagging.beam`: the same job as an Apache Beam pipeline (:func:`~mvke_tf.tagging.beam.run_beam`).

The names below are re-exported here and loaded on first use, so that importing one module (e.g. the
command line reading a vocabulary) does not import the whole job. Only
:mod:`~mvke_tf.tagging.beam` imports Beam (it is not re-exported); none of them imports TFX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module of this package that defines it, or the library module (dotted) the job reads it from;
# resolve_files (mvke_tf.data.dataset) is re-exported by readers, as before.
_EXPORTS = {
    "TaggingError": "errors",
    "FORMATS": "request",
    "DIRECTIONS": "request",
    "DEFAULT_TOP_N": "request",
    "TagRequest": "request",
    "check_direction": "request",
    "check_out_dir": "request",
    "DEFAULT_TAG_FIELD": "mvke_tf.data.tag_vocabulary",
    "DEFAULT_USER_ID": "readers",
    "default_user_id_column": "readers",
    "iter_user_records": "readers",
    "read_tags": "mvke_tf.data.tag_vocabulary",
    "resolve_files": "readers",
    "resolve_user_fields": "readers",
    "tags_from_data": "mvke_tf.data.tag_vocabulary",
    "TaggingModel": "scoring",
    "TopKTagger": "scoring",
    "resolve_model_dir": "scoring",
    "AudienceScorer": "audiences",
    "AudienceState": "audiences",
    "combine_audiences": "audiences",
    "merge_batch": "audiences",
    "audience_rows": "writers",
    "audience_schema": "writers",
    "output_name": "writers",
    "parquet_schema": "writers",
    "read_output": "writers",
    "JOB_FILE": "resume",
    "MANIFEST": "resume",
    "ShardResult": "resume",
    "run_local": "job",
    "tag_users": "job",
}

if TYPE_CHECKING:  # what the lazy loading below gives, for type checkers and editors
    from mvke_tf.data.tag_vocabulary import DEFAULT_TAG_FIELD, read_tags, tags_from_data
    from mvke_tf.tagging.audiences import AudienceScorer, AudienceState, combine_audiences, merge_batch
    from mvke_tf.tagging.errors import TaggingError
    from mvke_tf.tagging.job import run_local, tag_users
    from mvke_tf.tagging.readers import (
        DEFAULT_USER_ID,
        default_user_id_column,
        iter_user_records,
        resolve_files,
        resolve_user_fields,
    )
    from mvke_tf.tagging.request import (
        DEFAULT_TOP_N,
        DIRECTIONS,
        FORMATS,
        TagRequest,
        check_direction,
        check_out_dir,
    )
    from mvke_tf.tagging.resume import JOB_FILE, MANIFEST, ShardResult
    from mvke_tf.tagging.scoring import TaggingModel, TopKTagger, resolve_model_dir
    from mvke_tf.tagging.writers import audience_rows, audience_schema, output_name, parquet_schema, read_output


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [  # every name of _EXPORTS
    "AudienceScorer",
    "AudienceState",
    "DEFAULT_TAG_FIELD",
    "DEFAULT_TOP_N",
    "DEFAULT_USER_ID",
    "DIRECTIONS",
    "FORMATS",
    "JOB_FILE",
    "MANIFEST",
    "ShardResult",
    "TagRequest",
    "TaggingError",
    "TaggingModel",
    "TopKTagger",
    "audience_rows",
    "audience_schema",
    "check_direction",
    "check_out_dir",
    "combine_audiences",
    "default_user_id_column",
    "iter_user_records",
    "merge_batch",
    "output_name",
    "parquet_schema",
    "read_output",
    "read_tags",
    "resolve_files",
    "resolve_model_dir",
    "resolve_user_fields",
    "run_local",
    "tag_users",
    "tags_from_data",
]
