"""Serialized ``tf.Example`` requests for the exported signatures, built from plain Python rows.

Every signature that takes ``examples`` (``serving_default``, ``user_tower``; the pipeline export's
``transform_features``) parses the same raw layout, one feature per field of the
:class:`~mvke_tf.config.FeatureConfig`:

* categorical: ``bytes_list`` with one string;
* numeric: ``float_list`` with one float;
* multi_valued: ``bytes_list`` with the list of strings (a ``separator``-joined string is split);

a missing value (``None``, ``""``, NaN, an empty list) is left out and the model sees it as missing.
Other columns (labels, ``user_id`` ...) are written with a type inferred from their values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, FeatureConfig, FieldSpec


def _text(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, np.bytes_):
        return bytes(v)
    return str(v).encode()


def _missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (str, bytes)):
        return len(v) == 0
    if isinstance(v, (float, np.floating)):
        return math.isnan(v)
    return False


def _encode(values: list, dtype: tf.DType) -> tf.train.Feature | None:
    if not values:
        return None
    if dtype == tf.int64:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in values]))
    if dtype == tf.float32:
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in values]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[_text(x) for x in values]))


def _field_feature(spec: FieldSpec, v: Any, dtype: tf.DType | None) -> tf.train.Feature | None:
    if spec.kind == MULTI_VALUED:
        if v is None:
            return None
        if isinstance(v, (str, bytes, np.str_, np.bytes_)):
            values = [p for p in _text(v).split(spec.separator.encode()) if p]
        else:
            values = [x for x in np.asarray(v, dtype=object).ravel().tolist() if not _missing(x)]
        return _encode(values, dtype or tf.string)
    if _missing(v):
        return None
    assert spec.kind in (NUMERIC, CATEGORICAL), spec.kind
    return _encode([v], dtype or (tf.float32 if spec.kind == NUMERIC else tf.string))


def _other_feature(v: Any) -> tf.train.Feature | None:
    """A column outside the config: int -> ``int64_list``, float -> ``float_list``, else ``bytes_list``."""
    values = v if isinstance(v, (list, tuple, np.ndarray)) else [v]
    values = [x for x in values if not _missing(x)]
    if not values:
        return None
    if all(isinstance(x, (bool, int, np.integer, np.bool_)) for x in values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in values]))
    if all(isinstance(x, (float, int, np.floating, np.integer)) for x in values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in values]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[_text(x) for x in values]))


def examples_from_rows(
    rows: Mapping[str, Sequence],
    feature_config: FeatureConfig | None,
    dtypes: Mapping[str, tf.DType] | None = None,
) -> list[bytes]:
    """Columns of rows -> one serialized ``tf.Example`` per row.

    Args:
      rows: column name -> one value per row (lists, tuples, numpy arrays or pandas columns);
        a multi_valued field holds a list of strings per row (or a ``separator``-joined string).
        Any subset of the config's fields may be given: ``user_tower`` needs the user fields only,
        ``serving_default`` the user fields and the tag field; left-out fields count as missing.
      feature_config: the raw feature config the SavedModel was exported with.
      dtypes: optional column -> ``tf.string`` / ``tf.int64`` / ``tf.float32`` overrides, e.g. from a
        pipeline's raw feature spec where a categorical column of numbers is ``int64``.

    Returns:
      ``list[bytes]``, ready for the ``examples`` input of ``serving_default`` / ``user_tower``.

    Example::

        examples_from_rows({"gender": ["f", "m"], "tags": [["t1_2_3"], ["t0_0_0"]]}, fc)
    """
    columns = {name: list(values) for name, values in rows.items()}
    lengths = {name: len(v) for name, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"examples_from_rows: columns have different lengths {lengths}; give one value per row")
    n = next(iter(lengths.values()), 0)
    fields = {f.name: f for f in (*feature_config.user_fields, feature_config.tag_field)} if feature_config else {}
    out = []
    for i in range(n):
        feats = {}
        for name, values in columns.items():
            spec = fields.get(name)
            dtype = (dtypes or {}).get(name)
            if spec is not None:
                feature = _field_feature(spec, values[i], dtype)
            elif dtype is not None:
                feature = _encode([x for x in np.asarray(values[i], dtype=object).ravel() if not _missing(x)], dtype)
            else:
                feature = _other_feature(values[i])
            if feature is not None:
                feats[name] = feature
        out.append(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    return out


def dummy_rows(
    feature_config: FeatureConfig, n: int = 2, user_only: bool = False, dtypes: Mapping[str, tf.DType] | None = None
) -> dict[str, list]:
    """``n`` made-up rows with every field set (for warm-up requests and smoke tests).

    ``dtypes`` as in :func:`examples_from_rows`: a field typed ``int64`` there gets integer values.
    """
    fields = feature_config.user_fields if user_only else (*feature_config.user_fields, feature_config.tag_field)
    rows: dict[str, list] = {}
    for f in fields:
        integer = (dtypes or {}).get(f.name) == tf.int64
        if f.kind == NUMERIC:
            rows[f.name] = [f.boundaries[i % len(f.boundaries)] for i in range(n)]
        elif f.kind == MULTI_VALUED:
            k = min(2, f.max_values)
            rows[f.name] = [[i * k + j if integer else f"{f.name}_{i}_{j}" for j in range(k)] for i in range(n)]
        else:
            rows[f.name] = [i if integer else f"{f.name}_{i}" for i in range(n)]
    return rows
