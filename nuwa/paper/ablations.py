"""Tables of the ablation studies (paper Tables 1, 5, 6, Figs. 7, 12) from tidy inputs, and the
numbers a claims ledger checks them by.

Inputs: sweep rows (`nuwa.sweep.sweep`, with base/subtask/kind added) and run records (one dict
per ablation derivation: base, subtask, kind, alpha, exclude, global_ranking, svd, gamma_ratio,
top1_pruned, top1 -- after recovery --, n, rate_achieved, params, flops; correct, correct_pruned:
packed per-image correctness, when evaluated per image). Pure pandas, no models. Every table
keeps the `correct` columns its inputs have, for the ledger's paired bootstraps.
"""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from ..options import ADAPTIVE_DIMS, DEFAULT_GAMMA_RATIO
from .ablation_sweep import NUWA_TECHNIQUE

EXCLUDABLE = ADAPTIVE_DIMS
KEYS = ["base", "subtask", "kind"]


def _present(t: pd.DataFrame, cols: list[str]) -> list[str]:
    """`cols` without the optional ones the inputs lack (records made without per-image evaluation)."""
    return [c for c in cols if c in t.columns or c not in ("correct", "correct_pruned", "seed")]


def _reference(sweep: pd.DataFrame) -> pd.DataFrame:
    """The unpruned (classifier-sliced) model's top-1 per sub-task."""
    ref = sweep[sweep.dim == "none"][KEYS + ["top1"]].rename(columns={"top1": "top1_unpruned"})
    return ref.drop_duplicates(KEYS)


def table1(sweep: pd.DataFrame) -> pd.DataFrame:
    """Query-key and value pruning, SVD vs score: one row per (sub-task, dim, rate, technique)."""
    t = sweep[sweep.dim.isin(["qk", "v"]) & sweep.technique.isin(["svd", "score"])]
    t = t.merge(_reference(sweep), on=KEYS, how="left")
    t = t.assign(loss=t.top1_unpruned - t.top1)
    cols = _present(t, KEYS + ["dim", "rate", "technique", "size", "top1", "top1_unpruned", "loss", "n", "params",
                               "flops", "correct"])
    order = dict(qk=0, v=1)
    return (t.assign(_d=t.dim.map(order), _t=(t.technique != "svd").astype(int))
            .sort_values(KEYS + ["_d", "rate", "_t"])[cols].reset_index(drop=True))


def fig12_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """Accuracy vs per-dimension rate for each adaptive dimension, pruned the way NuWa prunes it."""
    t = sweep[sweep.apply(lambda r: NUWA_TECHNIQUE.get(r.dim) == r.technique, axis=1)] if len(sweep) else sweep
    t = t.merge(_reference(sweep), on=KEYS, how="left")
    t = t.assign(loss=t.top1_unpruned - t.top1)
    order = {d: i for i, d in enumerate(EXCLUDABLE)}
    cols = _present(t, KEYS + ["dim", "technique", "rate", "size", "top1", "top1_unpruned", "loss", "n", "params",
                               "flops", "correct"])
    return t.assign(_d=t.dim.map(order)).sort_values(KEYS + ["_d", "rate"])[cols].reset_index(drop=True)


def runs_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(records))
    if df.empty:
        return df
    df["exclude"] = df["exclude"].map(lambda e: ",".join(sorted(e)) if e else "")
    df["gamma_exp"] = df["gamma_ratio"].map(lambda g: float(g[1]))
    df["gamma_emb"] = df["gamma_ratio"].map(lambda g: float(g[2]))
    df["default_ratio"] = df["gamma_ratio"].map(lambda g: tuple(map(float, g)) == DEFAULT_GAMMA_RATIO)
    return df


RUN_COLS = ["seed", "top1_pruned", "top1", "n", "rate_achieved", "params", "flops", "correct", "correct_pruned"]


