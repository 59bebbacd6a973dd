"""UCI Census-Income (KDD) for the MMoE paper's multi-task benchmark (Ma et al., KDD 2018).

The files (``census-income.data[.gz]``, ``census-income.test[.gz]``) have no header, one record
per line, 42 ``", "``-separated values in the order of ``census-income.names``; the last value
is the income class, ``- 50000.`` or ``50000+.``. Every value carries a leading space after the
separator (some also a trailing one), so values are stripped before any comparison: comparing
the raw ``" Never married"`` with ``"Never married"`` silently gives an all-zero label.

Two task groups, as in the paper (section 6.2):

* group 1: ``income`` (> 50K) and ``marital`` (marital status is "Never married");
* group 2: ``education`` (at least a college degree: Bachelors, Masters, Doctorate or
  professional school) and ``marital``.

The three label columns (education, marital status, income) are never model inputs, in
either group, nor is ``instance_weight`` (the census sampling weight: the .names file says it
must not be used by classifiers). The other 38 columns are inputs:

* categorical columns (the .names "nominal" ones, including the coded industry / occupation
  recodes, ``year`` and the 0/1/2 codes) become string fields; ``?`` (not asked) is a value of
  its own. Every split sees the same encoding: strings are hashed by the model, or, with
  ``encoding="ids"``, mapped through ONE vocabulary built on all rows (not per split, which
  would shift ids between train and test);
* continuous columns become float32 dense inputs, standardised with the mean and standard
  deviation of the TRAIN split only (no test statistics leak into the inputs).

Rows are shuffled with a fixed seed (:data:`SPLIT_SEED` by default) and cut 70/15/15 into
train / val / test.
"""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from mvke_tf.config import CATEGORICAL, FieldSpec

# The 42 columns in census-income.names order (short names as in common MMoE code).
COLUMNS: tuple[str, ...] = (
    "age",
    "class_worker",
    "det_ind_code",
    "det_occ_code",
    "education",
    "wage_per_hour",
    "hs_college",
    "marital_stat",
    "major_ind_code",
    "major_occ_code",
    "race",
    "hisp_origin",
    "sex",
    "union_member",
    "unemp_reason",
    "full_or_part_emp",
    "capital_gains",
    "capital_losses",
    "stock_dividends",
    "tax_filer_stat",
    "region_prev_res",
    "state_prev_res",
    "det_hh_fam_stat",
    "det_hh_summ",
    "instance_weight",  # column 25: a sampling weight, never an input
    "mig_chg_msa",
    "mig_chg_reg",
    "mig_move_reg",
    "mig_same",
    "mig_prev_sunbelt",
    "num_emp",
    "fam_under_18",
    "country_father",
    "country_mother",
    "country_self",
    "citizenship",
    "own_or_self",
    "vet_question",
    "vet_benefits",
    "weeks_worked",
    "year",
    "income_50k",
)
NUM_COLUMNS = len(COLUMNS)
# "continuous" in census-income.names; everything else is nominal (coded numbers included).
CONTINUOUS: tuple[str, ...] = (
    "age",
    "wage_per_hour",
    "capital_gains",
    "capital_losses",
    "stock_dividends",
    "instance_weight",
    "num_emp",
    "weeks_worked",
)
LABEL_COLUMNS: tuple[str, ...] = ("education", "marital_stat", "income_50k")
NOT_INPUTS: tuple[str, ...] = (*LABEL_COLUMNS, "instance_weight")
DENSE_FIELDS: tuple[str, ...] = tuple(c for c in CONTINUOUS if c not in NOT_INPUTS)
CATEGORICAL_FIELDS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in CONTINUOUS and c not in NOT_INPUTS)

