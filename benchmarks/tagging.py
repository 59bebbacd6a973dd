"""Batch tagging speed: naive pair scoring vs the exact matrix-product decomposition (1,786 tags).

    python -m benchmarks.tagging --users 20000 --naive-users 4

All in one run, on one SavedModel of the main job's size (MVKE-mt, hidden layers x0.25; untrained
weights: speed does not depend on them) and the paper's taxonomy size (1,786 tags):

* naive: every user x tag pair as a ``tf.Example`` through ``serving_default`` (batched), on a few
  users, extrapolated per user;
* decomposition: ``user_tower`` per batch of users, ``tag_tower`` once, per task one
  ``[B, S*d] x [S*d, T]`` product and top-K (:class:`mvke_tf.tagging.TopKTagger`), users in memory;
  also the whole job end to end (read TFRecord, write Parquet), ``--by user`` (top-K tags per user)
  and ``--by tag`` (audience lists: per task and tag the top-N users, a running top-N merged per batch);
* the combine step's GFLOP/s (``2*B*S*d*T`` per task) vs plain numpy and TensorFlow matmuls of the
  same shapes on this machine.

Prints a table and writes it to docs/benchmarks.md (``--no-write``: print only). Take the figures
on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from benchmarks.report import machine, section, write_section
from mvke_tf import tagging
from mvke_tf.data import synthetic
from mvke_tf.export import export_saved_model
from mvke_tf.models import UserTagConfig, build_model

PAPER_TAGS = 1786


def _best(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _pairs(examples: list[bytes], tags: list[str], tag_field: str) -> list[bytes]:
    import tensorflow as tf

    out = []
    for ex in examples:
        base = tf.train.Example.FromString(ex)
        for tag in tags:
            e = tf.train.Example()
            e.CopyFrom(base)
            e.features.feature[tag_field].bytes_list.value[:] = [tag.encode()]
            out.append(e.SerializeToString())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=20_000, help="users for the decomposition")
    p.add_argument("--naive-users", type=int, default=4, help="users for naive pair scoring (x tags pairs each)")
    p.add_argument("--tags", type=int, default=PAPER_TAGS, help="tag vocabulary size (default: the paper's 1,786)")
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--top-n", type=int, default=100, help="users per tag and task for the --by tag job")
    p.add_argument("--batch-size", type=int, default=1024, help="users per batch (decomposition)")
    p.add_argument("--naive-batch", type=int, default=4096, help="pairs per serving_default call")
    p.add_argument("--scale", type=float, default=0.25, help="hidden layer scale vs the paper's Table 5")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (best is kept)")
    p.add_argument("--work-dir", default="runs/bench_tagging")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args(argv)
    import tensorflow as tf

    work = Path(args.work_dir)
    taxonomy = synthetic.SyntheticConfig().taxonomy
    cfg = synthetic.SyntheticConfig(
        num_rows=max(2 * args.users, 100), num_users=args.users, num_ads=2_000, taxonomy=taxonomy, seed=0
    )
    if args.tags > cfg.num_leaves:
        p.error(f"--tags: at most {cfg.num_leaves} (the default taxonomy's leaves)")
    tags = synthetic.all_tags(cfg)[: args.tags]

    print(f"generating {cfg.num_rows:,} rows for {args.users:,} users ...", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    synthetic.generate(cfg, work / "data", formats=("tfrecord",))
    users_glob = str(work / "data" / "*" / "part-*.tfrecord.gz")
    print("building and exporting the model ...", file=sys.stderr, flush=True)
    mc = UserTagConfig(model_type="mvke_mt").scaled(args.scale)
    fc = synthetic.feature_config()
    export_saved_model(build_model(fc, mc), work / "model")

    seen: dict[str, bytes] = {}
    for path in tagging.resolve_files(users_glob):
        for uid, ex in tagging.iter_user_records(path, None):
            seen.setdefault(uid, ex)
    ids, examples = list(seen), list(seen.values())
    n_users = len(ids)

    # (a) naive: users x tags pairs through serving_default.
    loaded = tf.saved_model.load(str(work / "model"))
    serve = loaded.signatures["serving_default"]
    pairs = _pairs(examples[: args.naive_users], tags, fc.tag_field.name)

    def naive() -> None:
        for s in range(0, len(pairs), args.naive_batch):
            serve(examples=tf.constant(pairs[s : s + args.naive_batch]))

    print(f"naive: {args.naive_users} users x {len(tags):,} tags ...", file=sys.stderr, flush=True)
    naive_s = _best(naive, args.repeats)
    naive_ups = args.naive_users / naive_s

    # (b) decomposition: user_tower + one matmul per task + top-K, users in memory.
    tm = tagging.TaggingModel(work / "model")
    tagger = tagging.TopKTagger(tm, tags, args.top_k)
    batches = [examples[s : s + args.batch_size] for s in range(0, n_users, args.batch_size)]

    def decomposition() -> None:
        for b in batches:
            tagger(b)

    print(f"decomposition: {n_users:,} users ...", file=sys.stderr, flush=True)
    dec_s = _best(decomposition, args.repeats)
    dec_ups = n_users / dec_s

    # (c) the same batches merged into a running top-N per task and tag (--by tag), users in memory.
    audience_scorer = tagging.AudienceScorer(tm, tags, args.top_n)
    batch_ids = [ids[s : s + args.batch_size] for s in range(0, n_users, args.batch_size)]

    def audience_merge() -> None:
        state = audience_scorer.empty()
        for s, (b_ids, b) in enumerate(zip(batch_ids, batches)):
            start = s * args.batch_size
            state = audience_scorer.update(state, b_ids, b, range(start, start + len(b)))

    print(f"--by tag merge: {n_users:,} users, top-{args.top_n} ...", file=sys.stderr, flush=True)
    merge_ups = n_users / _best(audience_merge, args.repeats)

    # The whole job: read TFRecord, dedupe, tag, write Parquet (one run, model load included).
    job = tagging.tag_users(
        work / "model", users_glob, tags, work / "out", top_k=args.top_k, batch_size=args.batch_size
    )
    job_ups = job["users_per_second"]  # time in the shards: excludes loading the model and the tag tower
    print(f"--by tag job: top-{args.top_n} users per tag ...", file=sys.stderr, flush=True)
    audiences = tagging.tag_users(
        work / "model", users_glob, tags, work / "audiences", batch_size=args.batch_size, by="tag", top_n=args.top_n
    )
    audience_ups = audiences["users_per_second"]  # scoring and merging; excludes writing the lists at the end

    # Combine step alone (product + bias + top-K on precomputed experts) vs plain matmuls.
    b = min(args.batch_size, n_users)
    experts = tm.user_experts(tf.constant(examples[:b]))
    shapes = {t: tuple(experts[t].shape[1:]) for t in tm.tasks}
    flops = sum(2 * b * s * d * len(tags) for s, d in shapes.values())

    @tf.function
    def product(ex):
        return [tagger.scorer.logits(t, ex[t]) for t in tm.tasks]

    @tf.function
    def combine(ex):
        return [tf.math.top_k(tagger.scorer.logits(t, ex[t]), k=tagger.k).values for t in tm.tasks]

    reps = max(args.repeats, 5)
    product_s = _best(lambda: [x.numpy() for x in product(experts)], reps)
    combine_s = _best(lambda: [x.numpy() for x in combine(experts)], reps)
    rng = np.random.default_rng(0)
    us = {t: rng.standard_normal((b, s * d), dtype=np.float32) for t, (s, d) in shapes.items()}
    ts = {t: rng.standard_normal((s * d, len(tags)), dtype=np.float32) for t, (s, d) in shapes.items()}
    np_s = _best(lambda: [us[t] @ ts[t] for t in tm.tasks], reps)
    tus, tts = {t: tf.constant(v) for t, v in us.items()}, {t: tf.constant(v) for t, v in ts.items()}
    tf_s = _best(lambda: [tf.matmul(tus[t], tts[t]).numpy() for t in tm.tasks], reps)
    gf = {
        "product": flops / product_s / 1e9,
        "combine": flops / combine_s / 1e9,
        "numpy": flops / np_s / 1e9,
        "tf": flops / tf_s / 1e9,
    }
    share = gf["product"] / max(gf["numpy"], gf["tf"])
    share_topk = gf["combine"] / max(gf["numpy"], gf["tf"])
    e2e_gf = flops * (n_users / b) / dec_s / 1e9

    shape_txt = ", ".join(f"{t} [{b}, {s}*{d}] x [{s}*{d}, {len(tags)}]" for t, (s, d) in shapes.items())
    lines = [
        "| method | users/s | vs naive |",
        "| --- | --- | --- |",
        f"| naive pair scoring (`serving_default`, {args.naive_users} users x {len(tags):,} tags) "
        f"| {naive_ups:,.2f} | 1x |",
        f"| decomposition (`user_tower` + 1 matmul per task + top-{tagger.k}, in memory) "
        f"| {dec_ups:,.0f} | {dec_ups / naive_ups:,.0f}x |",
        f"| `--by tag` merge (the same + a running top-{args.top_n} users per task and tag, in memory) "
        f"| {merge_ups:,.0f} | {merge_ups / naive_ups:,.0f}x |",
        f"| `tag_users` job end to end (read TFRecord, dedupe, write Parquet; model load excluded) "
        f"| {job_ups:,.0f} | {job_ups / naive_ups:,.0f}x |",
        f"| `tag_users --by tag` end to end (top-{args.top_n} users per task and tag, running top-N merged per "
        f"batch; model load and writing the lists excluded) | {audience_ups:,.0f} | {audience_ups / naive_ups:,.0f}x |",
        "",
        "| matmul, per batch of users | GFLOP/s |",
        "| --- | --- |",
        f"| decomposition's product (packed users x packed tags + bias, as in the job): {shape_txt} "
        f"| {gf['product']:.1f} |",
        f"| plain numpy matmul, same shapes | {gf['numpy']:.1f} |",
        f"| plain TensorFlow matmul, same shapes | {gf['tf']:.1f} |",
        f"| product / best plain matmul | {share:.0%} |",
        f"| product + top-{tagger.k} (matmul flops only; `tf.math.top_k` costs more than the product on CPU) "
        f"| {gf['combine']:.1f} ({share_topk:.0%}) |",
        f"| whole decomposition (matmul flops over all its time, incl. `user_tower`) | {e2e_gf:.1f} |",
    ]
    table = "\n".join(lines)
    cmd = "python -m benchmarks.tagging " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"Command: {cmd.strip()}")
    print(f"Machine: {machine()}")
    print(
        f"Model: MVKE-mt x{args.scale}, experts {shapes}; {len(tags):,} tags; {n_users:,} users; "
        f"batch {args.batch_size}; best of {args.repeats}"
    )
    print(table)
    reading = (
        f"`--by tag` runs at {merge_ups / dec_ups:.2f}x the users/s of `--by user` in memory ({merge_ups:,.0f} vs "
        f"{dec_ups:,.0f}) and {audience_ups / job_ups:.2f}x end to end ({audience_ups:,.0f} vs {job_ups:,.0f}): the "
        f"same product per batch, then a top-{args.top_n} over each tag's kept + {args.batch_size} new users "
        f"instead of a top-{tagger.k} over each user's {len(tags):,} tags."
    )
    print(f"Reading: {reading}")
    ok_ratio, ok_share = dec_ups / naive_ups >= 100, share >= 0.5
    print(f"targets: decomposition >= 100x naive: {'met' if ok_ratio else 'NOT met'}; ", end="")
    print(f"product >= 50% of plain matmul GFLOP/s: {'met' if ok_share else 'NOT met'}")
    if not args.no_write:
        model = (
            f"MVKE-mt, the paper's Table 5 hidden layers x{args.scale} (untrained weights), "
            f"expert shapes {shapes}; {len(tags):,} tags (the paper's taxonomy size); "
            f"{n_users:,} users, batch {args.batch_size}, top-{tagger.k}; best of {args.repeats} runs."
        )
        facts = {"Model": model, "Machine": f"{machine()}."}
        table_and_reading = f"{table}\n\nReading: {reading}"
        body = section(
            "Batch tagging: naive pair scoring vs the matrix-product decomposition", cmd, facts, table_and_reading
        )
        write_section("tagging", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
