"""Made-up own data in the README's layout: ``train/part-00000.<ext>`` and ``eval/part-00000.<ext>`` with
integer-coded categoricals (``member``, ``age``, ``occupation``), a numeric zip code, a text field, a
``|``-joined tag set and two 0/1 labels that are not called click or conversion (``watched``, ``liked``).

The labels have known structure: a user watches a title when its genre is one their age band likes, and
likes it when they watched it and their occupation is one of the first five; so a model that learns
from the fields beats chance by a wide margin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENRES = ("drama", "comedy", "action", "horror", "family", "docs")
MEMBERS = 2_000
STRUCTURE_SEED = 1234
COLUMNS = ("member", "sex", "age", "occupation", "zip", "genres", "watched", "liked")


def made_up_table(rows: int, seed: int = 0) -> dict[str, list]:
    """``rows`` made-up rows, column -> values (``zip`` is an integer with many values)."""
    rng = np.random.default_rng(seed)
    members = rng.integers(1, MEMBERS + 1, size=rows)
    # The population and its tastes are fixed (the same in every split and seed): per member attributes,
    # drawn once per member id so a member's rows agree, and the genres each age band likes.
    member_rng = np.random.default_rng(STRUCTURE_SEED)
    n = MEMBERS + 1
    sex = member_rng.choice(["F", "M"], size=n)
    age = member_rng.choice([18, 25, 35, 45, 56], size=n)
    occupation = member_rng.integers(0, 21, size=n)
    zips = member_rng.integers(10_000, 99_999, size=n)
    tables = {a: member_rng.permutation(len(GENRES))[:2] for a in (18, 25, 35, 45, 56)}
    genres, watched, liked = [], [], []
    for m in members:
        k = rng.integers(1, 3)
        picked = rng.choice(len(GENRES), size=k, replace=False)
        genres.append("|".join(GENRES[g] for g in picked))
        fit = bool(set(picked) & set(tables[int(age[m])].tolist()))
        w = rng.random() < (0.7 if fit else 0.15)
        watched.append(int(w))
        liked.append(int(w and rng.random() < (0.8 if occupation[m] < 5 else 0.2)))
    return {
        "member": [int(m) for m in members],
        "sex": [str(sex[m]) for m in members],
        "age": [int(age[m]) for m in members],
        "occupation": [int(occupation[m]) for m in members],
        "zip": [int(zips[m]) for m in members],
        "genres": genres,
        "watched": watched,
        "liked": liked,
    }


def write_csv(path: Path, table: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(table)
    cell = lambda v: "" if v is None else str(v)  # noqa: E731 - a missing value is an empty cell
    lines = [",".join(names)] + [",".join(cell(table[c][i]) for c in names) for i in range(len(table[names[0]]))]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, table: dict[str, list]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), path)
    return path


def write_own_data(root: Path, train_rows: int, eval_rows: int, fmt: str = "csv", seed: int = 0) -> Path:
    """``root/train/part-00000.<fmt>`` and ``root/eval/part-00000.<fmt>``; returns ``root``."""
    write = write_csv if fmt == "csv" else write_parquet
    write(root / "train" / f"part-00000.{fmt}", made_up_table(train_rows, seed))
    write(root / "eval" / f"part-00000.{fmt}", made_up_table(eval_rows, seed + 100))
    return root
