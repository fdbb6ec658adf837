"""Selection rules: the cumulative-importance share (Eq. 6), SVD energy, and size rounding."""
from __future__ import annotations

import math

import torch


def cumulative_keep(scores: torch.Tensor, rho: float) -> torch.Tensor:
    """Indices of the fewest units whose share of the total importance is >= rho (Eq. 6).

    Ties are broken by index so that the rule is deterministic. rho <= 0 keeps nothing; the
    caller enforces per-layer minimums.
    """
    scores = scores.double().flatten()
    if rho <= 0 or scores.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    order = _order(scores)
    total = scores.sum()
    if total <= 0:
        return order  # no signal: keep everything rather than guess
    share = scores[order].cumsum(0) / total
    m = int(torch.searchsorted(share, torch.tensor(rho, dtype=share.dtype) - 1e-12).item()) + 1
    return order[: min(m, scores.numel())]


def _order(scores: torch.Tensor) -> torch.Tensor:
    # Stable sort on (-score, index): deterministic across runs and platforms.
    return torch.sort(-scores, stable=True).indices


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    return _order(scores.double().flatten())[:k]


def energy_rank(sigmas: torch.Tensor, rho: float) -> int:
    """Smallest r whose retained energy sum(s[:r]^2)/sum(s^2), averaged over heads, is >= rho.

    `sigmas` is (heads, dims); the paper uses one r for all heads of a layer.
    """
    e = sigmas.double() ** 2
    total = e.sum(dim=1, keepdim=True).clamp_min(1e-300)
    mean_share = (e.cumsum(dim=1) / total).mean(dim=0)
    n = sigmas.shape[1]
    if rho <= 0:
        return 1
    r = int(torch.searchsorted(mean_share, torch.tensor(rho, dtype=mean_share.dtype) - 1e-12).item()) + 1
    return max(1, min(r, n))


def round_size(n: int, full: int, multiple: int) -> int:
    """Round a kept size up to a multiple of `multiple` (hardware-friendly), never above `full`.

    Layers smaller than two multiples are left exact: rounding would barely prune them.
    """
    n = max(1, n)
    if multiple <= 1 or full < 2 * multiple:
        return min(n, full)
    return min(full, multiple * math.ceil(n / multiple))
