"""TFX Trainer module: ``run_fn`` trains the library's model on Transform's output.

The model is :func:`mvke_tf.models.build_model` over the *transformed* feature config
(every field integer ids, see :mod:`mvke_tf.data.transform`). The exported SavedModel
carries the Transform graph, so clients send raw ``tf.Example`` records:

* ``serving_default``: serialized raw ``tf.Example`` ``[B]`` -> ``click``, ``conversion`` ``[B]``
  (features the client leaves out count as missing; labels and other columns are not needed);
* ``transform_features``: serialized raw ``tf.Example`` ``[B]`` -> transformed features (TFMA);
* ``user_tower``: serialized raw ``tf.Example`` ``[B]`` -> ``<task>_experts [B, S_task, d]``;
* ``tag_tower``: raw tags ``[B]`` (one tag each) -> ``<task>_embedding``, ``<task>_gate``.

The model family (:mod:`mvke_tf.models.family`, from ``custom_config["model_family"]``:
:func:`~mvke_tf.pipelines.preprocessing.family_of_custom_config`) decides the fields, the training loop and
the signatures. A multi-domain model reads the domain id too (Transform passes it through) and trains
with its own schedule: M3oE's upper level (alpha / beta) reads the
validation split (``fn_args.eval_files``: the ``val`` split held out of the training data, never the
eval split the Evaluator blesses on), and the learned alpha / beta go to the log and ``training.json``.
For the other families: a pair-ranking model reads the user fields, the ad's tags and (when the
data has it) the ad id together; it has no towers to split, so its SavedModel has ``serving_default``
(every output: with ESMM ``click`` = pCTR, ``conversion`` = pCTCVR, ``cvr``, ``rank_score``) and
``transform_features`` only. The signatures are the library's (:func:`mvke_tf.export.serving_functions`)
with :class:`TransformInputs` as their input step.

Warm start (incremental training): next to the SavedModel, ``<model>/warm_start/`` holds a TF
checkpoint of the model's weights and ``meta.json`` (the model's config, its weights' names and
shapes). When the Trainer gets a ``base_model`` (the latest blessed model) whose ``meta.json``
matches the new model, ``run_fn`` restores those weights before training; otherwise it logs why and
starts fresh. ``<model_run_dir>/warm_start.json`` records what happened.

This file is TFX's ``module_file``; it imports only the library, TFX's public API and TFT.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from mvke_tf.pipelines.preprocessing import family_of_custom_config, load_feature_config, num_buckets
from mvke_tf.pipelines.split_rows import KEY as SPLIT_ROWS_KEY
from tfx import v1 as tfx

from mvke_tf import distribute
from mvke_tf.config import (
    MULTI_VALUED,
    FeatureConfig,
    FieldSpec,
)
from mvke_tf.data import transform as T
from mvke_tf.export.input_types import spec_input_types
from mvke_tf.export.saved_model import RawInputs, export_saved_model
from mvke_tf.export.top_tags import DEFAULT_TOP_TAGS_MAX_K, resolve_tag_vocabulary

SHUFFLE_BUFFER = 20_000  # examples shuffled across (on top of the files' order)
TRAINING_SUMMARY = "training.json"  # in the Trainer's model_run_dir: epochs, steps, final loss and AUC
WARM_START_DIR = "warm_start"  # sibling of the SavedModel dir in the Model artifact
WARM_START_MARKER = "warm_start.json"  # in the Trainer's model_run_dir


def _input_fn(
    patterns: list[str],
    tf_transform_output: tft.TFTransformOutput,
    feature_config: FeatureConfig,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    columns: Sequence[str] = (),
) -> tf.data.Dataset:
    """Raw examples -> repeated ``(features, labels)`` batches, transformed on the fly by the Transform graph.

    The records are parsed with the raw feature spec and passed through the same Transform layer the
    exported signatures use, so training and serving read raw data the same way (Transform writes no
    transformed copy). Every pass is a fresh shuffle of the whole split; the caller counts the steps.
    ``columns``: transformed columns passed through as features besides the fields (e.g. a domain id).
    """
    files = sorted({f for pattern in patterns for f in tf.io.gfile.glob(pattern)})
    if not files:
        raise FileNotFoundError(f"Trainer: no example files match {patterns}")
    compression = "GZIP" if all(f.endswith(".gz") for f in files) else ""
    layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=min(len(files), 4),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if shuffle:
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)

    def split(serialized: tf.Tensor) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        batch = layer(tf.io.parse_example(serialized, raw_spec))
        features = {n: batch[n] for n in [*feature_config.feature_names, *columns]}
        labels = {t: tf.cast(batch[t], tf.float32) for t in feature_config.labels}
        return features, labels

    return ds.repeat().batch(batch_size).map(split, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def training_steps(fn_args: tfx.components.FnArgs, batch_size: int, epochs: int) -> tuple[int, int, dict[str, Any]]:
    """``(epochs, steps per epoch, what decided them)``: ``epochs`` passes over the train split, its
    size from ``SplitRows`` (``fn_args.hyperparameters``), unless ``train_steps`` was given."""
    rows = (fn_args.hyperparameters or {}).get(SPLIT_ROWS_KEY, {})
    if fn_args.train_steps:
        steps = int(fn_args.train_steps)
        epochs = max(1, min(epochs, steps))
        return epochs, max(1, steps // epochs), {"source": "train_steps", "train_steps": steps, "rows": rows}
    if "train" not in rows:
        raise ValueError(
            "Trainer: no train_steps and no row count of the train split (hyperparameters "
            f"{fn_args.hyperparameters!r}); fix: wire SplitRows' output to the Trainer, or set train_steps"
        )
    per_epoch = max(1, math.ceil(int(rows["train"]) / batch_size))
    return epochs, per_epoch, {"source": "epochs", "rows": rows}


def _optional(spec: Any) -> Any:
    """A required one-value ``FixedLenFeature`` gets a "missing" default, so clients may omit it.

    The default maps to the id Transform gives a missing value (``""`` -> -1, NaN -> bucket 0);
    the parsed tensor keeps its dense type, as the Transform graph expects.
    """
    if isinstance(spec, tf.io.FixedLenFeature) and spec.default_value is None and list(spec.shape) in ([], [1]):
        default = {tf.string: "", tf.float32: float("nan")}.get(spec.dtype, 0)
        return tf.io.FixedLenFeature(spec.shape, spec.dtype, default_value=default)
    return spec


class TransformInputs(RawInputs):
    """The pipeline's input step for :func:`mvke_tf.export.serving_functions`: raw examples parsed with
    the raw schema (a missing feature counts as missing), then the Transform graph; raw tags mapped to
    the ids Transform gives the tag field. Adds the ``transform_features`` signature (for TFMA)."""

    def __init__(self, tf_transform_output: tft.TFTransformOutput, raw_config: FeatureConfig) -> None:
        self.tf_transform_output = tf_transform_output
        self.raw_config = raw_config
        self.raw_spec = tf_transform_output.raw_feature_spec()
        self.layer: Any = None

    def attach(self, model: tf.keras.Model) -> None:
        # Tracked by the model, so that the Transform graph's assets are saved with it.
        model.tft_layer = self.layer = self.tf_transform_output.transform_features_layer()

    def features(
        self,
        serialized: tf.Tensor,
        fields: Sequence[FieldSpec],
        extra: Mapping[str, tf.io.FixedLenFeature] | None = None,
    ) -> dict[str, tf.Tensor]:
        extra = dict(extra or {})
        names = [f.name for f in fields] + list(extra)
        spec = {n: _optional(self.raw_spec[n]) for n in names}
        for n, wanted in extra.items():
            raw = self.raw_spec[n]
            if isinstance(raw, tf.io.FixedLenFeature) and raw.default_value is None:
                # The family's default for an absent input (e.g. -1 for a domain id, which the model
                # rejects), not the "missing" id a field gets: no silent fallback to domain 0.
                spec[n] = tf.io.FixedLenFeature(raw.shape, raw.dtype, default_value=wanted.default_value)
        transformed = self.layer(tf.io.parse_example(serialized, spec))
        return {n: transformed[n] for n in names}

    def tags(self, tags: tf.Tensor, tag_field: FieldSpec) -> tf.Tensor:
        return T.multi_valued_ids(tags, self.raw_config.tag_field)

    def signatures(self) -> dict[str, Any]:
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def transform_features(examples: tf.Tensor) -> dict[str, tf.Tensor]:
            return self.layer(tf.io.parse_example(examples, self.raw_spec))

        return {"transform_features": transform_features}

    def warmup_requests(self, examples: Sequence[bytes]) -> dict[str, dict[str, Any]]:
        """``transform_features`` parses the whole raw schema, every column required as TFMA sends them:
        the model's made-up examples with each column they lack set to a neutral value."""
        import numpy as np

        neutral = {tf.string: b"", tf.int64: 0, tf.float32: 0.0}
        complete = []
        for serialized in examples:
            example = tf.train.Example.FromString(serialized)
            for name, spec in self.raw_spec.items():
                if name not in example.features.feature:
                    value = neutral.get(spec.dtype, 0)
                    feature = example.features.feature[name]
                    if spec.dtype == tf.string:
                        feature.bytes_list.value.append(value)
                    elif spec.dtype == tf.int64:
                        feature.int64_list.value.append(value)
                    else:
                        feature.float_list.value.append(value)
            complete.append(example.SerializeToString())
        return {"transform_features": {"examples": np.array(complete, dtype=object)}}


