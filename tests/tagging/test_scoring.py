"""Batch tagging (`mvke-tf tag-users`): exact against pair scoring, resumable, Beam == local."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import randomize_weights

from mvke_tf import tagging
from mvke_tf.cli import main
from mvke_tf.data import synthetic
from mvke_tf.export import export_saved_model
from mvke_tf.models import UserTagConfig, build_model

CFG = synthetic.SyntheticConfig(num_rows=400, num_users=50, num_ads=60, taxonomy=(3, 2, 4), seed=11)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic data (4 shards per format, 50 users) and an MVKE-mt SavedModel with random weights
    (its gates far from uniform, so a wrong gate changes every score)."""
    root = tmp_path_factory.mktemp("tagging")
    synthetic.generate(CFG, root / "data", formats=("csv", "tfrecord"), shard_rows=100)
    tf.keras.utils.set_random_seed(3)
    model = build_model(synthetic.feature_config(), UserTagConfig(model_type="mvke_mt").scaled(0.25))
    randomize_weights(model, seed=3, stddev=0.1)
    export_saved_model(model, root / "model")
    return root


def _users(root, ext="tfrecord.gz"):
    return str(root / "data" / "*" / f"part-*.{ext}")


def _first_rows(root):
    """The local job's user order and examples: the first row of every user, files in sorted order."""
    seen = {}
    for path in tagging.resolve_files(_users(root)):
        for uid, ex in tagging.iter_user_records(path, None):
            seen.setdefault(uid, ex)
    return list(seen), list(seen.values())


def _pair_scores(model_dir, examples, tags):
    """Full-model pair scoring through serving_default: per task probabilities [users, tags]."""
    fn = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    pairs = []
    for ex in examples:
        base = tf.train.Example.FromString(ex)
        for tag in tags:
            e = tf.train.Example()
            e.CopyFrom(base)
            e.features.feature["tags"].bytes_list.value[:] = [tag.encode()]
            pairs.append(e.SerializeToString())
    out = fn(examples=tf.constant(pairs))
    return {t: out[t].numpy().reshape(len(examples), len(tags)) for t in ("click", "conversion")}


def _by_key(rows):
    return {(r["user_id"], r["task"], r["rank"]): (r["tag"], r["score"]) for r in rows}


def _assert_same(got, want, atol=1e-6):
    """Same (user, task, rank) keys; same tags (unless a float tie) and scores to ``atol``.

    Different batch sizes may change a product's last float bits, so scores are compared with a tolerance.
    """
    assert got.keys() == want.keys()
    for k, (tag, score) in want.items():
        assert got[k][1] == pytest.approx(score, abs=atol), k
        tied = [v for (u, t, _), (_, v) in want.items() if (u, t) == k[:2] and abs(v - score) < atol]
        assert got[k][0] == tag or len(tied) > 1, k


def test_scores_equal_pair_scoring_and_top_k_equals_brute_force(setup, tmp_path):
    tags = synthetic.all_tags(CFG)
    manifest = tagging.tag_users(setup / "model", _users(setup), tags, tmp_path / "all", top_k=len(tags), batch_size=16)
    ids, examples = _first_rows(setup)
    assert manifest["users"] == len(ids) >= 45 and manifest["shards_computed"] == 4
    rows = _by_key(tagging.read_output(tmp_path / "all"))
    assert len(rows) == len(ids) * 2 * len(tags)
    ref = _pair_scores(setup / "model", examples, tags)
    col = {t: i for i, t in enumerate(tags)}
    for task, probs in ref.items():
        order = np.argsort(-probs, axis=1, kind="stable")
        for u, uid in enumerate(ids):
            got_tags = [rows[(uid, task, r + 1)][0] for r in range(len(tags))]
            got = np.array([rows[(uid, task, r + 1)][1] for r in range(len(tags))])
            # Every pair's score equals serving_default's probability ...
            np.testing.assert_allclose(got, probs[u, [col[t] for t in got_tags]], atol=1e-5)
            # ... and the ranking is numpy's argsort of the full matrix (up to float ties).
            ref_sorted = probs[u, order[u]]
            np.testing.assert_allclose(got, ref_sorted, atol=1e-5)
            distinct = np.r_[np.diff(ref_sorted) < -1e-5, True] & np.r_[True, np.diff(ref_sorted) < -1e-5]
            assert [t for t, d in zip(got_tags, distinct) if d] == [tags[i] for i, d in zip(order[u], distinct) if d]

    # Top-K with a score floor is the head of the full ranking.
    m5 = tagging.tag_users(setup / "model", _users(setup), tags, tmp_path / "k5", top_k=5, min_score=0.05)
    head = _by_key(tagging.read_output(tmp_path / "k5"))
    assert m5["top_k_effective"] == 5 and head
    _assert_same(head, {k: v for k, v in rows.items() if k[2] <= 5 and v[1] >= 0.05})


