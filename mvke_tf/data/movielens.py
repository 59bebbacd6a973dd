"""MovieLens ml-100k / ml-1m: a loader and two training views.

The GroupLens data sets are not shipped with this repository (their terms forbid
redistribution); download and unzip them yourself (see ``docs/movielens.md``) and pass
the unzipped folder to :func:`load_movielens`. Two formats are read, detected from the
files present:

* ``ml-100k``: ``u.data`` (tab-separated ``user id, item id, rating, timestamp``),
  ``u.user`` (``user id|age|gender|occupation|zip code``, raw ages) and ``u.item``
  (``movie id|title|release date|video release date|IMDb URL|`` + 19 genre flags);
* ``ml-1m``: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``users.dat``
  (``UserID::Gender::Age::Occupation::Zip-code``, age *codes* 1, 18, 25, 35, 45, 50, 56,
  occupation codes 0-20) and ``movies.dat`` (``MovieID::Title::Genres``, genres
  ``|``-separated).

All files are latin-1. The loader returns one joined ratings table; two views turn it
into model inputs:

* the multi-domain multi-task view (as the M3oE code uses ml-1m): three domains from the
  user's age group, tasks ``click`` (rating >= 4) and ``like`` (rating == 5), for
  :class:`~mvke_tf.models.multidomain.MultiDomainModel`;
* the user-tagging view: user fields for the user tower, the movie's genres as the tag
  set, rated movies as positives and sampled unrated movies as negatives, for the
  two-tower models of :mod:`mvke_tf.models.user_tag`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, FeatureConfig, FieldSpec

ML_100K = "ml-100k"
ML_1M = "ml-1m"
FORMATS = (ML_100K, ML_1M)
# The files each format needs, in (ratings, users, movies) order.
FORMAT_FILES: dict[str, tuple[str, str, str]] = {
    ML_100K: ("u.data", "u.user", "u.item"),
    ML_1M: ("ratings.dat", "users.dat", "movies.dat"),
}
ENCODING = "latin-1"
DOWNLOAD_URL = "https://grouplens.org/datasets/movielens/"

# ml-100k's u.item genre flags, in file order (the README's order).
GENRES_100K: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# ml-1m's genres: the same list without "unknown".
GENRES_1M: tuple[str, ...] = GENRES_100K[1:]
# ml-1m's age codes and the range each one stands for.
AGE_CODES_1M: dict[int, str] = {
    1: "Under 18",
    18: "18-24",
    25: "25-34",
    35: "35-44",
    45: "45-49",
    50: "50-55",
    56: "56+",
}
# The M3oE domain split of ml-1m: young / 25-34 / 35 and over.
DOMAIN_OF_AGE_CODE_1M: dict[int, int] = {1: 0, 18: 0, 25: 1, 35: 2, 45: 2, 50: 2, 56: 2}
# The same split on ml-100k's raw ages: age < 25 -> 0, 25 <= age < 35 -> 1, else 2.
AGE_DOMAIN_BOUNDARIES: tuple[int, int] = (25, 35)
NUM_DOMAINS = 3

DOMAIN_FIELD = "domain"
TAG_FIELD = "tags"
TASKS: tuple[str, str] = ("click", "like")
CLICK_MIN_RATING = 4
LIKE_RATING = 5
# Genres per movie: the most any movie has in ml-100k or ml-1m is 6.
MAX_GENRES = 6
ZIP_PREFIX_LEN = 3

# Columns of the joined table, in order.
COLUMNS: tuple[str, ...] = (
    "user_id",
    "movie_id",
    "rating",
    "timestamp",
    "gender",
    "age",
    "occupation",
    "zip_code",
    "title",
    "genres",
)
USER_COLUMNS = ("gender", "age", "occupation", "zip_code")
MOVIE_COLUMNS = ("title", "genres")


class MovieLensFormatError(ValueError):
    """A MovieLens file or folder is not in the documented format; the message says where and the fix."""


# --------------------------------------------------------------------------- loading
def detect_format(path: str | Path) -> str:
    """``"ml-100k"`` or ``"ml-1m"``: the format whose three files are all in ``path``.

    Raises:
      FileNotFoundError: ``path`` is not a folder, or holds neither complete file set;
        the message lists the files each format needs and how to get them.
      MovieLensFormatError: both complete file sets are present (ambiguous).
    """
    folder = Path(path)
    expected = "; ".join(f"{fmt}: {', '.join(files)}" for fmt, files in FORMAT_FILES.items())
    fix = (
        f"download ml-100k or ml-1m from {DOWNLOAD_URL}, unzip it and pass the folder "
        "that holds the files (e.g. .../ml-1m)"
    )
    if not folder.is_dir():
        raise FileNotFoundError(f"MovieLens folder {folder} does not exist; expected files ({expected}); fix: {fix}")
    complete = [fmt for fmt, files in FORMAT_FILES.items() if all((folder / f).is_file() for f in files)]
    if len(complete) == 1:
        return complete[0]
    if len(complete) > 1:
        raise MovieLensFormatError(
            f"MovieLens folder {folder} holds the files of both ml-100k and ml-1m; "
            "fix: keep each data set in its own folder, or pass format='ml-100k' / format='ml-1m'"
        )
    missing = "; ".join(
        f"{fmt} lacks {', '.join(f for f in files if not (folder / f).is_file())}"
        for fmt, files in FORMAT_FILES.items()
    )
    raise FileNotFoundError(
        f"MovieLens folder {folder} holds neither format's files ({missing}); expected ({expected}); fix: {fix}"
    )


def _raw_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of every non-blank line, without its line break."""
    with open(path, encoding=ENCODING, newline=None) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if line.strip():  # a trailing blank line carries no record
                yield lineno, line