def warmup_examples(model: tf.keras.Model, inputs: TransformInputs, family: Any, n: int = 2) -> list[bytes]:
    """Made-up raw examples that parse as the raw schema says: typed as its columns, and a multi-valued
    field that the schema holds as one string (e.g. a ``|``-joined CSV cell) sent joined. TF Serving
    replays them on load and refuses a model whose warm-up fails."""
    from mvke_tf.export.examples import dummy_rows, examples_from_rows

    raw_dtypes = {name: spec.dtype for name, spec in inputs.raw_spec.items()}
    rows = dummy_rows(inputs.raw_config, n, dtypes=raw_dtypes)
    rows.update(family.made_up_columns(model, n))
    examples = [tf.train.Example.FromString(e) for e in examples_from_rows(rows, inputs.raw_config, raw_dtypes)]
    for field in (*inputs.raw_config.user_fields, inputs.raw_config.tag_field):
        spec = inputs.raw_spec.get(field.name)
        single = isinstance(spec, tf.io.FixedLenFeature) and list(spec.shape) in ([], [1])
        if field.kind == MULTI_VALUED and single and spec.dtype == tf.string:
            for example in examples:
                values = example.features.feature[field.name].bytes_list.value
                values[:] = [field.separator.encode().join(values)]
    return [e.SerializeToString() for e in examples]


