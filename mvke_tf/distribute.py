"""``tf.distribute`` strategies by name, for the library's training and the TFX Trainer.

* ``default``: ``tf.distribute.get_strategy()`` (one device, today's behaviour);
* ``mirrored``: ``MirroredStrategy``, synchronous data parallelism over the local GPUs (or the CPU);
* ``multi_worker``: ``MultiWorkerMirroredStrategy``, synchronous data parallelism over several
  machines. Each worker process reads its role from the ``TF_CONFIG`` environment variable, e.g.::

      TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'

  Worker 0 is the chief: it alone writes reports and exports. The others write to a temporary
  directory that is deleted afterwards (as in TensorFlow's multi-worker Keras tutorial), because
  saving may involve collective operations that every worker must join.

The batch size given to training is the *global* batch: each step, the batch is split across all
replicas (``batch_size / num_replicas_in_sync`` examples each), so results do not depend on the
number of workers. Create the strategy at program start, before other TensorFlow operations run.

This module imports TensorFlow only (never TFX).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import tensorflow as tf

from mvke_tf.config import STRATEGIES, ConfigError

_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\''
)
# MultiWorkerMirroredStrategy configures the process's collective ops: one per process.
_MULTI_WORKER: tf.distribute.Strategy | None = None


def validate_strategy(name: str) -> str:
    """Returns ``name`` if it is one of ``STRATEGIES``; raises ``ConfigError`` naming the choices otherwise."""
    if name not in STRATEGIES:
        raise ConfigError(f"strategy={name!r} is not one of {', '.join(STRATEGIES)}; fix: pick one of them")
    return name


def tf_config(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The parsed ``TF_CONFIG`` (``None`` when unset or empty); raises ``ConfigError`` when malformed.

    A valid value has ``cluster.worker`` (a non-empty list of ``host:port``; a ``chief`` list is
    allowed too) and ``task`` with ``type`` and an ``index`` within that type's list.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not raw.strip():
        return None
    fix = f"fix: set it to JSON like {_TF_CONFIG_EXAMPLE} (one index per worker process)"
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e}); {fix}") from e
    if not isinstance(config, dict):
        raise ConfigError(f"TF_CONFIG must be a JSON object, got {type(config).__name__}; {fix}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError(f"TF_CONFIG has no 'cluster' object; {fix}")
    for role, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) for a in addresses):
            raise ConfigError(f"TF_CONFIG cluster.{role} must be a non-empty list of 'host:port' strings; {fix}")
    if "worker" not in cluster and "chief" not in cluster:
        raise ConfigError(f"TF_CONFIG cluster has no 'worker' list; {fix}")
    if not isinstance(task, dict) or "type" not in task:
        raise ConfigError(f"TF_CONFIG has no 'task' with a 'type' (e.g. \"worker\") and an 'index'; {fix}")
    kind, index = task["type"], task.get("index", 0)
    if kind not in cluster:
        raise ConfigError(f"TF_CONFIG task.type={kind!r} is not in the cluster ({', '.join(cluster)}); {fix}")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise ConfigError(
            f"TF_CONFIG task.index={index!r} must be an integer in [0, {len(cluster[kind])}) "
            f"for the {len(cluster[kind])} {kind} address(es); {fix}"
        )
    return config


def make_strategy(name: str = "default") -> tf.distribute.Strategy:
    """The ``tf.distribute.Strategy`` named ``name`` (one of ``STRATEGIES``).

    ``multi_worker`` requires ``TF_CONFIG`` (see the module docstring) and is created once per
    process; later calls return the same strategy. It blocks until all workers have started.
    """
    global _MULTI_WORKER
    validate_strategy(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if _MULTI_WORKER is None:
        if tf_config() is None:
            raise ConfigError(
                "strategy 'multi_worker' needs the TF_CONFIG environment variable, which is not set; "
                f"fix: in each worker process set {_TF_CONFIG_EXAMPLE} with its own index "
                "(or use --strategy default / mirrored on one machine)"
            )
        _MULTI_WORKER = tf.distribute.MultiWorkerMirroredStrategy()
    return _MULTI_WORKER


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Worker processes taking part in ``strategy`` (1 unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 1
    spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(role, [])) for role in ("chief", "worker"))


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes reports and exports: a single process, the ``chief`` task or worker 0.

    Without a multi-worker strategy it reads ``TF_CONFIG`` (no ``TF_CONFIG``: chief).
    """
    if strategy is not None and not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True  # default / mirrored: one process
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.cluster_spec().as_dict():
        kind, index = resolver.task_type, resolver.task_id
        has_chief = "chief" in resolver.cluster_spec().as_dict()
    else:
        config = tf_config()
        if config is None:
            return True
        kind, index = config["task"]["type"], config["task"].get("index", 0)
        has_chief = "chief" in config["cluster"]
    return kind == "chief" or (kind == "worker" and index == 0 and not has_chief)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Waits until every worker gets here (a one-number all-reduce); a no-op with one worker.

    Keeps the other workers alive while the chief evaluates, so none leaves the cluster early
    (the chief's coordination service would report a missed heartbeat).
    """
    if num_workers(strategy) > 1:
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)


def shard_policy(files: list[str], workers: int) -> tf.data.experimental.AutoShardPolicy:
    """How multi-worker training splits the input: by file when each worker gets one, else by example.

    ``FILE`` needs at least as many files as workers and a file reader TensorFlow can shard
    (TFRecord); otherwise ``DATA``: every worker reads everything and keeps its share of each
    global batch.
    """
    if len(files) >= workers and all(".tfrecord" in f for f in files):
        return tf.data.experimental.AutoShardPolicy.FILE
    return tf.data.experimental.AutoShardPolicy.DATA


@contextlib.contextmanager
def write_dir(path: str | os.PathLike | None, strategy: tf.distribute.Strategy) -> Iterator[str | None]:
    """Where this worker writes: ``path`` on the chief, a temporary directory (deleted on exit) elsewhere.

    Every worker should save (saving may run collective operations); only the chief's output is kept.
    """
    if is_chief(strategy):
        yield None if path is None else os.fspath(path)
        return
    tmp = tempfile.mkdtemp(prefix="mvke_tf_worker_")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def weights_sha256(model: tf.keras.Model) -> str:
    """A hex digest of all weights' bytes, in order: equal on every worker after synchronous training."""
    h = hashlib.sha256()
    for w in model.weights:
        h.update(w.name.encode())
        h.update(tf.convert_to_tensor(w).numpy().tobytes())
    return h.hexdigest()[:16]
