"""Typed feature configuration shared by the data generator, the models and Transform.

A :class:`FeatureConfig` lists the user feature fields (the user tower's input), the tag
field (the tag tower's input) and the task labels. It round-trips through plain dicts
and YAML, and every validation error names the offending field and how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CATEGORICAL = "categorical"
MULTI_VALUED = "multi_valued"
NUMERIC = "numeric"
FIELD_KINDS = (CATEGORICAL, MULTI_VALUED, NUMERIC)
# tf.distribute strategies by name (mvke_tf.distribute makes them): the library, the CLI and the pipeline.
STRATEGIES = ("default", "mirrored", "multi_worker")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


def load_yaml(path: str | Path, what: str) -> Any:
    """The data in a YAML file; any problem is a one-line :class:`ConfigError` naming ``what`` and the file.

    ``what`` says which file it is to the user (``--config``, ``feature config`` ...). A syntax error
    gives the line and column (1-based, as editors count) and the parser's complaint, instead of a
    traceback. An empty file gives ``None``.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what}: file {path} does not exist; fix: check the path") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{what} {path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
            "fix: give a YAML text file"
        ) from None
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot read it ({e.strerror or e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(e.problem or e.context or "syntax error").split())
        context = f" ({' '.join(e.context.split())})" if e.context and e.problem else ""
        raise ConfigError(
            f"{what} {path}: not valid YAML{where}: {problem}{context}; fix: correct the YAML syntax there"
        ) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (a control character)
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character)
        raise ConfigError(
            f"{what} {path}: not valid YAML at line {line}, column {column}: control character U+{code:04X} "
            "is not allowed; fix: remove it"
        ) from None
    except yaml.YAMLError as e:
        problem = " ".join(str(e).split())
        raise ConfigError(f"{what} {path}: not valid YAML ({problem}); fix: correct the YAML there") from None


