"""Hardware benchmarks as tables: base vs derived models per runtime and batch size (Table 4), and
measured speedup against the FLOPs bound.

The FLOPs ratio base/edge is the speedup a perfectly compute-bound runtime would reach; the
`of_bound` column is the measured speedup's share of it (the goal: >= 0.8 on ONNX Runtime at a
large batch). Rows come from `nuwa.bench.bench_suite`, one per (model, runtime, batch size).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd
from ..progress import bar

from ..bench import bench_suite
from ..cost import count_flops, count_params
from ..model import EdgeViT
from .table3 import BASE_FULL

# Paper Table 4 (DeiT-Base, ImageNet sub-tasks): speedup of NuWa's edge ViTs over the base.
PAPER_SPEEDUP = {"gpu": {0.2: 1.29, 0.4: 1.47, 0.6: 1.84, 0.8: 2.79},
                 "cpu": {0.2: 1.25, 0.4: 1.43, 0.6: 1.77, 0.8: 2.38}}
BOUND_SHARE_GOAL = 0.8


def bench_models(models: Iterable[tuple[dict, EdgeViT]], *, batch_sizes: Iterable[int], runtimes: Iterable[str],
                 desc: str = "bench", **kw) -> pd.DataFrame:
    """One row per (model, runtime, batch size): the model's labels (base, subtask, alpha, ...),
    its params and FLOPs from the config, and the measured latency. `alpha` None marks a base."""
    rows = []
    models = list(models)
    for labels, model in bar(models, desc=desc, unit="model"):
        size = dict(params=count_params(model.config), flops=count_flops(model.config))
        for r in bench_suite(model, batch_sizes=list(batch_sizes), runtimes=list(runtimes), on_error="record", **kw):
            rows.append(dict(labels, **size, **r))
    return pd.DataFrame(rows)


def table4(bench: pd.DataFrame, accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (base, runtime, batch size, alpha): mean latency over the derived models (sub-tasks),
    speedup over the base, the FLOPs ratio (the bound) and the speedup's share of it; with
    `accuracy` (Table 3 long rows) the mean top-1 and its gain over the base's full classifier,
    as the paper's Table 4 reports it."""
    ok = bench[bench.error.isna()] if "error" in bench else bench  # runtimes that did not work here
    keys = ["base", "runtime", "batch_size"]
    base = ok[ok.alpha.isna()].groupby(keys)[["latency_ms_median", "flops", "params"]].first()
    edge = ok[ok.alpha.notna()]
    rows = []
    for (b, rt, bs, a), g in edge.groupby(keys + ["alpha"]):
        if (b, rt, bs) not in base.index:
            continue
        ref = base.loc[(b, rt, bs)]
        lat = g.latency_ms_median.mean()
        speedup = (ref.latency_ms_median / g.latency_ms_median).mean()
        bound = (ref.flops / g.flops).mean()
        rows.append(dict(base=b, runtime=rt, batch_size=int(bs), alpha=float(a), models=len(g),
                         base_latency_ms=ref.latency_ms_median, latency_ms=lat, speedup=speedup,
                         flops_ratio=bound, of_bound=speedup / bound, params_ratio=(ref.params / g.params).mean(),
                         paper_cpu_speedup=PAPER_SPEEDUP["cpu"].get(round(float(a), 2))))
    out = pd.DataFrame(rows)
    if accuracy is not None and not out.empty and "subtask" in edge:
        acc = accuracy[accuracy.method == "nuwa"]
        full = accuracy[accuracy.method == BASE_FULL].set_index(["base", "subtask"]).top1
        benched = edge[["base", "subtask"]].drop_duplicates()
        acc = acc.merge(benched, on=["base", "subtask"])
        gain = acc.assign(gain=acc.top1 - [full.get((b, s), float("nan")) for b, s in zip(acc.base, acc.subtask)])
        mean = gain.groupby(["base", "alpha"])[["top1", "gain"]].mean()
        out["top1"] = [mean.top1.get((b, a), float("nan")) for b, a in zip(out.base, out.alpha)]
        out["top1_gain_vs_base"] = [mean.gain.get((b, a), float("nan")) for b, a in zip(out.base, out.alpha)]
    return out.sort_values(["base", "runtime", "batch_size", "alpha"]).reset_index(drop=True) if len(out) else out


def speedup_figure(table: pd.DataFrame, path: str | Path, *, title: str) -> None:
    """Measured speedup vs the FLOPs ratio, one series per (runtime, batch size); the bound (y = x),
    the goal (0.8 x bound) and the paper's CPU speedups at the same alphas for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    top = max(table.flops_ratio.max(), table.speedup.max(), 2.5) * 1.05 if len(table) else 3
    ax.plot([1, top], [1, top], color="0.3", lw=1, label="FLOPs bound")
    ax.plot([1, top], [1, BOUND_SHARE_GOAL * top], color="0.6", lw=1, ls=":", label=f"{BOUND_SHARE_GOAL:g} x bound")
    for (rt, bs), g in table.groupby(["runtime", "batch_size"]):
        g = g.sort_values("alpha")
        ax.plot(g.flops_ratio, g.speedup, marker="o", label=f"{rt}, batch {bs}")
    paper = table.drop_duplicates("alpha").dropna(subset=["paper_cpu_speedup"])
    if len(paper):
        ax.scatter(paper.flops_ratio, paper.paper_cpu_speedup, marker="x", color="k",
                   label="paper, Intel CPU (same alpha)")
    ax.set(xlabel="FLOPs ratio base / edge", ylabel="measured speedup", title=title, xlim=(1, top), ylim=(0, top))
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def budget_check(derived_ms: float | None, fresh_ms: float, budget_ms: float) -> dict:
    """A latency-budget derivation, judged by a measurement in a fresh process (the derivation's
    own measurement shares its process's warm caches)."""
    return dict(budget_ms=budget_ms, latency_ms_in_derivation=derived_ms, latency_ms_fresh=fresh_ms,
                meets_budget=bool(fresh_ms <= budget_ms), headroom=1 - fresh_ms / budget_ms)


def rounding_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (round_to, runtime, batch size): top-1, FLOPs, latency and speedup over the exact sizes
    (round_to 1), so the rounding default can be picked from the measurement."""
    ok = rows[rows.error.isna()] if "error" in rows else rows
    exact = ok[ok.round_to == 1].set_index(["runtime", "batch_size"]).latency_ms_median
    out = ok[["round_to", "runtime", "batch_size", "top1", "flops", "params", "latency_ms_median"]].copy()
    out["speedup_vs_exact"] = [exact.get((r, b), float("nan")) / lat for r, b, lat in
                               zip(out.runtime, out.batch_size, out.latency_ms_median)]
    return out.sort_values(["runtime", "batch_size", "round_to"]).reset_index(drop=True)
