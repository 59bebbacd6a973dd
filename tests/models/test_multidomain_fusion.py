"""M3oE's fusion weights: the gradient reaches them with the right sign, the scale symmetry that
leaves them nothing to learn, the per-step trace, and the presets / schedule options."""

import numpy as np
import pytest
import tensorflow as tf

from mvke_tf.config import ConfigError
from mvke_tf.data import multidomain as md
from mvke_tf.models.multidomain import PRESETS, MultiDomainConfig, MultiDomainModel, TrainingSchedule, preset
from mvke_tf.models.multidomain_training import train_multidomain

TINY = dict(
    embedding_dim=4, bottom_units=(16, 8), skip_units=(8,), expert_units=(8, 8), num_shared_experts=2, tower_units=4
)


@pytest.fixture(scope="module")
def data():
    cfg = md.MultiDomainDataConfig(
        num_rows=4_000,
        num_users=500,
        num_ads=200,
        taxonomy=(4, 3, 5),
        domain_shares=(0.3, 0.4, 0.3),
        world_scale=0.0,
        preference_scale=0.0,
        target_ctr=0.3,
        target_cvr=0.5,
        domain_correlation=0.3,
        task_correlation=0.5,
        relatedness_scale=2.0,
        seed=1,
    )
    gen = md.generate(cfg)
    specs = md.relatedness_fields()
    return specs, [md.to_features(gen[s], specs) for s in md.SPLITS]


def _trained(data, fusion="bilevel", epochs=2, **train_kwargs):
    specs, (train, val, _) = data
    model = MultiDomainModel(MultiDomainConfig(model_type="multi_domain_m3oe", fusion=fusion, **TINY), specs)
    history = train_multidomain(
        model,
        md.make_dataset(*train, batch_size=256, seed=0),
        md.make_dataset(*val, batch_size=256, seed=0),
        epochs=epochs,
        learning_rate=1e-2,
        seed=0,
        **train_kwargs,
    )
    return model, history


@pytest.fixture(scope="module")
def trained(data):
    """One traced bilevel run shared by the tests (the last one corrupts it, so it runs last)."""
    return _trained(data, epochs=1, trace_fusion=True)


def _val_loss(model, batches) -> float:
    return float(np.mean([model.mdmt_loss(f, y, training=False) for f, y in batches]))


def _grads(model, batch, variables):
    with tf.GradientTape() as tape:
        loss = model.mdmt_loss(batch[0], batch[1], training=False)
    return loss, tape.gradient(loss, variables)


def test_alpha_is_a_rescaling_of_the_experts_last_layer_norm(data, trained):
    # Scaling an expert group's last LayerNorm (gamma, beta) by s scales its ReLU output by s, exactly
    # what alpha does, so  alpha * dL/dalpha = sum(gamma * dL/dgamma + beta * dL/dbeta)  over the group.
    # At a lower-level optimum the right side is 0: the training loss has no slope along alpha.
    model, _ = trained
    batch = next(iter(md.make_dataset(*data[1][1], batch_size=512, shuffle=False)))
    fused = model.fused
    for name, experts in (("alpha_domain", fused.domain_experts), ("alpha_task", fused.task_experts)):
        raw = fused.fusion_weights[fused.FUSION_NAMES.index(name)]
        gamma, beta = experts.gammas[-1], experts.betas[-1]
        _, (g_raw, g_gamma, g_beta) = _grads(model, batch, [raw, gamma, beta])
        alpha = tf.sigmoid(raw)
        lhs = float(alpha * g_raw / (alpha * (1 - alpha)))  # alpha * dL/dalpha
        rhs = float(tf.reduce_sum(gamma * g_gamma) + tf.reduce_sum(beta * g_beta))
        assert lhs == pytest.approx(rhs, rel=1e-3, abs=1e-6)
        assert abs(lhs) > 1e-7  # not a trivial 0 = 0


