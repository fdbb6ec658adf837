"""The committed results (results/default/, and the pretrained study's results/dinov2/) keep the
promises the code makes: every NuWa derivation lands in its rate's band, the headline compares
methods on the sub-tasks they share, the ledger's verdicts follow from the intervals it prints,
and the study's pilot kept what validation chose."""
import json
from pathlib import Path

import pandas as pd

from nuwa.options import RATE_TOLERANCE
from nuwa.paper.stats import CONTRADICTED, HOLDS, INCONCLUSIVE, NOT_MEASURED

RESULTS = Path(__file__).resolve().parents[1] / "results/default"


def test_every_nuwa_derivation_lands_in_the_requested_rate_band():
    long = pd.read_parquet(RESULTS / "tables/table3_long.parquet")
    nuwa = long[long.method == "nuwa"]
    assert len(nuwa) == 16  # 4 sub-tasks x 4 alphas
    off = nuwa[(nuwa.rate_achieved < nuwa.alpha - 1e-9) | (nuwa.rate_achieved > nuwa.alpha + RATE_TOLERANCE + 1e-9)]
    assert off.empty, off[["subtask", "alpha", "rate_achieved"]]


def test_the_headline_compares_methods_on_the_subtasks_every_method_ran_on():
    long = pd.read_parquet(RESULTS / "tables/table3_long.parquet")
    derived = long[~long.method.str.startswith("base")]
    shared = set.intersection(*(set(g.base + "/" + g.subtask) for _, g in derived.groupby("method")))
    headline = json.loads((RESULTS / "metrics.json").read_text())
    assert set(headline["subtasks"]) == shared and shared
    assert headline["n_models"] == len(derived)


def test_every_verdict_follows_from_the_interval_it_prints():
    claims = pd.read_csv(RESULTS / "claims.csv")
    assert set(claims.verdict) <= {HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED}
    decided = claims[claims.verdict.isin([HOLDS, CONTRADICTED])]
    assert ((decided.ci_low > 0) | (decided.ci_high < 0)).all()  # a decided claim's interval excludes 0
    open_ = claims[(claims.verdict == INCONCLUSIVE) & claims.ci_low.notna()]
    assert ((open_.ci_low <= 0) & (open_.ci_high >= 0)).all()  # an undecided one's does not


STUDY = RESULTS.parent / "dinov2"


def test_the_pretrained_study_derivations_land_in_the_band_on_real_weights():
    """Every committed NuWa (budget policy) derivation of the study, whatever seeds are built."""
    records = [json.loads(p.read_text()) for p in sorted((STUDY / "metrics").glob("*/*/nuwa/*.json"))]
    assert records, "no committed derivation of the dinov2 profile"
    for r in records:
        assert r["alpha"] - 1e-9 <= r["rate_achieved"] <= r["alpha"] + RATE_TOLERANCE + 1e-9, (r["subtask"], r["alpha"])


def test_the_study_pilot_kept_the_svd_with_the_higher_validation_top1():
    choice = json.loads((STUDY / "pilot/svd_choice.json").read_text())
    assert choice["recovery"] == "none" and {r["svd"] for r in choice["rows"]} == {"product", "data"}
    assert choice["chosen"] == max(choice["rows"], key=lambda r: r["val_top1"])["svd"]
    curve = pd.read_csv(STUDY / "pilot/recovery_curve.csv")
    assert curve.samples.is_monotonic_increasing and curve.samples.iloc[0] == 0


def test_the_quoted_seed_pairs_are_what_the_script_computes_from_the_committed_metrics(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    committed = pd.read_csv(STUDY / "pilot/seed_pairs.csv")
    seeds = ",".join(str(s) for s in range(int(committed.seeds.max())))  # the study's seeds are 0, 1, ...
    subprocess.run([sys.executable, str(root / "scripts/seed_pairs.py"), str(STUDY), seeds, str(tmp_path)], check=True)
    again = pd.read_csv(tmp_path / "seed_pairs.csv")
    pd.testing.assert_frame_equal(again, committed)
    decided = committed[committed.verdict.isin([HOLDS, CONTRADICTED])]
    assert len(decided) and (decided.rate_gap <= RATE_TOLERANCE).all()
