"""A small exact t-SNE (van der Maaten & Hinton 2008) in numpy, for the per-layer CLS features
of Fig. 11 -- a few hundred points, where the O(N^2) exact method takes seconds and scikit-learn
would be a new dependency. Seeded and float64 throughout, so the same input gives the same map."""
from __future__ import annotations

import numpy as np

from ..errors import NuwaError


def _affinities(x: np.ndarray, perplexity: float, tol: float = 1e-5, steps: int = 100) -> np.ndarray:
    """Symmetric joint probabilities P: per point, a Gaussian whose bandwidth is found by
    bisection so that the conditional distribution has the requested perplexity."""
    n = len(x)
    sq = np.sum(x * x, axis=1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    target = np.log(perplexity)
    p = np.zeros((n, n))
    for i in range(n):
        di = np.delete(d[i], i)
        lo, hi, beta = 0.0, np.inf, 1.0
        for _ in range(steps):
            w = np.exp(-(di - di.min()) * beta)  # shifted: the same distribution, no underflow
            s = w.sum()
            h = np.log(s) + beta * np.sum((di - di.min()) * w) / s  # entropy in nats
            if abs(h - target) < tol:
                break
            if h > target:
                lo, beta = beta, beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi, beta = beta, (beta + lo) / 2
        p[i, np.arange(n) != i] = w / s
    p = (p + p.T) / (2 * n)
    return np.maximum(p, 1e-12)


def tsne(x, *, dims: int = 2, perplexity: float = 30.0, iterations: int = 500, seed: int = 0,
         learning_rate: float | None = None, exaggeration: float = 12.0, exaggeration_iters: int = 100) -> np.ndarray:
    """Embed the rows of `x` (N, D) in `dims` dimensions; returns (N, dims) float64.

    Gradient descent with momentum (0.5, then 0.8) and per-coordinate gains, early exaggeration
    for the first `exaggeration_iters` steps, a seeded N(0, 1e-4) start; learning rate N / 12 / 4
    (at least 50) unless given -- the usual defaults of the reference implementation.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise NuwaError(f"t-SNE needs an (N >= 3, D) array, got shape {x.shape}")
    n = len(x)
    if not 1 <= perplexity < n - 1:
        raise NuwaError(f"perplexity {perplexity} must be in [1, N - 1) for N = {n} points")
    x = x - x.mean(axis=0)
    x = x / max(np.abs(x).max(), 1e-30)  # scale-free bisection start
    p = _affinities(x, perplexity)
    lr = learning_rate if learning_rate is not None else max(n / exaggeration / 4, 50.0)
    rng = np.random.default_rng(seed)
    y = rng.normal(0.0, 1e-4, size=(n, dims))
    update = np.zeros_like(y)
    gains = np.ones_like(y)
    for it in range(iterations):
        pe = p * exaggeration if it < exaggeration_iters else p
        sq = np.sum(y * y, axis=1)
        num = 1.0 / (1.0 + sq[:, None] + sq[None, :] - 2 * y @ y.T)  # Student-t kernel
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        w = (pe - q) * num
        grad = 4.0 * (np.diag(w.sum(axis=1)) - w) @ y
        gains = np.where(np.sign(grad) != np.sign(update), gains + 0.2, gains * 0.8).clip(min=0.01)
        momentum = 0.5 if it < 250 else 0.8
        update = momentum * update - lr * gains * grad
        y = y + update
        y = y - y.mean(axis=0)
    return y
