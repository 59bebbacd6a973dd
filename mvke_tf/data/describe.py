"""``mvke-tf data describe``: a feature config and a schema from a sample of a team's own table.

From the first rows of CSV, Parquet or TFRecord files (:mod:`mvke_tf.data.table`) each column gets a
:class:`ColumnProfile` (its type in the file, missing share, distinct values, list lengths, quantiles)
and, from that, a role and a kind:

* roles: the labels, the user id and the tag field are given by the user or guessed (labels: columns
  of 0/1 integers in every row; user id: a column called ``user_id``, ``uid``, ``userid`` or ``user``;
  tag field: a list-valued column, one called ``tags`` or ``tag`` first); every other column is a user field
  unless it is dropped;
* kinds, from the values: a list-valued column (a Parquet / TFRecord list, or strings joined by the
  separator) is ``multi_valued``; a string column ``categorical``; an integer column ``categorical``
  when its name says it is a code (``*_id``, ``*_code``, ``zip``, ...) or it has at most
  ``max_categorical_ints`` distinct values, else ``numeric``; a column with fractions ``numeric``;
* sizes: hash buckets 4x the counted distinct values (a power of two, at least 8); numeric boundaries
  the sample's deciles; ``max_values`` the longest list.

:func:`describe` returns the :class:`~mvke_tf.config.FeatureConfig`, a curated schema consistent with
it (every column of the data, labels 0/1 and required, fields required unless numeric, lists at least
one value) and the profiles; :func:`summary_table` prints them for the user to check, and
:func:`changes` compares two runs' profiles (the next day's data against the last).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, ConfigError, FeatureConfig, FieldSpec
from mvke_tf.data.table import Rows, is_number, split_values

MAX_CATEGORICAL_INTS = 64
"""An integer column with at most this many distinct values (in the sample) is categorical."""
BUCKETS_PER_VALUE = 4
MIN_BUCKETS = 8
MAX_BUCKETS = 1 << 22
MAX_LIST_VALUES = 64
USER_ID_NAMES = ("user_id", "userid", "uid", "user")
TAG_NAMES = ("tags", "tag", "tag_set", "labels_tags")
# Name tokens that make an integer column a code (categorical) whatever its cardinality.
CODE_TOKENS = frozenset({"id", "code", "zip", "zipcode", "postcode", "postal", "cat", "category", "type", "class"})
# A string column is multi-valued when at least this share of its values holds the separator.
LIST_SHARE = 0.01
DISTINCT_CAP = 1 << 20  # distinct values counted per column at most (memory bound)


@dataclasses.dataclass
class ColumnProfile:
    """What a sample says about one column (JSON-serializable, for ``profile.json``)."""

    name: str
    type: str  # in the file: "int", "float", "string", or "mixed"
    rows: int
    missing: int
    distinct: int
    is_list: bool = False
    max_len: int = 1
    mean_len: float = 1.0
    quantiles: list[float] = dataclasses.field(default_factory=list)  # deciles 10..90 of numbers
    rest_quantiles: list[float] = dataclasses.field(default_factory=list)  # deciles of the numbers != the mode
    positive_rate: float | None = None  # 0/1 columns: share of 1
    examples: list[str] = dataclasses.field(default_factory=list)
    role: str = ""  # label, user_id, tag, feature, ignored
    kind: str = ""  # categorical, multi_valued, numeric ("" for non-features)

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnProfile:
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


def _type_of(values: Sequence[Any]) -> str:
    kinds = set()
    for v in values:
        if isinstance(v, int):  # bool too
            kinds.add("int")
        elif isinstance(v, float):
            kinds.add("float")
        elif v is not None:
            kinds.add("string")
    if kinds <= {"int"}:
        return "int"
    if kinds <= {"int", "float"}:
        return "float"
    return "string" if kinds == {"string"} else "mixed"


def _quantiles(numbers: Sequence[float]) -> list[float]:
    if not numbers:
        return []
    ordered = sorted(numbers)
    n = len(ordered)
    return [float(ordered[min(n - 1, int(q * n / 10))]) for q in range(1, 10)]


def numeric_boundaries(profile: ColumnProfile) -> list[float]:
    """Bucket edges of a numeric column: its distinct deciles, and where most rows share one value (a
    zero-inflated amount, e.g. capital gains) also the deciles of the other values, so those get buckets too."""
    edges = set(profile.quantiles)
    edges.update(profile.rest_quantiles)
    return sorted(edges) or [0.0]


def profile_column(name: str, values: Sequence[Any], separator: str = "|") -> ColumnProfile:
    """One column's :class:`ColumnProfile` (``values``: one per row, ``None`` when missing)."""
    present = [v for v in values if v is not None and v != []]
    is_list = any(isinstance(v, list) for v in present)
    if not is_list:
        strings = [v for v in present if isinstance(v, str)]
        is_list = bool(strings) and sum(separator in s for s in strings) >= max(1, LIST_SHARE * len(strings))
    if is_list:
        lists = [split_values(v, separator) for v in present]
        items = [x for xs in lists for x in xs]
        lengths = [len(xs) for xs in lists] or [0]
    else:
        items, lengths = present, [1]
    distinct: set[Any] = set()
    for x in items:
        if len(distinct) >= DISTINCT_CAP:
            break
        distinct.add(str(x))
    kind = _type_of(items)
    numbers = [float(x) for x in items if is_number(x)] if kind in ("int", "float") else []
    rest: list[float] = []
    if numbers:
        counts: dict[float, int] = {}
        for x in numbers:
            counts[x] = counts.get(x, 0) + 1
        mode, count = max(counts.items(), key=lambda kv: kv[1])
        if count > len(numbers) / 10:  # one value covers more than a decile: deciles of the others too
            rest = _quantiles([x for x in numbers if x != mode])
    positive = None
    if not is_list and kind == "int" and present and set(present) <= {0, 1} and len(present) == len(values):
        positive = sum(present) / len(present)
    return ColumnProfile(
        name=name,
        type=kind,
        rows=len(values),
        missing=len(values) - len(present),
        distinct=len(distinct),
        is_list=is_list,
        max_len=max(lengths),
        mean_len=round(sum(lengths) / len(lengths), 3),
        quantiles=_quantiles(numbers),
        rest_quantiles=rest,
        positive_rate=positive,
        examples=sorted(distinct, key=lambda s: (len(s), s))[:3] if distinct else [],
    )


