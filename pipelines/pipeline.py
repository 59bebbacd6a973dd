"""The TFX pipeline: definition, local run (LocalDagRunner) and Kubeflow V2 compilation.

::

  Csv/ImportExampleGen -> StatisticsGen -> SchemaGen (or ImportSchemaGen) -> ExampleValidator -> AnomaliesGate
        |                       |    +-> SplitRows (rows per split) --+                       | (raises on anomalies)
        |                       |                                     v                        v
        +------------------------------> Transform (analysis only) -> Trainer (run_fn: epochs over the raw train split)
        |                                                                |
        +--> Evaluator (batched, TFMA config and output, vs the latest blessed model) <--+
                  |                                                                     |
                Pusher <-- CppInfraValidator (every signature in the C++ runtime) <-----+
                  |
                <serving_dir>/<version>/
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from mvke_tf.pipelines.config import PipelineConfig
from mvke_tf.pipelines.evaluator import BatchedEvaluator
from mvke_tf.pipelines.example_gen import ImportExampleGen
from mvke_tf.pipelines.gates import AnomaliesGate
from mvke_tf.pipelines.infra_validation import CppInfraValidator
from mvke_tf.pipelines.split_rows import SplitRows
from tfx import v1 as tfx
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.example_gen.custom_executors import parquet_executor
from tfx.dsl.components.base import executor_spec

PREPROCESSING_FN = "mvke_tf.pipelines.preprocessing.preprocessing_fn"
RUN_FN = "mvke_tf.pipelines.trainer.run_fn"
GAUC_MODULE = "mvke_tf.pipelines.gauc"
# A multi-domain model's blessing metric (mvke_tf.pipelines.gauc.MeanGroupAUC).
MEAN_DOMAIN_TASK_AUC = "mean_domain_task_auc"


def blessing_metric(config: PipelineConfig) -> str:
    """What the Evaluator blesses on: the first task's AUC, or for a model that scores each domain apart
    (a multi-domain model) the mean AUC over (domain, task) pairs, so that no domain is left behind by
    a model that does well on the largest one."""
    model_config = config.model_config()
    if config.family.domain_feature(model_config):
        return MEAN_DOMAIN_TASK_AUC
    return f"{model_config.tasks[0]} AUC"


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """TFMA config: per-output AUC, AUC-PR, GAUC, calibration, example count; the blessing gate of
    :func:`blessing_metric`; for a multi-domain model also a slice per domain."""
    model_config = config.model_config()
    tasks = model_config.tasks
    domain = config.family.domain_feature(model_config)
    # The blessing gate applies to the overall slice only (small slices are noisy).
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.eval_auc_floor}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -config.eval_auc_change}
        ),
    )
    gate = [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]
    user_id = config.feature_config().user_id
    gauc = {"name": "gauc", "group_key": user_id}  # AUC per user of the data's user id (none: no GAUC)

    def metrics(gated: bool) -> list[tfma.MetricConfig]:
        gate_here = gate if gated else []
        return [
            tfma.MetricConfig(class_name="ExampleCount"),
            tfma.MetricConfig(class_name="AUC", per_slice_thresholds=gate_here),
            tfma.MetricConfig(class_name="AUC", config='{"curve": "PR", "name": "auc_pr"}'),
            tfma.MetricConfig(class_name="Calibration"),
            tfma.MetricConfig(class_name="MeanLabel"),
            tfma.MetricConfig(class_name="MeanPrediction"),
        ] + (
            # AUC per user, weighted by impressions (pipelines/gauc.py; reads the raw user id feature).
            [tfma.MetricConfig(class_name="GAUC", module=GAUC_MODULE, config=json.dumps(gauc))] if user_id else []
        )

    specs = [tfma.MetricsSpec(metrics=metrics(gated=not domain and t == tasks[0]), output_names=[t]) for t in tasks]
    slice_keys = config.resolved_slice_keys()
    if domain:
        slice_keys = (domain, *(k for k in slice_keys if k != domain))
        mean_auc = tfma.MetricConfig(
            class_name="MeanGroupAUC",
            module=GAUC_MODULE,
            config=json.dumps({"name": MEAN_DOMAIN_TASK_AUC, "group_key": domain, "outputs": list(tasks)}),
            per_slice_thresholds=gate,
        )
        specs.append(tfma.MetricsSpec(metrics=[mean_auc]))  # no output names: it spans every task
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                label_keys={t: t for t in tasks},
                prediction_keys={t: t for t in tasks},
            )
        ],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[k]) for k in slice_keys],
        metrics_specs=specs,
    )


def _example_gen(config: PipelineConfig) -> tfx.types.BaseComponent:
    """CsvExampleGen or ImportExampleGen, with a hash split or a split by input pattern (train day / eval day).

    TFRecord input split by pattern is copied file by file (``pipelines/example_gen.py``), not re-parsed.
    """
    if config.eval_pattern:
        # The paper's protocol: train on day D, evaluate on day D+1 -- the files say which is which.
        splits = [
            tfx.proto.Input.Split(name="train", pattern=config.input_pattern),
            tfx.proto.Input.Split(name="eval", pattern=config.eval_pattern),
        ]
        if config.val_pattern:  # held out of the training data, for the Trainer
            splits.append(tfx.proto.Input.Split(name="val", pattern=config.val_pattern))
        input_config = tfx.proto.Input(splits=splits)
        output_config = None
    else:
        # A '{SPAN}' in the pattern makes ExampleGen read the latest span only (e.g. 'span-{SPAN}/*.csv').
        single = tfx.proto.Input.Split(name="single_split", pattern=config.input_pattern)
        input_config = tfx.proto.Input(splits=[single])
        train_buckets, eval_buckets = config.train_eval_split
        output_config = tfx.proto.Output(
            split_config=tfx.proto.SplitConfig(
                splits=[
                    tfx.proto.SplitConfig.Split(name="train", hash_buckets=train_buckets),
                    tfx.proto.SplitConfig.Split(name="eval", hash_buckets=eval_buckets),
                ]
            )
        )
    if config.input_format == "parquet":
        return FileBasedExampleGen(
            input_base=config.data_root,
            input_config=input_config,
            output_config=output_config,
            custom_executor_spec=executor_spec.BeamExecutorSpec(parquet_executor.Executor),
        )
    component = tfx.components.CsvExampleGen if config.input_format == "csv" else ImportExampleGen
    return component(input_base=config.data_root, input_config=input_config, output_config=output_config)


def _statistics_options() -> tfdv.StatsOptions:
    """TFDV options: top-k / unique values from a sketch (one pass, bounded memory) instead of one Beam
    element per (feature, value); every other statistic, and so every anomaly, is computed on every row."""
    return tfdv.StatsOptions(use_sketch_based_topk_uniques=True)


def _evaluator(config: PipelineConfig, examples, model, baseline, schema) -> tfx.types.BaseComponent:
    """The batched Evaluator (``pipelines/evaluator.py``) or TFX's stock TFMA one (``evaluator: tfma``)."""
    component = BatchedEvaluator if config.evaluator == "batched" else tfx.components.Evaluator
    return component(
        examples=examples, model=model, baseline_model=baseline, schema=schema, eval_config=eval_config(config)
    ).with_id("Evaluator")


