"""The committed results (results/default/, and the pretrained study's results/dinov2/) keep the
promises the code makes: every NuWa derivation lands in its rate's band, the headline compares
methods on the sub-tasks they share, the ledger's verdicts follow from the intervals it prints,
and the study's pilot kept what validation chose."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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


def _ledger_from_committed_tables(root: Path) -> pd.DataFrame:
    """The ledger as the `claims` rule builds it, from the per-image results committed under `root`."""
    from nuwa.paper.claims import (ablation_claims, fig2_claim, fig8_claim, ledger, neuron_claim, subtask_test_images,
                                   to_frame)

    tables = root / "tables"

    def table(name):
        return pd.read_parquet(tables / f"{name}.parquet") if (tables / f"{name}.parquet").is_file() else None

    ablations = {name.split("_")[0]: table(name) for name in (
        "table1_svd_vs_score", "fig12_dimension_sweep", "table5_dimension_exclusion", "table6_techniques",
        "fig7_gamma_grid")}
    images = subtask_test_images({(p.parent.parent.name, p.parent.name): p
                                  for p in sorted((root / "subtasks").glob("*/*/samples.parquet"))})
    claims = ledger(table("table3_long"), images=images, extra=[
        lambda: ablation_claims(ablations, images),
        lambda: [neuron_claim(table("table2_neuron_class_spread")), fig2_claim(table("fig2_task_specific_finetuning")),
                 fig8_claim(table("fig8_attention_rollout"))]])
    return to_frame(claims)


@pytest.mark.parametrize("profile", ["default", "dinov2"])
def test_the_committed_ledger_is_what_the_code_computes_from_the_committed_per_image_results(profile):
    root = RESULTS.parent / profile
    committed = pd.read_csv(root / "claims.csv")
    again = _ledger_from_committed_tables(root)
    assert list(again.id) == list(committed.id)
    assert list(again.verdict) == list(committed.verdict)
    for col in ("estimate", "ci_low", "ci_high"):
        assert np.allclose(again[col].astype(float), committed[col].astype(float), atol=1e-6, equal_nan=True), col
    assert list(again.measured) == list(committed.measured)


def test_the_default_results_name_the_code_that_built_them_and_the_lock_agrees():
    """results/default/build.json names the commit whose code rebuilt them from nothing; every DVC
    stage was recorded from that one library, the hash build.json keeps."""
    import yaml

    build = json.loads((RESULTS / "build.json").read_text())
    assert len(build["commit"]) == 40 and build["wall_seconds"] > 0 and build["jobs"] > 0
    lock = yaml.safe_load((RESULTS.parents[1] / "dvc.lock").read_text())["stages"]
    library = {d["md5"] for s in lock.values() for d in s["deps"] if d["path"] == "nuwa"}
    assert library == set(build["library_md5"]) and len(library) == 1
    assert set(lock) == set(build["stages"])
