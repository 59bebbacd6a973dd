"""A pipeline run as a person reads it: one line per component as it finishes, the rest in a log file.

:func:`console_output` sends everything the run prints (TFX, Beam, absl, TensorFlow's C++ logs, any
subprocess) to a log file at the file-descriptor level and hands back the terminal for the few lines
meant for people; ``verbose`` also copies the log to the terminal as it is written.

:class:`ProgressReporter` watches the run's ML Metadata (read-only, the public ``ml_metadata`` API)
from a thread and prints each component when it finishes: its name, seconds and key result::

    StatisticsGen             31.7 s  train 200,000 rows, eval 200,000 rows
    Evaluator                 31.6 s  click AUC 0.6468 (GAUC 0.6075), conversion AUC 0.6718: BLESSED

It also records, per component, the process CPU seconds and the peak resident memory (the
benchmark's columns): components run one after another in the local runner, so the CPU time between
two completions, and the memory high-water mark reset at each completion, belong to the component
that finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

POLL_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class ComponentRecord:
    """One finished component of a run."""

    component: str
    seconds: float
    state: str
    summary: str = ""
    cpu_seconds: float | None = None
    peak_rss_mb: float | None = None

    def line(self) -> str:
        state = "" if self.state in ("COMPLETE", "CACHED") else f"[{self.state.lower()}] "
        return f"  {self.component:<30}{self.seconds:>8.1f} s  {state}{self.summary}".rstrip()


# ----------------------------------------------------------------------------- process measurements


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (Beam's worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb(reset: bool = False) -> float | None:
    """This process's resident-memory high-water mark (VmHWM) in MiB; ``reset`` starts a new one (Linux)."""
    try:
        with open("/proc/self/status") as f:
            peak = next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM")), None)
        if reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        return peak
    except OSError:
        return None


# ----------------------------------------------------------------------------- key results


def _rows(statistics_uri: str) -> str:
    from mvke_tf.pipelines.split_rows import rows_per_split

    rows = rows_per_split(statistics_uri)
    return ", ".join(f"{split} {n:,} rows" for split, n in rows.items())


def _summary(component: str, outputs: dict[str, list[Any]], properties: dict[str, Any]) -> str:
    """The key result of a finished component, from its output artifacts."""
    from mvke_tf.pipelines.report import read_anomalies

    def uri(type_name: str) -> str | None:
        found = outputs.get(type_name)
        return found[-1].uri if found else None

    if (path := uri("ExampleStatistics")) is not None:
        return _rows(path)
    if (path := uri("ExampleAnomalies")) is not None:
        found = read_anomalies(path)
        return f"anomalies in {len({a.field for a in found})} field(s)" if found else "no anomalies"
    if (path := uri("Examples")) is not None:
        splits = sorted(p.name[len("Split-") :] for p in Path(path).glob("Split-*"))
        files = {s: len(list((Path(path) / f"Split-{s}").glob("*"))) for s in splits}
        return ", ".join(f"{s} {n} file(s)" for s, n in files.items())
    if (path := uri("HyperParameters")) is not None:
        from mvke_tf.pipelines.split_rows import HYPERPARAMETERS_FILE, KEY

        rows = json.loads((Path(path) / HYPERPARAMETERS_FILE).read_text()).get(KEY, {})
        return "for the Trainer: " + ", ".join(f"{s} {n:,} rows" for s, n in rows.items())
    if (path := uri("ModelRun")) is not None:
        from mvke_tf.pipelines.trainer import TRAINING_SUMMARY

        summary = Path(path) / TRAINING_SUMMARY
        if not summary.is_file():
            return ""
        t = json.loads(summary.read_text())
        metrics = t.get("metrics", {})
        aucs = ", ".join(f"{k[4:]} {v:.4f}" for k, v in metrics.items() if k.startswith("val_") and "auc" in k)
        loss = metrics.get("loss", float("nan"))
        text = f"{t['epochs']} epoch(s), {t['steps']:,} steps of {t['batch_size']}; loss {loss:.4f}"
        fusion = ", ".join(f"{k} {v:.3f}" for k, v in t.get("fusion_weights", {}).items())
        text += f"; validation {aucs}" if aucs else ""
        return text + (f"; learned fusion weights {fusion}" if fusion else "")
    if "InfraBlessing" in outputs:
        props = outputs["InfraBlessing"][-1].custom_properties
        reason = props["reason"].string_value if "reason" in props else ""
        blessed = "blessed" in props and props["blessed"].int_value == 1
        return ("BLESSED: " if blessed else "NOT BLESSED: ") + reason
    if (path := uri("ModelEvaluation")) is not None:
        return _evaluation_summary(path, uri("ModelBlessing"))
    if (path := uri("TransformGraph")) is not None:
        return f"transform graph {path}"
    if "PushedModel" in outputs:
        pushed = outputs["PushedModel"][-1]
        props = pushed.custom_properties
        if "pushed" in props and props["pushed"].int_value == 1:
            return f"pushed {props['pushed_destination'].string_value}"
        return "not pushed (no blessing)"
    if (path := uri("Schema")) is not None:
        return f"schema {path}"
    return ""


