"""A trained model on disk, for any family: weights plus what rebuilds the model around them.

``mvke-tf train --model-dir DIR`` writes, and ``mvke-tf export --model-dir DIR`` reads:

* ``features.yaml``: the raw feature config of the training data;
* ``model_config.json``: ``{"family": ..., "config": {...}, "fields": [...]}`` (the model's exact
  input fields, e.g. a ranker's with or without the item id);
* ``weights.*``: a TF checkpoint of the model's weights (no optimizer state).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tensorflow as tf

from mvke_tf.config import ConfigError, FeatureConfig, FieldSpec
from mvke_tf.models.family import family_of

FEATURES_FILE = "features.yaml"
MODEL_CONFIG_FILE = "model_config.json"
WEIGHTS_PREFIX = "weights"
REQUIRED_FILES = (FEATURES_FILE, MODEL_CONFIG_FILE, f"{WEIGHTS_PREFIX}.index")


def save_model_dir(model: tf.keras.Model, out_dir: str | Path, feature_config: FeatureConfig) -> Path:
    """Writes ``model``'s weights, its config and fields, and ``feature_config`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(out / WEIGHTS_PREFIX))
    feature_config.to_yaml(out / FEATURES_FILE)
    saved = {
        "family": family_of(model).name,
        "config": model.config.to_dict(),
        "fields": [f.to_dict() for f in model.fields],
    }
    (out / MODEL_CONFIG_FILE).write_text(json.dumps(saved, indent=2))
    return out


def read_model_dir(model_dir: str | Path) -> tuple[Any, Any, tuple[FieldSpec, ...], FeatureConfig]:
    """``(family, config, fields, feature_config)`` of a model directory, without building the model.

    Raises:
      ConfigError: naming the missing files and how to make them.
    """
    model_dir = Path(model_dir)
    missing = [n for n in REQUIRED_FILES if not (model_dir / n).exists()]
    if missing:
        raise ConfigError(
            f"model dir {model_dir}: missing {', '.join(missing)}; "
            "fix: train with `mvke-tf train --data DIR --model-dir DIR` first"
        )
    saved = json.loads((model_dir / MODEL_CONFIG_FILE).read_text())
    feature_config = FeatureConfig.from_yaml(model_dir / FEATURES_FILE)
    family = family_of(saved["family"])
    config = family.config_from_dict(saved["config"])
    fields = tuple(FieldSpec.from_dict(f) for f in saved["fields"])
    return family, config, fields, feature_config


def load_model_dir(model_dir: str | Path) -> tuple[tf.keras.Model, FeatureConfig]:
    """Rebuilds the model saved by :func:`save_model_dir` and restores its weights."""
    family, config, fields, feature_config = read_model_dir(model_dir)
    model = family.build(feature_config, config, fields)
    model.load_weights(str(Path(model_dir) / WEIGHTS_PREFIX)).expect_partial()
    return model, feature_config
