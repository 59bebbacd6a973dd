"""Export: SavedModels with pair-scoring, user-tower and tag-tower signatures."""

from mvke_tf.export.saved_model import export_saved_model, feature_specs

__all__ = ["export_saved_model", "feature_specs"]