def warm_start_dir(serving_model_dir: str) -> str:
    """``<model artifact>/warm_start``: the weights checkpoint next to the SavedModel (not pushed)."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), WARM_START_DIR)


def _weights_meta(model: tf.keras.Model) -> dict[str, Any]:
    """What must match for a warm start: the model's config and its weights' names and shapes, in order."""
    weights = [[w.name, list(w.shape)] for w in model.weights]
    return {"model": json.loads(json.dumps(model.get_config())), "weights": weights}


def weights_digest(model: tf.keras.Model) -> float:
    """Sum of the absolute values of all weights (a cheap fingerprint to compare runs)."""
    return float(sum(tf.reduce_sum(tf.abs(tf.cast(w, tf.float64))).numpy() for w in model.weights))


def save_warm_start(model: tf.keras.Model, serving_model_dir: str) -> str:
    """Writes the weights checkpoint and ``meta.json`` for the next run's warm start; returns the dir."""
    out = warm_start_dir(serving_model_dir)
    tf.io.gfile.makedirs(out)
    # Only the model's variables (not the optimizer: its state and learning rate start anew each run).
    tf.train.Checkpoint(weights=list(model.weights)).write(os.path.join(out, "ckpt"))
    meta = {**_weights_meta(model), "digest": weights_digest(model)}
    with tf.io.gfile.GFile(os.path.join(out, "meta.json"), "w") as f:
        f.write(json.dumps(meta, indent=1))
    return out


