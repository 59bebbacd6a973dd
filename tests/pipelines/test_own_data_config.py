"""A team's own features.yaml drives the pipeline: the tasks are its labels, the slices its small user
fields, GAUC groups by its user id; nothing of the synthetic generator's names is assumed."""

import json

import pytest
from mvke_tf.pipelines.config import PipelineConfig, default_slice_keys

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, ConfigError, FeatureConfig, FieldSpec

OWN = FeatureConfig(
    user_fields=(
        FieldSpec("sex", CATEGORICAL, hash_buckets=8),
        FieldSpec("zip", CATEGORICAL, hash_buckets=4000),  # too many values to slice by
        FieldSpec("age", NUMERIC, boundaries=(18.0, 30.0, 50.0)),
        FieldSpec("occupation", CATEGORICAL, hash_buckets=32),
        FieldSpec("genres_seen", MULTI_VALUED, hash_buckets=64, max_values=5),
        FieldSpec("age_band", CATEGORICAL, hash_buckets=16),
        FieldSpec("plan", CATEGORICAL, hash_buckets=4),  # a fourth small field: past the default's three
    ),
    tag_field=FieldSpec("genres", MULTI_VALUED, hash_buckets=64, max_values=4),
    labels=("watched", "liked"),
    user_id="member",
)


@pytest.fixture
def own_config(tmp_path):
    path = tmp_path / "features.yaml"
    OWN.to_yaml(path)

    def make(**kw):
        where = dict(pipeline_root=str(tmp_path), data_root=str(tmp_path), serving_dir=str(tmp_path))
        base = dict(pipeline_name="own", **where)
        return PipelineConfig(**{**base, "features_yaml": str(path), **kw})

    return make


def test_tasks_are_the_labels_unless_the_overrides_name_them(own_config):
    assert own_config(model_type="mmoe").model_config().tasks == ("watched", "liked")
    assert own_config(model_type="ranking_mmoe").model_config().tasks == ("watched", "liked")
    assert own_config(model_type="mmoe", model_overrides={"tasks": ["liked"]}).model_config().tasks == ("liked",)
    assert own_config(model_type="mmoe").custom_config()["model_config"]["tasks"] == ["watched", "liked"]


def test_the_model_name_is_the_config_model_type_and_an_old_name_still_loads(own_config, monkeypatch):
    from mvke_tf.models import family

    monkeypatch.setattr(family, "_warned", set())  # an old name warns once per process: from none given
    config = own_config(model_type="multi_domain_star", model_overrides={"domains": 2})
    assert config.custom_config()["model_config"]["model_type"] == "multi_domain_star"
    with pytest.warns(FutureWarning, match="^model name 'app_store' is now 'ranking_app_store'; .* mvke-tf 0.2$"):
        old = own_config(model_type="app_store")  # a pipeline YAML of mvke-tf 0.1.0 (model: app_store)
    assert old.model_type == old.model_config().model_type == "ranking_app_store" and old.family.name == "ranking"


def test_slices_and_gauc_follow_the_feature_config(own_config):
    from mvke_tf.pipelines.pipeline import eval_config

    assert default_slice_keys(OWN) == ("sex", "occupation", "age_band")
    config = own_config(model_type="mmoe")
    assert config.resolved_slice_keys() == ("sex", "occupation", "age_band")
    ec = eval_config(config)
    assert [list(s.feature_keys) for s in ec.slicing_specs] == [[], ["sex"], ["occupation"], ["age_band"]]
    gauc = [m for spec in ec.metrics_specs for m in spec.metrics if m.class_name == "GAUC"]
    assert gauc and all(json.loads(m.config)["group_key"] == "member" for m in gauc)
    assert {tuple(s.output_names) for s in ec.metrics_specs} == {("watched",), ("liked",)}
    # Given slice keys win; the Transform passes them (and the user id) through.
    config = own_config(model_type="mmoe", slice_keys=["plan"])
    assert [list(s.feature_keys) for s in eval_config(config).slicing_specs] == [[], ["plan"]]
    assert config.custom_config()["slice_keys"] == ["plan"]
    assert own_config(model_type="mmoe", slice_keys=[]).resolved_slice_keys() == ()
    for bad in ("sex", ["sex", ""], [3]):
        with pytest.raises(ConfigError, match="slice_keys"):
            own_config(model_type="mmoe", slice_keys=bad)


def test_a_config_file_sets_slice_keys(tmp_path):
    from mvke_tf.pipelines.__main__ import _parser, config_from_settings, settings_from_args

    settings_file = tmp_path / "run.yaml"
    settings_file.write_text("model: mmoe\nslice_keys: [sex, plan]\n")
    OWN.to_yaml(tmp_path / "features.yaml")
    args = _parser().parse_args(["run", "--config", str(settings_file), "--data-root", str(tmp_path)])
    config = config_from_settings(settings_from_args(args))
    assert config.slice_keys == ("sex", "plan") and config.model_config().tasks == ("watched", "liked")


def _own_run_args(root, data):
    return ["run", "--data-root", str(data), "--input-pattern", "train/*.csv", "--eval-pattern", "eval/*.csv",
            "--root", str(root)]  # fmt: skip


def test_pipeline_run_checks_the_data_against_features_yaml_before_any_component(tmp_path, capsys):
    """A value features.yaml's kind cannot read stops the run at once, naming the file, line, column and fix."""
    from mvke_tf.pipelines.__main__ import _parser, config_from_settings, main, settings_from_args
    from own_data_helpers import made_up_table, write_csv, write_own_data

    from mvke_tf.data.own_data import describe_data

    data = write_own_data(tmp_path / "data", 300, 100)
    describe_data(str(data), data, user_id="member")
    # describe's schema next to features.yaml is the run's schema unless --schema says otherwise.
    config = config_from_settings(settings_from_args(_parser().parse_args(_own_run_args(tmp_path / "r", data))))
    assert config.schema_path == str(data / "schema.pbtxt") and config.resolved_slice_keys() == ("sex", "age")
    bad = made_up_table(100, seed=5)
    bad["liked"][40] = "yes"
    write_csv(data / "eval" / "part-00000.csv", bad)
    assert main(_own_run_args(tmp_path / "r", data)) == 2
    err = capsys.readouterr().err
    assert f"error: {data}/eval/part-00000.csv line 42, column liked (label): 'yes' is not 0 or 1; fix:" in err
    assert "nothing was run" in err and not (tmp_path / "r" / "metadata.db").exists()
    # Parquet files where CSV is expected: the check says so and how to fix it.
    (data / "eval" / "part-00000.csv").unlink()
    assert main(_own_run_args(tmp_path / "r", data)) == 2
    assert "eval/*.csv: no data files there" in capsys.readouterr().err


def test_parquet_input_uses_tfxs_parquet_executor(own_config):
    from mvke_tf.pipelines.pipeline import _example_gen
    from tfx.components.example_gen.custom_executors import parquet_executor

    config = own_config(input_format="parquet", input_pattern="train/*.parquet", eval_pattern="eval/*.parquet")
    gen = _example_gen(config)
    assert gen.executor_spec.executor_class is parquet_executor.Executor
