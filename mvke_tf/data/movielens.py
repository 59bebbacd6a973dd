"""MovieLens ml-100k / ml-1m: a loader and two training views.

The GroupLens files and their loader, :func:`load_movielens`, are in :mod:`mvke_tf.data.movielens_files`
(re-exported here, see ``docs/movielens.md``). The loader returns one joined ratings table; two views
turn it into model inputs:

* the multi-domain multi-task view (as the M3oE code uses ml-1m): three domains from the
  user's age group, tasks ``click`` (rating >= 4) and ``like`` (rating == 5), for
  :class:`~mvke_tf.models.multidomain.MultiDomainModel`;
* the user-tagging view: user fields for the user tower, the movie's genres as the tag
  set, rated movies as positives and sampled unrated movies as negatives, for the
  two-tower models of :mod:`mvke_tf.models.user_tag`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, FeatureConfig, FieldSpec
from mvke_tf.data.movielens_files import (
    AGE_CODES_1M,
    COLUMNS,
    DOWNLOAD_URL,
    ENCODING,
    FORMAT_FILES,
    FORMATS,
    GENRES_1M,
    GENRES_100K,
    ML_1M,
    ML_100K,
    MOVIE_COLUMNS,
    USER_COLUMNS,
    MovieLensFormatError,
    detect_format,
    genre_names,
    load_movielens,
)

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


__all__ = [
    "AGE_CODES_1M",
    "COLUMNS",
    "DOMAIN_FIELD",
    "DOMAIN_OF_AGE_CODE_1M",
    "DOWNLOAD_URL",
    "ENCODING",
    "FORMATS",
    "FORMAT_FILES",
    "GENRES_100K",
    "GENRES_1M",
    "ML_100K",
    "ML_1M",
    "MOVIE_COLUMNS",
    "TAG_FIELD",
    "TASKS",
    "USER_COLUMNS",
    "MovieLensFormatError",
    "MultiDomainView",
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