def restore_warm_start(model: tf.keras.Model, base_model: str | None) -> dict[str, Any]:
    """Restores ``model``'s weights from the base model's checkpoint when it matches; never raises.

    Returns what happened: ``warm_started``, ``source`` and ``reason`` (and the restored weights'
    ``digest`` on success).
    """
    if not base_model:
        return {"warm_started": False, "source": None, "reason": "no base model (no blessed model yet)"}
    source = warm_start_dir(base_model)
    meta_path = os.path.join(source, "meta.json")
    result: dict[str, Any] = {"warm_started": False, "source": source}
    if not tf.io.gfile.exists(meta_path):
        return {**result, "reason": f"the base model has no warm-start checkpoint ({meta_path} is missing)"}
    with tf.io.gfile.GFile(meta_path) as f:
        saved = json.loads(f.read())
    expected = _weights_meta(model)
    if saved.get("model") != expected["model"]:
        return {**result, "reason": "the base model's config (feature or model config) differs from the new one"}
    if saved.get("weights") != expected["weights"]:
        return {**result, "reason": "the base model's weights (names or shapes) differ from the new model's"}
    before = [w.numpy() for w in model.weights]
    try:
        status = tf.train.Checkpoint(weights=list(model.weights)).read(os.path.join(source, "ckpt"))
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        for w, value in zip(model.weights, before):  # leave no half-restored model behind
            w.assign(value)
        return {**result, "reason": f"restoring the checkpoint failed: {e}"}
    digest = weights_digest(model)
    return {**result, "warm_started": True, "reason": "restored the base model's weights", "digest": digest}


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains ``epochs`` passes over the train split (or ``train_steps``); exports to ``serving_model_dir``."""
    custom = dict(fn_args.custom_config or {})
    raw_config = load_feature_config(custom)
    config = T.transformed_feature_config(raw_config, num_buckets(custom))
    family = family_of_custom_config(custom)
    model_config = family.config_from_dict(custom.get("model_config", {}))
    batch_size = int(custom.get("batch_size", 256))
    epochs, steps_per_epoch, budget = training_steps(fn_args, batch_size, int(custom.get("epochs", 1)))

    seed = int(custom.get("seed", 0))
    # The strategy before other TensorFlow ops; on multi-worker, TFX's Trainer sets TF_CONFIG.
    strategy = distribute.make_strategy(str(custom.get("distribution", "default")))
    chief = distribute.is_chief(strategy)
    tf.keras.utils.set_random_seed(seed)

    learning_rate = float(custom.get("learning_rate", 1e-3))
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    # The fields Transform made for this family (e.g. a ranker's ad id, where the data has it).
    fields = family.input_fields(config, model_config, tf_transform_output.transformed_feature_spec())
    with strategy.scope():
        model = family.build(config, model_config, fields)
        warm = restore_warm_start(model, fn_args.base_model)
        model = family.compile(model, learning_rate)
    config = family.dataset_config(config, model)  # the input yields every model input
    columns = family.dataset_columns(model_config)
    train = _input_fn(fn_args.train_files, tf_transform_output, config, batch_size, seed, columns=columns)
    # fn_args.eval_files: the validation split, held out of the training data (``val``) where there is one.
    validation_split = str(custom.get("validation_split", "eval"))
    valid = _input_fn(fn_args.eval_files, tf_transform_output, config, batch_size, seed, False, columns)
    held_out = None
    if family.needs_held_out(model_config):
        # M3oE's upper level (alpha / beta) reads the held-out split, shuffled, never the eval split the
        # Evaluator blesses on.
        held_out = _input_fn(fn_args.eval_files, tf_transform_output, config, batch_size, seed + 1, True, columns)
    eval_rows = budget["rows"].get(validation_split)
    validation_steps = max(1, int(fn_args.eval_steps or 1))
    if eval_rows:
        validation_steps = min(validation_steps, math.ceil(int(eval_rows) / batch_size))

    if distribute.num_workers(strategy) > 1:
        # The input repeats, so workers run the same steps; split each global batch by example.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train, valid = train.with_options(options), valid.with_options(options)

    if warm["warm_started"]:
        logging.info("Trainer: warm-started from %s", warm["source"])
    else:
        logging.warning("Trainer: training from scratch (no warm start): %s", warm["reason"])
    if chief:
        tf.io.gfile.makedirs(fn_args.model_run_dir)
        with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, WARM_START_MARKER), "w") as f:
            f.write(json.dumps(warm, indent=1))
    logging.info("Trainer: %d epoch(s) of %d steps of %d examples (%s)", epochs, steps_per_epoch, batch_size, budget)
    with distribute.write_dir(fn_args.model_run_dir, strategy) as run_dir:
        history = family.fit(
            model,
            train,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            held_out=held_out,
            validation=valid,
            validation_steps=validation_steps,
            callbacks=[tf.keras.callbacks.TensorBoard(log_dir=run_dir, update_freq="epoch")],
            verbose=2,
        )
        learned = family.training_summary(model)
        if learned:
            logging.info("Trainer: learned %s", learned)
        if chief:
            summary = {
                "epochs": epochs,
                "steps": epochs * steps_per_epoch,
                "batch_size": batch_size,
                "examples": epochs * steps_per_epoch * batch_size,
                "validation_split": validation_split,
                **budget,
                "metrics": {k: float(v[-1]) for k, v in history.items()},
                **learned,
            }
            with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, TRAINING_SUMMARY), "w") as f:
                f.write(json.dumps(summary, indent=1))
        # Every worker saves (saving may run collective ops); only the chief's export is kept.
        serving_dir = fn_args.serving_model_dir if chief else os.path.join(run_dir, "serving_model")
        # Before the export: the checkpoint holds the model's own weights only (not the Transform layer's).
        logging.info("Trainer: wrote the warm-start checkpoint to %s", save_warm_start(model, serving_dir))
        inputs = TransformInputs(tf_transform_output, raw_config)
        # top_tags: the tag vocabulary (a tag file or a raw data directory, read with the raw feature config;
        # Transform hashes tags, so it keeps no vocabulary of its own). None: the export has no top_tags.
        top_tags = custom.get("top_tags_vocabulary")
        top_tags = resolve_tag_vocabulary(top_tags, raw_config) if top_tags and family.has_tag_tower else None
        export_saved_model(
            model,
            serving_dir,
            inputs,
            warmup_examples=warmup_examples(model, inputs, family),
            tags=top_tags,
            top_tags_max_k=int(custom.get("top_tags_max_k") or DEFAULT_TOP_TAGS_MAX_K),
            input_types=spec_input_types(inputs.raw_spec, raw_config),
        )
        logging.info("Trainer: exported %s with warm-up requests to %s", family.name, serving_dir)
