"""The batched Evaluator (pipelines/evaluator.py) gives stock TFMA's results: metrics, slices, baseline and blessing."""

import copy
import json
import math

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from mvke_tf.pipelines.evaluator import BatchedEvaluation, UnsupportedEvalConfigError, metric_requests

OUTPUTS = ("click", "conversion")
N = 3000


def _write_examples(path, n=N, seed=0):
    """Rows with labels, a user, a slice feature missing in 10% of rows, a multi-valued slice feature and ``x``."""
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path), "GZIP") as w:
        for i in range(n):
            x = float(rng.normal())
            f = {
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x])),
                "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"u{rng.integers(60)}".encode()])),
                "click": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(rng.random() < 1 / (1 + 2**-x))])),
                "conversion": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(rng.random() < 0.1)])),
                "topics": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a", b"b"][: 1 + i % 2])),
                "domain": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(rng.integers(3))])),
            }
            if i % 10:
                f["gender"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"g{i % 3}".encode()]))
            w.write(tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString())
    return {
        "x": tf.io.FixedLenFeature([], tf.float32),
        "user_id": tf.io.FixedLenFeature([], tf.string),
        "gender": tf.io.FixedLenFeature([], tf.string),
        "topics": tf.io.VarLenFeature(tf.string),
        "click": tf.io.FixedLenFeature([], tf.int64),
        "conversion": tf.io.FixedLenFeature([], tf.int64),
        "domain": tf.io.FixedLenFeature([], tf.int64),
    }


MEAN_AUC = tfma.MetricConfig(
    class_name="MeanGroupAUC",
    module="mvke_tf.pipelines.gauc",
    config=json.dumps({"name": "mean_domain_task_auc", "group_key": "domain", "outputs": list(OUTPUTS)}),
)


def _export(path, noise):
    """A SavedModel whose ``serving_default`` scores serialized examples; predictions rounded to make ties.

    ``noise`` mixes a wobble unrelated to the labels into the click score: more noise, a worse model.
    """

    class Scorer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            x = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([], tf.float32)})["x"]
            click = tf.round(tf.sigmoid(x + noise * tf.sin(40.0 * x)) * 100) / 100
            return {"click": click, "conversion": tf.sigmoid(0.3 * x - 2.0)}

    module = Scorer()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def _eval_config(thresholds=False, extra=()):
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        tfma.MetricConfig(class_name="AUC"),
        tfma.MetricConfig(class_name="AUC", config='{"curve": "PR", "name": "auc_pr"}'),
        tfma.MetricConfig(class_name="Calibration"),
        tfma.MetricConfig(class_name="MeanLabel"),
        tfma.MetricConfig(class_name="MeanPrediction"),
        tfma.MetricConfig(class_name="GAUC", module="mvke_tf.pipelines.gauc", config=json.dumps({"name": "gauc"})),
        *extra,
    ]
    specs = []
    for output in OUTPUTS:
        m = [copy.deepcopy(x) for x in metrics]
        if thresholds and output == "click":
            threshold = tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(lower_bound={"value": 0.6}),
                change_threshold=tfma.GenericChangeThreshold(
                    direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -0.001}
                ),
            )
            m[1].per_slice_thresholds.append(
                tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)
            )
        specs.append(tfma.MetricsSpec(metrics=m, output_names=[output]))
    specs.append(tfma.MetricsSpec(metrics=[copy.deepcopy(MEAN_AUC)]))  # spans both outputs
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(label_keys={t: t for t in OUTPUTS}, prediction_keys={t: t for t in OUTPUTS})],
        slicing_specs=[
            tfma.SlicingSpec(),
            tfma.SlicingSpec(feature_keys=["gender"]),
            tfma.SlicingSpec(feature_keys=["topics"]),
            tfma.SlicingSpec(feature_keys=["topics", "gender"]),
            tfma.SlicingSpec(feature_values={"gender": "g1"}),
        ],
        metrics_specs=specs,
    )


