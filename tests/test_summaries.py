"""Table 3, the derivation cost and the claims ledger, built from hand-made derivation records."""
from __future__ import annotations

import copy

import pandas as pd
import pytest

from nuwa.paper.claims import (MARGIN, ablation_claims, fig8_claim, ledger, neuron_claim, nuwa_beats_baselines, to_frame,
                         to_markdown)
from nuwa.paper.table3 import BASE_FULL, BASE_SLICED, derivation_cost, table3_by_method, table3_long

KINDS = {"H1": "hard", "H2": "hard", "S1": "simple"}


def record(subtask, method, alpha, top1, *, seed=0, seconds=10.0, passes=100):
    return dict(base="b", subtask=subtask, kind=KINDS[subtask], method=method, alpha=alpha, seed=seed,
                classes=[0, 1, 2], test_top1_finetuned=top1, test_top1_pruned=top1 - 0.1, params=100, flops=1000,
                base_params=400, base_flops=5000, rate_achieved=alpha + 0.01, depth=6, embed_dim=96,
                derive_seconds=seconds, passes=passes, finetune_seconds=20.0)


def base_eval(subtask, full, sliced):
    return dict(base="b", subtask=subtask, kind=KINDS[subtask]), dict(top1=full, top1_sliced=sliced, classes=[0, 1, 2])


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
    evals = [base_eval("H1", 0.70, 0.78), base_eval("H2", 0.90, 0.95), base_eval("S1", 0.85, 0.93)]
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
    assert table.loc[BASE_SLICED, "hard a=0.4"] == 0.78 and table.loc["random", "hard rate achieved"] == 0.61
    assert {"hard a=0.4", "hard a=0.8", "simple a=0.4", "simple a=0.8"} <= set(table.columns)


def test_derivation_cost_excludes_recovery_and_is_relative_to_nuwa(results):
    cost = derivation_cost(table3_long(*results)).set_index("method")
    assert cost.loc["xpruner", "derive_seconds_mean"] == 40.0 and cost.loc["xpruner", "seconds_vs_nuwa"] == 4.0
    assert cost.loc["random", "passes_mean"] == 0 and cost.loc["nuwa", "derivations"] == 4
    assert cost.loc["nuwa", "finetune_seconds_mean"] == 20.0


def verdicts(long):
    return {c.id: c.holds for c in ledger(long)}


def test_the_ledger_flips_when_the_numbers_flip(results):
    metrics, evals = results
    v = verdicts(table3_long(metrics, evals))
    assert v["table3-nuwa-best-hard-0.8"] is True and v["table3-nuwa-best-simple-0.8"] is True
    assert v["table3-edge-beats-base-full"] is True and v["table3-edge-beats-base-sliced"] is True
    assert v["fig4-sliced-beats-full"] is True and v["cost-nuwa-faster-than-xpruner"] is True
    # X-Pruner now wins on the simple sub-task at alpha 0.8, and derives faster than NuWa.
    flipped = [dict(m, test_top1_finetuned=0.99, derive_seconds=0.5) if m["method"] == "xpruner" and m["subtask"] == "S1"
               and m["alpha"] == 0.8 else m for m in metrics]
    flipped = [dict(m, derive_seconds=0.5) if m["method"] == "xpruner" else m for m in flipped]
    v = verdicts(table3_long(flipped, evals))
    assert v["table3-nuwa-best-simple-0.8"] is False and v["table3-nuwa-best-hard-0.8"] is True
    assert v["cost-nuwa-faster-than-xpruner"] is False
    # A NuWa model below the sliced base on one sub-task breaks "edge beats base" (sliced only).
    worse = [dict(m, test_top1_finetuned=0.76) if m["method"] == "nuwa" and m["subtask"] == "H1" else m for m in metrics]
    v = verdicts(table3_long(worse, evals))
    assert v["table3-edge-beats-base-sliced"] is False and v["table3-edge-beats-base-full"] is True


def test_a_claim_without_its_measurement_is_reported_as_not_measured(results):
    metrics, evals = results
    only_nuwa = table3_long([m for m in metrics if m["method"] == "nuwa"], evals)
    claim = nuwa_beats_baselines(only_nuwa, "hard", 0.8)
    assert claim.holds is None and claim.measured.startswith("not measured")
    md = to_markdown(ledger(only_nuwa), title="t")
    assert "not measured" in md and md.count("\n| ") == 1 + len(ledger(only_nuwa))
    assert set(to_frame(ledger(only_nuwa)).holds) <= {"yes", "no", "not measured"}


