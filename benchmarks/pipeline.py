"""TFX pipeline cost, whole run and per component, on synthetic data of several sizes.

    python -m benchmarks.pipeline --rows 100000 1000000 4000000

For each row count: generate the synthetic data as gzipped TFRecord (reused when ``metadata.json``
shows the same generator config), then run the main job's pipeline on it in a fresh Python process
(``mvke_tf.pipelines.pipeline.run_local``, a fresh pipeline root and ML Metadata; a fresh process so that no
size inherits another's memory) and record, per component
(:class:`mvke_tf.pipelines.progress.ProgressReporter`): wall seconds (from ML Metadata), CPU seconds of the
process and its Beam workers, and the process's peak resident memory while it ran. Prints the
tables and writes them to docs/benchmarks.md (section ``pipeline``).
"""

from __future__ import annotations

import argparse
import contextlib
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
DATA_COMPONENTS = ("ExampleGen", "StatisticsGen", "Transform")  # the "data" budget, by name suffix


@dataclasses.dataclass(frozen=True)
class ComponentCost:
    """One component of one run: wall and CPU seconds, peak resident memory (MiB)."""

    component: str
    seconds: float
    cpu_seconds: float | None = None
    peak_rss_mb: float | None = None
    state: str = "COMPLETE"


@dataclasses.dataclass
class RunResult:
    """What one pipeline run at one row count measured."""

    rows: int
    total_s: float
    components: list[ComponentCost]
    auc: dict[str, float | None]
    split_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    blessed: bool | None = None
    generate_s: float | None = None  # None: the data was reused

    def seconds(self, name: str) -> float | None:
        times = [c.seconds for c in self.components if c.component == name]
        return sum(times) if times else None

    def cpu(self, name: str) -> float | None:
        values = [c.cpu_seconds for c in self.components if c.component == name and c.cpu_seconds is not None]
        return sum(values) if values else None

    def data_seconds(self) -> float:
        return sum(c.seconds for c in self.components if c.component.endswith(DATA_COMPONENTS))

    @property
    def eval_rows(self) -> int:
        return self.split_rows.get("eval", 0)


def evaluation_auc(evaluation_uri: str | None, tasks: Sequence[str] = TASKS) -> dict[str, float | None]:
    """Overall-slice AUC per task from the Evaluator's output directory (None where missing)."""
    if not evaluation_uri:
        return {t: None for t in tasks}
    from mvke_tf.pipelines.evaluation import slice_metrics

    overall = next((r for r in slice_metrics(evaluation_uri) if r.slice == "overall"), None)
    return {t: (overall.metrics.get(t, {}).get("auc") if overall else None) for t in tasks}


# ------------------------------------------------------------------ formatting


def _secs(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:,.0f} s" if s >= 100 else f"{s:.1f} s"


def _ms(seconds: float | None, rows: int) -> str:
    return "–" if seconds is None or not rows else f"{seconds / rows * 1000:.3f}"


