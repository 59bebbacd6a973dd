"""Interpretability: which VKEs a tag routes to (the MVKE paper's Figure 8)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import tensorflow as tf


def vkg_weights_table(model: tf.keras.Model, tags: Sequence[str]) -> pd.DataFrame:
    """The VKG gate weights per tag and task, one row per (tag, task, VKE).

    Columns: ``tag``, ``task``, ``vke`` (the 0-based VKE index in the model's pool,
    e.g. 1 and 2 are the VKEs click and conversion share by default), ``weight``.
    Pivot it for a heatmap: ``table.pivot_table(index="tag", columns=["task", "vke"], values="weight")``.
    Non-MVKE models have no tag-dependent gate: a ValueError says so.
    """
    if not getattr(model, "is_mvke", False):
        raise ValueError(f"model '{model.model_config.model_type}' has no virtual-kernel gates; use mvke_st or mvke_mt")
    out = model.tag_tower_outputs(tf.constant(list(tags)))
    rows = []
    for task in model.tasks:
        pool, indices = model.user_tower.route[task]
        weights = out[task][1].numpy()
        for i, tag in enumerate(tags):
            for j, vke in enumerate(indices):
                rows.append({"tag": tag, "task": task, "pool": pool, "vke": int(vke), "weight": float(weights[i, j])})
    return pd.DataFrame(rows)