def _fits(value: Any, hint: Any) -> bool:
    """Whether a value read from YAML / JSON fits a config field's type hint (lists stand for tuples; an int
    for a float). Hints it does not know accept anything: the dataclass checks those itself."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(args) == len(value) and all(_fits(v, a) for v, a in zip(value, args))
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            inner = _describe(args[0])
            plural = {"an integer": "integers", "a number": "numbers", "a string": "strings"}.get(inner, inner)
            return f"a list of {plural}"
        return "a list"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(hint, str(hint))


def _example(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _example(next(a for a in args if a is not type(None)))
    if origin is tuple:
        return f"[{_example(args[0])}]" if args else "[]"
    return {int: "16", float: "0.5", str: "name", bool: "true"}.get(hint, "...")


class SerializableConfig:
    """Dict and YAML round trips for the frozen model-config dataclasses (one implementation for all).

    ``to_dict`` gives plain lists for tuples (JSON/YAML friendly); ``from_dict`` rejects unknown keys,
    naming them and the known ones; subclasses name themselves in errors with ``config_name``.
    """

    config_name = "config"

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        if not isinstance(d, Mapping):
            raise ConfigError(f"{cls.config_name}: expected a mapping of fields, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{cls.config_name}: unknown key(s) {unknown}; fix: use only {sorted(known)}")
        hints = typing.get_type_hints(cls)
        for name, value in d.items():
            if not _fits(value, hints.get(name, Any)):
                raise ConfigError(
                    f"{cls.config_name}: {name}={value!r} is not {_describe(hints[name])}; fix: give {name} "
                    f"as {_describe(hints[name])}, e.g. {name}: {_example(hints[name])}"
                )
        return cls(**dict(d))

    @classmethod
    def from_yaml(cls, path: str | Path) -> Any:
        """The config in a YAML file of its fields."""
        return cls.from_dict(load_yaml(path, cls.config_name) or {})


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One input field.

    Attributes:
      name: column name in the data (CSV header / tf.Example key).
      kind: ``categorical`` (one string id), ``multi_valued`` (a list of string ids,
        ``separator``-joined in CSV) or ``numeric`` (a float, bucketized by ``boundaries``).
      hash_buckets: number of hash buckets for string ids (categorical, multi_valued).
      boundaries: sorted bucket boundaries for numeric fields; a missing value (NaN)
        gets its own bucket.
      max_values: multi_valued only: ids kept per example (longer lists are truncated).
      separator: multi_valued only: the separator between ids in CSV.
      group: free-form documentation group (``basic``, ``behaviour``, ``statistics``, ``tag``).
      hierarchy_separator: for ids that are taxonomy paths (``t11_3_2``), the separator
        between levels; each id is then embedded as the mean of its prefixes' embeddings
        (``t11``, ``t11_3``, ``t11_3_2``), so rare leaves share strength with their
        ancestors. Empty (the default) embeds ids as they are.
    """

    name: str
    kind: str
    hash_buckets: int = 1000
    boundaries: tuple[float, ...] = ()
    max_values: int = 1
    separator: str = "|"
    group: str = ""
    hierarchy_separator: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "boundaries", tuple(float(b) for b in self.boundaries))
        where = f"field '{self.name}'"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("field name: must be a non-empty string; fix: give every field a 'name'")
        if self.kind not in FIELD_KINDS:
            raise ConfigError(
                f"{where}: kind {self.kind!r} is not one of {', '.join(FIELD_KINDS)}; fix: set 'kind' to one of them"
            )
        if self.kind in (CATEGORICAL, MULTI_VALUED) and (
            not isinstance(self.hash_buckets, int) or self.hash_buckets < 2
        ):
            raise ConfigError(
                f"{where}: hash_buckets={self.hash_buckets!r} must be an integer >= 2; "
                "fix: set 'hash_buckets' to roughly 2-10x the number of distinct ids"
            )
        if self.kind == NUMERIC:
            if not self.boundaries:
                raise ConfigError(
                    f"{where}: a numeric field needs 'boundaries' (sorted bucket edges); "
                    "fix: add e.g. boundaries: [0.1, 0.5, 1.0]"
                )
            if any(math.isnan(b) for b in self.boundaries) or any(
                lo >= hi for lo, hi in zip(self.boundaries, self.boundaries[1:])
            ):
                raise ConfigError(
                    f"{where}: boundaries {list(self.boundaries)} must be strictly increasing "
                    "numbers; fix: sort them and drop duplicates"
                )
        if self.kind == MULTI_VALUED and (not isinstance(self.max_values, int) or self.max_values < 1):
            raise ConfigError(
                f"{where}: max_values={self.max_values!r} must be an integer >= 1; "
                "fix: set it to the longest list worth keeping"
            )
        if self.kind == MULTI_VALUED and (not self.separator or self.separator in ',\n"'):
            raise ConfigError(
                f"{where}: separator {self.separator!r} cannot be empty, a comma, a quote or a "
                "newline (it would break CSV); fix: use '|'"
            )

        if self.hierarchy_separator and self.kind == NUMERIC:
            raise ConfigError(f"{where}: hierarchy_separator applies to string ids, not numeric fields")
        if self.hierarchy_separator and self.hierarchy_separator == self.separator:
            raise ConfigError(
                f"{where}: hierarchy_separator {self.hierarchy_separator!r} equals the list separator; "
                "fix: use different characters, e.g. '_' and '|'"
            )

    @property
    def vocab_size(self) -> int:
        """Rows of this field's embedding table."""
        if self.kind == NUMERIC:
            return len(self.boundaries) + 2  # one per interval plus the missing bucket
        return self.hash_buckets

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["boundaries"] = list(self.boundaries)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "field") -> FieldSpec:
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a mapping with 'name' and 'kind', got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        name = d.get("name", "?")
        if unknown:
            raise ConfigError(f"{where} '{name}': unknown key(s) {unknown}; fix: use only {sorted(known)}")
        for required in ("name", "kind"):
            if required not in d:
                raise ConfigError(f"{where} '{name}': missing '{required}'")
        return cls(**{k: (tuple(v) if k == "boundaries" else v) for k, v in d.items()})


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """The model's inputs and labels.

    Attributes:
      user_fields: the user tower's feature fields, F of them.
      tag_field: the tag tower's field: an ad's tag set (multi_valued) during training,
        a single tag at prediction time.
      labels: the task label columns (0/1), in task order; a model's tasks default to them.
      user_id: the column identifying a user (for grouped metrics such as GAUC); ``""`` for data without
        one (no grouped metrics).
    """

    user_fields: tuple[FieldSpec, ...]
    tag_field: FieldSpec
    labels: tuple[str, ...]
    user_id: str = "user_id"

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_fields", tuple(self.user_fields))
        object.__setattr__(self, "labels", tuple(self.labels))
        if not self.user_fields:
            raise ConfigError("user_fields: empty; fix: list at least one user feature field")
        if self.tag_field.kind not in (CATEGORICAL, MULTI_VALUED):
            raise ConfigError(
                f"tag_field '{self.tag_field.name}': kind must be categorical or multi_valued, "
                f"got {self.tag_field.kind!r}"
            )
        if not self.labels:
            raise ConfigError("labels: empty; fix: name at least one task label, e.g. [click]")
        seen: dict[str, str] = {}
        for where, name in (
            [(f"user_fields[{i}]", f.name) for i, f in enumerate(self.user_fields)]
            + [("tag_field", self.tag_field.name)]
            + [(f"labels[{i}]", n) for i, n in enumerate(self.labels)]
        ):
            if name in seen:
                raise ConfigError(
                    f"{where}: name '{name}' is already used by {seen[name]}; fix: give each "
                    "field and label a distinct column name"
                )
            seen[name] = where

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.user_fields) + (self.tag_field.name,)

    def field(self, name: str) -> FieldSpec:
        for f in (*self.user_fields, self.tag_field):
            if f.name == name:
                return f
        raise KeyError(f"no field named {name!r}; known: {', '.join(self.feature_names)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_fields": [f.to_dict() for f in self.user_fields],
            "tag_field": self.tag_field.to_dict(),
            "labels": list(self.labels),
            "user_id": self.user_id,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureConfig:
        if not isinstance(d, Mapping):
            raise ConfigError(f"feature config: expected a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - {"user_fields", "tag_field", "labels", "user_id"})
        if unknown:
            raise ConfigError(
                f"feature config: unknown key(s) {unknown}; fix: use user_fields, tag_field, labels, user_id"
            )
        if "user_fields" not in d or not isinstance(d["user_fields"], Sequence):
            raise ConfigError("user_fields: missing or not a list; fix: list the user feature fields")
        if "tag_field" not in d:
            raise ConfigError("tag_field: missing; fix: describe the ad's tag field")
        if "labels" not in d:
            raise ConfigError("labels: missing; fix: list the 0/1 task label columns in task order, e.g. [click]")
        return cls(
            user_fields=tuple(
                FieldSpec.from_dict(f, where=f"user_fields[{i}]") for i, f in enumerate(d["user_fields"])
            ),
            tag_field=FieldSpec.from_dict(d["tag_field"], where="tag_field"),
            labels=tuple(d["labels"]),
            user_id=d.get("user_id", "user_id"),
        )

    def to_yaml(self, path: str | Path) -> None:
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> FeatureConfig:
        return cls.from_dict(load_yaml(path, "feature config"))
