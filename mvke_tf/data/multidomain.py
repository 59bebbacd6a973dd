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

Two knobs set how related the domains and the tasks are, in the manner of the MMoE
paper's synthetic data (Ma et al., KDD 2018): with ``domain_correlation`` and/or
``task_correlation`` set, each (domain, task) gets a weight vector ``w[d, t]`` whose
cosine to another domain's vector of the same task is ``domain_correlation``, to the
same domain's vector of another task ``task_correlation`` (and their product when both
differ), and ``w[d, t] . z(user, ad)`` is added to that (domain, task)'s logit, where
``z`` is a fixed random bilinear feature of three user attributes and the ad's level-1
category (see :func:`relatedness_weights`, :func:`relatedness_features`).
``world_scale`` scales the underlying world's own (domain- and mostly task-shared)
logits, so ``world_scale=0, preference_scale=0`` leaves the knob term as the only
signal. The defaults (no knob, scale 1) give exactly the data of before.

Everything is held in memory as numpy column dicts (the data sets are small) and fed
to models through :func:`make_dataset`.

It stays one module, one generator (its config, the domain-shifted truth, the rows, their files
and arrays) just over 500 lines: its parts share the module's constants and random streams, and
name the synthetic columns, which ``tests/test_no_synthetic_names.py`` allows only in the
generator files.
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
      domain_correlation: cosine in [0, 1] between two domains' relatedness weight vectors
        of the same task; None (with ``task_correlation`` None too) adds no relatedness term.
        If only one knob is set, the other counts as 1 (fully shared along that axis).
      task_correlation: cosine in [0, 1] between two tasks' relatedness weight vectors in
        the same domain.
      relatedness_scale: norm ``c`` of every weight vector ``w[d, t]``; the term
        ``w[d, t] . z`` then has standard deviation about ``c``.
      world_scale: factor on the underlying world's own click / conversion logits (1 = as
        before; 0 removes them). With a knob set or a scale != 1 the intercepts are
        re-fitted so the mean rates stay at ``target_ctr`` / ``target_cvr``.
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
    domain_correlation: float | None = None
    task_correlation: float | None = None
    relatedness_scale: float = 1.0
    world_scale: float = 1.0

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
        for knob in ("domain_correlation", "task_correlation"):
            value = getattr(self, knob)
            check(
                value is None or (isinstance(value, (int, float)) and 0.0 <= value <= 1.0),
                knob,
                "use a cosine in [0, 1] (1 = identical weight vectors, 0 = orthogonal) or None for no knob",
            )
        check(self.relatedness_scale >= 0, "relatedness_scale", "use a scale >= 0")
        check(self.world_scale >= 0, "world_scale", "use a factor >= 0 (1 = the world's logits as they are)")

    @property
    def has_relatedness(self) -> bool:
        """Whether the knob term is added (either correlation set)."""
        return self.domain_correlation is not None or self.task_correlation is not None

    @property
    def refits_intercepts(self) -> bool:
        """Whether the intercepts are re-fitted (anything that changes the logits' spread)."""
        return self.has_relatedness or self.world_scale != 1.0

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


RELATEDNESS_USER_FIELDS = ("gender", "age_bucket", "income_level")
"""User attributes read by the relatedness feature ``z`` (with the ad's level-1 category)."""
RELATEDNESS_AD_FIELD = "tag_l1"


def relatedness_fields(max_tags: int = 3) -> tuple[FieldSpec, ...]:
    """The fields that carry the knob term: its user attributes, the ad's tags and ``tag_l1``.

    ``tag_l1`` (the ad's level-1 category, a column of every split) is not one of
    :func:`fields`; it is added here as a categorical field, so a model can read the
    category the relatedness term is built on directly.
    """
    user = tuple(s for s in fields(max_tags) if s.name in RELATEDNESS_USER_FIELDS)
    tag = next(s for s in fields(max_tags) if s.name == synthetic.TAG_FIELD)
    return (*user, tag, FieldSpec(RELATEDNESS_AD_FIELD, CATEGORICAL, hash_buckets=64, group="tag"))


def relatedness_dim(num_domains: int, num_tasks: int) -> int:
    """Size of the space the weight vectors live in: one direction per shared part."""
    return 1 + num_domains + num_tasks + num_domains * num_tasks


