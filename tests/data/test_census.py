"""Census-income (KDD) loader: parsing, MMoE task labels, inputs, encoding, normalisation, split, errors.

Runs on a small synthetic fixture in the documented format (tests/data/fixtures/census), never on
the real data set, which CI machines do not have.
"""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from mvke_tf.data import census
from mvke_tf.data.census import (
    COLUMNS,
    NOT_INPUTS,
    CensusFormatError,
    load_census,
    read_census,
    split_indices,
    task_labels,
)

FIXTURE = Path(__file__).parent / "fixtures" / "census" / "census-income.sample"


def raw_rows() -> list[list[str]]:
    """The fixture split naively, keeping the values' leading spaces (as the file has them)."""
    return [line.rstrip("\n").split(",") for line in FIXTURE.read_text().splitlines()]


def test_columns_are_parsed_named_and_stripped(tmp_path):
    assert len(COLUMNS) == 42 and len(set(COLUMNS)) == 42
    assert COLUMNS[24] == "instance_weight" and COLUMNS[-1] == "income_50k"
    cols = read_census(FIXTURE)
    assert set(cols) == set(COLUMNS)
    assert all(len(v) == 32 for v in cols.values())
    for name in census.CATEGORICAL_FIELDS + ("education", "marital_stat"):
        assert all(v == v.strip() and v for v in cols[name]), name
    # "Foreign born- Not a citizen of U S " ends with a space in the file; stripped here.
    assert "Foreign born- Not a citizen of U S" in set(cols["citizenship"])
    assert cols["age"].dtype == np.float64 and cols["age"][0] == 42.0
    assert cols["instance_weight"][0] == pytest.approx(2435.28)
    # Plain and gzipped files read the same.
    gz = tmp_path / "census-income.test.gz"
    with open(FIXTURE, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    for name, values in read_census(gz).items():
        np.testing.assert_array_equal(values, cols[name])


def test_labels_of_both_task_groups():
    rows = raw_rows()
    # The file's values have a leading space: the label must not depend on it.
    assert rows[0][7] == " Never married"
    cols = read_census(FIXTURE)
    g1 = task_labels(cols, 1)
    g2 = task_labels(cols, 2)
    assert list(g1) == ["income", "marital"] and list(g2) == ["education", "marital"]
    expected_income = np.array([r[-1].strip() == "50000+." for r in rows], dtype=np.float32)
    expected_marital = np.array([r[7].strip() == "Never married" for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(g1["income"], expected_income)
    np.testing.assert_array_equal(g1["marital"], expected_marital)
    np.testing.assert_array_equal(g2["marital"], expected_marital)
    assert g1["income"].sum() == 8 and g1["marital"].sum() == 7  # neither is constant
    # Education >= college: exactly the four degree values, nothing below (associates, some college).
    college = {r[4].strip() for r, y in zip(rows, g2["education"]) if y == 1}
    assert college == set(census.COLLEGE_DEGREES)
    not_college = {r[4].strip() for r, y in zip(rows, g2["education"]) if y == 0}
    assert {"Some college but no degree", "Associates degree-academic program", "Children"} <= not_college
    assert g2["education"].sum() == 14
    with pytest.raises(ValueError, match="group"):
        task_labels(cols, 3)


@pytest.mark.parametrize("encoding", ["string", "ids"])
def test_label_columns_and_instance_weight_are_not_inputs(encoding):
    data = load_census(FIXTURE, group=1, encoding=encoding)
    inputs = {f.name for f in data.fields} | set(data.dense_fields)
    assert not inputs & set(NOT_INPUTS)
    assert inputs == set(COLUMNS) - set(NOT_INPUTS) and len(inputs) == 38
    assert set(data.dense_fields) == {
        "age",
        "wage_per_hour",
        "capital_gains",
        "capital_losses",
        "stock_dividends",
        "num_emp",
        "weeks_worked",
    }
    for split in census.SPLITS:
        assert set(data.features[split]) == inputs
        assert set(data.labels[split]) == {"income", "marital"}
    for f in data.fields:
        assert f.kind == "categorical"
        assert f.hash_buckets > len(data.vocabularies[f.name])


def test_categorical_encoding_is_the_same_in_every_split():
    strings = load_census(FIXTURE, group=1, encoding="string", seed=3)
    ids = load_census(FIXTURE, group=1, encoding="ids", seed=3)
    for name in census.CATEGORICAL_FIELDS:
        vocab = ids.vocabularies[name]
        seen: dict[str, int] = {}
        for split in census.SPLITS:
            # Every id decodes to the row's own value, and one value has one id across splits.
            decoded = [vocab[i] for i in ids.features[split][name]]
            assert decoded == list(strings.features[split][name])
            for value, i in zip(decoded, ids.features[split][name]):
                assert seen.setdefault(value, int(i)) == int(i)
    # A value seen in both train and test ("Not in universe" in union_member) keeps its id.
    vocab = ids.vocabularies["union_member"]
    train_values = set(strings.features["train"]["union_member"])
    test_values = set(strings.features["test"]["union_member"])
    shared = train_values & test_values
    assert shared
    for value in shared:
        i_train = ids.features["train"]["union_member"][list(strings.features["train"]["union_member"]).index(value)]
        i_test = ids.features["test"]["union_member"][list(strings.features["test"]["union_member"]).index(value)]
        assert i_train == i_test == vocab.index(value)


def test_numerics_are_standardised_with_train_statistics():
    data = load_census(FIXTURE, group=1)
    raw = read_census(FIXTURE)
    index = split_indices(32, census.SPLIT_SEED)
    for name in data.dense_fields:
        mean, std = np.mean(raw[name][index["train"]]), np.std(raw[name][index["train"]])
        assert data.numeric_stats[name] == pytest.approx((mean, std if std > 0 else 1.0))
        train = data.features["train"][name]
        assert train.dtype == np.float32
        assert np.mean(train) == pytest.approx(0.0, abs=1e-5)
        if std > 0:
            assert np.std(train) == pytest.approx(1.0, abs=1e-4)
        # Test rows use the train mean / std, not their own.
        expected = (raw[name][index["test"]] - mean) / data.numeric_stats[name][1]
        np.testing.assert_allclose(data.features["test"][name], expected, rtol=1e-5, atol=1e-5)


def test_split_is_deterministic_disjoint_and_70_15_15():
    a, b, c = split_indices(1000, 5), split_indices(1000, 5), split_indices(1000, 6)
    for split in census.SPLITS:
        np.testing.assert_array_equal(a[split], b[split])
    assert not np.array_equal(a["train"], c["train"])
    assert [len(a[s]) for s in census.SPLITS] == [700, 150, 150]
    assert np.array_equal(np.sort(np.concatenate([a[s] for s in census.SPLITS])), np.arange(1000))
    d1, d2 = load_census(FIXTURE, seed=11), load_census(FIXTURE, seed=11)
    for split in census.SPLITS:
        np.testing.assert_array_equal(d1.labels[split]["income"], d2.labels[split]["income"])
        np.testing.assert_array_equal(d1.features[split]["age"], d2.features[split]["age"])
    assert sum(d1.num_rows(s) for s in census.SPLITS) == 32


def test_malformed_rows_give_a_clear_error(tmp_path):
    lines = FIXTURE.read_text().splitlines()
    short = tmp_path / "short.txt"
    short.write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0]]) + "\n")  # row 2 lacks its label
    with pytest.raises(CensusFormatError) as err:
        read_census(short)
    msg = str(err.value)
    assert f"{short}:2" in msg and "found 41" in msg and "expected 42" in msg and "fix:" in msg

    header = tmp_path / "header.csv"
    header.write_text(",".join(COLUMNS[:10]) + "\n" + lines[0] + "\n")
    with pytest.raises(CensusFormatError, match=r"header\.csv:1: found 10 .* expected 42"):
        read_census(header)

    bad_label = tmp_path / "bad_label.txt"
    bad_label.write_text(lines[0].rsplit(",", 1)[0] + ", >50K.\n")
    with pytest.raises(CensusFormatError, match=r"bad_label\.txt:1: income class '>50K'.*fix:"):
        read_census(bad_label)

    bad_number = tmp_path / "bad_number.txt"
    bad_number.write_text(lines[0].replace("42, ", "forty-two, ", 1) + "\n")
    with pytest.raises(CensusFormatError, match=r"bad_number\.txt:1: column 1 \(age\).*'forty-two'"):
        read_census(bad_number)

    with pytest.raises(FileNotFoundError, match="missing.gz"):
        read_census(tmp_path / "missing.gz")


