"""Intervals, p-values and verdicts for the claims ledger (pure numpy).

A claim "A beats B" is decided by a 95 % interval of the difference of mean accuracy, A - B: it
*holds* when the interval lies wholly on the claimed side of 0, is *contradicted* when it lies
wholly on the other side, and is *inconclusive* otherwise.

Accuracy comparisons are paired and treat both seeds and test images as random samples
(`crossed_interval`). Per cell (one sub-task at one rate, say) the per-(seed, image) difference
d[s, i] = A - B follows a crossed random-effects model, d = mu + u_s + v_i + e_si: u is what a
seed does to the difference (a different split, selection and recovery), v what an image does
(every seed and both methods see the same test images), e the rest. The variance of the mean
difference, sigma_u^2 / S + sigma_v^2 / N + sigma_e^2 / (S N), splits into a seed term, the spread
of the S per-seed means (MS_seed / (S N), which holds the residual too), and an image term, what
the images add beyond it ((MS_image - MS_residual) / (S N), from the two-way analysis of
variance, never below 0). The seed term keeps Student's t with S - 1 degrees of freedom and the
image term, estimated from thousands of images, the normal quantile; the half-width is
sqrt(t^2 seed term + z^2 image term). With three seeds whose differences disagree that is a
t-interval on the per-seed means with 2 degrees of freedom (t = 4.30, where a percentile
bootstrap of three seeds acts like 1.96 on a variance it underestimates by a third); with one seed
it is the paired interval over images and is labelled so ("1 seed: images only"). Its coverage is
measured by simulation in tests/test_coverage.py. A pooled claim builds one array over every cell,
seeds matched by number and images by their index in the data set, so cells that share seeds and
images enter once, not as if they were independent; images that belong to different sets of cells
(different sub-tasks) are different strata, and the image term is taken within each.

Claims made of several comparisons ("A beats every B", "on every sub-task") control the
family-wise error (`decide`): they hold when every comparison holds at 5 % (an intersection-union
test needs no correction), and are contradicted only when a comparison is contradicted after
Holm's step-down correction.

`paired_bootstrap` (the percentile bootstrap over seeds and images the ledger used before) is
kept for the coverage comparison in the tests; nothing decides by it.
"""
from __future__ import annotations

import math
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
    p: float | None = None  # two-sided p-value of "difference = 0", where the method gives one
    seeds: int | None = None  # seeds behind it (1: the interval covers images only)
    df: float | None = None  # degrees of freedom of the t-interval

    def pts(self) -> str:
        """In percentage points, e.g. "+1.2 pts [+0.4, +2.0]" (for differences of accuracies)."""
        e, lo, hi = (round(100 * x, 1) + 0.0 for x in (self.estimate, self.lo, self.hi))  # + 0.0: no "-0.0"
        return f"{e:+.1f} pts [{lo:+.1f}, {hi:+.1f}]"

    def plain(self, unit: str = "", fmt: str = "+.2f") -> str:
        return f"{self.estimate:{fmt}}{unit} [{self.lo:{fmt}}, {self.hi:{fmt}}]"


