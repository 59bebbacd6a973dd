"""TFX pipeline wall time, whole run and per component, on synthetic data of several sizes.

    python -m benchmarks.pipeline --rows 100000 400000 1000000

For each row count: generate the synthetic data (reused when ``metadata.json`` shows the same
generator config), run the whole pipeline locally (``pipelines.pipeline.run_local``, fresh
pipeline root and ML Metadata each time) and time it; the per-component wall times come from
ML Metadata (each execution's create / last-update time), the click / conversion AUC from the
Evaluator's TFMA result. Prints a table (component x rows) and puts it into
docs/benchmarks.md (section ``pipeline``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

SECTION = "pipeline"
TASKS = ("click", "conversion")


@dataclasses.dataclass(frozen=True)
class ComponentTime:
    """One execution of a pipeline run: the component id and its wall time from ML Metadata."""

    component: str
    start_ms: int
    end_ms: int
    state: str = "COMPLETE"

    @property
    def seconds(self) -> float:
        return max(0, self.end_ms - self.start_ms) / 1000.0


@dataclasses.dataclass
class RunResult:
    """What one pipeline run at one row count measured."""

    rows: int
    total_s: float
    components: list[ComponentTime]
    auc: dict[str, float | None]
    blessed: bool | None = None
    generate_s: float | None = None  # None: the data was reused


# ------------------------------------------------------------------ ML Metadata


def component_times(store: Any, pipeline_name: str | None = None) -> list[ComponentTime]:
    """Per-component wall times of the latest pipeline run in an ML Metadata ``store``, in run order.

    The component id is the name of the execution's ``node`` context (``<pipeline>.<component id>``,
    as ``LocalDagRunner`` records it) without the pipeline prefix; the execution type's short name
    when there is no such context. Times are the execution's ``create_time_since_epoch`` and
    ``last_update_time_since_epoch`` (ms).

    Raises:
      LookupError: no pipeline run recorded.
    """
    from ml_metadata.proto import metadata_store_pb2

    runs = list(store.get_contexts_by_type("pipeline_run"))
    if not runs:
        raise LookupError("no pipeline run in the ML Metadata store")
    run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    type_names = {t.id: t.name for t in store.get_execution_types()}
    state_names = metadata_store_pb2.Execution.State.Name
    out = []
    for e in store.get_executions_by_context(run.id):
        name = type_names.get(e.type_id, "?").rsplit(".", 1)[-1]
        for ctx in store.get_contexts_by_execution(e.id):
            if ctx.type == "node":
                prefix = f"{pipeline_name}." if pipeline_name else ctx.name.split(".", 1)[0] + "."
                name = ctx.name[len(prefix) :] if ctx.name.startswith(prefix) else ctx.name
                break
        state = state_names(e.last_known_state)
        out.append(ComponentTime(name, e.create_time_since_epoch, e.last_update_time_since_epoch, state))
    return sorted(out, key=lambda c: (c.start_ms, c.end_ms))


def read_component_times(metadata_path: str | os.PathLike, pipeline_name: str | None = None) -> list[ComponentTime]:
    """:func:`component_times` of the SQLite ML Metadata file ``metadata_path`` (opened read-only)."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    if not os.path.isfile(metadata_path):
        raise FileNotFoundError(f"no ML Metadata at {metadata_path}")
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(metadata_path)
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return component_times(metadata_store.MetadataStore(connection), pipeline_name)


def evaluation_auc(evaluation_uri: str | None, tasks: Sequence[str] = TASKS) -> dict[str, float | None]:
    """Overall-slice AUC per task from the Evaluator's TFMA output directory (None where missing)."""
    if not evaluation_uri:
        return {t: None for t in tasks}
    import tensorflow_model_analysis as tfma

    overall = dict(tfma.load_eval_result(evaluation_uri).slicing_metrics).get((), {})
    out: dict[str, float | None] = {}
    for t in tasks:
        try:
            out[t] = float(overall[t][""]["auc"]["doubleValue"])
        except (KeyError, TypeError):
            out[t] = None
    return out


