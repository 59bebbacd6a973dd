"""Synthetic user-tagging data shaped like the MVKE paper's problem.

The generative story (all of it deterministic per ``seed``):

* A tag taxonomy: ``taxonomy=(18, 5, 20)`` means 18 level-1 categories, each with 5
  level-2 children, each with 20 leaves: 1,800 leaf tags. Every node has a latent
  vector; a child is its parent's vector plus noise, so related tags are close.
* Users have demographic attributes; each attribute value shifts the user's
  preference over level-1 categories. From that preference a user draws several
  latent *facets* (a leaf's vector plus noise) for click interest and for conversion
  interest; ``shared_facets`` of them are common to both tasks, the rest differ
  (conversion facets lean towards other categories via income and age).
* The observable user fields (26 by default, like the paper) are noisy views of
  those latents: basic attributes, bucketized historical statistics (average CTR,
  CVR, activity), and multi-valued behaviour lists (reading / shopping categories,
  clicked and purchased tags) sampled from the facets' taxonomy paths.
* Ads carry 1-3 leaf tags from one level-1 branch. An impression's click probability
  is ``sigmoid(b + user_bias + ad_bias + alpha * max_f <facet_f, tag_vec>)``: the user
  is interested if *any* facet matches, the structure several experts can model and a
  single user vector struggles with. Conversion happens only after a click, with its
  own facets. ``p_click`` and ``p_conversion = P(click and conversion)`` are written
  on every row, so the oracle AUC (the best any model can reach) is computable.

Rows are generated and written in chunks, so the row count is limited by disk, not
memory (only the user and ad tables are held, O(num_users + num_ads)).

It stays one module, one generator from its knobs to its files: the column schema, the latent
world and the CSV / TFRecord writer (:mod:`mvke_tf.data.multidomain` writes with it too) all name
the synthetic columns, which ``tests/test_no_synthetic_names.py`` allows only in the generator
files, and each part reads the schema, so a part moved beside it would import this module back.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, ConfigError, FeatureConfig, FieldSpec

# Rows generated per chunk. Fixed (not a user knob) because the per-chunk random
# streams are derived from (seed, chunk index): changing it would change the data.
_CHUNK_ROWS = 20_000

# Basic attributes: name -> number of distinct values. Values are written as
# "<name>_<index>" strings, the way raw categorical logs look.
BASIC_FIELDS: dict[str, int] = {
    "gender": 3,
    "age_bucket": 7,
    "education": 6,
    "city_tier": 5,
    "occupation": 20,
    "income_level": 6,
    "marital_status": 4,
    "device_brand": 30,
    "os": 3,
    "province": 34,
    "has_child": 3,
}
# Behaviour lists: name -> (source facets, taxonomy level 1/2/3, facet draws, noise draws).
BEHAVIOUR_FIELDS: dict[str, tuple[str, int, int, int]] = {
    "read_l1_categories": ("click", 1, 4, 1),
    "read_l2_categories": ("click", 2, 4, 2),
    "clicked_tags_30d": ("click", 3, 5, 2),
    "shop_l1_categories": ("conversion", 1, 3, 1),
    "shop_l2_categories": ("conversion", 2, 3, 2),
    "purchased_tags_90d": ("conversion", 3, 3, 1),
    "app_install_categories": ("all", 1, 4, 2),
    "search_l2_topics": ("all", 2, 3, 2),
}
# Historical statistics (numeric), bucketized by these boundaries.
STAT_BOUNDARIES: dict[str, tuple[float, ...]] = {
    "avg_ctr_7d": (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12),
    "avg_cvr_30d": (0.02, 0.05, 0.1, 0.15, 0.2, 0.3),
    "active_days_30d": (1, 3, 7, 14, 21, 28),
    "impressions_7d": (5, 20, 50, 100, 200, 500),
    "clicks_7d": (1, 2, 4, 8, 16),
    "session_minutes": (1, 5, 15, 30, 60, 120),
    "days_since_register": (7, 30, 90, 365, 730, 1500),
}
TAG_FIELD = "tags"
LABELS = ("click", "conversion")
META_COLUMNS = ("user_id", "ad_id", "day", "tag_l1")
PROB_COLUMNS = ("p_click", "p_conversion")
# Numeric statistics are missing (empty in CSV) for this share of users.
_MISSING_RATE = 0.03


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and knobs of the synthetic data set.

    Attributes:
      num_rows: impressions to generate (train + eval).
      num_users: distinct users.
      num_ads: distinct ads.
      taxonomy: children per node at each level; leaves = product (default 1,800).
      tags_per_ad: inclusive range of leaf tags per ad.
      click_facets: latent interest facets per user for click.
      conversion_facets: latent interest facets per user for conversion.
      shared_facets: how many of those facets are the same for both tasks.
      latent_dim: dimension of the latent tag / facet space.
      days: impressions are spread over this many days; the last day is the eval split
        (the paper's "train on day D, test on day D+1").
      target_ctr: mean click probability per impression.
      target_cvr: mean conversion probability per click.
      click_sharpness: how strongly click depends on facet-tag affinity (higher makes
        the oracle AUC higher).
      conversion_sharpness: the same for conversion given click.
      targeted_share: share of impressions whose ad is drawn from the user's own
        interest categories (targeted delivery), the rest uniformly at random.
      seed: random seed; the same config gives byte-identical files.
    """

    num_rows: int = 400_000
    num_users: int = 20_000
    num_ads: int = 5_000
    taxonomy: tuple[int, ...] = (18, 5, 20)
    tags_per_ad: tuple[int, int] = (1, 3)
    click_facets: int = 3
    conversion_facets: int = 3
    shared_facets: int = 1
    latent_dim: int = 16
    days: int = 2
    target_ctr: float = 0.04
    target_cvr: float = 0.15
    click_sharpness: float = 5.0
    conversion_sharpness: float = 5.0
    targeted_share: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "taxonomy", tuple(int(t) for t in self.taxonomy))
        object.__setattr__(self, "tags_per_ad", tuple(int(t) for t in self.tags_per_ad))

        def check(ok: bool, field: str, fix: str) -> None:
            if not ok:
                raise ConfigError(f"synthetic config: {field}={getattr(self, field)!r} is invalid; fix: {fix}")

        check(self.num_rows >= 1, "num_rows", "use a positive row count")
        check(self.num_users >= 1, "num_users", "use a positive user count")
        check(self.num_ads >= 1, "num_ads", "use a positive ad count")
        check(
            len(self.taxonomy) == 3 and all(t >= 1 for t in self.taxonomy),
            "taxonomy",
            "give three positive branching factors, e.g. (18, 5, 20)",
        )
        lo, hi = self.tags_per_ad if len(self.tags_per_ad) == 2 else (0, -1)
        check(
            1 <= lo <= hi <= self.taxonomy[2] * self.taxonomy[1], "tags_per_ad", "give (min, max) with 1 <= min <= max"
        )
        check(self.click_facets >= 1, "click_facets", "use at least 1")
        check(self.conversion_facets >= 1, "conversion_facets", "use at least 1")
        check(
            0 <= self.shared_facets <= min(self.click_facets, self.conversion_facets),
            "shared_facets",
            "use 0..min(click_facets, conversion_facets)",
        )
        check(self.latent_dim >= 2, "latent_dim", "use at least 2")
        check(self.days >= 2, "days", "use at least 2 (the last day is the eval split)")
        check(0 < self.target_ctr < 0.5, "target_ctr", "use a rate in (0, 0.5)")
        check(0 < self.target_cvr < 0.9, "target_cvr", "use a rate in (0, 0.9)")
        check(0 <= self.targeted_share <= 1, "targeted_share", "use a share in [0, 1]")

    @property
    def num_leaves(self) -> int:
        return int(np.prod(self.taxonomy))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["taxonomy"] = list(self.taxonomy)
        d["tags_per_ad"] = list(self.tags_per_ad)
        return d


