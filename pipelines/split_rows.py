"""``SplitRows``: the row count of every split, from StatisticsGen's output, for the Trainer.

The Trainer trains by epochs over the train split, so it needs the split's size. StatisticsGen has
already counted every split; this component hands those counts to the Trainer as its
``hyperparameters`` input (a JSON file), which ``run_fn`` reads as ``fn_args.hyperparameters``::

    {"split_rows": {"train": 500000, "eval": 500000}}

No data is read again.
"""

import json
from pathlib import Path

from tfx import v1 as tfx
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact

STATS_FILE = "FeatureStats.pb"
HYPERPARAMETERS_FILE = "split_rows.json"
KEY = "split_rows"


def rows_per_split(statistics_uri: str) -> dict[str, int]:
    """``{split: rows}`` of an ``ExampleStatistics`` artifact directory (``Split-<name>/FeatureStats.pb``)."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    out = {}
    for split_dir in sorted(Path(statistics_uri).glob("Split-*")):
        path = split_dir / STATS_FILE
        if path.is_file():
            stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(path.read_bytes())
            out[split_dir.name[len("Split-") :]] = int(sum(d.num_examples for d in stats.datasets))
    return out


@tfx.dsl.components.component
def SplitRows(  # noqa: N802 - TFX component naming
    statistics: InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    split_rows: OutputArtifact[tfx.types.standard_artifacts.HyperParameters],
) -> None:
    """Writes ``{"split_rows": {split: rows}}`` (from the statistics) as the Trainer's hyperparameters."""
    rows = rows_per_split(statistics.uri)
    if not rows:
        raise ValueError(f"SplitRows: no split statistics under {statistics.uri}; fix: run StatisticsGen first")
    Path(split_rows.uri).mkdir(parents=True, exist_ok=True)
    (Path(split_rows.uri) / HYPERPARAMETERS_FILE).write_text(json.dumps({KEY: rows}))
