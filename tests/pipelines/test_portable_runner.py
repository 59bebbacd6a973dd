"""The main job's Beam components on Beam's portable runner with two worker processes, against the DirectRunner.

The pipeline runs with ``beam_pipeline_args`` for a :class:`~mvke_tf.pipelines.portable.PortableCluster` (a job
service and an external pool that starts two SDK worker processes per job): StatisticsGen, Transform
and the batched Evaluator run there, their outputs feed the Trainer, the blessing and the push. As
each of them finishes, the same executor runs again on the same inputs with the DirectRunner in
memory, into outputs of its own (and the stock TFMA Evaluator, ``evaluator: tfma``, on both runners);
the test then compares what each pair wrote. ``tag-users --runner beam`` runs on both runners with
the pushed model.

Equal means: statistics proto for proto (floating-point fields to 1e-9 relative: the workers' partial
sums are added in another order), the transform graph's output on a sample of raw examples exactly,
every metric of every slice within the tolerances below, the same blessing, the same tagging rows.

Why metrics are not compared to 1e-9: the model's outputs depend in their last bits on which other
examples share a batch (the CPU matmul blocks by batch size), and workers batch differently. Measured
on this model (one batch of 1,500 eval rows against the same rows cut into 21 random batches, 5 trials):
3-15 of 1,500 predictions per task differed, by at most 1.3e-7 relative (two float32 ulps;
tests/models/test_batch_invariance.py keeps that bound). So:

* sums and ratios of predictions (calibration, mean prediction, loss) and counts: 1e-6 relative (a
  weighted mean of terms that each moved by <= 1.3e-7 relative moves by no more; one example lost or
  counted twice moves a count by >= 1 and a mean by ~1/n, orders of magnitude more);
* rank metrics (every name with ``auc``): 0.01 absolute. A prediction that moved by 1e-8 can pass a
  near-tied one of the other label (or, in TFMA, a threshold of its 1e4 buckets) and move a slice's AUC
  by 1/(positives * negatives). That happens in a few runs in a thousand and exceeds 0.01 only in a
  slice with under 100 positive-negative pairs; a wiring error (rows or labels mixed up, a shard lost)
  moves AUC by far more.
"""

import copy
import glob
import math
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from pipeline_helpers import pipeline_config

from mvke_tf.data import synthetic

# 3,000 rows, 300 users: the data of the end-to-end test; two days, the second the eval split.
DATA = synthetic.SyntheticConfig(num_rows=3000, num_users=300, num_ads=200, taxonomy=(4, 3, 5), seed=1)
DIRECT = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
REPLAYED = ("StatisticsGen", "Transform", "Evaluator")


def _replay_on(runs: dict, root: Path, cluster_args: list[str]):
    """A wrapper of TFX's Beam executor operator: after a component ran, its executor runs again on the
    same inputs with other Beam options into other output URIs; ``runs[(node, label)]`` = its outputs."""
    from tfx.components.evaluator import executor as tfma_executor
    from tfx.dsl.components.base import base_beam_executor
    from tfx.orchestration.portable import beam_executor_operator, python_executor_operator

    original = beam_executor_operator.BeamExecutorOperator.run_executor

    def run_executor(self, execution_info, make_beam_pipeline_fn=None):
        result = original(self, execution_info, make_beam_pipeline_fn)
        node = execution_info.pipeline_node.node_info.id
        if node not in REPLAYED:
            return result
        runs[(node, "pipeline")] = execution_info.output_dict
        variants = [("direct", self._executor_cls, DIRECT)]
        if node == "Evaluator":
            variants += [("tfma-direct", tfma_executor.Executor, DIRECT)]
            variants += [("tfma-portable", tfma_executor.Executor, cluster_args)]
        for label, executor_cls, args in variants:
            base = root / label / node
            outputs = copy.deepcopy(execution_info.output_dict)
            for key, artifacts in outputs.items():
                for i, artifact in enumerate(artifacts):
                    artifact.uri = str(base / key / str(i))
                    os.makedirs(artifact.uri, exist_ok=True)
            context = base_beam_executor.BaseBeamExecutor.Context(
                beam_pipeline_args=list(args),
                tmp_dir=str(base / "tmp") + "/",
                unique_id=f"{execution_info.execution_id}-{label}",
                stateful_working_dir=str(base / "stateful"),
                pipeline_node=execution_info.pipeline_node,
                pipeline_info=execution_info.pipeline_info,
                pipeline_run_id=execution_info.pipeline_run_id,
            )
            info = copy.copy(execution_info)
            info.output_dict = outputs
            python_executor_operator.run_with_executor(info, executor_cls(context=context))
            runs[(node, label)] = outputs
        return result

    return beam_executor_operator.BeamExecutorOperator, run_executor


def _uri(outputs: dict, key: str) -> str:
    return outputs[key][0].uri