def test_trace_records_every_fusion_step(data, trained):
    model, history = trained
    trace = history["trace"]
    steps = len(trace["fusion_loss"])
    assert steps == int(np.ceil(len(data[1][0][1]["click"]) / 256))  # one per training step (bilevel)
    assert np.array(trace["fusion_grad"]).shape == (steps, 4)
    assert np.array(trace["fusion_raw"]).shape == (steps, 4)
    assert trace["step"] == list(range(1, steps + 1))
    np.testing.assert_allclose(
        1 / (1 + np.exp(-np.array(trace["fusion_raw"][-1]))),
        [history[n][-1] for n in ("alpha_domain", "alpha_task", "beta_domain", "beta_task")],
        rtol=1e-5,
    )


def test_early_stopping_restores_the_best_epoch_and_step_decay(data):
    specs, (train, val, _) = data
    model = MultiDomainModel(MultiDomainConfig(model_type="multi_domain_mmoe", **TINY), specs)
    history = train_multidomain(
        model,
        md.make_dataset(*train, batch_size=512, seed=0),
        epochs=4,
        learning_rate=1e-2,
        seed=0,
        validation=md.make_dataset(*val, batch_size=4096, shuffle=False),
        patience=1,
        lr_decay=0.5,
        lr_decay_every=1,
    )
    scores = history["val_mean_auc"]
    best = history["best_epoch"][0]
    assert scores[best - 1] == max(scores)
    # Stopped one epoch after the last improvement (or ran all 4).
    assert len(scores) == 4 or (len(scores) == best + 1)
    # The restored weights score the best epoch's AUC again.
    from mvke_tf.models.multidomain_training import _validate

    again = _validate(model, md.make_dataset(*val, batch_size=4096, shuffle=False), None)["val_mean_auc"]
    assert again == pytest.approx(max(scores), abs=1e-6)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2 * 0.5 ** len(scores), rel=1e-5)
    with pytest.raises(ValueError, match="validation="):
        train_multidomain(model, md.make_dataset(*train, batch_size=512), patience=2)


