"""Serving latency: ``user_tower`` and ``top_tags`` over gRPC (in-repo server) vs the in-process call.

    python -m benchmarks.serving_latency --requests 300 --batches 1 256 --k 10

All in one run, on one SavedModel of the main job's size (MVKE-mt, hidden layers x0.25; untrained
weights: speed does not depend on them), exported to ``<work-dir>/model/1/`` (reused if present):

* the in-repo server (``python -m mvke_tf.serving``) runs in a subprocess on a free localhost port, so client
  and server do not share a GIL; the benchmark waits until the model is ``AVAILABLE``;
* per batch size: serialized user ``tf.Example`` rows from synthetic data, a warm-up, then
  ``--requests`` sequential ``user_tower`` requests through :class:`mvke_tf.serving.client.ServingClient`
  (one RPC each) interleaved with as many in-process calls of
  ``tf.saved_model.load(dir).signatures["user_tower"](examples=...)`` (outputs fetched as numpy), and
  the same for ``top_tags`` (``k = --k`` of the synthetic world's tags, frozen at export); p50 / p99
  latency, throughput (users/s = batch / mean latency) and the gRPC overhead;
* one concurrent figure: 4 client threads (one channel each) sending batch-256 requests for a few seconds.

The real TF Serving (``tensorflow_model_server``) is not installable here: the gRPC figures are the
in-repo Python server speaking the same protocol, so they include Python-side protobuf / TensorProto
(de)serialization on both ends.

Prints a table and writes it to docs/benchmarks.md (``--no-write``: print only). Take the figures
on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from benchmarks.report import machine, section, write_section

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "mvke"
SIGNATURE = "user_tower"
TOP_TAGS = "top_tags"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export(base: Path, scale: float) -> tuple[Path, bool]:
    """``<base>/1`` with a SavedModel of the main job's size; (path, reused)."""
    version_dir = base / "1"
    # (a model exported before top_tags existed is replaced)
    if (version_dir / "saved_model.pb").exists():
        from tensorflow.core.protobuf import saved_model_pb2

        # The signatures from the proto: loading the model here would load it twice (main loads it).
        saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
        if TOP_TAGS in saved.meta_graphs[0].signature_def:
            return version_dir, True
    from mvke_tf.data import synthetic
    from mvke_tf.export import export_saved_model
    from mvke_tf.models import UserTagConfig, build_model

    tmp = base / "1.tmp"  # not a numeric directory: the server never sees a half-written version
    shutil.rmtree(tmp, ignore_errors=True)
    mc = UserTagConfig(model_type="mvke_mt").scaled(scale)
    tags = synthetic.all_tags(synthetic.SyntheticConfig())
    export_saved_model(build_model(synthetic.feature_config(), mc), tmp, tags=tags, top_tags_max_k=100)
    shutil.rmtree(version_dir, ignore_errors=True)
    tmp.rename(version_dir)
    return version_dir, False


def _user_examples(n_users: int) -> list[bytes]:
    """Serialized user ``tf.Example`` rows (user fields only, as ``user_tower`` reads them) of distinct
    synthetic users: multi-valued behaviour fields, categorical basics, numeric statistics with some missing."""
    from mvke_tf.data import synthetic
    from mvke_tf.export import examples_from_rows

    fc = synthetic.feature_config()
    cfg = synthetic.SyntheticConfig(num_rows=4 * n_users, num_users=2 * n_users, num_ads=500, seed=0)
    cols = next(synthetic.iter_chunks(cfg))
    first: dict[str, int] = {}
    for i, uid in enumerate(cols["user_id"]):
        first.setdefault(uid, i)
    idx = list(first.values())[:n_users]
    rows = {f.name: [cols[f.name][i] for i in idx] for f in fc.user_fields}
    return examples_from_rows(rows, fc)


def _batches(pool: list[bytes], batch: int, n: int) -> list[list[bytes]]:
    """``n`` batches of ``batch`` rows, rotating through the pool (consecutive requests differ)."""
    out = []
    for i in range(n):
        start = (i * batch) % len(pool)
        rows = (pool[start:] + pool[:start])[:batch]
        while len(rows) < batch:
            rows += pool[: batch - len(rows)]
        out.append(rows)
    return out


def _stats(seconds: list[float], batch: int) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
        "ups": batch / (ms.mean() / 1e3),
    }


