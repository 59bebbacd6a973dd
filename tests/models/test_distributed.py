"""tf.distribute strategies: names and TF_CONFIG validation, and a two-worker run on localhost."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import chance_bar
from worker_helpers import free_ports, tf_config

from mvke_tf import distribute
from mvke_tf.config import ConfigError
from mvke_tf.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def test_make_strategy_by_name(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.STRATEGIES == ("default", "mirrored", "multi_worker")
    assert distribute.make_strategy("default") is tf.distribute.get_strategy()
    mirrored = distribute.make_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy) and mirrored.num_replicas_in_sync >= 1
    for s in (distribute.make_strategy("default"), mirrored):
        assert distribute.is_chief(s) and distribute.num_workers(s) == 1
    with pytest.raises(ConfigError, match="strategy='horovod' is not one of default, mirrored, multi_worker"):
        distribute.make_strategy("horovod")
    with pytest.raises(ConfigError, match="strategy="):
        TrainConfig(strategy="parameter_server")
    assert TrainConfig(strategy="multi_worker").strategy == "multi_worker"


def test_multi_worker_without_tf_config_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"needs the TF_CONFIG environment variable.*fix: .*\"cluster\"") as e:
        distribute.make_strategy("multi_worker")
    assert '"task": {"type": "worker", "index": 0}' in str(e.value)


@pytest.mark.parametrize(
    "value, message",
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ("[1, 2]", "TF_CONFIG must be a JSON object"),
        ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG has no 'cluster'"),
        ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "cluster.worker must be a non-empty"),
        ('{"cluster": {"worker": ["localhost:1"]}}', "TF_CONFIG has no 'task'"),
        ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}', "task.type='ps'"),
        ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}', r"task.index=1"),
    ],
)
def test_malformed_tf_config_is_a_config_error(monkeypatch, value, message):
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ConfigError, match=message) as e:
        distribute.tf_config()
    assert "fix: set it to JSON like" in str(e.value)
    with pytest.raises(ConfigError, match=message):
        distribute.make_strategy("multi_worker")
    with pytest.raises(ConfigError, match=message):
        distribute.is_chief()


def test_is_chief_and_shard_policy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief()  # no TF_CONFIG: one process
    monkeypatch.setenv("TF_CONFIG", tf_config(0))
    assert distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", tf_config(1))
    assert not distribute.is_chief()
    assert distribute.is_chief(tf.distribute.get_strategy())  # not multi-worker: the one process writes
    chief_cluster = {"chief": ["localhost:1"], "worker": ["localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": chief_cluster, "task": {"type": "worker", "index": 0}}))
    assert not distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": chief_cluster, "task": {"type": "chief", "index": 0}}))
    assert distribute.is_chief()

    policy = tf.data.experimental.AutoShardPolicy
    assert distribute.shard_policy(["a.tfrecord.gz", "b.tfrecord.gz"], 2) == policy.FILE
    assert distribute.shard_policy(["a.tfrecord.gz"], 2) == policy.DATA
    assert distribute.shard_policy(["a.csv", "b.csv"], 2) == policy.DATA


def test_cli_strategy_choices():
    from mvke_tf.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--data", "d", "--strategy", "multi_worker"])
    assert args.strategy == "multi_worker"
    assert parser.parse_args(["train", "--data", "d"]).strategy == "default"
    action = next(a for a in parser._subparsers._group_actions[0].choices["train"]._actions if a.dest == "strategy")
    assert tuple(action.choices) == distribute.STRATEGIES


@pytest.mark.slow  # two training processes: make test-slow
def test_two_worker_multi_worker_mirrored_training_on_localhost(small_data, tmp_path):
    """Two processes, one TF_CONFIG each: synchronous training ends with the same weights on both."""
    data, meta = small_data
    config = tmp_path / "model.yaml"  # small enough for two processes on two CPU cores
    config.write_text("embedding_dim: 8\ndnn_units: [32]\ntop_units: [32, 8]\ntag_units: [32, 8]\n")
    ports = free_ports(2)
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": tf_config(index, ports), "CUDA_VISIBLE_DEVICES": ""}
        cmd = [
            sys.executable, "-m", "mvke_tf.cli", "train", "--data", str(data), "--strategy", "multi_worker",
            "--model", "mvke_mt", "--config", str(config), "--epochs", "6", "--batch-size", "512",
            "--learning-rate", "3e-3", "--model-dir", str(tmp_path / f"worker{index}"),
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=400)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for index, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"worker {index} exited {p.returncode}:\n{out[-4000:]}"

    report = json.loads((tmp_path / "worker0" / "report.json").read_text())
    dist = report["distribution"]
    assert dist["num_workers"] == 2 and dist["num_replicas_in_sync"] == 2 and dist["chief"]
    assert dist["steps_per_epoch"] == -(-meta["splits"]["train"]["rows"] // 512)  # the same on both workers
    # Single-process training on this data reaches a click AUC of about 0.58-0.60; untrained, 0.5. The bound is
    # 4 standard deviations of a random scorer's AUC above chance (about 0.55 on this eval day): a model that
    # learned nothing passes with probability ~3e-5, and the trained ones stay 0.03-0.05 above it.
    click = report["eval"]["click"]
    labels = np.r_[np.ones(click["positives"]), np.zeros(click["examples"] - click["positives"])]
    assert click["auc"] > chance_bar(labels, sigmas=4), report["eval"]
    assert (tmp_path / "worker0" / "weights.index").exists()
    # The other worker wrote nothing (its report and weights went to a deleted temporary directory).
    assert not (tmp_path / "worker1").exists()
    assert "not the chief" in outputs[1]

    digests = [re.search(r"weights sha256 ([0-9a-f]{16})", out) for out in outputs]
    assert all(digests), outputs
    assert digests[0].group(1) == digests[1].group(1) == dist["weights_sha256"]