class _Recorder(tf.keras.callbacks.Callback):
    """Every hook call with its logs; stops training at batch ``stop_at`` of the first epoch when given."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.calls, self.stop_at = [], stop_at

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", None))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, dict(logs)))
        if batch == self.stop_at:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", dict(logs)))


def test_callbacks_see_the_schedule_and_change_nothing(data, tmp_path):
    """The bi-level loop runs Keras callbacks where ``fit`` does, with the history's values, and training with
    them gives the same weights as without; ``stop_training`` ends it after the batch; TensorBoard writes."""
    specs, (train, val, _) = data
    kwargs = dict(epochs=2, steps_per_epoch=4, validation=md.make_dataset(*val, batch_size=4096, shuffle=False))
    plain, plain_history = _trained(data, **kwargs)
    recorder = _Recorder()
    board = tf.keras.callbacks.TensorBoard(log_dir=str(tmp_path / "logs"), update_freq="epoch")
    watched, history = _trained(data, callbacks=[recorder, board], **kwargs)
    for a, b in zip(plain.get_weights(), watched.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert history == plain_history
    kinds = [c[0] for c in recorder.calls]
    assert kinds == ["train_begin"] + (["epoch_begin"] + ["batch_end"] * 4 + ["epoch_end"]) * 2 + ["train_end"]
    epoch_logs = [c[2] for c in recorder.calls if c[0] == "epoch_end"]
    for epoch, logs in enumerate(epoch_logs):
        assert logs == {name: values[epoch] for name, values in history.items()}
        assert {"loss", "fusion_loss", "val_mean_auc", "alpha_domain"} <= set(logs)
    batch_losses = [c[2]["loss"] for c in recorder.calls if c[0] == "batch_end"]
    assert np.mean(batch_losses[:4]) == pytest.approx(history["loss"][0], rel=1e-12)
    assert recorder.calls[-1] == ("train_end", epoch_logs[-1])
    assert list((tmp_path / "logs" / "train").glob("events.out.tfevents.*"))

    stopper = _Recorder(stop_at=1)
    _, stopped = _trained(data, callbacks=[stopper], **kwargs)
    assert [c[0] for c in stopper.calls] == [
        "train_begin",
        "epoch_begin",
        "batch_end",
        "batch_end",
        "epoch_end",
        "train_end",
    ]
    assert len(stopped["loss"]) == 1


def test_presets():
    cfg, schedule = preset("official", "multi_domain_m3oe")
    assert (cfg.embedding_dim, cfg.bottom_units, cfg.skip_units, cfg.expert_units) == (
        16,
        (512, 256),
        (256,),
        (256, 64),
    )
    assert cfg.num_shared_experts == 4 and cfg.tower_units == 64 and cfg.fusion == "code"
    assert (schedule.learning_rate, schedule.weight_decay, schedule.fusion_learning_rate) == (1e-2, 1e-5, 1e-3)
    assert (schedule.lr_decay, schedule.lr_decay_every, schedule.epochs, schedule.patience) == (0.85, 4, 50, 10)
    small, _ = preset("small", "mmoe", domains=2)
    assert small == MultiDomainConfig(model_type="multi_domain_mmoe", domains=2)  # the library's defaults
    assert set(PRESETS) == {"small", "official"}
    with pytest.raises(ConfigError, match="preset="):
        preset("huge")
    with pytest.raises(ConfigError, match="lr_decay"):
        TrainingSchedule(lr_decay=1.5)
    with pytest.raises(ConfigError, match="patience"):
        TrainingSchedule(patience=0)


def test_upper_level_moves_alpha_away_from_a_useless_branch(data, trained):
    # A useless domain branch by construction. Its experts' last LayerNorm scales become random
    # N(0, 1) values (the branch outputs input-dependent noise), and the validation targets are the
    # probabilities the model gives with that branch switched off (alpha_domain ~ 1e-13). The
    # validation loss is then the cross-entropy against those probabilities, H(p) + KL(p || q):
    # by Gibbs' inequality it is smallest where alpha_domain is 0, for any trained fixture, so the
    # upper level (the gradient of the validation loss) must carry alpha_domain down.
    # Why N(0, 1) and not larger: the towers' LayerNorm makes a dominant noise scale-invariant, so
    # at scale 10 the loss is flat in alpha near the start and its slope there can take either sign
    # (the old form of this test failed about one run in five that way). At scale 1 the noise stays
    # in the regime where KL grows with alpha: the whole test passed for 40 of 40 training seeds
    # (0..39, checked by hand), at scale 2 for 38 of 40. The fixture is seeded, so each run is
    # the same run.
    model, _ = trained
    experts = model.fused.domain_experts
    rng = np.random.default_rng(0)
    experts.gammas[-1].assign(rng.normal(size=experts.gammas[-1].shape).astype(np.float32))
    raw = model.fused.fusion_weights[0]  # alpha_domain
    start = float(raw.numpy())
    raw.assign(-30.0)
    batches = [
        (f, {t: p for t, p in model(f, training=False).items()})
        for f, _ in md.make_dataset(*data[1][1], batch_size=512, shuffle=False)
    ]
    off = _val_loss(model, batches)
    raw.assign(start - 3.0)
    low = _val_loss(model, batches)
    raw.assign(start)
    before = _val_loss(model, batches)
    # The construction's check: the loss falls as alpha_domain falls (and is H(p) at 0).
    assert off <= low < before
    # Upper-level steps on alpha_domain alone (the other three held, so the reference above stays
    # the right one): the gradient of the validation loss must carry it down.
    opt = tf.keras.optimizers.Adam(0.05)
    for i in range(40):
        f, y = batches[i % len(batches)]
        with tf.GradientTape() as tape:
            loss = model.mdmt_loss(f, y, training=False)
        (grad,) = tape.gradient(loss, [raw])
        if i == 0:
            assert float(grad) > 0  # the right sign: increasing alpha_domain hurts
        opt.apply_gradients([(grad, raw)])
    assert float(raw.numpy()) < start - 0.3
    assert _val_loss(model, batches) < before
