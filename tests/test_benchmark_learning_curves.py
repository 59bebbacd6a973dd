"""The learning-curve benchmark's own logic: data prefixes, the shared eval day, the references, the gap share.

Tiny worlds only: the generator's chunk is shrunk (both the reference writer and the code under
test read it at call time), so each test runs in seconds.
"""

import json
import os

import numpy as np
import pytest

from benchmarks.learning_curves import (
    cell_cache,
    data_prefixes,
    markdown_tables,
    plots,
    prose,
    reference,
    runner,
    seed_summary,
)
from mvke_tf.data import synthetic
from mvke_tf.data.dataset import resolve_files
from mvke_tf.metrics import auc

TINY = dict(num_ads=150, taxonomy=(4, 3, 5), target_ctr=0.2, target_cvr=0.3)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(synthetic, "_CHUNK_ROWS", 1_000)


def test_gap_share():
    assert seed_summary.gap_share(0.9, 0.9) == pytest.approx(1.0)
    assert seed_summary.gap_share(0.5, 0.9) == pytest.approx(0.0)
    assert seed_summary.gap_share(0.7, 0.9) == pytest.approx(0.5)
    assert seed_summary.gap_share(0.8, 0.9, floor=0.7) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="oracle"):
        seed_summary.gap_share(0.6, 0.5)


def test_world_config_puts_eval_day_after_train_rows():
    cfg = data_prefixes.world_config()
    assert cfg.num_rows == data_prefixes.MAX_TRAIN_ROWS + data_prefixes.EVAL_ROWS
    rows = np.array([data_prefixes.MAX_TRAIN_ROWS - 1, data_prefixes.MAX_TRAIN_ROWS, cfg.num_rows - 1])
    day = 1 + rows * cfg.days // cfg.num_rows
    assert day.tolist() == [cfg.days - 1, cfg.days, cfg.days]
    with pytest.raises(ValueError, match="eval_rows"):
        data_prefixes.world_config(max_train_rows=50_000, eval_rows=30_000)


def test_prefixes_and_eval_day_equal_generate(tmp_path, small_chunks):
    cfg = data_prefixes.world_config(max_train_rows=4_000, eval_rows=2_000, num_users=300, **TINY)
    full = tmp_path / "full"
    synthetic.generate(cfg, full, shard_rows=2_000)
    root = tmp_path / "lc"
    info = data_prefixes.prepare_data(cfg, root, 2_000, shard_rows=2_000, eval_rows=2_000)
    # Only the first training shard so far; extending to 4,000 rows adds the second and keeps the first.
    assert sorted(p.name for p in (root / "train").iterdir()) == ["part-00000.csv"]
    first_mtime = (root / "train" / "part-00000.csv").stat().st_mtime_ns
    info2 = data_prefixes.prepare_data(cfg, root, 4_000, shard_rows=2_000, eval_rows=2_000)
    assert (root / "train" / "part-00000.csv").stat().st_mtime_ns == first_mtime
    assert info2["eval"] == info["eval"]
    for part in ("train/part-00000.csv", "train/part-00001.csv", "eval/part-00000.csv"):
        assert (root / part).read_bytes() == (full / part).read_bytes(), part
    meta = json.loads((full / "metadata.json").read_text())
    assert info["eval"]["rows"] == meta["splits"]["eval"]["rows"] == 2_000
    assert info["eval"]["oracle_auc"] == pytest.approx(meta["oracle_auc_eval"])
    assert info["eval"]["sha256"] == data_prefixes.file_sha256(full / "eval" / "part-00000.csv")
    # Each size's directory: a prefix of the training files, the very same eval file.
    small, large = (data_prefixes.size_dir(root, n, shard_rows=2_000) for n in (2_000, 4_000))
    assert [os.path.basename(f) for f in resolve_files(small / "train")] == ["part-00000.csv"]
    assert len(resolve_files(large / "train")) == 2
    evals = {os.path.realpath(f) for d in (small, large) for f in resolve_files(d / "eval")}
    assert evals == {os.path.realpath(root / "eval" / "part-00000.csv")}
    assert json.loads((small / "metadata.json").read_text())["splits"]["train"]["rows"] == 2_000
    with pytest.raises(ValueError, match="another generator config"):
        data_prefixes.prepare_data(
            data_prefixes.world_config(4_000, 2_000, num_users=301, **TINY), root, 2_000, 2_000, 2_000
        )