# ------------------------------------------------------------------ formatting


def _secs(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:,.0f} s" if s >= 100 else f"{s:.1f} s"


def format_table(results: Sequence[RunResult]) -> str:
    """Markdown table: one row per component (in run order), one column per row count.

    Below the components: the time outside them (orchestration, Beam start-up), the whole run,
    the data generation (not part of the run) and the Evaluator's overall click / conversion AUC.
    """
    order: list[str] = []
    for r in results:
        for c in r.components:
            if c.component not in order:
                order.append(c.component)
    header = "| component | " + " | ".join(f"{r.rows:,} rows" for r in results) + " |"
    lines = [header, "| --- |" + " ---: |" * len(results)]
    for name in order:
        cells = []
        for r in results:
            times = [c for c in r.components if c.component == name]
            cell = _secs(sum(c.seconds for c in times)) if times else "–"
            failed = [c.state for c in times if c.state not in ("COMPLETE", "CACHED")]
            cells.append(cell + (f" ({failed[0].lower()})" if failed else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    other = [_secs(max(0.0, r.total_s - sum(c.seconds for c in r.components))) for r in results]
    lines.append("| *outside the components (orchestration)* | " + " | ".join(other) + " |")
    total = [f"**{_secs(r.total_s)}**" for r in results]
    lines.append("| **whole pipeline (`run_local`)** | " + " | ".join(total) + " |")
    gen = [_secs(r.generate_s) if r.generate_s is not None else "reused" for r in results]
    lines.append("| *data generation (not in the run)* | " + " | ".join(gen) + " |")
    for t in TASKS:
        cells = [f"{r.auc[t]:.4f}" if r.auc.get(t) is not None else "–" for r in results]
        lines.append(f"| {t} AUC (Evaluator, overall) | " + " | ".join(cells) + " |")
    blessed = [{True: "yes", False: "no", None: "–"}[r.blessed] for r in results]
    lines.append("| blessed | " + " | ".join(blessed) + " |")
    return "\n".join(lines)


def machine_facts() -> str:
    from benchmarks.report import machine

    return f"{machine()}; os.cpu_count()={os.cpu_count()}; {platform.platform()}"


# ------------------------------------------------------------------ running


class _Heartbeat:
    """Prints the elapsed time every ``every`` seconds while a long step runs."""

    def __init__(self, label: str, every: float = 30.0) -> None:
        self.label, self.every = label, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.start = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            print(f"[{self.label}] ... {time.perf_counter() - self.start:.0f} s elapsed", file=sys.stderr, flush=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _data(rows: int, users: int, out: Path, label: str) -> tuple[Path, float | None]:
    from mvke_tf.data import synthetic

    data = out / f"data-{rows}"
    cfg = synthetic.SyntheticConfig(num_rows=rows, num_users=users)
    meta = data / "metadata.json"
    if meta.exists() and (data / "features.yaml").exists():
        try:
            if json.loads(meta.read_text())["generator"] == cfg.to_dict():
                print(f"[{label}] reusing the data in {data}", file=sys.stderr, flush=True)
                return data, None
        except (ValueError, KeyError):
            pass
    print(f"[{label}] generating {rows:,} rows into {data} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with _Heartbeat(f"{label} generate"):
        synthetic.generate(cfg, data)
    return data, time.perf_counter() - start


MAIN_JOB = "pipelines/configs/synthetic.yaml"


def main_job_config(rows: int, data: Path, run_dir: Path, args: argparse.Namespace):
    """The main job's PipelineConfig (``MAIN_JOB``) on ``data``, rooted in ``run_dir``."""
    from pipelines.__main__ import _parser, config_from_settings, settings_from_args

    argv = ["run", "--config", args.config, "--name", f"mvke-bench-{rows}", "--root", str(run_dir)]
    argv += ["--data-root", str(data)]  # its features.yaml is used when it exists
    if args.train_steps:
        argv += ["--train-steps", str(args.train_steps)]
    return config_from_settings(settings_from_args(_parser().parse_args(argv)))


def run_one(rows: int, args: argparse.Namespace) -> RunResult:
    from pipelines.pipeline import run_local
    from pipelines.report import run_report

    label = f"{rows:,} rows"
    out = Path(args.out).resolve()
    data, generate_s = _data(rows, args.users, out, label)
    run_dir = out / f"run-{rows}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh pipeline root and ML Metadata per run
    config = main_job_config(rows, data, run_dir, args)
    print(f"[{label}] running the pipeline ({config.train_steps} train steps) ...", file=sys.stderr, flush=True)
    with _Heartbeat(f"{label} pipeline"):
        start = time.perf_counter()
        run_local(config)
        total = time.perf_counter() - start
    components = read_component_times(config.metadata_path, config.pipeline_name)
    report = run_report(config.metadata_path, config.pipeline_name)
    result = RunResult(rows, total, components, evaluation_auc(report.evaluation_uri), report.blessed, generate_s)
    print(f"[{label}] pipeline done in {total:.0f} s", file=sys.stderr, flush=True)
    return result


def markdown(table: str, cfg: Any, args: argparse.Namespace, cmd: str, facts: str) -> str:
    """The docs/benchmarks.md section: what was run, how it was timed, on which machine, and the table."""
    mc = cfg.model_config()
    return (
        "## TFX pipeline wall time, whole run and per component\n\n"
        f"Command: `{cmd.strip()}`  \n"
        f"What runs: the main job (`{args.config}`) with the data size changed: synthetic generator defaults "
        f"({args.users:,} users, 2 days), ExampleGen reads `{cfg.input_pattern}` as train and `{cfg.eval_pattern}` "
        "(the last day, half the rows) as eval; the AUCs are the Evaluator's on that eval day.  \n"
        "Pipeline: `pipelines.pipeline.run_local` (LocalDagRunner, SQLite ML Metadata, Beam DirectRunner "
        f"{' '.join(cfg.beam_pipeline_args)}), fresh pipeline root per run; {cfg.model_type} "
        f"(dnn {list(mc.dnn_units)}, top {list(mc.top_units)}, tag {list(mc.tag_units)}), batch {cfg.batch_size}, "
        f"{cfg.train_steps} train steps.  \n"
        "Per-component times: each execution's create to last-update time in ML Metadata; "
        "the whole run: `time.perf_counter` around `run_local`.  \n"
        f"Machine: {facts}.\n\n" + table + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--users", type=int, default=20_000, help="synthetic users (the generator's default)")
    p.add_argument("--config", default=MAIN_JOB, help="pipeline settings (default: the main job's)")
    p.add_argument("--train-steps", type=int, default=0, help="override the settings' train steps")
    p.add_argument("--out", default="runs/bench_pipeline", help="data and pipeline roots")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args(argv)

    overall = time.perf_counter()
    results = []
    for i, rows in enumerate(args.rows, 1):
        print(
            f"== {i}/{len(args.rows)}: {rows:,} rows ({time.perf_counter() - overall:.0f} s elapsed)",
            file=sys.stderr,
            flush=True,
        )
        results.append(run_one(rows, args))

    table = format_table(results)
    cmd = "python -m benchmarks.pipeline " + " ".join(sys.argv[1:] if argv is None else argv)
    facts = machine_facts()
    print(f"Command: {cmd.strip()}")
    print(f"Machine: {facts}")
    print(table)
    if not args.no_write:
        from benchmarks.report import write_section

        config = main_job_config(args.rows[-1], Path(args.out), Path(args.out), args)
        write_section(SECTION, markdown(table, config, args, cmd, facts))
        print(f"wrote the '{SECTION}' section of docs/benchmarks.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
