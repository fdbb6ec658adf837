"""The ledger's claims on the ablation tables (Tables 1, 5, 6; Figs. 7, 12) and the interpretation
tables (Table 2, Figs. 2, 8), decided by the same interval rule as Table 3's (`nuwa.paper.claims`).

Ablation tables are those of `nuwa.paper.ablations`, keyed table1, fig12, table5, table6, fig7;
their rows carry packed per-image correctness. Sweep rows (Table 1, Fig. 12) are equal in size by
construction; the ablation derivations (Tables 5, 6, Fig. 7) are compared at equal achieved rate.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .compare import Claim, Result, compare, every_cell, make, missing, pair
from .stats import INCONCLUSIVE, crossed_interval, two_sample_bootstrap, verdict_of

KEYS = ["base", "subtask", "kind"]
STATEMENTS = {
    "table1-svd-beats-score-qk": ("Table 1", "SVD-based pruning keeps more accuracy than score-based pruning for the "
                                  "query-key size (pooled over rates 0.2-0.8, no recovery)"),
    "table1-svd-beats-score-v": ("Table 1", "SVD-based pruning keeps more accuracy than score-based pruning for the "
                                 "value size (pooled over rates 0.2-0.8, no recovery)"),
    "fig12-loss-order": ("Fig. 12", "at the same per-dimension rate the accuracy loss grows in the order query-key < "
                         "value < expansion < embedding"),
    "table5-every-exclusion-hurts": ("Table 5", "leaving any one adaptive dimension unpruned lowers accuracy at "
                                     "alpha = 0.8"),
    "table5-expansion-hurts-most": ("Table 5", "leaving the expansion size unpruned hurts most"),
    "table6-both-techniques-best": ("Table 6", "non-fixed-rate ranking and SVD together give the best accuracy "
                                    "(alpha = 0.8)"),
    "table6-each-technique-helps": ("Table 6", "each technique alone beats neither (alpha = 0.8)"),
    "fig7-high-exp-best": ("Fig. 7", "the highest gamma_exp of the grid gives the best accuracy (alpha = 0.6)"),
    "fig7-exp-below-emb-drops": ("Fig. 7", "accuracy drops when gamma_exp < gamma_emb (alpha = 0.6)"),
}
TABLES = dict(table1="no Table 1 sweep", fig12="no Fig. 12 sweep", table5="no Table 5 runs", table6="no Table 6 runs",
              fig7="no Fig. 7 grid")


def _claim(cid: str, results: list[Result], prefix: str = "", direction: int = 1) -> Claim:
    source, statement = STATEMENTS[cid]
    return make(cid, source, statement, results, direction, prefix)


def _absent(cid: str, what: str) -> Claim:
    source, statement = STATEMENTS[cid]
    return missing(cid, source, statement, what)


def _compare(a: pd.DataFrame, b: pd.DataFrame, label: str, keys: list[str], runs: bool, images) -> Result:
    # Runs are derivations at a requested alpha: compared at equal achieved rate, like Table 3's methods.
    return compare(pair(a, b, keys, rate_tolerance=0.03 if runs else None, images=images), label)


def _table1(t: pd.DataFrame, images=None) -> list[Claim]:
    out = []
    for dim in ("qk", "v"):
        d = t[t.dim == dim]
        r = _compare(d[d.technique == "svd"], d[d.technique == "score"], "SVD - score", KEYS + ["rate"], False, images)
        out.append(_claim(f"table1-svd-beats-score-{dim}", [r]))
    return out


def _fig12(t: pd.DataFrame, images=None) -> Claim:
    """Loss order qk < v < mlp < embed is accuracy order qk > v > mlp > embed: each adjacent pair."""
    order = ["qk", "v", "mlp", "embed"]
    present = [d for d in order if (t.dim == d).any()]
    if len(present) < 2:
        return _absent("fig12-loss-order", "fewer than two dimensions swept")
    results = [_compare(t[t.dim == x], t[t.dim == y], f"{x} - {y}", KEYS + ["rate"], False, images)
               for x, y in zip(present, present[1:])]
    prefix = "accuracy difference of adjacent dimensions" + ("" if present == order else
                                                             f" (only {', '.join(present)} swept)")
    claim = _claim("fig12-loss-order", results, prefix)
    if present != order and claim.verdict != "contradicted":  # part of the order unmeasured: not shown
        claim = Claim(claim.id, claim.source, claim.statement, INCONCLUSIVE, claim.measured, claim.interval,
                      claim.seeds)
    return claim


def _table5(t: pd.DataFrame, images=None) -> list[Claim]:
    full = t[t.excluded == "none"]
    dims = [d for d in dict.fromkeys(t.excluded) if d != "none"]
    if full.empty or not dims:
        return [_absent(c, "Table 5 incomplete") for c in ("table5-every-exclusion-hurts", "table5-expansion-hurts-most")]
    hurts = [_compare(full, t[t.excluded == d], f"full - without {d}", KEYS, True, images) for d in dims]
    out = [_claim("table5-every-exclusion-hurts", hurts)]
    if "mlp" not in dims or len(dims) < 2:
        out.append(_absent("table5-expansion-hurts-most", "the expansion size was not excluded with another"))
    else:
        mlp = t[t.excluded == "mlp"]
        out.append(_claim("table5-expansion-hurts-most", [
            _compare(t[t.excluded == d], mlp, f"without {d} - without mlp", KEYS, True, images) for d in dims if d != "mlp"]))
    return out


def _table6(t: pd.DataFrame, images=None) -> list[Claim]:
    cell = {(a, b): t[(t.non_fixed_rate == a) & (t.svd_on == b)] for a in (True, False) for b in (True, False)}
    if any(g.empty for g in cell.values()):
        return [_absent(c, "Table 6 incomplete") for c in ("table6-both-techniques-best", "table6-each-technique-helps")]
    name = {(True, True): "both", (True, False): "non-fixed-rate only", (False, True): "SVD only",
            (False, False): "neither"}
    best = [_compare(cell[(True, True)], cell[k], f"both - {name[k]}", KEYS, True, images) for k in cell if k != (True, True)]
    helps = [_compare(cell[k], cell[(False, False)], f"{name[k]} - neither", KEYS, True, images)
             for k in ((True, False), (False, True))]
    return [_claim("table6-both-techniques-best", best), _claim("table6-each-technique-helps", helps)]


def _fig7(t: pd.DataFrame, images=None) -> list[Claim]:
    exps = sorted(set(t.gamma_exp))
    if len(exps) < 2:
        high = _absent("fig7-high-exp-best", "one gamma_exp only")
    else:
        top = t[t.gamma_exp == exps[-1]]
        high = _claim("fig7-high-exp-best", [
            _compare(top, t[t.gamma_exp == e], f"exp {exps[-1]:g} - exp {e:g}", KEYS + ["gamma_emb"], True, images)
            for e in exps[:-1]], "at the same gamma_emb")
    lt = t[t.gamma_exp < t.gamma_emb]
    if lt.empty:
        below = _absent("fig7-exp-below-emb-drops", "the grid has no gamma_exp < gamma_emb cell")
    else:
        below = _claim("fig7-exp-below-emb-drops", [_compare(
            t[t.gamma_exp >= t.gamma_emb], lt, "mean of gamma_exp >= gamma_emb - mean of gamma_exp < gamma_emb",
            KEYS + ["gamma_emb"], True, images)], "per gamma_emb, cells averaged per image")
    return [high, below]


def ablation_claims(tables: dict[str, pd.DataFrame | None] | None, images: dict | None = None) -> list[Claim]:
    """The ablation claims from the ablation tables (a missing or empty one: its claims not measured);
    `images`: sub-task -> test-image ids, as for Table 3's claims."""
    tables = {k: v for k, v in (tables or {}).items() if v is not None and len(v)}
    ids = dict(table1=["table1-svd-beats-score-qk", "table1-svd-beats-score-v"], fig12=["fig12-loss-order"],
               table5=["table5-every-exclusion-hurts", "table5-expansion-hurts-most"],
               table6=["table6-both-techniques-best", "table6-each-technique-helps"],
               fig7=["fig7-high-exp-best", "fig7-exp-below-emb-drops"])
    build = dict(table1=_table1, fig12=lambda t, images: [_fig12(t, images)], table5=_table5, table6=_table6,
                 fig7=_fig7)
    out = []
    for name, cids in ids.items():
        out += build[name](tables[name], images) if name in tables else [_absent(c, TABLES[name]) for c in cids]
    return out


