"""One model-family interface: names, configs, fields, builders, one export path, model directories."""

import ast
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from mvke_tf.config import ConfigError
from mvke_tf.data import synthetic
from mvke_tf.data.dataset import parse_fields
from mvke_tf.export import export_saved_model
from mvke_tf.export.examples import dummy_rows, examples_from_rows
from mvke_tf.export.warmup import read_warmup_requests
from mvke_tf.models.family import FAMILIES, MODEL_NAMES, family_of
from mvke_tf.models.model_dir import load_model_dir, save_model_dir

ROOT = Path(__file__).resolve().parents[2]
FC = synthetic.feature_config()
TINY = {
    "user_tag": dict(embedding_dim=4, dnn_units=(8,), top_units=(8, 4), tag_units=(8, 4)),
    "ranking": dict(embedding_dim=4, expert_units=(8,), tower_units=(4,)),
    "multi_domain": dict(embedding_dim=4, bottom_units=(8, 6), skip_units=(6,), expert_units=(5,), tower_units=4),
}
ONE_PER_FAMILY = ("mvke_mt", "app_store", "m3oe")


def test_every_model_name_has_one_family_and_the_family_owns_its_configs_and_models():
    assert len(MODEL_NAMES) == len(set(MODEL_NAMES))
    for name in MODEL_NAMES:
        owners = [f.name for f in FAMILIES.values() if f.owns(name)]
        assert len(owners) == 1, (name, owners)
        config = family_of(name).config_for(name, TINY[owners[0]])
        assert family_of(config).name == owners[0]
    multi_domain = {"md_mmoe", "md_ple", "md_shared_bottom", "md_mlp", "m3oe", "star"}
    assert multi_domain == set(FAMILIES["multi_domain"].model_names)
    assert {"mvke_mt", "app_store", "m3oe"} <= set(MODEL_NAMES)
    with pytest.raises(ConfigError, match="'nope' is in no model family.*mvke_mt"):
        family_of("nope")
    with pytest.raises(ConfigError, match="--scale applies to the two-tower models"):
        family_of("app_store").config_for("app_store", scale=0.5)
    with pytest.raises(ConfigError, match="drop model_type"):
        family_of("md_mmoe").config_for("md_mmoe", {"model_type": "ple"})
    assert family_of("md_ple").config_for("md_ple").model_type == "ple"


