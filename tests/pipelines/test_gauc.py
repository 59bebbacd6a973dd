"""The GAUC custom TFMA metric (pipelines/gauc.py) against the NumPy reference, without a pipeline."""

import math

import numpy as np
import pytest

from mvke_tf.metrics import grouped_auc

OUTPUTS = ("click", "conversion")


def _extracts(n: int = 400, users: int = 25, seed: int = 0) -> list[dict]:
    """Per-example extracts shaped like the Evaluator's: labels/predictions per output, raw features."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, n)
    out = []
    for i in range(n):
        labels = {"click": float(rng.random() < 0.3), "conversion": float(rng.random() < 0.1)}
        # Rounded predictions give ties, which both implementations count as one half.
        preds = {k: round(float(rng.random()), 1) for k in OUTPUTS}
        out.append(
            {
                "labels": {k: np.array([v]) for k, v in labels.items()},
                "predictions": {k: np.array([v], dtype=np.float32) for k, v in preds.items()},
                "example_weights": {k: np.array([1.0]) for k in OUTPUTS},
                "features": {"user_id": np.array([f"u{user[i]}".encode()], dtype=object), "gender": np.array([b"g"])},
            }
        )
    return out


def _reference(extracts: list[dict], output: str) -> float:
    labels = np.array([e["labels"][output][0] for e in extracts])
    preds = np.array([e["predictions"][output][0] for e in extracts], dtype=np.float32).astype(np.float64)
    users = np.array([e["features"]["user_id"][0].decode() for e in extracts])
    return grouped_auc(labels, preds, users)


def _computations():
    from mvke_tf.pipelines.gauc import GAUC

    return GAUC().computations(output_names=list(OUTPUTS))


def _inputs(computation, extracts):
    from tensorflow_model_analysis.metrics import metric_util

    (preprocessor,) = computation.preprocessors
    for e in extracts:
        for filtered in preprocessor.process(e):
            yield metric_util.to_standard_metric_inputs(filtered, include_features=True)


def test_gauc_combiner_matches_grouped_auc():
    extracts = _extracts()
    computations = _computations()
    assert [c.keys[0].output_name for c in computations] == list(OUTPUTS)
    for computation in computations:
        (key,) = computation.keys
        assert key.name == "gauc"
        combiner = computation.combiner
        # Three partial accumulators merged, the way Beam combines per slice.
        accs = [combiner.create_accumulator() for _ in range(3)]
        for i, element in enumerate(_inputs(computation, extracts)):
            combiner.add_input(accs[i % 3], element)
        got = combiner.extract_output(combiner.merge_accumulators(accs))[key]
        expected = _reference(extracts, key.output_name)
        assert not math.isnan(expected)
        assert abs(got - expected) < 1e-9, (key.output_name, got, expected)


def test_gauc_with_beam_combine_per_slice():
    import apache_beam as beam
    from apache_beam.testing import util as beam_util

    extracts = _extracts(n=200, users=10, seed=3)
    computation = _computations()[0]
    (key,) = computation.keys
    expected = _reference(extracts, key.output_name)
    (preprocessor,) = computation.preprocessors

    def check(got):
        assert len(got) == 1
        slice_key, metrics = got[0]
        assert slice_key == () and abs(metrics[key] - expected) < 1e-9, (metrics, expected)

    with beam.Pipeline() as p:
        result = (
            p
            | beam.Create(extracts, reshuffle=False)
            | beam.FlatMap(preprocessor.process)
            | beam.Map(lambda e: ((), _to_inputs(e)))
            | beam.CombinePerKey(computation.combiner)
        )
        beam_util.assert_that(result, check)


def _to_inputs(extracts):
    from tensorflow_model_analysis.metrics import metric_util

    return metric_util.to_standard_metric_inputs(extracts, include_features=True)


def test_gauc_is_nan_without_a_user_holding_both_labels():
    extracts = _extracts(n=30, users=30)  # may still hold a mixed user: make every user single-example
    for i, e in enumerate(extracts):
        e["features"]["user_id"] = np.array([f"solo{i}".encode()], dtype=object)
    computation = _computations()[0]
    combiner = computation.combiner
    acc = combiner.create_accumulator()
    for element in _inputs(computation, extracts):
        acc = combiner.add_input(acc, element)
    assert math.isnan(combiner.extract_output(acc)[computation.keys[0]])
    empty = combiner.extract_output(combiner.create_accumulator())
    assert math.isnan(empty[computation.keys[0]])


def test_gauc_rejects_example_weighting_and_a_missing_feature():
    from mvke_tf.pipelines.gauc import GAUC

    with pytest.raises(ValueError, match="example-weighted"):
        GAUC().computations(output_names=["click"], example_weighted=True)
    computation = _computations()[0]
    extracts = _extracts(n=2)
    del extracts[0]["features"]["user_id"]
    with pytest.raises(ValueError, match="user_id"):
        list(
            computation.combiner.add_input(computation.combiner.create_accumulator(), x)
            for x in _inputs(computation, extracts[:1])
        )


def test_eval_config_registers_gauc_per_output(tmp_path):
    from mvke_tf.pipelines.config import PipelineConfig
    from mvke_tf.pipelines.pipeline import eval_config

    cfg = PipelineConfig(
        pipeline_name="t", pipeline_root=str(tmp_path), data_root=str(tmp_path), serving_dir=str(tmp_path)
    )
    specs = eval_config(cfg).metrics_specs
    for spec in specs:
        gauc = [m for m in spec.metrics if m.class_name == "GAUC"]
        assert len(gauc) == 1 and gauc[0].module == "mvke_tf.pipelines.gauc", spec
    assert sorted(s.output_names[0] for s in specs) == sorted(OUTPUTS)
    # TFMA's own config -> computations path finds the class by module and name.
    from tensorflow_model_analysis.metrics import metric_specs

    computations = metric_specs.to_computations(specs, eval_config=eval_config(cfg))
    keys = {k for c in computations for k in c.keys if k.name == "gauc"}
    assert {k.output_name for k in keys} == set(OUTPUTS), keys