ABLATIONS = {  # the shape of nuwa.paper.ablations.summary, with numbers where every claim holds
    "table1": {d: dict(mean_svd=0.8, mean_score=0.7, mean_svd_minus_score=0.1, svd_wins=4, ties=0, comparisons=4)
               for d in ("qk", "v")},
    "fig12": dict(mean_loss=dict(qk=0.01, v=0.02, mlp=0.05, embed=0.2), order_by_mean_loss=["qk", "v", "mlp", "embed"]),
    "table5": dict(full_top1=0.8, mean_drop=dict(qk=0.01, v=0.02, mlp=0.10, embed=0.03), most_harmful_exclusion="mlp"),
    "table6": dict(mean_top1={"non_fixed_rate=False,svd=False": 0.70, "non_fixed_rate=False,svd=True": 0.72,
                              "non_fixed_rate=True,svd=False": 0.73, "non_fixed_rate=True,svd=True": 0.75},
                   both_on_is_best=True),
    "fig7": dict(best=dict(gamma_exp=5.0, gamma_emb=2.5, top1=0.8), best_has_highest_exp=True,
                 mean_top1_exp_ge_emb=0.78, mean_top1_exp_lt_emb=0.70),
}


def test_ablation_claims_hold_on_holding_numbers_and_flip_with_them():
    assert {c.id: c.holds for c in ablation_claims(ABLATIONS)} == {
        "table1-svd-beats-score-qk": True, "table1-svd-beats-score-v": True, "fig12-loss-order": True,
        "table5-every-exclusion-hurts": True, "table5-expansion-hurts-most": True,
        "table6-both-techniques-best": True, "table6-each-technique-helps": True,
        "fig7-high-exp-best": True, "fig7-exp-below-emb-drops": True}
    flipped = copy.deepcopy(ABLATIONS)
    flipped["table1"]["v"].update(mean_svd_minus_score=-0.02)
    flipped["fig12"]["order_by_mean_loss"] = ["v", "qk", "mlp", "embed"]
    flipped["table5"].update(mean_drop=dict(qk=-0.01, v=0.02, mlp=0.01, embed=0.03), most_harmful_exclusion="embed")
    flipped["table6"]["mean_top1"]["non_fixed_rate=False,svd=True"] = 0.69
    flipped["table6"]["mean_top1"]["non_fixed_rate=True,svd=False"] = 0.76
    flipped["fig7"].update(best_has_highest_exp=False, mean_top1_exp_lt_emb=0.79)
    v = {c.id: c.holds for c in ablation_claims(flipped)}
    assert v.pop("table1-svd-beats-score-qk") is True and not any(v.values())
    assert all(c.holds is None for c in ablation_claims({}))
    tie = copy.deepcopy(ABLATIONS)
    tie["table6"]["mean_top1"] = dict.fromkeys(tie["table6"]["mean_top1"], 0.7)  # every cell equal
    assert {c.id: c.holds for c in ablation_claims(tie)}["table6-both-techniques-best"] is False


def test_interpretation_claims_read_their_tables():
    spread = pd.DataFrame(dict(layer=[1, 12], depth=12, neurons=384, top_k=8, all_mean_distinct_classes=[5.0, 2.0]))
    assert neuron_claim(spread).holds is True
    assert neuron_claim(spread.assign(all_mean_distinct_classes=[2.0, 5.0])).holds is False
    assert neuron_claim(None).holds is None
    rollout = pd.DataFrame(dict(model=["H1", "H2"], image="composite: H1 + H2", rollout_mass_left=[0.7, 0.4],
                                rollout_mass_right=[0.3, 0.6]))
    assert fig8_claim(rollout).holds is True
    assert fig8_claim(rollout.assign(rollout_mass_left=[0.4, 0.7], rollout_mass_right=[0.6, 0.3])).holds is False
    assert fig8_claim(rollout.assign(model=["base", "H2"])).holds is None  # no H1 edge ViT: not measured
    # Both models looking mostly left: the H2 model does not attend to its own (right) object.
    assert fig8_claim(rollout.assign(rollout_mass_left=[0.7, 0.6], rollout_mass_right=[0.3, 0.4])).holds is False


def test_a_lead_within_the_noise_margin_is_not_a_win():
    hair = MARGIN / 2
    rollout = pd.DataFrame(dict(model=["H1", "H2"], image="composite: H1 + H2",
                                rollout_mass_left=[0.5 + hair, 0.5], rollout_mass_right=[0.5 - hair, 0.5]))
    assert fig8_claim(rollout).holds is False
    close = copy.deepcopy(ABLATIONS)
    close["table6"]["mean_top1"]["non_fixed_rate=True,svd=True"] = 0.73 + hair  # a hair above the runner-up
    close["fig7"].update(mean_top1_exp_lt_emb=0.78 - hair)
    v = {c.id: c.holds for c in ablation_claims(close)}
    assert v["table6-both-techniques-best"] is False and v["fig7-exp-below-emb-drops"] is False
    assert v["table6-each-technique-helps"] is True  # 0.72 and 0.73 vs 0.70: clear leads still count
