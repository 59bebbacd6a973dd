"""The fixed cost of a first ``train_and_evaluate`` in a process: stock Keras tracing vs the library's.

    python -m benchmarks.first_fit                  # 12k rows, mvke_mt and two_tower, 3 repeats

Two settings, each in a fresh process (the cost is paid once per process and model), alternated so
that both see the same machine load:

* ``stock``: Keras as it comes: AutoGraph transpiles ``tf_keras``' own code on every trace, and the
  optimizer's slots and the loss trackers are created inside the first training step, so the train
  function is traced twice;
* ``library``: what ``mvke_tf`` does (``_env.skip_autograph_for_tf_keras``,
  ``models.compiling.build_training_state``).

The weights are the same either way: the benchmark checks that the eval AUCs agree exactly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SETTINGS = ("stock", "library")
SIZES = dict(embedding_dim=16, dnn_units=(64, 32), top_units=(32, 16), tag_units=(32, 16))


def data_config(rows: int) -> Any:
    from mvke_tf.data import synthetic

    # Notebook 02's world, at the size its test runs.
    return synthetic.SyntheticConfig(
        num_rows=rows, num_users=2_000, num_ads=600, taxonomy=(6, 3, 8), target_ctr=0.08, seed=0
    )


def child(setting: str, model_type: str, data_dir: str) -> dict[str, Any]:
    """One first ``train_and_evaluate`` under ``setting``, timed (runs in its own process)."""
    start = time.perf_counter()
    import mvke_tf.layers  # noqa: F401  (applies the library's AutoGraph rule)
    import mvke_tf.models.family as family

    if setting == "stock":
        from tensorflow.python.autograph.core import config

        config.CONVERSION_RULES = tuple(
            r for r in config.CONVERSION_RULES if not (isinstance(r, config.DoNotConvert) and r.matches("tf_keras"))
        )
        family.build_training_state = lambda model, batches: False
    from mvke_tf.models import UserTagConfig
    from mvke_tf.train import TrainConfig, train_and_evaluate

    imported = time.perf_counter()
    report = train_and_evaluate(
        Path(data_dir),
        UserTagConfig(model_type=model_type, **SIZES),
        TrainConfig(epochs=1, batch_size=512, learning_rate=2e-3, seed=0),
        verbose=0,
    )
    return {
        "setting": setting,
        "model": model_type,
        "import_s": imported - start,
        "train_and_evaluate_s": time.perf_counter() - imported,
        "fit_s": report["train_seconds"],
        "train_traces": int(report["model"].train_function.experimental_get_tracing_count()),
        "auc": {t: report["eval"][t]["auc"] for t in ("click", "conversion")},
    }


def run_child(setting: str, model_type: str, data_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.first_fit", "--child", setting, model_type, str(data_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(runs: list[dict[str, Any]], models: list[str]) -> str:
    lines = [
        "| model | setting | first train_and_evaluate (s) | of it, fit (s) | train-step traces "
        "| click AUC | conversion AUC |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in models:
        for s in SETTINGS:
            rs = [r for r in runs if r["model"] == m and r["setting"] == s]
            total = statistics.median(r["train_and_evaluate_s"] for r in rs)
            fit = statistics.median(r["fit_s"] for r in rs)
            traces = "/".join(sorted({str(r["train_traces"]) for r in rs}))
            auc = rs[0]["auc"]
            lines.append(
                f"| {m} | {s} | {total:.1f} | {fit:.1f} | {traces} | {auc['click']:.5f} | {auc['conversion']:.5f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=12_000, help="impressions generated (notebook 02's test size)")
    p.add_argument("--models", nargs="+", default=["mvke_mt", "two_tower"])
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per (model, setting)")
    p.add_argument("--work-dir", default="runs/first_fit")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    p.add_argument("--child", nargs=3, metavar=("SETTING", "MODEL", "DATA"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    if args.repeats < 1:
        p.error("--repeats: use 1 or more")
    import mvke_tf  # noqa: F401
    from mvke_tf.data import synthetic
    from mvke_tf.models import USER_TAG_MODEL_NAMES

    bad = [m for m in args.models if m not in USER_TAG_MODEL_NAMES]
    if bad:
        p.error(f"--models: {bad} unknown; use some of {list(USER_TAG_MODEL_NAMES)}")
    data_dir = Path(args.work_dir) / f"data-{args.rows}"
    if not (data_dir / "metadata.json").exists():
        synthetic.generate(data_config(args.rows), data_dir)
    runs = []
    for i in range(args.repeats):
        for m in args.models:
            # Alternate which setting goes first, so that neither always meets a warmer page cache.
            for s in SETTINGS if i % 2 == 0 else SETTINGS[::-1]:
                runs.append(run_child(s, m, data_dir))
                r = runs[-1]
                print(
                    f"{m:<10} {s:<8} {r['train_and_evaluate_s']:6.1f} s (fit {r['fit_s']:5.1f} s, "
                    f"{r['train_traces']} traces)",
                    file=sys.stderr,
                    flush=True,
                )
    same = all(
        r["auc"] == next(q["auc"] for q in runs if q["model"] == r["model"] and q["setting"] == "stock") for r in runs
    )
    text = table(runs, args.models)
    ratios = []
    for m in args.models:
        med = {
            s: statistics.median(r["train_and_evaluate_s"] for r in runs if r["model"] == m and r["setting"] == s)
            for s in SETTINGS
        }
        ratios.append(f"{m} {med['stock'] / med['library']:.2f}x")
    note = (
        f"Stock / library, median first `train_and_evaluate`: {', '.join(ratios)}. "
        f"Eval AUCs identical across settings and repeats: {'yes' if same else 'NO'}."
    )
    print(text + "\n\n" + note)
    if args.no_write:
        return 0 if same else 1
    from benchmarks.report import machine, section, write_section

    cmd = "python -m benchmarks.first_fit " + " ".join(sys.argv[1:] if argv is None else argv)
    facts = {
        "Machine": machine(),
        "Data": f"notebook 02's synthetic world at {args.rows:,} rows (its test size), one epoch, batch 512",
        "Runs": f"{args.repeats} fresh processes per model and setting, alternated; medians",
    }
    write_section(
        "first_fit",
        section("First fit in a process: Keras' tracing, stock vs the library's", cmd, facts, text, note),
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