def _evaluation_summary(evaluation_uri: str, blessing_uri: str | None) -> str:
    from mvke_tf.pipelines.evaluation import slice_metrics

    rows = slice_metrics(evaluation_uri)
    overall = next((r for r in rows if r.slice == "overall"), None)
    parts = []
    if overall is not None:
        for task, m in overall.metrics.items():
            if not task:  # metrics over every task, e.g. a multi-domain model's mean (domain, task) AUC
                parts += [f"{name.replace('_', ' ')} {v:.4f}" for name, v in m.items()]
                continue
            gauc = f" (GAUC {m['gauc']:.4f})" if "gauc" in m else ""
            parts.append(f"{task} AUC {m.get('auc', float('nan')):.4f}{gauc}")
    verdict = ""
    if blessing_uri:
        blessed = Path(blessing_uri, "BLESSED").exists()
        verdict = "BLESSED" if blessed else "NOT BLESSED" if Path(blessing_uri, "NOT_BLESSED").exists() else ""
    return ", ".join(parts) + (f": {verdict}" if verdict else "")


# ----------------------------------------------------------------------------- the watcher


class ProgressReporter:
    """Prints each component of the newest run of ``pipeline_name`` as it finishes (a background thread).

    Use as a context manager around the run; :attr:`records` holds what was printed.
    """

    def __init__(
        self,
        metadata_path: str | os.PathLike,
        pipeline_name: str,
        out: IO[str] | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.metadata_path = str(metadata_path)
        self.pipeline_name = pipeline_name
        self.out = out if out is not None else sys.stdout
        self.poll_seconds = poll_seconds
        self.records: list[ComponentRecord] = []
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipeline-progress", daemon=True)
        self._started_ms = 0
        self._cpu = 0.0

    def __enter__(self) -> ProgressReporter:
        self._started_ms = int(time.time() * 1000) - 1000
        self._cpu = cpu_seconds()
        peak_rss_mb(reset=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()  # whatever finished after the last poll

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a busy or half-written store: try again at the next poll
                continue

    def _store(self) -> Any:
        from ml_metadata import metadata_store
        from ml_metadata.proto import metadata_store_pb2

        connection = metadata_store_pb2.ConnectionConfig()
        connection.sqlite.filename_uri = self.metadata_path
        connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
        return metadata_store.MetadataStore(connection)

    def poll(self) -> list[ComponentRecord]:
        """Prints and returns the components that finished since the last poll."""
        if not os.path.isfile(self.metadata_path):
            return []
        from ml_metadata.proto import metadata_store_pb2

        store = self._store()
        runs = [r for r in store.get_contexts_by_type("pipeline_run") if r.create_time_since_epoch >= self._started_ms]
        if not runs:
            return []
        run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
        names = metadata_store_pb2.Execution.State.Name
        done = []
        for e in sorted(store.get_executions_by_context(run.id), key=lambda e: e.last_update_time_since_epoch):
            state = names(e.last_known_state)
            if e.id in self._seen or state not in ("COMPLETE", "CACHED", "FAILED", "CANCELED"):
                continue
            self._seen.add(e.id)
            component = self._component(store, e)
            if component.startswith(self.pipeline_name) or not component:
                continue
            cpu_now = cpu_seconds()
            record = ComponentRecord(
                component=component,
                seconds=max(0, e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000.0,
                state=state,
                summary=self._safe_summary(store, e, component),
                cpu_seconds=cpu_now - self._cpu,
                peak_rss_mb=peak_rss_mb(reset=True),
            )
            self._cpu = cpu_now
            self.records.append(record)
            done.append(record)
            print(record.line(), file=self.out, flush=True)
        return done

    def _component(self, store: Any, execution: Any) -> str:
        prefix = f"{self.pipeline_name}."
        for ctx in store.get_contexts_by_execution(execution.id):
            if ctx.type == "node":
                return ctx.name[len(prefix) :] if ctx.name.startswith(prefix) else ctx.name
        return ""

    @staticmethod
    def _safe_summary(store: Any, execution: Any, component: str) -> str:
        from ml_metadata.proto import metadata_store_pb2

        try:
            events = store.get_events_by_execution_ids([execution.id])
            ids = [ev.artifact_id for ev in events if ev.type == metadata_store_pb2.Event.OUTPUT]
            types = {t.id: t.name for t in store.get_artifact_types()}
            outputs: dict[str, list[Any]] = {}
            for artifact in store.get_artifacts_by_id(ids) if ids else []:
                outputs.setdefault(types.get(artifact.type_id, ""), []).append(artifact)
            return _summary(component, outputs, dict(execution.custom_properties))
        except Exception as e:  # noqa: BLE001 - a summary is a courtesy; never fail the run over it
            return f"({type(e).__name__}: {e})"


# ----------------------------------------------------------------------------- output capture


@contextlib.contextmanager
def console_output(log_path: str | os.PathLike, verbose: bool = False) -> Iterator[IO[str]]:
    """Sends file descriptors 1 and 2 (everything anything prints) to ``log_path``; yields the terminal.

    ``verbose``: the log is also copied to the terminal as it is written. The log is appended to, so
    reruns into the same root keep their history.
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    try:
        on_fd1 = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):  # e.g. a test's captured stdout: it is not fd 1
        on_fd1 = False
    console = os.fdopen(os.dup(saved_out), "w", buffering=1) if on_fd1 else sys.stdout
    log = open(log_path, "ab")  # noqa: SIM115 - closed below
    copier: threading.Thread | None = None
    read_end = None
    python_out, python_err = sys.stdout, sys.stderr
    moved: list[tuple[logging.StreamHandler, Any]] = []
    log_handler: logging.Handler | None = None
    try:
        on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        on_fd2 = False
    try:
        if verbose:
            read_end, write_end = os.pipe()
            os.dup2(write_end, 1)
            os.dup2(write_end, 2)
            os.close(write_end)
            copier = threading.Thread(target=_copy, args=(read_end, [log.fileno(), saved_out]), daemon=True)
            copier.start()
        else:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        # Python-level writers follow the file descriptors even where sys.stdout was not fd 1 (a
        # notebook kernel, a test's capture): Keras progress and absl logging then reach the log too.
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - restored below
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 - restored below
        moved = _move_log_handlers({id(python_out), id(python_err)}, sys.stderr)
        if not on_fd2 and not moved:
            # Where the host owns logging (a test runner, a notebook), log records also go to the log.
            log_handler = logging.StreamHandler(sys.stderr)
            log_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            logging.getLogger().addHandler(log_handler)
        yield console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for handler, stream in moved:
            handler.setStream(stream)
        if log_handler is not None:
            logging.getLogger().removeHandler(log_handler)
        if sys.stdout is not python_out:
            sys.stdout.close()
            sys.stderr.close()
        sys.stdout, sys.stderr = python_out, python_err
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        if copier is not None:
            copier.join(timeout=5)
        for fd in (saved_out, saved_err):
            os.close(fd)
        log.close()
        console.flush()
        if on_fd1:
            console.close()


def _move_log_handlers(old_streams: set[int], new_stream: IO[str]) -> list[tuple[logging.StreamHandler, Any]]:
    """Points the logging handlers that write to one of ``old_streams`` (by id) at ``new_stream``;
    returns ``(handler, old stream)`` pairs to undo it. absl's handler wraps a stream handler."""
    handlers = list(logging.getLogger().handlers)
    for logger in list(logging.root.manager.loggerDict.values()):
        handlers += getattr(logger, "handlers", [])
    moved, seen = [], set()
    for handler in handlers:
        handler = getattr(handler, "python_handler", handler)  # absl.logging.ABSLHandler
        if id(handler) in seen:
            continue
        seen.add(id(handler))
        if isinstance(handler, logging.StreamHandler) and id(handler.stream) in old_streams:
            moved.append((handler, handler.setStream(new_stream)))
    return moved


def _copy(read_fd: int, targets: list[int], write: Callable[[int, bytes], int] = os.write) -> None:
    """Copies ``read_fd`` to every fd of ``targets`` until end of file."""
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        while chunk := source.read(65536):
            for fd in targets:
                with contextlib.suppress(OSError):
                    write(fd, chunk)
