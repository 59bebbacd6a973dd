"""Every family's export against recorded outputs: a refactoring must leave what clients get unchanged.

One small model per family (and the user-tag model with ``top_tags``), weights drawn from a fixed seed,
exported and called on fixed examples; each signature's input and output specs, its warm-up requests'
signature names, and every output are compared with ``golden_exports.npz`` / ``golden_exports.json``
beside this file. Recorded at the commit that introduced this test (the outputs were also bit-identical
to the exports before the model families built their own signatures).

Outputs are compared to 1e-5 relative, not bit for bit: another CPU's instruction set changes the last
float bits of a matmul; a changed computation moves them by far more.

To record again after a deliberate change of what an export computes:
``python tests/export/test_export_golden.py --write`` (then say in the commit why they changed).
"""

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN_VALUES = HERE / "golden_exports.npz"
GOLDEN_SPECS = HERE / "golden_exports.json"
SIZES = {
    "user_tag": dict(embedding_dim=4, dnn_units=(8,), top_units=(8, 4), tag_units=(8, 4)),
    "ranking": dict(embedding_dim=4, expert_units=(8,), tower_units=(4,)),
    "multi_domain": dict(embedding_dim=4, bottom_units=(8, 6), skip_units=(6,), expert_units=(5,), tower_units=4),
}
# (label, model name, tags frozen into the export for top_tags)
EXPORTS = (
    ("mvke_mt", "mvke_mt", None),
    ("mvke_mt+top_tags", "mvke_mt", ["t1", "t2", "t3", "t4"]),
    ("ranking_app_store", "ranking_app_store", None),
    ("multi_domain_m3oe", "multi_domain_m3oe", None),
)


def _spec(spec) -> list:
    return [list(spec.shape.as_list()), spec.dtype.name]


def exports(out: Path) -> tuple[dict, dict]:
    """(specs, outputs) of the four exports, written under ``out``."""
    import tensorflow as tf

    from mvke_tf.data import synthetic
    from mvke_tf.export import export_saved_model
    from mvke_tf.export.examples import dummy_rows, examples_from_rows
    from mvke_tf.export.warmup import read_warmup_requests
    from mvke_tf.models.family import family_of

    fc = synthetic.feature_config()
    specs, outputs = {}, {}
    for label, name, tags in EXPORTS:
        tf.keras.utils.set_random_seed(0)
        family = family_of(name)
        model = family.build(fc, family.config_for(name, SIZES[family.name]))
        rng = np.random.default_rng(0)
        for w in model.weights:
            w.assign(rng.normal(0.0, 0.2, w.shape).astype(w.dtype.as_numpy_dtype))
        loaded = tf.saved_model.load(str(export_saved_model(model, out / label / "1", feature_config=fc, tags=tags)))
        rows = dummy_rows(fc, 6)
        rows["ad_id"] = [f"ad{i % 3}" for i in range(6)]
        rows["domain"] = [0, 1, 2, 1, 0, 2]
        given = {
            "examples": tf.constant(examples_from_rows(rows, fc)),
            "tags": tf.constant([b"t1", b"t2", b"zz"]),
            "k": tf.constant(2),
        }
        entry = {}
        for sig, fn in sorted(loaded.signatures.items()):
            inputs = fn.structured_input_signature[1]
            result = fn(**{k: given[k] for k in inputs})
            entry[sig] = {
                "inputs": {k: _spec(s) for k, s in sorted(inputs.items())},
                "outputs": {k: _spec(s) for k, s in sorted(fn.structured_outputs.items())},
            }
            for k, v in result.items():
                value = v.numpy()  # tag names: bytes, stored as fixed-width bytes (no pickled objects)
                outputs[f"{label}/{sig}/{k}"] = value.astype(bytes) if value.dtype == object else value
        warmup = read_warmup_requests(out / label / "1")
        entry["warmup"] = [r.predict_log.request.model_spec.signature_name for r in warmup]
        specs[label] = entry
    return specs, outputs


def test_every_export_gives_what_it_gave_when_recorded(tmp_path):
    specs, outputs = exports(tmp_path)
    assert specs == json.loads(GOLDEN_SPECS.read_text())
    golden = np.load(GOLDEN_VALUES)
    assert sorted(outputs) == sorted(golden.files)
    for key in golden.files:
        want, got = golden[key], outputs[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        if want.dtype.kind in "fc":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=key)
        else:
            np.testing.assert_array_equal(got, want, err_msg=key)


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    import mvke_tf  # noqa: F401  (Keras 2 before TensorFlow loads)

    with tempfile.TemporaryDirectory() as tmp:
        specs, outputs = exports(Path(tmp))
    GOLDEN_SPECS.write_text(json.dumps(specs, indent=1, sort_keys=True) + "\n")
    np.savez(GOLDEN_VALUES, **outputs)
    print(f"wrote {GOLDEN_SPECS.name} and {GOLDEN_VALUES.name}: {len(outputs)} outputs")
