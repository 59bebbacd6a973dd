"""Synthetic multi-domain, multi-task data: the synthetic world seen through 3 domains.

The rows come from the same latent world as :mod:`mvke_tf.data.synthetic` (users, ads,
taxonomy, facets), sampled with their own random streams, so the default generator and
its files are untouched. Each impression is additionally shown in one of ``D`` domains
(scenarios), drawn with very unequal shares (default 7% / 89% / 4%, like the M3oE
paper's Ali-CCP split), and the domain shifts the labels:

* a per-domain offset on the click and the conversion logit (domains differ in rate);
* a per-domain preference term: a table over (a user attribute value, the ad's level-1
  category) added to the logit, ``rho`` of it shared by all domains and the rest
  domain-specific (click reads ``age_bucket``, conversion reads ``income_level``).

So part of what a model learns transfers between domains and part does not: the
situation multi-domain models (STAR, M3oE) are built for. The true probabilities are
kept, so the oracle AUC per (domain, task) is known.

Everything is held in memory as numpy column dicts (the data sets are small) and fed
to models through :func:`make_dataset`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, ConfigError, FieldSpec
from mvke_tf.data import synthetic

DOMAIN_FIELD = "domain"
TASKS = synthetic.LABELS  # ("click", "conversion")
SPLITS = ("train", "val", "test")
# Rows generated per chunk; fixed so a seed always gives the same data.
_CHUNK_ROWS = 20_000


@dataclasses.dataclass(frozen=True)
class MultiDomainDataConfig:
    """Sizes and knobs of the multi-domain data set.

    Attributes:
      num_rows: impressions (all splits).
      num_users: distinct users.
      num_ads: distinct ads.
      taxonomy: the tag taxonomy (see :class:`~mvke_tf.data.synthetic.SyntheticConfig`).
      domain_shares: share of impressions per domain; D = its length.
      click_offsets: per-domain shift of the click logit.
      conversion_offsets: per-domain shift of the conversion-given-click logit.
      preference_scale: scale of the per-domain preference tables.
      shared_preference: share ``rho`` of the preference variance common to all domains.
      target_ctr: mean click probability before the domain shifts.
      target_cvr: mean conversion probability per click before the domain shifts.
      split_shares: (train, val, test) shares; rows are i.i.d., so split by position.
      seed: random seed; the same config gives identical arrays.
    """

    num_rows: int = 100_000
    num_users: int = 8_000
    num_ads: int = 2_000
    taxonomy: tuple[int, ...] = (12, 4, 10)
    domain_shares: tuple[float, ...] = (0.07, 0.89, 0.04)
    click_offsets: tuple[float, ...] = (0.4, 0.0, -0.4)
    conversion_offsets: tuple[float, ...] = (-0.3, 0.0, 0.5)
    preference_scale: float = 1.0
    shared_preference: float = 0.5
    target_ctr: float = 0.12
    target_cvr: float = 0.25
    split_shares: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("taxonomy", "domain_shares", "click_offsets", "conversion_offsets", "split_shares"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

        def check(ok: bool, field: str, fix: str) -> None:
            if not ok:
                raise ConfigError(f"multi-domain data: {field}={getattr(self, field)!r} is invalid; fix: {fix}")

        check(self.num_rows >= 10, "num_rows", "use at least 10 rows")
        check(
            len(self.domain_shares) >= 1 and all(s > 0 for s in self.domain_shares),
            "domain_shares",
            "give one positive share per domain, e.g. (0.07, 0.89, 0.04)",
        )
        check(abs(sum(self.domain_shares) - 1.0) < 1e-6, "domain_shares", "make the shares sum to 1")
        d = len(self.domain_shares)
        check(len(self.click_offsets) == d, "click_offsets", f"give {d} offsets, one per domain")
        check(len(self.conversion_offsets) == d, "conversion_offsets", f"give {d} offsets, one per domain")
        check(self.preference_scale >= 0, "preference_scale", "use a scale >= 0")
        check(0 <= self.shared_preference <= 1, "shared_preference", "use a share in [0, 1]")
        check(
            len(self.split_shares) == 3
            and all(s > 0 for s in self.split_shares)
            and abs(sum(self.split_shares) - 1.0) < 1e-6,
            "split_shares",
            "give three positive (train, val, test) shares summing to 1",
        )

    @property
    def num_domains(self) -> int:
        return len(self.domain_shares)

    def synthetic_config(self) -> synthetic.SyntheticConfig:
        """The underlying world's config (users, ads, taxonomy, base rates)."""
        return synthetic.SyntheticConfig(
            num_rows=self.num_rows,
            num_users=self.num_users,
            num_ads=self.num_ads,
            taxonomy=self.taxonomy,
            target_ctr=self.target_ctr,
            target_cvr=self.target_cvr,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def fields(max_tags: int = 3) -> tuple[FieldSpec, ...]:
    """The model inputs: the generator's 26 user fields plus the ad's tag field (27 fields).

    The ``domain`` column is not a field: models read it as the domain indicator.
    """
    fc = synthetic.feature_config(max_tags=max_tags)
    return (*fc.user_fields, fc.tag_field)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _domain_tables(rng: np.random.Generator, cfg: MultiDomainDataConfig, rows: int, cols: int) -> np.ndarray:
    """``[D, rows, cols]`` preference tables: a common part plus a domain-specific part."""
    common = rng.normal(size=(rows, cols))
    own = rng.normal(size=(cfg.num_domains, rows, cols))
    rho = cfg.shared_preference
    return cfg.preference_scale * (np.sqrt(rho) * common[None] + np.sqrt(1.0 - rho) * own)


def generate(config: MultiDomainDataConfig) -> dict[str, Any]:
    """Generates the data set in memory.

    Returns:
      ``{"train": cols, "val": cols, "test": cols, "oracle_auc": {...}, "config": {...}}``
      where ``cols`` maps every column of :func:`mvke_tf.data.synthetic.columns` plus
      ``domain`` (int64, ``[N]``) to a numpy array of length N (strings as ``str``
      arrays, multi-valued fields ``|``-joined, missing statistics NaN), and
      ``oracle_auc[split][domain][task]`` is the AUC of the true probabilities.
    """
    from mvke_tf.metrics import auc_or_nan

    c = config
    world = synthetic.SyntheticWorld(c.synthetic_config())
    # Own streams (tag 7), never the base generator's, so its rows stay as they are.
    table_rng = np.random.default_rng([c.seed, 7, 0])
    n_age = synthetic.BASIC_FIELDS["age_bucket"]
    n_income = synthetic.BASIC_FIELDS["income_level"]
    click_table = _domain_tables(table_rng, c, n_age, world.num_l1)
    conv_table = _domain_tables(table_rng, c, n_income, world.num_l1)
    click_off = np.asarray(c.click_offsets)
    conv_off = np.asarray(c.conversion_offsets)

    chunks: list[dict[str, Any]] = []
    for index, start in enumerate(range(0, c.num_rows, _CHUNK_ROWS)):
        n = min(_CHUNK_ROWS, c.num_rows - start)
        rng = np.random.default_rng([c.seed, 7, 1, index])
        users, ads = world.sample_pairs(n, rng)
        domain = rng.choice(c.num_domains, size=n, p=np.asarray(c.domain_shares))
        click_logit, conv_logit = world._logits(users, ads)
        l1 = world.ad_l1[ads]
        click_logit = (
            click_logit
            + world.click_intercept
            + click_off[domain]
            + click_table[domain, world.basic["age_bucket"][users], l1]
        )
        conv_logit = (
            conv_logit
            + world.conv_intercept
            + conv_off[domain]
            + conv_table[domain, world.basic["income_level"][users], l1]
        )
        p_click = _sigmoid(click_logit)
        p_conv_given_click = _sigmoid(conv_logit)
        click = rng.uniform(size=n) < p_click
        conversion = click & (rng.uniform(size=n) < p_conv_given_click)
        cols: dict[str, Any] = {
            "user_id": np.array([f"u{u}" for u in users]),
            "ad_id": np.array([f"a{a}" for a in ads]),
            "day": np.ones(n, dtype=np.int64),
            "tag_l1": np.array([f"c{v}" for v in l1]),
        }
        cols.update({k: np.asarray(v) for k, v in world.user_columns(users, rng).items()})
        cols[synthetic.TAG_FIELD] = np.asarray(world.ad_tag_string[ads], dtype=str)
        cols["click"] = click.astype(np.int64)
        cols["conversion"] = conversion.astype(np.int64)
        cols["p_click"] = p_click
        cols["p_conversion"] = p_click * p_conv_given_click
        cols[DOMAIN_FIELD] = domain.astype(np.int64)
        chunks.append(cols)
    data = {k: np.concatenate([ch[k] for ch in chunks]) for k in chunks[0]}

    n_train = int(round(c.split_shares[0] * c.num_rows))
    n_val = int(round(c.split_shares[1] * c.num_rows))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, c.num_rows)}
    out: dict[str, Any] = {s: {k: v[lo:hi] for k, v in data.items()} for s, (lo, hi) in bounds.items()}
    oracle: dict[str, dict[int, dict[str, float]]] = {}
    for s in SPLITS:
        cols = out[s]
        oracle[s] = {}
        for d in range(c.num_domains):
            m = cols[DOMAIN_FIELD] == d
            oracle[s][d] = {}
            for t, p in zip(TASKS, synthetic.PROB_COLUMNS):
                y = cols[t][m]
                oracle[s][d][t] = auc_or_nan(y, cols[p][m])
    out["oracle_auc"] = oracle
    out["config"] = c.to_dict()
    return out


