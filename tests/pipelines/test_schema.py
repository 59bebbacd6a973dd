"""The curated schema (pipelines/schema.py, pipelines/schemas/synthetic.pbtxt) and the anomalous-row counter."""

import csv
import shutil
from pathlib import Path

import pytest

from mvke_tf.data import synthetic

SMALL = synthetic.SyntheticConfig(num_rows=2000, num_users=200, num_ads=150, taxonomy=(4, 3, 5), seed=3)
OTHER = synthetic.SyntheticConfig(num_rows=6000, num_users=1000, num_ads=400, seed=11)
EXTRA_COLUMN = "campaign"
GARBLED = "avg_ctr_7d"
# Row i (0-based, in each CSV file) of the bad copy: BAD_ROWS[field](i) -> the row gets a bad value there.
BAD_ROWS = {
    GARBLED: lambda i: i % 7 == 3,  # "n/a"
    "click": lambda i: i % 11 == 5,  # 2
    "tags": lambda i: i % 13 == 6,  # empty
    EXTRA_COLUMN: lambda i: True,  # a column not in the schema
}


def corrupt_copy(src: Path, dest: Path) -> dict[str, dict[str, int]]:
    """Copies a synthetic CSV data set with every kind of bad input (see BAD_ROWS).

    Returns:
      ``{split: {field: bad rows, "rows": rows}}``.
    """
    shutil.copytree(src, dest)
    expected: dict[str, dict[str, int]] = {}
    for part in sorted(dest.glob("*/part-*.csv")):
        with open(part) as f:
            rows = list(csv.DictReader(f))
        counts = expected.setdefault(part.parent.name, dict.fromkeys([*BAD_ROWS, "rows"], 0))
        counts["rows"] += len(rows)
        for i, row in enumerate(rows):
            row[EXTRA_COLUMN] = f"cmp{i % 3}"
            for field, bad in {GARBLED: "n/a", "click": "2", "tags": ""}.items():
                if BAD_ROWS[field](i):
                    row[field] = bad
            for field, is_bad in BAD_ROWS.items():
                counts[field] += is_bad(i)
        with open(part, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return expected


def _parses(cells: list[str], kind) -> bool:
    try:
        for c in cells:
            kind(c)
    except ValueError:
        return False
    return True


def csv_to_examples(data: Path, out: Path) -> dict[str, Path]:
    """Converts ``data/<split>/part-*.csv`` to ``out/<split>.gz`` tf.Examples the way CsvExampleGen does:
    one type per column over all files (INT, else FLOAT, else BYTES), an empty cell an empty value list."""
    import tensorflow as tf

    parts = sorted(data.glob("*/part-*.csv"))
    tables = {}
    for part in parts:
        with open(part) as f:
            tables[part] = list(csv.reader(f))
    header = tables[parts[0]][0]
    kinds = {}
    for j, name in enumerate(header):
        cells = [row[j] for table in tables.values() for row in table[1:] if row[j]]
        kinds[name] = "int" if _parses(cells, int) else "float" if _parses(cells, float) else "bytes"
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, table in tables.items():
        path = files.setdefault(part.parent.name, out / f"{part.parent.name}.gz")
        with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
            for row in table[1:]:
                example = tf.train.Example()
                for name, cell in zip(header, row):
                    feature = example.features.feature[name]
                    value = {"int": feature.int64_list, "float": feature.float_list, "bytes": feature.bytes_list}
                    value[kinds[name]].value.extend(
                        [{"int": int, "float": float, "bytes": str.encode}[kinds[name]](cell)] if cell else []
                    )
                writer.write(example.SerializeToString())
    return files


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    synthetic.generate(SMALL, out)
    return out


@pytest.fixture(scope="module")
def bad(small, tmp_path_factory) -> tuple[Path, dict]:
    dest = tmp_path_factory.mktemp("bad") / "data"
    return dest, corrupt_copy(small, dest)


def test_curate_schema_of_small_data(small):
    import tensorflow_data_validation as tfdv
    from mvke_tf.pipelines.schema import SYNTHETIC_VOCABULARIES, curate_schema
    from tensorflow_metadata.proto.v0 import schema_pb2

    features = synthetic.feature_config()
    inferred = tfdv.infer_schema(tfdv.generate_statistics_from_csv(str(small / "*" / "part-*.csv")))
    inferred_domains = {f.name for f in inferred.feature if f.HasField("domain")}
    assert {"tag_l1", "app_install_categories"} <= inferred_domains  # sample-dependent: must not be kept

    curated = curate_schema(inferred, features)
    by_name = {f.name: f for f in curated.feature}
    assert set(by_name) == {f.name for f in inferred.feature}
    for label in features.labels:
        assert by_name[label].type == schema_pb2.INT and by_name[label].HasField("bool_domain")
        assert by_name[label].presence.min_fraction == 1.0
    assert {f.name for f in curated.feature if f.WhichOneof("domain_info")} == {
        *SYNTHETIC_VOCABULARIES,
        "click",
        "conversion",
    }
    assert {d.name: tuple(d.value) for d in curated.string_domain} == SYNTHETIC_VOCABULARIES
    assert by_name["gender"].domain == "gender" and SYNTHETIC_VOCABULARIES["gender"] == ("gen0", "gen1", "gen2")
    for name in ("tags", "user_id", "tag_l1", "ad_id", "clicked_tags_30d", "app_install_categories", "province"):
        assert not by_name[name].WhichOneof("domain_info"), name
    for name in (
        features.user_id,
        features.tag_field.name,
        *(f.name for f in features.user_fields if f.kind != "numeric"),
    ):
        assert by_name[name].presence.min_fraction == 1.0 and by_name[name].presence.min_count == 1, name
        assert by_name[name].type == schema_pb2.BYTES, name
    lists = {f.name for f in (*features.user_fields, features.tag_field) if f.kind == "multi_valued"}
    assert {"tags", "clicked_tags_30d"} <= lists
    for name in {features.user_id, *(f.name for f in features.user_fields if f.kind == "categorical")}:
        assert [d.size for d in by_name[name].shape.dim] == [1], name  # exactly one value
    for name in lists:  # a '|'-joined CSV cell or a tf.Example list: one or more values, no fixed shape
        assert not by_name[name].HasField("shape") and by_name[name].value_count.min == 1, name
    for spec in features.user_fields:
        if spec.kind == "numeric":  # may be missing (empty): no shape, no required presence
            f = by_name[spec.name]
            assert f.type == schema_pb2.FLOAT and not f.HasField("shape") and not f.presence.min_fraction

    # Names only: keep the inferred values (only those seen in the sample).
    kept = curate_schema(inferred, features, closed_vocabularies=["gender", "tags"])
    assert [d.name for d in kept.string_domain] == ["gender"]
    assert not {f.name: f for f in kept.feature}["tags"].WhichOneof("domain_info")


def test_checked_in_schema_matches_the_generator(small, tmp_path):
    from mvke_tf.pipelines.schema import CHECKED_IN, infer_curated_schema, load_schema, write_schema

    checked_in = load_schema(CHECKED_IN)
    assert CHECKED_IN.read_text().startswith("# Curated schema")
    features = synthetic.feature_config()
    synthetic.generate(OTHER, tmp_path / "other")
    for data in (small, tmp_path / "other"):
        assert infer_curated_schema(data, features) == checked_in, (
            f"{CHECKED_IN} differs from the curated schema of {data}; if the generator changed on purpose, "
            "regenerate it (see its header)"
        )
    write_schema(checked_in, tmp_path / "s.pbtxt", header="# a comment\n")
    assert load_schema(tmp_path / "s.pbtxt") == checked_in


def test_schema_cli(small, tmp_path):
    from mvke_tf.pipelines.schema import CHECKED_IN, load_schema, main

    assert main(["--data-root", str(small), "--out", str(tmp_path / "out.pbtxt")]) == 0
    assert load_schema(tmp_path / "out.pbtxt") == load_schema(CHECKED_IN)
    with pytest.raises(FileNotFoundError, match="no schema"):
        load_schema(tmp_path / "missing.pbtxt")


def _anomalous_fields(stats, schema) -> set[str]:
    import tensorflow_data_validation as tfdv

    anomalies = tfdv.validate_statistics(stats, schema)
    return set(anomalies.anomaly_info) | ({"<dataset>"} if anomalies.HasField("dataset_anomaly_info") else set())


def test_checked_in_schema_validates_clean_and_bad_data(small, bad, tmp_path):
    import tensorflow_data_validation as tfdv
    from mvke_tf.pipelines.report import count_violations
    from mvke_tf.pipelines.schema import CHECKED_IN, load_schema

    schema = load_schema(CHECKED_IN)
    bad_dir, expected = bad
    # As CsvExampleGen writes them (what the pipeline validates) ...
    for split, path in csv_to_examples(small, tmp_path / "clean").items():
        assert _anomalous_fields(tfdv.generate_statistics_from_tfrecord(str(path)), schema) == set(), split
    for split, path in csv_to_examples(bad_dir, tmp_path / "bad").items():
        stats = tfdv.generate_statistics_from_tfrecord(str(path))
        assert _anomalous_fields(stats, schema) == set(BAD_ROWS), split
        counts, total = count_violations([path], schema, [*BAD_ROWS, "gender", "day", "p_click"])
        assert total == expected[split]["rows"] and total > 100
        assert counts == {**{f: expected[split][f] for f in BAD_ROWS}, "gender": 0, "day": 0, "p_click": 0}, split
        assert 0 < counts["click"] < counts[GARBLED] < total  # only some rows are bad
    # ... and as CSV.
    assert _anomalous_fields(tfdv.generate_statistics_from_csv(str(small / "*" / "part-*.csv")), schema) == set()
    stats = tfdv.generate_statistics_from_csv(str(bad_dir / "*" / "part-*.csv"))
    assert _anomalous_fields(stats, schema) == set(BAD_ROWS)


def _example(**features):
    import tensorflow as tf

    example = tf.train.Example()
    for name, values in features.items():
        feature = example.features.feature[name]
        if values and isinstance(values[0], bytes):
            feature.bytes_list.value.extend(values)
        elif values and isinstance(values[0], float):
            feature.float_list.value.extend(values)
        elif values:
            feature.int64_list.value.extend(values)
        else:
            feature.bytes_list.SetInParent()  # present, no value (an empty CSV cell)
    return example


def test_count_violations_on_hand_written_examples(tmp_path):
    import tensorflow as tf
    from google.protobuf import text_format
    from mvke_tf.pipelines.report import FieldAnomaly, RunReport, count_anomalous_rows, count_violations
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = text_format.Parse(
        """
        feature { name: "click" type: INT bool_domain {} presence { min_fraction: 1.0 min_count: 1 }
                  shape { dim { size: 1 } } }
        feature { name: "day" type: INT int_domain { min: 1 max: 9 } }
        feature { name: "ctr" type: FLOAT presence { min_count: 1 } }
        feature { name: "gender" type: BYTES domain: "gender" }
        feature { name: "tags" type: BYTES presence { min_fraction: 1.0 min_count: 1 } shape { dim { size: 1 } } }
        string_domain { name: "gender" value: "gen0" value: "gen1" }
        """,
        schema_pb2.Schema(),
    )
    ok = dict(click=[0], day=[3], ctr=[0.5], gender=[b"gen0"], tags=[b"t1|t2"])
    rows = [
        _example(**ok),
        _example(**{**ok, "click": [1], "ctr": []}),  # a missing numeric value is fine
        _example(**{**ok, "click": [2]}),
        _example(**{k: v for k, v in ok.items() if k != "click"}),  # click missing
        _example(**{**ok, "click": [b"1"], "ctr": [b"n/a"]}),  # BYTES columns: b"1" parses, b"n/a" does not
        _example(**{**ok, "ctr": [b"0.25"], "day": [10]}),
        _example(**{**ok, "gender": [b"gen9"], "tags": [], "extra": [b"x"]}),
        _example(**{**ok, "tags": [b"a", b"b"], "extra": []}),  # two values where the shape says one
    ]
    path = tmp_path / "Split-train" / "data_tfrecord-00000-of-00001.gz"
    path.parent.mkdir()
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for example in rows:
            writer.write(example.SerializeToString())

    fields = ["click", "day", "ctr", "gender", "tags", "extra"]
    counts, total = count_violations([path], schema, fields)
    assert total == 8
    assert counts == {"click": 2, "day": 1, "ctr": 1, "gender": 1, "tags": 2, "extra": 2}

    # From the artifacts' directories, as run_report does.
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "schema.pbtxt").write_text(text_format.MessageToString(schema))
    found = (
        FieldAnomaly("train", "click", "Out-of-range values"),
        FieldAnomaly("train", "<dataset>", "Low number of examples"),
        FieldAnomaly("eval", "click", "Out-of-range values"),  # no eval files: not counted
    )
    counted = count_anomalous_rows(found, tmp_path, tmp_path / "schema")
    assert [(a.rows, a.total) for a in counted] == [(2, 8), (None, None), (None, None)]
    text = "\n".join(RunReport(run_id="r", anomalies=counted, anomalies_uri="a").lines())
    assert "  field 'click' (train): 2 of 8 rows: Out-of-range values" in text
    assert "  field 'click' (eval): Out-of-range values" in text
    assert FieldAnomaly("t", "f", "d", rows=1234, total=5678).line() == "field 'f' (t): 1,234 of 5,678 rows: d"