def _lines(path: Path, separator: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of every non-blank line, split on ``separator``."""
    for lineno, line in _raw_lines(path):
        yield lineno, line.split(separator)


def _int(path: Path, lineno: int, value: str, what: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise MovieLensFormatError(
            f"{path}:{lineno}: {what} {value!r} is not an integer; fix: pass the unmodified GroupLens file"
        ) from None


def _check_count(path: Path, lineno: int, fields: list[str], expected: int, layout: str) -> None:
    if len(fields) != expected:
        raise MovieLensFormatError(
            f"{path}:{lineno}: found {len(fields)} fields, expected {expected} ({layout}); "
            "fix: pass the unmodified GroupLens file"
        )


def _read_ratings(path: Path, separator: str) -> pd.DataFrame:
    layout = f"user id{separator}movie id{separator}rating{separator}timestamp"
    rows = []
    for lineno, f in _lines(path, separator):
        _check_count(path, lineno, f, 4, layout)
        user, movie = _int(path, lineno, f[0], "user id"), _int(path, lineno, f[1], "movie id")
        rating, ts = _int(path, lineno, f[2], "rating"), _int(path, lineno, f[3], "timestamp")
        if not 1 <= rating <= 5:
            raise MovieLensFormatError(
                f"{path}:{lineno}: rating {rating} is outside 1-5; fix: pass the unmodified GroupLens file"
            )
        rows.append((str(user), str(movie), rating, ts, lineno))
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp", "_line"])


def _check_unique(path: Path, lineno: int, key: str, seen: dict[str, int], what: str) -> None:
    if key in seen:
        raise MovieLensFormatError(
            f"{path}:{lineno}: {what} {key} was already defined on line {seen[key]}; "
            "fix: pass the unmodified GroupLens file"
        )
    seen[key] = lineno


def _read_users(path: Path, fmt: str) -> pd.DataFrame:
    rows, seen = [], {}
    if fmt == ML_100K:
        for lineno, f in _lines(path, "|"):
            _check_count(path, lineno, f, 5, "user id|age|gender|occupation|zip code")
            uid = str(_int(path, lineno, f[0], "user id"))
            _check_unique(path, lineno, uid, seen, "user id")
            rows.append((uid, f[2].strip(), _int(path, lineno, f[1], "age"), f[3].strip(), f[4].strip()))
    else:
        for lineno, f in _lines(path, "::"):
            _check_count(path, lineno, f, 5, "UserID::Gender::Age::Occupation::Zip-code")
            uid = str(_int(path, lineno, f[0], "user id"))
            _check_unique(path, lineno, uid, seen, "user id")
            age = _int(path, lineno, f[2], "age code")
            if age not in AGE_CODES_1M:
                raise MovieLensFormatError(
                    f"{path}:{lineno}: age code {age} is not one of {sorted(AGE_CODES_1M)}; "
                    "fix: pass the unmodified ml-1m users.dat"
                )
            # Occupations stay codes ("0"-"20"): they are string ids to the models either way.
            occupation = str(_int(path, lineno, f[3], "occupation code"))
            rows.append((uid, f[1].strip(), age, occupation, f[4].strip()))
    return pd.DataFrame(rows, columns=["user_id", *USER_COLUMNS])


def _read_movies(path: Path, fmt: str) -> pd.DataFrame:
    rows, seen = [], {}
    if fmt == ML_100K:
        n = 5 + len(GENRES_100K)
        for lineno, f in _lines(path, "|"):
            _check_count(path, lineno, f, n, "movie id|title|release date|video release date|IMDb URL|19 genre flags")
            mid = str(_int(path, lineno, f[0], "movie id"))
            _check_unique(path, lineno, mid, seen, "movie id")
            flags = [v.strip() for v in f[5:]]
            bad = [(g, v) for g, v in zip(GENRES_100K, flags) if v not in ("0", "1")]
            if bad:
                raise MovieLensFormatError(
                    f"{path}:{lineno}: genre flag {bad[0][0]}={bad[0][1]!r} is not 0 or 1; "
                    "fix: pass the unmodified ml-100k u.item"
                )
            genres = "|".join(g for g, v in zip(GENRES_100K, flags) if v == "1")
            rows.append((mid, f[1], genres))
    else:
        for lineno, raw in _raw_lines(path):
            # Split from both ends: the first "::" ends the id, the last starts the genres,
            # so a title holding "::" still reads.
            head, sep1, rest = raw.partition("::")
            title, sep2, genres = rest.rpartition("::")
            if not (sep1 and sep2):
                raise MovieLensFormatError(
                    f"{path}:{lineno}: expected MovieID::Title::Genres; fix: pass the unmodified ml-1m movies.dat"
                )
            mid = str(_int(path, lineno, head, "movie id"))
            _check_unique(path, lineno, mid, seen, "movie id")
            names = [g for g in genres.strip().split("|") if g]
            unknown = [g for g in names if g not in GENRES_1M]
            if unknown:
                raise MovieLensFormatError(
                    f"{path}:{lineno}: unknown genre(s) {unknown}; expected some of {', '.join(GENRES_1M)}; "
                    "fix: pass the unmodified ml-1m movies.dat"
                )
            rows.append((mid, title, "|".join(names)))
    return pd.DataFrame(rows, columns=["movie_id", *MOVIE_COLUMNS])


def load_movielens(path: str | Path, format: str | None = None) -> pd.DataFrame:
    """Reads an unzipped ml-100k or ml-1m folder into one joined ratings table.

    Args:
      path: the folder holding the data set's files (``u.data`` ... or ``ratings.dat`` ...).
      format: ``"ml-100k"`` or ``"ml-1m"``; by default detected from the files present.

    Returns:
      One row per rating, in the ratings file's order, with the columns of :data:`COLUMNS`:
      ``user_id``, ``movie_id`` (str), ``rating`` (1-5), ``timestamp`` (int64), ``gender``
      (``"M"``/``"F"``), ``age`` (int64: the raw age in ml-100k, the age code in ml-1m),
      ``occupation`` (str: a name in ml-100k, a code in ml-1m), ``zip_code``, ``title``
      (str) and ``genres`` (the movie's genres ``|``-joined, ``""`` if none).
      ``table.attrs["format"]`` records the format.

    Raises:
      FileNotFoundError: the folder or a format's files are missing (see :func:`detect_format`).
      MovieLensFormatError: a malformed line (naming the file and line), a duplicate id,
        or a rating of an undefined user or movie.
    """
    folder = Path(path)
    if format is None:
        format = detect_format(folder)
    elif format not in FORMATS:
        raise ValueError(f"format={format!r} is not one of {', '.join(FORMATS)}")
    else:
        missing = [f for f in FORMAT_FILES[format] if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"MovieLens folder {folder} lacks {', '.join(missing)} ({format} needs "
                f"{', '.join(FORMAT_FILES[format])}); fix: download {format} from {DOWNLOAD_URL} and unzip it there"
            )
    ratings_file, users_file, movies_file = (folder / f for f in FORMAT_FILES[format])
    ratings = _read_ratings(ratings_file, "\t" if format == ML_100K else "::")
    users = _read_users(users_file, format)
    movies = _read_movies(movies_file, format)
    # A rating of an undefined user or movie means a truncated or mixed-up folder; an
    # inner join would hide it, so name the first such line instead.
    for key, table, file in (("user_id", users, users_file), ("movie_id", movies, movies_file)):
        orphan = ~ratings[key].isin(table[key])
        if orphan.any():
            row = ratings[orphan].iloc[0]
            raise MovieLensFormatError(
                f"{ratings_file}:{row['_line']}: {key} {row[key]} is not defined in {file}; "
                "fix: use the ratings, users and movies files of one unmodified download"
            )
    table = (
        ratings.drop(columns="_line").merge(users, on="user_id", how="left").merge(movies, on="movie_id", how="left")
    )
    table = table[list(COLUMNS)].astype({"rating": np.int64, "timestamp": np.int64, "age": np.int64})
    table.attrs["format"] = format
    return table


# ---------------------------------------------------------------------- derived columns
def age_domain(age: Sequence[int] | np.ndarray | pd.Series, format: str) -> np.ndarray:
    """The domain (0, 1 or 2) of each user age: young / 25-34 / 35 and over.

    ml-1m ages are codes: {1, 18} -> 0, {25} -> 1, {35, 45, 50, 56} -> 2 (the M3oE split).
    ml-100k ages are raw years: < 25 -> 0, 25-34 -> 1, >= 35 -> 2, the same age ranges.
    """
    ages = np.asarray(age, dtype=np.int64)
    if format == ML_1M:
        unknown = sorted(set(ages.tolist()) - set(DOMAIN_OF_AGE_CODE_1M))
        if unknown:
            raise ValueError(f"ml-1m age code(s) {unknown} are not one of {sorted(DOMAIN_OF_AGE_CODE_1M)}")
        return np.array([DOMAIN_OF_AGE_CODE_1M[a] for a in ages.tolist()], dtype=np.int64)
    if format == ML_100K:
        return np.searchsorted(np.asarray(AGE_DOMAIN_BOUNDARIES), ages, side="right").astype(np.int64)
    raise ValueError(f"format={format!r} is not one of {', '.join(FORMATS)}")


def _format_of(table: pd.DataFrame, format: str | None) -> str:
    format = format or table.attrs.get("format")
    if format not in FORMATS:
        raise ValueError(
            "the table's MovieLens format is unknown (table.attrs['format'] is lost by some pandas "
            "operations); fix: pass format='ml-100k' or format='ml-1m'"
        )
    return format


def _user_features(table: pd.DataFrame, zip_prefix_len: int) -> dict[str, pd.Series]:
    """The user's string feature columns (shared by both views)."""
    return {
        "user_id": table["user_id"].astype(str),
        "gender": table["gender"].astype(str),
        "age": table["age"].astype(str),
        "occupation": table["occupation"].astype(str),
        # A zip prefix is a coarse region; full zip codes are nearly one per user.
        "zip_prefix": table["zip_code"].astype(str).str[:zip_prefix_len],
    }


def _buckets(distinct: int, floor: int) -> int:
    # Roughly 4 buckets per value keeps hash collisions rare (as the synthetic data's fields).
    return max(floor, 4 * distinct)


# ------------------------------------------------------------------ multi-domain view
@dataclasses.dataclass(frozen=True)
class MultiDomainView:
    """What a multi-domain multi-task model reads from :func:`multidomain_table` rows.

    Attributes:
      fields: the input fields (``MultiDomainModel(config, fields)``).
      domain_field: the int column holding each row's domain id (``MultiDomainConfig.domain_feature``).
      num_domains: D (``MultiDomainConfig.domains``).
      labels: the task label columns, in task order (``MultiDomainConfig.tasks``).
    """

    fields: tuple[FieldSpec, ...]
    domain_field: str = DOMAIN_FIELD
    num_domains: int = NUM_DOMAINS
    labels: tuple[str, ...] = TASKS


def multidomain_table(
    ratings: pd.DataFrame, format: str | None = None, zip_prefix_len: int = ZIP_PREFIX_LEN
) -> pd.DataFrame:
    """The multi-domain multi-task rows: one per rating.

    Args:
      ratings: the table from :func:`load_movielens`.
      format: its format (default: ``ratings.attrs["format"]``); it decides how ages map to domains.
      zip_prefix_len: leading zip-code characters kept as the region feature.

    Returns:
      String feature columns ``user_id, movie_id, gender, age, occupation, zip_prefix, genres``
      (``genres`` ``|``-joined, multi-valued), ``domain`` (int64, see :func:`age_domain`),
      and int64 labels ``click`` (rating >= 4) and ``like`` (rating == 5).
    """
    format = _format_of(ratings, format)
    cols = _user_features(ratings, zip_prefix_len)
    out = pd.DataFrame(
        {
            "user_id": cols["user_id"],
            "movie_id": ratings["movie_id"].astype(str),
            **{k: v for k, v in cols.items() if k != "user_id"},
            "genres": ratings["genres"].astype(str),
            DOMAIN_FIELD: age_domain(ratings["age"], format),
            "click": (ratings["rating"] >= CLICK_MIN_RATING).astype(np.int64),
            "like": (ratings["rating"] == LIKE_RATING).astype(np.int64),
        }
    )
    out.attrs["format"] = format
    return out


def multidomain_view(table: pd.DataFrame | None = None, max_genres: int = MAX_GENRES) -> MultiDomainView:
    """The fields, domain column and labels of the multi-domain view.

    Args:
      table: rows from :func:`multidomain_table`; if given, hash buckets are sized to its
        distinct values (about 4 per value), else to the full ml-1m's sizes.
      max_genres: genres kept per movie.
    """
    # Default sizes: ml-1m has 6040 users, 3706 rated movies, 3439 zip codes.
    defaults = {"user_id": 6040, "movie_id": 3706, "gender": 2, "age": 61, "occupation": 21, "zip_prefix": 700}

    def size(name: str) -> int:
        return int(table[name].nunique()) if table is not None else defaults[name]

    fields = [
        FieldSpec(name, CATEGORICAL, hash_buckets=_buckets(size(name), 8), group=group)
        for name, group in (
            ("user_id", "user"),
            ("movie_id", "movie"),
            ("gender", "user"),
            ("age", "user"),
            ("occupation", "user"),
            ("zip_prefix", "user"),
        )
    ]
    fields.append(
        FieldSpec(
            "genres", MULTI_VALUED, hash_buckets=_buckets(len(GENRES_100K), 8), max_values=max_genres, group="movie"
        )
    )
    return MultiDomainView(fields=tuple(fields))


# ------------------------------------------------------------------- user-tagging view
def user_tag_table(
    ratings: pd.DataFrame,
    negatives_per_positive: float = 1.0,
    min_rating: int | None = None,
    seed: int = 0,
    zip_prefix_len: int = ZIP_PREFIX_LEN,
) -> pd.DataFrame:
    """The user-tagging rows: (user, a movie's genre set) pairs with task labels.

    Positives are the user's rated movies (only those rated >= ``min_rating`` if given);
    negatives are movies the user never rated, drawn uniformly without replacement from
    the movies that appear in ``ratings``. A movie the user rated below ``min_rating`` is
    neither: it was seen, so it is no negative, and it was not liked enough to be a positive.

    Args:
      ratings: the table from :func:`load_movielens`.
      negatives_per_positive: negatives drawn per positive of each user (rounded per user;
        fewer when the user has rated nearly every movie).
      min_rating: ratings below it are dropped instead of being positives (None: keep all).
      seed: the sampling seed; the same inputs and seed give the same rows.
      zip_prefix_len: leading zip-code characters kept as the region feature.

    Returns:
      Columns ``user_id, gender, age, occupation, zip_prefix`` (the user tower's string
      fields), ``tags`` (the movie's genres ``|``-joined: the tag tower's multi-valued
      field), ``movie_id`` and ``rating`` (0 for negatives) for reference, and int64 labels
      ``click`` (1: a positive, 0: a sampled negative) and ``like`` (rating == 5). Users are
      in sorted id order, each user's positives (in file order) before their negatives.
    """
    if negatives_per_positive < 0:
        raise ValueError(f"negatives_per_positive={negatives_per_positive} must be >= 0")
    rng = np.random.default_rng(seed)
    user_ids = ratings["user_id"].astype(str).to_numpy()
    movie_ids = ratings["movie_id"].astype(str).to_numpy()
    # Users and the catalogue of negatives (the movies in the ratings) in sorted id order,
    # so a seed always draws the same rows whatever the order of the ratings.
    users = np.array(sorted(set(user_ids), key=_id_key))
    catalogue = np.array(sorted(set(movie_ids), key=_id_key))
    u_idx = pd.Index(users).get_indexer(user_ids)
    m_idx = pd.Index(catalogue).get_indexer(movie_ids)
    stars = ratings["rating"].to_numpy(np.int64)

    keep = np.ones(len(ratings), bool) if min_rating is None else stars >= min_rating
    pos_u, pos_m, pos_r = u_idx[keep], m_idx[keep], stars[keep]
    n_pos = np.bincount(pos_u, minlength=len(users))
    # Every rated movie (positive or not) per user: the ones a negative must avoid.
    by_user = np.argsort(u_idx, kind="stable")
    rated_sorted = m_idx[by_user]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(u_idx, minlength=len(users)))])
    neg_u: list[np.ndarray] = []
    neg_m: list[np.ndarray] = []
    unrated_mask = np.ones(len(catalogue), bool)
    for u in range(len(users)):
        n_neg = int(round(negatives_per_positive * n_pos[u]))
        if not n_neg:
            continue
        rated = rated_sorted[bounds[u] : bounds[u + 1]]
        unrated_mask[rated] = False
        unrated = np.flatnonzero(unrated_mask)
        unrated_mask[rated] = True
        if len(unrated):
            neg_m.append(rng.choice(unrated, size=min(n_neg, len(unrated)), replace=False))
            neg_u.append(np.full(len(neg_m[-1]), u))
    n_neg_total = sum(len(m) for m in neg_m)
    row_u = np.concatenate([pos_u, *neg_u]).astype(np.int64)
    row_m = np.concatenate([pos_m, *neg_m]).astype(np.int64)
    row_r = np.concatenate([pos_r, np.zeros(n_neg_total, np.int64)])
    row_click = np.concatenate([np.ones(len(pos_u), np.int64), np.zeros(n_neg_total, np.int64)])
    # Group by user; the stable sort keeps positives (in file order) before negatives.
    order = np.argsort(row_u, kind="stable")
    row_u, row_m, row_r, row_click = row_u[order], row_m[order], row_r[order], row_click[order]

    profile = ratings.drop_duplicates("user_id").assign(user_id=lambda t: t["user_id"].astype(str))
    profile = profile.set_index("user_id").loc[users, list(USER_COLUMNS)].reset_index()
    feats = _user_features(profile, zip_prefix_len)
    genres = ratings.drop_duplicates("movie_id").assign(movie_id=lambda t: t["movie_id"].astype(str))
    genres_of = genres.set_index("movie_id").loc[catalogue, "genres"].astype(str).to_numpy()
    return pd.DataFrame(
        {
            **{k: v.to_numpy()[row_u] for k, v in feats.items()},
            TAG_FIELD: genres_of[row_m],
            "movie_id": catalogue[row_m],
            "rating": row_r,
            "click": row_click,
            "like": (row_r == LIKE_RATING).astype(np.int64),
        }
    )


