"""Paper tables from per-derivation results: Table 3 (long and by method) and the derivation cost.

Inputs are the workflow's small JSON records (results/PROFILE/metrics/... and base_eval/...), so
the builders are plain functions of dicts and can be checked on hand-made fixtures.
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd

BASE_FULL = "base (full classifier)"
BASE_SLICED = "base (sliced classifier)"
METHOD_ORDER = (BASE_FULL, BASE_SLICED, "nuwa", "nuwa-accuracy", "nuwa-nodepth", "random", "nvit", "xpruner")
LONG_COLUMNS = ("base", "subtask", "kind", "n_classes", "method", "alpha", "seed", "top1", "top1_before_finetune",
                "params", "flops", "rate_achieved", "depth", "embed_dim", "derive_seconds", "passes",
                "finetune_seconds", "correct", "correct_before_finetune")


def _order(column: pd.Series) -> pd.Series:
    if column.name == "method":
        rank = {m: i for i, m in enumerate(METHOD_ORDER)}
        return column.map(lambda m: rank.get(m, len(rank)))
    return column


def table3_long(metrics: Iterable[dict], base_evals: Iterable[tuple[dict, dict]]) -> pd.DataFrame:
    """One row per derivation (test top-1 after and before fine-tuning, sizes, rate, cost) and two
    base rows per sub-task (full and sliced classifier). `base_evals`: (pair, eval) with pair =
    {base, subtask, kind} and eval = `nuwa eval` output (top1, top1_sliced, classes; correct and
    correct_sliced with --per-image). `correct` / `correct_before_finetune`: the packed per-image
    correctness (`nuwa.correctness`), None where the records have none."""
    derived = list(metrics)
    sizes = {m["base"]: (m["base_params"], m["base_flops"]) for m in derived}
    rows = []
    for pair, e in base_evals:
        params, flops = sizes.get(pair["base"], (None, None))
        for method, top1, correct in ((BASE_FULL, e["top1"], e.get("correct")),
                                      (BASE_SLICED, e["top1_sliced"], e.get("correct_sliced"))):
            rows.append(dict(base=pair["base"], subtask=pair["subtask"], kind=pair["kind"],
                             n_classes=len(e["classes"]), method=method, alpha=0.0, top1=top1, params=params,
                             flops=flops, rate_achieved=0.0, correct=correct))
    for m in derived:
        rows.append(dict(base=m["base"], subtask=m["subtask"], kind=m["kind"], n_classes=len(m["classes"]),
                         method=m["method"], alpha=m["alpha"], seed=m["seed"], top1=m["test_top1_finetuned"],
                         top1_before_finetune=m["test_top1_pruned"], params=m["params"], flops=m["flops"],
                         rate_achieved=m["rate_achieved"], depth=m["depth"], embed_dim=m["embed_dim"],
                         derive_seconds=m["derive_seconds"], passes=m.get("passes"),
                         finetune_seconds=m.get("finetune_seconds"), correct=m.get("test_correct_finetuned"),
                         correct_before_finetune=m.get("test_correct_pruned")))
    table = pd.DataFrame(rows, columns=list(LONG_COLUMNS))
    table = table.sort_values(["base", "subtask", "method", "alpha", "seed"], key=_order, na_position="first")
    table = table.astype({"seed": "Int64", "depth": "Int64", "embed_dim": "Int64", "passes": "Int64",
                          "params": "Int64", "flops": "Int64"}).reset_index(drop=True)
    for col in ("top1", "top1_before_finetune", "alpha", "rate_achieved", "derive_seconds", "finetune_seconds"):
        table[col] = table[col].astype(float).round(4)
    return table


def shared_subtasks(long: pd.DataFrame) -> pd.DataFrame:
    """The rows of the (base, sub-task) pairs on which every derivation method was run: methods
    are only compared on the same sub-tasks."""
    derived = long[~long.method.isin((BASE_FULL, BASE_SLICED))]
    methods = set(derived.method)
    covered = derived.groupby(["base", "subtask"]).method.agg(lambda m: set(m) == methods)
    keep = set(covered[covered].index)
    return long[[(b, s) in keep for b, s in zip(long.base, long.subtask)]]


def table3_by_method(long: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: one row per method, one column per (sub-task kind, alpha), mean test
    top-1 over the shared sub-tasks and the seeds; the base rows repeat their accuracy per alpha."""
    rows = shared_subtasks(long)
    alphas = sorted(a for a in rows.alpha.unique() if a > 0)
    out = []
    for method, g in sorted(rows.groupby("method"), key=lambda kv: _order(pd.Series([kv[0]], name="method"))[0]):
        row = dict(method=method, subtasks=", ".join(sorted(set(g.subtask))))
        for kind in sorted(rows.kind.unique()):
            k = g[g.kind == kind]
            for a in alphas:
                cell = k if method in (BASE_FULL, BASE_SLICED) else k[k.alpha == a]
                row[f"{kind} a={a:g}"] = round(float(cell.top1.mean()), 4) if len(cell) else None
            for a in alphas:  # each requested alpha's achieved rate on its own (a mean over alphas says nothing)
                if method not in (BASE_FULL, BASE_SLICED):
                    cell = k[k.alpha == a]
                    row[f"{kind} a={a:g} rate achieved"] = round(float(cell.rate_achieved.mean()), 4) if len(cell) else None
        out.append(row)
    return pd.DataFrame(out)