INCOME_CLASSES = {"- 50000": 0.0, "50000+": 1.0}
NEVER_MARRIED = "Never married"
# The exact education values (stripped) counted as "at least a college degree".
COLLEGE_DEGREES: frozenset[str] = frozenset(
    {
        "Bachelors degree(BA AB BS)",
        "Masters degree(MA MS MEng MEd MSW MBA)",
        "Doctorate degree(PhD EdD)",
        "Prof school degree (MD DDS DVM LLB JD)",
    }
)
TASK_GROUPS: dict[int, tuple[str, str]] = {1: ("income", "marital"), 2: ("education", "marital")}
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
SPLIT_SEED = 2018  # the MMoE paper's year; any fixed value makes the split reproducible
# hash_buckets = this x distinct values, so that few values share a bucket in "string" mode.
HASH_BUCKETS_PER_VALUE = 4


class CensusFormatError(ValueError):
    """A census file does not have the documented format; the message names the file, line and fix."""


def _open_lines(path: Path) -> Iterable[str]:
    # gzip by magic number, not by suffix: a renamed file still reads.
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="latin-1", newline=None) as fh:
        yield from fh


def read_census(paths: str | Path | Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Reads census-income records into one column dict.

    Args:
      paths: one file or several (rows are concatenated in order); ``.gz`` or plain text.

    Returns:
      ``{column: array}`` for all 42 :data:`COLUMNS`: continuous columns as float64, the income
      column as float32 0/1 (``income_50k``), every other column as stripped strings (object).

    Raises:
      CensusFormatError: a row without 42 values, a non-numeric continuous value or an unknown
        income class, naming the file, the line and the fix; or no rows at all.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows: list[list[str]] = []
    origins: list[tuple[Path, int]] = []  # (file, line) of each row, for error messages
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(
                f"census file {path} does not exist; fix: pass census-income.test(.gz) or .data(.gz)"
            )
        for lineno, line in enumerate(_open_lines(path), start=1):
            if not line.strip():
                continue  # blank lines (e.g. a final newline) carry no record
            # The .names file says commas inside values were replaced by spaces, so "," splits safely.
            values = [v.strip() for v in line.split(",")]
            if len(values) != NUM_COLUMNS:
                raise CensusFormatError(
                    f"{path}:{lineno}: found {len(values)} comma-separated values, expected {NUM_COLUMNS} "
                    f"(the columns of census-income.names); fix: pass an unmodified census-income "
                    f"(KDD) file (no header, no extra or missing fields)"
                )
            values[-1] = values[-1].rstrip(".")  # "50000+." -> "50000+"
            if values[-1] not in INCOME_CLASSES:
                raise CensusFormatError(
                    f"{path}:{lineno}: income class {values[-1]!r} in column {NUM_COLUMNS} is not one of "
                    f"{sorted(INCOME_CLASSES)}; fix: the last column must be '- 50000.' or '50000+.'"
                )
            rows.append(values)
            origins.append((path, lineno))
    if not rows:
        raise CensusFormatError(f"no records in {[str(p) for p in paths]}; fix: pass a non-empty census file")
    table = np.array(rows, dtype=object)
    columns: dict[str, np.ndarray] = {}
    for i, name in enumerate(COLUMNS):
        col = table[:, i]
        if name == "income_50k":
            columns[name] = np.array([INCOME_CLASSES[v] for v in col], dtype=np.float32)
        elif name in CONTINUOUS:
            try:
                columns[name] = col.astype(np.float64)
            except ValueError:
                bad = next(j for j, v in enumerate(col) if not _is_number(v))
                path, lineno = origins[bad]
                raise CensusFormatError(
                    f"{path}:{lineno}: column {i + 1} ({name}) is continuous but holds {col[bad]!r}; "
                    "fix: pass an unmodified census-income (KDD) file"
                ) from None
        else:
            columns[name] = col.astype(str).astype(object)
    return columns


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def task_labels(columns: Mapping[str, np.ndarray], group: int) -> dict[str, np.ndarray]:
    """The two float32 0/1 label arrays of task group 1 or 2 (see the module docstring)."""
    if group not in TASK_GROUPS:
        raise ValueError(f"group={group!r}: the MMoE census task groups are 1 and 2; fix: pass group=1 or 2")
    all_labels = {
        "income": np.asarray(columns["income_50k"], dtype=np.float32),
        # Values are stripped by read_census, so this compares without the file's leading space.
        "marital": (np.asarray(columns["marital_stat"]) == NEVER_MARRIED).astype(np.float32),
        "education": np.isin(np.asarray(columns["education"]), list(COLLEGE_DEGREES)).astype(np.float32),
    }
    return {t: all_labels[t] for t in TASK_GROUPS[group]}


def split_indices(
    num_rows: int, seed: int = SPLIT_SEED, fractions: Sequence[float] = SPLIT_FRACTIONS
) -> dict[str, np.ndarray]:
    """Row indices of train / val / test: one seeded permutation cut at the cumulative fractions."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions={list(fractions)} must be three positive shares summing to 1")
    order = np.random.default_rng(seed).permutation(num_rows)
    cut1 = int(round(fractions[0] * num_rows))
    cut2 = cut1 + int(round(fractions[1] * num_rows))
    return {"train": np.sort(order[:cut1]), "val": np.sort(order[cut1:cut2]), "test": np.sort(order[cut2:])}


@dataclasses.dataclass(frozen=True)
class CensusData:
    """Census-income split into train / val / test, ready for :class:`~mvke_tf.models.ranking.RankingModel`.

    Attributes:
      tasks: the two task (label) names of the group, e.g. ``("income", "marital")``.
      fields: categorical FieldSpecs (embedded by the model).
      dense_fields: the standardised continuous inputs.
      features: ``{split: {input name: array}}``: categorical inputs as strings (object arrays)
        or, with ``encoding="ids"``, int64 vocabulary ids; dense inputs as float32.
      labels: ``{split: {task: float32 0/1 array}}``.
      vocabularies: ``{categorical field: sorted distinct values over all rows}``.
      numeric_stats: ``{dense field: (mean, std)}`` of the train split (used to standardise).
      split_seed: the seed of the row permutation.
      group: the task group (1 or 2).
      encoding: ``"string"`` or ``"ids"``.
    """

    tasks: tuple[str, ...]
    fields: tuple[FieldSpec, ...]
    dense_fields: tuple[str, ...]
    features: dict[str, dict[str, np.ndarray]]
    labels: dict[str, dict[str, np.ndarray]]
    vocabularies: dict[str, tuple[str, ...]]
    numeric_stats: dict[str, tuple[float, float]]
    split_seed: int
    group: int
    encoding: str

    def num_rows(self, split: str) -> int:
        """Rows in ``split``."""
        return len(next(iter(self.labels[self._check(split)].values())))

    def _check(self, split: str) -> str:
        if split not in self.features:
            raise KeyError(f"split {split!r} is not one of {list(self.features)}")
        return split

    def to_dataset(self, split: str, batch_size: int = 256, shuffle: bool = False, seed: int = 0):
        """A ``tf.data.Dataset`` of ``(features, labels)`` batches of ``split``.

        Args:
          split: ``train``, ``val`` or ``test``.
          batch_size: rows per batch (the last batch may be smaller).
          shuffle: reshuffle the rows every epoch (with ``seed``), e.g. for training.
          seed: shuffle seed.
        """
        from mvke_tf.data.arrays import arrays_dataset

        split = self._check(split)
        return arrays_dataset(self.features[split], self.labels[split], batch_size, shuffle, seed)


def load_census(
    paths: str | Path | Sequence[str | Path],
    group: int = 1,
    seed: int = SPLIT_SEED,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    encoding: str = "string",
) -> CensusData:
    """Reads census files, builds the task-group labels, splits and encodes the inputs.

    Args:
      paths: census-income file(s) (``.gz`` or plain); their rows are pooled before splitting.
      group: MMoE task group, 1 (income, marital) or 2 (education, marital).
      seed: seed of the train / val / test permutation.
      fractions: train / val / test shares.
      encoding: categorical inputs as ``"string"`` (the model hashes them into ``hash_buckets``
        = 4x the distinct values; a few values may share a bucket) or ``"ids"`` (int64 ids of
        one vocabulary over all rows, ``hash_buckets`` = vocabulary size + 1: no collisions).

    Returns:
      A :class:`CensusData`.
    """
    if encoding not in ("string", "ids"):
        raise ValueError(f"encoding={encoding!r} must be 'string' or 'ids'")
    columns = read_census(paths)
    labels = task_labels(columns, group)
    n = len(columns["age"])
    index = split_indices(n, seed, fractions)

    # One vocabulary per field over ALL rows: ids mean the same value in every split.
    vocabularies = {name: tuple(sorted(set(columns[name]))) for name in CATEGORICAL_FIELDS}
    fields = tuple(
        FieldSpec(
            name,
            CATEGORICAL,
            hash_buckets=(
                len(vocabularies[name]) + 1
                if encoding == "ids"
                else max(2, HASH_BUCKETS_PER_VALUE * len(vocabularies[name]))
            ),
            group="census",
        )
        for name in CATEGORICAL_FIELDS
    )
    encoded: dict[str, np.ndarray] = {}
    for name in CATEGORICAL_FIELDS:
        if encoding == "ids":
            lookup = {v: i for i, v in enumerate(vocabularies[name])}
            encoded[name] = np.array([lookup[v] for v in columns[name]], dtype=np.int64)
        else:
            encoded[name] = columns[name]

    # Standardise with train statistics only; a constant column keeps std 1 (no division by 0).
    train = index["train"]
    numeric_stats: dict[str, tuple[float, float]] = {}
    for name in DENSE_FIELDS:
        mean = float(np.mean(columns[name][train]))
        std = float(np.std(columns[name][train]))
        numeric_stats[name] = (mean, std if std > 0 else 1.0)
        encoded[name] = ((columns[name] - mean) / numeric_stats[name][1]).astype(np.float32)

    return CensusData(
        tasks=TASK_GROUPS[group],
        fields=fields,
        dense_fields=DENSE_FIELDS,
        features={s: {k: v[idx] for k, v in encoded.items()} for s, idx in index.items()},
        labels={s: {t: y[idx] for t, y in labels.items()} for s, idx in index.items()},
        vocabularies=vocabularies,
        numeric_stats=numeric_stats,
        split_seed=seed,
        group=group,
        encoding=encoding,
    )


OWN_DATA_LABELS = {"income": "income", "marital": "never_married"}
"""Group 1's labels under the names :func:`write_own_data_layout` gives their columns."""


def write_own_data_layout(
    paths: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    max_rows: int | None = None,
    eval_fraction: float = 0.2,
    seed: int = SPLIT_SEED,
) -> dict[str, int]:
    """The census rows as a team's own table in the README's layout: ``train/part-00000.csv`` and
    ``eval/part-00000.csv`` with a header, the 38 input columns as the file holds them (the coded columns,
    such as ``det_ind_code``, as integers) and task group 1's labels as 0/1 columns ``income`` and
    ``never_married``. ``mvke-tf data describe`` and ``pipeline run`` take it from there.

    Args:
      paths: census-income file(s), as :func:`read_census` takes them.
      max_rows: keep this many rows (after the seeded shuffle); None keeps all.
      eval_fraction: the share of rows in ``eval/``.

    Returns:
      ``{"train": rows, "eval": rows}``.
    """
    import csv

    columns = read_census(paths)
    labels = task_labels(columns, 1)
    order = np.random.default_rng(seed).permutation(len(columns["age"]))[:max_rows]
    cut = len(order) - int(round(eval_fraction * len(order)))
    inputs = [c for c in COLUMNS if c not in NOT_INPUTS]
    header = [*inputs, *OWN_DATA_LABELS.values()]

    def cell(name: str, i: int) -> str:
        v = columns[name][i]
        return f"{v:g}" if name in CONTINUOUS else str(v)  # 73.0 -> "73", as a table export writes it

    counts = {}
    for split, rows in (("train", order[:cut]), ("eval", order[cut:])):
        target = Path(out_dir) / split / "part-00000.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for i in rows:
                task_values = [int(labels[t][i]) for t in OWN_DATA_LABELS]
                writer.writerow([cell(c, i) for c in inputs] + task_values)
        counts[split] = len(rows)
    return counts