def test_fit_logistic_recovers_coefficients_from_true_probabilities():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5_000, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
    p = 1 / (1 + np.exp(-(-1.0 + x @ np.array([0.7, -0.3, 1.5]))))
    model = reference.fit_logistic(x, p, l2=0.0)
    np.testing.assert_allclose(reference.logistic_score(model, x), p, atol=1e-6)


def test_group_ids_and_repeated():
    ids = reference._group_ids(["t3_1_4|t0_0_2", "", "t1_2_0"], level=3, n2=5)
    assert ids.tolist() == [[16, 0], [-1, -1], [7, -1]]
    assert reference._group_ids(["s12|s3"], level=2, n2=5).tolist() == [[12, 3]]
    a, b = np.array([[1, 2, -1]]), np.array([[2, 5, -1]])
    assert sorted(set(reference._repeated(a, b).ravel()) - {-1}) == [2]


def test_references_order_on_a_tiny_world(tmp_path, small_chunks):
    cfg = data_prefixes.world_config(max_train_rows=4_000, eval_rows=2_000, num_users=400, **TINY)
    data_prefixes.prepare_data(cfg, tmp_path, 4_000, shard_rows=4_000, eval_rows=2_000)
    refs = reference.compute_references(cfg, tmp_path, label_rows=(4_000,))
    evald = reference.read_rows(tmp_path / "eval" / "part-00000.csv")
    assert refs["fit_rows"] == 4_000 and len(evald["click"]) == 2_000
    for t in data_prefixes.TASKS:
        assert refs["oracle"][t] == pytest.approx(auc(evald[t], evald[f"p_{t}"]))
        # The oracle's own inputs, fitted, give the oracle back; features carrying less score less,
        # and the observable features still beat a random score clearly.
        assert refs["all_latents"][t] == pytest.approx(refs["oracle"][t], abs=2e-3)
        assert refs["latent_facets"][t] < refs["oracle"][t]
        assert refs["observable"][t] < refs["latent_facets"][t] + 0.02
        assert refs["observable"][t] > 0.6, (t, refs)
        assert refs["observable_on_labels"]["4000"][t] > 0.55, (t, refs)
    # The observable features read no id: the same rows with the ids blanked give the same features.
    world = synthetic.SyntheticWorld(cfg)
    blanked = {**evald, "user_id": ["u0"] * 2_000, "ad_id": ["a0"] * 2_000}
    for t, x in reference.reference_features(world, evald, "observable").items():
        np.testing.assert_array_equal(x, reference.reference_features(world, blanked, "observable")[t])


def _fake_results(click, conversion):
    """Results with two models, 3 seeds at 200k and 1 at 1M, AUC means as given per size."""
    cells = []
    for m, shift in (("a", 0.0), ("b", 0.01)):
        for n, seeds in ((200_000, 3), (1_000_000, 1)):
            for s in range(seeds):
                jitter = 0.002 * (s - 1) if seeds > 1 else 0.0
                auc_ = {"click": click[n] + shift + jitter, "conversion": conversion[n] + shift - jitter}
                cells.append({"model": m, "train_rows": n, "seed": s, "auc": auc_})
    refs = {
        "oracle": {"click": 0.85, "conversion": 0.93},
        "all_latents": {"click": 0.85, "conversion": 0.93},
        "latent_facets": {"click": 0.83, "conversion": 0.91},
        "observable": {"click": 0.80, "conversion": 0.88},
        "observable_on_labels": {"20000": {"click": 0.79, "conversion": 0.86, "conversions": 120}},
    }
    return {"cells": cells, "references": refs}


def test_summary_table_and_reading():
    results = _fake_results({200_000: 0.66, 1_000_000: 0.67}, {200_000: 0.70, 1_000_000: 0.75})
    summary = seed_summary.summarize(results["cells"])
    assert summary["a"][200_000]["click"]["n"] == 3
    assert summary["a"][200_000]["click"]["mean"] == pytest.approx(0.66)
    assert summary["b"][1_000_000]["conversion"]["std"] == 0.0
    table = markdown_tables.tables(results)
    # a's conversion gap share at 1M: (0.75 - 0.5) / (0.93 - 0.5)
    assert f"{(0.75 - 0.5) / 0.43:.1%}" in table
    assert "200k → 1M | +0.0100 | +0.0500" in table
    text = prose.reading(results)
    assert "conversion rises with rows more than click does" in text
    flat = prose.reading(_fake_results({200_000: 0.66, 1_000_000: 0.70}, {200_000: 0.70, 1_000_000: 0.70}))
    assert "click rises with rows more than conversion does" in flat