def _named(config, has_baseline):
    return tfma.utils.update_eval_config_with_defaults(config, has_baseline=has_baseline, rubber_stamp=True)


def _run_tfma(config, models, data, out):
    shared = [
        tfma.default_eval_shared_model(eval_saved_model_path=path, model_name=name, eval_config=config)
        for name, path in models.items()
    ]
    from tfx_bsl.public import tfxio

    records = tfxio.TFExampleRecord(file_pattern=str(data), raw_record_column_name=tfma.ARROW_INPUT_COLUMN)
    with beam.Pipeline() as p:
        _ = (
            p
            | records.BeamSource()
            | tfma.ExtractEvaluateAndWriteResults(
                eval_shared_model=shared[0] if len(shared) == 1 else shared, eval_config=config, output_path=str(out)
            )
        )


def _run_batched(config, models, data, out, spec):
    with beam.Pipeline() as p:
        evaluation = p | BatchedEvaluation([str(data)], config, models, spec, batch_size=700)
        _ = evaluation | tfma.WriteResults(writers=tfma.default_writers(str(out), eval_config=config))


def _metrics(out):
    return {
        tuple(key): {(o, n): v.get("doubleValue") for o, d in m.items() for n, v in d[""].items()}
        for key, m in tfma.load_eval_result(str(out)).slicing_metrics
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluator")
    spec = _write_examples(tmp / "eval.tfrecord.gz")
    return tmp, spec, _export(tmp / "candidate", 0.0), _export(tmp / "baseline", 3.0)


def _assert_equal_results(expected, got):
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))
    for key, metrics in expected.items():
        assert set(got[key]) == set(metrics), (key, sorted(set(got[key]) ^ set(metrics)))
        for name, value in metrics.items():
            mine = got[key][name]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                assert mine is None or math.isnan(mine), (key, name, value, mine)
            elif name[1].startswith("calibration") or name[1].startswith("mean"):
                # TFMA sums predictions in float32; ours in float64.
                assert mine == pytest.approx(value, rel=1e-6), (key, name, value, mine)
            else:
                assert mine == pytest.approx(value, abs=1e-12), (key, name, value, mine)


def test_batched_evaluation_equals_tfma_for_every_metric_and_slice(setup):
    tmp, spec, candidate, _ = setup
    config = _named(_eval_config(), has_baseline=False)
    _run_tfma(config, {"": candidate}, tmp / "eval.tfrecord.gz", tmp / "tfma")
    _run_batched(config, {"": candidate}, tmp / "eval.tfrecord.gz", tmp / "batched", spec)
    expected, got = _metrics(tmp / "tfma"), _metrics(tmp / "batched")
    # Multi-valued slices (topics), crossed specs, a fixed value and rows missing the feature all match.
    assert (("topics", "b"),) in got and (("gender", "g1"), ("topics", "a")) in got
    assert got[()][("click", "example_count")] == N
    # Rows without the feature are in no gender slice; gender=g1 from two specs counts each row once.
    assert sum(got[(("gender", g),)][("click", "example_count")] for g in ("g0", "g1", "g2")) == N - N // 10
    _assert_equal_results(expected, got)


def _reference_mean_domain_task_auc(data, model_path, gender=None):
    """The mean of sklearn's AUC over (domain, output) pairs, from the model's own predictions."""
    from sklearn.metrics import roc_auc_score

    serialized = [r.numpy() for r in tf.data.TFRecordDataset(str(data), compression_type="GZIP")]
    spec = {k: tf.io.FixedLenFeature([], tf.int64) for k in ("domain", *OUTPUTS)}
    spec["gender"] = tf.io.FixedLenFeature([], tf.string, default_value="")
    parsed = {k: v.numpy() for k, v in tf.io.parse_example(serialized, spec).items()}
    scores = tf.saved_model.load(model_path).signatures["serving_default"](examples=tf.constant(serialized))
    rows = np.ones(len(serialized), bool) if gender is None else parsed["gender"] == gender.encode()
    aucs = []
    for d in range(3):
        for o in OUTPUTS:
            m = rows & (parsed["domain"] == d)
            if 0 < parsed[o][m].sum() < m.sum():
                aucs.append(roc_auc_score(parsed[o][m], scores[o].numpy()[m]))
    return float(np.mean(aucs))


