import csv
import hashlib
import json
import math

import numpy as np
import pytest

from mvke_tf.config import ConfigError, FeatureConfig
from mvke_tf.data import synthetic
from mvke_tf.metrics import auc


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _digest(directory):
    h = hashlib.sha256()
    for p in sorted(directory.glob("*/part-*.csv")):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_metadata(small_data, small_config):
    out, meta = small_data
    assert (out / "features.yaml").exists() and (out / "metadata.json").exists()
    assert json.loads((out / "metadata.json").read_text()) == meta
    assert meta["splits"]["train"]["rows"] + meta["splits"]["eval"]["rows"] == small_config.num_rows
    # The last of the 2 days is the eval split: about half of the rows.
    assert 0.4 < meta["splits"]["eval"]["rows"] / small_config.num_rows < 0.6
    # shard_rows=10_000 -> several train shards, in both formats.
    files = meta["splits"]["train"]["files"]
    assert sum(f.endswith(".csv") for f in files) >= 2
    assert sum(f.endswith(".tfrecord.gz") for f in files) == sum(f.endswith(".csv") for f in files)
    for f in files:
        assert (out / f).exists()


def test_columns_and_26_user_fields(small_data):
    out, _ = small_data
    fc = FeatureConfig.from_yaml(out / "features.yaml")
    assert len(fc.user_fields) == 26
    groups = {f.group for f in fc.user_fields}
    assert groups == {"basic", "behaviour", "statistics"}
    rows = _read_csv(out / "train" / "part-00000.csv")
    assert list(rows[0].keys()) == synthetic.columns()
    for name in fc.feature_names:
        assert name in rows[0]


def test_label_ordering_and_rates(small_data, small_config):
    out, meta = small_data
    rows = [r for p in sorted(out.glob("*/part-*.csv")) for r in _read_csv(p)]
    click = np.array([int(r["click"]) for r in rows])
    conv = np.array([int(r["conversion"]) for r in rows])
    p_click = np.array([float(r["p_click"]) for r in rows])
    p_conv = np.array([float(r["p_conversion"]) for r in rows])
    assert set(np.unique(click)) <= {0, 1} and set(np.unique(conv)) <= {0, 1}
    # Conversion only after a click.
    assert np.all(click >= conv)
    assert np.all(p_click >= p_conv - 1e-9) and np.all((p_click > 0) & (p_click < 1))
    ctr = click.mean()
    cvr = conv.sum() / click.sum()
    assert 0.02 < ctr < 0.08, ctr  # "a few percent"
    assert 0.05 < cvr < 0.3, cvr  # a fraction of clicks
    # Labels agree with the recorded probabilities.
    assert abs(ctr - p_click.mean()) < 0.006
    assert abs(conv.mean() - p_conv.mean()) < 0.003
    assert meta["rates"]["ctr"] == pytest.approx(ctr)


def test_oracle_auc_in_range(small_data):
    _, meta = small_data
    for task in ("click", "conversion"):
        assert 0.6 < meta["oracle_auc_eval"][task] < 0.99, meta["oracle_auc_eval"]


def test_oracle_auc_matches_rows(small_data):
    out, meta = small_data
    rows = [r for p in sorted(out.glob("eval/part-*.csv")) for r in _read_csv(p)]
    y = np.array([int(r["click"]) for r in rows])
    p = np.array([float(r["p_click"]) for r in rows])
    # CSV rounds probabilities to 6 decimals; the metadata uses full precision.
    assert auc(y, p) == pytest.approx(meta["oracle_auc_eval"]["click"], abs=2e-4)


def test_deterministic_per_seed(tmp_path, small_config):
    cfg = synthetic.SyntheticConfig(**{**small_config.to_dict(), "num_rows": 5_000})
    synthetic.generate(cfg, tmp_path / "a")
    synthetic.generate(cfg, tmp_path / "b")
    other = synthetic.SyntheticConfig(**{**cfg.to_dict(), "seed": cfg.seed + 1})
    synthetic.generate(other, tmp_path / "c")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_taxonomy_and_ads():
    cfg = synthetic.SyntheticConfig(num_rows=100, num_users=50, num_ads=200)
    assert cfg.num_leaves == 1800  # 18 level-1 x 5 x 20, the paper's ~1,800 tags
    world = synthetic.SyntheticWorld(cfg)
    tags = synthetic.all_tags(cfg)
    assert len(tags) == len(set(tags)) == 1800
    assert set(world.leaf_name) == set(tags)
    sizes = [len(t) for t in world.ad_tags]
    assert min(sizes) >= 1 and max(sizes) <= 3
    # Tags of one ad share their level-1 category.
    for t in world.ad_tags:
        assert len(set(world.leaf_l1[t])) == 1


def test_multi_facet_structure_matters(small_config):
    """Max-over-facets affinity is not explained by the best single facet alone."""
    world = synthetic.SyntheticWorld(small_config)
    rng = np.random.default_rng(0)
    users, ads = world.sample_pairs(20_000, rng)
    p_click, _ = world.probabilities(users, ads)
    aff = np.sum(world.click_vec[users] * world.ad_vec[ads][:, None, :], axis=-1)  # [n, facets]
    best = np.argmax(aff, axis=1)
    assert len(np.unique(best)) == small_config.click_facets  # every facet is the best for some impressions
    assert np.corrcoef(np.log(p_click), aff.max(axis=1))[0, 1] > 0.5


def test_streaming_bounded_memory(tmp_path, small_config):
    """Rows go to disk chunk by chunk: many shards, no chunk larger than the chunk size."""
    cfg = synthetic.SyntheticConfig(**{**small_config.to_dict(), "num_rows": 45_000})
    seen = []
    meta = synthetic.generate(cfg, tmp_path, shard_rows=7_000, progress=seen.append)
    assert sum(seen) == 45_000 and max(seen) <= 20_000 and len(seen) == 3
    n_lines = sum(len(p.read_text().splitlines()) - 1 for p in tmp_path.glob("*/part-*.csv"))
    assert n_lines == 45_000
    assert len(meta["splits"]["train"]["files"]) == math.ceil(meta["splits"]["train"]["rows"] / 7_000)


def test_missing_values_present(small_data):
    out, _ = small_data
    rows = _read_csv(out / "train" / "part-00000.csv")
    assert any(r["avg_ctr_7d"] == "" for r in rows)  # missing statistics are empty cells
    assert all(r["tags"] for r in rows)  # every ad has tags


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_rows": 0}, "num_rows"),
        ({"taxonomy": (18, 5)}, "taxonomy"),
        ({"days": 1}, "days"),
        ({"target_ctr": 0.7}, "target_ctr"),
        ({"shared_facets": 5}, "shared_facets"),
        ({"tags_per_ad": (3, 1)}, "tags_per_ad"),
    ],
)
def test_bad_generator_config_names_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        synthetic.SyntheticConfig(**kwargs)


def test_bad_format(tmp_path):
    with pytest.raises(ConfigError, match="parquet"):
        synthetic.generate(synthetic.SyntheticConfig(num_rows=10, num_users=5, num_ads=5), tmp_path, ("parquet",))