def format_table(results: Sequence[RunResult]) -> str:
    """Markdown: one row per component (run order), wall seconds per row count, CPU-s per million rows.

    The CPU column is the largest run's (where fixed start-up costs weigh least): the process's and
    its Beam workers' CPU seconds while the component ran, per million input rows. Below the
    components: the whole run, the per-row costs the targets are stated in, the 4M / 1M ratio when
    both sizes ran, the AUCs and the blessing.
    """
    order: list[str] = []
    for r in results:
        for c in r.components:
            if c.component not in order:
                order.append(c.component)
    largest = max(results, key=lambda r: r.rows)
    header = "| component | " + " | ".join(f"{r.rows:,} rows" for r in results)
    header += f" | CPU-s per M rows ({largest.rows:,}) |"
    lines = [header, "| --- |" + " ---: |" * (len(results) + 1)]
    for name in order:
        cells = []
        for r in results:
            times = [c for c in r.components if c.component == name]
            failed = [c.state for c in times if c.state not in ("COMPLETE", "CACHED")]
            cells.append(_secs(r.seconds(name)) + (f" ({failed[0].lower()})" if failed else ""))
        cpu = largest.cpu(name)
        cells.append(f"{cpu / largest.rows * 1e6:,.0f}" if cpu is not None else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    other = [_secs(max(0.0, r.total_s - sum(c.seconds for c in r.components))) for r in results]
    lines.append("| *outside the components (orchestration)* | " + " | ".join(other) + " | |")
    total_cpu = sum(c.cpu_seconds or 0 for c in largest.components)
    lines.append(
        "| **whole pipeline (`run_local`)** | "
        + " | ".join(f"**{_secs(r.total_s)}**" for r in results)
        + f" | **{total_cpu / largest.rows * 1e6:,.0f}** |"
    )
    lines.append("| ms per row, whole pipeline | " + " | ".join(_ms(r.total_s, r.rows) for r in results) + " | |")
    lines.append(
        "| ms per row, ExampleGen + StatisticsGen + Transform | "
        + " | ".join(_ms(r.data_seconds(), r.rows) for r in results)
        + " | |"
    )
    lines.append(
        "| ms per eval row, Evaluator | "
        + " | ".join(_ms(r.seconds("Evaluator"), r.eval_rows) for r in results)
        + " | |"
    )
    by_rows = {r.rows: r for r in results}
    if 1_000_000 in by_rows and 4_000_000 in by_rows:
        ratio = by_rows[4_000_000].total_s / by_rows[1_000_000].total_s
        lines.append(f"| whole pipeline, 4M / 1M time | {' | '.join('' for _ in results[:-1])} | {ratio:.2f} | |")
    lines.append(
        "| *data generation (not in the run)* | "
        + " | ".join(_secs(r.generate_s) if r.generate_s is not None else "reused" for r in results)
        + " | |"
    )
    for t in TASKS:
        cells = [f"{r.auc[t]:.4f}" if r.auc.get(t) is not None else "–" for r in results]
        lines.append(f"| {t} AUC (Evaluator, overall) | " + " | ".join(cells) + " | |")
    blessed = [{True: "yes", False: "no", None: "–"}[r.blessed] for r in results]
    lines.append("| blessed | " + " | ".join(blessed) + " | |")
    return "\n".join(lines)


def format_memory_table(results: Sequence[RunResult]) -> str:
    """Markdown: peak resident memory (MiB) of the process while each component ran, per row count."""
    order: list[str] = []
    for r in results:
        for c in r.components:
            if c.component not in order and c.peak_rss_mb is not None:
                order.append(c.component)
    lines = ["| peak RSS (MiB) | " + " | ".join(f"{r.rows:,} rows" for r in results) + " |"]
    lines.append("| --- |" + " ---: |" * len(results))
    for name in order:
        cells = []
        for r in results:
            peaks = [c.peak_rss_mb for c in r.components if c.component == name and c.peak_rss_mb is not None]
            cells.append(f"{max(peaks):,.0f}" if peaks else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    whole = [max((c.peak_rss_mb or 0) for c in r.components) for r in results]
    lines.append("| **whole run** | " + " | ".join(f"**{w:,.0f}**" for w in whole) + " |")
    return "\n".join(lines)


def machine_facts() -> str:
    from benchmarks.report import machine

    return f"{machine()}; os.cpu_count()={os.cpu_count()}; {platform.platform()}"


# ------------------------------------------------------------------ running


class _Heartbeat:
    """Prints the elapsed time every ``every`` seconds while a long step runs."""

    def __init__(self, label: str, every: float = 60.0) -> None:
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
    if meta.exists() and (data / "features.yaml").exists() and list(data.glob("train/*.tfrecord.gz")):
        try:
            if json.loads(meta.read_text())["generator"] == cfg.to_dict():
                print(f"[{label}] reusing the data in {data}", file=sys.stderr, flush=True)
                return data, None
        except (ValueError, KeyError):
            pass
    print(f"[{label}] generating {rows:,} rows into {data} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with _Heartbeat(f"{label} generate"):
        synthetic.generate(cfg, data, formats=("tfrecord",))
    return data, time.perf_counter() - start


MAIN_JOB = "pipelines/configs/synthetic.yaml"


def main_job_config(rows: int, data: Path, run_dir: Path, args: argparse.Namespace):
    """The main job's PipelineConfig (``MAIN_JOB``) on ``data``, rooted in ``run_dir``."""
    from mvke_tf.pipelines.__main__ import _parser, config_from_settings, settings_from_args

    argv = ["run", "--config", args.config, "--name", f"mvke-bench-{rows}", "--root", str(run_dir)]
    argv += ["--data-root", str(data)]  # its features.yaml is used when it exists
    if args.train_steps:
        argv += ["--train-steps", str(args.train_steps)]
    return config_from_settings(settings_from_args(_parser().parse_args(argv)))


RUNNERS = ("direct", "portable")  # the config's beam_pipeline_args, or a PortableCluster started for the run


def run_in_subprocess(rows: int, args: argparse.Namespace) -> RunResult:
    """:func:`run_one` in a fresh Python process (its own memory high-water mark); the result as JSON."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.pipeline", "--rows", str(rows), "--users", str(args.users)]
        cmd += ["--config", args.config, "--train-steps", str(args.train_steps), "--out", args.out]
        cmd += ["--runner", args.runner, "--workers", str(args.workers)]
        cmd += ["--result-json", str(out)]
        subprocess.run(cmd, check=True)
        data = json.loads(out.read_text())
    data["components"] = [ComponentCost(**c) for c in data["components"]]
    return RunResult(**data)


def run_one(rows: int, args: argparse.Namespace) -> RunResult:
    from mvke_tf.pipelines.pipeline import run_local
    from mvke_tf.pipelines.progress import ProgressReporter
    from mvke_tf.pipelines.report import run_report
    from mvke_tf.pipelines.split_rows import rows_per_split

    label = f"{rows:,} rows"
    out = Path(args.out).resolve()
    data, generate_s = _data(rows, args.users, out, label)
    runner = args.runner
    run_dir = out / (f"run-{rows}" if runner == "direct" else f"run-{rows}-{runner}")
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh pipeline root and ML Metadata per run
    config = main_job_config(rows, data, run_dir, args)
    print(f"[{label}] running the pipeline ({runner} runner) ...", file=sys.stderr, flush=True)
    with contextlib.ExitStack() as stack:
        if runner == "portable":
            from mvke_tf.pipelines.portable import PortableCluster

            cluster = stack.enter_context(PortableCluster(workers=args.workers))
            config = dataclasses.replace(config, beam_pipeline_args=tuple(cluster.beam_pipeline_args))
        stack.enter_context(_Heartbeat(f"{label} pipeline"))
        progress = stack.enter_context(ProgressReporter(config.metadata_path, config.pipeline_name, out=sys.stderr))
        start = time.perf_counter()
        run_local(config)
        total = time.perf_counter() - start
    components = [
        ComponentCost(r.component, r.seconds, r.cpu_seconds, r.peak_rss_mb, r.state) for r in progress.records
    ]
    report = run_report(config.metadata_path, config.pipeline_name)
    stats = sorted(Path(config.pipeline_root).glob("StatisticsGen/statistics/*"))
    split_rows = rows_per_split(str(stats[-1])) if stats else {}
    result = RunResult(
        rows, total, components, evaluation_auc(report.evaluation_uri), split_rows, report.blessed, generate_s
    )
    print(f"[{label}] pipeline done in {total:.0f} s", file=sys.stderr, flush=True)
    return result


def markdown(tables: str, cfg: Any, args: argparse.Namespace, cmd: str, facts: str) -> str:
    """The docs/benchmarks.md section: what was run, how it was measured, on which machine, and the tables."""
    mc = cfg.model_config()
    return (
        "## TFX pipeline cost, whole run and per component\n\n"
        f"Command: `{cmd.strip()}`  \n"
        f"What runs: the main job (`{args.config}`) with the data size changed: synthetic generator defaults "
        f"({args.users:,} users, 2 days) as gzipped TFRecord; ExampleGen takes `{cfg.input_pattern}` as train and "
        f"`{cfg.eval_pattern}` (the last day, half the rows) as eval; the AUCs are the Evaluator's on the eval day.  \n"
        "Pipeline: `mvke_tf.pipelines.pipeline.run_local` (LocalDagRunner, SQLite ML Metadata, Beam DirectRunner "
        f"{' '.join(cfg.beam_pipeline_args)}), fresh pipeline root per run; {cfg.model_type} "
        f"(dnn {list(mc.dnn_units)}, top {list(mc.top_units)}, tag {list(mc.tag_units)}), batch {cfg.batch_size}, "
        + (f"{cfg.train_steps} train steps" if cfg.train_steps else f"{cfg.epochs} epoch(s) over the train split")
        + ".  \n"
        "Per component (`mvke_tf.pipelines.progress.ProgressReporter`): wall time from ML Metadata (execution "
        "create to last update), CPU seconds of the process and its finished child processes between two component "
        "completions, and the process's peak resident memory while the component ran (VmHWM, reset at each "
        "completion); each size runs in a fresh process; the whole run: `time.perf_counter` around "
        "`run_local`.  \n"
        f"Machine: {facts}.\n\n" + tables + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--users", type=int, default=20_000, help="synthetic users (the generator's default)")
    p.add_argument("--config", default=MAIN_JOB, help="pipeline settings (default: the main job's)")
    p.add_argument("--train-steps", type=int, default=0, help="override the settings' epochs with a step count")
    p.add_argument("--out", default="runs/bench_pipeline", help="data and pipeline roots")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    p.add_argument("--runner", choices=RUNNERS, default="direct", help="Beam: the settings' runner, or portable")
    p.add_argument("--workers", type=int, default=2, help="worker processes per job with --runner portable")
    p.add_argument("--result-json", help=argparse.SUPPRESS)  # one size in this process (run_in_subprocess)
    args = p.parse_args(argv)
    if args.result_json:
        (result,) = [run_one(rows, args) for rows in args.rows]
        Path(args.result_json).write_text(json.dumps(dataclasses.asdict(result)))
        return 0

    overall = time.perf_counter()
    results = []
    for i, rows in enumerate(args.rows, 1):
        print(
            f"== {i}/{len(args.rows)}: {rows:,} rows ({time.perf_counter() - overall:.0f} s elapsed)",
            file=sys.stderr,
            flush=True,
        )
        results.append(run_in_subprocess(rows, args))

    tables = format_table(results) + "\n\n" + format_memory_table(results)
    given = list(sys.argv[1:] if argv is None else argv)
    if "--out" in given:  # where the files went is not part of what was measured
        i = given.index("--out")
        del given[i : i + 2]
    cmd = "python -m benchmarks.pipeline " + " ".join(given)
    facts = machine_facts()
    print(f"Command: {cmd.strip()}")
    print(f"Machine: {facts}")
    print(tables)
    if not args.no_write:
        from benchmarks.report import write_section

        config = main_job_config(args.rows[-1], Path(args.out), Path(args.out), args)
        write_section(SECTION, markdown(tables, config, args, cmd, facts))
        print(f"wrote the '{SECTION}' section of docs/benchmarks.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