def test_resume_recomputes_only_missing_shards(setup, tmp_path):
    tags = synthetic.all_tags(CFG)
    out = tmp_path / "out"
    first = tagging.tag_users(setup / "model", _users(setup), tags, out, top_k=4)
    before = tagging.read_output(out)
    names = [s["output"] for s in first["shards"]]
    mtimes = {n: os.stat(out / n).st_mtime_ns for n in names}
    (out / names[2]).unlink()
    second = tagging.tag_users(setup / "model", _users(setup), tags, out, top_k=4)
    assert [s["status"] for s in second["shards"]] == ["skipped", "skipped", "computed", "skipped"]
    assert second["users"] == first["users"] and second["users_computed"] == first["shards"][2]["users"]
    assert tagging.read_output(out) == before
    assert all(os.stat(out / n).st_mtime_ns == mtimes[n] for n in names if n != names[2])
    assert json.loads((out / tagging.MANIFEST).read_text())["shards_skipped"] == 3
    assert not [f for f in os.listdir(out) if ".tmp" in f]
    # A rerun with other settings into the same directory is refused (it would mix results).
    with pytest.raises(tagging.TaggingError, match="different job"):
        tagging.tag_users(setup / "model", _users(setup), tags, out, top_k=7)


def test_beam_gives_the_same_rows_as_local(setup, tmp_path):
    from mvke_tf.tagging.beam import run_beam

    tags = synthetic.all_tags(CFG)
    tagging.tag_users(setup / "model", _users(setup), tags, tmp_path / "local", top_k=6, batch_size=8)
    run_beam(setup / "model", _users(setup), tags, tmp_path / "beam", top_k=6, batch_size=8)
    _assert_same(_by_key(tagging.read_output(tmp_path / "beam")), _by_key(tagging.read_output(tmp_path / "local")))


def test_cli_csv_tfrecord_output_and_errors(setup, tmp_path, capsys):
    tags_file = tmp_path / "tags.txt"
    tags_file.write_text("\n".join(synthetic.all_tags(CFG)) + "\n")
    # Pusher layout: the newest numeric version is used.
    base = tmp_path / "serving"
    base.mkdir()
    (base / "7").symlink_to(setup / "model")
    (base / "12").symlink_to(setup / "model")
    assert tagging.resolve_model_dir(base) == str(base / "12")
    out = tmp_path / "cli"
    args = ["tag-users", "--model", str(base), "--users", _users(setup, "csv"), "--out", str(out)]
    rc = main([*args, "--tags", str(tags_file), "--format", "tfrecord", "--top-k", "3", "--tasks", "conversion"])
    assert rc == 0, capsys.readouterr().err
    assert "tagged" in capsys.readouterr().out
    ref = tmp_path / "ref"
    tagging.tag_users(setup / "model", _users(setup), synthetic.all_tags(CFG), ref, top_k=3, tasks=["conversion"])
    _assert_same(_by_key(tagging.read_output(out)), _by_key(tagging.read_output(ref)))
    from_data = tagging.tags_from_data(setup / "data")  # the tags of the ads shown: a subset of the taxonomy
    assert len(from_data) > 10 and set(from_data) <= set(synthetic.all_tags(CFG))
    assert tagging.tags_from_data(_users(setup)) == from_data

    def error(argv):
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "no such directory" in error([*args[:2], str(tmp_path / "nope"), *args[3:], "--tags", str(tags_file)])
    assert "unknown task" in error([*args, "--tags", str(tags_file), "--tasks", "purchase"])
    assert "no data files" in error([*args[:4], str(tmp_path / "none-*.csv"), *args[5:], "--tags", str(tags_file)])
    assert "--tags FILE" in error(args)
    empty = tmp_path / "empty.csv"
    empty.write_text(next((setup / "data" / "train").glob("*.csv")).read_text().splitlines()[0] + "\n")
    features = str(setup / "data" / "features.yaml")
    argv = [*args[:4], str(empty), "--out", str(tmp_path / "none"), "--tags", str(tags_file), "--features", features]
    assert "no users" in error(argv)