def profile_rows(samples: Sequence[Rows], separator: str = "|") -> dict[str, ColumnProfile]:
    """Profiles of every column of the samples (rows of several files taken together), in column order."""
    columns: dict[str, list[Any]] = {}
    for rows in samples:
        total = sum(len(v) for v in columns.values()) and len(next(iter(columns.values())))
        for c in rows.columns:
            columns.setdefault(c, [None] * total)
        for c in columns:
            columns[c].extend(rows.values.get(c, [None] * rows.num_rows))
    return {c: profile_column(c, v, separator) for c, v in columns.items()}


def _tokens(name: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower())) - {""}


def guess_labels(profiles: Mapping[str, ColumnProfile]) -> list[str]:
    """Columns of 0/1 integers in every row (a binary feature is one too: the user checks the guess)."""
    return [p.name for p in profiles.values() if p.positive_rate is not None and not _tokens(p.name) & CODE_TOKENS]


def guess_user_id(profiles: Mapping[str, ColumnProfile]) -> str:
    for name in profiles:
        if name.lower() in USER_ID_NAMES:
            return name
    return ""


def guess_tag_field(profiles: Mapping[str, ColumnProfile], exclude: Sequence[str] = ()) -> str:
    candidates = [p for p in profiles.values() if p.name not in exclude]
    for p in candidates:
        if p.name.lower() in TAG_NAMES:
            return p.name
    lists = [p.name for p in candidates if p.is_list]
    return lists[0] if lists else ""


def _buckets(distinct: int) -> int:
    return min(MAX_BUCKETS, max(MIN_BUCKETS, 1 << math.ceil(math.log2(max(1, BUCKETS_PER_VALUE * distinct)))))


def field_kind(profile: ColumnProfile, max_categorical_ints: int = MAX_CATEGORICAL_INTS) -> str:
    """The kind the values say (see the module docstring)."""
    if profile.is_list:
        return MULTI_VALUED
    if profile.type == "int":
        code = bool(_tokens(profile.name) & CODE_TOKENS)
        return CATEGORICAL if code or profile.distinct <= max_categorical_ints else NUMERIC
    if profile.type == "float":
        return NUMERIC
    return CATEGORICAL


