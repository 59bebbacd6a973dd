"""Beam's portable runner on one machine: a job service and an external pool of SDK worker processes.

Every portable runner (Flink, Spark, Dataflow's Runner v2) runs a Python pipeline the same way: the
pipeline is translated to its portable form and submitted to a job service; SDK workers in other
processes unpickle every step, and elements cross between the runner and the workers encoded by
their coders over the Fn API. The DirectRunner in memory does none of that, so code that only
works in one process (an unpicklable DoFn, a coder that does not round-trip, state kept in a
module) passes there and fails on a cluster. :class:`PortableCluster` runs that path here: the
pipeline's Beam components go to a job service in this process, which runs each job on
``workers`` SDK worker processes started by an external worker pool
(``apache_beam.runners.worker.worker_pool_main``); a job's input is split among the workers, as on a
cluster with that many workers.

Beam's own embedded job service (``--job_endpoint=embed``) also runs jobs on an external pool, but
on one worker whatever ``--direct_num_workers`` says; the job service here reads that option.

From the command line, for ``beam_pipeline_args`` in a settings file
(``pipelines/configs/beam/portable.yaml``)::

    python -m mvke_tf.pipelines.portable --job-port 8099 --worker-port 50000 --workers 2

starts both and serves until interrupted.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import fn_runner


class _MultiWorkerBeamJob(local_job_service.BeamJob):
    """A job run on ``--direct_num_workers`` workers of its environment, else on ``default_workers``
    (Beam's local job always uses one)."""

    default_workers = 1

    def _invoke_runner(self):
        self.set_state(beam_job_api_pb2.JobState.RUNNING)
        runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
        options = self.pipeline_options()
        given = options.get_all_options(drop_default=True).get("direct_num_workers")
        # Options arrive as the job's Struct (numbers as strings). The runner has no public setter; the
        # attribute is what its run_pipeline() sets from the same option for the DirectRunner.
        runner._num_workers = max(1, int(given or self.default_workers))
        return runner.run_via_runner_api(self._pipeline_proto, options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the Beam worker pool exited with status {process.returncode} before listening on port {port}; "
                f"fix: run `{' '.join(process.args)}` to see why (a port in use: pass another --worker-port)"
            )
        try:
            with socket.create_connection(("localhost", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the Beam worker pool did not listen on port {port} within {timeout:.0f} s")


@dataclass
class PortableCluster:
    """A job service (in this process) and a worker pool (a subprocess) for ``--runner=PortableRunner``.

    Use as a context manager; :attr:`beam_pipeline_args` are the options that send a pipeline to it.
    Both are stopped on exit, workers included (the pool stops each job's workers when the job ends).

    Args:
      workers: SDK worker processes per job, unless a pipeline's ``--direct_num_workers`` says otherwise.
      job_port: the job service's port; 0 picks a free one.
      worker_port: the worker pool's port; 0 picks a free one.
      start_timeout_s: how long the worker pool may take to listen.
    """

    workers: int = 2
    job_port: int = 0
    worker_port: int = 0
    start_timeout_s: float = 60.0
    _pool: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _jobs: local_job_service.LocalJobServicer | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if int(self.workers) < 1:
            raise ValueError(f"workers: {self.workers}; fix: at least 1 worker process per job")

    @property
    def beam_pipeline_args(self) -> list[str]:
        if self._jobs is None:
            raise RuntimeError("the cluster is not started; fix: use it as `with PortableCluster() as cluster:`")
        return [
            "--runner=PortableRunner",
            f"--job_endpoint=localhost:{self.job_port}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{self.worker_port}",
            f"--direct_num_workers={self.workers}",
        ]

    def start(self) -> PortableCluster:
        self.worker_port = self.worker_port or _free_port()
        env = dict(os.environ)
        # The pool starts each worker as `python` from PATH: this interpreter's, so workers import what we import.
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env.setdefault("TF_USE_LEGACY_KERAS", "1")
        command = [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main"]
        self._pool = subprocess.Popen([*command, f"--service_port={self.worker_port}"], env=env)
        try:
            _wait_for_port(self.worker_port, self._pool, self.start_timeout_s)
            jobs = type("_ClusterBeamJob", (_MultiWorkerBeamJob,), {"default_workers": int(self.workers)})
            self._jobs = local_job_service.LocalJobServicer(beam_job_type=jobs)
            self.job_port = self._jobs.start_grpc_server(self.job_port)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._jobs is not None:
            self._jobs.stop()
            self._jobs = None
        if self._pool is not None:
            self._pool.terminate()
            try:
                self._pool.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._pool.kill()
                self._pool.wait()
            self._pool = None

    def __enter__(self) -> PortableCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mvke_tf.pipelines.portable", description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="SDK worker processes per job (default 2)")
    p.add_argument("--job-port", type=int, default=8099, help="the job service's port (default 8099)")
    p.add_argument("--worker-port", type=int, default=50000, help="the worker pool's port (default 50000)")
    args = p.parse_args(argv)
    with PortableCluster(args.workers, args.job_port, args.worker_port) as cluster:
        print("serving Beam jobs; beam_pipeline_args:", *cluster.beam_pipeline_args, sep="\n  ", flush=True)
        try:
            while cluster._pool.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
    print("the worker pool stopped", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
