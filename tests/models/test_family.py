"""One model-family interface: names (one naming rule, old names resolved), configs, fields, builders,
capabilities, each family's export signatures, a registry (a family defined here works everywhere), model
directories."""

import ast
import json
import warnings
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
from mvke_tf.models import family as family_module
from mvke_tf.models.family import (
    DEFAULT_FAMILY,
    FAMILIES,
    MODEL_NAMES,
    ModelFamily,
    build_model,
    canonical_model_name,
    config_for_data,
    family_of,
    register_family,
    unregister_family,
)
from mvke_tf.models.model_dir import load_model_dir, save_model_dir

ROOT = Path(__file__).resolve().parents[2]
FC = synthetic.feature_config()
TINY = {
    "user_tag": dict(embedding_dim=4, dnn_units=(8,), top_units=(8, 4), tag_units=(8, 4)),
    "ranking": dict(embedding_dim=4, expert_units=(8,), tower_units=(4,)),
    "multi_domain": dict(embedding_dim=4, bottom_units=(8, 6), skip_units=(6,), expert_units=(5,), tower_units=4),
}
ONE_PER_FAMILY = ("mvke_mt", "ranking_app_store", "multi_domain_m3oe")


def test_every_model_name_has_one_family_and_the_family_owns_its_configs_and_models():
    assert len(MODEL_NAMES) == len(set(MODEL_NAMES))
    for name in MODEL_NAMES:
        owners = [f.name for f in FAMILIES.values() if f.owns(name)]
        assert len(owners) == 1, (name, owners)
        config = family_of(name).config_for(name, TINY[owners[0]])
        assert family_of(config).name == owners[0]
    with pytest.raises(ConfigError, match="'nope' is in no model family.*mvke_mt"):
        family_of("nope")
    with pytest.raises(ConfigError, match="--scale applies to the two-tower models"):
        family_of("ranking_app_store").config_for("ranking_app_store", scale=0.5)
    with pytest.raises(ConfigError, match="drop model_type"):
        family_of("multi_domain_mmoe").config_for("multi_domain_mmoe", {"model_type": "multi_domain_ple"})
    with pytest.raises(
        ConfigError, match="'ranking_mmoe' is not a multi_domain model; fix: use one of multi_domain_m3oe"
    ):
        FAMILIES["multi_domain"].config_for("ranking_mmoe")


# ---------------------------------------------------------------- one naming rule
NAMES = {
    "user_tag": ("two_tower", "hard_sharing", "moe", "mmoe", "cgc", "mvke_st", "mvke_mt"),
    "ranking": tuple(f"ranking_{a}" for a in ("app_store", "single_task", "shared_bottom", "omoe", "mmoe", "ple")),
    "multi_domain": tuple(f"multi_domain_{a}" for a in ("m3oe", "star", "mlp", "shared_bottom", "mmoe", "ple")),
}
OLD_NAMES = {
    "app_store": "ranking_app_store",
    "m3oe": "multi_domain_m3oe",
    "star": "multi_domain_star",
    "md_mlp": "multi_domain_mlp",
    "md_shared_bottom": "multi_domain_shared_bottom",
    "md_mmoe": "multi_domain_mmoe",
    "md_ple": "multi_domain_ple",
}


def test_every_model_name_is_the_family_prefix_and_an_architecture():
    assert DEFAULT_FAMILY == next(iter(FAMILIES)) == "user_tag"
    assert {n: f.model_names for n, f in FAMILIES.items()} == NAMES
    for name, family in FAMILIES.items():
        assert family.prefix == ("" if name == DEFAULT_FAMILY else f"{name}_")
        assert family.model_names == tuple(family.prefix + a for a in family.architectures)
        assert family.config_class.family_name == name
        assert family.config_class.architectures == family.architectures