def table5(runs: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """NuWa with one adaptive dimension left unpruned, and the full NuWa row, at `alpha` after recovery."""
    t = runs[(runs.alpha == alpha) & runs.global_ranking & (runs.svd != "off") & runs.default_ratio
             & runs.exclude.isin([""] + list(EXCLUDABLE))]
    t = t.assign(excluded=t.exclude.replace("", "none"))
    full = t[t.excluded == "none"][KEYS + ["top1"]].rename(columns={"top1": "top1_full"})
    t = t.merge(full, on=KEYS, how="left")
    t = t.assign(drop=t.top1_full - t.top1)
    order = {d: i for i, d in enumerate(("none",) + EXCLUDABLE)}
    cols = _present(t, KEYS + ["alpha", "excluded"] + RUN_COLS + ["drop"])
    return t.assign(_o=t.excluded.map(order)).sort_values(KEYS + ["_o"])[cols].reset_index(drop=True)


def table6(runs: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """2 x 2: global (non-fixed-rate) ranking on/off x SVD on/off, at `alpha` after recovery."""
    t = runs[(runs.alpha == alpha) & (runs.exclude == "") & runs.default_ratio]
    t = t.assign(non_fixed_rate=t.global_ranking.astype(bool), svd_on=t.svd != "off")
    neither = t[~t.non_fixed_rate & ~t.svd_on][KEYS + ["top1"]].rename(columns={"top1": "top1_neither"})
    t = t.merge(neither, on=KEYS, how="left")
    t = t.assign(gain=t.top1 - t.top1_neither)
    cols = _present(t, KEYS + ["alpha", "non_fixed_rate", "svd_on", "svd"] + RUN_COLS + ["gain"])
    return t.sort_values(KEYS + ["non_fixed_rate", "svd_on"])[cols].reset_index(drop=True)


def fig7_table(runs: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """gamma_exp x gamma_emb grid (ratios over gamma_qkv) at `alpha`, NuWa otherwise unchanged."""
    t = runs[(runs.alpha == alpha) & (runs.exclude == "") & runs.global_ranking & (runs.svd != "off")]
    t = t[t.gamma_ratio.map(lambda g: float(g[0]) == 1.0)]
    cols = _present(t, KEYS + ["alpha", "gamma_exp", "gamma_emb"] + RUN_COLS)
    return t.sort_values(KEYS + ["gamma_exp", "gamma_emb"])[cols].reset_index(drop=True)


def _mean(t: pd.DataFrame, by: list[str], col: str = "top1") -> dict:
    return {k if isinstance(k, str) else "|".join(map(str, k)): float(v) for k, v in t.groupby(by)[col].mean().items()}


def summary(t1: pd.DataFrame, f12: pd.DataFrame, t5: pd.DataFrame, t6: pd.DataFrame, f7: pd.DataFrame) -> dict:
    """The numbers behind the paper's ablation claims, averaged over sub-tasks (no verdicts on
    thresholds: a ledger decides). Accuracies are test top-1 in [0, 1]."""
    out: dict[str, Any] = {}
    if len(t1):
        wide = t1.pivot_table(index=KEYS + ["dim", "rate"], columns="technique", values="top1").reset_index()
        wide["svd_minus_score"] = wide["svd"] - wide["score"]
        out["table1"] = {
            dim: dict(mean_svd=float(g.svd.mean()), mean_score=float(g.score.mean()),
                      mean_svd_minus_score=float(g.svd_minus_score.mean()),
                      svd_wins=int((g.svd_minus_score > 0).sum()), ties=int((g.svd_minus_score == 0).sum()),
                      comparisons=int(len(g)),
                      by_rate={f"{r:g}": float(v) for r, v in g.groupby("rate").svd_minus_score.mean().items()})
            for dim, g in wide.groupby("dim")}
    if len(f12):
        loss = f12.groupby("dim").loss.mean()
        out["fig12"] = dict(mean_loss=loss.to_dict(), order_by_mean_loss=list(loss.sort_values().index),
                            loss_by_rate={d: {f"{r:g}": float(v) for r, v in g.groupby("rate").loss.mean().items()}
                                          for d, g in f12.groupby("dim")})
    if len(t5):
        acc = t5.groupby("excluded").top1.mean()
        ex = acc.drop("none", errors="ignore")
        out["table5"] = dict(mean_top1=acc.to_dict(), full_top1=float(acc["none"]) if "none" in acc else None,
                             mean_drop=t5[t5.excluded != "none"].groupby("excluded")["drop"].mean().to_dict(),
                             most_harmful_exclusion=str(ex.idxmin()) if len(ex) else None)
    if len(t6):
        acc = t6.groupby(["non_fixed_rate", "svd_on"]).top1.mean()
        cells = {f"non_fixed_rate={a},svd={b}": float(v) for (a, b), v in acc.items()}
        best = acc.idxmax()
        out["table6"] = dict(mean_top1=cells, best=f"non_fixed_rate={best[0]},svd={best[1]}",
                             both_on_is_best=bool((True, True) in acc and acc[(True, True)] >= acc.max()))
    if len(f7):
        acc = f7.groupby(["gamma_exp", "gamma_emb"]).top1.mean()
        best = acc.idxmax()
        exp_hi = acc.index.get_level_values(0).max()
        ge = acc[[e >= d for e, d in acc.index]]
        lt = acc[[e < d for e, d in acc.index]]
        out["fig7"] = dict(mean_top1={f"exp={e:g},emb={d:g}": float(v) for (e, d), v in acc.items()},
                           best=dict(gamma_exp=float(best[0]), gamma_emb=float(best[1]), top1=float(acc.max())),
                           best_has_highest_exp=bool(best[0] == exp_hi), best_has_exp_ge_emb=bool(best[0] >= best[1]),
                           mean_top1_exp_ge_emb=float(ge.mean()) if len(ge) else None,
                           mean_top1_exp_lt_emb=float(lt.mean()) if len(lt) else None)
    return out
