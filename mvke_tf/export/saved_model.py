"""SavedModel export of every model family, the library's and the pipeline's.

Each family builds its own signatures and their warm-up requests
(:meth:`~mvke_tf.models.family.ModelFamily.serving_signatures` and
:meth:`~mvke_tf.models.family.ModelFamily.warmup_inputs`, the TFX examples' ``make_serving_signatures``
once per family); this module saves them, the input step's own signatures and the warm-up file, and
branches on no family or signature name. The input step is the builders' parameter: :class:`RawInputs`
(the library: raw ``tf.Example`` parsed as the model's fields, which the model hashes in its graph) or
the pipeline's Transform step (:class:`mvke_tf.pipelines.trainer.TransformInputs`: the same parsing, then the
Transform graph). The contract:

* ``serving_default`` (every family): ``examples: string [batch]`` (serialized raw ``tf.Example``) ->
  the model's outputs ``[batch]`` named by task (``click``, ``conversion``; ranking models with ESMM add
  ``cvr`` and ``rank_score``). Features the client leaves out count as missing; labels and other
  columns are ignored. A multi-domain model reads the domain id as one of the features.
* ``user_tower`` (families with a tag tower, ``has_tag_tower``: user tagging): ``examples: string
  [batch]`` (the user fields) -> per task ``<task>_experts [batch, S_task, d_out]`` (MVKE: the VKE
  outputs after the value projection; other models: the user embedding, ``S_task = 1``).
* ``tag_tower`` (user tagging): ``tags: string [batch]`` (one raw tag each) -> per task
  ``<task>_embedding [batch, d_out]``, ``<task>_gate [batch, S_task]`` (the VKG weights; 1 for non-MVKE
  models) and ``<task>_bias [batch]`` (cosine-score models add ``<task>_scale [batch]``).

* ``top_tags`` (user tagging, exported with a tag vocabulary): ``examples: string [batch]`` (the user
  fields), ``k: int32 []`` (1 <= k <= the export's ``top_tags_max_k``) -> per task ``<task>_tags string
  [batch, k]`` and ``<task>_scores float [batch, k]`` (probabilities), best first: exactly the top-K of
  ``mvke-tf tag-users`` against the vocabulary frozen at export (:mod:`mvke_tf.models.top_tags`). A
  ``k`` out of range fails the request with ``INVALID_ARGUMENT``.

Fast prediction from the two towers: ``p = sigmoid(sum_s gate_s * <experts_s, embedding> + bias)``
(dot score). Warm-up requests for TF Serving, one per signature, are written once, to
``assets.extra/tf_serving_warmup_requests`` (:mod:`mvke_tf.export.warmup`). Only standard TF ops
(string hashing, bucketize, dense math, assertions): TF Serving loads the SavedModel as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from mvke_tf.config import FeatureConfig, FieldSpec
from mvke_tf.data.dataset import parse_fields
from mvke_tf.export.examples import dummy_rows, examples_from_rows
from mvke_tf.export.input_types import library_input_types, write_input_types
from mvke_tf.export.top_tags import DEFAULT_TOP_TAGS_MAX_K, TOP_TAGS, TagVocabulary
from mvke_tf.export.warmup import DEFAULT_MODEL_NAME, write_warmup_requests
from mvke_tf.models.family import EXAMPLES_INPUT, family_of

SIGNATURES = ("serving_default", "user_tower", "tag_tower")  # the most any family has (besides top_tags)


class RawInputs:
    """The library's input step: raw ``tf.Example`` parsed as the model's fields (the model hashes the
    raw values itself); raw tags as they are."""

    def attach(self, model: tf.keras.Model) -> None:
        """Called once before tracing: an input step with state (a Transform layer) hangs it on ``model``."""

    def features(
        self,
        serialized: tf.Tensor,
        fields: Sequence[FieldSpec],
        extra: Mapping[str, tf.io.FixedLenFeature] | None = None,
    ) -> dict[str, tf.Tensor]:
        """The model's inputs ``fields`` (and ``extra``) from serialized examples ``[B]``."""
        return parse_fields(serialized, fields, extra)

    def tags(self, tags: tf.Tensor, tag_field: FieldSpec) -> tf.Tensor:
        """The tag tower's input from raw tags ``[B]``."""
        return tags

    def signatures(self) -> dict[str, tf.types.experimental.GenericFunction]:
        """Signatures of the input step itself (the pipeline's ``transform_features``)."""
        return {}

    def warmup_requests(self, examples: Sequence[bytes]) -> dict[str, dict[str, Any]]:
        """Warm-up requests of :meth:`signatures`, given the model signatures' made-up ``examples``."""
        return {}