def field_spec(profile: ColumnProfile, kind: str, separator: str = "|", group: str = "") -> FieldSpec:
    """The :class:`FieldSpec` of a profiled column read as ``kind``."""
    if kind == NUMERIC:
        if profile.type not in ("int", "float"):
            raise ConfigError(
                f"column {profile.name}: its values are {profile.type}s (e.g. {profile.examples}), not numbers; "
                "fix: leave it categorical"
            )
        boundaries = numeric_boundaries(profile)
        return FieldSpec(profile.name, NUMERIC, boundaries=tuple(boundaries), group=group)
    if kind == MULTI_VALUED:
        return FieldSpec(
            profile.name,
            MULTI_VALUED,
            hash_buckets=_buckets(profile.distinct),
            max_values=max(1, min(MAX_LIST_VALUES, profile.max_len)),
            separator=separator,
            group=group,
        )
    return FieldSpec(profile.name, CATEGORICAL, hash_buckets=_buckets(profile.distinct), group=group)


@dataclasses.dataclass
class Description:
    """What :func:`describe` found: the feature config, the profiles with roles and kinds, and the guesses."""

    features: FeatureConfig
    profiles: dict[str, ColumnProfile]
    guessed: dict[str, Any]  # role -> what was guessed, for roles the user did not give


def describe(
    profiles: Mapping[str, ColumnProfile],
    *,
    labels: Sequence[str] = (),
    user_id: str | None = None,
    tag_field: str = "",
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    drop: Sequence[str] = (),
    separator: str = "|",
    max_categorical_ints: int = MAX_CATEGORICAL_INTS,
) -> Description:
    """The feature config of profiled columns; roles given win over guesses.

    Args:
      profiles: from :func:`profile_rows`.
      labels: the task label columns, in task order; empty: guessed (:func:`guess_labels`).
      user_id: the user id column ("" for none); None: guessed.
      tag_field: the tag column; empty: guessed.
      categorical, numeric: columns whose kind is forced.
      drop: columns that are no model input (timestamps, free text, leaking columns).
      separator: the list separator of multi-valued string columns.
      max_categorical_ints: see :func:`field_kind`.
    """
    profiles = {n: dataclasses.replace(p) for n, p in profiles.items()}
    named = [
        *labels,
        *([user_id] if user_id else []),
        *([tag_field] if tag_field else []),
        *categorical,
        *numeric,
        *drop,
    ]
    unknown = [n for n in dict.fromkeys(named) if n not in profiles]
    if unknown:
        raise ConfigError(f"column(s) {unknown} are not in the data (it has {list(profiles)}); fix: check the names")
    both = sorted(set(categorical) & set(numeric))
    if both:
        raise ConfigError(f"column(s) {both} are given as both categorical and numeric; fix: choose one kind")
    guessed: dict[str, Any] = {}
    if not labels:
        labels = guess_labels(profiles)
        guessed["labels"] = list(labels)
        if not labels:
            raise ConfigError("no label column found (0/1 integers in every row); fix: name them with --labels")
    for name in labels:
        if profiles[name].positive_rate is None:
            raise ConfigError(
                f"label column {name}: not 0/1 in every row (e.g. {profiles[name].examples}, "
                f"{profiles[name].missing} missing); fix: give a 0/1 label in every row"
            )
    if user_id is None:
        user_id = guess_user_id(profiles)
        guessed["user_id"] = user_id
    taken = {*labels, *([user_id] if user_id else []), *drop}
    if not tag_field:
        tag_field = guess_tag_field(profiles, exclude=sorted(taken))
        guessed["tag_field"] = tag_field
        if not tag_field:
            raise ConfigError(
                "no tag column found (a list-valued column, or one called tags); fix: name it with --tag-field"
            )
    fields: dict[str, FieldSpec] = {}
    for name, p in profiles.items():
        if name in labels:
            p.role = "label"
        elif name == user_id:
            p.role = "user_id"
        elif name in drop:
            p.role = "ignored"
        else:
            p.role = "tag" if name == tag_field else "feature"
            kind = CATEGORICAL if name in categorical else NUMERIC if name in numeric else None
            kind = kind or field_kind(p, max_categorical_ints)
            if p.role == "tag" and kind == NUMERIC:
                kind = CATEGORICAL  # the tag tower embeds ids
            p.kind = kind
            fields[name] = field_spec(p, kind, separator, group="tag" if p.role == "tag" else "")
    user_fields = tuple(f for n, f in fields.items() if n != tag_field)
    features = FeatureConfig(
        user_fields=user_fields, tag_field=fields[tag_field], labels=tuple(labels), user_id=user_id or ""
    )
    return Description(features, profiles, guessed)