def _id_key(value: str) -> tuple[int, str]:
    # Numeric ids sort as numbers ("2" before "10"); anything else after them, as text.
    return (int(value), "") if value.isdigit() else (1 << 62, value)


def user_tag_feature_config(
    table: pd.DataFrame | None = None, max_tags: int = MAX_GENRES, labels: Sequence[str] = TASKS
) -> FeatureConfig:
    """The :class:`FeatureConfig` of :func:`user_tag_table` rows.

    Args:
      table: rows from :func:`user_tag_table`; if given, hash buckets are sized to its
        distinct values, else to the full ml-1m's sizes.
      max_tags: genres kept per movie in the tag set.
      labels: the task labels, a subset of ``("click", "like")`` in task order.
    """
    unknown = [t for t in labels if t not in TASKS]
    if unknown:
        raise ValueError(f"labels {unknown} are not columns of the user-tagging view; use some of {list(TASKS)}")
    defaults = {"user_id": 6040, "gender": 2, "age": 61, "occupation": 21, "zip_prefix": 700}

    def size(name: str) -> int:
        return int(table[name].nunique()) if table is not None else defaults[name]

    user_fields = tuple(
        FieldSpec(name, CATEGORICAL, hash_buckets=_buckets(size(name), 8), group="basic") for name in defaults
    )
    tag = FieldSpec(
        TAG_FIELD, MULTI_VALUED, hash_buckets=_buckets(len(GENRES_100K), 8), max_values=max_tags, group="tag"
    )
    return FeatureConfig(user_fields=user_fields, tag_field=tag, labels=tuple(labels), user_id="user_id")