@pytest.mark.parametrize("name", list(MODEL_NAMES))
def test_a_family_config_holds_the_name_it_was_made_from(name):
    family = family_of(name)
    config = config_for_data(name, FC, TINY[family.name])
    assert config.model_type == name and config.architecture == name.removeprefix(family.prefix)
    assert family.config_from_dict(config.to_dict()) == config
    assert family.config_class(model_type=name).model_type == name


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_build_model_builds_the_model_of_any_familys_config(name):
    from mvke_tf import models

    family = family_of(name)
    config = family.config_for(name, TINY[family.name])
    model = models.build_model(FC, config)
    assert models.build_model is build_model and isinstance(model, family.model_class)
    assert model.config == config and model.name == name and model.weights


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Each old name warns once per process: a test of the warning starts from none given."""
    monkeypatch.setattr(family_module, "_warned", set())


def _future_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize("old, new", sorted(OLD_NAMES.items()))
def test_an_old_name_resolves_everywhere_with_exactly_one_warning(old, new, fresh_warnings, tmp_path):
    from mvke_tf.cli import build_parser

    family = family_of(new)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert canonical_model_name(old) == new
        assert family_of(old) is family and family.owns(old)
        assert family.config_for(old, TINY[family.name]).model_type == new
        assert config_for_data(old, FC, TINY[family.name]).model_type == new
        # An older version's config: its model_type was the bare architecture (a ranking app_store: mmoe).
        bare = {"app_store": "mmoe"}.get(old, new.removeprefix(family.prefix))
        loaded = family.config_from_dict({**family.config_for(new, TINY[family.name]).to_dict(), "model_type": bare})
        assert loaded.model_type == family.prefix + bare
        assert build_parser().parse_args(["train", "--data", str(tmp_path), "--model", old]).model == new
    messages = _future_warnings(caught)
    warned = [m for m in messages if f"'{old}'" in m]
    assert warned == [f"model name '{old}' is now '{new}'; the old name is accepted until mvke-tf 0.2"], messages
    assert "\n" not in warned[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert canonical_model_name(old) == new
    assert _future_warnings(caught) == []  # once per process


def test_a_bare_architecture_in_a_family_config_is_an_old_name_too(fresh_warnings, tmp_path):
    from mvke_tf.models.multidomain import MultiDomainConfig
    from mvke_tf.models.ranking import RankingConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert RankingConfig(model_type="mmoe").model_type == "ranking_mmoe"
        assert RankingConfig.from_dict({"model_type": "mmoe"}).architecture == "mmoe"
        assert MultiDomainConfig(model_type="ple").model_type == "multi_domain_ple"
        assert canonical_model_name("mmoe") == "mmoe"  # outside a config: the user-tag model
    assert _future_warnings(caught) == [
        "model name 'mmoe' is now 'ranking_mmoe'; the old name is accepted until mvke-tf 0.2",
        "model name 'ple' is now 'multi_domain_ple'; the old name is accepted until mvke-tf 0.2",
    ]
    # A model directory written by mvke-tf 0.1.0 (model_type: m3oe) loads as multi_domain_m3oe.
    family = family_of("multi_domain_m3oe")
    model = build_model(FC, family.config_for("multi_domain_m3oe", TINY["multi_domain"]))
    save_model_dir(model, tmp_path / "m", FC)
    saved = json.loads((tmp_path / "m" / "model_config.json").read_text())
    saved["config"]["model_type"] = "m3oe"
    (tmp_path / "m" / "model_config.json").write_text(json.dumps(saved))
    with pytest.warns(FutureWarning, match="'m3oe' is now 'multi_domain_m3oe'"):
        loaded, _ = load_model_dir(tmp_path / "m")
    assert loaded.config == model.config
    for bad in (lambda: RankingConfig(model_type="dcn"), lambda: MultiDomainConfig(model_type="ranking_mmoe")):
        with pytest.raises(ConfigError, match="is not one of"):
            bad()


def test_the_old_config_names_are_aliases_with_a_warning():
    import mvke_tf.models
    import mvke_tf.models.config
    import mvke_tf.models.multidomain
    from mvke_tf.models import USER_TAG_MODEL_NAMES, UserTagConfig

    for module in (mvke_tf.models, mvke_tf.models.config):
        with pytest.warns(FutureWarning, match="^ModelConfig is now UserTagConfig; .* until mvke-tf 0.2$"):
            assert module.ModelConfig is UserTagConfig
        with pytest.warns(FutureWarning, match="^MODEL_TYPES is now USER_TAG_MODEL_NAMES"):
            assert module.MODEL_TYPES is USER_TAG_MODEL_NAMES
    with pytest.warns(FutureWarning, match="MULTIDOMAIN_MODEL_TYPES is now MULTIDOMAIN_ARCHITECTURES"):
        assert "m3oe" in mvke_tf.models.multidomain.MULTIDOMAIN_MODEL_TYPES
    with pytest.raises(AttributeError):
        mvke_tf.models.ModelConfg  # noqa: B018


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
    return _export("multi_domain_m3oe", tmp_path_factory)


def test_every_model_has_config_fields_tasks_and_the_family_signatures(exported):
    family, model, path, loaded = exported
    assert family_of(model) is family
    assert model.config.tasks == model.tasks == ("click", "conversion")
    assert [f.name for f in model.fields][: len(FC.user_fields)] == [f.name for f in FC.user_fields]
    assert set(loaded.signatures) == set(family.signatures)
    # The warm-up file holds one request per signature, written once.
    logged = [r.predict_log.request.model_spec.signature_name for r in read_warmup_requests(path)]
    assert sorted(logged) == sorted(family.signatures)


def test_capabilities_are_attributes_of_the_family():
    assert {n: (f.has_tag_tower, f.has_domains) for n, f in FAMILIES.items()} == {
        "user_tag": (True, False),
        "ranking": (False, False),
        "multi_domain": (False, True),
    }
    for family in FAMILIES.values():
        assert ("tag_tower" in family.signatures) == family.has_tag_tower
        assert (family.domain_feature(family.config_for(family.model_names[0], TINY[family.name])) is not None) == (
            family.has_domains
        )


# The exported signatures of the tiny models of TINY, as they were before each family built its own
# (checked once by hand against an export by the earlier saved_model.py: same names, specs, warm-up
# requests and bit-identical outputs): {signature: ({input: (shape, dtype)}, {output: (shape, dtype)})}.
_S, _F = tf.string, tf.float32
SIGNATURE_SPECS = {
    "user_tag": {
        "serving_default": ({"examples": ([None], _S)}, {"click": ([None], _F), "conversion": ([None], _F)}),
        "user_tower": (
            {"examples": ([None], _S)},
            {"click_experts": ([None, 3, 4], _F), "conversion_experts": ([None, 4, 4], _F)},
        ),
        "tag_tower": (
            {"tags": ([None], _S)},
            {
                **{f"{t}_embedding": ([None, 4], _F) for t in ("click", "conversion")},
                **{f"{t}_bias": ([None], _F) for t in ("click", "conversion")},
                "click_gate": ([None, 3], _F),
                "conversion_gate": ([None, 4], _F),
            },
        ),
    },
    "ranking": {
        "serving_default": (
            {"examples": ([None], _S)},
            {k: ([None], _F) for k in ("click", "conversion", "cvr", "rank_score")},
        ),
    },
    "multi_domain": {
        "serving_default": ({"examples": ([None], _S)}, {"click": ([None], _F), "conversion": ([None], _F)}),
    },
}


def _specs(fn):
    return (
        {k: (v.shape.as_list(), v.dtype) for k, v in fn.structured_input_signature[1].items()},
        {k: (v.shape.as_list(), v.dtype) for k, v in fn.structured_outputs.items()},
    )


def test_each_family_exports_the_signatures_it_always_had(exported):
    family, _, _, loaded = exported
    assert {name: _specs(fn) for name, fn in loaded.signatures.items()} == SIGNATURE_SPECS[family.name]


def test_serving_default_returns_what_the_model_returns(exported):
    family, model, _, loaded = exported
    domains = [0, 1, 2, 1, 0, 2] if family.has_domains else None
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


# ---------------------------------------------------------------- a family registered from outside the library
class ToyConfig:
    """A toy family's config: its model's name, its tasks and nothing to tune."""

    def __init__(self, model_type="toy_lr", tasks=("click",)):
        self.model_type, self.tasks = model_type, tuple(tasks)
        self.loss_weights = {t: 1.0 for t in self.tasks}

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


class ToyModel(tf.keras.Model):
    """Logistic regression on one hashed categorical field."""

    def __init__(self, config, fields):
        super().__init__(name="toy_lr")
        self.config, self.fields, self.tasks = config, tuple(fields), config.tasks
        self.embedding = tf.keras.layers.Embedding(8, len(self.tasks))

    def logits(self, features):
        return self.embedding(tf.strings.to_hash_bucket_fast(features[self.fields[0].name], 8))

    def call(self, features, training=False):
        return {t: tf.sigmoid(self.logits(features)[:, i]) for i, t in enumerate(self.tasks)}


class ToyFamily(ModelFamily):
    """A family of one model with a signature of its own (``toy_logit``), registered by the test only."""

    name = "toy"
    config_class = ToyConfig
    model_class = ToyModel
    architectures = ("lr",)
    signatures = ("serving_default", "toy_logit")

    def make_config(self, model_name, overrides, scale=1.0):
        return ToyConfig(model_name, **overrides)

    def input_fields(self, feature_config, config, columns=None):
        return (feature_config.user_fields[0],)

    def build(self, feature_config, config, fields=None):
        model = ToyModel(config, fields or self.input_fields(feature_config, config))
        model(parse_fields(tf.constant(_examples(1)), model.fields))
        return model

    def serving_signatures(self, model, inputs, *, tags=None, top_tags_max_k=None):
        concrete = super().serving_signatures(model, inputs, tags=tags, top_tags_max_k=top_tags_max_k)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def toy_logit(examples):
            return {"logit": model.logits(inputs.features(examples, model.fields))}

        concrete["toy_logit"] = toy_logit.get_concrete_function()
        return concrete

    def warmup_inputs(self, model, examples, tags=None, feature_config=None, top_tags_k=None):
        return {**super().warmup_inputs(model, examples), "toy_logit": {"examples": examples}}


@pytest.fixture
def toy():
    family = register_family(ToyFamily())
    try:
        yield family
    finally:
        unregister_family("toy")


def test_a_registered_family_works_with_the_lookups_and_the_export(toy, tmp_path):
    # A fourth family's models are named by the rule: its name, then the architecture.
    assert toy.prefix == "toy_" and toy.model_names == ("toy_lr",)
    assert FAMILIES["toy"] is toy and "toy_lr" in MODEL_NAMES and MODEL_NAMES[-1] == "toy_lr"
    config = config_for_data("toy_lr", FC)
    assert family_of("toy_lr") is family_of("toy") is family_of(config) is toy
    assert config.tasks == FC.labels and config.model_type == "toy_lr"
    with pytest.raises(ConfigError, match="'lr' is in no model family"):
        family_of("lr")
    model = toy.build(FC, config)
    assert family_of(model) is toy and not toy.has_tag_tower and not toy.has_domains
    _randomize(model)
    path = export_saved_model(model, tmp_path / "1", feature_config=FC)
    loaded = tf.saved_model.load(str(path))
    assert set(loaded.signatures) == set(toy.signatures)
    logged = [r.predict_log.request.model_spec.signature_name for r in read_warmup_requests(path)]
    assert logged == list(toy.signatures)
    examples = tf.constant(_examples(4))
    want = model(parse_fields(examples, model.fields))
    got = loaded.signatures["serving_default"](examples=examples)
    for t in FC.labels:
        np.testing.assert_allclose(got[t].numpy(), want[t].numpy(), rtol=1e-6)
    assert loaded.signatures["toy_logit"](examples=examples)["logit"].shape == (4, len(FC.labels))
    with pytest.raises(ValueError, match="tags: a top_tags signature needs a two-tower.*fix: export without"):
        export_saved_model(model, tmp_path / "2", feature_config=FC, tags=["t1"])


def test_the_registry_refuses_taken_names_and_forgets_unregistered_families(toy):
    with pytest.raises(ConfigError, match="model family 'toy': name is taken; fix: .*unregister_family"):
        register_family(ToyFamily)

    class Clash(ToyFamily):
        name = "mvke"
        architectures = ("mt",)  # mvke_mt: a user-tag model's name

    class OldName(ToyFamily):
        name = "md"
        architectures = ("mmoe",)  # md_mmoe: an old name, still resolved

    for family, taken in ((Clash, "mvke_mt"), (OldName, "md_mmoe")):
        with pytest.raises(ConfigError, match=rf"model family '{family.name}': model_names \['{taken}'\] .*fix:"):
            register_family(family)
        assert family.name not in FAMILIES

    class OwnNames(ToyFamily):
        name = "own"
        model_names = ("lr",)  # not named by the rule

    with pytest.raises(ConfigError, match=r"model family 'own': model_names \['lr'\] are not 'own_' \+ each"):
        register_family(OwnNames)
    unregister_family("toy")
    with pytest.raises(ConfigError, match="'toy_lr' is in no model family"):
        family_of("toy_lr")
    assert "toy_lr" not in MODEL_NAMES
    register_family(toy)  # for the fixture to unregister


def test_the_family_of_a_tfx_custom_config():
    from mvke_tf.pipelines.preprocessing import family_of_custom_config

    assert family_of_custom_config(None) is FAMILIES["user_tag"]
    assert family_of_custom_config({"model_family": "multi_domain"}) is FAMILIES["multi_domain"]


# ---------------------------------------------------------------- no family branch outside the family module
MODEL_CLASSES = {"UserTagModel", "RankingModel", "MultiDomainModel", "UserTagConfig", "RankingConfig"} | {
    "MultiDomainConfig",
    "ModelConfig",
}
FAMILY_CONSTANTS = {"RANKING_MODEL_NAMES", "USER_TAG_MODEL_NAMES", "MULTIDOMAIN_MODEL_NAMES", "RANKING_TYPES"} | {
    "RANKING_ARCHITECTURES",
    "USER_TAG_ARCHITECTURES",
    "MULTIDOMAIN_ARCHITECTURES",
    "MODEL_TYPES",
    "MULTIDOMAIN_MODEL_TYPES",
}
SIGNATURE_NAMES = {"serving_default", "user_tower", "tag_tower", "top_tags"}


def family_branches(tree: ast.AST) -> list[str]:
    """``isinstance(x, <a model or config class>)``, comparisons with a family's name, membership tests
    against a family's list of model names, and tests of a signature name (a capability is an attribute
    of the family: ``has_tag_tower``, not ``"tag_tower" in family.signatures``)."""
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
                if any(isinstance(o, ast.Constant) and o.value in SIGNATURE_NAMES for o in operands):
                    found.append(f"line {node.lineno}: tests a signature name")
    return found


def test_the_branch_finder_finds_what_it_looks_for():
    code = (
        "if isinstance(m, RankingModel): pass\n"
        "if custom.get('model_family') == 'ranking': pass\n"
        "if name in RANKING_MODEL_NAMES: pass\n"
        "if isinstance(x, dict) and name == 'other': pass\n"
        "if 'tag_tower' not in family.signatures: pass\n"
        "if name == 'top_tags': pass\n"
    )
    found = [f.split(":")[0] for f in family_branches(ast.parse(code))]
    assert found == ["line 1", "line 2", "line 3", "line 5", "line 6"]


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
