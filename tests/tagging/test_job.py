"""`mvke-tf tag-users` resume and failure handling: which shards count as done, what a failed run leaves.

The scoring itself (exact against pair scoring, Beam == local) is tested in tests/tagging/test_scoring.py;
here a tiny model and a handful of CSV users keep every run cheap.
"""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from mvke_tf import tagging
from mvke_tf.cli import main
from mvke_tf.data import synthetic
from mvke_tf.export import export_saved_model
from mvke_tf.models import UserTagConfig, build_model
from mvke_tf.tagging.resume import _process_start

CFG = synthetic.SyntheticConfig(num_rows=100, num_users=20, num_ads=20, taxonomy=(2, 2, 2), seed=1)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A SavedModel (random weights: only the bookkeeping is under test), the tag file, features.yaml and
    the CSV header and data rows of the generated data."""
    root = tmp_path_factory.mktemp("tag_users")
    synthetic.generate(CFG, root / "data", formats=("csv",), shard_rows=100)
    tf.keras.utils.set_random_seed(0)
    export_saved_model(
        build_model(synthetic.feature_config(), UserTagConfig(model_type="mvke_mt").scaled(0.25)), root / "model"
    )
    (root / "tags.txt").write_text("\n".join(synthetic.all_tags(CFG)) + "\n")
    header, *rows = (root / "data" / "train" / "part-00000.csv").read_text().splitlines()
    return {"root": root, "header": header, "rows": rows}


def _tag(env, users, out, *extra):
    root = env["root"]
    argv = ["tag-users", "--model", str(root / "model"), "--users", str(users), "--out", str(out)]
    argv += ["--tags", str(root / "tags.txt"), "--features", str(root / "data" / "features.yaml"), "--top-k", "3"]
    return main([*argv, *extra])


def _csv(env, path, rows):
    path.write_text("\n".join([env["header"], *rows]) + "\n")
    return path


def _users(rows):
    return {r.split(",")[0] for r in rows}


def _err_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("mvke-tf: error:") and "\n" not in err, err
    return err


def test_rerun_recomputes_a_shard_whose_users_file_changed(env, tmp_path, capsys):
    out = tmp_path / "out"
    users = _csv(env, tmp_path / "users.csv", [])
    assert _tag(env, users, out) == 2
    assert "no users" in _err_line(capsys)
    # The same file, now with users: its shard is computed, not taken from the failed run.
    rows = env["rows"][:12]
    _csv(env, users, rows)
    assert _tag(env, users, out) == 0
    assert "1 shard(s) computed, 0 already done" in capsys.readouterr().out
    assert {r["user_id"] for r in tagging.read_output(out)} == _users(rows)
    # Unchanged input: skipped.
    assert _tag(env, users, out) == 0
    assert "0 shard(s) computed, 1 already done" in capsys.readouterr().out
    # Same size, other content (rows reordered): recomputed.
    _csv(env, users, rows[::-1])
    assert _tag(env, users, out) == 0
    assert "1 shard(s) computed, 0 already done" in capsys.readouterr().out
    shard = json.loads((out / tagging.MANIFEST).read_text())["shards"][0]
    assert shard["input_bytes"] == users.stat().st_size and len(shard["input_sha256"]) == 64


def test_a_changed_earlier_file_recomputes_the_later_shards(env, tmp_path, capsys):
    """Users are scored in the first file they appear in: a later shard depends on the earlier files too."""
    rows = env["rows"]
    moved = next(r for r in rows if r.split(",")[0] not in _users(rows[:10]))
    data = tmp_path / "users"
    data.mkdir()
    _csv(env, data / "part-00000.csv", [*rows[:10], moved])
    _csv(env, data / "part-00001.csv", [moved, *rows[10:14]])
    out = tmp_path / "out"
    assert _tag(env, data, out) == 0
    assert "2 shard(s) computed" in capsys.readouterr().out
    uid = moved.split(",")[0]
    assert {r["user_id"] for r in tagging.read_output(out) if r["rank"] == 1 and r["task"] == "click"} >= {uid}
    _csv(env, data / "part-00000.csv", rows[:10])  # the user now appears first in part-00001
    assert _tag(env, data, out) == 0
    assert "2 shard(s) computed" in capsys.readouterr().out
    manifest = json.loads((out / tagging.MANIFEST).read_text())
    assert manifest["shards"][1]["users"] == len(_users([moved, *rows[10:14]]) - _users(rows[:10]))
    assert sum(1 for r in tagging.read_output(out) if r["user_id"] == uid and r["rank"] == 1) == 2  # 2 tasks, once


def test_a_failed_run_leaves_nothing_that_blocks_the_next(env, tmp_path, capsys):
    out = tmp_path / "out"
    users = _csv(env, tmp_path / "users.csv", env["rows"][:8])
    assert _tag(env, users, out, "--top-k", "0") == 2
    assert "--top-k" in _err_line(capsys)
    assert not out.exists() or not list(out.iterdir())
    # A CSV lacking a feature column, then one of binary garbage.
    missing = _csv(env, tmp_path / "missing.csv", [])
    missing.write_text(env["header"].replace(",gender,", ",sex,") + "\n" + "\n".join(env["rows"][:8]) + "\n")
    assert _tag(env, missing, out) == 2
    assert "gender" in _err_line(capsys)
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(bytes([0xEB, 0x9F, 0x00, 0xFF]) * 64)
    assert _tag(env, garbage, out) == 2
    _err_line(capsys)
    assert not out.exists() or not list(out.iterdir())
    assert _tag(env, users, out, "--top-k", "5") == 0, capsys.readouterr().err
    assert {r["user_id"] for r in tagging.read_output(out)} == _users(env["rows"][:8])


def test_a_rerun_removes_its_stale_temporary_files(env, tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid names no running process: its temporary file is left over from a killed run
    parent = os.getppid()
    started = _process_start(parent)
    assert started  # Linux: a process's start time from /proc
    stale = out / f".part-00000.parquet.tmp-{dead.pid}-12345"
    stale.write_bytes(b"half a parquet file")
    # The pid of a killed run that a new process got since (pid reuse): the start time tells them apart.
    reused = out / f".part-00000.parquet.tmp-{parent}-{int(started) + 1}"
    reused.write_bytes(b"half a parquet file")
    alive = out / f".part-00000.parquet.tmp-{parent}-{started}"  # a running run: maybe a concurrent one
    alive.write_bytes(b"")
    legacy = out / f"part-00000.parquet.tmp-{dead.pid}"  # an earlier version's name, its process gone
    legacy.write_bytes(b"half a parquet file")
    other = out / f"notes.txt.tmp-{dead.pid}"  # not this job's pattern
    other.write_text("kept")
    users = _csv(env, tmp_path / "users.csv", env["rows"][:8])
    assert _tag(env, users, out) == 0, capsys.readouterr().err
    assert not stale.exists() and not reused.exists() and not legacy.exists()
    assert alive.exists() and other.exists()
    # A concurrent run's hidden temporary file does not stop the output from reading as a Parquet dataset.
    other.unlink()
    assert set(pd.read_parquet(out)["user_id"]) == _users(env["rows"][:8])


def test_garbage_csv_names_the_file_and_the_fix(env, tmp_path, capsys):
    garbage = tmp_path / "users.csv"
    garbage.write_bytes(bytes([0xEB, 0x01, 0xC3, 0x28]) * 32)
    assert _tag(env, garbage, tmp_path / "out") == 2
    err = _err_line(capsys)
    assert str(garbage) in err and "UTF-8" in err and "fix:" in err and "codec" not in err
    # Garbage after a good header: the file and the line.
    later = _csv(env, tmp_path / "later.csv", env["rows"][:3])
    later.write_bytes(later.read_bytes() + bytes([0xEB, 0xC3, 0x28, 0x0A]))
    assert _tag(env, later, tmp_path / "out2") == 2
    err = _err_line(capsys)
    assert str(later) in err and "line 5" in err and "fix:" in err
    # A row with too few columns or a non-number in a numeric column: the file and the line.
    short = _csv(env, tmp_path / "short.csv", [*env["rows"][:2], "u1,a1,1"])
    assert _tag(env, short, tmp_path / "out3") == 2
    err = _err_line(capsys)
    assert str(short) in err and "line 4" in err
    fields = env["header"].split(",")
    bad = env["rows"][0].split(",")
    bad[fields.index("avg_ctr_7d")] = "high"
    text = _csv(env, tmp_path / "text.csv", [",".join(bad)])
    assert _tag(env, text, tmp_path / "out4") == 2
    err = _err_line(capsys)
    assert str(text) in err and "line 2" in err and "avg_ctr_7d" in err
    records = tmp_path / "users.tfrecord.gz"
    records.write_bytes(b"not gzip" * 8)
    assert _tag(env, records, tmp_path / "out5") == 2
    err = _err_line(capsys)
    assert str(records) in err and "not a readable TFRecord file (inflate() failed" in err and "fix:" in err


def test_output_directory_reads_as_a_parquet_dataset(env, tmp_path, capsys):
    import pandas as pd
    import pyarrow.parquet as pq

    data = tmp_path / "users"
    data.mkdir()
    _csv(env, data / "part-00000.csv", env["rows"][:6])
    _csv(env, data / "part-00001.csv", env["rows"][6:14])
    out = tmp_path / "out"
    assert _tag(env, data, out) == 0
    assert str(out / "_manifest.json") in capsys.readouterr().out
    n = len(tagging.read_output(out))
    assert n and pq.read_table(out).num_rows == n and len(pd.read_parquet(out)) == n


def test_cli_errors_are_one_line_naming_the_file_and_the_fix(env, tmp_path, capsys, monkeypatch):
    users = _csv(env, tmp_path / "users.csv", env["rows"][:8])
    # --out is a file.
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert _tag(env, users, a_file) == 2
    assert f"--out {a_file}: is a file, not a directory; fix:" in _err_line(capsys)

    # --out cannot be written while the job runs (a read-only directory; root ignores modes, so simulated).
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro" / ".part-00000.parquet.tmp-1-2"))

    with monkeypatch.context() as m:
        m.setattr(tagging, "tag_users", refuse)
        assert _tag(env, users, tmp_path / "ro") == 2
    err = _err_line(capsys)
    assert f"--out {tmp_path / 'ro'}: cannot write" in err and "Permission denied" in err and "fix:" in err
    # A --tags file that is not UTF-8: the file and the line.
    tags = tmp_path / "tags.txt"
    tags.write_bytes(b"t0_1_2\nt1_0_0\n\xff\xfe bad\n")
    argv = ["tag-users", "--model", str(env["root"] / "model"), "--users", str(users), "--out", str(tmp_path / "o")]
    argv += ["--tags", str(tags), "--features", str(env["root"] / "data" / "features.yaml")]
    assert main(argv) == 2
    err = _err_line(capsys)
    assert f"--tags {tags}: line 3 is not UTF-8 text" in err and "fix:" in err
    # An unclosed quote: the line it opens on, not the end of the file.
    rows = env["rows"][:8]
    broken = _csv(env, tmp_path / "broken.csv", [*rows[:3], rows[3].replace(",", ',"', 1), *rows[4:]])
    assert _tag(env, broken, tmp_path / "o2") == 2
    err = _err_line(capsys)
    assert f"{broken}: line 5 is not valid CSV" in err and "a quote opened on line 5 is not closed" in err, err


def test_train_config_errors_name_the_field(tmp_path, capsys):
    from mvke_tf.data import synthetic

    data = tmp_path / "data"
    data.mkdir()
    synthetic.feature_config().to_yaml(data / "features.yaml")
    for text, needle in (
        ("- embedding_dim: 8\n", "holds a list, not a mapping of model config fields; fix:"),
        ("embedding_dim: abc\n", "embedding_dim='abc' is not an integer; fix: give embedding_dim as an integer"),
        ("dnn_units: [16, x]\n", "dnn_units=[16, 'x'] is not a list of integers"),
    ):
        config = tmp_path / "model.yaml"
        config.write_text(text)
        assert main(["train", "--data", str(data), "--config", str(config)]) == 2
        err = _err_line(capsys)
        assert needle in err, err


def test_parquet_users_tag_as_their_csv_rows_do(env, tmp_path):
    """The same users as CSV and as Parquet (its integer-valued columns stored as integers) get the same tags."""
    import pandas as pd

    from mvke_tf.tagging import read_output

    csv_dir = env["root"] / "data" / "eval"
    table = pd.read_csv(sorted(csv_dir.glob("part-*.csv"))[0])  # empty cells: missing (null in Parquet)
    (tmp_path / "pq").mkdir()
    table.to_parquet(tmp_path / "pq" / "part-00000.parquet", index=False)
    assert _tag(env, csv_dir, tmp_path / "out-csv") == 0
    assert _tag(env, tmp_path / "pq", tmp_path / "out-pq") == 0
    by_csv, by_parquet = read_output(tmp_path / "out-csv"), read_output(tmp_path / "out-pq")
    assert len(by_csv) == len(by_parquet) > 0
    key = lambda r: (r["user_id"], r["task"], r["rank"])  # noqa: E731
    for a, b in zip(sorted(by_csv, key=key), sorted(by_parquet, key=key)):
        assert (a["user_id"], a["task"], a["rank"], a["tag"]) == (b["user_id"], b["task"], b["rank"], b["tag"])
        assert a["score"] == pytest.approx(b["score"], rel=1e-6)


def test_the_user_id_column_defaults_to_the_feature_configs(tmp_path):
    from own_data_helpers import write_own_data

    from mvke_tf.data.own_data import describe_data
    from mvke_tf.tagging import default_user_id_column

    data = write_own_data(tmp_path / "d", 200, 50)
    assert default_user_id_column(str(data / "eval")) == "user_id"  # no features.yaml yet
    describe_data(str(data), data, user_id="member")
    assert default_user_id_column(str(data / "eval")) == "member"
    assert default_user_id_column(str(data / "eval"), data / "features.yaml") == "member"
    assert default_user_id_column(str(tmp_path / "nowhere")) == "user_id"  # the job itself reports the bad path


def test_one_request_checks_the_settings_of_both_runners(env, tmp_path):
    """tag_users and run_beam check their settings with one TagRequest: the same messages, in the same order,
    before anything is read (the model directory here does not exist)."""
    from mvke_tf.tagging.beam import run_beam

    missing = tmp_path / "no_model"
    bad = [
        (dict(min_score=1.5), "--min-score: a probability in [0, 1], got 1.5"),
        (dict(top_k=0), "--top-k: must be at least 1, got 0"),
        (dict(batch_size=0), "--batch-size: must be at least 1, got 0"),
        (dict(by="tag", top_n=0), "--top-n: must be at least 1, got 0"),
        (dict(by="nope"), "--by: 'nope' not supported"),
    ]
    for kwargs, message in bad:
        for run in (tagging.tag_users, run_beam):
            with pytest.raises(tagging.TaggingError) as e:
                run(missing, str(env["root"] / "data"), ["a"], tmp_path / "out", **kwargs)
            assert str(e.value).startswith(message), (run.__name__, str(e.value))
        with pytest.raises(tagging.TaggingError, match=message.replace("[", r"\[").replace("]", r"\]")):
            tagging.TagRequest(missing, "users", ["a"], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
    request = tagging.TagRequest(missing, "users", ["a", "b", "a"], tmp_path / "out", by="tag")
    assert request.top_n == tagging.DEFAULT_TOP_N and request.direction() == {"by": "tag", "top_n": 100}
    assert tagging.TagRequest(missing, "users", ["a"], tmp_path / "out", top_k=3).direction() == {"top_k": 3}


def test_the_export_reads_a_vocabulary_without_the_batch_job(env):
    """export.top_tags reads a vocabulary without importing the tagging job; the signature uses the tag
    tables the job uses."""
    code = (
        "import sys\n"
        "from mvke_tf.export import top_tags\n"
        "from mvke_tf.models import exported_tags\n"
        "from mvke_tf.models import top_tags as signature\n"
        f"tags = top_tags.resolve_tag_vocabulary({str(env['root'] / 'tags.txt')!r})\n"
        "assert tags and signature.tag_tables is exported_tags.tag_tables\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('mvke_tf.tagging'))\n"
        "assert loaded == [], loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
