"""The flake hunt: runs tests again and again, each time in a fresh process, and counts what failed.

A test that fails by chance blocks everyone, and one run shows nothing: the failure of one run in
five of a test whose fixture was not seeded took eleven runs to show twice. This runs

* each training-heavy test file (:func:`training_files`) ``--runs`` times (``pytest -n 0 FILE``),
* the default suite ``--suite`` times (``pytest``, as ``make test`` does, two workers),
* the slow tests ``--slow`` times (``pytest -m slow -n 0``, as ``make test-slow`` does),

``--jobs`` runs at a time (2 by default: the other run is the load a CI machine may carry), and
prints a table of passes per target with every test that failed and in which runs. Each run's
output is kept in ``--out`` (``runs/test-repeat/<time>/``) with ``summary.json``. Exit status 1 if
any run failed.

::

  python scripts/test_repeat.py                       # the training-heavy files, 10 runs each
  python scripts/test_repeat.py --runs 0 --suite 3 --slow 2
  python scripts/test_repeat.py tests/models/test_multidomain_fusion.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What makes a test file training-heavy: it trains a model (the library's, the CLI's, the
# pipeline's Trainer, worker processes) or executes notebooks that do. Found by reading the files,
# so a new test file that trains is hunted without anyone updating a list.
TRAINING_CALLS = re.compile(
    r"\.fit\(|train_multidomain\(|train_and_evaluate\(|fit_predict_in_setting\(|run_fn\(|_run_workers\("
    r"|run_local\(|main\(\[\"run\"|\"train\", \"--|\"pipeline\", \"run\"|nbclient"
)


def training_files(root: Path = ROOT) -> list[str]:
    """The test files (relative paths, sorted) that call a training entry point (``TRAINING_CALLS``)."""
    files = sorted((root / "tests").rglob("test_*.py"))
    return [str(f.relative_to(root)) for f in files if TRAINING_CALLS.search(f.read_text(encoding="utf-8"))]


FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)
# pytest's closing line, with or without its "=" rule (the project's -q leaves it out).
SUMMARY = re.compile(
    r"^=*\s*((?:\d+ (?:passed|failed|errors?|skipped|deselected)|no tests ran)\b.*? in [\d.]+s.*?)\s*=*$", re.M
)


def _targets(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """``(name, pytest arguments)`` of every run, in the order they are started."""
    runs: list[tuple[str, list[str]]] = []
    for path in args.files or (training_files() if args.runs else ()):
        runs += [(path, ["-n", "0", "-m", args.marks, path])] * args.runs
    runs += [("default suite", [])] * args.suite
    runs += [("slow tests", ["-m", "slow", "-n", "0"])] * args.slow
    return runs


def _run(index: int, name: str, pytest_args: list[str], out: Path) -> dict:
    log = out / f"{index:03d}-{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')}.log"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *pytest_args]
    start = time.monotonic()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    text = log.read_text(errors="replace")
    if rc == 5:  # pytest: no test selected (e.g. a file of slow tests under the default --marks)
        rc = 0
    summary = SUMMARY.findall(text)
    result = {
        "target": name,
        "rc": rc,
        "seconds": round(time.monotonic() - start, 1),
        "failed": sorted(set(FAILED.findall(text))),
        "summary": summary[-1] if summary else f"exit status {rc}",
        "log": str(log.relative_to(ROOT) if log.is_relative_to(ROOT) else log),
    }
    mark = "ok  " if rc == 0 else "FAIL"
    print(f"{mark} {name}: {result['summary']} ({result['seconds']:.0f} s)", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("files", nargs="*", help="test files (default: the training-heavy files)")
    p.add_argument("--runs", type=int, default=10, help="runs of each file (default %(default)s)")
    p.add_argument("--suite", type=int, default=0, help="runs of the default suite (default %(default)s)")
    p.add_argument("--slow", type=int, default=0, help="runs of the slow tests (default %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default %(default)s)")
    p.add_argument(
        "--marks", default="not bench and not slow", help="marker expression of the file runs (default %(default)r)"
    )
    p.add_argument("--out", type=Path, default=None, help="log folder (default runs/test-repeat/<time>)")
    args = p.parse_args(argv)
    for name in ("runs", "suite", "slow", "jobs"):
        if getattr(args, name) < 0 or (name == "jobs" and args.jobs < 1):
            p.error(f"--{name} must be {'>= 1' if name == 'jobs' else '>= 0'}")
    missing = [f for f in args.files if not (ROOT / f).is_file()]
    if missing:
        p.error(f"no such test file(s): {', '.join(missing)}; fix: give paths relative to the repository root")
    runs = _targets(args)
    if not runs:
        p.error("nothing to run; fix: give --runs, --suite or --slow a count above 0")
    out = args.out or ROOT / "runs" / "test-repeat" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    print(f"test-repeat: {len(runs)} runs, {args.jobs} at a time; logs in {out}", flush=True)
    start = time.monotonic()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: _run(job[0], *job[1], out), enumerate(runs)))

    table: dict[str, dict] = {}
    for i, r in enumerate(results):
        row = table.setdefault(r["target"], {"runs": 0, "passed": 0, "seconds": [], "failures": {}})
        row["runs"] += 1
        row["passed"] += r["rc"] == 0
        row["seconds"].append(r["seconds"])
        for test in r["failed"] or ([] if r["rc"] == 0 else [f"(exit status {r['rc']}, see {r['log']})"]):
            row["failures"].setdefault(test, []).append(i)
    minutes = (time.monotonic() - start) / 60
    print("\n| target | passed | median s | failed tests (run numbers) |\n| --- | --- | --- | --- |")
    for name, row in table.items():
        failed = "; ".join(f"{t} ({', '.join(map(str, idx))})" for t, idx in row["failures"].items()) or "-"
        median = sorted(row["seconds"])[len(row["seconds"]) // 2]
        print(f"| {name} | {row['passed']}/{row['runs']} | {median:.0f} | {failed} |")
    print(f"\n{sum(r['rc'] == 0 for r in results)}/{len(results)} runs passed in {minutes:.1f} min")
    (out / "summary.json").write_text(json.dumps({"runs": results, "table": table, "minutes": minutes}, indent=1))
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