def _with_same_steps(results, click, conversion, seeds=3):
    """Adds 200k-row x 5-epoch cells with the given mean AUCs (same shifts and jitter as _fake_results)."""
    cells = []
    for m, shift in (("a", 0.0), ("b", 0.01)):
        for s in range(seeds):
            jitter = 0.002 * (s - 1) if seeds > 1 else 0.0
            auc_ = {"click": click + shift + jitter, "conversion": conversion + shift - jitter}
            cells.append({"model": m, "train_rows": 200_000, "seed": s, "auc": auc_})
    block = {"rows": 200_000, "epochs": 5, "compare_rows": 1_000_000, "seeds": seeds, "cells": cells, "not_run": []}
    return {**results, "settings": {"batch_size": 512}, "same_steps": block}


def test_same_steps_table_and_reading_separate_rows_from_steps():
    base = _fake_results({200_000: 0.66, 1_000_000: 0.70}, {200_000: 0.70, 1_000_000: 0.80})
    # Repeating the 200k rows gives 40% of the click gain and 20% of the conversion gain.
    results = _with_same_steps(base, click=0.676, conversion=0.72)
    table = markdown_tables.same_steps_table(results)
    assert table.splitlines()[0].startswith(
        "| model | task | 200k × 1 epoch (391 steps) | 200k × 5 epochs (1,955 steps)"
    )
    assert "| a | click | 0.6600 ± 0.0016 | 0.6760 ± 0.0016, 3 | 0.7000 | 40% |" in table
    assert "| b | conversion | 0.7100 ± 0.0016 | 0.7300 ± 0.0016, 3 | 0.8100 | 20% |" in table
    text = prose.reading(results)
    assert "The extra steps alone give 40% (click) and 20% (conversion)" in text
    assert "+0.0800 conversion (beyond twice the seed std 0.0016)" in text
    assert "conversion is data-starved in the strict sense" in text
    # Repeated rows as good as new ones at equal steps: the gain is steps, not rows.
    steps_only = prose.reading(_with_same_steps(base, click=0.70, conversion=0.80))
    assert "0.0000 conversion (within twice the seed std" in steps_only
    assert "under-trained rather than short of rows" in steps_only
    assert "score below one pass" not in text
    overfit = prose.reading(_with_same_steps(base, click=0.65, conversion=0.69))
    assert "5 passes over the same rows even score below one pass (click and conversion)" in overfit
    # Without same-steps cells there is no such bullet, and no table.
    assert "Rows or steps" not in prose.reading(base)
    assert markdown_tables.same_steps_table({**base, "same_steps": {**results["same_steps"], "cells": []}}) == ""


def test_cell_path_keeps_one_epoch_names(tmp_path):
    assert cell_cache.cell_path(tmp_path, "mmoe", 200_000, 2).name == "mmoe-200000-2.json"
    assert cell_cache.cell_path(tmp_path, "mmoe", 200_000, 2, epochs=5).name == "mmoe-200000x5-2.json"


def test_minutes_per_size_sum_the_cells_of_each_size():
    cells = [
        {"train_rows": 1_000_000, "wall_seconds": 1_200.0},
        {"train_rows": 200_000, "wall_seconds": 600.0},
        {"train_rows": 200_000, "wall_seconds": 60.0},
    ]
    assert seed_summary._rows_by_size(cells) == "200k 11 min, 1M 20 min"


def test_plan_order_runs_seed_zero_curves_first():
    order = runner._plan_cells({200_000: 3, 1_000_000: 1}, ["x", "y", "z"])
    assert order[:6] == [
        ("x", 200_000, 0),
        ("y", 200_000, 0),
        ("x", 1_000_000, 0),
        ("y", 1_000_000, 0),
        ("z", 200_000, 0),
        ("z", 1_000_000, 0),
    ]
    assert order[6:] == [(m, 200_000, s) for s in (1, 2) for m in "xyz"]


def test_reading_without_seed_noise_says_so_and_plot_writes_png(tmp_path):
    results = _fake_results({200_000: 0.66, 1_000_000: 0.67}, {200_000: 0.70, 1_000_000: 0.75})
    results["cells"] = [c for c in results["cells"] if c["seed"] == 0]
    assert seed_summary.seed_noise(seed_summary.summarize(results["cells"])) is None
    text = prose.reading(results)
    assert "no seed std was measured" in text and "not tested against seed noise" in text
    path = plots.plot(results, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_package_keeps_the_names_of_the_former_module():
    import benchmarks.learning_curves as lc

    assert lc.main is runner.main
    for name in lc.__all__:
        assert getattr(lc, name) is not None, name
    assert lc.reading is prose.reading and lc.world_config is data_prefixes.world_config
