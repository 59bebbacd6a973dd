"""Typed configuration of the TFX pipeline; every validation error names the field."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from mvke_tf.config import CATEGORICAL, STRATEGIES, ConfigError, FeatureConfig
from mvke_tf.data.transform import DEFAULT_NUM_BUCKETS
from mvke_tf.export.top_tags import DEFAULT_TOP_TAGS_MAX_K
from mvke_tf.models.family import MODEL_NAMES, ModelFamily, canonical_model_name, config_for_data, family_of

# A categorical user field with at most this many hash buckets is a default slice key (a handful of values,
# e.g. a gender or an age band; hash buckets are a few times the distinct values), and at most this many keys.
SLICE_MAX_BUCKETS = 32
SLICE_MAX_KEYS = 3


def default_slice_keys(features: FeatureConfig) -> tuple[str, ...]:
    """The Evaluator's default slices: the first ``SLICE_MAX_KEYS`` categorical user fields with at most
    ``SLICE_MAX_BUCKETS`` hash buckets (few values each, so every slice holds enough rows to mean something)."""
    small = [f.name for f in features.user_fields if f.kind == CATEGORICAL and f.hash_buckets <= SLICE_MAX_BUCKETS]
    return tuple(small[:SLICE_MAX_KEYS])


# Every model of every family (mvke_tf.models.family): two-tower (``mvke_mt``, ...), pair-ranking
# (``ranking_<architecture>``) and multi-domain (``multi_domain_<architecture>``); the overrides are fields of
# the family's config class.
PIPELINE_MODEL_TYPES = MODEL_NAMES

INPUT_FORMATS = ("csv", "parquet", "tfrecord")
EVALUATORS = ("batched", "tfma")
DISTRIBUTIONS = STRATEGIES  # the names of mvke_tf.distribute


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Where the pipeline reads and writes, and how it trains and blesses.

    Attributes:
      pipeline_name: TFX pipeline name (letters, digits, ``-`` and ``_``).
      pipeline_root: directory for the component artifacts.
      data_root: directory holding the raw CSV files (CsvExampleGen's ``input_base``).
      serving_dir: where the Pusher copies blessed SavedModels (``<serving_dir>/<version>/``).
      metadata_path: SQLite ML Metadata file (local runs).
      features_yaml: the raw :class:`~mvke_tf.config.FeatureConfig` YAML (e.g. the
        generator's ``features.yaml``); empty uses the synthetic default.
      input_format: ``csv`` (CsvExampleGen), ``parquet`` (FileBasedExampleGen with TFX's Parquet executor)
        or ``tfrecord`` (ImportExampleGen over gzipped or plain TFRecord files of ``tf.train.Example``, e.g.
        ``mvke-tf data synth --format tfrecord`` or ``mvke-tf data convert``: the fastest, docs/benchmarks.md).
      input_pattern: glob of the input files relative to ``data_root``. It may hold a ``{SPAN}``
        placeholder (e.g. ``span-{SPAN}/*.csv``): ExampleGen then reads only the latest span
        (the largest number), so each run trains on the newest day's data.
      eval_pattern: glob of the eval files relative to ``data_root``. Empty (default): ExampleGen
        splits ``input_pattern``'s rows by hash (``train_eval_split``). Given: ``input_pattern`` is
        the train split and ``eval_pattern`` the eval split, e.g. the paper's "train on day D,
        test on day D+1" (``train/*.csv`` and ``eval/*.csv`` of the synthetic generator, whose
        last day is the eval split). Both may hold ``{SPAN}``.
      val_pattern: glob of a held-out part of the training data (with ``eval_pattern`` only): ExampleGen
        makes it a ``val`` split, which the Trainer reads for its validation metrics and, for M3oE's
        bi-level schedule, for the upper level (the fusion weights alpha / beta). Held out of the train
        split, not the eval split: the Evaluator blesses on the eval split, so a model must not have fit
        anything to it. Empty: the Trainer validates on the eval split.
      model_type: the model's name (:mod:`mvke_tf.models.family`'s rule; the YAML config's ``model:``): a
        two-tower model of :data:`mvke_tf.models.USER_TAG_MODEL_NAMES` (e.g. ``mvke_mt``), a pair-ranking
        model ``ranking_<architecture>`` (e.g. ``ranking_mmoe``, ``ranking_app_store``: MMoE with FM cross and
        ESMM heads) or a multi-domain model ``multi_domain_<architecture>`` (e.g. ``multi_domain_m3oe``). An
        old name (``app_store``, ``m3oe``, ...) is resolved with a FutureWarning until mvke-tf 0.2.
      model_overrides: other fields of the model's config (the family's config class:
        :class:`~mvke_tf.models.UserTagConfig`, :class:`~mvke_tf.models.ranking.RankingConfig` or
        :class:`~mvke_tf.models.multidomain.MultiDomainConfig`), e.g. sizes.
      train_steps: Trainer steps over all epochs; 0 (the default) trains ``epochs`` passes over the
        train split, every row at least once, the steps derived from the split's row count.
      eval_steps: validation steps in the Trainer (at most one pass over the eval split).
      epochs: passes over the train split (with ``train_steps``: the Keras epochs they are split into).
      batch_size: training batch size.
      learning_rate: Adam learning rate.
      num_buckets: quantile buckets per numeric field, computed by Transform over the train split; 0: each
        field's ``boundaries`` in the feature config, as the library (``mvke-tf train``) reads the field.
      seed: random seed of the Trainer (weights initialization and shuffling).
      eval_auc_floor: the Evaluator blesses a model only if its blessing AUC is at least this: the first
        task's AUC, or for a multi-domain model the mean AUC over (domain, task).
      eval_auc_change: the largest drop of the blessing AUC vs the last blessed model still blessed.
      train_eval_split: hash buckets of the train and eval splits (default 4:1).
      beam_pipeline_args: Apache Beam options for the Beam-based components.
      schema_path: a curated schema (``schema.pbtxt``, e.g. a SchemaGen output of an earlier run):
        ImportSchemaGen then replaces SchemaGen, so each run's data is validated against it.
        Empty: SchemaGen infers a schema from each run's statistics.
      block_on_anomalies: an ``AnomaliesGate`` after the ExampleValidator stops the run before
        Transform when there are anomalies (nothing is trained or pushed).
      distribution: the Trainer's ``tf.distribute`` strategy: ``default`` (one device),
        ``mirrored`` (all local GPUs) or ``multi_worker`` (MultiWorkerMirroredStrategy from the
        ``TF_CONFIG`` environment variable the orchestrator sets on every worker).
      warm_start: the Trainer starts from the weights of the latest blessed model (when there
        is one and its architecture matches), i.e. incremental training across runs.
      infra_validation: before the Pusher, ``CppInfraValidator`` loads the model with TensorFlow's C API
        (TF Serving's loader) and runs every signature on its warm-up requests; a model the C++ runtime
        cannot serve is not pushed. Needs a C compiler where the component runs (``cc`` or ``$CC``).
      top_tags_vocabulary: the tags of the pushed model's ``top_tags`` signature (a user's top-k tags in one
        call, :mod:`mvke_tf.models.top_tags`): a file of one tag per line, or a raw data directory whose
        tag column is read (as ``mvke-tf tag-users --tags-from-data``); frozen into the export. Transform
        hashes tags and keeps no vocabulary, so the Trainer needs one. Empty: no ``top_tags``. Two-tower
        models only. A relative path is relative to ``data_root`` (as ``input_pattern``), e.g. ``train``.
      top_tags_max_k: the largest ``k`` a ``top_tags`` request may ask for (capped at the number of tags).
      slice_keys: the raw features the Evaluator slices by (each slice key alone, besides the overall
        slice; a multi-domain model's domain id is added first). None (the default): derived from the
        feature config (:func:`default_slice_keys`): its low-cardinality categorical user fields.
      evaluator: ``batched`` (the default: TFMA's config, output and blessing, metrics computed on
        batches, :mod:`mvke_tf.pipelines.evaluator`) or ``tfma`` (TFX's stock Evaluator, one example at a time,
        for metrics the batched one does not have).
    """

    pipeline_name: str
    pipeline_root: str
    data_root: str
    serving_dir: str
    metadata_path: str = ""
    features_yaml: str = ""
    input_format: str = "csv"
    input_pattern: str = "*.csv"
    eval_pattern: str = ""
    val_pattern: str = ""
    model_type: str = "mvke_mt"
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_steps: int = 0
    eval_steps: int = 100
    epochs: int = 1
    batch_size: int = 256
    learning_rate: float = 1e-3
    num_buckets: int = DEFAULT_NUM_BUCKETS
    seed: int = 0
    eval_auc_floor: float = 0.5
    eval_auc_change: float = 0.01
    train_eval_split: tuple[int, int] = (4, 1)
    beam_pipeline_args: tuple[str, ...] = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
    warm_start: bool = True
    schema_path: str = ""
    block_on_anomalies: bool = True
    distribution: str = "default"
    evaluator: str = "batched"
    infra_validation: bool = True
    top_tags_vocabulary: str = ""
    top_tags_max_k: int = DEFAULT_TOP_TAGS_MAX_K
    slice_keys: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_overrides", dict(self.model_overrides))
        object.__setattr__(self, "model_type", canonical_model_name(self.model_type))
        if self.slice_keys is not None:
            if isinstance(self.slice_keys, str) or not all(isinstance(k, str) and k for k in self.slice_keys):
                raise ConfigError(
                    f"pipeline config: slice_keys={self.slice_keys!r} is invalid; fix: give a list of raw feature "
                    "names, e.g. [gender, age], or leave it out to derive them from the feature config"
                )
            object.__setattr__(self, "slice_keys", tuple(self.slice_keys))
        object.__setattr__(self, "train_eval_split", tuple(int(s) for s in self.train_eval_split))
        object.__setattr__(self, "beam_pipeline_args", tuple(str(a) for a in self.beam_pipeline_args))

        def fail(name: str, fix: str) -> None:
            raise ConfigError(f"pipeline config: {name}={getattr(self, name)!r} is invalid; fix: {fix}")

        name_ok = self.pipeline_name and all(c.isalnum() or c in "-_" for c in self.pipeline_name)
        if not name_ok:
            fail("pipeline_name", "use a non-empty name of letters, digits, '-' and '_'")
        for name in ("pipeline_root", "data_root", "serving_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                fail(name, "give a directory path")
        if not self.input_pattern:
            fail("input_pattern", "give a glob relative to data_root, e.g. '*.csv' or 'span-{SPAN}/*.csv'")
        if self.input_format not in INPUT_FORMATS:
            fail("input_format", f"use one of {', '.join(INPUT_FORMATS)}")
        for name in ("input_pattern", "eval_pattern"):
            if getattr(self, name).count("{SPAN}") > 1:
                fail(name, "use the '{SPAN}' placeholder at most once")
        if self.eval_pattern and ("{SPAN}" in self.eval_pattern) != ("{SPAN}" in self.input_pattern):
            fail("eval_pattern", "use '{SPAN}' in both input_pattern and eval_pattern, or in neither")
        if self.eval_pattern == self.input_pattern:
            fail("eval_pattern", "give the eval files a pattern of their own, or '' to split input_pattern by hash")
        if self.val_pattern:
            if not self.eval_pattern:
                fail("val_pattern", "give eval_pattern too (train, val and eval files by pattern), or '' for none")
            if self.val_pattern in (self.input_pattern, self.eval_pattern):
                fail("val_pattern", "give the held-out files a pattern of their own")
            if ("{SPAN}" in self.val_pattern) != ("{SPAN}" in self.input_pattern):
                fail("val_pattern", "use '{SPAN}' in both input_pattern and val_pattern, or in neither")
        if self.distribution not in DISTRIBUTIONS:
            fail("distribution", f"use one of {', '.join(DISTRIBUTIONS)}")
        if self.model_type not in PIPELINE_MODEL_TYPES:
            fail("model_type", f"use one of {', '.join(PIPELINE_MODEL_TYPES)}")
        if self.distribution not in self.family.strategies:
            fail("distribution", f"{self.model_type} trains under {', '.join(self.family.strategies)}")
        if "model_type" in self.model_overrides:
            fail("model_overrides", "set model_type through the model_type field, not the overrides")
        try:
            self.model_config()
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"pipeline config: model_overrides: {e}") from e
        if self.family.needs_held_out(self.model_config()) and not self.val_pattern:
            fail(
                "val_pattern",
                f"{self.model_type} trains its fusion weights on held-out data: give the files of a held-out part "
                "of the training data (e.g. val/part-*.tfrecord.gz), or set model_overrides fusion: code",
            )
        for name in ("eval_steps", "epochs", "batch_size", "num_buckets"):
            value = getattr(self, name)
            least = 0 if name == "num_buckets" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                fail(name, "use a positive integer" + (", or 0 for features.yaml's boundaries" if least == 0 else ""))
        steps = self.train_steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            fail("train_steps", "use 0 (epochs over the train split) or a positive number of steps")
        if 0 < self.train_steps < self.epochs:
            fail("train_steps", f"use at least epochs={self.epochs} steps, or 0 to train by epochs")
        if self.evaluator not in EVALUATORS:
            fail("evaluator", f"use one of {', '.join(EVALUATORS)}")
        if not self.learning_rate > 0:
            fail("learning_rate", "use a positive rate, e.g. 1e-3")
        if not 0.0 <= self.eval_auc_floor <= 1.0:
            fail("eval_auc_floor", "use an AUC in [0, 1]")
        if not 0.0 <= self.eval_auc_change <= 1.0:
            fail("eval_auc_change", "use an allowed AUC drop in [0, 1]")
        if not isinstance(self.schema_path, str):
            fail("schema_path", "give the path of a schema.pbtxt, or '' to infer the schema")
        if len(self.train_eval_split) != 2 or min(self.train_eval_split) < 1:
            fail("train_eval_split", "give two positive hash-bucket counts, e.g. (4, 1)")
        if not isinstance(self.top_tags_vocabulary, str):
            fail("top_tags_vocabulary", "give the path of a tag file or of a raw data directory, or '' for none")
        if self.top_tags_vocabulary and not self.family.has_tag_tower:
            fail("top_tags_vocabulary", f"{self.model_type} has no tag tower: use a two-tower model, or '' for none")
        max_k = self.top_tags_max_k
        if not isinstance(max_k, int) or isinstance(max_k, bool) or max_k < 1:
            fail("top_tags_max_k", f"use a positive integer (default {DEFAULT_TOP_TAGS_MAX_K})")

    @property
    def uses_spans(self) -> bool:
        """Whether ``input_pattern`` has a ``{SPAN}`` placeholder (ExampleGen reads the latest span)."""
        return "{SPAN}" in self.input_pattern

    @property
    def validation_split(self) -> str:
        """The split the Trainer validates on (and M3oE's upper level reads): ``val`` or ``eval``."""
        return "val" if self.val_pattern else "eval"

    @property
    def family(self) -> ModelFamily:
        """The model's family (:mod:`mvke_tf.models.family`): its fields, builder and signatures."""
        return family_of(self.model_type)

    @property
    def top_tags_path(self) -> str:
        """``top_tags_vocabulary`` as the Trainer reads it (under ``data_root`` unless absolute or a URI)."""
        path = self.top_tags_vocabulary
        if not path or os.path.isabs(path) or "://" in path:
            return path
        return os.path.join(self.data_root, path)

    def feature_config(self) -> FeatureConfig:
        """The raw feature config: ``features_yaml``, or the synthetic generator's default."""
        if self.features_yaml:
            return FeatureConfig.from_yaml(self.features_yaml)
        from mvke_tf.data import synthetic

        return synthetic.feature_config()

    def model_config(self) -> Any:
        """The model's config: ``model_type`` plus ``model_overrides``; its tasks are the feature config's
        labels unless the overrides name them."""
        return config_for_data(self.model_type, self.feature_config(), self.model_overrides)

    def resolved_slice_keys(self) -> tuple[str, ...]:
        """``slice_keys``, or where it is None the feature config's default (:func:`default_slice_keys`)."""
        return self.slice_keys if self.slice_keys is not None else default_slice_keys(self.feature_config())

    def custom_config(self) -> dict[str, Any]:
        """JSON-serializable settings shared by the Transform and Trainer module files."""
        return {
            "features_yaml": self.features_yaml,
            "num_buckets": self.num_buckets,
            "model_config": self.model_config().to_dict(),
            "model_family": self.family.name,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "distribution": self.distribution,
            "validation_split": self.validation_split,
            "top_tags_vocabulary": self.top_tags_path,
            "top_tags_max_k": self.top_tags_max_k,
            "slice_keys": list(self.resolved_slice_keys()),
        }
