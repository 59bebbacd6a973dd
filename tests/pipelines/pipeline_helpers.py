"""Shared settings of the pipeline tests: a tiny model and a PipelineConfig under a temp dir."""

from pathlib import Path

TINY = dict(embedding_dim=8, dnn_units=(16,), top_units=(16, 8), tag_units=(16, 8))


def pipeline_config(tmp: Path, name: str = "mvke-test", **kw):
    """A PipelineConfig rooted in ``tmp`` with the tiny MVKE-mt model; ``kw`` overrides fields."""
    from mvke_tf.pipelines.config import PipelineConfig

    base = dict(
        pipeline_name=name,
        pipeline_root=str(tmp / "root"),
        data_root=str(tmp / "data"),
        serving_dir=str(tmp / "serving"),
        metadata_path=str(tmp / "metadata.db"),
        model_type="mvke_mt",
        model_overrides=TINY,
        slice_keys=("gender", "age_bucket", "tag_l1"),  # the synthetic data's, as pipelines/configs/ name them
    )
    return PipelineConfig(**{**base, **kw})
