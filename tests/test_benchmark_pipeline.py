"""The pipeline benchmark's pure parts: ML Metadata timing extraction and the table (no pipeline run)."""

from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

from ml_metadata.proto import metadata_store_pb2 as mlmd

from benchmarks.pipeline import ComponentTime, RunResult, component_times, format_table, markdown


class FakeStore:
    """The few MetadataStore calls ``component_times`` makes, over two recorded runs."""

    def __init__(self):
        self.types = [
            SimpleNamespace(id=1, name="tfx.components.trainer.component.Trainer"),
            SimpleNamespace(id=2, name="tfx.components.example_gen.csv_example_gen.component.CsvExampleGen"),
            SimpleNamespace(id=3, name="tfx.dsl.components.common.resolver.Resolver"),
        ]
        self.runs = [
            SimpleNamespace(id=10, name="old", create_time_since_epoch=1_000),
            SimpleNamespace(id=11, name="new", create_time_since_epoch=5_000),
        ]
        ex = mlmd.Execution
        self.executions = {
            10: [ex(id=1, type_id=2, create_time_since_epoch=1_000, last_update_time_since_epoch=9_000)],
            11: [  # stored out of run order
                ex(
                    id=3,
                    type_id=1,
                    create_time_since_epoch=8_000,
                    last_update_time_since_epoch=20_500,
                    last_known_state=ex.FAILED,
                ),
                ex(
                    id=2,
                    type_id=2,
                    create_time_since_epoch=5_000,
                    last_update_time_since_epoch=7_250,
                    last_known_state=ex.COMPLETE,
                ),
                ex(
                    id=4,
                    type_id=3,
                    create_time_since_epoch=7_300,
                    last_update_time_since_epoch=7_310,
                    last_known_state=ex.COMPLETE,
                ),
            ],
        }
        self.nodes = {2: "bench.CsvExampleGen", 3: "bench.Trainer", 4: "bench.latest_blessed_model_resolver"}

    def get_contexts_by_type(self, name):
        return self.runs if name == "pipeline_run" else []

    def get_execution_types(self):
        return self.types

    def get_executions_by_context(self, context_id):
        return self.executions[context_id]

    def get_contexts_by_execution(self, execution_id):
        ctxs = [SimpleNamespace(type="pipeline", name="bench"), SimpleNamespace(type="pipeline_run", name="new")]
        if execution_id in self.nodes:
            ctxs.append(SimpleNamespace(type="node", name=self.nodes[execution_id]))
        return ctxs


def test_component_times_latest_run_in_order_named_by_node():
    times = component_times(FakeStore(), "bench")
    assert [t.component for t in times] == ["CsvExampleGen", "latest_blessed_model_resolver", "Trainer"]
    assert [t.seconds for t in times] == [2.25, 0.01, 12.5]
    assert times[2].state == "FAILED" and times[0].state == "COMPLETE"


def test_component_times_without_node_context_uses_the_type_name():
    store = FakeStore()
    store.nodes = {}
    assert [t.component for t in component_times(store)] == ["CsvExampleGen", "Resolver", "Trainer"]


def test_format_table_components_by_rows():
    small = RunResult(
        5000,
        total_s=30.0,
        components=[ComponentTime("CsvExampleGen", 0, 2_000), ComponentTime("Trainer", 2_000, 22_000)],
        auc={"click": 0.61234, "conversion": 0.7},
        blessed=True,
        generate_s=1.5,
    )
    large = RunResult(
        1_000_000,
        total_s=400.0,
        components=[ComponentTime("CsvExampleGen", 0, 150_000), ComponentTime("Pusher", 0, 1_000, "FAILED")],
        auc={"click": None, "conversion": None},
    )
    lines = format_table([small, large]).splitlines()
    assert lines[0] == "| component | 5,000 rows | 1,000,000 rows |"
    assert lines[2] == "| CsvExampleGen | 2.0 s | 150 s |"
    assert lines[3] == "| Trainer | 20.0 s | – |"
    assert lines[4] == "| Pusher | – | 1.0 s (failed) |"
    assert lines[5].endswith("| 8.0 s | 249 s |")  # outside the components: total minus their sum
    assert "**30.0 s**" in lines[6] and "**400 s**" in lines[6]
    assert lines[7].endswith("| 1.5 s | reused |")
    assert lines[8] == "| click AUC (Evaluator, overall) | 0.6123 | – |"
    assert lines[-1] == "| blessed | yes | – |"


def test_markdown_names_the_command_sizes_and_machine():
    from benchmarks.pipeline import MAIN_JOB, main_job_config

    args = Namespace(users=20_000, train_steps=0, config=MAIN_JOB)
    cfg = main_job_config(100_000, Path("data"), Path("run"), args)  # the main job's settings, other paths
    assert (cfg.model_type, cfg.batch_size, cfg.eval_pattern) == ("mvke_mt", 512, "eval/part-*.csv")
    body = markdown("| t |", cfg, args, "python -m benchmarks.pipeline --rows 100000", "2 cores")
    assert body.startswith("## TFX pipeline wall time")
    assert "Command: `python -m benchmarks.pipeline --rows 100000`" in body
    assert "dnn [128, 64, 32]" in body and "400 train steps" in body and "Machine: 2 cores." in body
    assert main_job_config(1, Path("d"), Path("r"), Namespace(train_steps=50, config=MAIN_JOB)).train_steps == 50
    assert body.endswith("| t |\n")