# ---- interpretation (Table 2 / Figs. 9-10, Fig. 2, Fig. 8) --------------------------------------------
def neuron_claim(spread: pd.DataFrame | None) -> Claim:
    """Deepest vs shallowest layer measured: mean distinct classes among each neuron's top samples,
    a two-sample bootstrap over the neurons (fewer classes = more class-specific)."""
    cid, source = "table2-deep-neurons-specific", "Table 2, Figs. 9-10"
    statement = "MLP neurons of deep layers are more class-specific than those of shallow layers"
    if spread is None or len(spread) < 2:
        return missing(cid, source, statement, "no neuron table" if spread is None else "fewer than two layers")
    if "distinct_classes_per_neuron" not in spread:
        return missing(cid, source, statement, "the neuron table has no per-neuron counts")
    s = spread.sort_values("layer")
    lo, hi = s.iloc[0], s.iloc[-1]
    iv = two_sample_bootstrap(np.asarray(hi.distinct_classes_per_neuron), np.asarray(lo.distinct_classes_per_neuron))
    return Claim(cid, source, statement, verdict_of(iv, -1),
                 f"distinct classes among each neuron's top-{int(lo.top_k)} samples, layer {int(hi.layer)} - layer "
                 f"{int(lo.layer)}: {iv.plain()} ({lo.all_mean_distinct_classes:.2f} vs "
                 f"{hi.all_mean_distinct_classes:.2f}; {int(lo.neurons)}/{int(hi.neurons)} neurons)",
                 (iv.lo, iv.hi, iv.estimate))