FILE_SPLITS = {"train": "train", "val": "val", "test": "eval"}
"""Split of :func:`generate` -> directory of :func:`write_files` (``eval`` as in the user-tagging data)."""


def write_files(
    config: MultiDomainDataConfig,
    out_dir: str | Path,
    formats: tuple[str, ...] = ("csv",),
    shard_rows: int = 500_000,
) -> dict[str, Any]:
    """Writes the data set as files, the layout of :func:`mvke_tf.data.synthetic.generate` plus a
    ``domain`` column (int64) and a ``val`` split.

    Layout: ``out_dir/{train,val,eval}/part-NNNNN.{csv,tfrecord.gz}`` (``eval`` holds the test rows),
    ``features.yaml`` (the fields of :func:`fields`) and ``metadata.json`` (the generator config, the
    columns, rows per split and domain, and the oracle AUC per split, domain and task). ``val`` is
    the held-out part that M3oE's bi-level schedule reads for its fusion weights.

    Returns:
      The metadata dict also written to ``metadata.json``.
    """
    import json

    bad = set(formats) - {"csv", "tfrecord"}
    if bad or not formats:
        raise ConfigError(f"formats: {sorted(bad) or 'empty'} not supported; fix: use csv and/or tfrecord")
    data = generate(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, Any] = {}
    for split, directory in FILE_SPLITS.items():
        for old in out.glob(f"{directory}/part-*"):
            old.unlink()
        cols = data[split]
        writer = synthetic._Writer(out, directory, tuple(formats), shard_rows, int_columns=(DOMAIN_FIELD,))
        try:
            writer.write(cols, np.arange(len(cols[DOMAIN_FIELD])))
        finally:
            writer.close()
        domain_rows = np.bincount(cols[DOMAIN_FIELD], minlength=config.num_domains)
        splits[directory] = {
            "rows": int(len(cols[DOMAIN_FIELD])),
            "domain_rows": [int(n) for n in domain_rows],
            **{t: int(cols[t].sum()) for t in TASKS},
            "files": [str(Path(f).relative_to(out)) for f in writer.files],
        }
    meta = {
        "generator": {"multi_domain": config.to_dict()},
        "columns": synthetic.columns() + [DOMAIN_FIELD],
        "domain_field": DOMAIN_FIELD,
        "domains": config.num_domains,
        "splits": splits,
        "oracle_auc": {FILE_SPLITS[s]: {str(d): v for d, v in per.items()} for s, per in data["oracle_auc"].items()},
    }
    synthetic.feature_config().to_yaml(out / "features.yaml")
    (out / "metadata.json").write_text(json.dumps(meta, indent=2))
    return meta


