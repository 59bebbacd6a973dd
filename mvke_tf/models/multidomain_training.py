"""The bi-level training schedule of an MDMT model (:func:`train_multidomain`) and its per-epoch validation.

One job: train a :class:`~mvke_tf.models.multidomain.MultiDomainModel` under its fusion schedule
(``bilevel``, ``code`` or ``fixed``: see :mod:`mvke_tf.models.multidomain`), with StepLR, early stopping
and the per-epoch validation scores. A custom loop (two optimisers, two data streams), not ``model.fit``;
it runs Keras callbacks at the points ``fit`` does (train, epoch and batch begin and end, with the same
logs, and ``model.stop_training``), so ``TensorBoard``, ``CSVLogger``, ``ModelCheckpoint``, ``EarlyStopping`` and
the pipeline Trainer's callbacks work with it.

Why not a ``train_step`` under ``fit``: the upper level reads its batches on its own clock. ``bilevel`` could be
fed through ``fit`` (the held-out stream zipped to the training one, each held-out batch repeated
``fusion_every`` times so that the k-th fusion step still sees the k-th batch), but ``code`` steps once per epoch
on the epoch's *first training* batch, after the epoch, and ``trace_fusion`` records every fusion step on the
host; neither is a per-batch step. One loop serves the three schedules, with the same batches as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from mvke_tf.models.multidomain import MultiDomainModel
from mvke_tf.models.multidomain_metrics import mdmt_metrics


def train_multidomain(
    model: MultiDomainModel,
    train: tf.data.Dataset,
    val: tf.data.Dataset | None = None,
    epochs: int = 1,
    learning_rate: float = 1e-3,
    fusion_learning_rate: float = 1e-3,
    seed: int | None = None,
    *,
    steps_per_epoch: int | None = None,
    validation: tf.data.Dataset | None = None,
    validation_steps: int | None = None,
    weight_decay: float = 0.0,
    lr_decay: float = 1.0,
    lr_decay_every: int = 0,
    patience: int | None = None,
    trace_fusion: bool = False,
    verbose: int = 0,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Trains ``model`` with its fusion schedule; returns per-epoch values.

    * bilevel (m3oe): after every ``fusion_every`` training steps, one fusion step on the
      next validation batch (``val`` is cycled; required).
    * code (m3oe): main steps on everything, then one fusion step per epoch on the
      epoch's first training batch (the official trainer's schedule).
    * fixed, and every baseline: main steps only.

    Args:
      model: the model (compiled here with Adam if it is not compiled yet).
      train: batches of ``(features, labels)``: one pass per epoch, or ``steps_per_epoch`` batches
        per epoch of a dataset read on across epochs (e.g. a repeated one).
      val: held-out batches of ``(features, labels)`` for the fusion steps (the upper level).
      epochs: most epochs of training.
      learning_rate: Adam learning rate of the model parameters.
      fusion_learning_rate: Adam learning rate of the fusion weights.
      seed: if given, ``tf.keras.utils.set_random_seed(seed)`` before building: Python's, NumPy's
        and TensorFlow's seeds. Not ``tf.random.set_seed`` alone: Keras draws the seeds of its
        unseeded initialisers from Python's ``random``, so that left the weights unseeded.
      steps_per_epoch: training steps per epoch (None: one pass over ``train``).
      validation: batches scored after every epoch (``val_loss``, ``val_<task>_auc`` and
        ``val_mean_auc``, the mean AUC over (domain, task)), at most ``validation_steps`` of them.
      weight_decay: Adam weight decay of both optimisers (used when compiling here).
      lr_decay, lr_decay_every: multiply the main learning rate by ``lr_decay`` after every
        ``lr_decay_every`` epochs (0: never), like torch's StepLR.
      patience: with ``validation``: stop after ``patience`` epochs without a better
        ``val_mean_auc`` and restore the best epoch's weights (the official trainer's early stop).
      trace_fusion: m3oe: also record every fusion step (``history["trace"]``: the upper-level
        loss, the gradient of that loss w.r.t. the four raw fusion weights, and their values after
        the step) to diagnose the upper level.
      verbose: > 0 prints one line per epoch.
      callbacks: Keras callbacks, run as ``model.fit`` runs them: ``on_train_batch_end`` gets the batch's
        ``loss``, ``on_epoch_end`` the epoch's values (those of the history below); a callback that sets
        ``model.stop_training`` ends training after the current batch, as in ``fit``.

    Returns:
      ``{"loss", "fusion_loss"}`` (per-epoch means), the ``val_*`` values with ``validation``, and
      for m3oe the fusion weights after each epoch (``alpha_domain``, ``alpha_task``, ...);
      with early stopping ``best_epoch`` (1-based, a one-element list); with ``trace_fusion``
      ``trace``.
    """
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    if getattr(model, "optimizer", None) is None:
        decay = {"weight_decay": weight_decay} if weight_decay else {}
        model.compile(
            optimizer=tf.keras.optimizers.Adam(learning_rate, **decay),
            fusion_optimizer=tf.keras.optimizers.Adam(fusion_learning_rate, **decay),
        )
    c = model.config
    fusing = bool(model.fusion_variables)
    if fusing and c.fusion == "bilevel" and val is None:
        raise ValueError("bilevel fusion needs validation batches; fix: pass val=...")
    if patience is not None and validation is None:
        raise ValueError("early stopping (patience) scores the validation batches; fix: pass validation=...")
    # Build the model and both optimisers eagerly: variables created inside a traced
    # step would be created again on the retrace tf.function does after a first call.
    first_batch = next(iter(train))
    model.logits(first_batch[0])
    model.optimizer.build(model.main_variables)
    if fusing:
        model.fusion_optimizer.build(model.fusion_variables)
    # Traced once per model and kept on it, so training the same model again (a new seed's
    # weights assigned into it, as benchmarks do) skips tracing, which costs seconds for M3oE on
    # a CPU; reduce_retracing lets an epoch's shorter last batch reuse a shape-relaxed trace.
    steps = model.__dict__.get("_traced_steps")
    if steps is None:
        steps = (
            tf.function(model.train_step, reduce_retracing=True),
            tf.function(model.fusion_step, reduce_retracing=True),
        )
        model.__dict__["_traced_steps"] = steps
    main_step, fusion_step = steps
    val_batches = iter(val.repeat()) if fusing and c.fusion == "bilevel" else None
    batches = iter(train) if steps_per_epoch is not None else None  # read on across epochs
    history: dict[str, Any] = {"loss": [], "fusion_loss": []}
    trace: dict[str, list[Any]] = {"step": [], "fusion_loss": [], "fusion_grad": [], "fusion_raw": []}
    best_auc, best_weights, best_epoch, stale = -np.inf, None, 0, 0
    main_steps = 0

    def run_fusion(batch: Any) -> float:
        out = fusion_step(batch)
        if trace_fusion:
            trace["step"].append(main_steps)
            trace["fusion_loss"].append(float(out["fusion_loss"]))
            trace["fusion_grad"].append([float(g) for g in out["fusion_grad"].numpy()])
            trace["fusion_raw"].append([float(v.numpy()) for v in model.fusion_variables])
        return float(out["fusion_loss"])

    hooks = tf.keras.callbacks.CallbackList(
        list(callbacks), add_history=False, add_progbar=False, model=model, epochs=epochs, steps=steps_per_epoch
    )
    model.stop_training = False
    hooks.on_train_begin()
    values: dict[str, float] = {}
    for epoch in range(epochs):
        hooks.on_epoch_begin(epoch)
        losses, fusion_losses, first = [], [], None
        epoch_batches = iter(train) if batches is None else (next(batches) for _ in range(steps_per_epoch))
        for step, batch in enumerate(epoch_batches):
            hooks.on_train_batch_begin(step)
            first = batch if first is None else first
            losses.append(float(main_step(batch)["loss"]))
            main_steps += 1
            if val_batches is not None and (step + 1) % c.fusion_every == 0:
                fusion_losses.append(run_fusion(next(val_batches)))
            hooks.on_train_batch_end(step, {"loss": losses[-1]})
            if model.stop_training:
                break
        if fusing and c.fusion == "code" and first is not None:
            fusion_losses.append(run_fusion(first))
        if lr_decay_every and (epoch + 1) % lr_decay_every == 0 and lr_decay != 1.0:
            model.optimizer.learning_rate = float(model.optimizer.learning_rate) * lr_decay
        values = {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "fusion_loss": float(np.mean(fusion_losses)) if fusion_losses else float("nan"),
        }
        if validation is not None:
            values.update(_validate(model, validation, validation_steps))
        values.update(model.fusion_values())
        for name, value in values.items():
            history.setdefault(name, []).append(value)
        if verbose:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items())
            print(f"epoch {epoch + 1}/{epochs}: {len(losses)} steps; {shown}", flush=True)
        hooks.on_epoch_end(epoch, dict(values))
        if model.stop_training:
            break
        if patience is not None:
            score = values["val_mean_auc"]
            if score > best_auc:
                best_auc, best_weights, best_epoch, stale = score, model.get_weights(), epoch + 1, 0
            else:
                stale += 1
                if stale >= patience:
                    break
    if patience is not None and best_weights is not None:
        model.set_weights(best_weights)
        history["best_epoch"] = [best_epoch]
    hooks.on_train_end(dict(values))
    if trace_fusion:
        history["trace"] = trace
    return history