def test_mean_domain_task_auc_equals_a_reference(setup):
    # The (domain, task) mean that blesses a multi-domain model: each pair counts once, whatever its size.
    tmp, spec, candidate, _ = setup
    config = _named(_eval_config(), has_baseline=False)
    _run_batched(config, {"": candidate}, tmp / "eval.tfrecord.gz", tmp / "batched_mean", spec)
    got = _metrics(tmp / "batched_mean")
    data = tmp / "eval.tfrecord.gz"
    assert got[()][("", "mean_domain_task_auc")] == pytest.approx(
        _reference_mean_domain_task_auc(data, candidate), abs=1e-9
    )
    want = _reference_mean_domain_task_auc(data, candidate, gender="g1")
    assert got[(("gender", "g1"),)][("", "mean_domain_task_auc")] == pytest.approx(want, abs=1e-9)


def test_baseline_diffs_and_blessing_equal_tfma(setup):
    tmp, spec, candidate, baseline = setup
    config = _named(_eval_config(thresholds=True), has_baseline=True)
    models = {"candidate": candidate, "baseline": baseline}
    _run_tfma(config, models, tmp / "eval.tfrecord.gz", tmp / "tfma_b")
    _run_batched(config, models, tmp / "eval.tfrecord.gz", tmp / "batched_b", spec)
    expected, got = _metrics(tmp / "tfma_b"), _metrics(tmp / "batched_b")
    _assert_equal_results(expected, got)
    want, have = tfma.load_validation_result(str(tmp / "tfma_b")), tfma.load_validation_result(str(tmp / "batched_b"))
    assert want.validation_ok == have.validation_ok
    failed = {v.metric_key.name for s in have.metric_validations_per_slice for v in s.failures}
    assert failed == {v.metric_key.name for s in want.metric_validations_per_slice for v in s.failures}

    # The weaker model as the candidate fails the change threshold in both.
    swapped = {"candidate": baseline, "baseline": candidate}
    _run_batched(config, swapped, tmp / "eval.tfrecord.gz", tmp / "worse", spec)
    result = tfma.load_validation_result(str(tmp / "worse"))
    assert not result.validation_ok
    assert any(v.metric_key.is_diff for s in result.metric_validations_per_slice for v in s.failures)


def test_unsupported_configs_are_refused_with_the_fix():
    with pytest.raises(UnsupportedEvalConfigError, match="'BinaryAccuracy'.*evaluator: tfma"):
        metric_requests(_eval_config(extra=[tfma.MetricConfig(class_name="BinaryAccuracy")]))
    with pytest.raises(UnsupportedEvalConfigError, match="num_thresholds"):
        metric_requests(_eval_config(extra=[tfma.MetricConfig(class_name="AUC", config='{"num_thresholds": 50}')]))
    weighted = _eval_config()
    weighted.metrics_specs[0].example_weights.weighted = True
    with pytest.raises(UnsupportedEvalConfigError, match="example-weighted"):
        metric_requests(weighted)
    names = {(r.class_name, r.name, r.output_name) for r in metric_requests(_eval_config())}
    assert ("AUC", "auc_pr", "click") in names and ("GAUC", "gauc", "conversion") in names


