"""The claims ledger's building blocks: a claim, and the paired comparison of two sets of table rows.

Rows (of table3_long or an ablation table) carry packed per-image correctness (`correct`). A
comparison pairs the rows of A and B cell by cell (a sub-task at a rate, say), leaves out the
cells whose achieved rates differ by more than `RATE_TOLERANCE` (a method that prunes less would
win for free), and bootstraps the difference over the rest (`stats.paired_bootstrap`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..options import RATE_TOLERANCE  # two models are at equal cost when their achieved rates differ by at most this
from .stats import NOT_MEASURED, Interval, all_of, paired_bootstrap, unpack_correct, verdict_of


@dataclass(frozen=True)
class Claim:
    id: str
    source: str  # where the paper makes it
    statement: str
    verdict: str  # holds | contradicted | inconclusive | not measured
    measured: str
    interval: tuple[float, float, float] | None = None  # (lo, hi, estimate) of the deciding comparison


def equal_cost(a, b, tolerance: float = RATE_TOLERANCE):
    """|a - b| <= tolerance, up to float rounding (rates are stored to 4 decimals)."""
    return abs(a - b) <= tolerance + 1e-9


def missing(cid: str, source: str, statement: str, what: str) -> Claim:
    return Claim(cid, source, statement, NOT_MEASURED, f"not measured: {what}")


@dataclass
class Pairing:
    """Aligned cells of A and B: (cell key, A (seeds, images), B (seeds, images))."""
    cells: list[tuple[tuple, np.ndarray, np.ndarray]] = field(default_factory=list)
    left_out: int = 0  # not at equal cost
    unpaired: int = 0  # no per-image correctness, unaligned images, or no common seed

    def counts(self) -> str:
        text = f"{len(self.cells)} cell{'s' if len(self.cells) != 1 else ''} compared"
        if self.left_out:
            text += f", {self.left_out} left out (achieved rates differ by more than {RATE_TOLERANCE:g})"
        if self.unpaired:
            text += f", {self.unpaired} without aligned per-image results"
        return text

    def why_none(self) -> str:
        if self.left_out:
            return f"no cell at equal cost ({self.counts()})"
        return "no per-image results to compare" if self.unpaired else "no cell where both ran"


def _by_seed(rows: pd.DataFrame) -> dict:
    """{seed: mean per-image correctness of the rows of that seed}; seedless rows under None.
    Several rows of one seed (a group of configurations) average into fractional scores."""
    if "correct" not in rows or rows.correct.isna().any():
        raise ValueError("no per-image correctness")
    seeds = rows.seed if "seed" in rows else pd.Series([None] * len(rows), index=rows.index)
    out: dict = {}
    for s, c in zip(seeds, rows.correct):
        out.setdefault(None if pd.isna(s) else int(s), []).append(unpack_correct(c))
    if len({len(v) for vs in out.values() for v in vs}) != 1:
        raise ValueError("rows of one cell were evaluated on different images")
    return {s: np.mean(vs, axis=0) for s, vs in out.items()}


def _stack(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray]:
    """Seeds paired by number; a side without seeds (the base, a sweep) is one vector for all."""
    if None in a or None in b:
        return np.stack(list(a.values())), np.stack(list(b.values()))
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("no common seed")
    return np.stack([a[s] for s in common]), np.stack([b[s] for s in common])


def pair(a: pd.DataFrame, b: pd.DataFrame, keys: Sequence[str], b_keys: Sequence[str] | None = None,
         rate_tolerance: float | None = RATE_TOLERANCE) -> Pairing:
    """Cells of A's rows by `keys`, each paired with B's rows of the same `b_keys` (default `keys`:
    a subset pairs, e.g., every rate of an edge model with the one base row of its sub-task)."""
    keys, b_keys = list(keys), list(b_keys or keys)
    out = Pairing()
    b_groups = {k if isinstance(k, tuple) else (k,): g for k, g in b.groupby(b_keys, sort=True)} if len(b) else {}
    for k, ga in (a.groupby(keys, sort=True) if len(a) else []):
        k = k if isinstance(k, tuple) else (k,)
        gb = b_groups.get(tuple(k[keys.index(c)] for c in b_keys))
        if gb is None:
            continue
        if rate_tolerance is not None and not equal_cost(ga.rate_achieved.mean(), gb.rate_achieved.mean(),
                                                         rate_tolerance):
            out.left_out += 1
            continue
        try:
            va, vb = _stack(_by_seed(ga), _by_seed(gb))
            if va.shape[-1] != vb.shape[-1]:
                raise ValueError("unaligned images")
        except ValueError:
            out.unpaired += 1
            continue
        out.cells.append((k, va, vb))
    return out


@dataclass(frozen=True)
class Result:
    """One comparison's outcome: its verdict, interval and a line for the ledger."""
    verdict: str
    interval: Interval | None
    text: str


def bootstrap(p: Pairing, label: str, direction: int = 1) -> Result:
    """A pooled comparison (mean over p's cells); `label` names it in the text ("nuwa vs random")."""
    if not p.cells:
        return Result(NOT_MEASURED, None, f"{label}: not measured, {p.why_none()}")
    iv = paired_bootstrap([(va, vb) for _, va, vb in p.cells])
    return Result(verdict_of(iv, direction), iv, f"{label} {iv.pts()} ({p.counts()})")


def every_cell(p: Pairing, label: str, name, direction: int = 1) -> list[Result]:
    """One comparison per cell (claims made "on every sub-task"); `name(key)` labels a cell."""
    out = []
    for k, va, vb in p.cells:
        iv = paired_bootstrap([(va, vb)])
        out.append(Result(verdict_of(iv, direction), iv, f"{label} {name(k)} {iv.pts()}"))
    return out


def combine(results: Iterable[Result], direction: int = 1) -> tuple[str, Interval | None]:
    """`stats.all_of` over several comparisons, with the interval that decides: the weakest (least
    in the claimed direction) of the measured ones whose own verdict is the combined one."""
    results = list(results)
    verdict = all_of(r.verdict for r in results)
    measured = [r for r in results if r.interval is not None]
    deciding = [r for r in measured if r.verdict == verdict] or measured
    weakest = min(deciding, key=lambda r: direction * r.interval.estimate).interval if deciding else None
    return verdict, weakest


def make(cid: str, source: str, statement: str, results: Sequence[Result], direction: int = 1,
         prefix: str = "") -> Claim:
    if not results:
        return missing(cid, source, statement, prefix or "nothing to compare")
    v, iv = combine(results, direction)
    text = (prefix + "; " if prefix else "") + "; ".join(r.text for r in results)
    if v == NOT_MEASURED:
        text = "not measured: " + text
    return Claim(cid, source, statement, v, text, None if iv is None else (iv.lo, iv.hi, iv.estimate))
