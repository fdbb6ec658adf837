"""The claims ledger's building blocks: a claim, and the paired comparison of two sets of table rows.

Rows (of table3_long or an ablation table) carry packed per-image correctness (`correct`). A
comparison pairs the rows of A and B cell by cell (a sub-task at a rate, say), leaves out the
cells whose achieved rates differ by more than `RATE_TOLERANCE` (a method that prunes less would
win for free), and takes the seed-by-image interval of the difference over the rest
(`stats.crossed_interval`): seeds paired by number, images by their index in the data set where
the caller gives it (`images`), so cells that share them enter once. A claim of several
comparisons is decided with Holm's correction (`stats.decide`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..options import RATE_TOLERANCE  # two models are at equal cost when their achieved rates differ by at most this
from .stats import NOT_MEASURED, Interval, all_of, crossed_interval, decide, unpack_correct, verdict_of


@dataclass(frozen=True)
class Claim:
    id: str
    source: str  # where the paper makes it
    statement: str
    verdict: str  # holds | contradicted | inconclusive | not measured
    measured: str
    interval: tuple[float, float, float] | None = None  # (lo, hi, estimate) of the deciding comparison
    seeds: int | None = None  # the fewest seeds behind a comparison of the claim (1: images only)


def equal_cost(a, b, tolerance: float = RATE_TOLERANCE):
    """|a - b| <= tolerance, up to float rounding (rates are stored to 4 decimals)."""
    return abs(a - b) <= tolerance + 1e-9


def missing(cid: str, source: str, statement: str, what: str) -> Claim:
    return Claim(cid, source, statement, NOT_MEASURED, f"not measured: {what}")


@dataclass
class Pairing:
    """Aligned cells of A and B: (cell key, A (seeds, images), B (seeds, images)), with each cell's
    seeds (() where a side has none: the base, a sweep) and test-image ids (None: unknown)."""
    cells: list[tuple[tuple, np.ndarray, np.ndarray]] = field(default_factory=list)
    seeds: list[tuple] = field(default_factory=list)
    images: list[np.ndarray | None] = field(default_factory=list)
    left_out: int = 0  # not at equal cost
    unpaired: int = 0  # no per-image correctness, unaligned images, or no common seed
    seed_runs_alone: int = 0  # runs of a seed the other side lacks (left out of the pairing)

    def counts(self) -> str:
        text = f"{len(self.cells)} cell{'s' if len(self.cells) != 1 else ''} compared"
        seeds = sorted({s for ss in self.seeds for s in ss})
        if seeds:
            text += f" over seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}"
        if self.seed_runs_alone:
            text += f", {self.seed_runs_alone} run{'s' if self.seed_runs_alone != 1 else ''} of a seed the other side lacks left out"
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


def _stack(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray, tuple, int]:
    """Seeds paired by number; a side without seeds (the base, a sweep) is one vector for all.
    Returns both stacks, the seeds compared and how many runs had no partner seed (left out)."""
    if None in a or None in b:
        seeds = tuple(sorted(k for k in (a if None not in a else b) if k is not None))
        return np.stack(list(a.values())), np.stack(list(b.values())), seeds, 0
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("no common seed")
    alone = len(set(a) ^ set(b))
    return np.stack([a[s] for s in common]), np.stack([b[s] for s in common]), tuple(common), alone


def pair(a: pd.DataFrame, b: pd.DataFrame, keys: Sequence[str], b_keys: Sequence[str] | None = None,
         rate_tolerance: float | None = RATE_TOLERANCE,
         images: Mapping[str, np.ndarray] | None = None) -> Pairing:
    """Cells of A's rows by `keys`, each paired with B's rows of the same `b_keys` (default `keys`:
    a subset pairs, e.g., every rate of an edge model with the one base row of its sub-task).
    `images` maps a sub-task to its test images' indices in the data set, in evaluation order (a
    cell evaluated on the first n of them gets the first n ids)."""
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
            va, vb, seeds, alone = _stack(_by_seed(ga), _by_seed(gb))
            if va.shape[-1] != vb.shape[-1]:
                raise ValueError("unaligned images")
        except ValueError:
            out.unpaired += 1
            continue
        ids = None
        if images is not None and "subtask" in keys and k[keys.index("subtask")] in images:
            known = np.asarray(images[k[keys.index("subtask")]])
            ids = known[:va.shape[-1]] if len(known) >= va.shape[-1] else None
        out.cells.append((k, va, vb))
        out.seeds.append(seeds)
        out.images.append(ids)
        out.seed_runs_alone += alone
    return out


@dataclass(frozen=True)
class Result:
    """One comparison's outcome: its verdict, interval and a line for the ledger."""
    verdict: str
    interval: Interval | None
    text: str