def _validate(model: MultiDomainModel, batches: tf.data.Dataset, steps: int | None) -> dict[str, float]:
    """``val_loss`` (the mean batch loss), ``val_<task>_auc`` and ``val_mean_auc`` over at most
    ``steps`` batches (``val_mean_auc``: the mean AUC over the (domain, task) pairs with both classes)."""
    from mvke_tf.metrics import auc_or_nan

    if steps is not None:
        batches = batches.take(steps)
    dom = model.config.domain_feature
    losses, domains = [], []
    labels, probs = {t: [] for t in model.tasks}, {t: [] for t in model.tasks}
    scored = model.__dict__.get("_traced_scoring")
    if scored is None:  # traced once per model: eager M3oE costs more than the epoch's validation

        def scoring(features: Any, y: Any) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
            return model.mdmt_loss(features, y, training=False), model(features, training=False)

        scored = model.__dict__["_traced_scoring"] = tf.function(scoring, reduce_retracing=True)
    for features, y in batches:
        loss, out = scored(features, y)
        losses.append(float(loss))
        domains.append(np.asarray(features[dom]).reshape(-1))
        for t in model.tasks:
            labels[t].append(np.asarray(y[t]).reshape(-1))
            probs[t].append(out[t].numpy())
    values = {"val_loss": float(np.mean(losses)) if losses else float("nan")}
    if not losses:
        return {**values, **{f"val_{t}_auc": float("nan") for t in model.tasks}, "val_mean_auc": float("nan")}
    y_all = {t: np.concatenate(labels[t]) for t in model.tasks}
    p_all = {t: np.concatenate(probs[t]) for t in model.tasks}
    m = mdmt_metrics(y_all, p_all, np.concatenate(domains), model.config.domains)
    for t in model.tasks:
        values[f"val_{t}_auc"] = auc_or_nan(y_all[t], p_all[t])
    values["val_mean_auc"] = m["mean_auc"]
    return values


__all__ = ["train_multidomain"]
