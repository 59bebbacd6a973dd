"""``mvke-tf data``: synthesize data (``synth``), describe your own table (``describe``), convert it (``convert``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mvke_tf.cli.errors import CLIError


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _add_synth_args(p: argparse.ArgumentParser) -> None:
    from mvke_tf.data.synthetic import SyntheticConfig

    d = SyntheticConfig()
    p.add_argument("--rows", type=int, default=d.num_rows, help="impressions to generate (default %(default)s)")
    p.add_argument("--users", type=int, default=d.num_users, help="distinct users (default %(default)s)")
    p.add_argument("--ads", type=int, default=d.num_ads, help="distinct ads (default %(default)s)")
    p.add_argument(
        "--taxonomy", type=_int_tuple, default=d.taxonomy, help="children per level, e.g. 18,5,20 (= 1,800 leaf tags)"
    )
    p.add_argument("--days", type=int, default=d.days, help="days spanned; the last is the eval split")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")


def _synth_config(args: argparse.Namespace):
    from mvke_tf.data.synthetic import SyntheticConfig

    return SyntheticConfig(
        num_rows=args.rows,
        num_users=args.users,
        num_ads=args.ads,
        taxonomy=args.taxonomy,
        days=args.days,
        seed=args.seed,
    )


def _generate(config, out: Path, formats: tuple[str, ...], shard_rows: int) -> dict:
    from tqdm import tqdm

    from mvke_tf.data import synthetic

    with tqdm(
        total=config.num_rows, unit="rows", desc="generating", file=sys.stderr, disable=not sys.stderr.isatty()
    ) as bar:
        return synthetic.generate(config, out, formats=formats, shard_rows=shard_rows, progress=bar.update)


def _synth_multidomain(args: argparse.Namespace) -> int:
    from mvke_tf.data import multidomain as md

    config = md.MultiDomainDataConfig(
        num_rows=args.rows, num_users=args.users, num_ads=args.ads, taxonomy=args.taxonomy, seed=args.seed
    )
    start = time.perf_counter()
    meta = md.write_files(config, Path(args.out), tuple(args.format), args.shard_rows)
    secs = time.perf_counter() - start
    splits = ", ".join(f"{s} {m['rows']:,}" for s, m in meta["splits"].items())
    print(f"wrote {config.num_rows:,} multi-domain rows to {args.out} in {secs:.1f} s ({splits})")
    shares = ", ".join(f"domain {d} {n:,}" for d, n in enumerate(meta["splits"]["train"]["domain_rows"]))
    print(f"{meta['domains']} domains in the '{meta['domain_field']}' column; train rows per domain: {shares}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    if args.multidomain:
        return _synth_multidomain(args)
    config = _synth_config(args)
    start = time.perf_counter()
    meta = _generate(config, Path(args.out), tuple(args.format), args.shard_rows)
    secs = time.perf_counter() - start
    print(
        f"wrote {config.num_rows:,} rows to {args.out} in {secs:.1f} s "
        f"(train {meta['splits']['train']['rows']:,}, eval {meta['splits']['eval']['rows']:,})"
    )
    print(f"click rate {meta['rates']['ctr']:.4f}, conversions per click {meta['rates']['conversion_per_click']:.4f}")
    print("oracle AUC on eval: " + ", ".join(f"{t} {v:.4f}" for t, v in meta["oracle_auc_eval"].items()))
    return 0


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def cmd_data_describe(args: argparse.Namespace) -> int:
    from mvke_tf.data.own_data import describe_data

    out = args.out
    if not out:
        if len(args.data) != 1:
            raise CLIError("data describe: give --out DIR (where features.yaml goes) for several DATA arguments")
        out = args.data[0] if Path(args.data[0]).is_dir() else str(Path(args.data[0]).parent)
    roles = {
        "labels": _names(args.labels),
        "categorical": _names(args.categorical),
        "numeric": _names(args.numeric),
        "drop": _names(args.drop),
        "tag_field": args.tag_field or "",
        "user_id": args.user_id,
        "separator": args.separator,
        "max_categorical_ints": args.max_categorical_ints,
    }
    lines = describe_data(args.data, out, sample_rows=args.sample_rows, overwrite=args.overwrite, **roles)
    print("\n".join(lines))
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from mvke_tf.config import FeatureConfig
    from mvke_tf.data.own_data import convert

    features_yaml = Path(args.features or Path(args.data_root) / "features.yaml")
    if not features_yaml.is_file():
        raise CLIError(
            f"data convert: no {features_yaml}; fix: write it with `mvke-tf data describe {args.data_root}` "
            "or pass --features"
        )
    start = time.perf_counter()
    written = convert(
        args.data_root, args.out, FeatureConfig.from_yaml(features_yaml), args.pattern or ["*/*"], progress=print
    )
    secs = time.perf_counter() - start
    print(f"wrote {len(written)} file(s) of typed, gzipped tf.Examples to {args.out} in {secs:.1f} s")
    return 0
