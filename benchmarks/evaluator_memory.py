"""The batched Evaluator's peak memory against the number of eval rows, this version vs an older one.

    python -m benchmarks.evaluator_memory --eval-rows 500000 2000000 --before REV

``--before REV``: the Evaluator of the git revision ``REV`` runs side by side with the working tree's: its
``pipelines/evaluator*.py`` modules (``git show``) are copied into a package ``evaluator_before`` in ``--out``, their
imports of each other pointed there, and the rest of the pipeline is the working tree's.

Runs only the Evaluator's Beam evaluation: :func:`mvke_tf.pipelines.evaluator.BatchedEvaluation` and TFMA's
``WriteResults``, as the Executor runs them, with the main job's eval config
(``pipelines/configs/synthetic.yaml``: per task ExampleCount, AUC, AUC-PR, Calibration, MeanLabel,
MeanPrediction, GAUC by user; the overall slice and three slice features), the main job's Beam options
(DirectRunner, in-memory, one worker) and an untrained ``mvke_mt`` of the main job's sizes exported by
:func:`mvke_tf.export.export_saved_model` (seeded; its scores read the same raw features as a trained
one's). The eval rows are the first ``N`` of one synthetic eval day (gzipped TFRecord files of
100,000 rows; generated for the largest size asked for, reused while ``metadata.json`` shows the same
generator config).

Each (version, size) runs in a fresh Python process, so that no run inherits another's memory, and
reports the process's peak resident memory (VmHWM from ``/proc/self/status``), its resident memory
before the pipeline (TensorFlow, TFX and Beam imported, nothing evaluated), the wall time and every
metric value of every slice; the two versions' values are compared exactly. Prints the table and writes
it to docs/benchmarks.md (section ``evaluator_memory``).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

SECTION = "evaluator_memory"
MAIN_JOB = "pipelines/configs/synthetic.yaml"
FILE_ROWS = 100_000  # rows per generated file: sizes are multiples of it
HEADLINE = (("click", "auc"), ("click", "gauc"), ("conversion", "auc"), ("conversion", "gauc"))


def _status_kib(field: str) -> float:
    """A ``/proc/self/status`` field (``VmHWM``, ``VmRSS``) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}; fix: run the benchmark on Linux")


def _main_job(data: Path, root: Path) -> Any:
    """The main job's ``PipelineConfig`` on ``data``."""
    from mvke_tf.pipelines.__main__ import _parser, config_from_settings, settings_from_args

    argv = ["run", "--config", MAIN_JOB, "--root", str(root), "--data-root", str(data)]
    return config_from_settings(settings_from_args(_parser().parse_args(argv)))


