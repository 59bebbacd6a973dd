"""The ingestion benchmark at toy size: every format goes through its ExampleGen and StatisticsGen."""

import pytest

from benchmarks import ingestion


@pytest.mark.pipeline
@pytest.mark.slow  # three two-component pipelines (~1 min): make test-slow, which CI runs
def test_csv_parquet_and_typed_tfrecord_ingest_the_same_rows(tmp_path, capsys):
    assert ingestion.main(["--rows", "2000", "--work", str(tmp_path / "work"), "--no-write"]) == 0
    out = capsys.readouterr().out
    for fmt in ingestion.FORMATS:  # the same rows per split in every format
        line = next(line for line in out.splitlines() if line.startswith(f"{fmt} {{'ExampleGen':"))
        assert line.endswith("eval 400 rows, train 1,600 rows"), line
