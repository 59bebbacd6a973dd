"""Own-data ingestion: CSV vs Parquet vs typed TFRecord through ExampleGen and StatisticsGen, side by side.

    python -m benchmarks.ingestion --rows 200000

A made-up own-data table (integer ids, a zip code, a text field, a ``|``-joined tag set, two 0/1 labels;
the README's layout, 80% train / 20% eval) is written as CSV and as Parquet; ``mvke-tf data describe`` writes
its features.yaml and schema, and ``mvke-tf data convert`` the typed, gzipped tf.Examples (timed). Then, in
one process, one format after the other, a two-component pipeline (the main job's ExampleGen for the format
and its StatisticsGen, DirectRunner, fresh ML Metadata) runs on each; the seconds per component come from
ML Metadata. Prints the table and writes it to docs/benchmarks.md (section ``ingestion``).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

SECTION = "ingestion"
FORMATS = ("csv", "parquet", "tfrecord")
PATTERNS = {"csv": "{split}/*.csv", "parquet": "{split}/*.parquet", "tfrecord": "{split}/*.tfrecord.gz"}


def made_up_columns(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``rows`` rows of an own-data table: ids as integers, text, a tag set, two labels (no structure needed)."""
    rng = np.random.default_rng(seed)
    tags = np.array(["drama", "comedy", "action", "horror", "family", "docs", "news", "sport"])
    first, second = rng.integers(0, len(tags), rows), rng.integers(0, len(tags), rows)
    genres = np.where(first == second, tags[first], np.char.add(np.char.add(tags[first], "|"), tags[second]))
    return {
        "member": rng.integers(1, max(2, rows // 10), rows),
        "sex": rng.choice(np.array(["F", "M"]), rows),
        "age": rng.choice(np.array([18, 25, 35, 45, 56]), rows),
        "occupation": rng.integers(0, 21, rows),
        "zip": rng.integers(10_000, 99_999, rows),
        "city": rng.choice(np.array([f"city{i}" for i in range(300)]), rows),
        "spend": np.round(rng.gamma(2.0, 20.0, rows), 2),
        "genres": genres,
        "watched": rng.integers(0, 2, rows),
        "liked": rng.integers(0, 2, rows),
    }


def write_table(root: Path, rows: int) -> None:
    """``root/{train,eval}/part-00000.{csv,parquet}`` (80/20)."""
    import pandas as pd

    table = pd.DataFrame(made_up_columns(rows))
    cut = int(rows * 0.8)
    for split, part in (("train", table.iloc[:cut]), ("eval", table.iloc[cut:])):
        for fmt in ("csv", "parquet"):
            target = root / fmt / split / f"part-00000.{fmt}"
            target.parent.mkdir(parents=True, exist_ok=True)
            part.to_csv(target, index=False) if fmt == "csv" else part.to_parquet(target, index=False)


def run_format(fmt: str, data_root: Path, work: Path) -> tuple[dict[str, float], str]:
    """ExampleGen + StatisticsGen on one format: ``{component: seconds}`` from ML Metadata, and the rows per
    split StatisticsGen counted."""
    from mvke_tf.pipelines.config import PipelineConfig
    from mvke_tf.pipelines.pipeline import _example_gen, _statistics_options
    from mvke_tf.pipelines.progress import ProgressReporter
    from tfx import v1 as tfx

    config = PipelineConfig(
        pipeline_name=f"ingest-{fmt}",
        pipeline_root=str(work / fmt / "root"),
        data_root=str(data_root),
        serving_dir=str(work / fmt / "serving"),
        metadata_path=str(work / fmt / "metadata.db"),
        features_yaml=str(data_root / "features.yaml"),
        input_format=fmt,
        input_pattern=PATTERNS[fmt].format(split="train"),
        eval_pattern=PATTERNS[fmt].format(split="eval"),
    )
    example_gen = _example_gen(config)
    statistics = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], stats_options=_statistics_options()
    )
    pipeline = tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[example_gen, statistics],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path),
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
    with ProgressReporter(config.metadata_path, config.pipeline_name, out=io.StringIO()) as progress:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    records = progress.records
    seconds = {("ExampleGen" if "ExampleGen" in r.component else r.component): r.seconds for r in records}
    return seconds, next((r.summary for r in records if r.component == "StatisticsGen"), "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingestion", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows in all (80%% train, 20%% eval)")
    parser.add_argument("--work", default="runs/bench-ingestion", help="scratch directory (replaced)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    from benchmarks.report import machine, section, write_section
    from mvke_tf.config import FeatureConfig
    from mvke_tf.data.own_data import convert, describe_data

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    write_table(work / "data", args.rows)
    print(f"wrote {args.rows:,} rows as CSV and Parquet in {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    describe_data(str(work / "data" / "csv"), work / "data" / "csv", user_id="member")
    describe_s = time.perf_counter() - start
    shutil.copy(work / "data" / "csv" / "features.yaml", work / "data" / "parquet" / "features.yaml")
    features = FeatureConfig.from_yaml(work / "data" / "csv" / "features.yaml")
    start = time.perf_counter()
    convert(work / "data" / "csv", work / "data" / "tfrecord", features)
    convert_s = time.perf_counter() - start
    print(f"describe {describe_s:.1f} s, convert {convert_s:.1f} s", flush=True)
    seconds = {}
    for fmt in FORMATS:
        seconds[fmt], counted = run_format(fmt, work / "data" / fmt, work / "runs")
        print(fmt, {k: round(v, 1) for k, v in seconds[fmt].items()}, counted, flush=True)
    rows = args.rows
    lines = [
        "| input | ExampleGen s | StatisticsGen s | both s | ms per row | vs CSV |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    csv_total = sum(seconds["csv"].values())
    for fmt in FORMATS:
        gen, stats = seconds[fmt].get("ExampleGen", float("nan")), seconds[fmt].get("StatisticsGen", float("nan"))
        label = {"tfrecord": "typed TFRecord (`data convert`)"}.get(fmt, fmt.upper() if fmt == "csv" else "Parquet")
        lines.append(
            f"| {label} | {gen:.1f} | {stats:.1f} | {gen + stats:.1f} | {1000 * (gen + stats) / rows:.3f} | "
            f"{(gen + stats) / csv_total:.2f}x |"
        )
    note = (
        f"One-off costs on the CSV files: `data describe` (a 20,000-row sample) {describe_s:.1f} s, `data convert` "
        f"(every row: read and checked in Python, encoded by tfx_bsl) {convert_s:.1f} s = "
        f"{1000 * convert_s / rows:.3f} ms per row."
    )
    table = "\n".join(lines)
    print(table + "\n" + note)
    if not args.no_write:
        command = "python -m benchmarks.ingestion " + " ".join(argv if argv is not None else sys.argv[1:])
        body = section(
            "Own-data ingestion: CSV vs Parquet vs typed TFRecord",
            command,
            {"machine": machine(), "rows": f"{rows:,} (80% train, 20% eval), 10 columns"},
            table,
            note,
        )
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