def prepare(out: Path, eval_rows: int, users: int) -> tuple[Path, Path]:
    """The synthetic data (``eval_rows`` eval rows, as many train rows) and the exported model, reused when
    already there: ``(data directory, SavedModel directory)``."""
    from mvke_tf.data import synthetic

    data = out / "data"
    cfg = synthetic.SyntheticConfig(num_rows=2 * eval_rows, num_users=users)  # the last of 2 days is eval
    meta = data / "metadata.json"
    fresh = True
    if meta.exists():
        with_files = len(json.loads(meta.read_text())["splits"]["eval"]["files"])
        fresh = json.loads(meta.read_text())["generator"] != cfg.to_dict() or with_files != -(-eval_rows // FILE_ROWS)
    if fresh:
        print(f"generating {2 * eval_rows:,} rows into {data} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        synthetic.generate(cfg, data, formats=("tfrecord",), shard_rows=FILE_ROWS)
        print(f"generated in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    model = out / "model"
    if not (model / "saved_model.pb").exists():
        import tensorflow as tf

        from mvke_tf.export import export_saved_model
        from mvke_tf.models import build_model

        config = _main_job(data, out / "root")
        tf.keras.utils.set_random_seed(0)
        export_saved_model(build_model(config.feature_config(), config.model_config()), model)
    return data, model


def _load_evaluator(path: str | None) -> Any:
    """``mvke_tf.pipelines.evaluator``, or the ``evaluator`` module of the package whose directory is ``path``
    (an older version's, written by :func:`copy_evaluator`)."""
    if not path:
        import mvke_tf.pipelines.evaluator

        return mvke_tf.pipelines.evaluator
    package = Path(path)
    sys.path.insert(0, str(package.parent))  # importable by name: Beam pickles the module's functions by reference
    return importlib.import_module(f"{package.name}.evaluator")


BEFORE_PACKAGE = "evaluator_before"


def copy_evaluator(revision: str, out: Path) -> Path:
    """The Evaluator's modules (``pipelines/evaluator*.py``) of git ``revision`` as the package
    ``out/evaluator_before``, their imports of each other (``pipelines.evaluator_config``, or
    ``mvke_tf.pipelines.evaluator_batches`` since the namespace) rewritten to it; returns the package's directory.
    Raises ValueError naming the revision when git cannot read it."""
    listing = subprocess.run(
        ["git", "ls-tree", "--name-only", revision, "pipelines/"], capture_output=True, text=True, check=False
    )
    if listing.returncode:
        raise ValueError(f"--before {revision}: {listing.stderr.strip()}; fix: give a git revision of this repository")
    files = [f for f in listing.stdout.split() if re.fullmatch(r"pipelines/evaluator\w*\.py", f)]
    if "pipelines/evaluator.py" not in files:
        raise ValueError(f"--before {revision}: no pipelines/evaluator.py; fix: give a revision with the Evaluator")
    package = out / BEFORE_PACKAGE
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in files:
        text = subprocess.run(["git", "show", f"{revision}:{name}"], capture_output=True, text=True, check=True).stdout
        text = re.sub(r"\b(?:mvke_tf\.)?pipelines\.(evaluator\w*)", rf"{BEFORE_PACKAGE}.\1", text)
        (package / Path(name).name).write_text(text)
    return package


def run_one(data: Path, model: Path, eval_rows: int, module_path: str | None, work: Path) -> dict[str, Any]:
    """The evaluation of the first ``eval_rows`` eval rows in this process: peak and starting RSS (MiB),
    seconds, and ``{slice: {output/metric: value}}``."""
    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_model_analysis as tfma
    from apache_beam.options.pipeline_options import PipelineOptions
    from mvke_tf.pipelines.pipeline import eval_config
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx.utils import io_utils

    evaluator = _load_evaluator(module_path)
    config = _main_job(data, work / "root")
    files = sorted(str(p) for p in (data / "eval").glob("part-*.tfrecord.gz"))[: -(-eval_rows // FILE_ROWS)]
    eval_cfg = tfma.utils.update_eval_config_with_defaults(eval_config(config), has_baseline=False, rubber_stamp=True)
    schema = io_utils.parse_pbtxt_file(config.schema_path, schema_pb2.Schema())
    feature_spec = dict(schema_utils.schema_as_feature_spec(schema).feature_spec)
    output = work / "evaluation"
    spill = output / "batched_evaluator_tmp"  # where the Executor spills: its output artifact
    # An older version has no spill (no temp_dir argument).
    spills = "temp_dir" in inspect.signature(evaluator.BatchedEvaluation).parameters
    rss_start = _status_kib("VmRSS") / 1024
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(list(config.beam_pipeline_args))) as pipeline:
        evaluation = pipeline | "Evaluate" >> evaluator.BatchedEvaluation(
            files, eval_cfg, {"": str(model)}, feature_spec, **({"temp_dir": str(spill)} if spills else {})
        )
        _ = evaluation | "Write" >> tfma.WriteResults(writers=tfma.default_writers(str(output), eval_config=eval_cfg))
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") / 1024
    metrics = {}
    for key, per_output in tfma.load_eval_result(str(output)).slicing_metrics:
        name = "overall" if not key else ", ".join(f"{k}={v}" for k, v in key)
        metrics[name] = {
            f"{o}/{m}": v.get("doubleValue", math.nan) for o, d in per_output.items() for m, v in d[""].items()
        }
    leftovers = [str(p) for p in spill.rglob("*") if p.is_file()] if spill.exists() else []
    tf.io.gfile.rmtree(str(output))
    return {
        "eval_rows": int(metrics["overall"]["click/example_count"]),
        "peak_rss_mb": peak,
        "start_rss_mb": rss_start,
        "seconds": seconds,
        "metrics": metrics,
        "spilled_files_left": leftovers,
    }


def run_in_subprocess(eval_rows: int, module_path: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_one` in a fresh Python process (its own memory high-water mark)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.evaluator_memory", "--eval-rows", str(eval_rows)]
        cmd += ["--users", str(args.users), "--out", args.out, "--result-json", str(result), "--work", tmp]
        cmd += ["--module", module_path] if module_path else []
        subprocess.run(cmd, check=True)
        return json.loads(result.read_text())


def differences(a: dict, b: dict) -> dict[str, float]:
    """``{output/metric: the largest |a - b| over the slices}`` for every metric that differs anywhere
    (a slice or a metric missing from one side: infinity; NaN equals NaN)."""
    out: dict[str, float] = {}
    for key in set(a) | set(b):
        x, y = a.get(key, {}), b.get(key, {})
        for name in set(x) | set(y):
            if name not in x or name not in y:
                out[name] = math.inf
                continue
            u, v = x[name], y[name]
            if u == v or (math.isnan(u) and math.isnan(v)):
                continue
            out[name] = max(out.get(name, 0.0), abs(u - v) if not (math.isnan(u) or math.isnan(v)) else math.inf)
    return out


def table(sizes: list[int], results: dict[str, dict[int, dict]]) -> str:
    """Markdown: peak RSS per version and size, its growth per eval row, the headline metrics, equality."""
    versions = list(results)
    head = "| | " + " | ".join(f"{v}, {n:,} eval rows" for v in versions for n in sizes) + " |"
    lines = [head, "| --- |" + " ---: |" * (len(versions) * len(sizes))]

    def row(label: str, cell: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(results[v][n]) for v in versions for n in sizes) + " |")

    row("peak RSS (VmHWM), MiB", lambda r: f"{r['peak_rss_mb']:,.0f}")
    row("RSS before the pipeline, MiB", lambda r: f"{r['start_rss_mb']:,.0f}")
    row("peak - before, MiB", lambda r: f"{r['peak_rss_mb'] - r['start_rss_mb']:,.0f}")
    row("wall s", lambda r: f"{r['seconds']:.0f}")
    for output, metric in HEADLINE:
        row(f"{output} {metric} (overall)", lambda r, k=f"{output}/{metric}": f"{r['metrics']['overall'][k]:.10f}")
    row("slices x metrics", lambda r: f"{len(r['metrics'])} x {len(next(iter(r['metrics'].values())))}")
    notes = []
    lo, hi = sizes[0], sizes[-1]
    for v in versions:
        if hi > lo:
            low, high = results[v][lo]["peak_rss_mb"], results[v][hi]["peak_rss_mb"]
            notes.append(
                f"{v}: peak RSS at {hi:,} eval rows {(high - low) / low:+.1%} vs {lo:,} "
                f"({(high - low) * 2**20 / (hi - lo):,.0f} bytes per extra eval row)."
            )
    if len(versions) == 2:
        for n in sizes:
            diff = differences(results[versions[0]][n]["metrics"], results[versions[1]][n]["metrics"])
            same = (
                "every metric of every slice equal"
                if not diff
                else "equal except "
                + ", ".join(f"{name} (largest difference {d:.1e})" for name, d in sorted(diff.items()))
            )
            notes.append(f"{versions[0]} vs {versions[1]} at {n:,} eval rows: {same}.")
    return "\n".join(lines) + ("\n\n" + "  \n".join(notes) if notes else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluator_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--eval-rows", type=int, nargs="+", default=[500_000, 2_000_000], help="multiples of 100,000")
    parser.add_argument("--users", type=int, default=20_000, help="synthetic users (the generator's default)")
    parser.add_argument("--before", metavar="REV", help="a git revision whose Evaluator runs side by side")
    parser.add_argument("--out", default="runs/bench-evaluator-memory", help="data and model (reused)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--result-json", help=argparse.SUPPRESS)  # one run in this process (run_in_subprocess)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--module", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    bad = [n for n in args.eval_rows if n <= 0 or n % FILE_ROWS]
    if bad:
        parser.error(f"--eval-rows {bad}: give positive multiples of {FILE_ROWS:,} (the rows per generated file)")
    out = Path(args.out).resolve()
    if args.result_json:
        (rows,) = args.eval_rows
        result = run_one(out / "data", out / "model", rows, args.module, Path(args.work))
        Path(args.result_json).write_text(json.dumps(result))
        return 0

    sizes = sorted(args.eval_rows)
    versions: dict[str, str | None] = {}
    if args.before:
        try:
            versions[f"before ({args.before})"] = str(copy_evaluator(args.before, out))
        except ValueError as e:
            parser.error(str(e))
    versions["after"] = None
    prepare(out, sizes[-1], args.users)
    results: dict[str, dict[int, dict]] = {}
    for name, module_path in versions.items():
        for n in sizes:
            print(f"== {name}, {n:,} eval rows", file=sys.stderr, flush=True)
            r = results.setdefault(name, {})[n] = run_in_subprocess(n, module_path, args)
            print(f"   peak {r['peak_rss_mb']:,.0f} MiB, {r['seconds']:.0f} s", file=sys.stderr, flush=True)
            if r["spilled_files_left"]:
                print(f"   spilled files left: {r['spilled_files_left'][:5]}", file=sys.stderr, flush=True)
    text = table(sizes, results)
    print(text)
    if not args.no_write:
        from benchmarks.report import machine, section, write_section

        given = list(sys.argv[1:] if argv is None else argv)
        if "--out" in given:  # where the files went is not part of what was measured
            i = given.index("--out")
            del given[i : i + 2]
        body = section(
            "The batched Evaluator's peak memory against the eval rows",
            "python -m benchmarks.evaluator_memory " + " ".join(given),
            {
                "machine": machine(),
                "what runs": "`BatchedEvaluation` + TFMA's `WriteResults` only, the main job's eval config and Beam "
                "options, an untrained `mvke_mt` export; a fresh process per (version, size)",
            },
            text,
        )
        write_section(SECTION, body)
        shutil.rmtree(out / "root", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