def _random_batches(rng, sizes, outputs=OUTPUTS, models=("", "baseline")):
    """EvalBatches with ties, users spread over batches, a multi-valued slice and keys missing from some batches."""
    from mvke_tf.pipelines.evaluator import EvalBatch

    batches = []
    for n in sizes:
        users = rng.integers(0, 500, n) * 7919 + 3  # non-negative "hashes", many users in several batches
        slices = {(): np.arange(n)}
        gender = rng.integers(0, 3, n)
        for g in np.unique(gender):
            slices[(("gender", f"g{g}"),)] = np.flatnonzero(gender == g)
        topic = rng.random(n)
        slices[(("topics", "a"),)] = np.flatnonzero(topic < 0.7)  # a row can be in both topics
        if rng.random() < 0.5:
            slices[(("topics", "b"),)] = np.flatnonzero(topic > 0.4)
        batches.append(
            EvalBatch(
                labels={o: (rng.random(n) < 0.3).astype(np.float64) for o in outputs},
                predictions={(m, o): rng.integers(0, 20, n).astype(np.float32) / 20 for m in models for o in outputs},
                groups={"user_id": users},
                slices=slices,
            )
        )
    return batches


def test_spilled_shards_give_the_direct_grouped_auc_bit_for_bit(tmp_path):
    # The GAUC path on its own: batches spilled to files in 64 shards (several records per file), one shard
    # reduced at a time, the shards' exact sums added in a shuffled order == all rows at once.
    from mvke_tf.pipelines.evaluator_grouped_auc import (
        _delete_spilled,
        _read_spilled,
        _shard_terms,
        _SpillShards,
        _SumTermsCombineFn,
    )

    from mvke_tf.metrics import exact_to_float, grouped_auc_exact_terms, grouped_auc_terms

    rng = np.random.default_rng(7)
    batches = _random_batches(rng, [700, 1, 950, 300, 700, 333])
    spill = _SpillShards(str(tmp_path / "run" / "group-0"), "user_id", shards=64, spill_rows=600)
    spill.setup()
    files: dict[int, list[str]] = {}
    for bundle in (batches[:4], batches[4:]):  # two bundles: two files per shard
        spill.start_bundle()
        for batch in bundle:
            assert spill.process(batch) is None  # nothing is emitted before the bundle's files are complete
        for value in spill.finish_bundle():
            shard, path = value.value
            files.setdefault(shard, []).append(path)
    assert len(files) == 64 and all(len(paths) == 2 for paths in files.values())
    # The first bundle spills at 700 rows, at 951, and the last 300 when it finishes: three records a file.
    assert max(len(list(_read_spilled(p))) for paths in files.values() for p in paths) == 3

    combine = _SumTermsCombineFn()
    order = rng.permutation(sorted(files))
    terms = combine.extract_output(
        combine.merge_accumulators(
            [
                combine.add_input(
                    combine.create_accumulator(), _shard_terms((s, files[s]), "user_id", ["examples", "uniform"])
                )
                for s in order
            ]
        )
    )

    groups = np.concatenate([b.groups["user_id"] for b in batches])
    offsets = np.cumsum([0] + [b.size for b in batches])
    keys = {k for b in batches for k in b.slices}
    for key in keys:
        rows = np.concatenate([b.slices[key] + o for b, o in zip(batches, offsets) if key in b.slices])
        for model, output in batches[0].predictions:
            labels = np.concatenate([b.labels[output] for b in batches])[rows]
            scores = np.concatenate([b.predictions[(model, output)] for b in batches])[rows]
            for weighting in ("examples", "uniform"):
                want = grouped_auc_exact_terms(labels, scores, groups[rows], weighting)
                got = terms[("user_id", weighting, key, model, output)]
                assert got == want, (key, model, output, weighting)
                total, weight = grouped_auc_terms(labels, scores, groups[rows], weighting)
                assert exact_to_float(got[0]) / exact_to_float(got[1]) == total / weight
    assert len(terms) == len(keys) * 4 * 2

    assert _delete_spilled(terms, str(tmp_path / "run")) is terms
    assert not (tmp_path / "run").exists()
    _delete_spilled(terms, str(tmp_path / "run"))  # a retried step finds nothing to delete