def relatedness_weights(
    num_domains: int,
    num_tasks: int,
    domain_correlation: float,
    task_correlation: float,
    scale: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """``[D, T, m]`` weight vectors with set cosines, ``m = relatedness_dim(D, T)``.

    ``w[d, t] = c * (a u_0 + b u_dom[d] + e u_task[t] + f u_own[d, t])`` over orthonormal
    random directions, with ``a^2 = rd * rt``, ``b^2 = rt (1 - rd)``, ``e^2 = rd (1 - rt)``,
    ``f^2 = (1 - rd)(1 - rt)`` (rd, rt: the domain / task correlation). The squares sum to
    1, so ``|w| = c``; two domains of one task share ``u_0`` and ``u_task``:
    cosine ``a^2 + e^2 = rd``; two tasks of one domain share ``u_0`` and ``u_dom``: cosine
    ``a^2 + b^2 = rt``; when both differ only ``u_0`` is shared: cosine ``rd * rt``. (It is
    the Kronecker product of a domain and a task vector with those cosines, written as a sum.)
    """
    d, t = num_domains, num_tasks
    m = relatedness_dim(d, t)
    basis, _ = np.linalg.qr(rng.normal(size=(m, m)))  # columns: orthonormal directions
    u0, u_dom = basis[:, 0], basis[:, 1 : 1 + d].T
    u_task, u_own = basis[:, 1 + d : 1 + d + t].T, basis[:, 1 + d + t :].T.reshape(d, t, m)
    rd, rt = float(domain_correlation), float(task_correlation)
    a, b = np.sqrt(rd * rt), np.sqrt(rt * (1.0 - rd))
    e, f = np.sqrt(rd * (1.0 - rt)), np.sqrt((1.0 - rd) * (1.0 - rt))
    w = a * u0[None, None] + b * u_dom[:, None] + e * u_task[None, :] + f * u_own
    return scale * w


class RelatednessFeatures:
    """``z(user, ad) = g(user) * h(ad)`` (elementwise), ``[N, m]``.

    ``g`` sums fixed standard-normal vectors of the user's ``RELATEDNESS_USER_FIELDS``
    values (divided by sqrt(#fields), so each component has variance 1); ``h`` is a fixed
    standard-normal vector per level-1 category. Each component of ``z`` then has
    variance about 1 and ``w . z`` a standard deviation about ``|w|``.
    """

    def __init__(self, world: synthetic.SyntheticWorld, dim: int, rng: np.random.Generator) -> None:
        self.world = world
        self.user_tables = {
            name: rng.normal(size=(synthetic.BASIC_FIELDS[name], dim)) for name in RELATEDNESS_USER_FIELDS
        }
        self.category_table = rng.normal(size=(world.num_l1, dim))

    def __call__(self, users: np.ndarray, ads: np.ndarray) -> np.ndarray:
        g = sum(table[self.world.basic[name][users]] for name, table in self.user_tables.items())
        g = g / np.sqrt(len(self.user_tables))
        return g * self.category_table[self.world.ad_l1[ads]]


def _domain_tables(rng: np.random.Generator, cfg: MultiDomainDataConfig, rows: int, cols: int) -> np.ndarray:
    """``[D, rows, cols]`` preference tables: a common part plus a domain-specific part."""
    common = rng.normal(size=(rows, cols))
    own = rng.normal(size=(cfg.num_domains, rows, cols))
    rho = cfg.shared_preference
    return cfg.preference_scale * (np.sqrt(rho) * common[None] + np.sqrt(1.0 - rho) * own)


class DomainLogits:
    """The true click and conversion-given-click logits of (user, ad, domain) triples.

    Built once per config from its own random streams (tag 7 of the seed), never the base
    generator's, so the underlying world's rows stay as they are.
    """

    def __init__(self, config: MultiDomainDataConfig) -> None:
        c = self.config = config
        self.world = world = synthetic.SyntheticWorld(c.synthetic_config())
        table_rng = np.random.default_rng([c.seed, 7, 0])
        n_age = synthetic.BASIC_FIELDS["age_bucket"]
        n_income = synthetic.BASIC_FIELDS["income_level"]
        self.click_table = _domain_tables(table_rng, c, n_age, world.num_l1)
        self.conv_table = _domain_tables(table_rng, c, n_income, world.num_l1)
        self.click_off = np.asarray(c.click_offsets)
        self.conv_off = np.asarray(c.conversion_offsets)
        self.weights: np.ndarray | None = None  # [D, T, m]
        self.features: RelatednessFeatures | None = None
        if c.has_relatedness:
            rng = np.random.default_rng([c.seed, 7, 3])
            rd = 1.0 if c.domain_correlation is None else c.domain_correlation
            rt = 1.0 if c.task_correlation is None else c.task_correlation
            self.weights = relatedness_weights(c.num_domains, len(TASKS), rd, rt, c.relatedness_scale, rng)
            self.features = RelatednessFeatures(world, self.weights.shape[-1], rng)
        self.click_intercept, self.conv_intercept = world.click_intercept, world.conv_intercept
        if c.refits_intercepts:
            self._refit_intercepts(np.random.default_rng([c.seed, 7, 2]))

    def relatedness(self, users: np.ndarray, ads: np.ndarray, domain: np.ndarray) -> np.ndarray:
        """The knob term ``w[domain, t] . z(user, ad)``, ``[N, T]`` (zeros without a knob)."""
        if self.weights is None or self.features is None:
            return np.zeros((len(users), len(TASKS)))
        z = self.features(users, ads)  # [N, m]
        return np.einsum("nm,ntm->nt", z, self.weights[domain])

    def _world(self, users: np.ndarray, ads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        click, conv = self.world._logits(users, ads)
        s = self.config.world_scale
        return (click, conv) if s == 1.0 else (s * click, s * conv)

    def _tables(self, users: np.ndarray, ads: np.ndarray, domain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        world, l1 = self.world, self.world.ad_l1[ads]
        return (
            self.click_table[domain, world.basic["age_bucket"][users], l1],
            self.conv_table[domain, world.basic["income_level"][users], l1],
        )

    def _centred(self, users: np.ndarray, ads: np.ndarray, domain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits before intercepts and domain offsets (for fitting the intercepts)."""
        (click, conv), (click_t, conv_t) = self._world(users, ads), self._tables(users, ads, domain)
        term = self.relatedness(users, ads, domain)
        return click + click_t + term[:, 0], conv + conv_t + term[:, 1]

    def _refit_intercepts(self, rng: np.random.Generator) -> None:
        """Intercepts giving ``target_ctr`` / ``target_cvr`` on a sample (bisection), as the world does."""
        c = self.config
        users, ads = self.world.sample_pairs(min(200_000, 20 * c.num_rows + 1000), rng)
        domain = rng.choice(c.num_domains, size=len(users), p=np.asarray(c.domain_shares))
        click, conv = self._centred(users, ads, domain)

        self.click_intercept = synthetic.solve_intercept(click, np.ones_like(click), c.target_ctr)
        self.conv_intercept = synthetic.solve_intercept(conv, _sigmoid(click + self.click_intercept), c.target_cvr)

    def __call__(self, users: np.ndarray, ads: np.ndarray, domain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(click logit [N], conversion-given-click logit [N])``."""
        (click, conv), (click_t, conv_t) = self._world(users, ads), self._tables(users, ads, domain)
        # Summed in the order of the first version of this generator, so the default data
        # stays bit-identical; the knob term comes last and only when set.
        click = click + self.click_intercept + self.click_off[domain] + click_t
        conv = conv + self.conv_intercept + self.conv_off[domain] + conv_t
        if self.weights is not None:
            term = self.relatedness(users, ads, domain)
            click, conv = click + term[:, 0], conv + term[:, 1]
        return click, conv


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
    truth = DomainLogits(c)
    world = truth.world

    chunks: list[dict[str, Any]] = []
    for index, start in enumerate(range(0, c.num_rows, _CHUNK_ROWS)):
        n = min(_CHUNK_ROWS, c.num_rows - start)
        rng = np.random.default_rng([c.seed, 7, 1, index])
        users, ads = world.sample_pairs(n, rng)
        domain = rng.choice(c.num_domains, size=n, p=np.asarray(c.domain_shares))
        l1 = world.ad_l1[ads]
        click_logit, conv_logit = truth(users, ads, domain)
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
    "RELATEDNESS_USER_FIELDS",
    "DomainLogits",
    "RelatednessFeatures",
    "TASKS",
    "MultiDomainDataConfig",
    "fields",
    "generate",
    "make_dataset",
    "relatedness_dim",
    "relatedness_fields",
    "relatedness_weights",
    "to_features",
    "write_files",
]