def fig2_claim(table: pd.DataFrame | None) -> Claim:
    from .fig2 import LARGE, TUNED

    cid, source = "fig2-task-specific-beats-larger", "Fig. 2"
    statement = "a small base fine-tuned on a sub-task beats a larger base on it, for every sub-task size"
    if table is None or table.empty:
        return missing(cid, source, statement, "no Fig. 2 table" if table is None else "no subset measured")
    p = pair(table[table.model == TUNED], table[table.model == LARGE], ["size"], rate_tolerance=None)
    if not p.cells:
        return missing(cid, source, statement, p.why_none())
    return make(cid, source, statement, every_cell(p, "fine-tuned - larger,", lambda k: f"{k[0]} classes"))


def fig8_claim(table: pd.DataFrame | None) -> Claim:
    """On composite images (the first sub-task's object left, the second's right), each sub-task's
    edge ViT puts more than half of its rollout on its own object's half. One composite image
    cannot decide it: its shares are reported, the verdict is inconclusive."""
    statement = ("edge ViTs specialised to different classes attend to their own classes' object in the same "
                 "image (attention rollout)")
    cid, source = "fig8-attention-follows-task", "Fig. 8"
    if table is None:
        return missing(cid, source, statement, "no Fig. 8 table")
    comp = table[table.image.str.startswith("composite")]
    order = comp.image.iloc[0].split(":", 1)[1].split("+") if len(comp) else []
    left_task, right_task = (o.strip() for o in order) if len(order) == 2 else (None, None)
    share = {m: (g.rollout_mass_left / (g.rollout_mass_left + g.rollout_mass_right)).to_numpy()
             for m, g in comp.groupby("model")}
    if left_task not in share or right_task not in share:
        return missing(cid, source, statement, "the composite's two sub-tasks do not both have an edge ViT here")
    own = {left_task: share[left_task], right_task: 1 - share[right_task]}  # share on each model's own half
    text = (f"share of rollout on the left ({left_task}) half: {left_task} model {100 * share[left_task].mean():.1f}%, "
            f"{right_task} model {100 * share[right_task].mean():.1f}%")
    n = len(own[left_task])
    if n < 2:
        return Claim(cid, source, statement, INCONCLUSIVE, f"one composite image cannot decide it; {text}")
    results = []
    for m, x in own.items():
        iv = crossed_interval([(x, np.full_like(x, 0.5))])
        results.append(Result(verdict_of(iv), iv, f"{m} model's own half - 50% {iv.pts()}"))
    return make(cid, source, statement, results, prefix=f"{n} composite images; {text}")