# ---- Student's t (no scipy: the regularised incomplete beta by its continued fraction) ----------
def _betacf(a: float, b: float, x: float) -> float:
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` (> 0, not necessarily whole) degrees of freedom."""
    if math.isinf(df):
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def _t_pdf(t: float, df: float) -> float:
    if math.isinf(df):
        return math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t (q in (0.5, 1)): Newton's method on `t_sf`, kept inside a
    bracket that bisection shrinks whenever a step would leave it."""
    tail = 1.0 - q
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
    x = 0.5 * (lo + hi)
    for _ in range(100):
        f = t_sf(x, df) - tail
        if f > 0:
            lo = x
        else:
            hi = x
        step = f / max(_t_pdf(x, df), 1e-300)  # d sf / dt = -pdf
        x_new = x + step
        x_new = x_new if lo < x_new < hi else 0.5 * (lo + hi)
        if abs(x_new - x) < 1e-12 * max(1.0, x):
            return x_new
        x = x_new
    return x


# ---- the seed-by-image interval --------------------------------------------------------------------
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


def _joint(diffs: Sequence[np.ndarray], images: Sequence[Sequence[int] | None] | None) -> tuple[np.ndarray, np.ndarray]:
    """One (seeds, images) array Z whose per-seed row sums average to the estimate (the mean over
    cells of each cell's mean difference, every cell weighing the same), and each column's stratum.

    A cell's column j lands on its image's global column (images given) or on a column of its own.
    An image's stratum is the set of cells that contain it: images of one stratum are exchangeable,
    images of different strata (different sub-tasks) are not, so their differences in level are
    not sampling noise. A one-seed cell is the same for every seed."""
    seeds = max(d.shape[0] for d in diffs)
    if any(d.shape[0] not in (1, seeds) for d in diffs):
        raise ValueError(f"cells with different seed counts: {sorted({d.shape[0] for d in diffs})}")
    images = list(images) if images is not None else [None] * len(diffs)
    if len(images) != len(diffs):
        raise ValueError("one image list per cell")
    cols, keys = [], {}
    for c, (d, ids) in enumerate(zip(diffs, images)):
        ids = [("cell", c, j) for j in range(d.shape[1])] if ids is None else [("image", int(i)) for i in ids]
        if len(ids) != d.shape[1] or len(set(ids)) != len(ids):
            raise ValueError(f"cell {c}: {len(ids)} image ids for {d.shape[1]} images, or repeated ids")
        cols.append(np.array([keys.setdefault(k, len(keys)) for k in ids]))
    z = np.zeros((seeds, len(keys)))
    member = np.zeros((len(diffs), len(keys)), dtype=bool)
    for c, (d, col) in enumerate(zip(diffs, cols)):
        z[:, col] += np.broadcast_to(d, (seeds, d.shape[1])) / (len(diffs) * d.shape[1])
        member[c, col] = True
    _, strata = np.unique(member.T, axis=0, return_inverse=True)
    return z, strata.ravel()


def crossed_interval(cells: Iterable[tuple], *, images: Sequence[Sequence[int] | None] | None = None,
                     level: float = LEVEL) -> Interval:
    """Interval of mean accuracy A - B over `cells` (each a pair (a, b) of aligned arrays (seeds,
    images) or (images,) of 0/1 correctness or any per-image score), seeds and images random.

    `images`, one list per cell, names each column's test image in the data set: cells that share
    an image count it once (a pooled claim over rates of one sub-task). Seeds are matched by
    position. The mean over cells weighs every cell the same."""
    diffs = [_as_cell(a, b) for a, b in cells]
    if not diffs:
        raise ValueError("no cells to compare")
    z, strata = _joint(diffs, images)
    s = z.shape[0]
    per_seed = z.sum(1)
    mean = float(per_seed.mean())
    # What the images add: per stratum, the spread of the images' seed-averaged contributions
    # (n_k times their variance), less the seed-by-image residual that the seed term holds already.
    v_cols = v_res = 0.0
    for k in np.unique(strata):
        zk = z[:, strata == k]
        n = zk.shape[1]
        if n < 2:
            continue
        col = zk.mean(0)
        v_cols += n * float(col.var(ddof=1))
        if s > 1:
            resid = zk - zk.mean(1, keepdims=True) - col[None] + zk.mean()
            v_res += n * float((resid ** 2).sum()) / ((s - 1) * (n - 1)) / s
    if v_cols == 0.0 and z.shape[1] < 2:
        raise ValueError("fewer than two images")
    if s == 1:  # one seed: the paired interval over images, nothing about seeds
        v_seed, v_image, df = 0.0, v_cols, math.inf
    else:
        # The seed term is the spread of the per-seed estimates (it holds the residual too) and keeps
        # its S - 1 degrees of freedom: three seeds cannot show that seeds do not matter. What the
        # images add beyond it is estimated from thousands of images: its quantile is the normal's.
        v_seed, v_image, df = float(per_seed.var(ddof=1)) / s, max(v_cols - v_res, 0.0), s - 1.0
    return _interval(mean, v_seed, v_image, df, s, level)


def _half(v_seed: float, v_image: float, df: float, level: float) -> float:
    q = 0.5 + level / 2
    return math.sqrt(t_quantile(q, df) ** 2 * v_seed + t_quantile(q, math.inf) ** 2 * v_image)


def _interval(mean: float, v_seed: float, v_image: float, df: float, seeds: int, level: float) -> Interval:
    """mean +- sqrt(t^2 v_seed + z^2 v_image), and the p-value: the level at which it touches 0."""
    if v_seed + v_image <= 0.0:
        return Interval(mean, mean, mean, p=1.0 if mean == 0 else 0.0, seeds=seeds, df=df)
    half = _half(v_seed, v_image, df, level)
    # The p-value: the two-sided level at which the half-width is |mean| (bisection in log p).
    lo, hi = math.log(1e-12), 0.0
    if _half(v_seed, v_image, df, 1 - math.exp(lo)) <= abs(mean):
        hi = lo
    for _ in range(45 if hi > lo else 0):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _half(v_seed, v_image, df, 1 - math.exp(mid)) > abs(mean) else (lo, mid)
    p = math.exp(0.5 * (lo + hi))
    return Interval(mean, mean - half, mean + half, p=p, seeds=seeds, df=df)


# ---- bootstraps ------------------------------------------------------------------------------------
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
    """The ledger's former interval, kept to measure its coverage against `crossed_interval`'s:
    a percentile bootstrap that resamples seeds, then images, independently per cell. With three
    seeds it is too narrow (tests/test_coverage.py)."""
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


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error at any level, no assumption on how the
    comparisons depend on each other)."""
    p = [float(x) for x in p]
    order = sorted(range(len(p)), key=p.__getitem__)
    out, running = [1.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def all_of(verdicts: Iterable[str]) -> str:
    """A claim made of several comparisons ("A beats every B", an ordering): holds when every one
    holds, contradicted when any is contradicted, inconclusive otherwise (a comparison that could
    not be measured counts as inconclusive); not measured when none was. The verdicts given must
    already be corrected for multiplicity where they can contradict (`decide`)."""
    v = list(verdicts)
    if not v or all(x == NOT_MEASURED for x in v):
        return NOT_MEASURED
    if CONTRADICTED in v:
        return CONTRADICTED
    return HOLDS if all(x == HOLDS for x in v) else INCONCLUSIVE


def decide(intervals: Sequence[Interval | None], direction: int = 1, alpha: float = 1 - LEVEL) -> list[str]:
    """Each comparison's verdict inside a claim of several: "holds" by its own 95 % interval (every
    one must hold for the claim to: an intersection-union test), "contradicted" only when its
    Holm-adjusted p-value is below `alpha` and its estimate is on the wrong side. An interval
    without a p-value (a bootstrap) keeps its own verdict; None is not measured."""
    ps = [iv.p for iv in intervals if iv is not None and iv.p is not None]
    adjusted = iter(holm(ps))
    out = []
    for iv in intervals:
        if iv is None:
            out.append(NOT_MEASURED)
            continue
        own = verdict_of(iv, direction)
        if iv.p is None:
            out.append(own)
            continue
        p_adj = next(adjusted)
        out.append(CONTRADICTED if own == CONTRADICTED and p_adj < alpha else
                   HOLDS if own == HOLDS else INCONCLUSIVE)
    return out
