"""``mvke-tf train`` (train and evaluate with the Keras library) and ``mvke-tf export`` (a servable SavedModel)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mvke_tf.cli.errors import CLIError
from mvke_tf.config import ConfigError, load_yaml


def _model_config(args: argparse.Namespace, features_yaml: Path):
    """The model's config: ``--model``, ``--config``'s fields, ``--scale``; its tasks are the data's labels
    (``features_yaml``'s) unless ``--config`` names them."""
    from mvke_tf.config import FeatureConfig
    from mvke_tf.models.family import config_for_data

    overrides = {}
    if args.config:
        overrides = load_yaml(args.config, "--config") or {}
        if not isinstance(overrides, dict):
            raise CLIError(
                f"--config {args.config}: holds a {type(overrides).__name__}, not a mapping of model config fields; "
                "fix: write one field per line, e.g. 'embedding_dim: 16'"
            )
    return config_for_data(args.model, FeatureConfig.from_yaml(features_yaml), overrides, args.scale)


def _train(data_dir: Path, args: argparse.Namespace) -> dict:
    from mvke_tf.train import TrainConfig, format_report, train_and_evaluate

    tc = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        strategy=getattr(args, "strategy", "default"),
    )
    model_config = _model_config(args, data_dir / "features.yaml")
    report = train_and_evaluate(
        data_dir, model_config, tc, out_dir=args.model_dir, verbose=2 if sys.stdout.isatty() else 0
    )
    model = report.pop("model")
    if args.model_dir:
        from mvke_tf import distribute
        from mvke_tf.config import FeatureConfig
        from mvke_tf.models.model_dir import save_model_dir

        # Every worker saves (saving may run collective ops); only the chief's copy is kept.
        with distribute.write_dir(args.model_dir, model.distribute_strategy) as out:
            save_model_dir(model, out, FeatureConfig.from_yaml(data_dir / "features.yaml"))
    print(format_report(report))
    return report


def cmd_train(args: argparse.Namespace) -> int:
    data_dir = Path(args.data)
    if not (data_dir / "features.yaml").exists():
        raise CLIError(
            f"--data {data_dir}: no features.yaml there; fix: describe your data's fields in DIR/features.yaml "
            "(docs/pipeline.md), or generate data with `mvke-tf data synth --out DIR`"
        )
    _train(data_dir, args)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Rebuilds a model trained by ``mvke-tf train --model-dir`` and writes a servable SavedModel."""
    from mvke_tf.export import export_saved_model
    from mvke_tf.models.family import family_of
    from mvke_tf.models.model_dir import load_model_dir

    try:
        model, feature_config = load_model_dir(args.model_dir)
    except ConfigError as e:
        raise CLIError(f"--model-dir {e.args[0].removeprefix('model dir ')}") from e
    base = Path(args.out)
    if args.version is None:
        versions = [int(p.name) for p in base.glob("*") if p.is_dir() and p.name.isdigit()]
        version = max(versions, default=0) + 1
    else:
        version = args.version
    target = base / str(version)
    if target.exists():
        raise CLIError(f"{target} already exists; TF Serving versions are immutable: pick another --version")
    family = family_of(model)
    if args.tags and not family.has_tag_tower:
        raise CLIError(f"--tags: a top_tags signature needs a user-tagging model, not {model.config.model_type}")
    if args.top_tags_max_k < 1:
        raise CLIError(f"--top-tags-max-k: must be at least 1, got {args.top_tags_max_k}")
    try:
        export_saved_model(
            model, target, feature_config=feature_config, tags=args.tags, top_tags_max_k=args.top_tags_max_k
        )
    except (FileNotFoundError, ValueError) as e:  # the tag vocabulary: no such file, no tags in it
        raise CLIError(str(e)) from e
    signatures = ", ".join([*family.signatures, *(["top_tags"] if args.tags else [])])
    print(f"exported {model.config.model_type} to {target} (signatures {signatures})")
    print(f"serve it with: mvke-tf serve --model {args.name}={base}")
    return 0


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from mvke_tf.models.family import MODEL_NAMES, canonical_model_name

    p.add_argument(
        "--model",
        default="mvke_mt",
        type=canonical_model_name,  # an old name (app_store, m3oe, ...): its new name, with a warning
        choices=MODEL_NAMES,
        help="model name: a two-tower (user-tag) model, a pair-ranking one (ranking_<architecture>; "
        "ranking_app_store = MMoE + FM cross + ESMM) or a multi-domain one (multi_domain_<architecture>) "
        "(default %(default)s)",
    )
    p.add_argument(
        "--config",
        help="YAML file of fields of the model family's config (UserTagConfig, RankingConfig or MultiDomainConfig) "
        "overriding the defaults",
    )
    p.add_argument("--scale", type=float, default=1.0, help="scale hidden layer sizes (e.g. 0.25 for quick runs)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--learning-rate", type=float, default=1e-3)
