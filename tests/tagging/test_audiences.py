"""`mvke-tf tag-users --by tag`: per task and tag the top-N users, exact, bounded, resumable; Beam == local.

The merge itself is checked against a brute-force ranking on integer logits (many exact ties); the job
on a tiny exported model against the full users x tags logit matrix ranked by numpy.
"""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from model_helpers import randomize_weights

from mvke_tf import tagging
from mvke_tf.cli import main
from mvke_tf.data import synthetic
from mvke_tf.export import export_saved_model
from mvke_tf.models import UserTagConfig, build_model

CFG = synthetic.SyntheticConfig(num_rows=120, num_users=40, num_ads=20, taxonomy=(2, 2, 2), seed=5)
TOP_N = 6


def _brute_force(logits, top_n):
    """Per (task, tag) the indices of the ``top_n`` best users: logit descending, then the user read first."""
    users = np.broadcast_to(np.arange(logits.shape[-1]), logits.shape)
    return np.lexsort((users, -logits), axis=-1)[..., :top_n]


def test_streaming_merge_and_combine_equal_brute_force_with_ties():
    rng = np.random.default_rng(0)
    n_users, top_n = 53, 5
    logits = rng.integers(-3, 3, size=(2, 7, n_users)).astype(np.float32)  # ties everywhere
    ids = np.array([f"u{i}" for i in range(n_users)], dtype=object)
    want = _brute_force(logits, top_n)

    state, start = tagging.AudienceState.empty(2, 7), 0
    while start < n_users:
        stop = min(n_users, start + int(rng.integers(1, 9)))
        state = tagging.merge_batch(state, logits[..., start:stop], np.arange(start, stop), ids[start:stop], top_n)
        # The memory bound: never more than top_n users per (task, tag), whatever was read.
        assert state.logits.shape == state.positions.shape == state.user_ids.shape == (2, 7, min(top_n, stop))
        start = stop
    np.testing.assert_array_equal(state.positions, want)
    np.testing.assert_array_equal(state.user_ids, ids[want])
    np.testing.assert_array_equal(state.logits, np.take_along_axis(logits, want, -1))

    # Partial states of disjoint, interleaved user sets (as Beam's workers see them), combined in any order.
    parts = rng.integers(0, 4, size=n_users)
    partials = []
    for p in range(4):
        members = np.flatnonzero(parts == p)
        partials.append(
            tagging.merge_batch(tagging.AudienceState.empty(2, 7), logits[..., members], members, ids[members], top_n)
        )
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        combined = partials[order[0]]
        for p in order[1:]:
            combined = tagging.combine_audiences(combined, partials[p], top_n)
        np.testing.assert_array_equal(combined.positions, want)
        np.testing.assert_array_equal(combined.user_ids, ids[want])

    # A batch that does not come after the state is refused (its ties would be broken the wrong way).
    with pytest.raises(ValueError, match="positions"):
        tagging.merge_batch(state, logits[..., :2], [0, 1], ids[:2], top_n)
    assert tagging.combine_audiences(state, tagging.AudienceState.empty(2, 7), top_n).positions.shape == (2, 7, top_n)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny SavedModel (random weights), the tag file and two CSV users files (a user of the first file
    repeated in the second: scored once, from the first)."""
    root = tmp_path_factory.mktemp("audiences")
    synthetic.generate(CFG, root / "data", formats=("csv",), shard_rows=200)
    tf.keras.utils.set_random_seed(0)
    model = build_model(synthetic.feature_config(), UserTagConfig(model_type="mvke_mt").scaled(0.25))
    randomize_weights(model, seed=2, stddev=0.1)
    export_saved_model(model, root / "model")
    (root / "tags.txt").write_text("\n".join(synthetic.all_tags(CFG)) + "\n")
    header, *rows = (root / "data" / "train" / "part-00000.csv").read_text().splitlines()
    users = root / "users"
    users.mkdir()
    (users / "part-00000.csv").write_text("\n".join([header, *rows[:40]]) + "\n")
    (users / "part-00001.csv").write_text("\n".join([header, rows[0], *rows[40:90]]) + "\n")
    return {"root": root, "users": users, "header": header, "rows": rows}


def _tag(env, out, *extra, users=None):
    root = env["root"]
    argv = ["tag-users", "--model", str(root / "model"), "--users", str(users or env["users"]), "--out", str(out)]
    argv += ["--tags", str(root / "tags.txt"), "--features", str(root / "data" / "features.yaml")]
    return main([*argv, *extra])


def _reference(env, users_dir):
    """All users (first row of each, files in order) x all tags: logits [tasks, T, U] and the user ids."""
    fields = tagging.resolve_user_fields(
        tagging.resolve_files(str(users_dir)), None, env["root"] / "data" / "features.yaml"
    )
    seen = {}
    for path in tagging.resolve_files(str(users_dir)):
        for uid, ex in tagging.iter_user_records(path, fields):
            seen.setdefault(uid, ex)
    if "model" not in env:  # loading the SavedModel is the slow part: once per module
        env["model"] = tagging.TaggingModel(env["root"] / "model")
        env["scorer"] = env["model"].scorer(synthetic.all_tags(CFG))
    tm, scorer = env["model"], env["scorer"]
    experts = tm.user_experts(tf.constant(list(seen.values())))
    logits = np.stack([scorer.logits(t, experts[t]).numpy().T for t in tm.tasks])
    return tm.tasks, np.array(list(seen), dtype=object), logits


def _lists(rows):
    """(task, tag) -> [(user_id, score)] best first."""
    out = {}
    for r in sorted(rows, key=lambda r: (r["task"], r["tag"], r["rank"])):
        out.setdefault((r["task"], r["tag"]), []).append((r["user_id"], r["score"]))
    return out


def _assert_lists_equal(got, want, atol=1e-6):
    """Same keys and scores (to ``atol``: another batch size may change a product's last bits); same users
    unless two scores are within ``atol`` (a float tie)."""
    assert got.keys() == want.keys()
    for key, ref in want.items():
        assert len(got[key]) == len(ref), key
        np.testing.assert_allclose([s for _, s in got[key]], [s for _, s in ref], atol=atol, err_msg=str(key))
        for r, ((u, _), (v, s)) in enumerate(zip(got[key], ref)):
            tied = sum(abs(s - s2) < atol for _, s2 in ref) > 1 or (r == len(ref) - 1 and len(ref) == TOP_N)
            assert u == v or tied, (key, r)


def _brute_force_lists(env, users_dir, top_n):
    tasks, ids, logits = _reference(env, users_dir)
    best = _brute_force(logits, top_n)
    probs = tf.sigmoid(logits).numpy()
    tags = synthetic.all_tags(CFG)
    return {
        (task, tag): [(ids[u], probs[i, j, u]) for u in best[i, j]]
        for i, task in enumerate(tasks)
        for j, tag in enumerate(tags)
    }


def test_by_tag_equals_brute_force_and_reads_back_in_both_formats(env, tmp_path, capsys):
    out = tmp_path / "out"
    assert _tag(env, out, "--by", "tag", "--top-n", str(TOP_N), "--batch-size", "7") == 0, capsys.readouterr().err
    assert f"top-{TOP_N} users per tag" in capsys.readouterr().out
    want = _brute_force_lists(env, env["users"], TOP_N)
    rows = tagging.read_output(out)
    assert set(rows[0]) == {"tag", "task", "rank", "user_id", "score"}
    assert pq.read_table(out).num_rows == len(rows)  # the checkpoint and job files stay out of the dataset
    _assert_lists_equal(_lists(rows), want)
    manifest = json.loads((out / tagging.MANIFEST).read_text())
    n_users = len({r.split(",")[0] for r in env["rows"][:90]})
    assert manifest["complete"] and manifest["users"] == n_users > TOP_N and manifest["rows"] == len(rows)
    # The checkpoint's size is tags x N per task, not users.
    state = tagging.AudienceState.load(out / manifest["state"])
    assert state.logits.shape == state.user_ids.shape == (2, len(synthetic.all_tags(CFG)), TOP_N)

    # TFRecord: the same lists, one tf.Example per (tag, task); --top-n above the users: every user, ranked.
    argv = ["--by", "tag", "--top-n", "500", "--format", "tfrecord", "--batch-size", "16"]
    assert _tag(env, tmp_path / "all", *argv) == 0, capsys.readouterr().err
    _assert_lists_equal(_lists(tagging.read_output(tmp_path / "all")), _brute_force_lists(env, env["users"], 500))


def test_by_tag_resumes_and_never_leaves_a_stale_output(env, tmp_path, capsys):
    out = tmp_path / "out"
    users = tmp_path / "users"
    users.mkdir()
    for f in env["users"].iterdir():
        (users / f.name).write_bytes(f.read_bytes())
    args = ("--by", "tag", "--top-n", str(TOP_N), "--batch-size", "8")
    assert _tag(env, out, *args, users=users) == 0
    assert "2 shard(s) computed, 0 already done" in capsys.readouterr().out
    part = out / "part-00000.parquet"
    mtime, before = part.stat().st_mtime_ns, tagging.read_output(out)
    assert _tag(env, out, *args, users=users) == 0
    assert "0 shard(s) computed, 2 already done" in capsys.readouterr().out
    assert part.stat().st_mtime_ns == mtime and tagging.read_output(out) == before

    # The second file changes and the run is interrupted in it. Only the newest checkpoint is kept (the
    # state after both files), so the first file is scored again and checkpointed; the old output is gone
    # (the manifest could not describe it), and the rerun resumes from the first file's checkpoint.
    second = users / "part-00001.csv"
    second.write_text("\n".join([env["header"], *env["rows"][45:70]]) + "\n")
    first_users = len({r.split(",")[0] for r in env["rows"][:40]})
    done = []

    def interrupt(n):
        done.append(n)
        if sum(done) > first_users:  # a batch of the second file is scored, its checkpoint not yet written
            raise KeyboardInterrupt

    common = dict(fmt="parquet", batch_size=8, features=env["root"] / "data" / "features.yaml", by="tag", top_n=TOP_N)
    with pytest.raises(KeyboardInterrupt):
        tagging.tag_users(env["root"] / "model", str(users), synthetic.all_tags(CFG), out, progress=interrupt, **common)
    assert not list(out.glob("part-*")) and not list(out.glob("*.tmp-*"))
    manifest = json.loads((out / tagging.MANIFEST).read_text())
    assert not manifest["complete"] and len(manifest["shards"]) == 1
    resumed = tagging.tag_users(env["root"] / "model", str(users), synthetic.all_tags(CFG), out, **common)
    assert [s["status"] for s in resumed["shards"]] == ["skipped", "computed"]
    assert [p.name for p in out.glob("_state-*")] == ["_state-00001.npz"]
    _assert_lists_equal(_lists(tagging.read_output(out)), _brute_force_lists(env, users, TOP_N))

    # Another N into the same directory is another job: refused, the output left as it was.
    assert _tag(env, out, "--by", "tag", "--top-n", "3", users=users) == 2
    assert "different job" in capsys.readouterr().err and part.exists()


def test_direction_options_are_checked(env, tmp_path, capsys):
    def error(*extra):
        assert _tag(env, tmp_path / "out", *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("mvke-tf: error:") and "\n" not in err.strip(), err
        return err

    assert "--top-n" in error("--top-n", "5") and "--by tag" in error("--top-n", "5")
    assert "--top-k" in error("--by", "tag", "--top-k", "5")
    assert "--top-n: must be at least 1" in error("--by", "tag", "--top-n", "0")
    assert not (tmp_path / "out").exists()


def test_beam_by_tag_equals_the_local_job(env, tmp_path):
    from mvke_tf.tagging.beam import run_beam

    tags = synthetic.all_tags(CFG)
    features = env["root"] / "data" / "features.yaml"
    common = dict(by="tag", top_n=TOP_N, batch_size=9, features=features)
    tagging.tag_users(env["root"] / "model", str(env["users"]), tags, tmp_path / "local", **common)
    manifest = run_beam(env["root"] / "model", str(env["users"]), tags, tmp_path / "beam", num_shards=1, **common)
    assert manifest["by"] == "tag" and manifest["outputs"]
    _assert_lists_equal(_lists(tagging.read_output(tmp_path / "beam")), _lists(tagging.read_output(tmp_path / "local")))
