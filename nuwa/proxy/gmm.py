"""The diagonal Gaussian mixture the device uploads: EM fit (k-means++ then Lloyd start) and scoring."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import NuwaError

VAR_FLOOR = 1e-3  # variance floor, relative to the fitted data's per-dimension variance
MIN_COMPONENT_COUNT = 5.0  # a component must explain this many samples (privacy and conditioning)


@dataclass
class GaussianMixture:
    """Diagonal-covariance Gaussian mixture, float64: weights (K,), means (K, r), variances (K, r)."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    @property
    def components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dims(self) -> int:
        return int(self.means.shape[1])

    def component_log_prob(self, x: np.ndarray) -> np.ndarray:
        """log(w_k) + log N(x | mu_k, diag var_k), shape (n, K)."""
        x = np.asarray(x, dtype=np.float64)
        out = np.empty((x.shape[0], self.components))
        norm = np.log(self.weights) - 0.5 * (self.dims * math.log(2 * math.pi) + np.log(self.variances).sum(1))
        for k in range(self.components):  # per component: no (n, K, r) temporary on large pools
            out[:, k] = norm[k] - 0.5 * (((x - self.means[k]) ** 2) / self.variances[k]).sum(1)
        return out

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Log-likelihood of each row of `x` under the mixture, shape (n,)."""
        return logsumexp(self.component_log_prob(x))


def logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=1)
    return m + np.log(np.exp(a - m[:, None]).sum(1))


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to squared distance."""
    n = len(x)
    centres = [x[rng.integers(n)]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = int(rng.integers(n)) if total <= 0 else int(rng.choice(n, p=d2 / total))
        centres.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    return np.stack(centres)


def _lloyd(x: np.ndarray, centres: np.ndarray, iters: int) -> np.ndarray:
    for _ in range(iters):
        assign = (((x[:, None, :] - centres[None]) ** 2).sum(-1)).argmin(1)
        new = centres.copy()
        for j in range(len(centres)):
            members = x[assign == j]
            if len(members):  # an empty cluster keeps its centre
                new[j] = members.mean(0)
        if np.allclose(new, centres):
            break
        centres = new
    return centres


def fit_gmm(x: np.ndarray, *, components: int, seed: int = 0, max_iter: int = 300, tol: float = 1e-6,
            var_floor: float = VAR_FLOOR, kmeans_iter: int = 10,
            min_count: float = MIN_COMPONENT_COUNT) -> tuple[GaussianMixture, dict[str, Any]]:
    """EM for a diagonal Gaussian mixture (float64), k-means++ then Lloyd initialisation, seeded.

    Variances are floored at `var_floor` times the data's per-dimension variance (a collapsing
    component cannot drive the likelihood to infinity). Components explaining fewer than
    `min_count` samples are dropped as EM goes. Stops when the mean log-likelihood improves
    by less than `tol`. Returns the mixture and {iterations, converged, mean_log_likelihood}.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise NuwaError(f"features must be a finite (n, r) array, got shape {x.shape}")
    if isinstance(components, bool) or not isinstance(components, (int, np.integer)) or components < 1:
        raise NuwaError(f"components K={components!r} must be an integer >= 1")
    n, r = x.shape
    if n < components:
        raise NuwaError(f"components K={components} exceeds the {n} samples")
    rng = np.random.default_rng(seed)
    floor = var_floor * x.var(0) + 1e-12
    centres = _lloyd(x, kmeans_pp(x, int(components), rng), kmeans_iter)
    assign = (((x[:, None, :] - centres[None]) ** 2).sum(-1)).argmin(1)
    resp = np.zeros((n, len(centres)))
    resp[np.arange(n), assign] = 1.0
    prev, converged, it = -np.inf, False, 0
    gmm = None
    for it in range(1, max_iter + 1):
        gmm = _m_step(x, resp, floor, min_count)
        logp = gmm.component_log_prob(x)
        ll = logsumexp(logp)
        resp = np.exp(logp - ll[:, None])
        mean_ll = float(ll.mean())
        if mean_ll - prev < tol:
            converged = True
            break
        prev = mean_ll
    gmm = _m_step(x, resp, floor, min_count)  # parameters consistent with the last E-step
    return gmm, dict(iterations=it, converged=converged, mean_log_likelihood=float(gmm.log_prob(x).mean()))


def _m_step(x: np.ndarray, resp: np.ndarray, floor: np.ndarray, min_count: float) -> GaussianMixture:
    counts = resp.sum(0)
    keep = counts >= min_count
    if not keep.any():  # cannot happen with n >= min_count, but never return an empty mixture
        keep = counts == counts.max()
    resp, counts = resp[:, keep], counts[keep]
    means = (resp.T @ x) / counts[:, None]
    variances = np.stack([(resp[:, k] @ (x - means[k]) ** 2) / counts[k] for k in range(len(counts))])
    return GaussianMixture(weights=counts / counts.sum(), means=means, variances=np.maximum(variances, floor))