def serving_functions(
    model: tf.keras.Model,
    inputs: RawInputs | None = None,
    *,
    tags: TagVocabulary | None = None,
    top_tags_max_k: int = DEFAULT_TOP_TAGS_MAX_K,
) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """The traced signatures of ``model``'s family (see the module docstring), over ``inputs``
    (default: :class:`RawInputs`), plus the input step's own.

    Args:
      tags: the tag vocabulary of ``top_tags`` (a list of tags, a file of one tag per line, or a data
        directory whose tag column is read, as ``mvke-tf tag-users --tags`` takes it); ``None``: no
        ``top_tags`` signature. Only for families with a ``tag_tower``.
      top_tags_max_k: the largest ``k`` a ``top_tags`` request may ask for (capped at the number of tags).
    """
    inputs = inputs or RawInputs()
    inputs.attach(model)
    concrete = family_of(model).serving_signatures(model, inputs, tags=tags, top_tags_max_k=top_tags_max_k)
    concrete.update({name: fn.get_concrete_function() for name, fn in inputs.signatures().items()})
    return concrete


def warmup_requests(
    model: tf.keras.Model,
    examples: Sequence[bytes] | None = None,
    tags: Sequence[str] | None = None,
    feature_config: FeatureConfig | None = None,
    dtypes: Mapping[str, tf.DType] | None = None,
    top_tags_k: int | None = None,
) -> dict[str, dict[str, Any]]:
    """One small request per serving signature of ``model``'s family (and ``top_tags`` with ``k =
    top_tags_k`` when that is given).

    Args:
      examples: serialized ``tf.Example`` for the signatures on examples; default: two made-up rows of
        ``feature_config`` (default: the model's own, where it has one), else two empty examples.
      tags: raw tags for ``tag_tower``; default: two made-up tags.
      feature_config: the raw feature config of the made-up rows.
      dtypes: raw column types of the made-up rows (see :func:`~mvke_tf.export.examples_from_rows`), e.g.
        a pipeline's raw feature spec's, so that they parse.
    """
    import numpy as np

    fc = feature_config or getattr(model, "feature_config", None)
    family = family_of(model)
    if examples is None:
        rows = dummy_rows(fc, 2, dtypes=dtypes) if fc is not None else {}
        rows.update(family.made_up_columns(model, 2))
        examples = examples_from_rows(rows, fc, dtypes) if rows else [tf.train.Example().SerializeToString()] * 2
    batch = np.array(list(examples), dtype=object)
    return family.warmup_inputs(model, batch, tags, fc, top_tags_k)


def export_saved_model(
    model: tf.keras.Model,
    export_dir: str | Path,
    inputs: RawInputs | None = None,
    *,
    warmup_examples: list[bytes] | None = None,
    warmup_tags: list[str] | None = None,
    feature_config: FeatureConfig | None = None,
    dtypes: Mapping[str, tf.DType] | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    tags: TagVocabulary | None = None,
    top_tags_max_k: int = DEFAULT_TOP_TAGS_MAX_K,
    input_types: Mapping[str, Mapping[str, str]] | None = None,
) -> Path:
    """Saves ``model`` (any family) with its signatures and warm-up requests; returns the directory.

    Args:
      model: a built model.
      export_dir: the SavedModel directory (for TF Serving: ``<model base path>/<version>``); may be a
        GCS path.
      inputs: the input step (default: :class:`RawInputs`).
      warmup_examples, warmup_tags, feature_config, dtypes: the warm-up requests' content, as in
        :func:`warmup_requests`.
      model_name: the warm-up requests' ``model_spec.name`` (TF Serving does not check it).
      tags, top_tags_max_k: the ``top_tags`` signature's tag vocabulary and largest ``k`` (see
        :func:`serving_functions`); without ``tags`` the export has no ``top_tags``.
      input_types: how ``inputs`` parses each raw column (:mod:`mvke_tf.export.input_types`), written to
        ``assets.extra/input_types.json``; default: :class:`RawInputs`' (ids as strings, numbers as floats).
    """
    functions = serving_functions(model, inputs, tags=tags, top_tags_max_k=top_tags_max_k)
    tf.saved_model.save(model, str(export_dir), signatures=functions)
    top_tags_k = 1 if TOP_TAGS in functions else None  # the one k every export accepts
    requests = warmup_requests(model, warmup_examples, warmup_tags, feature_config, dtypes, top_tags_k)
    requests.update((inputs or RawInputs()).warmup_requests(list(requests["serving_default"][EXAMPLES_INPUT])))
    write_warmup_requests(export_dir, requests, model_name)
    fc = feature_config or getattr(model, "feature_config", None)
    if input_types is None and fc is not None:
        input_types = library_input_types(fc)
    if input_types is not None:
        write_input_types(export_dir, input_types)
    return Path(export_dir)
