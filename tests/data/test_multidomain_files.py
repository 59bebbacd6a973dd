"""The multi-domain data as files (`mvke-tf data synth --multidomain`): the rows of the in-memory generator."""

import json

import numpy as np
import pytest

from mvke_tf.cli import main
from mvke_tf.config import ConfigError, FeatureConfig
from mvke_tf.data import multidomain as md
from mvke_tf.data import synthetic
from mvke_tf.data.dataset import make_dataset

CFG = md.MultiDomainDataConfig(num_rows=3_000, num_users=300, num_ads=200, taxonomy=(4, 3, 5), seed=3)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("md_files")
    meta = md.write_files(CFG, out, formats=("csv", "tfrecord"), shard_rows=1_000)
    return out, meta, md.generate(CFG)


def test_layout_counts_and_metadata(written):
    out, meta, data = written
    assert sorted(p.name for p in out.iterdir()) == ["eval", "features.yaml", "metadata.json", "train", "val"]
    assert json.dumps(json.loads((out / "metadata.json").read_text())) == json.dumps(meta)  # NaN: one-class cells
    assert meta["columns"][-1] == "domain" and meta["domains"] == 3
    for split, directory in md.FILE_SPLITS.items():
        cols = data[split]
        got = meta["splits"][directory]
        assert got["rows"] == len(cols["domain"]) and got["click"] == int(cols["click"].sum())
        assert got["domain_rows"] == np.bincount(cols["domain"], minlength=3).tolist()
        assert {f.endswith(".csv") for f in got["files"]} == {True, False}  # both formats
    assert FeatureConfig.from_yaml(out / "features.yaml") == synthetic.feature_config()


@pytest.mark.parametrize("ext", ["csv", "tfrecord.gz"])
def test_files_hold_the_generators_rows_and_domains(written, ext):
    out, _, data = written
    fc = FeatureConfig.from_yaml(out / "features.yaml")
    files = sorted(map(str, (out / "eval").glob(f"part-*.{ext}")))
    ds = make_dataset(files, fc, batch_size=4096, extra_columns=["domain"])
    features, labels = {"domain": [], "age_bucket": []}, {"click": [], "conversion": []}
    for x, y in ds:
        for k in features:
            features[k].append(x[k].numpy())
        for k in labels:
            labels[k].append(y[k].numpy())
    test = data["test"]
    np.testing.assert_array_equal(np.concatenate(features["domain"]), test["domain"])  # int64, in order
    np.testing.assert_array_equal(np.concatenate(features["age_bucket"]).astype(str), test["age_bucket"])
    for t in labels:
        np.testing.assert_array_equal(np.concatenate(labels[t]), test[t].astype(np.float32))


def test_command_line_writes_them(tmp_path, capsys):
    argv = ["data", "synth", "--multidomain", "--out", str(tmp_path), "--rows", "600", "--users", "100"]
    assert main([*argv, "--ads", "50", "--taxonomy", "3,2,4", "--format", "tfrecord"]) == 0
    out = capsys.readouterr().out
    assert "wrote 600 multi-domain rows" in out and "3 domains in the 'domain' column" in out
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["part-00000.tfrecord.gz"]
    with pytest.raises(ConfigError, match="formats"):
        md.write_files(CFG, tmp_path / "x", formats=("parquet",))
