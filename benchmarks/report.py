"""Shared pieces of the benchmarks: the machine line, sections of docs/benchmarks.md, common flags, cached data."""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Figures measured by the scripts in `benchmarks/`, each section with the exact command that
produced it. They are rewritten by the scripts (`make bench`); machines here are noisy, so
ratios are taken side by side within one run.
"""


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{cores} cores, {cpu or platform.processor()}, Python {platform.python_version()}"


def write_section(name: str, body: str) -> None:
    """Replaces (or appends) the section between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    text = DOC.read_text() if DOC.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def section(title: str, command: str, facts: dict[str, str], table: str, note: str = "") -> str:
    """A section's markdown: the title, the exact command, one line per fact, an optional note, the table."""
    lines = [f"## {title}", "", f"Command: `{command.strip()}`  "]
    lines += [f"{name}: {value}  " for name, value in facts.items()]
    lines[-1] = lines[-1].rstrip()
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n\n" + table.rstrip() + "\n"


def add_synthetic_training_flags(p: argparse.ArgumentParser, work_dir: str) -> None:
    """The flags of a line-up on the synthetic data: its size, seeds, model scale, training, where to work."""
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--users", type=int, default=40_000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--scale", type=float, default=0.25, help="hidden layer scale vs the paper's Table 5")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--work-dir", default=work_dir)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")


def cached_synthetic_data(data: Path, rows: int, users: int) -> tuple[Any, dict]:
    """The synthetic data of a line-up in ``data``: generated once per generator config, reused after.

    Returns ``(SyntheticConfig, metadata.json's content)``."""
    from mvke_tf.data import synthetic

    cfg = synthetic.SyntheticConfig(num_rows=rows, num_users=users, seed=0)
    meta_path = data / "metadata.json"
    if not (meta_path.exists() and json.loads(meta_path.read_text())["generator"] == cfg.to_dict()):
        print(f"generating {rows:,} rows ...", file=sys.stderr)
        synthetic.generate(cfg, data)
    return cfg, json.loads(meta_path.read_text())
