"""Accuracy against cost for every method: the points of the Pareto figure.

Each derived model is one point: test top-1 (Table 3 long, after fine-tuning) against its FLOPs
and against its measured batch-1 latency (the `pareto_latency` timings). FLOPs are what the
budget controls; latency is what a device feels, and where depth pruning (fewer sequential
blocks) can beat width pruning of the same FLOPs.
"""
from __future__ import annotations

import pandas as pd

from .table3 import BASE_SLICED

KEYS = ["base", "subtask", "method", "alpha"]


def pareto_points(bench: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """One row per (base, sub-task, method, alpha) timed in `bench` and scored in `long` (first
    seed: latency does not depend on it), plus each sub-task's base with its sliced classifier
    (method BASE_SLICED, alpha 0). Columns: KEYS, top1, rate_achieved, flops, latency_ms, on_front
    (no other point of the sub-task is at least as accurate and at most as costly in latency)."""
    ok = bench[bench.error.isna()] if "error" in bench else bench
    timed = ok[ok.alpha.notna()][KEYS + ["flops", "latency_ms_median"]].rename(
        columns={"latency_ms_median": "latency_ms"})
    seed = long.seed.dropna().min() if "seed" in long and long.seed.notna().any() else None
    scored = long[long.alpha > 0] if seed is None else long[(long.alpha > 0) & (long.seed == seed)]
    points = timed.merge(scored[KEYS + ["top1", "rate_achieved"]], on=KEYS, how="inner")
    base = ok[ok.alpha.isna()][["base", "flops", "latency_ms_median"]].rename(
        columns={"latency_ms_median": "latency_ms"})
    ref = long[long.method == BASE_SLICED][["base", "subtask", "method", "top1"]].merge(base, on="base")
    ref = ref.assign(alpha=0.0, rate_achieved=0.0)
    out = pd.concat([points, ref[points.columns]], ignore_index=True)
    out["on_front"] = [_on_front(out, r) for r in out.itertuples()]
    return out.sort_values(["base", "subtask", "latency_ms"]).reset_index(drop=True)


def _on_front(points: pd.DataFrame, r) -> bool:
    same = points[(points.base == r.base) & (points.subtask == r.subtask)]
    better = same[(same.top1 >= r.top1) & (same.latency_ms <= r.latency_ms)
                  & ((same.top1 > r.top1) | (same.latency_ms < r.latency_ms))]
    return better.empty