def create_pipeline(config: PipelineConfig, metadata_connection_config: object | None = None) -> tfx.dsl.Pipeline:
    """The pipeline's components wired together (no orchestrator specifics).

    The module files are named by import path (``mvke_tf.pipelines.preprocessing.preprocessing_fn``,
    ``mvke_tf.pipelines.trainer.run_fn``), not packaged: building the pipeline reads and writes no file, and
    the image that runs the components already holds this package.
    """
    example_gen = _example_gen(config)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], stats_options=_statistics_options()
    )
    if config.schema_path:  # a curated schema: each run's data is validated against it
        schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
    else:
        schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    # Anomalies stop the run before Transform, so bad data never trains nor pushes a model.
    anomalies_gate = None
    if config.block_on_anomalies:
        anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    custom_config = config.custom_config()
    # Transform only analyses (quantiles of the train split) and exports its graph: the Trainer applies
    # the graph to the raw examples as it reads them, the exported model does the same for requests, and
    # nothing re-validates the transformed data (disable_statistics), so no transformed copy is written.
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config=custom_config,
        materialize=False,
        disable_statistics=True,
        disable_analyzer_cache=True,
    )
    if anomalies_gate is not None:
        transform.add_upstream_node(anomalies_gate)
    split_rows = SplitRows(statistics=statistics_gen.outputs["statistics"])
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    # Incremental training: the Trainer warm-starts from the latest blessed model (trainer.py checks
    # that its architecture matches); the same model is the Evaluator's baseline.
    warm_start = {"base_model": model_resolver.outputs["model"]} if config.warm_start else {}
    # Epochs over the train split (its size from the statistics), unless train_steps overrides them.
    train_args = tfx.proto.TrainArgs(num_steps=config.train_steps) if config.train_steps else tfx.proto.TrainArgs()
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        hyperparameters=split_rows.outputs["split_rows"],
        train_args=train_args,
        eval_args=tfx.proto.EvalArgs(num_steps=config.eval_steps, splits=[config.validation_split]),
        custom_config=custom_config,
        **warm_start,
    )
    evaluator = _evaluator(
        config,
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline=model_resolver.outputs["model"],
        schema=schema_gen.outputs["schema"],
    )
    # Only a model the C++ runtime (TF Serving's loader) loads and answers is pushed.
    infra_validator = CppInfraValidator(model=trainer.outputs["model"]) if config.infra_validation else None
    infra = {"infra_blessing": infra_validator.outputs["blessing"]} if infra_validator is not None else {}
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        **infra,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_dir)
        ),
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            *([anomalies_gate] if anomalies_gate is not None else []),
            transform,
            split_rows,
            trainer,
            model_resolver,
            evaluator,
            *([infra_validator] if infra_validator is not None else []),
            pusher,
        ],
        enable_cache=False,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )


def run_local(config: PipelineConfig) -> None:
    """Runs the pipeline in-process with ``LocalDagRunner`` and SQLite ML Metadata."""
    if not config.metadata_path:
        raise ValueError("pipeline config: metadata_path is empty; fix: give a SQLite file path for local runs")
    Path(config.metadata_path).parent.mkdir(parents=True, exist_ok=True)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config, metadata))


def compile_kubeflow(config: PipelineConfig, output_json: str | Path, image: str = "tensorflow/tfx:1.16.0") -> Path:
    """Compiles the pipeline to a Kubeflow Pipelines v2 JSON spec; returns its path.

    Compiling reads and writes nothing but ``output_json``: the components name their functions by
    import path, so the pipeline root (e.g. ``gs://``) is only recorded, and ``image`` must hold this
    package and the ``mvke_tf`` library (``pipelines/Dockerfile`` builds one).
    """
    output_json = Path(output_json)
    output_json.parent.mkdir(parents=True, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=str(output_json.parent),
        output_filename=output_json.name,
    )
    runner.run(create_pipeline(config))
    return output_json
