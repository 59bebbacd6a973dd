"""MovieLens loader and views, on tiny made-up fixtures in the ml-100k and ml-1m formats."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from mvke_tf.data import movielens as ml

FIXTURES = Path(__file__).parent / "fixtures" / "movielens"
DIRS = {ml.ML_100K: FIXTURES / "ml-100k", ml.ML_1M: FIXTURES / "ml-1m"}


@pytest.fixture(scope="module", params=ml.FORMATS)
def loaded(request):
    return request.param, ml.load_movielens(DIRS[request.param])


def _copy(fmt, tmp_path):
    dst = tmp_path / fmt
    shutil.copytree(DIRS[fmt], dst)
    return dst


# ------------------------------------------------------------------------ loading
def test_detects_both_formats():
    assert ml.detect_format(DIRS[ml.ML_100K]) == ml.ML_100K
    assert ml.detect_format(DIRS[ml.ML_1M]) == ml.ML_1M


def test_joined_table(loaded):
    fmt, table = loaded
    assert table.attrs["format"] == fmt
    assert tuple(table.columns) == ml.COLUMNS
    # Every rating line becomes one row, and every row found its user and its movie.
    ratings_file = DIRS[fmt] / ml.FORMAT_FILES[fmt][0]
    assert len(table) == sum(1 for line in ratings_file.read_text(encoding="latin-1").splitlines() if line)
    assert len(table) == 40
    assert table["user_id"].nunique() == 10 and table["movie_id"].nunique() == 8
    assert not table.isna().any().any()
    assert set(table["rating"]) <= {1, 2, 3, 4, 5}
    assert set(table["gender"]) == {"M", "F"}


def test_joined_values_match_the_files():
    t100 = ml.load_movielens(DIRS[ml.ML_100K])
    row = t100[(t100.user_id == "7") & (t100.movie_id == "4")].iloc[0]
    assert (row.age, row.gender, row.occupation, row.zip_code) == (18, "M", "student", "T8H1N")
    assert row.title == "Café Noir (1995)"  # a latin-1 byte decoded
    assert (row.rating, row.timestamp) == (3, 875796159)
    t1m = ml.load_movielens(DIRS[ml.ML_1M])
    row = t1m[(t1m.user_id == "6")].iloc[0]
    assert (row.age, row.gender, row.occupation, row.zip_code) == (50, "F", "9", "55117-1234")
    assert t1m.loc[t1m.movie_id == "8", "title"].iloc[0] == "Amélie Street (2000)"


def test_genres_parse():
    t100 = ml.load_movielens(DIRS[ml.ML_100K]).drop_duplicates("movie_id").set_index("movie_id")["genres"]
    assert t100["2"] == "Action|Adventure|Sci-Fi"
    assert t100["4"] == "Crime|Film-Noir|Thriller"
    assert t100["8"] == "unknown"  # ml-100k's first flag is a genre of its own
    t1m = ml.load_movielens(DIRS[ml.ML_1M]).drop_duplicates("movie_id").set_index("movie_id")["genres"]
    assert t1m["3"] == "Animation|Children's|Comedy"
    assert t1m["8"] == "Comedy|Romance"
    for fmt, genres in ((ml.ML_100K, t100), (ml.ML_1M, t1m)):
        assert {g for s in genres for g in s.split("|")} <= set(ml.genre_names(fmt))


def test_explicit_format_and_both_present(tmp_path):
    both = _copy(ml.ML_100K, tmp_path)
    for f in ml.FORMAT_FILES[ml.ML_1M]:
        shutil.copy(DIRS[ml.ML_1M] / f, both / f)
    with pytest.raises(ml.MovieLensFormatError, match="both ml-100k and ml-1m"):
        ml.load_movielens(both)
    assert ml.load_movielens(both, format=ml.ML_1M).attrs["format"] == ml.ML_1M
    with pytest.raises(ValueError, match="not one of"):
        ml.load_movielens(both, format="ml-20m")


# ------------------------------------------------------------------------- errors
def test_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        ml.load_movielens(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "grouplens.org/datasets/movielens" in msg and "fix:" in msg
    for files in ml.FORMAT_FILES.values():
        assert all(f in msg for f in files)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ml.load_movielens(tmp_path / "nowhere")
    partial = _copy(ml.ML_1M, tmp_path)
    (partial / "movies.dat").unlink()
    with pytest.raises(FileNotFoundError, match="ml-1m lacks movies.dat"):
        ml.load_movielens(partial)
    with pytest.raises(FileNotFoundError, match="lacks movies.dat"):
        ml.load_movielens(partial, format=ml.ML_1M)


@pytest.mark.parametrize(
    "fmt, file, line, expect",
    [
        (ml.ML_100K, "u.data", "1\t2\t3\n", "found 3 fields, expected 4"),
        (ml.ML_100K, "u.data", "1\t2\tfive\t875049537\n", "rating 'five' is not an integer"),
        (ml.ML_100K, "u.data", "1\t2\t6\t875049537\n", "rating 6 is outside 1-5"),
        (ml.ML_100K, "u.user", "11|x|M|writer|12345\n", "age 'x' is not an integer"),
        (ml.ML_100K, "u.user", "1|30|M|writer|12345\n", "user id 1 was already defined on line 1"),
        (ml.ML_100K, "u.item", "9|Short Line (1999)|01-Jan-1999||http://example.org/9|0|1\n", "found 7 fields"),
        (ml.ML_1M, "ratings.dat", "1::2::3\n", "found 3 fields, expected 4"),
        (ml.ML_1M, "users.dat", "11::M::30::1::12345\n", "age code 30 is not one of"),
        (ml.ML_1M, "movies.dat", "9::No Genres Here (1999)\n", "expected MovieID::Title::Genres"),
        (ml.ML_1M, "movies.dat", "9::Odd One (1999)::Comedy|Cartoon\n", "unknown genre"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, fmt, file, line, expect):
    folder = _copy(fmt, tmp_path)
    path = folder / file
    lineno = len(path.read_text(encoding="latin-1").splitlines()) + 1
    with open(path, "a", encoding="latin-1") as fh:
        fh.write(line)
    with pytest.raises(ml.MovieLensFormatError) as e:
        ml.load_movielens(folder)
    assert f"{path}:{lineno}:" in str(e.value) and expect in str(e.value) and "fix:" in str(e.value)


def test_rating_of_undefined_user_names_the_line(tmp_path):
    folder = _copy(ml.ML_1M, tmp_path)
    with open(folder / "ratings.dat", "a", encoding="latin-1") as fh:
        fh.write("99::1::4::978300760\n")
    with pytest.raises(ml.MovieLensFormatError, match=r"ratings.dat:41: user_id 99 is not defined in .*users.dat"):
        ml.load_movielens(folder)


def test_blank_lines_and_crlf_are_tolerated(tmp_path):
    folder = _copy(ml.ML_1M, tmp_path)
    path = folder / "ratings.dat"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n") + b"\r\n")
    table = ml.load_movielens(folder)
    assert len(table) == 40 and table["timestamp"].dtype == np.int64


# ------------------------------------------------------------- multi-domain view
def test_age_domains_every_code_and_boundary():
    codes = [1, 18, 25, 35, 45, 50, 56]
    assert ml.age_domain(codes, ml.ML_1M).tolist() == [0, 0, 1, 2, 2, 2, 2]
    assert set(ml.AGE_CODES_1M) == set(codes)
    ages = [1, 7, 24, 25, 26, 34, 35, 36, 73]
    assert ml.age_domain(ages, ml.ML_100K).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="age code"):
        ml.age_domain([30], ml.ML_1M)


def test_multidomain_table(loaded):
    fmt, table = loaded
    md = ml.multidomain_table(table)
    assert len(md) == len(table)
    assert md["domain"].tolist() == ml.age_domain(table["age"], fmt).tolist()
    assert set(md["domain"]) == {0, 1, 2}  # the fixtures cover every domain
    assert md["click"].tolist() == (table["rating"] >= 4).astype(int).tolist()
    assert md["like"].tolist() == (table["rating"] == 5).astype(int).tolist()
    # Labels of each kind are present: rating 3 (neither), 4 (click only), 5 (both).
    assert {3, 4, 5} <= set(table["rating"])
    assert (md["like"] <= md["click"]).all()
    for name in ("user_id", "movie_id", "gender", "age", "occupation", "zip_prefix", "genres"):
        assert all(isinstance(v, str) for v in md[name])
    assert md["zip_prefix"].str.len().max() == 3
    view = ml.multidomain_view(md)
    assert view.domain_field == "domain" and view.labels == ("click", "like") and view.num_domains == 3
    features, labels = ml.multidomain_arrays(md, view)
    assert set(features) == {f.name for f in view.fields} | {"domain"}
    assert features["genres"].shape == (40, ml.MAX_GENRES) and features["genres"].dtype.kind == "U"
    first = table["genres"].iloc[0].split("|")
    assert features["genres"][0].tolist() == first + [""] * (ml.MAX_GENRES - len(first))
    assert features["domain"].dtype == np.int32 and features["user_id"].shape == (40,)
    assert labels["click"].dtype == np.float32
    stripped = table.copy()
    stripped.attrs.clear()  # as some pandas operations do
    with pytest.raises(ValueError, match="format"):
        ml.multidomain_table(stripped)
    assert ml.multidomain_table(stripped, format=fmt)["domain"].tolist() == md["domain"].tolist()


def test_multidomain_model_trains():
    import tensorflow as tf

    from mvke_tf.models.multidomain import MultiDomainConfig, MultiDomainModel

    md = ml.multidomain_table(ml.load_movielens(DIRS[ml.ML_1M]))
    view = ml.multidomain_view(md)
    features, labels = ml.multidomain_arrays(md, view)
    tf.keras.utils.set_random_seed(0)
    config = MultiDomainConfig(
        model_type="multi_domain_star", domains=view.num_domains, tasks=view.labels, bottom_units=(8,), skip_units=(8,)
    )
    model = MultiDomainModel(config, view.fields)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
    batch = next(iter(ml.to_dataset(features, labels, batch_size=16)))
    assert batch[0]["domain"].dtype == tf.int32 and batch[0]["genres"].shape == (16, ml.MAX_GENRES)
    # Eager steps: tracing a graph would cost more than the two steps themselves.
    losses = [float(model.train_step(batch)["loss"]) for _ in range(2)]
    assert all(math.isfinite(v) for v in losses)


# -------------------------------------------------------------- user-tagging view
def test_negative_sampling(loaded):
    _, table = loaded
    rated = table.groupby("user_id")["movie_id"].agg(set)
    rows = ml.user_tag_table(table, negatives_per_positive=1.0, seed=3)
    neg = rows[rows["click"] == 0]
    pos = rows[rows["click"] == 1]
    assert len(pos) == len(table)
    assert all(m not in rated[u] for u, m in zip(neg["user_id"], neg["movie_id"]))
    assert not neg.duplicated(["user_id", "movie_id"]).any()
    # Each fixture user rated 4 of the 8 movies: exactly 4 unrated ones to draw from.
    assert (neg.groupby("user_id").size() == 4).all()
    again = ml.user_tag_table(table.sample(frac=1.0, random_state=1), negatives_per_positive=1.0, seed=3)
    assert neg["movie_id"].tolist() == again[again["click"] == 0]["movie_id"].tolist()
    half = [ml.user_tag_table(table, negatives_per_positive=0.5, seed=s) for s in range(4)]
    assert all((h["click"] == 0).sum() == 20 for h in half)
    negs = [tuple(h[h["click"] == 0]["movie_id"]) for h in half]
    assert len(set(negs)) > 1  # the seed matters
    assert negs[0] == tuple(ml.user_tag_table(table, negatives_per_positive=0.5, seed=0).query("click == 0").movie_id)
    # More negatives asked for than unrated movies exist: all of them, no repeats.
    many = ml.user_tag_table(table, negatives_per_positive=3.0, seed=0)
    assert (many[many["click"] == 0].groupby("user_id").size() == 4).all()
    with pytest.raises(ValueError, match="negatives_per_positive"):
        ml.user_tag_table(table, negatives_per_positive=-1)


def test_user_tag_labels_and_threshold(loaded):
    _, table = loaded
    rows = ml.user_tag_table(table, negatives_per_positive=1.0, min_rating=4, seed=0)
    pos = rows[rows["click"] == 1]
    assert len(pos) == (table["rating"] >= 4).sum() and (pos["rating"] >= 4).all()
    assert rows["like"].tolist() == (rows["rating"] == 5).astype(int).tolist()
    assert (rows.loc[rows["click"] == 0, "like"] == 0).all()
    # A movie rated below the threshold is neither a positive nor a negative.
    low = set(zip(table.loc[table["rating"] < 4, "user_id"], table.loc[table["rating"] < 4, "movie_id"]))
    assert not low & set(zip(rows["user_id"], rows["movie_id"]))
    genres = table.drop_duplicates("movie_id").set_index("movie_id")["genres"]
    assert rows["tags"].tolist() == genres.loc[rows["movie_id"]].tolist()


def test_user_tag_model_trains():
    import tensorflow as tf

    from mvke_tf.models import UserTagConfig, build_model

    table = ml.load_movielens(DIRS[ml.ML_100K])
    rows = ml.user_tag_table(table, negatives_per_positive=1.0, seed=0)
    fc = ml.user_tag_feature_config(rows)
    assert fc.tag_field.name == "tags" and fc.tag_field.kind == "multi_valued" and fc.labels == ("click", "like")
    features, labels = ml.user_tag_arrays(rows, fc)
    assert features["tags"].shape == (len(rows), ml.MAX_GENRES)
    tf.keras.utils.set_random_seed(0)
    mc = UserTagConfig(
        model_type="mvke_mt",
        tasks=fc.labels,
        embedding_dim=8,
        dnn_units=(16,),
        top_units=(16, 8),
        tag_units=(16, 8),
        num_experts=3,
        expert_assignment=((0, 1), (1, 2)),
    )
    model = build_model(fc, mc)
    # Eagerly: on a test's few steps, tracing the train function costs more than it saves.
    model.compile(optimizer="adam", loss={t: "binary_crossentropy" for t in fc.labels}, run_eagerly=True)
    ds = ml.to_dataset(features, labels, batch_size=16, seed=0, num_epochs=None)
    history = model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0)
    assert math.isfinite(history.history["loss"][-1])
    probs = model(next(iter(ds))[0])
    assert probs["click"].shape == (16,) and probs["like"].shape == (16,)


def test_user_tag_single_task_config():
    fc = ml.user_tag_feature_config(labels=("click",))
    assert fc.labels == ("click",) and fc.user_id == "user_id"
    with pytest.raises(ValueError, match="conversion"):
        ml.user_tag_feature_config(labels=("click", "conversion"))
