"""A team's own table: describe it, check it by the typing rule, convert it, read it in any format alike."""

import json

import numpy as np
import pytest
import tensorflow as tf
from own_data_helpers import made_up_table, write_csv, write_own_data, write_parquet

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, ConfigError, FeatureConfig
from mvke_tf.data import describe as D
from mvke_tf.data.dataset import make_dataset
from mvke_tf.data.own_data import check_files, convert, describe_data
from mvke_tf.data.table import check_rows, read_chunks, read_sample

ROLES = dict(user_id="member")


@pytest.fixture(scope="module")
def own_csv(tmp_path_factory):
    root = write_own_data(tmp_path_factory.mktemp("own") / "data", 3000, 1000, "csv")
    describe_data(str(root), root, **ROLES)
    return root


def test_describe_reads_kinds_roles_and_sizes_from_the_values(own_csv):
    features = FeatureConfig.from_yaml(own_csv / "features.yaml")
    kinds = {f.name: f.kind for f in (*features.user_fields, features.tag_field)}
    # Integer codes with few values (age, occupation) and a code by its name (zip, 3,000+ values) are ids.
    assert kinds == {"sex": CATEGORICAL, "age": CATEGORICAL, "occupation": CATEGORICAL, "zip": CATEGORICAL,
                     "genres": MULTI_VALUED}  # fmt: skip
    assert features.labels == ("watched", "liked")  # guessed: 0/1 in every row, in column order
    assert features.user_id == "member" and features.tag_field.name == "genres"
    # Hash buckets: 4x the distinct values, a power of two, at least 8.
    assert features.field("sex").hash_buckets == 8
    assert features.field("age").hash_buckets == 32  # 5 ages
    assert features.field("occupation").hash_buckets == 128  # 21 codes
    assert features.field("genres").max_values == 2
    profile = json.loads((own_csv / "profile.json").read_text())["columns"]
    assert profile["zip"]["type"] == "int" and profile["genres"]["is_list"]


def test_numeric_boundaries_are_the_sample_deciles():
    values = list(range(1, 1001)) + [None] * 10
    p = D.profile_column("spend", [float(v) if v else None for v in values])
    assert p.type == "float" and p.missing == 10
    spec = D.field_spec(p, D.field_kind(p))
    assert spec.kind == NUMERIC and spec.boundaries == tuple(float(100 * q + 1) for q in range(1, 10))


def test_the_schema_agrees_with_features_yaml(own_csv):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = text_format.Parse((own_csv / "schema.pbtxt").read_text(), schema_pb2.Schema())
    by_name = {f.name: f for f in schema.feature}
    assert set(by_name) == set(made_up_table(1))  # every column of the data
    for label in ("watched", "liked"):
        assert by_name[label].type == schema_pb2.INT and by_name[label].HasField("bool_domain")
        assert by_name[label].presence.min_fraction == 1.0
    assert by_name["age"].type == schema_pb2.INT  # an id stored as an integer stays INT in the schema
    assert by_name["genres"].type == schema_pb2.BYTES and by_name["genres"].value_count.min == 1
    assert not schema.string_domain  # no closed vocabulary guessed from a sample


def test_describe_rerun_keeps_the_users_file_and_flags_what_changed(tmp_path):
    root = write_own_data(tmp_path / "d", 2000, 500, "csv")
    describe_data(str(root), root, **ROLES)
    edited = (root / "features.yaml").read_text().replace("hash_buckets: 8", "hash_buckets: 16")
    (root / "features.yaml").write_text(edited)
    # The next day: a new column, liked twice as often, occupation as text.
    day2 = made_up_table(2500, seed=7)
    day2["liked"] = [1 if i % 2 else v for i, v in enumerate(day2["liked"])]
    day2["occupation"] = [f"job{v}" for v in day2["occupation"]]
    day2["device"] = ["ios"] * 2500
    write_csv(root / "train" / "part-00000.csv", day2)
    lines = describe_data(str(root / "train"), root, **ROLES)
    text = "\n".join(lines)
    assert (root / "features.yaml").read_text() == edited  # the user's edits survive
    assert "column device: new" in text
    assert "column occupation: type int -> string" in text
    assert "column liked: share of ones" in text
    assert "the data now suggests a new field device (categorical)" in text
    # The same data again: nothing changed.
    again = describe_data(str(root / "train"), root, **ROLES)
    assert "no change since the last describe" in again


