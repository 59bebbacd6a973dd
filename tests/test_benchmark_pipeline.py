"""The pipeline benchmark's pure parts: the tables and the section text (no pipeline run)."""

from argparse import Namespace
from pathlib import Path

from benchmarks.pipeline import ComponentCost, RunResult, format_memory_table, format_table, markdown


def _results():
    small = RunResult(
        1_000_000,
        total_s=400.0,
        components=[
            ComponentCost("ImportExampleGen", 2.0, 1.0, 900.0),
            ComponentCost("StatisticsGen", 100.0, 98.0, 1000.0),
            ComponentCost("Evaluator", 50.0, 49.0, 2400.0),
        ],
        auc={"click": 0.61234, "conversion": 0.7},
        split_rows={"train": 500_000, "eval": 500_000},
        blessed=True,
        generate_s=1.5,
    )
    large = RunResult(
        4_000_000,
        total_s=1200.0,
        components=[
            ComponentCost("ImportExampleGen", 4.0, 2.0, 950.0),
            ComponentCost("StatisticsGen", 400.0, 396.0, 1100.0),
            ComponentCost("Pusher", 1.0, 0.5, 2500.0, "FAILED"),
        ],
        auc={"click": None, "conversion": None},
        split_rows={"train": 2_000_000, "eval": 2_000_000},
    )
    return small, large


def test_format_table_components_by_rows_with_cpu_per_million_rows():
    lines = format_table(_results()).splitlines()
    assert lines[0] == "| component | 1,000,000 rows | 4,000,000 rows | CPU-s per M rows (4,000,000) |"
    assert lines[2] == "| ImportExampleGen | 2.0 s | 4.0 s | 0 |"  # 2 CPU-s over 4M rows
    assert lines[3] == "| StatisticsGen | 100 s | 400 s | 99 |"
    assert lines[4] == "| Evaluator | 50.0 s | – | – |"
    assert lines[5] == "| Pusher | – | 1.0 s (failed) | 0 |"
    assert lines[6].startswith("| *outside the components (orchestration)* | 248 s | 795 s |")  # total minus parts
    assert "**400 s**" in lines[7] and "**1,200 s**" in lines[7] and lines[7].endswith("| **100** |")
    by_name = {line.split(" | ")[0].lstrip("| "): line for line in lines}
    assert by_name["ms per row, whole pipeline"] == "| ms per row, whole pipeline | 0.400 | 0.300 | |"
    assert "| 0.102 | 0.101 |" in by_name["ms per row, ExampleGen + StatisticsGen + Transform"]
    assert "| 0.100 | – |" in by_name["ms per eval row, Evaluator"]  # 50 s over 500,000 eval rows
    assert by_name["whole pipeline, 4M / 1M time"].split(" | ")[-2] == "3.00"
    assert by_name["click AUC (Evaluator, overall)"] == "| click AUC (Evaluator, overall) | 0.6123 | – | |"
    assert lines[-1] == "| blessed | yes | – | |"


def test_memory_table_has_every_component_and_the_whole_run():
    lines = format_memory_table(_results()).splitlines()
    assert lines[0] == "| peak RSS (MiB) | 1,000,000 rows | 4,000,000 rows |"
    assert "| Evaluator | 2,400 | – |" in lines
    assert lines[-1] == "| **whole run** | **2,400** | **2,500** |"


def test_markdown_names_the_command_sizes_and_machine():
    from benchmarks.pipeline import MAIN_JOB, main_job_config

    args = Namespace(users=20_000, train_steps=0, config=MAIN_JOB)
    cfg = main_job_config(100_000, Path("data"), Path("run"), args)  # the main job's settings, other paths
    assert (cfg.model_type, cfg.batch_size, cfg.input_format) == ("mvke_mt", 512, "tfrecord")
    assert cfg.eval_pattern == "eval/part-*.tfrecord.gz" and cfg.train_steps == 0 and cfg.epochs == 1
    body = markdown("| t |", cfg, args, "python -m benchmarks.pipeline --rows 100000", "2 cores")
    assert body.startswith("## TFX pipeline cost")
    assert "Command: `python -m benchmarks.pipeline --rows 100000`" in body
    assert "dnn [128, 64, 32]" in body and "1 epoch(s) over the train split" in body and "Machine: 2 cores." in body
    assert main_job_config(1, Path("d"), Path("r"), Namespace(train_steps=50, config=MAIN_JOB)).train_steps == 50
    assert body.endswith("| t |\n")
