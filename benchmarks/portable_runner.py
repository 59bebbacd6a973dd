"""The main job's Beam components on the portable runner (two worker processes per job) vs the DirectRunner.

    python -m benchmarks.portable_runner --rows 100000 --train-steps 100

For each size, the main job's pipeline runs once per runner, alternately, each in a fresh process
(``benchmarks.pipeline``'s runs): the settings' DirectRunner in memory, then a
:class:`~mvke_tf.pipelines.portable.PortableCluster` started for the run (a job service and an external
worker pool, ``--workers`` SDK worker processes per job). The Trainer is not a Beam component; a
small step count keeps it short. Writes the ``portable_runner`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from benchmarks.pipeline import MAIN_JOB, RunResult, _secs, machine_facts, run_in_subprocess

SECTION = "portable_runner"
BEAM_COMPONENTS = ("StatisticsGen", "Transform", "Evaluator")


def format_table(pairs: Sequence[tuple[RunResult, RunResult]]) -> str:
    """Markdown: per size and Beam component, direct s, portable s, and their ratio; then the whole run."""
    lines = [
        "| rows | component | direct (s) | portable (s) | portable / direct | CPU-s direct | CPU-s portable |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for direct, portable in pairs:
        for name in BEAM_COMPONENTS:
            d, p = direct.seconds(name), portable.seconds(name)
            ratio = f"{p / d:.2f}" if d and p else "–"
            cpu = [r.cpu(name) for r in (direct, portable)]
            cpus = [f"{c:,.0f}" if c is not None else "–" for c in cpu]
            lines.append(f"| {direct.rows:,} | {name} | {_secs(d)} | {_secs(p)} | {ratio} | {cpus[0]} | {cpus[1]} |")
        whole = f"{_secs(direct.total_s)} | {_secs(portable.total_s)} | {portable.total_s / direct.total_s:.2f}"
        lines.append(f"| {direct.rows:,} | whole pipeline | {whole} | | |")
        for task in ("click", "conversion"):
            a, b = direct.auc.get(task), portable.auc.get(task)
            if a is not None and b is not None:
                lines.append(f"| {direct.rows:,} | {task} AUC (Evaluator) | {a:.4f} | {b:.4f} | | | |")
        blessed = {True: "yes", False: "no", None: "–"}
        lines.append(f"| {direct.rows:,} | blessed | {blessed[direct.blessed]} | {blessed[portable.blessed]} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000])
    p.add_argument("--users", type=int, default=20_000, help="synthetic users (the generator's default)")
    p.add_argument("--config", default=MAIN_JOB, help="pipeline settings (default: the main job's)")
    p.add_argument("--train-steps", type=int, default=100, help="Trainer steps (not a Beam component)")
    p.add_argument("--workers", type=int, default=2, help="worker processes per job on the portable runner")
    p.add_argument("--out", default="runs/bench_portable", help="data and pipeline roots")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args(argv)
    pairs = []
    for rows in args.rows:
        runs = {}
        for runner in ("direct", "portable"):
            print(f"== {rows:,} rows, {runner} runner", file=sys.stderr, flush=True)
            runs[runner] = run_in_subprocess(rows, argparse.Namespace(**{**vars(args), "runner": runner}))
        pairs.append((runs["direct"], runs["portable"]))
    table = format_table(pairs)
    given = list(sys.argv[1:] if argv is None else argv)
    if "--out" in given:
        i = given.index("--out")
        del given[i : i + 2]
    cmd = "python -m benchmarks.portable_runner " + " ".join(given)
    facts = machine_facts()
    print(f"Command: {cmd.strip()}\nMachine: {facts}\n{table}")
    if not args.no_write:
        from benchmarks.report import write_section

        write_section(
            SECTION,
            "## Portable vs direct runner, the main job's Beam components\n\n"
            f"Command: `{cmd.strip()}`  \n"
            f"What runs: the main job (`{args.config}`) on synthetic data of that many rows, once with its "
            "DirectRunner (in memory, one worker) and once on `mvke_tf.pipelines.portable.PortableCluster` "
            f"(`--runner=PortableRunner`, a job service in the pipeline's process, an external worker pool, "
            f"{args.workers} SDK worker processes per job), alternately, each run in a fresh process; "
            f"{args.train_steps} Trainer steps. Seconds per component from ML Metadata; CPU-s: the pipeline "
            "process and its finished child processes (the portable runner's workers are the pool's children, "
            "not counted).  \n"
            f"Machine: {facts}.\n\n" + table + "\n",
        )
        print(f"wrote the '{SECTION}' section of docs/benchmarks.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