def test_describe_errors_name_the_column_and_the_fix(own_csv):
    with pytest.raises(ConfigError, match=r"\['clicks'\] are not in the data .*fix: check the names"):
        describe_data(str(own_csv), own_csv / "x", labels=["clicks"])
    with pytest.raises(ConfigError, match="label column age: not 0/1 in every row"):
        describe_data(str(own_csv), own_csv / "x", labels=["age"])
    with pytest.raises(ConfigError, match="both categorical and numeric"):
        describe_data(str(own_csv), own_csv / "x", categorical=["zip"], numeric=["zip"])


def test_the_typing_rule_names_file_line_column_and_fix(tmp_path):
    table = made_up_table(20)
    table["age"][3] = "twenty"  # fine for a categorical: any string is an id
    table["zip"][5] = 1.5
    table["liked"][7] = 2
    path = write_csv(tmp_path / "t.csv", table)
    features = D.describe(D.profile_rows([read_sample(str(made_up_csv(tmp_path)))]), user_id="member").features
    problems = check_rows(read_sample(str(path)), features)
    assert problems == [
        f"{path} line 7, column zip (categorical): 1.5 is a fraction, not an id; fix: give ids as integers or "
        "strings, or make it numeric",
        f"{path} line 9, column liked (label): 2 is not 0 or 1; fix: give every row a 0/1 label",
    ]
    numeric = FeatureConfig.from_dict({**features.to_dict(), "user_fields": [
        {"name": "age", "kind": "numeric", "boundaries": [20, 40]}]})  # fmt: skip
    assert check_rows(read_sample(str(path)), numeric)[0].startswith(
        f"{path} line 5, column age (numeric): 'twenty' is not a number; fix:"
    )
    del table["genres"]
    write_csv(tmp_path / "eval" / "part-0.csv", table)
    assert "no column(s) ['genres']" in check_files(features, [str(tmp_path / "eval" / "*.csv")])[0]


def made_up_csv(tmp_path):
    return write_csv(tmp_path / "clean.csv", made_up_table(200))


def _batches(files, features):
    ds = make_dataset(files, features, batch_size=64, extra_columns=["member"])
    out = []
    for x, y in ds:
        out.append(({k: v.numpy() for k, v in x.items()}, {k: v.numpy() for k, v in y.items()}))
    return out


