"""Bootstrap intervals and verdicts for the claims ledger (pure numpy).

A claim "A beats B" is decided by a 95 % percentile bootstrap interval of the difference of mean
accuracy, A - B: it *holds* when the interval lies wholly on the claimed side of 0, is
*contradicted* when it lies wholly on the other side, and is *inconclusive* otherwise.

Accuracy comparisons are paired and hierarchical: per cell (one sub-task at one rate, say), the
seeds are resampled with replacement, then the test images with replacement, the same image
indices for both models (they were evaluated on the same images in the same order), so a
difference that both models share on an image cancels out. The images are crossed with the
seeds (every seed is tested on the same images), hence one image draw per replicate and cell.
The estimate is the mean over cells of each cell's mean difference, every cell weighing the same
(as the paper's tables average over sub-tasks). Quantities over units that are not images (a
neuron's class count, a run's seconds) get an unpaired two-sample bootstrap.

Every bootstrap starts from a fixed RNG seed: the ledger is the same bytes on every run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..correctness import pack_correct, unpack_correct  # noqa: F401  (the ledger reads them from here)

N_BOOT = 2000
LEVEL = 0.95
SEED = 0
HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = "holds", "contradicted", "inconclusive", "not measured"
_CHUNK = 250  # replicates drawn at once: bounds memory at ~_CHUNK x images x 8 bytes per cell


@dataclass(frozen=True)
class Interval:
    estimate: float
    lo: float
    hi: float

    def pts(self) -> str:
        """In percentage points, e.g. "+1.2 pts [+0.4, +2.0]" (for differences of accuracies)."""
        return f"{100 * self.estimate:+.1f} pts [{100 * self.lo:+.1f}, {100 * self.hi:+.1f}]"

    def plain(self, unit: str = "", fmt: str = "+.2f") -> str:
        return f"{self.estimate:{fmt}}{unit} [{self.lo:{fmt}}, {self.hi:{fmt}}]"


# ---- bootstraps ------------------------------------------------------------------------------------
def _as_cell(a, b) -> np.ndarray:
    """The per-(seed, image) difference A - B, shape (seeds, images); a 1-d input is one seed, and a
    one-seed side (a base model, a constant) is broadcast over the other side's seeds."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = (a[None] if a.ndim == 1 else a), (b[None] if b.ndim == 1 else b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"unaligned cell: {a.shape[-1]} vs {b.shape[-1]} images")
    d = a - b  # broadcasting raises on unequal seed counts other than 1
    if d.size == 0:
        raise ValueError("empty cell")
    return d


def _percentile(boot: np.ndarray, estimate: float, level: float) -> Interval:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return Interval(float(estimate), float(lo), float(hi))


def _counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """(b, n): how often each of n units is drawn in each of b resamples of size n."""
    idx = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(float)


def paired_bootstrap(cells: Iterable[tuple], *, n_boot: int = N_BOOT, seed: int = SEED,
                     level: float = LEVEL) -> Interval:
    """Interval of mean accuracy A - B over `cells`, each a pair (a, b) of aligned arrays
    (seeds, images) or (images,) of 0/1 correctness (or any per-image score)."""
    diffs = [_as_cell(a, b) for a, b in cells]
    if not diffs:
        raise ValueError("no cells to compare")
    rng = np.random.default_rng(seed)
    boot = np.zeros(n_boot)
    for d in diffs:
        s, n = d.shape
        for start in range(0, n_boot, _CHUNK):
            b = min(_CHUNK, n_boot - start)
            # Counts of each seed / image in a resample: the mean of a resample is a weighted mean.
            ws = _counts(rng, b, s) if s > 1 else np.ones((b, 1))
            wi = _counts(rng, b, n)
            boot[start:start + b] += np.einsum("bs,sn,bn->b", ws, d, wi) / (s * n)
    boot /= len(diffs)
    return _percentile(boot, float(np.mean([d.mean() for d in diffs])), level)


def two_sample_bootstrap(x: Sequence[float], y: Sequence[float], *, n_boot: int = N_BOOT, seed: int = SEED,
                         level: float = LEVEL) -> Interval:
    """Interval of mean(x) - mean(y) for independent samples (units that are not shared images)."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if not x.size or not y.size:
        raise ValueError("an empty sample")
    rng = np.random.default_rng(seed)
    bx = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(1)
    by = y[rng.integers(0, y.size, size=(n_boot, y.size))].mean(1)
    return _percentile(bx - by, float(x.mean() - y.mean()), level)


# ---- verdicts --------------------------------------------------------------------------------------
def verdict(lo: float, hi: float, direction: int = 1) -> str:
    """`direction` +1: the claim is "difference > 0"; -1: "difference < 0"."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, not {direction!r}")
    lo, hi = (lo, hi) if direction == 1 else (-hi, -lo)
    return HOLDS if lo > 0 else CONTRADICTED if hi < 0 else INCONCLUSIVE


def verdict_of(iv: Interval, direction: int = 1) -> str:
    return verdict(iv.lo, iv.hi, direction)


def all_of(verdicts: Iterable[str]) -> str:
    """A claim made of several comparisons ("A beats every B", an ordering): holds when every one
    holds, contradicted when any is contradicted, inconclusive otherwise (a comparison that could
    not be measured counts as inconclusive); not measured when none was."""
    v = list(verdicts)
    if not v or all(x == NOT_MEASURED for x in v):
        return NOT_MEASURED
    if CONTRADICTED in v:
        return CONTRADICTED
    return HOLDS if all(x == HOLDS for x in v) else INCONCLUSIVE