def test_gauc_in_many_shards_equals_a_direct_computation_and_leaves_no_files(setup):
    from mvke_tf.metrics import exact_to_float, grouped_auc_exact_terms, grouped_auc_terms

    tmp, spec, candidate, _ = setup
    config = _named(_eval_config(), has_baseline=False)
    data, out, spill = tmp / "eval.tfrecord.gz", tmp / "sharded", tmp / "spill"
    with beam.Pipeline() as p:
        evaluation = p | BatchedEvaluation(
            [str(data)],
            config,
            {"": candidate},
            spec,
            batch_size=700,
            temp_dir=str(spill),
            gauc_shards=97,
            spill_rows=900,
        )
        _ = evaluation | tfma.WriteResults(writers=tfma.default_writers(str(out), eval_config=config))
    assert spill.is_dir() and not list(spill.iterdir())  # the evaluation's own directory is deleted
    got = _metrics(out)

    serialized = [r.numpy() for r in tf.data.TFRecordDataset(str(data), compression_type="GZIP")]
    parse = {k: tf.io.FixedLenFeature([], tf.int64) for k in ("domain", *OUTPUTS)}
    parse.update(user_id=tf.io.FixedLenFeature([], tf.string), gender=tf.io.FixedLenFeature([], tf.string, ""))
    parse["topics"] = tf.io.VarLenFeature(tf.string)
    parsed = tf.io.parse_example(serialized, parse)
    topics = tf.sparse.to_dense(parsed.pop("topics"), "").numpy()
    cols = {k: v.numpy() for k, v in parsed.items()}
    result = tf.saved_model.load(candidate).signatures["serving_default"](examples=tf.constant(serialized))
    scores = {o: np.asarray(result[o].numpy(), dtype=np.float32) for o in OUTPUTS}
    slices = {(): np.ones(len(serialized), bool), (("topics", "b"),): (topics == b"b").any(axis=1)}
    slices.update({(("gender", g),): cols["gender"] == g.encode() for g in ("g0", "g1", "g2")})
    for key, rows in slices.items():
        for o in OUTPUTS:
            total, weight = grouped_auc_terms(cols[o][rows], scores[o][rows], cols["user_id"][rows])
            assert got[key][(o, "gauc")] == total / weight, (key, o)  # bit for bit, 97 shards or not
        # MeanGroupAUC: every (domain, task) pair with both classes counts once (domains hash to few shards).
        parts = [
            grouped_auc_exact_terms(cols[o][rows], scores[o][rows], cols["domain"][rows], "uniform") for o in OUTPUTS
        ]
        mean = exact_to_float(sum(t for t, _ in parts)) / exact_to_float(sum(w for _, w in parts))
        assert got[key][("", "mean_domain_task_auc")] == mean, key


def test_exact_sums_add_up_whatever_the_split():
    # The shards' GAUC terms are added as exact sums: any split and order gives the same, correctly rounded float.
    from fractions import Fraction

    from mvke_tf.metrics import exact_sum, exact_sums, exact_to_float

    rng = np.random.default_rng(3)
    values = rng.normal(size=400) * 10.0 ** rng.integers(-300, 300, size=400)
    values = np.r_[values, 5e-324, -5e-324, 1e308, -1e308, 0.0, 0.1, 0.2]
    total = exact_sum(values)
    assert Fraction(total, 2**1127) == sum(map(Fraction, values.tolist()))
    assert exact_to_float(total) == math.fsum(values.tolist())
    segments = rng.integers(0, 9, len(values))
    parts = exact_sums(values, segments)
    assert parts == {int(s): exact_sum(values[segments == s]) for s in np.unique(segments)}
    assert sum(parts[s] for s in rng.permutation(list(parts))) == total
    with pytest.raises(ValueError, match="NaN or infinity"):
        exact_sum([1.0, math.inf])