def to_features(
    cols: dict[str, Any], specs: tuple[FieldSpec, ...] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Column dict -> (features, labels) numpy dicts a model reads.

    Features: categorical ``[N]`` str, multi-valued ``[N, max_values]`` str padded with
    ``""``, numeric ``[N]`` float32 (NaN = missing), and ``domain`` ``[N]`` int32.
    Labels: ``{task: [N] float32}``.
    """
    specs = specs or fields()
    feats: dict[str, np.ndarray] = {}
    for s in specs:
        v = cols[s.name]
        if s.kind == NUMERIC:
            feats[s.name] = np.asarray(v, dtype=np.float32)
        elif s.kind == CATEGORICAL:
            feats[s.name] = np.asarray(v, dtype=str)
        elif s.kind == MULTI_VALUED:
            arr = np.full((len(v), s.max_values), "", dtype=object)
            for i, joined in enumerate(v):
                parts = joined.split(s.separator)[: s.max_values] if joined else []
                arr[i, : len(parts)] = parts
            feats[s.name] = arr.astype(str)
    feats[DOMAIN_FIELD] = np.asarray(cols[DOMAIN_FIELD], dtype=np.int32)
    labels = {t: np.asarray(cols[t], dtype=np.float32) for t in TASKS}
    return feats, labels


def make_dataset(
    features: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    batch_size: int = 512,
    shuffle: bool = True,
    seed: int = 0,
    repeat: bool = False,
):
    """A ``tf.data.Dataset`` of ``(features, labels)`` batches from :func:`to_features` output."""
    from mvke_tf.data.arrays import arrays_dataset

    return arrays_dataset(features, labels, batch_size, shuffle, seed, num_epochs=None if repeat else 1)


__all__ = [
    "DOMAIN_FIELD",
    "FILE_SPLITS",
    "TASKS",
    "MultiDomainDataConfig",
    "fields",
    "generate",
    "make_dataset",
    "to_features",
    "write_files",
]