def _int_typed_tfrecord(path, table):
    """tf.Examples as a team may write them: ids as int64, the tag set as a list of strings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options="GZIP") as w:
        for i in range(len(table["member"])):
            f = {}
            for c in ("member", "age", "occupation", "zip", "watched", "liked"):
                if table[c][i] is not None:  # a missing value: no feature
                    f[c] = tf.train.Feature(int64_list=tf.train.Int64List(value=[table[c][i]]))
            f["sex"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[table["sex"][i].encode()]))
            tags = [t.encode() for t in table["genres"][i].split("|")]
            f["genres"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=tags))
            w.write(tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString())
    return path


def test_csv_parquet_tfrecord_and_converted_files_read_alike(tmp_path, own_csv):
    features = FeatureConfig.from_yaml(own_csv / "features.yaml")
    table = made_up_table(300, seed=3)
    table["occupation"][4] = table["zip"][7] = None  # missing values: empty cells, nulls, absent features
    csv = write_csv(tmp_path / "csv" / "part-00000.csv", table)
    parquet = write_parquet(tmp_path / "pq" / "part-00000.parquet", table)
    typed = _int_typed_tfrecord(tmp_path / "tfr" / "part-00000.tfrecord.gz", table)
    (tmp_path / "csv" / "features.yaml").write_text((own_csv / "features.yaml").read_text())
    converted = convert(tmp_path / "csv", tmp_path / "conv", features, patterns=["*.csv"])
    assert [p.split("/conv/")[1] for p in converted] == ["part-00000.tfrecord.gz"]
    reference = _batches(str(csv), features)
    for other in (str(parquet), str(typed), converted[0]):
        got = _batches(other, features)
        assert len(got) == len(reference)
        for (x, y), (rx, ry) in zip(got, reference):
            for k in rx:
                np.testing.assert_array_equal(x[k], rx[k], err_msg=f"{other}: {k}")
            for k in ry:
                np.testing.assert_array_equal(y[k], ry[k], err_msg=f"{other}: {k}")
    assert reference[0][0]["age"][0] == str(table["age"][0]).encode()  # an integer id reads as its string
    # The converted files hold every id as a string, labels as integers.
    first = next(read_chunks(converted[0], 5))
    assert first.values["age"][0] == str(table["age"][0]) and first.values["watched"][0] == table["watched"][0]
    schema = (tmp_path / "conv" / "schema.pbtxt").read_text()
    assert 'name: "age"\n  type: BYTES' in schema


def test_convert_refuses_a_value_its_kind_cannot_read_and_writes_nothing(tmp_path, own_csv):
    features = FeatureConfig.from_yaml(own_csv / "features.yaml")
    table = made_up_table(50)
    table["watched"][10] = 3
    write_csv(tmp_path / "in" / "train" / "part-00000.csv", table)
    with pytest.raises(ConfigError, match=r"part-00000.csv line 12, column watched \(label\): 3 is not 0 or 1"):
        convert(tmp_path / "in", tmp_path / "out", features)
    assert not list((tmp_path / "out").rglob("*.gz")) and not list((tmp_path / "out").rglob(".*tmp*"))


def test_transform_reads_integer_columns_by_their_kind():
    """Transform's inputs as ExampleGen types an integer CSV column (INT, sparse where cells are empty)."""
    from mvke_tf.data import transform as T

    ages = tf.SparseTensor([[0, 0], [2, 0]], tf.constant([25, 40], tf.int64), [3, 1])
    dense = T.to_dense_column(T.float_column(ages), float("nan")).numpy()
    np.testing.assert_array_equal(np.isnan(dense), [False, True, False])
    assert dense[0] == 25.0 and dense[2] == 40.0
    codes = T.to_dense_column(T.id_strings(tf.constant([[7], [12]], tf.int64)), "")
    assert codes.numpy().tolist() == [b"7", b"12"]


def test_transform_can_bucketize_at_the_feature_configs_boundaries_as_the_library_does():
    """num_buckets=0: Transform's numeric ids are the library's (same boundaries, 0 = missing)."""
    import math

    from mvke_tf.config import FieldSpec
    from mvke_tf.data import transform as T
    from mvke_tf.layers.embedding import field_ids

    spec = FieldSpec("spend", NUMERIC, boundaries=(0.0, 10.0, 100.0))
    values = tf.constant([-5.0, 0.0, 9.9, 10.0, 250.0, math.nan])
    filled = tf.where(tf.math.is_nan(values), tf.zeros_like(values), values)
    ids = T.numeric_bucket_ids(values, T.config_buckets(filled, spec))
    library, _ = field_ids(spec, values)
    assert ids.numpy().tolist() == library.numpy().tolist() == [1, 2, 2, 3, 4, 0]
    (converted,) = T.transformed_feature_config(
        FeatureConfig(user_fields=(spec,), tag_field=FieldSpec("t", CATEGORICAL), labels=("y",)), 0
    ).user_fields
    assert converted.hash_buckets == spec.vocab_size == 5