# ----------------------------------------------------------------- arrays and datasets
def to_arrays(
    table: pd.DataFrame,
    fields: Sequence[FieldSpec],
    labels: Sequence[str],
    extra_columns: Sequence[str] = (),
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Table rows -> ``(features, labels)`` numpy dicts in the models' input layout.

    Features (as :func:`mvke_tf.data.dataset.make_dataset` yields them): categorical
    ``[N]`` str, multi-valued ``[N, max_values]`` str padded with ``""`` (longer lists
    truncated), numeric ``[N]`` float32; ``extra_columns`` (e.g. ``domain``) pass through
    as they are, int columns as int32. Labels: ``{label: [N] float32}``.
    """
    features: dict[str, np.ndarray] = {}
    for spec in fields:
        column = table[spec.name]
        if spec.kind == NUMERIC:
            features[spec.name] = column.to_numpy(np.float32)
        elif spec.kind == CATEGORICAL:
            features[spec.name] = column.astype(str).to_numpy().astype(str)
        else:
            padded = np.full((len(column), spec.max_values), "", dtype=object)
            for i, joined in enumerate(column.astype(str).tolist()):
                values = [v for v in joined.split(spec.separator) if v][: spec.max_values]
                padded[i, : len(values)] = values
            features[spec.name] = padded.astype(str)
    for name in extra_columns:
        values = table[name].to_numpy()
        # The multi-domain models gather by domain id: int32 is what they cast to anyway.
        features[name] = values.astype(np.int32) if np.issubdtype(values.dtype, np.integer) else values
    return features, {t: table[t].to_numpy(np.float32) for t in labels}


def multidomain_arrays(
    table: pd.DataFrame, view: MultiDomainView | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`to_arrays` of :func:`multidomain_table` rows: the fields plus ``domain`` (int32)."""
    view = view or multidomain_view(table)
    return to_arrays(table, view.fields, view.labels, extra_columns=(view.domain_field,))


def user_tag_arrays(
    table: pd.DataFrame, feature_config: FeatureConfig | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`to_arrays` of :func:`user_tag_table` rows for a two-tower model."""
    fc = feature_config or user_tag_feature_config(table)
    return to_arrays(table, (*fc.user_fields, fc.tag_field), fc.labels)


def to_dataset(
    features: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    batch_size: int = 512,
    shuffle: bool = True,
    seed: int = 0,
    num_epochs: int | None = 1,
) -> Any:
    """A batched ``tf.data.Dataset`` of ``(features, labels)`` over in-memory arrays.

    Args:
      features, labels: from :func:`to_arrays` (or the view helpers).
      batch_size: rows per batch (the last batch may be smaller).
      shuffle: reshuffle the rows every epoch.
      seed: the shuffle seed.
      num_epochs: passes over the rows; ``None`` repeats forever.
    """
    from mvke_tf.data.arrays import arrays_dataset

    return arrays_dataset(features, labels, batch_size, shuffle, seed, num_epochs)


def genre_names(format: str) -> tuple[str, ...]:
    """The genre vocabulary of ``format`` (ml-100k's includes ``"unknown"``)."""
    return {ML_100K: GENRES_100K, ML_1M: GENRES_1M}[format]


__all__ = [
    "AGE_CODES_1M",
    "DOMAIN_FIELD",
    "DOMAIN_OF_AGE_CODE_1M",
    "FORMATS",
    "FORMAT_FILES",
    "GENRES_100K",
    "GENRES_1M",
    "ML_100K",
    "ML_1M",
    "MovieLensFormatError",
    "MultiDomainView",
    "TAG_FIELD",
    "TASKS",
    "age_domain",
    "detect_format",
    "genre_names",
    "load_movielens",
    "multidomain_arrays",
    "multidomain_table",
    "multidomain_view",
    "to_arrays",
    "to_dataset",
    "user_tag_arrays",
    "user_tag_feature_config",
    "user_tag_table",
]
