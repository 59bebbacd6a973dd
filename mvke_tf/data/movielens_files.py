"""MovieLens ml-100k / ml-1m files: the two formats and the loader that joins them into one ratings table.

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

All files are latin-1. The loader returns one joined ratings table; the training views of
:mod:`mvke_tf.data.movielens` (which re-exports this module's public names) turn it into model inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

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


def genre_names(format: str) -> tuple[str, ...]:
    """The genre vocabulary of ``format`` (ml-100k's includes ``"unknown"``)."""
    return {ML_100K: GENRES_100K, ML_1M: GENRES_1M}[format]
