"""Two synthetic regression tasks of controlled relatedness (Ma et al., KDD 2018, MMoE, Section 3.2).

The tasks' relatedness is set by the cosine ``p`` between their weight vectors:

* ``u1, u2``: orthonormal vectors in R^d;
* ``w1 = c · u1``, ``w2 = c · (p · u1 + sqrt(1 − p²) · u2)``, so ``cos(w1, w2) = p`` and ``|w_i| = c``;
* ``x ~ N(0, I_d)``;
* ``y_i = w_iᵀx + Σ_{j=1..m} sin(α_j · w_iᵀx + β_j) + ε_i``, ``ε_i ~ N(0, noise_std²)``.

Because of the sines, the labels' Pearson correlation is not ``p`` itself (the paper's Figure 2
plots it against ``p``); :attr:`TaskCorrelationData.label_correlation` is the realised value.

The paper gives d = 100, c = 1, m = 10 and ε ~ N(0, 0.01) but not how α and β are chosen; here
α_j, β_j ~ N(0, 1), drawn once per data set and shared by both tasks (so ``p = 1`` gives one task
twice, up to the noise). ``noise_std`` defaults to 0.1 (reading 0.01 as the variance).

Everything random (u1, u2, α, β, x, ε) depends on ``seed`` alone, drawn in a fixed order; ``p`` only
moves ``w2``. So data sets of one seed and different ``p`` share their inputs and noise, and a
comparison across ``p`` is paired.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PAPER_DIM = 100
PAPER_C = 1.0
PAPER_M = 10


@dataclasses.dataclass(frozen=True)
class TaskCorrelationData:
    """One generated data set.

    Attributes:
      x: inputs ``[n, dim]`` (float32).
      y: labels ``[n, 2]`` (float32), column i is task i + 1.
      weights: ``[2, dim]``: w1, w2.
      alpha, beta: ``[m]``: the sines' frequencies and phases.
      p: the weight vectors' cosine.
      label_correlation: the realised Pearson correlation of ``y[:, 0]`` and ``y[:, 1]``.
    """

    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    p: float
    label_correlation: float


def task_weights(p: float, u1: np.ndarray, u2: np.ndarray, c: float = PAPER_C) -> np.ndarray:
    """``[2, d]``: ``w1 = c·u1`` and ``w2 = c·(p·u1 + sqrt(1 − p²)·u2)`` for orthonormal ``u1, u2 [d]``."""
    check_p(p)
    return np.stack([c * u1, c * (p * u1 + np.sqrt(1.0 - p * p) * u2)])


def check_p(p: float) -> None:
    if not np.isfinite(p) or abs(p) > 1.0:
        raise ValueError(f"p={p}: the cosine between the task weight vectors must be in [-1, 1]; fix: e.g. p=0.5")


def labels(x: np.ndarray, weights: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Noiseless labels ``[n, 2]``: ``w_iᵀx + Σ_j sin(α_j w_iᵀx + β_j)`` for ``x [n, d]``, ``weights [2, d]``."""
    z = x @ weights.T  # [n, 2]
    return z + np.sin(z[:, :, None] * alpha + beta).sum(axis=-1)


def generate(
    n: int,
    p: float,
    *,
    dim: int = PAPER_DIM,
    c: float = PAPER_C,
    m: int = PAPER_M,
    noise_std: float = 0.1,
    seed: int = 0,
) -> TaskCorrelationData:
    """``n`` examples of the two tasks at weight cosine ``p`` (see the module docstring).

    Raises:
      ValueError: naming the field, for ``|p| > 1``, ``n < 2``, ``dim < 2``, ``m < 0``, ``c <= 0`` or
        ``noise_std < 0``.
    """
    check_p(p)
    if n < 2:
        raise ValueError(f"n={n}: need at least 2 examples (a correlation needs two); fix: n >= 2")
    if dim < 2:
        raise ValueError(f"dim={dim}: two orthogonal unit vectors need dim >= 2; fix: e.g. dim=100")
    if m < 0:
        raise ValueError(f"m={m}: the number of sine terms must be >= 0; fix: e.g. m=10")
    if not c > 0:
        raise ValueError(f"c={c}: the weight scale must be > 0; fix: e.g. c=1")
    if noise_std < 0:
        raise ValueError(f"noise_std={noise_std} must be >= 0; fix: e.g. noise_std=0.1")
    rng = np.random.default_rng(seed)
    # Orthonormal u1, u2: the Q of a Gaussian [dim, 2] matrix (a uniformly random pair).
    q, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
    u1, u2 = q[:, 0], q[:, 1]
    alpha = rng.standard_normal(m)
    beta = rng.standard_normal(m)
    x = rng.standard_normal((n, dim))
    noise = rng.standard_normal((n, 2)) * noise_std
    weights = task_weights(p, u1, u2, c)
    y = labels(x, weights, alpha, beta) + noise
    corr = float(np.corrcoef(y[:, 0], y[:, 1])[0, 1])
    return TaskCorrelationData(
        x=x.astype(np.float32),
        y=y.astype(np.float32),
        weights=weights,
        alpha=alpha,
        beta=beta,
        p=float(p),
        label_correlation=corr,
    )