def test_to_dataset_and_a_tiny_mmoe_trains():
    import tensorflow as tf

    from mvke_tf.models.ranking import RankingConfig, build_ranking_model
    from mvke_tf.train import compile_model

    data = load_census(FIXTURE, group=2)
    features, labels = next(iter(data.to_dataset("train", batch_size=8, shuffle=True, seed=1)))
    assert features["class_worker"].dtype == tf.string and features["class_worker"].shape == (8,)
    assert features["age"].dtype == tf.float32 and set(labels) == {"education", "marital"}
    assert sum(int(y.shape[0]) for _, y in data.to_dataset("val", 2).map(lambda x, y: (x, y["marital"]))) == 5

    config = RankingConfig(
        model_type="ranking_mmoe",
        tasks=data.tasks,
        embedding_dim=2,
        expert_units=(4,),
        num_experts=2,
        tower_units=(2,),
    )
    model = build_ranking_model(data.fields, config, data.dense_fields)
    compile_model(model, learning_rate=1e-2)
    # A hand-written loop with the compiled optimiser: Keras' fit would spend ~15 s autograph-converting
    # the AUC metrics, which is not what this test is about.
    bce = tf.keras.losses.BinaryCrossentropy()
    x, y = next(iter(data.to_dataset("train", batch_size=64)))
    losses = []
    for _ in range(5):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = tf.add_n([bce(y[t], pred[t]) for t in data.tasks])
        model.optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    # Called directly (eagerly): tracing predict() autograph-converts every layer, tens of seconds here.
    x_test, _ = next(iter(data.to_dataset("test", batch_size=64)))
    pred = model(x_test)
    assert set(pred) >= {"education", "marital"} and pred["marital"].shape == (data.num_rows("test"),)