def _seed_note(iv: Interval) -> str:
    return " (1 seed: images only)" if iv.seeds == 1 else ""


def compare(p: Pairing, label: str, direction: int = 1) -> Result:
    """A pooled comparison with its seed-by-image interval (stats.crossed_interval): the mean over
    p's cells, their shared seeds and images counted once;
    `label` names it in the text ("nuwa vs random")."""
    if not p.cells:
        return Result(NOT_MEASURED, None, f"{label}: not measured, {p.why_none()}")
    seeded = {s for s in p.seeds if s}
    cells, note = [(va, vb) for _, va, vb in p.cells], ""
    if len(seeded) > 1:  # cells ran different seeds: pool over the seeds every cell has
        common = sorted(set.intersection(*(set(s) for s in seeded)))
        if not common:
            return Result(NOT_MEASURED, None, f"{label}: not measured, no seed common to every cell")
        cells = [(va, vb) if not s else (va[[s.index(c) for c in common]] if len(va) > 1 else va,
                                         vb[[s.index(c) for c in common]] if len(vb) > 1 else vb)
                 for (va, vb), s in zip(cells, p.seeds)]
        note = f"; pooled over the seeds every cell has ({', '.join(map(str, common))})"
    iv = crossed_interval(cells, images=p.images)
    return Result(verdict_of(iv, direction), iv, f"{label} {iv.pts()}{_seed_note(iv)} ({p.counts()}{note})")


def every_cell(p: Pairing, label: str, name, direction: int = 1) -> list[Result]:
    """One comparison per cell (claims made "on every sub-task"); `name(key)` labels a cell."""
    out = []
    for k, va, vb in p.cells:
        iv = crossed_interval([(va, vb)])
        out.append(Result(verdict_of(iv, direction), iv, f"{label} {name(k)} {iv.pts()}{_seed_note(iv)}"))
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


def corrected(results: Sequence[Result], direction: int = 1) -> list[Result]:
    """Several comparisons of one claim, each verdict corrected for the others (`stats.decide`:
    holds by its own interval, contradicted only under Holm's correction)."""
    if len(results) < 2:
        return list(results)
    verdicts = decide([r.interval if r.verdict != NOT_MEASURED else None for r in results], direction)
    return [Result(v if r.interval is not None and r.interval.p is not None else r.verdict, r.interval, r.text)
            for v, r in zip(verdicts, results)]


def make(cid: str, source: str, statement: str, results: Sequence[Result], direction: int = 1,
         prefix: str = "") -> Claim:
    if not results:
        return missing(cid, source, statement, prefix or "nothing to compare")
    results = corrected(results, direction)
    v, iv = combine(results, direction)
    tested = [r for r in results if r.interval is not None and r.interval.p is not None]
    holm = f"Holm over {len(tested)} comparisons" if len(tested) > 1 else ""
    text = "; ".join(x for x in (prefix, holm) if x)
    text = (text + "; " if text else "") + "; ".join(r.text for r in results)
    if v == NOT_MEASURED:
        text = "not measured: " + text
    seeds = [r.interval.seeds for r in results if r.interval is not None and r.interval.seeds is not None]
    return Claim(cid, source, statement, v, text, None if iv is None else (iv.lo, iv.hi, iv.estimate),
                 min(seeds) if seeds else None)