def _exact_sums(path: str) -> dict:
    """Tolerance of a float computed from the data alone (statistics): partial sums in another order."""
    return dict(rel=1e-9, abs=1e-12)


def _model_metric(path: str) -> dict:
    """Tolerance of a metric of the model's predictions (see the module docstring for the figures)."""
    return dict(abs=0.01) if "auc" in path.rsplit(".", 1)[-1] else dict(rel=1e-6, abs=1e-12)


def _assert_close(a, b, path: str = "", tolerance=_exact_sums) -> None:
    """Nested dicts, lists and tuples of numbers and strings equal; floats within ``tolerance(path)``,
    NaN to NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), (path, sorted(a), b)
        for k in a:
            _assert_close(a[k], b[k], f"{path}.{k}", tolerance)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, type(a)) and len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]", tolerance)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), (path, a, b)
    elif isinstance(a, float):
        assert b == pytest.approx(a, **tolerance(path)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def _statistics(outputs: dict) -> dict:
    from google.protobuf.json_format import MessageToDict
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = {}
    for path in sorted(glob.glob(os.path.join(_uri(outputs, "statistics"), "Split-*", "FeatureStats.pb"))):
        proto = statistics_pb2.DatasetFeatureStatisticsList.FromString(Path(path).read_bytes())
        stats[Path(path).parent.name] = MessageToDict(proto)
    assert stats, outputs
    return stats


def _transformed(outputs: dict, records: list[bytes]) -> dict:
    import tensorflow_transform as tft

    tft_output = tft.TFTransformOutput(_uri(outputs, "transform_graph"))
    raw = tf.io.parse_example(tf.constant(records), tft_output.raw_feature_spec())
    return {k: tf.convert_to_tensor(v).numpy() for k, v in tft_output.transform_raw_features(raw).items()}


def _evaluation(outputs: dict) -> tuple[dict, list[str]]:
    from mvke_tf.pipelines.evaluation import slice_metrics

    metrics = {row.slice: row.metrics for row in slice_metrics(_uri(outputs, "evaluation"))}
    return metrics, sorted(os.listdir(_uri(outputs, "blessing")))


def _eval_records(data: Path, n: int) -> list[bytes]:
    files = sorted(glob.glob(str(data / "eval" / "*.tfrecord.gz")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(n)]


@pytest.mark.pipeline
@pytest.mark.slow  # a pipeline run and five component runs besides (~6 min on 2 cores): make test-slow
def test_beam_components_on_the_portable_runner_equal_the_direct_runner(tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    from mvke_tf.pipelines.pipeline import run_local
    from mvke_tf.pipelines.portable import PortableCluster
    from mvke_tf.pipelines.report import run_report
    from mvke_tf.pipelines.schema import CHECKED_IN
    from tfx.orchestration.portable.beam_executor_operator import BeamExecutorOperator

    from mvke_tf.cli import main as cli_main

    data = tmp_path / "data"
    synthetic.generate(DATA, data, formats=("tfrecord",))
    runs: dict = {}
    with PortableCluster(workers=2) as cluster:
        args = cluster.beam_pipeline_args
        assert "--direct_num_workers=2" in args
        cls, run_executor = _replay_on(runs, tmp_path / "replay", args)
        monkeypatch.setattr(cls, "run_executor", run_executor)
        config = pipeline_config(
            tmp_path,
            features_yaml=str(data / "features.yaml"),
            input_format="tfrecord",
            input_pattern="train/part-*.tfrecord.gz",
            eval_pattern="eval/part-*.tfrecord.gz",
            schema_path=str(CHECKED_IN),
            epochs=1,
            eval_steps=5,
            batch_size=128,
            eval_auc_floor=0.2,
            beam_pipeline_args=tuple(args),
        )
        run_local(config)
        monkeypatch.setattr(BeamExecutorOperator, "run_executor", BeamExecutorOperator.run_executor)
        assert sorted(runs) == sorted(
            [(n, "pipeline") for n in REPLAYED]
            + [(n, "direct") for n in REPLAYED]
            + [("Evaluator", "tfma-direct"), ("Evaluator", "tfma-portable")]
        ), sorted(runs)

        report = run_report(config.metadata_path, config.pipeline_name)
        assert report.ok and report.blessed is True, report
        versions = [p for p in Path(config.serving_dir).iterdir() if p.name.isdigit()]
        assert len(versions) == 1, versions

        # Statistics of both splits.
        portable = _statistics(runs[("StatisticsGen", "pipeline")])
        direct = _statistics(runs[("StatisticsGen", "direct")])
        assert sorted(portable) == ["Split-eval", "Split-train"]
        _assert_close(portable, direct)

        # The transform graph's output on eval examples.
        records = _eval_records(data, 256)
        got = _transformed(runs[("Transform", "pipeline")], records)
        want = _transformed(runs[("Transform", "direct")], records)
        assert sorted(got) == sorted(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)

        # Every metric of every slice and the blessing: the batched Evaluator, and the stock TFMA one.
        batched = _evaluation(runs[("Evaluator", "pipeline")])
        batched_direct = _evaluation(runs[("Evaluator", "direct")])
        assert batched[1] == ["BLESSED"] and len(batched[0]) > 5, batched
        _assert_close(batched, batched_direct, tolerance=_model_metric)
        assert {"auc", "gauc", "example_count"} <= set(batched[0]["overall"]["click"])
        tfma_portable = _evaluation(runs[("Evaluator", "tfma-portable")])
        _assert_close(tfma_portable, _evaluation(runs[("Evaluator", "tfma-direct")]), tolerance=_model_metric)
        assert sorted(tfma_portable[0]) == sorted(batched[0]) and tfma_portable[1] == ["BLESSED"]

        # tag-users --runner beam with the pushed model, on both runners.
        tagged = {}
        for label, beam_args in (("portable", args), ("direct", DIRECT)):
            out = tmp_path / f"tagged-{label}"
            argv = ["tag-users", "--model", config.serving_dir, "--users", str(data / "eval"), "--out", str(out)]
            argv += ["--tags-from-data", str(data / "train"), "--top-k", "3", "--runner", "beam"]
            assert cli_main([*argv, f"--beam-args={shlex.join(beam_args)}"]) == 0
            rows = pq.read_table(sorted(glob.glob(str(out / "part-*.parquet")))).to_pylist()
            tagged[label] = {(r["user_id"], r["task"], r["rank"]): (r["tag"], r["score"]) for r in rows}
        assert tagged["portable"] and tagged["portable"].keys() == tagged["direct"].keys()
        for key, (tag, score) in tagged["direct"].items():
            # Workers batch other users together: a score's last float bits may differ, so a tie may swap tags.
            assert tagged["portable"][key][1] == pytest.approx(score, abs=1e-6), key
            ties = [s for k, (_, s) in tagged["direct"].items() if k[:2] == key[:2] and abs(s - score) < 1e-6]
            assert tagged["portable"][key][0] == tag or len(ties) > 1, key


def test_portable_cluster_splits_a_job_between_two_worker_processes(tmp_path):
    """A small job on the cluster: two SDK worker processes, neither this one, share the elements.

    (Its functions are lambdas: a worker cannot import this test module, and lambdas are pickled by value.)"""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to
    from mvke_tf.pipelines.portable import PortableCluster

    with PortableCluster(workers=2) as cluster, beam.Pipeline(argv=cluster.beam_pipeline_args) as p:
        pairs = p | beam.Create(range(200)) | beam.Reshuffle() | beam.Map(lambda x: (os.getpid(), x))
        assert_that(pairs | "Values" >> beam.Map(lambda kv: kv[1]), equal_to(list(range(200))))
        counts = pairs | beam.Map(lambda kv: kv[0]) | beam.combiners.Count.PerElement()
        _ = counts | beam.Map(lambda kv: f"{kv[0]} {kv[1]}") | beam.io.WriteToText(str(tmp_path / "pids"))
    counts = dict(map(int, line.split()) for f in tmp_path.glob("pids*") for line in f.read_text().split("\n") if line)
    assert len(counts) == 2 and os.getpid() not in counts and sum(counts.values()) == 200, counts
    with pytest.raises(RuntimeError, match="not started"):
        _ = PortableCluster().beam_pipeline_args
    with pytest.raises(ValueError, match="workers"):
        PortableCluster(workers=0)


PROFILES = Path(__file__).parents[2] / "pipelines" / "configs" / "beam"


@pytest.mark.parametrize("profile", sorted(p.name for p in PROFILES.glob("*.yaml")))
def test_runner_profiles_layer_over_a_job_and_name_only_options_beam_knows(profile):
    from apache_beam.options.pipeline_options import PipelineOptions
    from mvke_tf.pipelines.__main__ import _parser, config_from_settings, settings_from_args

    from mvke_tf.config import load_yaml

    job, runner = PROFILES.parent / "synthetic.yaml", PROFILES / profile
    args = _parser().parse_args(["compile", "--config", str(job), "--config", str(runner), "--batch-size", "64"])
    config = config_from_settings(settings_from_args(args), for_run=False)
    want = load_yaml(runner, "--config")["beam_pipeline_args"]
    assert list(config.beam_pipeline_args) == want and config.batch_size == 64
    assert config.model_type == load_yaml(job, "--config")["model"]  # the job's settings stay
    known = PipelineOptions([]).get_all_options()
    names = [a[2:].split("=")[0] for a in want]
    assert all(n in known for n in names), sorted(set(names) - set(known))
    runner_name = PipelineOptions(want).get_all_options()["runner"]
    assert runner_name in {"PortableRunner", "FlinkRunner", "SparkRunner", "DataflowRunner"}, runner_name
