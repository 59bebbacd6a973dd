"""Export: SavedModels with each model family's signatures and TF Serving warm-up (see ``docs/serving.md``)."""

from mvke_tf.export.describe import describe_signatures, non_standard_ops, saved_model_ops
from mvke_tf.export.examples import examples_from_rows
from mvke_tf.export.saved_model import SIGNATURES, RawInputs, export_saved_model, serving_functions
from mvke_tf.export.top_tags import TOP_TAGS
from mvke_tf.export.warmup import WARMUP_PATH, write_warmup_requests

__all__ = [
    "SIGNATURES",
    "TOP_TAGS",
    "WARMUP_PATH",
    "RawInputs",
    "describe_signatures",
    "examples_from_rows",
    "export_saved_model",
    "non_standard_ops",
    "saved_model_ops",
    "serving_functions",
    "write_warmup_requests",
]