def feature_config(max_tags: int = 3) -> FeatureConfig:
    """The :class:`FeatureConfig` describing the generator's columns (26 user fields)."""
    fields: list[FieldSpec] = []
    for name, n in BASIC_FIELDS.items():
        fields.append(FieldSpec(name, CATEGORICAL, hash_buckets=max(16, 4 * n), group="basic"))
    for name, (_, level, _, _) in BEHAVIOUR_FIELDS.items():
        buckets = {1: 64, 2: 512, 3: 4096}[level]
        fields.append(
            FieldSpec(
                name,
                MULTI_VALUED,
                hash_buckets=buckets,
                max_values=8,
                group="behaviour",
                hierarchy_separator="_" if level == 3 else "",
            )
        )
    for name, bounds in STAT_BOUNDARIES.items():
        fields.append(FieldSpec(name, NUMERIC, boundaries=bounds, group="statistics"))
    tag = FieldSpec(
        TAG_FIELD, MULTI_VALUED, hash_buckets=4096, max_values=max_tags, group="tag", hierarchy_separator="_"
    )
    return FeatureConfig(user_fields=tuple(fields), tag_field=tag, labels=LABELS)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def solve_intercept(logit: np.ndarray, weight: np.ndarray, target: float) -> float:
    """The offset b with ``sum(weight * sigmoid(logit + b)) / sum(weight) == target`` (bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        rate = np.sum(weight * _sigmoid(logit + mid)) / np.sum(weight)
        lo, hi = (mid, hi) if rate < target else (lo, mid)
    return (lo + hi) / 2


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class SyntheticWorld:
    """The latent world: taxonomy, users, ads. Rows are sampled from it by chunk."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = c = config
        rng = np.random.default_rng([c.seed, 0])
        n1, n2, n3 = c.taxonomy
        h = c.latent_dim
        # Taxonomy: leaf index i -> (l1, l2 global index) and a latent unit vector.
        self.num_l1, self.num_l2, self.num_leaves = n1, n1 * n2, n1 * n2 * n3
        leaf = np.arange(self.num_leaves)
        self.leaf_l2 = leaf // n3
        self.leaf_l1 = self.leaf_l2 // n2
        v1 = _unit(rng.normal(size=(self.num_l1, h)))
        v2 = _unit(v1[np.arange(self.num_l2) // n2] + 0.6 * _unit(rng.normal(size=(self.num_l2, h))))
        self.tag_vec = _unit(v2[self.leaf_l2] + 0.5 * _unit(rng.normal(size=(self.num_leaves, h))))
        self.leaf_name = np.array(
            [f"t{a}_{b % n2}_{i % n3}" for i, (a, b) in enumerate(zip(self.leaf_l1, self.leaf_l2))], dtype=object
        )
        # A leaf's name at each taxonomy level: level-1 "c<k>", level-2 "s<k>", leaf "t<a>_<b>_<c>".
        self.level_names = {
            1: [f"c{a}" for a in self.leaf_l1],
            2: [f"s{b}" for b in self.leaf_l2],
            3: list(self.leaf_name),
        }
        self._make_users(rng)
        self._make_ads(rng)
        self._calibrate(np.random.default_rng([c.seed, 1]))

    # ---------------------------------------------------------------- users
    def _make_users(self, rng: np.random.Generator) -> None:
        c = self.config
        u = c.num_users
        self.basic = {name: rng.integers(0, n, size=u) for name, n in BASIC_FIELDS.items()}
        # Each attribute value shifts the preference over level-1 categories.
        pref = np.zeros((u, self.num_l1))
        for name, n in BASIC_FIELDS.items():
            table = rng.normal(scale=0.8, size=(n, self.num_l1))
            pref += table[self.basic[name]]
        conv_shift = np.zeros((u, self.num_l1))
        for name in ("income_level", "age_bucket", "has_child"):
            table = rng.normal(scale=1.2, size=(BASIC_FIELDS[name], self.num_l1))
            conv_shift += table[self.basic[name]]

        def draw_facets(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            gumbel = -np.log(-np.log(rng.uniform(size=(u, k, self.num_l1))))
            l1 = np.argmax(logits[:, None, :] + gumbel, axis=-1)  # [u, k]
            n2, n3 = c.taxonomy[1], c.taxonomy[2]
            leaf = (l1 * n2 + rng.integers(0, n2, size=(u, k))) * n3 + rng.integers(0, n3, size=(u, k))
            vec = _unit(self.tag_vec[leaf] + 0.35 * _unit(rng.normal(size=(u, k, c.latent_dim))))
            return leaf, vec

        click_leaf, click_vec = draw_facets(pref, c.click_facets)
        own = c.conversion_facets - c.shared_facets
        conv_leaf, conv_vec = draw_facets(pref + conv_shift, max(own, 1))
        s = c.shared_facets
        self.click_leaf, self.click_vec = click_leaf, click_vec
        self.conv_leaf = np.concatenate([click_leaf[:, :s], conv_leaf[:, :own]], axis=1)
        self.conv_vec = np.concatenate([click_vec[:, :s], conv_vec[:, :own]], axis=1)
        # User-level propensities (reflected, noisily, in the historical statistics).
        self.user_click_bias = rng.normal(scale=0.5, size=u)
        self.user_conv_bias = rng.normal(scale=0.5, size=u)
        self.activity = rng.lognormal(mean=0.0, sigma=0.8, size=u)
        self.register_days = rng.integers(1, 2000, size=u)
        self.user_seed = rng.integers(0, 2**31 - 1, size=u)
        self.user_l1_pref = pref  # for targeted ad delivery

    def behaviour_lists(self, users: np.ndarray, rng: np.random.Generator) -> dict[str, list[str]]:
        """Multi-valued behaviour fields for ``users`` as '|'-joined strings."""
        out: dict[str, list[str]] = {}
        n = len(users)
        n3 = self.config.taxonomy[2]
        for name, (source, level, draws, noise) in BEHAVIOUR_FIELDS.items():
            leaves = {
                "click": self.click_leaf,
                "conversion": self.conv_leaf,
                "all": np.concatenate([self.click_leaf, self.conv_leaf], axis=1),
            }[source][users]
            pick = leaves[np.arange(n)[:, None], rng.integers(0, leaves.shape[1], size=(n, draws))]
            if level == 3:  # a sibling leaf of the facet's leaf, as clicked / purchased items vary
                pick = (pick // n3) * n3 + rng.integers(0, n3, size=pick.shape)
            keep = rng.uniform(size=pick.shape) < 0.8
            rand = rng.integers(0, self.num_leaves, size=(n, noise))
            ids = np.concatenate([np.where(keep, pick, -1), rand], axis=1)
            names = self.level_names[level]
            out[name] = ["|".join(sorted({names[x] for x in row if x >= 0})) for row in ids]
        return out

    def statistics(self, users: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Historical statistics for ``users`` (NaN where missing)."""
        act = self.activity[users]
        ctr = _sigmoid(np.log(self.config.target_ctr / (1 - self.config.target_ctr)) + self.user_click_bias[users])
        cvr = _sigmoid(np.log(self.config.target_cvr / (1 - self.config.target_cvr)) + self.user_conv_bias[users])
        imps = rng.poisson(30 * act) + 1
        stats = {
            "avg_ctr_7d": rng.binomial(imps, ctr) / imps,
            "avg_cvr_30d": np.clip(cvr + rng.normal(scale=0.03, size=len(users)), 0, 1),
            "active_days_30d": np.minimum(30, rng.poisson(8 * act)).astype(float),
            "impressions_7d": imps.astype(float),
            "clicks_7d": rng.binomial(imps, ctr).astype(float),
            "session_minutes": rng.lognormal(np.log(10 * act + 1), 0.5),
            "days_since_register": self.register_days[users].astype(float),
        }
        for v in stats.values():
            v[rng.uniform(size=len(users)) < _MISSING_RATE] = np.nan
        return stats

    # ------------------------------------------------------------------ ads
    def _make_ads(self, rng: np.random.Generator) -> None:
        c = self.config
        n2, n3 = c.taxonomy[1], c.taxonomy[2]
        lo, hi = c.tags_per_ad
        self.ad_l1 = rng.integers(0, self.num_l1, size=c.num_ads)
        self.ad_tags: list[np.ndarray] = []
        vec = np.zeros((c.num_ads, c.latent_dim))
        for a in range(c.num_ads):
            k = int(rng.integers(lo, hi + 1))
            l2 = self.ad_l1[a] * n2 + rng.integers(0, n2)
            # Tags of one ad come from one level-2 branch, occasionally a sibling branch.
            branch = np.where(rng.uniform(size=k) < 0.8, l2, self.ad_l1[a] * n2 + rng.integers(0, n2, size=k))
            tags = np.unique(branch * n3 + rng.integers(0, n3, size=k))
            self.ad_tags.append(tags)
            vec[a] = self.tag_vec[tags].mean(axis=0)
        self.ad_vec = _unit(vec)
        self.ad_click_bias = rng.normal(scale=0.3, size=c.num_ads)
        self.ad_conv_bias = rng.normal(scale=0.3, size=c.num_ads)
        self.ads_by_l1 = [np.flatnonzero(self.ad_l1 == i) for i in range(self.num_l1)]
        self.ad_tag_string = np.array(["|".join(self.leaf_name[t]) for t in self.ad_tags], dtype=object)

    # --------------------------------------------------------- probabilities
    def _logits(self, users: np.ndarray, ads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        av = self.ad_vec[ads][:, None, :]
        click_aff = np.max(np.sum(self.click_vec[users] * av, axis=-1), axis=1)
        conv_aff = np.max(np.sum(self.conv_vec[users] * av, axis=-1), axis=1)
        click = self.user_click_bias[users] + self.ad_click_bias[ads] + c.click_sharpness * click_aff
        conv = self.user_conv_bias[users] + self.ad_conv_bias[ads] + c.conversion_sharpness * conv_aff
        return click, conv

    def _calibrate(self, rng: np.random.Generator) -> None:
        """Finds the intercepts giving the target CTR and CVR (bisection on a sample)."""
        users, ads = self.sample_pairs(min(200_000, 20 * self.config.num_rows + 1000), rng)
        click, conv = self._logits(users, ads)

        self.click_intercept = solve_intercept(click, np.ones_like(click), self.config.target_ctr)
        p_click = _sigmoid(click + self.click_intercept)
        self.conv_intercept = solve_intercept(conv, p_click, self.config.target_cvr)

    def probabilities(self, users: np.ndarray, ads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """True P(click) and P(click and conversion) of impressions (user, ad)."""
        click, conv = self._logits(users, ads)
        p_click = _sigmoid(click + self.click_intercept)
        return p_click, p_click * _sigmoid(conv + self.conv_intercept)

    def sample_pairs(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Impressions: users weighted by activity, ads random or targeted."""
        c = self.config
        w = self.activity / self.activity.sum()
        users = rng.choice(c.num_users, size=n, p=w)
        ads = rng.integers(0, c.num_ads, size=n)
        targeted = np.flatnonzero(rng.uniform(size=n) < c.targeted_share)
        if len(targeted):
            # Targeting picks a level-1 category the user prefers, then an ad within it.
            logits = self.user_l1_pref[users[targeted]]
            gumbel = -np.log(-np.log(rng.uniform(size=logits.shape)))
            l1 = np.argmax(logits + gumbel, axis=1)
            for cat in np.unique(l1):
                pool = self.ads_by_l1[cat]
                if len(pool):
                    idx = targeted[l1 == cat]
                    ads[idx] = pool[rng.integers(0, len(pool), size=len(idx))]
        return users, ads

    # ------------------------------------------------------------------ rows
    def user_columns(self, users: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        cols: dict[str, Any] = {}
        for name in BASIC_FIELDS:
            cols[name] = [f"{name[:3]}{v}" for v in self.basic[name][users]]
        cols.update(self.behaviour_lists(users, rng))
        cols.update(self.statistics(users, rng))
        return cols

    def chunk(self, index: int, n: int) -> dict[str, Any]:
        """Generates chunk ``index`` of ``n`` rows as column arrays / lists."""
        c = self.config
        rng = np.random.default_rng([c.seed, 2, index])
        users, ads = self.sample_pairs(n, rng)
        p_click, p_conv = self.probabilities(users, ads)
        click = rng.uniform(size=n) < p_click
        # Conversion only after a click: P(conv | click) = p_conv / p_click.
        conversion = click & (rng.uniform(size=n) < p_conv / p_click)
        first_row = index * _CHUNK_ROWS
        day = 1 + ((first_row + np.arange(n)) * c.days) // c.num_rows
        cols: dict[str, Any] = {
            "user_id": [f"u{u}" for u in users],
            "ad_id": [f"a{a}" for a in ads],
            "day": day.astype(np.int64),
            "tag_l1": [f"c{v}" for v in self.ad_l1[ads]],
        }
        # Statistics are noisy per impression-day snapshot; lists per user and chunk.
        cols.update(self.user_columns(users, rng))
        cols[TAG_FIELD] = list(self.ad_tag_string[ads])
        cols["click"] = click.astype(np.int64)
        cols["conversion"] = conversion.astype(np.int64)
        cols["p_click"] = p_click
        cols["p_conversion"] = p_conv
        return cols


def columns() -> list[str]:
    """Column order of the generated files."""
    return (
        list(META_COLUMNS)
        + list(BASIC_FIELDS)
        + list(BEHAVIOUR_FIELDS)
        + list(STAT_BOUNDARIES)
        + [TAG_FIELD, *LABELS, *PROB_COLUMNS]
    )


def iter_chunks(config: SyntheticConfig) -> Iterator[dict[str, Any]]:
    """Yields the data set as column chunks of at most 20,000 rows."""
    world = SyntheticWorld(config)
    n_chunks = math.ceil(config.num_rows / _CHUNK_ROWS)
    for i in range(n_chunks):
        yield world.chunk(i, min(_CHUNK_ROWS, config.num_rows - i * _CHUNK_ROWS))


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(round(float(v), 6))
    return str(v)


class _Writer:
    """Writes rows of one split to sharded CSV and/or gzipped TFRecord files."""

    def __init__(
        self, out_dir: Path, split: str, formats: tuple[str, ...], shard_rows: int, int_columns: tuple[str, ...] = ()
    ) -> None:
        self.int_columns = tuple(int_columns)  # integer columns after the standard ones (a domain id)
        self.names = columns() + list(self.int_columns)
        self.dir = out_dir / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.formats, self.shard_rows = formats, shard_rows
        self.shard, self.rows_in_shard, self.rows = -1, 0, 0
        self.csv_file = self.tf_writer = None
        self.files: list[str] = []

    def _open(self) -> None:
        self.close()
        self.shard += 1
        self.rows_in_shard = 0
        stem = self.dir / f"part-{self.shard:05d}"
        if "csv" in self.formats:
            self.csv_file = open(f"{stem}.csv", "w", newline="")  # noqa: SIM115 (closed in close())
            self.csv = csv.writer(self.csv_file)
            self.csv.writerow(self.names)
            self.files.append(f"{stem}.csv")
        if "tfrecord" in self.formats:
            import tensorflow as tf

            self.tf_writer = tf.io.TFRecordWriter(f"{stem}.tfrecord.gz", options="GZIP")
            self.files.append(f"{stem}.tfrecord.gz")

    def write(self, cols: dict[str, Any], idx: np.ndarray) -> None:
        names = self.names
        examples = _examples(cols, idx, self.int_columns) if "tfrecord" in self.formats else None
        for j, i in enumerate(idx):
            if self.shard < 0 or self.rows_in_shard >= self.shard_rows:
                self._open()
            if self.csv_file is not None:
                self.csv.writerow([_fmt(cols[n][i]) for n in names])
            if self.tf_writer is not None:
                self.tf_writer.write(examples[j])
            self.rows_in_shard += 1
            self.rows += 1

    def close(self) -> None:
        if self.csv_file is not None:
            self.csv_file.close()
            self.csv_file = None
        if self.tf_writer is not None:
            self.tf_writer.close()
            self.tf_writer = None


_STRING_COLUMNS = set(META_COLUMNS) - {"day"} | set(BASIC_FIELDS) | {"user_id", "ad_id"}
_LIST_COLUMNS = set(BEHAVIOUR_FIELDS) | {TAG_FIELD}


def _example(names: list[str], row: list[Any], int_columns: tuple[str, ...] = ()) -> bytes:
    # Filling one message in place is about 8x faster than building Feature objects per value.
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    feature = example.features.feature
    for name, v in zip(names, row):
        if name in _LIST_COLUMNS:
            values = feature[name].bytes_list
            values.SetInParent()  # an empty list stays a present, empty feature
            if v:
                values.value.extend([s.encode() for s in v.split("|")])
        elif name in _STRING_COLUMNS:
            feature[name].bytes_list.value.append(str(v).encode())
        elif name in ("day", *LABELS, *int_columns):
            feature[name].int64_list.value.append(int(v))
        elif not math.isnan(v):  # numeric statistics and probabilities; a missing value is left out
            # Same 6-decimal rounding as the CSV, so both formats hold identical values.
            feature[name].float_list.value.append(round(float(v), 6))
    return example.SerializeToString()


def _examples(cols: dict[str, Any], idx: np.ndarray, int_columns: tuple[str, ...] = ()) -> list[bytes]:
    """Rows ``idx`` of a chunk as serialized ``tf.Example`` s, equal to :func:`_example`'s.

    Where ``tfx_bsl`` is installed (the pipeline extra) its C++ encoder takes the whole chunk (about
    5x faster than :func:`_example` per row). Rows are encoded in groups by which numeric values they
    lack, so a missing value is left out of the example (as CsvExampleGen does), never written empty.
    """
    names = columns() + list(int_columns)
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        from tfx_bsl.coders.example_coder import RecordBatchToExamples
    except ImportError:
        return [_example(names, [cols[n][i] for n in names], int_columns) for i in idx]
    n = len(idx)
    singles = pa.array(np.arange(n + 1, dtype=np.int32))
    arrays, absent = {}, {}
    for name in names:
        values = cols[name]
        if name in _LIST_COLUMNS:
            joined = pa.array([values[i] for i in idx], pa.string())
            parts = pc.split_pattern(joined, "|")
            empty_row = np.asarray(pc.equal(joined, "").to_numpy(zero_copy_only=False), dtype=bool)
            parent = np.asarray(pc.list_parent_indices(parts))
            keep = ~empty_row[parent]  # "" is an empty list, not a list holding ""
            offsets = np.r_[0, np.cumsum(np.bincount(parent[keep], minlength=n))].astype(np.int32)
            flat = pc.cast(parts.flatten().filter(pa.array(keep)), pa.binary())
            arrays[name] = pa.ListArray.from_arrays(pa.array(offsets), flat)
        elif name in _STRING_COLUMNS:
            arrays[name] = pa.ListArray.from_arrays(singles, pa.array([str(values[i]) for i in idx], pa.binary()))
        elif name in ("day", *LABELS, *int_columns):
            arrays[name] = pa.ListArray.from_arrays(singles, pa.array(np.asarray(values)[idx].astype(np.int64)))
        else:
            x = np.asarray(values, dtype=np.float64)[idx]
            absent[name] = np.isnan(x)
            rounded = np.array([round(float(v), 6) for v in x], dtype=np.float32)  # as the CSV writes them
            arrays[name] = pa.ListArray.from_arrays(singles, pa.array(rounded))
    pattern = np.zeros(n, dtype=np.int64)
    for bit, name in enumerate(absent):
        pattern |= absent[name].astype(np.int64) << bit
    encoded: list[bytes] = [b""] * n
    for value in np.unique(pattern):
        rows = np.flatnonzero(pattern == value)
        take = pa.array(rows)
        missing = {name for bit, name in enumerate(absent) if value >> bit & 1}
        present = [name for name in names if name not in missing]
        batch = pa.RecordBatch.from_arrays([arrays[name].take(take) for name in present], present)
        for row, example in zip(rows, RecordBatchToExamples(batch)):
            encoded[row] = example
    return encoded


def generate(
    config: SyntheticConfig,
    out_dir: str | Path,
    formats: tuple[str, ...] = ("csv",),
    shard_rows: int = 500_000,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Generates the data set into ``out_dir``.

    Layout: ``out_dir/{train,eval}/part-NNNNN.{csv,tfrecord.gz}``, plus
    ``features.yaml`` (the :class:`FeatureConfig`) and ``metadata.json`` (the generator
    config, row counts, label rates and the oracle AUC per task on the eval split).
    Rows of the last day go to ``eval``, the others to ``train``.

    Args:
      config: sizes and knobs.
      out_dir: output directory (created; existing part files are replaced).
      formats: any of ``csv`` and ``tfrecord``.
      shard_rows: rows per output file.
      progress: called with the number of rows written after each chunk.

    Returns:
      The metadata dict also written to ``metadata.json``.
    """
    from mvke_tf.metrics import auc_or_nan

    bad = set(formats) - {"csv", "tfrecord"}
    if bad or not formats:
        raise ConfigError(f"formats: {sorted(bad) or 'empty'} not supported; fix: use csv and/or tfrecord")
    if shard_rows < 1:
        raise ConfigError(f"shard_rows={shard_rows} must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("train/part-*")) + list(out.glob("eval/part-*")):
        old.unlink()
    writers = {s: _Writer(out, s, tuple(formats), shard_rows) for s in ("train", "eval")}
    counts = {s: {"rows": 0, "click": 0, "conversion": 0} for s in writers}
    eval_probs: dict[str, list[np.ndarray]] = {t: [] for t in LABELS}
    eval_labels: dict[str, list[np.ndarray]] = {t: [] for t in LABELS}
    try:
        for cols in iter_chunks(config):
            is_eval = cols["day"] == config.days
            for split, mask in (("train", ~is_eval), ("eval", is_eval)):
                idx = np.flatnonzero(mask)
                writers[split].write(cols, idx)
                counts[split]["rows"] += len(idx)
                for t in LABELS:
                    counts[split][t] += int(cols[t][idx].sum())
            for t, p in zip(LABELS, PROB_COLUMNS):
                eval_probs[t].append(cols[p][is_eval])
                eval_labels[t].append(cols[t][is_eval])
            if progress is not None:
                progress(len(cols["day"]))
    finally:
        for w in writers.values():
            w.close()
    oracle = {}
    for t in LABELS:
        y, p = np.concatenate(eval_labels[t]), np.concatenate(eval_probs[t])
        oracle[t] = auc_or_nan(y, p)
    meta = {
        "generator": config.to_dict(),
        "columns": columns(),
        "splits": {
            s: {**counts[s], "files": [str(Path(f).relative_to(out)) for f in writers[s].files]} for s in writers
        },
        "rates": {
            "ctr": sum(c["click"] for c in counts.values()) / config.num_rows,
            "conversion_per_click": sum(c["conversion"] for c in counts.values())
            / max(1, sum(c["click"] for c in counts.values())),
        },
        "oracle_auc_eval": oracle,
        "num_leaf_tags": config.num_leaves,
    }
    feature_config(max_tags=config.tags_per_ad[1]).to_yaml(out / "features.yaml")
    (out / "metadata.json").write_text(json.dumps(meta, indent=2))
    return meta


def all_tags(config: SyntheticConfig) -> list[str]:
    """Every leaf tag name of the taxonomy (the tag vocabulary to score at prediction)."""
    n1, n2, n3 = config.taxonomy
    return [f"t{a}_{b}_{c}" for a in range(n1) for b in range(n2) for c in range(n3)]