def headline(long: pd.DataFrame) -> dict:
    """The numbers `dvc metrics` tracks (metrics.json): per method, means over the (base, sub-task)
    pairs every method ran on, so no method's mean includes sub-tasks another's lacks; the base
    rows over the same pairs."""
    rows = shared_subtasks(long)
    derived = rows[~rows.method.isin((BASE_FULL, BASE_SLICED))]
    out: dict = dict(n_models=int((~long.method.isin((BASE_FULL, BASE_SLICED))).sum()),
                     subtasks=sorted({f"{b}/{s}" for b, s in zip(derived.base, derived.subtask)}))
    for method, g in derived.groupby("method"):
        out[method] = {f"top1_alpha_{a:g}": round(float(x), 4) for a, x in g.groupby("alpha")["top1"].mean().items()}
        out[method]["top1_mean"] = round(float(g["top1"].mean()), 4)
        out[method]["top1_before_finetune_mean"] = round(float(g["top1_before_finetune"].mean()), 4)
        out[method]["rate_achieved_mean"] = round(float(g["rate_achieved"].mean()), 4)
        out[method]["derive_seconds_mean"] = round(float(g["derive_seconds"].mean()), 3)
    mean = lambda m: round(float(rows[rows.method == m].top1.mean()), 4) if (rows.method == m).any() else None  # noqa: E731
    out["base"] = {"top1_full_mean": mean(BASE_FULL), "top1_sliced_mean": mean(BASE_SLICED)}
    return out


def derivation_cost(long: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean wall seconds and forward/backward passes of the pruning itself (recovery
    excluded: it is the same for every method), and the cost relative to NuWa."""
    derived = shared_subtasks(long)
    derived = derived[~derived.method.isin((BASE_FULL, BASE_SLICED))]
    out = []
    for method, g in sorted(derived.groupby("method"), key=lambda kv: _order(pd.Series([kv[0]], name="method"))[0]):
        out.append(dict(method=method, derivations=len(g), derive_seconds_mean=round(float(g.derive_seconds.mean()), 3),
                        passes_mean=round(float(g.passes.astype(float).mean()), 1) if g.passes.notna().any() else None,
                        finetune_seconds_mean=round(float(g.finetune_seconds.mean()), 3)))
    table = pd.DataFrame(out)
    if len(table) and (table.method == "nuwa").any():
        nuwa = float(table.loc[table.method == "nuwa", "derive_seconds_mean"].iloc[0])
        table["seconds_vs_nuwa"] = (table.derive_seconds_mean / nuwa).round(2)
    return table
