"""Export: SavedModels with pair-scoring, user-tower and tag-tower signatures (see ``docs/serving.md``)."""

from mvke_tf.export.describe import describe_signatures, non_standard_ops, saved_model_ops
from mvke_tf.export.examples import examples_from_rows
from mvke_tf.export.saved_model import SIGNATURES, export_saved_model, feature_specs, write_warmup
from mvke_tf.export.warmup import WARMUP_PATH, write_warmup_requests

__all__ = [
    "SIGNATURES",
    "WARMUP_PATH",
    "describe_signatures",
    "examples_from_rows",
    "export_saved_model",
    "feature_specs",
    "non_standard_ops",
    "saved_model_ops",
    "write_warmup",
    "write_warmup_requests",
]