class ServerProcess:
    """``python -m mvke_tf.serving`` in a subprocess; SIGTERM (then SIGKILL) on ``stop``."""

    def __init__(self, base: Path, port: int, log_path: Path) -> None:
        self.base, self.port, self.log_path = base, port, log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mvke_tf.serving",
            "--model",
            f"{MODEL_NAME}={self.base.resolve()}",
            "--port",
            str(self.port),
            "--poll_seconds",
            "0",  # one fixed version: no poller thread competing with requests
            "--log_level",
            "WARNING",
        ]

    def start(self) -> None:
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(self.command, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def wait_available(self, client, timeout: float) -> None:
        from mvke_tf.serving.client import ServingError

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if any(s.state == "AVAILABLE" for s in client.status()):
                    return
            except ServingError:
                pass  # not listening yet / model loading
            if time.monotonic() > deadline:
                raise TimeoutError(f"model not AVAILABLE on {self.target} after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, grace: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _concurrent(target: str, batches: list[list[bytes]], threads: int, seconds: float) -> dict[str, float]:
    """``threads`` clients (one channel each) sending ``batches`` round robin for ``seconds``."""
    from mvke_tf.serving.client import ServingClient

    clients = [ServingClient(target, MODEL_NAME, timeout=60.0, retries=0) for _ in range(threads)]
    for c in clients:  # metadata cached and channel connected before the clock starts
        c.user_tower(batches[0])
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def work(k: int) -> None:
        try:
            barrier.wait()
            i = k
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                clients[k].user_tower(batches[i % len(batches)])
                latencies[k].append(time.perf_counter() - t0)
                i += threads
        except BaseException as e:  # noqa: BLE001 - reported in the main thread
            errors.append(e)

    pool = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    start = time.perf_counter()
    stop_at[0] = start + seconds
    barrier.wait()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    for c in clients:
        c.close()
    if errors:
        raise errors[0]
    all_lat = [x for lat in latencies for x in lat]
    batch = len(batches[0])
    ms = np.asarray(all_lat) * 1e3
    return {
        "requests": len(all_lat),
        "seconds": elapsed,
        "ups": len(all_lat) * batch / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=300, help="timed requests per batch size and path")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 256], help="users per request")
    p.add_argument("--warmup", type=int, default=10, help="untimed requests per batch size and path first")
    p.add_argument("--threads", type=int, default=4, help="client threads for the concurrent figure")
    p.add_argument("--concurrent-batch", type=int, default=256, help="users per request, concurrent figure")
    p.add_argument("--concurrent-seconds", type=float, default=5.0, help="duration of the concurrent figure")
    p.add_argument("--k", type=int, default=10, help="tags per user of the top_tags requests (1..100)")
    p.add_argument("--scale", type=float, default=0.25, help="hidden layer scale vs the paper's Table 5")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the model AVAILABLE")
    p.add_argument("--work-dir", default="runs/bench_serving")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args(argv)
    if args.requests < 1 or any(b < 1 for b in args.batches) or args.concurrent_batch < 1 or args.threads < 1:
        p.error("--requests, --batches, --threads and --concurrent-batch must be positive")
    if not 1 <= args.k <= 100:
        p.error(f"--k must be in 1..100 (the export's top_tags_max_k), got {args.k}")

    work = Path(args.work_dir)
    base = work / "model"
    base.mkdir(parents=True, exist_ok=True)
    print(f"exporting the model to {base}/1 (reused if present) ...", file=sys.stderr, flush=True)
    version_dir, reused = _export(base, args.scale)

    import tensorflow as tf
    from mvke_tf.serving.client import ServingClient

    server = ServerProcess(base, _free_port(), work / "server.log")
    rows: list[tuple[int, dict, dict]] = []
    top_rows: list[tuple[int, dict, dict]] = []
    conc: dict[str, float] | None = None
    try:
        server.start()  # loads while this process builds examples and loads the model itself
        largest = max(*args.batches, args.concurrent_batch)
        print("building user examples from synthetic rows ...", file=sys.stderr, flush=True)
        pool = _user_examples(max(2 * largest, 64))
        loaded = tf.saved_model.load(str(version_dir))
        local_fn = loaded.signatures[SIGNATURE]
        top_fn = loaded.signatures[TOP_TAGS]
        from mvke_tf.data import synthetic

        num_tags = len(synthetic.all_tags(synthetic.SyntheticConfig()))  # the export's vocabulary
        k = tf.constant(args.k, dtype=tf.int32)

        def local(batch: list[bytes]) -> dict[str, np.ndarray]:
            return {k: v.numpy() for k, v in local_fn(examples=tf.constant(batch)).items()}

        def local_top(batch: list[bytes]) -> dict[str, np.ndarray]:
            return {name: v.numpy() for name, v in top_fn(examples=tf.constant(batch), k=k).items()}

        client = ServingClient(server.target, MODEL_NAME, timeout=60.0, retries=0)
        print(f"waiting for the server on {server.target} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        server.wait_available(client, args.start_timeout)
        print(f"model AVAILABLE after {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)

        out_bytes = {}
        for batch in args.batches:
            reqs = _batches(pool, batch, args.requests + args.warmup)
            ref, got = local(reqs[0]), client.user_tower(reqs[0])
            for name in ref:  # same model, same answers: the comparison is like for like
                np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-5)
            top_ref, top_got = local_top(reqs[0]), client.top_tags(reqs[0], args.k)
            for task, (tags, scores) in top_got.items():
                np.testing.assert_allclose(scores, top_ref[f"{task}_scores"], rtol=1e-5)
                assert [t.encode() for t in tags.ravel()] == list(top_ref[f"{task}_tags"].ravel()), task
            out_bytes[batch] = sum(v.nbytes for v in ref.values())
            for r in reqs[: args.warmup]:
                client.user_tower(r)
                local(r)
                client.top_tags(r, args.k)
                local_top(r)
            grpc_s, local_s, top_grpc_s, top_local_s = [], [], [], []
            print(f"batch {batch}: {args.requests} requests each way ...", file=sys.stderr, flush=True)
            calls = (
                (lambda r: client.user_tower(r), grpc_s),
                (local, local_s),
                (lambda r: client.top_tags(r, args.k), top_grpc_s),
                (local_top, top_local_s),
            )
            for r in reqs[args.warmup :]:  # interleaved, so drift on a shared machine hits all alike
                for call, times in calls:
                    t = time.perf_counter()
                    call(r)
                    times.append(time.perf_counter() - t)
            rows.append((batch, _stats(local_s, batch), _stats(grpc_s, batch)))
            top_rows.append((batch, _stats(top_local_s, batch), _stats(top_grpc_s, batch)))
        client.close()

        print(
            f"concurrent: {args.threads} threads x batch {args.concurrent_batch}, {args.concurrent_seconds:g}s ...",
            file=sys.stderr,
            flush=True,
        )
        cb = _batches(pool, args.concurrent_batch, 8)
        conc = _concurrent(server.target, cb, args.threads, args.concurrent_seconds)
    finally:
        server.stop()

    sig = local_fn.structured_outputs
    shapes = {k: tuple(v.shape[1:]) for k, v in sig.items()}
    lines = [
        "| batch | call | p50 (ms) | p99 (ms) | users/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (batch, loc, rpc), (_, top_loc, top_rpc) in zip(rows, top_rows):
        # The rendered names: `user_tower`, `top_tags` (k=10).
        for name, lo, rp in ((f"`{SIGNATURE}`", loc, rpc), (f"`{TOP_TAGS}` (k={args.k})", top_loc, top_rpc)):
            lines += [
                f"| {batch} | in-process {name} | {lo['p50']:.2f} | {lo['p99']:.2f} | {lo['ups']:,.0f} |",
                f"| {batch} | gRPC {name} (1 client, sequential) | {rp['p50']:.2f} | {rp['p99']:.2f} "
                f"| {rp['ups']:,.0f} |",
                f"| {batch} | gRPC overhead, {name} | +{rp['p50'] - lo['p50']:.2f} (x{rp['p50'] / lo['p50']:.2f}) "
                f"| +{rp['p99'] - lo['p99']:.2f} (x{rp['p99'] / lo['p99']:.2f}) | x{rp['ups'] / lo['ups']:.2f} |",
            ]
        lines.append(
            f"| {batch} | gRPC `{TOP_TAGS}` vs `{SIGNATURE}` | x{top_rpc['p50'] / rpc['p50']:.2f} "
            f"| x{top_rpc['p99'] / rpc['p99']:.2f} | x{top_rpc['ups'] / rpc['ups']:.2f} |"
        )
    lines.append(
        f"| {args.concurrent_batch} | gRPC, {args.threads} client threads, {conc['seconds']:.1f}s "
        f"({conc['requests']:,} requests) | {conc['p50']:.2f} | {conc['p99']:.2f} | {conc['ups']:,.0f} |"
    )
    table = "\n".join(lines)
    cmd = "python -m benchmarks.serving_latency " + " ".join(sys.argv[1:] if argv is None else argv)
    sizes = ", ".join(f"batch {b}: {n / 1024:,.1f} KiB" for b, n in out_bytes.items())
    server_cmd = f"python -m mvke_tf.serving --model {MODEL_NAME}=<work-dir>/model --port <free> --poll_seconds 0"
    note = (
        "The real TF Serving (`tensorflow_model_server`) is not installable here: the server is the in-repo "
        f"Python gRPC server (`{server_cmd}`, `serving/server.py`) speaking TF Serving's protocol, in its own "
        "process on localhost; so the gRPC figures include Python-side protobuf / `TensorProto` "
        "(de)serialization on both ends (client: `ServingClient.user_tower` / `.top_tags`, numpy in and out). "
        "Sequential requests alternate the four calls (gRPC and in-process, each signature); users/s = batch / "
        f"mean latency. `{TOP_TAGS}` returns each user's best {args.k} of the {num_tags:,} tags per task, exact, "
        "scored in the graph against the tag table frozen at export (`mvke_tf/models/top_tags.py`)."
    )
    model_txt = (
        f"MVKE-mt, the paper's Table 5 hidden layers x{args.scale} (untrained weights), `user_tower` outputs "
        f"{shapes} (float32; response {sizes}); {args.requests} timed requests per row after {args.warmup} "
        "warm-up ones; synthetic users (26 user fields)"
    )
    print(f"Command: {cmd.strip()}")
    print(f"Machine: {machine()}, TensorFlow {tf.__version__}")
    print(f"Model: {model_txt}{' (SavedModel reused)' if reused else ''}")
    print(f"Server: {note}")
    print(table)
    if not args.no_write:
        facts = {"Model": f"{model_txt}.", "Machine": f"{machine()}, TensorFlow {tf.__version__}."}
        body = section("Serving: `user_tower` and `top_tags` over gRPC vs in-process", cmd, facts, table, note)
        write_section("serving", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