def _randomize(model, seed=0):
    """Weights far from their initial values, so a wrong output (a dropped gate, another tag's gate,
    another domain's tower) differs by much more than float noise."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0.0, 0.2, w.shape).astype(w.dtype.as_numpy_dtype))


def _examples(n=6, domains=None):
    rows = dummy_rows(FC, n)
    rows["ad_id"] = [f"ad{i % 3}" for i in range(n)]
    if domains is not None:
        rows["domain"] = list(domains)
    return examples_from_rows(rows, FC)


def _export(name, tmp_path_factory):
    family = family_of(name)
    config = family.config_for(name, TINY[family.name])
    model = family.build(FC, config)
    _randomize(model)
    path = export_saved_model(model, tmp_path_factory.mktemp(name) / "1", feature_config=FC)
    return family, model, path, tf.saved_model.load(str(path))


@pytest.fixture(scope="module", params=ONE_PER_FAMILY)
def exported(request, tmp_path_factory):
    return _export(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def m3oe(tmp_path_factory):
    return _export("m3oe", tmp_path_factory)


def test_every_model_has_config_fields_tasks_and_the_family_signatures(exported):
    family, model, path, loaded = exported
    assert family_of(model) is family
    assert model.config.tasks == model.tasks == ("click", "conversion")
    assert [f.name for f in model.fields][: len(FC.user_fields)] == [f.name for f in FC.user_fields]
    assert set(loaded.signatures) == set(family.signatures)
    # The warm-up file holds one request per signature, written once.
    logged = [r.predict_log.request.model_spec.signature_name for r in read_warmup_requests(path)]
    assert sorted(logged) == sorted(family.signatures)


def test_serving_default_returns_what_the_model_returns(exported):
    family, model, _, loaded = exported
    domains = [0, 1, 2, 1, 0, 2] if family.name == "multi_domain" else None
    examples = tf.constant(_examples(6, domains))
    got = loaded.signatures["serving_default"](examples=examples)
    features = parse_fields(examples, model.fields, family.extra_inputs(model))
    want = model(features)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=1e-6, atol=1e-7)
    # The outputs depend on the inputs (not a constant): another row order permutes them.
    assert np.ptp(got["click"].numpy()) > 1e-3, got["click"]


def test_a_domain_id_out_of_range_is_an_error_never_another_tower(m3oe):
    family, model, _, loaded = m3oe
    for bad in ([0, 3], [-1, 0]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="domain id outside \\[0, 3\\)"):
            loaded.signatures["serving_default"](examples=tf.constant(_examples(2, bad)))
        features = parse_fields(tf.constant(_examples(2, bad)), model.fields, family.extra_inputs(model))
        with pytest.raises(tf.errors.InvalidArgumentError, match="fix: send each example's domain"):
            model(features)
    # No domain at all parses as -1: rejected as well.
    with pytest.raises(tf.errors.InvalidArgumentError, match="domain id outside"):
        loaded.signatures["serving_default"](examples=tf.constant(_examples(2)))


@pytest.mark.parametrize("name", ["mmoe", "ranking_ple"])
def test_model_dir_round_trip(name, tmp_path):
    family = family_of(name)
    model = family.build(FC, family.config_for(name, TINY[family.name]), family.input_fields(FC, None, ["user_id"]))
    _randomize(model, seed=1)
    save_model_dir(model, tmp_path / "m", FC)
    loaded, fc = load_model_dir(tmp_path / "m")
    assert fc == FC and type(loaded) is type(model) and loaded.config == model.config
    assert [f.name for f in loaded.fields] == [f.name for f in model.fields]
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ConfigError, match="missing weights.index.*mvke-tf train"):
        (tmp_path / "m" / "weights.index").unlink()
        load_model_dir(tmp_path / "m")


# ---------------------------------------------------------------- no family branch outside the family module
MODEL_CLASSES = {"UserTagModel", "RankingModel", "MultiDomainModel", "ModelConfig", "RankingConfig"} | {
    "MultiDomainConfig"
}
FAMILY_CONSTANTS = {"RANKING_MODEL_NAMES", "MODEL_TYPES", "MULTIDOMAIN_MODEL_TYPES", "RANKING_TYPES"}


def family_branches(tree: ast.AST) -> list[str]:
    """``isinstance(x, <a model or config class>)``, comparisons with a family's name, and membership
    tests against a family's list of model names."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            if any(getattr(c, "id", getattr(c, "attr", None)) in MODEL_CLASSES for c in classes):
                found.append(f"line {node.lineno}: isinstance on a model class")
        if isinstance(node, ast.Compare):
            for op, right in zip(node.ops, node.comparators):
                operands = [node.left, right]
                if isinstance(op, (ast.Eq, ast.NotEq)) and any(
                    isinstance(o, ast.Constant) and o.value in FAMILIES for o in operands
                ):
                    found.append(f"line {node.lineno}: compares with a family name")
                if isinstance(op, (ast.In, ast.NotIn)) and getattr(right, "id", None) in FAMILY_CONSTANTS:
                    found.append(f"line {node.lineno}: membership in a family's model names")
    return found


def test_the_branch_finder_finds_what_it_looks_for():
    code = (
        "if isinstance(m, RankingModel): pass\n"
        "if custom.get('model_family') == 'ranking': pass\n"
        "if name in RANKING_MODEL_NAMES: pass\n"
        "if isinstance(x, dict) and name == 'other': pass\n"
    )
    assert [f.split(":")[0] for f in family_branches(ast.parse(code))] == ["line 1", "line 2", "line 3"]


def test_no_family_specific_branch_outside_the_models_package():
    offenders = {}
    for package in ("mvke_tf", "pipelines", "serving"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "mvke_tf" / "models"):
                continue
            branches = family_branches(ast.parse(path.read_text(), str(path)))
            if branches:
                offenders[str(path.relative_to(ROOT))] = branches
    assert not offenders, offenders
