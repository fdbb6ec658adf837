"""Table 3, the derivation cost and the claims ledger, built from hand-made derivation records
with per-image correctness (synthetic: a model of accuracy p gets exactly round(p * N) of N
images right, which ones drawn from a seeded generator)."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from nuwa.correctness import pack_correct, unpack_correct
from nuwa.paper.claims import (RULE, ablation_claims, fig2_claim, fig8_claim, ledger, neuron_claim,
                               nuwa_beats_baselines, to_frame, to_markdown)
from nuwa.paper.table3 import BASE_FULL, BASE_SLICED, derivation_cost, headline, table3_by_method, table3_long
from nuwa.paper.tables import write_table

KINDS = {"H1": "hard", "H2": "hard", "S1": "simple"}
N = 2000  # test images per sub-task: enough for a 5-point lead to be clear


def vec(p: float, *key) -> str:
    """Packed correctness of accuracy p, drawn by a generator seeded from `key`."""
    seed = zlib.crc32("/".join(map(str, key)).encode())  # stable across processes, unlike hash()
    c = np.zeros(N, dtype=bool)
    c[np.random.default_rng(seed).permutation(N)[:round(p * N)]] = True
    return pack_correct(c)


def record(subtask, method, alpha, top1, *, seed=0, seconds=10.0, passes=100, rate=None):
    return dict(base="b", subtask=subtask, kind=KINDS[subtask], method=method, alpha=alpha, seed=seed,
                classes=[0, 1, 2], test_top1_finetuned=top1, test_top1_pruned=top1 - 0.1, params=100, flops=1000,
                base_params=400, base_flops=5000, rate_achieved=alpha + 0.01 if rate is None else rate, depth=6,
                embed_dim=96, derive_seconds=seconds, passes=passes, finetune_seconds=20.0,
                test_correct_finetuned=vec(top1, subtask, method, alpha, seed),
                test_correct_pruned=vec(top1 - 0.1, subtask, method, alpha, seed, "pruned"))


def base_eval(subtask, full, sliced):
    return dict(base="b", subtask=subtask, kind=KINDS[subtask]), dict(
        top1=full, top1_sliced=sliced, classes=[0, 1, 2], correct=vec(full, subtask, "full"),
        correct_sliced=vec(sliced, subtask, "sliced"))


@pytest.fixture()
def results():
    """NuWa on three sub-tasks; random and xpruner only on H1 and S1 (the profile's baseline_subtasks)."""
    metrics = []
    for a in (0.4, 0.8):
        metrics += [record("H1", "nuwa", a, 0.80), record("H2", "nuwa", a, 0.99), record("S1", "nuwa", a, 0.95),
                    record("H1", "random", a, 0.60, seconds=1.0, passes=0),
                    record("S1", "random", a, 0.70, seconds=1.0, passes=0),
                    record("H1", "xpruner", a, 0.75, seconds=40.0, passes=400),
                    record("S1", "xpruner", a, 0.90, seconds=40.0, passes=400)]
    evals = [base_eval("H1", 0.60, 0.72), base_eval("H2", 0.90, 0.95), base_eval("S1", 0.85, 0.90)]
    return metrics, evals


def test_long_table_has_one_row_per_derivation_and_two_base_rows_per_subtask(results):
    long = table3_long(*results)
    assert len(long) == 14 + 6
    assert list(long.method[:2]) == [BASE_FULL, BASE_SLICED]  # base rows first within a sub-task
    h1 = long[(long.subtask == "H1") & (long.method == "nuwa")]
    assert list(h1.alpha) == [0.4, 0.8] and list(h1.top1) == [0.8, 0.8]
    assert (long[long.method == BASE_FULL].params == 400).all()


def test_methods_are_compared_only_on_the_subtasks_they_share(results):
    table = table3_by_method(table3_long(*results)).set_index("method")
    assert list(table.index) == [BASE_FULL, BASE_SLICED, "nuwa", "random", "xpruner"]
    assert set(table.subtasks) == {"H1, S1"}  # H2 has no baseline: left out of every row
    assert table.loc["nuwa", "hard a=0.8"] == 0.8 and table.loc["nuwa", "simple a=0.4"] == 0.95
    assert table.loc[BASE_SLICED, "hard a=0.4"] == 0.72 and table.loc["random", "hard a=0.4 rate achieved"] == 0.41
    assert {"hard a=0.4", "hard a=0.8", "simple a=0.4", "simple a=0.8"} <= set(table.columns)


def test_derivation_cost_excludes_recovery_and_is_relative_to_nuwa(results):
    cost = derivation_cost(table3_long(*results)).set_index("method")
    assert cost.loc["xpruner", "derive_seconds_mean"] == 40.0 and cost.loc["xpruner", "seconds_vs_nuwa"] == 4.0
    assert cost.loc["random", "passes_mean"] == 0 and cost.loc["nuwa", "derivations"] == 4
    assert cost.loc["nuwa", "finetune_seconds_mean"] == 20.0



def test_per_image_correctness_is_in_the_parquet_not_the_readable_tables(results, tmp_path):
    long = table3_long(*results)
    h1 = long[long.subtask == "H1"].set_index("method")
    assert unpack_correct(h1.loc[BASE_SLICED, "correct"]).mean() == 0.72
    assert unpack_correct(h1.loc["nuwa", "correct"].iloc[0]).mean() == 0.8
    assert long[long.method == "nuwa"].correct_before_finetune.notna().all()
    write_table(long, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.parquet")
    csv, parquet = pd.read_csv(tmp_path / "t.csv"), pd.read_parquet(tmp_path / "t.parquet")
    assert "correct" not in csv.columns and "correct" not in (tmp_path / "t.md").read_text()
    assert list(parquet.columns) == list(long.columns) and parquet.correct.equals(long.correct)


def test_the_headline_metrics_compare_methods_on_shared_subtasks(results):
    h = headline(table3_long(*results))
    assert h["n_models"] == 14 and h["subtasks"] == ["b/H1", "b/S1"]  # H2: NuWa only
    assert h["nuwa"]["top1_mean"] == pytest.approx((0.80 + 0.95) / 2)  # not H2's 0.99
    assert h["random"]["top1_alpha_0.8"] == pytest.approx(0.65)
    assert h["base"]["top1_sliced_mean"] == pytest.approx((0.72 + 0.90) / 2)


def verdicts(long):
    return {c.id: c.verdict for c in ledger(long)}


def test_the_ledger_decides_by_the_interval_and_flips_with_the_numbers(results):
    metrics, evals = results
    claims = {c.id: c for c in ledger(table3_long(metrics, evals))}
    v = {k: c.verdict for k, c in claims.items()}
    assert v["table3-nuwa-best-hard-0.8"] == v["table3-nuwa-best-simple-0.8"] == v["table3-nuwa-best-all"] == "holds"
    assert v["table3-edge-beats-base-full"] == v["table3-edge-beats-base-sliced"] == "holds"
    assert v["fig4-sliced-beats-full"] == "holds" and v["cost-nuwa-faster-than-xpruner"] == "holds"
    best = claims["table3-nuwa-best-hard-0.8"]
    lo, hi, est = best.interval
    assert lo > 0 and lo < est < hi and est == pytest.approx(0.05)  # the weakest comparison: vs xpruner (0.80 vs 0.75)
    assert "nuwa vs xpruner +5.0 pts [" in best.measured and "1 cell compared" in best.measured
    # X-Pruner now wins on the simple sub-task at alpha 0.8, and derives faster than NuWa.
    flipped = [dict(m, test_top1_finetuned=0.99, test_correct_finetuned=vec(0.99, "S1", "xp"))
               if m["method"] == "xpruner" and m["subtask"] == "S1" and m["alpha"] == 0.8 else m for m in metrics]
    flipped = [dict(m, derive_seconds=0.5) if m["method"] == "xpruner" else m for m in flipped]
    v = verdicts(table3_long(flipped, evals))
    assert v["table3-nuwa-best-simple-0.8"] == "contradicted" and v["table3-nuwa-best-hard-0.8"] == "holds"
    assert v["cost-nuwa-faster-than-xpruner"] == "contradicted"
    # A NuWa model below the sliced base on one sub-task contradicts "edge beats base" (sliced only).
    worse = [dict(m, test_correct_finetuned=vec(0.66, "worse", m["alpha"])) if m["method"] == "nuwa"
             and m["subtask"] == "H1" else m for m in metrics]
    v = verdicts(table3_long(worse, evals))
    assert v["table3-edge-beats-base-sliced"] == "contradicted" and v["table3-edge-beats-base-full"] == "holds"


def test_a_tie_is_inconclusive_not_a_loss(results):
    metrics, evals = results
    # X-Pruner makes the very same predictions as NuWa on S1: the paired interval is [0, 0].
    same = {(m["subtask"], m["alpha"]): m["test_correct_finetuned"] for m in metrics if m["method"] == "nuwa"}
    tied = [dict(m, test_correct_finetuned=same[("S1", m["alpha"])]) if m["method"] == "xpruner" and m["subtask"] == "S1"
            else m for m in metrics]
    claim = nuwa_beats_baselines(table3_long(tied, evals), "simple", 0.8)
    assert claim.verdict == "inconclusive" and claim.interval == (0.0, 0.0, 0.0)
    assert "nuwa vs random +25.0 pts" in claim.measured  # the other comparison still holds


def test_only_models_at_equal_cost_are_compared(results):
    metrics, evals = results
    # Random pruned 10 points less than asked on H1: those cells are left out, and said so.
    cheap = [dict(m, rate_achieved=m["alpha"] - 0.09) if m["method"] == "random" and m["subtask"] == "H1" else m
             for m in metrics]
    claim = nuwa_beats_baselines(table3_long(cheap, evals), None, None)
    assert claim.verdict == "holds"
    assert "nuwa vs random" in claim.measured and "2 cells compared over seed 0, 2 left out" in claim.measured
    hard = nuwa_beats_baselines(table3_long(cheap, evals), "hard", 0.8)
    # No random cell at equal cost: that comparison is not measured, so "every baseline" is not shown.
    assert hard.verdict == "inconclusive" and "nuwa vs random: not measured, no cell at equal cost" in hard.measured
    close = [dict(m, rate_achieved=m["alpha"] + 0.04) if m["method"] == "random" else m for m in metrics]
    assert "left out" not in nuwa_beats_baselines(table3_long(close, evals), None, None).measured  # 0.03 apart


def test_nuwa_variants_are_not_baselines(results):
    metrics, evals = results
    variants = [dict(m, method=v, test_correct_finetuned=vec(0.1, v, m["subtask"], m["alpha"]))
                for m in metrics if m["method"] == "nuwa" for v in ("nuwa-accuracy", "nuwa-nodepth")]
    claim = nuwa_beats_baselines(table3_long(metrics + variants, evals), "hard", 0.8)
    assert claim.verdict == "holds" and "nuwa-" not in claim.measured + claim.statement
    assert "random, xpruner" in claim.statement


def test_seeds_are_paired_by_number(results):
    metrics, evals = results
    second = [dict(m, seed=1, test_correct_finetuned=vec(m["test_top1_finetuned"], m["subtask"], m["method"],
                                                         m["alpha"], "seed1"))
              for m in metrics if m["method"] in ("nuwa", "xpruner")]
    long = table3_long(metrics + second, evals)
    claim = nuwa_beats_baselines(long, "hard", 0.8)
    assert claim.verdict == "holds" and "nuwa vs xpruner" in claim.measured
    lo, hi, _ = claim.interval
    one = nuwa_beats_baselines(table3_long(metrics, evals), "hard", 0.8).interval
    assert hi - lo < one[1] - one[0]  # two seeds of each model: a tighter interval


def test_a_claim_without_its_measurement_is_reported_as_not_measured(results):
    metrics, evals = results
    only_nuwa = table3_long([m for m in metrics if m["method"] == "nuwa"], evals)
    claim = nuwa_beats_baselines(only_nuwa, "hard", 0.8)
    assert claim.verdict == "not measured" and claim.measured.startswith("not measured")
    claims = ledger(only_nuwa)
    md = to_markdown(claims, title="t")
    assert md.startswith("# t\n") and RULE in md and md.count("\n| ") == 1 + len(claims)
    n = {v: sum(c.verdict == v for c in claims) for v in ("holds", "contradicted", "inconclusive", "not measured")}
    assert f"{len(claims)} claims: {n['holds']} hold, {n['contradicted']} contradicted, " \
           f"{n['inconclusive']} inconclusive, {n['not measured']} not measured." in md
    frame = to_frame(claims)
    assert list(frame.columns) == ["id", "source", "statement", "verdict", "estimate", "ci_low", "ci_high", "seeds", "measured"]
    assert set(frame.verdict) <= {"holds", "contradicted", "inconclusive", "not measured"}
    assert frame[frame.verdict == "not measured"].estimate.isna().all()
    # Records without per-image correctness (evaluated before it existed) decide nothing.
    bare = table3_long([{k: v for k, v in m.items() if not k.startswith("test_correct")} for m in metrics], evals)
    claim = nuwa_beats_baselines(bare, "hard", 0.8)
    assert claim.verdict == "not measured" and "no per-image results" in claim.measured


# ---- ablations -------------------------------------------------------------------------------------
ROW = dict(base="b", subtask="S", kind="simple")


def sweep_rows(acc: dict) -> pd.DataFrame:
    """Table 1 / Fig. 12 rows: acc[(dim, technique)] per rate 0.4 and 0.8."""
    return pd.DataFrame([dict(ROW, dim=d, technique=t, rate=r, top1=p, correct=vec(p, d, t, r))
                         for (d, t), p in acc.items() for r in (0.4, 0.8)])


def run_rows(acc: dict, column: str, rate=None) -> pd.DataFrame:
    return pd.DataFrame([dict(ROW, seed=0, alpha=0.8, rate_achieved=0.8 if rate is None else rate.get(k, 0.8),
                              top1=p, correct=vec(p, column, k), **({column: k} if isinstance(column, str) else {}))
                         for k, p in acc.items()])


def ablation_tables(svd=0.8, order=(0.9, 0.85, 0.75, 0.6), drops=None, t6=None, grid=None):
    drops = drops or dict(none=0.8, qk=0.75, v=0.74, mlp=0.6, embed=0.7)
    t6 = t6 or {(False, False): 0.65, (True, False): 0.72, (False, True): 0.71, (True, True): 0.8}
    grid = grid or {(5.0, 2.5): 0.8, (2.5, 2.5): 0.74, (1.0, 2.5): 0.6, (5.0, 1.0): 0.82, (1.0, 1.0): 0.7}
    t1 = sweep_rows({("qk", "svd"): svd, ("qk", "score"): 0.7, ("v", "svd"): 0.8, ("v", "score"): 0.7})
    f12 = sweep_rows(dict(zip([("qk", "svd"), ("v", "svd"), ("mlp", "score"), ("embed", "score")], order)))
    t5 = run_rows(drops, "excluded")
    t6f = pd.DataFrame([dict(ROW, seed=0, alpha=0.8, rate_achieved=0.8, non_fixed_rate=a, svd_on=b, top1=p,
                             correct=vec(p, "t6", a, b)) for (a, b), p in t6.items()])
    f7 = pd.DataFrame([dict(ROW, seed=0, alpha=0.6, rate_achieved=0.6, gamma_exp=e, gamma_emb=d, top1=p,
                            correct=vec(p, "f7", e, d)) for (e, d), p in grid.items()])
    return dict(table1=t1, fig12=f12, table5=t5, table6=t6f, fig7=f7)


def test_ablation_claims_hold_on_holding_numbers_and_flip_with_them():
    assert {c.id: c.verdict for c in ablation_claims(ablation_tables())} == dict.fromkeys([
        "table1-svd-beats-score-qk", "table1-svd-beats-score-v", "fig12-loss-order",
        "table5-every-exclusion-hurts", "table5-expansion-hurts-most",
        "table6-both-techniques-best", "table6-each-technique-helps",
        "fig7-high-exp-best", "fig7-exp-below-emb-drops"], "holds")
    flipped = ablation_tables(svd=0.6, order=(0.85, 0.9, 0.75, 0.6), drops=dict(none=0.8, qk=0.85, v=0.74, mlp=0.7, embed=0.6),
                              t6={(False, False): 0.72, (True, False): 0.65, (False, True): 0.71, (True, True): 0.6},
                              grid={(5.0, 2.5): 0.6, (2.5, 2.5): 0.74, (1.0, 2.5): 0.85, (5.0, 1.0): 0.6, (1.0, 1.0): 0.7})
    v = {c.id: c.verdict for c in ablation_claims(flipped)}
    assert v.pop("table1-svd-beats-score-v") == "holds" and set(v.values()) == {"contradicted"}
    assert all(c.verdict == "not measured" for c in ablation_claims({}))


def test_ablation_ties_are_inconclusive_and_unequal_rates_left_out():
    tie = ablation_tables(t6=dict.fromkeys([(False, False), (True, False), (False, True), (True, True)], 0.7))
    v = {c.id: c for c in ablation_claims(tie)}
    # Four equally accurate cells (different images right): no technique is shown to help or hurt.
    assert v["table6-both-techniques-best"].verdict == v["table6-each-technique-helps"].verdict == "inconclusive"
    # A Table 5 run that pruned less than asked is not compared.
    t = ablation_tables()
    t["table5"].loc[t["table5"].excluded == "mlp", "rate_achieved"] = 0.7
    c = {c.id: c for c in ablation_claims(t)}["table5-every-exclusion-hurts"]
    assert c.verdict == "inconclusive" and "full - without mlp: not measured, no cell at equal cost" in c.measured


def test_an_ordering_holds_only_if_every_adjacent_pair_does():
    # value and expansion equally accurate: that link of the order is unshown, the rest holds.
    c = {c.id: c for c in ablation_claims(ablation_tables(order=(0.9, 0.8, 0.8, 0.6)))}["fig12-loss-order"]
    assert c.verdict == "inconclusive" and "qk - v +10.0 pts" in c.measured and "v - mlp +0.0 pts" in c.measured


# ---- interpretation --------------------------------------------------------------------------------
def test_interpretation_claims_read_their_tables():
    rng = np.random.default_rng(0)
    shallow, deep = list(rng.poisson(5, 200) + 1), list(rng.poisson(2, 200) + 1)
    spread = pd.DataFrame(dict(layer=[1, 12], depth=12, neurons=200, top_k=8, all_mean_distinct_classes=[5.0, 2.0],
                               distinct_classes_per_neuron=[shallow, deep]))
    assert neuron_claim(spread).verdict == "holds"
    assert neuron_claim(spread.assign(distinct_classes_per_neuron=[deep, shallow])).verdict == "contradicted"
    assert neuron_claim(spread.assign(distinct_classes_per_neuron=[shallow, shallow[::-1]])).verdict == "inconclusive"
    assert neuron_claim(None).verdict == "not measured"
    assert neuron_claim(spread.drop(columns="distinct_classes_per_neuron")).verdict == "not measured"
    from nuwa.paper.fig2 import LARGE, SMALL, TUNED
    fig2 = pd.DataFrame([dict(size=k, model=m, top1=p, correct=vec(p, k, m)) for k in (2, 5)
                         for m, p in ((SMALL, 0.7), (LARGE, 0.75), (TUNED, 0.9 if k == 2 else 0.76))])
    c = fig2_claim(fig2)
    assert c.verdict == "inconclusive" and "5 classes +1.0 pts" in c.measured  # 2 classes clear, 5 classes not
    assert fig2_claim(fig2.assign(top1=0)[fig2.model != LARGE]).verdict == "not measured"
    rollout = pd.DataFrame(dict(model=["H1", "H2"], image="composite: H1 + H2", rollout_mass_left=[0.7, 0.4],
                                rollout_mass_right=[0.3, 0.6]))
    # One composite image is one observation: reported, not decided.
    c = fig8_claim(rollout)
    assert c.verdict == "inconclusive" and c.measured.startswith("one composite image") and "70.0%" in c.measured
    assert fig8_claim(rollout.assign(model=["base", "H2"])).verdict == "not measured"  # no H1 edge ViT
    many = pd.DataFrame(dict(model=["H1"] * 20 + ["H2"] * 20, image="composite: H1 + H2",
                             rollout_mass_left=list(rng.uniform(0.6, 0.8, 20)) + list(rng.uniform(0.2, 0.4, 20))))
    many["rollout_mass_right"] = 1 - many.rollout_mass_left
    assert fig8_claim(many).verdict == "holds"
    assert fig8_claim(many.assign(rollout_mass_left=1 - many.rollout_mass_left,
                                  rollout_mass_right=many.rollout_mass_left)).verdict == "contradicted"


def test_a_seed_one_side_lacks_is_left_out_and_the_ledger_says_so(results):
    """NuWa ran seeds 0 and 1, random only seed 0: the comparison uses seed 0 and names what it
    left out, rather than silently pairing fewer seeds."""
    metrics, evals = results
    extra = [record("H1", "nuwa", a, 0.80, seed=1) for a in (0.4, 0.8)]
    claim = nuwa_beats_baselines(table3_long(metrics + extra, evals), "hard", 0.8)
    random_text = next(t for t in claim.measured.split("; ") if t.startswith("nuwa vs random"))
    assert "over seed 0," in random_text and "1 run of a seed the other side lacks left out" in random_text


def test_a_pooled_claim_counts_the_images_its_cells_share_once(results):
    """With each sub-task's image ids, the two rates of H1 share their images; the estimate is the
    mean over cells either way, and a pairing carries the ids it was given."""
    from nuwa.paper.compare import compare, pair

    metrics, evals = results
    long = table3_long(metrics, evals)
    nuwa, rnd = long[long.method == "nuwa"], long[long.method == "random"]
    ids = {"H1": np.arange(N) * 3, "S1": np.arange(N) * 3 + 1}
    joint = pair(nuwa, rnd, ["base", "subtask", "alpha"], images=ids)
    apart = pair(nuwa, rnd, ["base", "subtask", "alpha"])
    assert [i is not None for i in joint.images] == [True] * 4 and all(i is None for i in apart.images)
    a, b = compare(joint, "nuwa vs random"), compare(apart, "nuwa vs random")
    assert a.interval.estimate == pytest.approx(b.interval.estimate) == pytest.approx(0.225)
    assert a.interval.seeds == 1 and "(1 seed: images only)" in a.text


def test_every_cell_claims_are_corrected_for_multiplicity(results):
    """The edge-vs-base claim over every cell says which correction it used."""
    from nuwa.paper.claims import edge_beats_base

    metrics, evals = results
    claim = edge_beats_base(table3_long(metrics, evals), BASE_FULL, max_alpha=0.8)
    assert "Holm over 6 comparisons" in claim.measured and claim.seeds == 1
