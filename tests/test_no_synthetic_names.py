"""Nothing synthetic-specific outside the generators: the library, the pipeline and serving name none of the
synthetic data's columns in their code, so a team's own table needs no code edit.

The walk reads every string literal of the code (not comments or docstrings' prose: an example in a docstring
is documentation) outside the two synthetic generators, the pipeline's settings files and the tests, and
looks for the synthetic generator's field, label and extra column names. Names that real data sets share
(census and MovieLens columns such as ``gender``, ``occupation``, ``education``; the tag tower's input ``tags``)
are not synthetic-specific. The benchmarks reproduce the papers on the synthetic data on purpose and are not
walked.
"""

from __future__ import annotations

import ast
from pathlib import Path

from mvke_tf.data import census, movielens, synthetic

ROOT = Path(__file__).resolve().parents[1]
WALKED = ("mvke_tf", "pipelines", "serving")
GENERATORS = ("mvke_tf/data/synthetic.py", "mvke_tf/data/multidomain.py")

# What is left, each with why: the model config classes' default tasks are the papers' (every entry point given
# a team's data -- train_and_evaluate with a model name, mvke-tf train, pipeline run -- takes them from
# features.yaml's labels through config_for_data; only a config built by hand keeps them); the pair-ranking
# models read an optional item id column by the name it has in the app-store setting; the MovieLens view calls
# its rating >= 4 label click.
ALLOWED = {
    ("mvke_tf/models/config.py", "click"),
    ("mvke_tf/models/config.py", "conversion"),
    ("mvke_tf/models/ranking.py", "click"),
    ("mvke_tf/models/ranking.py", "conversion"),
    ("mvke_tf/models/ranking.py", "ad_id"),
    ("mvke_tf/models/multidomain.py", "click"),
    ("mvke_tf/models/multidomain.py", "conversion"),
    ("mvke_tf/data/movielens.py", "click"),
}


def synthetic_names() -> set[str]:
    fc = synthetic.feature_config()
    names = {f.name for f in fc.user_fields} | {fc.tag_field.name, *fc.labels, *synthetic.PROB_COLUMNS}
    names |= {"ad_id", "day", "tag_l1", "tag_l2"}  # the generator's other columns
    shared = {*census.COLUMNS, *movielens.USER_COLUMNS, "tags", "user_id", "age"}
    return names - shared


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def find_synthetic_names(root: Path) -> list[str]:
    """``file:line: 'name'`` for each string literal under ``root``'s walked folders naming a synthetic column."""
    names = synthetic_names()
    found = []
    for top in WALKED:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in GENERATORS:
                continue
            tree = ast.parse(path.read_text())
            docs = _docstrings(tree)
            strings = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            literals = [n for n in strings if id(n) not in docs]
            found += [
                f"{rel}:{n.lineno}: {n.value!r}" for n in literals if n.value in names and (rel, n.value) not in ALLOWED
            ]
    return found


def test_no_synthetic_column_name_in_library_pipeline_or_serving_code():
    assert {"age_bucket", "tag_l1", "p_click", "click", "conversion", "avg_ctr_7d"} <= synthetic_names()
    found = find_synthetic_names(ROOT)
    assert not found, "synthetic-specific names in the code:\n" + "\n".join(found)


def test_the_walk_finds_a_planted_name(tmp_path):
    """The walk can fail: a literal naming a synthetic column in a walked module is reported (a docstring not)."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "slices.py").write_text('"""age_bucket"""\nSLICES = ["gender", "age_bucket"]\n')
    assert find_synthetic_names(tmp_path) == ["pipelines/slices.py:2: 'age_bucket'"]
