"""``AnomaliesGate``: stops the pipeline run when the ExampleValidator found anomalies.

TFX has no "data blessing"; the gate runs right after the ExampleValidator and before
Transform (hence before the Trainer, the Evaluator and the Pusher), and raises when the
anomalies artifact is not empty, so bad data never trains or pushes a model.
"""

from mvke_tf.pipelines.report import read_anomalies
from tfx import v1 as tfx
from tfx.dsl.component.experimental.annotations import InputArtifact


class DataAnomaliesError(RuntimeError):
    """The ExampleValidator reported anomalies; the run stops before training."""


@tfx.dsl.components.component
def AnomaliesGate(anomalies: InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies]) -> None:  # noqa: N802
    """Raises :class:`DataAnomaliesError` naming each anomalous field, if there is any."""
    found = read_anomalies(anomalies.uri)
    if found:
        lines = "\n".join(f"  {a.line()}" for a in found)
        raise DataAnomaliesError(
            f"data validation failed ({len(found)} anomalies in {anomalies.uri}); nothing is trained or pushed:\n"
            f"{lines}\nfix: repair the data, or update the schema (PipelineConfig.schema_path) if the change is wanted"
        )