_SCHEMA_TYPES = {"int": "INT", "float": "FLOAT", "string": "BYTES", "mixed": "BYTES"}


def schema_for(description: Description, file_format: str = "csv"):
    """The curated schema (``tensorflow_metadata`` ``Schema``) consistent with the description: every column
    of the data with its type in the files, then :func:`pipelines`' curation rules (labels 0/1 and required,
    fields required unless numeric, lists at least one value). ``file_format``: a CSV list cell is one
    joined string, a Parquet / TFRecord one a list."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    from mvke_tf.data.schema import curate_schema

    inferred = schema_pb2.Schema()
    for p in description.profiles.values():
        feature = inferred.feature.add(name=p.name)
        kind = p.type
        if p.is_list and file_format == "csv":
            kind = "string"
        feature.type = getattr(schema_pb2, _SCHEMA_TYPES[kind])
    return curate_schema(inferred, description.features, closed_vocabularies=())


def summary_table(description: Description) -> list[str]:
    """The lines of the table ``mvke-tf data describe`` prints: one row per column."""
    header = ("column", "in file", "role", "kind", "size", "distinct", "missing", "examples")
    rows = []
    for p in description.profiles.values():
        size = ""
        if p.kind:
            spec = description.features.field(p.name)
            if p.kind == NUMERIC:
                size = f"{len(spec.boundaries)} boundaries"
            else:
                size = f"{spec.hash_buckets} buckets" + (f", {spec.max_values} max" if p.kind == MULTI_VALUED else "")
        if p.role == "label":
            size = f"{p.positive_rate:.1%} ones"
        file_type = p.type + ("[]" if p.is_list else "")
        rows.append(
            (p.name, file_type, p.role, p.kind, size, str(p.distinct), f"{p.missing_share:.1%}", ", ".join(p.examples))
        )
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in (header, *rows)]


def changes(before: Mapping[str, ColumnProfile], after: Mapping[str, ColumnProfile]) -> list[str]:
    """What changed between two samples' profiles, one line each (empty: nothing worth a look)."""
    out = []
    for name in before:
        if name not in after:
            out.append(f"column {name}: gone")
    for name, a in after.items():
        b = before.get(name)
        if b is None:
            out.append(f"column {name}: new ({a.type}, {a.distinct} distinct)")
            continue
        if a.type != b.type or a.is_list != b.is_list:
            out.append(f"column {name}: type {b.type}{'[]' * b.is_list} -> {a.type}{'[]' * a.is_list}")
        if b.kind and a.kind and a.kind != b.kind:
            out.append(f"column {name}: kind {b.kind} -> {a.kind}")
        if abs(a.missing_share - b.missing_share) > 0.05:
            out.append(f"column {name}: missing {b.missing_share:.1%} -> {a.missing_share:.1%}")
        if b.distinct and (a.distinct > 2 * b.distinct or 2 * a.distinct < b.distinct):
            out.append(f"column {name}: distinct values {b.distinct} -> {a.distinct} (hash buckets may need resizing)")
        rates = (b.positive_rate, a.positive_rate)
        if None not in rates and abs(rates[1] - rates[0]) > max(0.02, 0.5 * rates[0]):
            out.append(f"column {name}: share of ones {b.positive_rate:.1%} -> {a.positive_rate:.1%}")
        if a.kind == NUMERIC and a.quantiles and len(b.quantiles) == len(a.quantiles):
            spread = (b.quantiles[-1] - b.quantiles[0]) or abs(b.quantiles[4]) or 1.0
            if abs(a.quantiles[4] - b.quantiles[4]) > 0.25 * spread:
                out.append(f"column {name}: median {b.quantiles[4]:g} -> {a.quantiles[4]:g}")
    return out


__all__ = [
    "ColumnProfile",
    "Description",
    "changes",
    "describe",
    "field_kind",
    "field_spec",
    "profile_column",
    "profile_rows",
    "schema_for",
    "summary_table",
]
