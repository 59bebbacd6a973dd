"""Multi-domain models trained from data files (`mvke-tf train --model multi_domain_m3oe`), through the family
interface."""

import json

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from mvke_tf.cli import main
from mvke_tf.config import ConfigError
from mvke_tf.data import multidomain as md
from mvke_tf.models.family import family_of
from mvke_tf.train import TrainConfig, train_and_evaluate

CFG = md.MultiDomainDataConfig(num_rows=3_000, num_users=300, num_ads=200, taxonomy=(4, 3, 5), seed=5)
TINY = dict(
    embedding_dim=4, bottom_units=[16, 8], skip_units=[8], expert_units=[8], num_shared_experts=2, tower_units=4
)


@pytest.fixture(scope="module")
def md_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("md_train")
    md.write_files(CFG, out, formats=("csv",))
    return out


def test_cli_trains_m3oe_and_reports_per_domain_auc_and_fusion_weights(md_files, tmp_path, capsys):
    config = tmp_path / "m3oe.yaml"
    config.write_text(yaml.safe_dump(TINY))
    argv = ["train", "--data", str(md_files), "--model", "multi_domain_m3oe", "--config", str(config), "--epochs", "1"]
    assert main([*argv, "--batch-size", "128", "--model-dir", str(tmp_path / "model")]) == 0
    out = capsys.readouterr().out
    assert "AUC by domain" in out and "learned fusion weights: alpha_domain" in out
    report = json.loads((tmp_path / "model" / "report.json").read_text())
    assert report["model_family"] == "multi_domain"
    assert set(report["eval"]["click"]["per_domain_auc"]) == {"0", "1", "2"}
    # The upper level ran: alpha / beta moved off their start sigmoid(1.0).
    moved = [abs(v - 1 / (1 + np.exp(-1.0))) for v in report["fusion_weights"].values()]
    assert len(moved) == 4 and max(moved) > 1e-4


def test_per_domain_auc_equals_a_reference_on_the_generators_rows(md_files):
    config = family_of("multi_domain_mmoe").config_for("multi_domain_mmoe", TINY)
    report = train_and_evaluate(md_files, config, TrainConfig(batch_size=128, seed=1), verbose=0)
    model = report["model"]
    # The eval files hold the generator's test rows: score them from the arrays, not the files.
    features, labels = md.to_features(md.generate(CFG)["test"])
    probs = {t: model(features, training=False)[t].numpy() for t in model.tasks}
    for task in model.tasks:
        for d, auc in report["eval"][task]["per_domain_auc"].items():
            rows = features["domain"] == int(d)
            y = labels[task][rows]
            if 0 < y.sum() < len(y):
                assert auc == pytest.approx(roc_auc_score(y, probs[task][rows]), abs=1e-6)
            else:  # one class in this domain: no AUC
                assert np.isnan(auc)
        assert report["eval"][task]["auc"] == pytest.approx(roc_auc_score(labels[task], probs[task]), abs=1e-6)


def test_errors_name_the_missing_split_column_and_strategy(md_files, small_data, tmp_path):
    import shutil

    no_val = tmp_path / "no_val"
    shutil.copytree(md_files, no_val)
    shutil.rmtree(no_val / "val")
    m3oe = family_of("multi_domain_m3oe").config_for("multi_domain_m3oe", TINY)
    with pytest.raises(ConfigError, match=r"held-out split.*no_val/val has no files.*fusion: code"):
        train_and_evaluate(no_val, m3oe, TrainConfig(batch_size=128), verbose=0)
    with pytest.raises(ConfigError, match=r"reads column\(s\) \['domain'\].*--multidomain"):
        train_and_evaluate(
            small_data[0], family_of("multi_domain_star").config_for("multi_domain_star", TINY), verbose=0
        )
    with pytest.raises(ConfigError, match="strategy='mirrored'.*multi_domain models train under default"):
        train_and_evaluate(md_files, m3oe, TrainConfig(strategy="mirrored"), verbose=0)
