import pytest

from mvke_tf.config import ConfigError, FeatureConfig, FieldSpec
from mvke_tf.data import synthetic
from mvke_tf.models.config import UserTagConfig


def test_feature_config_round_trip(tmp_path):
    fc = synthetic.feature_config()
    assert FeatureConfig.from_dict(fc.to_dict()) == fc
    fc.to_yaml(tmp_path / "f.yaml")
    assert FeatureConfig.from_yaml(tmp_path / "f.yaml") == fc


def test_vocab_sizes():
    assert FieldSpec("a", "numeric", boundaries=(1, 2, 3)).vocab_size == 5  # 4 intervals + missing
    assert FieldSpec("b", "categorical", hash_buckets=17).vocab_size == 17


@pytest.mark.parametrize(
    "spec, match",
    [
        (dict(name="age", kind="cat"), "field 'age': kind 'cat'"),
        (dict(name="age", kind="categorical", hash_buckets=1), "field 'age': hash_buckets"),
        (dict(name="ctr", kind="numeric"), "field 'ctr': a numeric field needs 'boundaries'"),
        (dict(name="ctr", kind="numeric", boundaries=(0.2, 0.1)), "field 'ctr': boundaries"),
        (dict(name="ctr", kind="numeric", boundaries=(0.1, 0.1)), "strictly increasing"),
        (dict(name="cats", kind="multi_valued", max_values=0), "field 'cats': max_values"),
        (dict(name="cats", kind="multi_valued", separator=","), "field 'cats': separator"),
        (dict(name="", kind="categorical"), "field name"),
    ],
)
def test_bad_field_names_field_and_fix(spec, match):
    with pytest.raises(ConfigError, match=match) as e:
        FieldSpec(**spec)
    assert "fix" in str(e.value) or "must" in str(e.value)


def test_bad_feature_config_dicts():
    good = synthetic.feature_config().to_dict()
    with pytest.raises(ConfigError, match=r"user_fields\[2\] 'education': unknown key\(s\) \['buckets'\]"):
        bad = dict(good, user_fields=[dict(f) for f in good["user_fields"]])
        bad["user_fields"][2]["buckets"] = 10
        FeatureConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="tag_field: missing"):
        FeatureConfig.from_dict({k: v for k, v in good.items() if k != "tag_field"})
    with pytest.raises(ConfigError, match="unknown key"):
        FeatureConfig.from_dict(dict(good, lables=["click"]))
    # No labels are guessed for a team's features.yaml: the file names its own.
    with pytest.raises(ConfigError, match=r"labels: missing; fix: list the 0/1 task label columns"):
        FeatureConfig.from_dict({k: v for k, v in good.items() if k != "labels"})
    with pytest.raises(ConfigError, match="user_fields\\[1\\]: name 'gender' is already used"):
        dup = dict(good, user_fields=[good["user_fields"][0], good["user_fields"][0]])
        FeatureConfig.from_dict(dup)
    with pytest.raises(ConfigError, match="tag_field 'tags': kind must be"):
        FeatureConfig.from_dict(dict(good, tag_field={"name": "tags", "kind": "numeric", "boundaries": [1]}))


def test_bad_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        FeatureConfig.from_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("user_fields: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        FeatureConfig.from_yaml(tmp_path / "bad.yaml")


def test_model_config_validation():
    with pytest.raises(ConfigError, match="model_type='mvke_xx'"):
        UserTagConfig(model_type="mvke_xx")
    with pytest.raises(ConfigError, match="tag_units\\[-1\\]=16 must equal top_units\\[-1\\]=30"):
        UserTagConfig(tag_units=(64, 16))
    with pytest.raises(ConfigError, match="task_loss_weights"):
        UserTagConfig(task_loss_weights=(1.0,))
    with pytest.raises(ConfigError, match="unknown key"):
        UserTagConfig.from_dict({"embeding_dim": 8})
    mc = UserTagConfig().scaled(0.25)
    assert mc.dnn_units == (128, 64, 32) and mc.top_units == (64, 32, 30) and mc.tag_units[-1] == 30
    assert UserTagConfig.from_dict(mc.to_dict()) == mc


def test_malformed_yaml_names_file_line_and_column(tmp_path):
    from mvke_tf.config import load_yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: [1, 2\nc: 3\n")
    for read in (lambda p: load_yaml(p, "--config"), FeatureConfig.from_yaml, UserTagConfig.from_yaml):
        with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line \d+, column \d+: .*; fix:") as e:
            read(bad)
        assert "\n" not in str(e.value)
    bad.write_bytes(b"a: \xeb\x00\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not UTF-8 text"):
        load_yaml(bad, "--config")
    bad.write_text('a: b\nc: "x\x07"\n')
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line 2, column 6: control character U\+0007"):
        load_yaml(bad, "--config")
    bad.write_text("a: [1]\n")
    assert load_yaml(bad, "--config") == {"a": [1]}
    bad.write_text("")
    assert load_yaml(bad, "--config") is None
