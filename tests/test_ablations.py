"""The ablation studies (Tables 1, 5, 6, Figs. 7, 12): the per-dimension sweep, the table builders
from small fixture inputs, and the Snakemake rules run for real on the `test` profile."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from nuwa.paper import ablations as ab
from nuwa.errors import NuwaError
from nuwa.paper.ablation_sweep import DIMS, NUWA_TECHNIQUE, SweepScores, dimension_sizes, kept, prune_dimension, sweep

ROOT = Path(__file__).resolve().parents[1]


def _scores(model) -> SweepScores:
    g = torch.Generator().manual_seed(1)
    layers = model.config.layers
    return SweepScores(qk=[torch.rand(l.num_heads, l.qk_dim, generator=g) for l in layers],
                       v=[torch.rand(l.num_heads, l.v_dim, generator=g) for l in layers],
                       neurons=[torch.rand(l.mlp_dim, generator=g) for l in layers],
                       embed=torch.rand(model.config.embed_dim, generator=g))


# ---- the sweep --------------------------------------------------------------------------------
@pytest.mark.parametrize("dim, technique", [(d, t) for d in DIMS for t in ("svd", "score") if (d, t) != ("mlp", "svd")
                                            and (d, t) != ("embed", "svd")])
@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_prune_dimension_shrinks_that_dimension_only(irregular_model, dim, technique, rate):
    before = dimension_sizes(irregular_model)
    pruned = prune_dimension(irregular_model, dim, rate, technique=technique, scores=_scores(irregular_model))
    after = dimension_sizes(pruned)
    assert after[dim] == [kept(n, rate) for n in before[dim]]
    assert after[dim] != before[dim]
    assert {k: v for k, v in after.items() if k != dim} == {k: v for k, v in before.items() if k != dim}
    assert [l.num_heads for l in pruned.config.layers] == [l.num_heads for l in irregular_model.config.layers]
    assert pruned.config.depth == irregular_model.config.depth and pruned.config.classes == irregular_model.config.classes


@pytest.mark.parametrize("dim", ["qk", "v"])
@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6, 0.8])
def test_svd_and_score_pruning_give_models_of_identical_sizes(irregular_model, dim, rate):
    svd = prune_dimension(irregular_model, dim, rate, technique="svd")
    score = prune_dimension(irregular_model, dim, rate, technique="score", scores=_scores(irregular_model))
    assert svd.config.layer_table() == score.config.layer_table()
    assert sum(p.numel() for p in svd.parameters()) == sum(p.numel() for p in score.parameters())
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(svd(x), score(x), atol=1e-4)  # different dims kept, same shapes


@pytest.mark.parametrize("dim", ["qk", "v"])
def test_svd_pruning_at_rate_zero_is_the_same_function(irregular_model, dim):
    """Rotation into the singular basis preserves the function; only truncation changes it."""
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        same = prune_dimension(irregular_model, dim, 0.0, technique="svd")(x)
        assert torch.allclose(same, irregular_model(x), atol=1e-4)


def test_prune_dimension_rejects_bad_requests(irregular_model):
    with pytest.raises(NuwaError, match="rate"):
        kept(10, 1.0)
    with pytest.raises(NuwaError, match="score"):
        prune_dimension(irregular_model, "mlp", 0.5, technique="svd")
    with pytest.raises(NuwaError, match="needs importance scores"):
        prune_dimension(irregular_model, "qk", 0.5, technique="score")
    with pytest.raises(NuwaError, match="unknown dimension"):
        prune_dimension(irregular_model, "heads", 0.5, technique="score")


def test_sweep_has_a_reference_row_and_one_row_per_dim_technique_rate(irregular_model):
    seen = []

    def evaluate(model):
        seen.append(dimension_sizes(model))
        return dict(top1=0.5, n=7)

    rows = sweep(irregular_model, dims=["qk", "mlp"], rates=[0.25, 0.5], scores=_scores(irregular_model),
                 evaluate=evaluate, desc=None)
    keys = [(r["dim"], r["technique"], r["rate"]) for r in rows]
    assert keys == [("none", "none", 0.0), ("qk", "svd", 0.25), ("qk", "svd", 0.5), ("qk", "score", 0.25),
                    ("qk", "score", 0.5), ("mlp", "score", 0.25), ("mlp", "score", 0.5)]
    assert len(seen) == len(rows) and seen[0] == dimension_sizes(irregular_model)
    assert rows[1]["size"] == kept(irregular_model.config.layers[0].qk_dim, 0.25)
    assert rows[1]["params"] < rows[0]["params"] == rows[0]["base_params"]
    assert all(r["n"] == 7 for r in rows)


def test_finetune_limit_caps_the_samples_per_epoch(irregular_model, tmp_path):
    """Ablation runs fine-tune on `limit` random fit samples per epoch (`finetune_dir(limit=...)`)."""
    import numpy as np

    from nuwa import io
    from nuwa.options import DeriveOptions
    from nuwa.derivation import finetune_dir

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 400)
    x = rng.integers(0, 255, (400, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40],
             class_names=np.array([f"c{i}" for i in range(10)]))
    io.save(irregular_model, tmp_path / "pruned", report={})
    opts = DeriveOptions(batch_size=8)
    _, report = finetune_dir(tmp_path / "pruned", f"npz:{tmp_path / 'd.npz'}", epochs=2, seed=0,
                             out=tmp_path / "tuned", options=opts, limit=24, recovery="finetune")
    assert report["finetune_history"]["samples_seen"] == 2 * 24 and report["finetune_limit"] == 24
    _, full = finetune_dir(tmp_path / "pruned", f"npz:{tmp_path / 'd.npz'}", epochs=1, seed=0,
                           out=tmp_path / "tuned_all", options=opts, recovery="finetune")
    assert full["finetune_history"]["samples_seen"] > 24 and "finetune_limit" not in full


# ---- table builders from fixture inputs ----------------------------------------------------------
def _sweep_frame() -> pd.DataFrame:
    rows = [dict(dim="none", technique="none", rate=0.0, top1=0.9)]
    for dim, tops in dict(qk=(0.88, 0.8), v=(0.85, 0.7), mlp=(0.8, 0.6), embed=(0.7, 0.3)).items():
        for rate, top in zip((0.4, 0.8), tops):
            rows.append(dict(dim=dim, technique=NUWA_TECHNIQUE[dim], rate=rate, top1=top))
            if dim in ("qk", "v"):
                rows.append(dict(dim=dim, technique="score", rate=rate, top1=top - 0.1))
    df = pd.DataFrame(rows).assign(base="b", subtask="H1", kind="hard", n=100, size=4, params=10, flops=20)
    return df


def test_table1_has_a_row_per_dim_rate_technique_and_the_loss():
    t = ab.table1(_sweep_frame())
    assert list(t.columns) == ["base", "subtask", "kind", "dim", "rate", "technique", "size", "top1", "top1_unpruned",
                               "loss", "n", "params", "flops"]
    assert list(zip(t.dim, t.rate, t.technique)) == [("qk", 0.4, "svd"), ("qk", 0.4, "score"), ("qk", 0.8, "svd"),
                                                    ("qk", 0.8, "score"), ("v", 0.4, "svd"), ("v", 0.4, "score"),
                                                    ("v", 0.8, "svd"), ("v", 0.8, "score")]
    assert t.loss.round(6).tolist() == [0.02, 0.12, 0.1, 0.2, 0.05, 0.15, 0.2, 0.3]


def test_fig12_table_shows_each_dimension_pruned_the_nuwa_way():
    t = ab.fig12_table(_sweep_frame())
    assert list(zip(t.dim, t.technique)) == [(d, NUWA_TECHNIQUE[d]) for d in DIMS for _ in range(2)]
    assert (t.top1_unpruned == 0.9).all()


def _record(subtask="H1", alpha=0.8, exclude=(), global_ranking=True, svd="product", ratio=(1, 5, 2.5), top1=0.9):
    return dict(base="b", subtask=subtask, kind="hard" if subtask.startswith("H") else "simple", alpha=alpha,
                exclude=list(exclude), global_ranking=global_ranking, svd=svd, gamma_ratio=list(ratio), top1=top1,
                top1_pruned=top1 - 0.1, n=100, rate_achieved=alpha + 0.01, params=10, flops=20)


def _runs() -> pd.DataFrame:
    recs = [_record(top1=0.9), _record(exclude=["qk"], top1=0.88), _record(exclude=["v"], top1=0.87),
            _record(exclude=["mlp"], top1=0.6), _record(exclude=["embed"], top1=0.8),
            _record(global_ranking=False, top1=0.86), _record(svd="off", top1=0.85),
            _record(global_ranking=False, svd="off", top1=0.8)]
    recs += [_record(alpha=0.6, ratio=(1, e, d), top1=0.5 + e / 10 - d / 100) for e in (1, 5) for d in (1, 2.5, 5)]
    return ab.runs_frame(recs)


def test_table5_has_full_nuwa_and_one_row_per_excluded_dimension():
    t = ab.table5(_runs(), 0.8)
    assert t.excluded.tolist() == ["none", "qk", "v", "mlp", "embed"]
    assert t["drop"].round(6).tolist() == [0.0, 0.02, 0.03, 0.3, 0.1]
    assert {"top1", "top1_pruned", "rate_achieved", "alpha"} <= set(t.columns)


def test_table6_is_the_two_by_two_with_gains_over_neither():
    t = ab.table6(_runs(), 0.8)
    assert list(zip(t.non_fixed_rate, t.svd_on)) == [(False, False), (False, True), (True, False), (True, True)]
    assert t.gain.round(6).tolist() == [0.0, 0.06, 0.05, 0.1]


def test_fig7_table_is_the_gamma_grid_at_its_alpha():
    t = ab.fig7_table(_runs(), 0.6)
    assert list(zip(t.gamma_exp, t.gamma_emb)) == [(e, d) for e in (1.0, 5.0) for d in (1.0, 2.5, 5.0)]
    assert ab.fig7_table(_runs(), 0.8).gamma_exp.tolist() == [5.0]  # the full NuWa row is the default cell


def test_summary_reports_the_numbers_behind_each_claim():
    sw, runs = _sweep_frame(), _runs()
    s = ab.summary(ab.table1(sw), ab.fig12_table(sw), ab.table5(runs, 0.8), ab.table6(runs, 0.8),
                   ab.fig7_table(runs, 0.6))
    assert s["table1"]["qk"]["svd_wins"] == 2 and s["table1"]["v"]["mean_svd_minus_score"] == pytest.approx(0.1)
    assert s["fig12"]["order_by_mean_loss"] == ["qk", "v", "mlp", "embed"]
    assert s["table5"]["most_harmful_exclusion"] == "mlp"
    assert s["table6"]["both_on_is_best"] and s["table6"]["best"] == "non_fixed_rate=True,svd=True"
    assert s["fig7"]["best"] == dict(gamma_exp=5.0, gamma_emb=1.0, top1=pytest.approx(0.99))
    assert s["fig7"]["best_has_highest_exp"] and s["fig7"]["best_has_exp_ge_emb"]
    json.dumps(s)  # plain JSON


def test_summary_says_when_a_claim_does_not_hold():
    runs = ab.runs_frame([_record(top1=0.8), _record(global_ranking=False, svd="off", top1=0.9),
                          _record(global_ranking=False, top1=0.7), _record(svd="off", top1=0.7)])
    s = ab.summary(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), ab.table6(runs, 0.8), pd.DataFrame())
    assert not s["table6"]["both_on_is_best"] and s["table6"]["best"] == "non_fixed_rate=False,svd=False"


# ---- the rules --------------------------------------------------------------------------------------
from tests.test_workflow import SNAKEMAKE, run, scheduled_jobs  # noqa: E402


def _scheduled(*args: str) -> dict[str, int]:
    proc = run([SNAKEMAKE, "-n", "--forceall", "--cores", "1", *args], ROOT)
    return scheduled_jobs(proc.stdout + proc.stderr)


@pytest.mark.slow
def test_default_and_paper_profiles_schedule_each_ablation_run_once():
    """Tables 5 and 6 share the full NuWa run; Fig. 7's default-ratio cell is it too when alphas match."""
    profiles = yaml.safe_load((ROOT / "params.yaml").read_text())["profiles"]
    for profile in ("default", "paper"):
        a = profiles[profile]["ablations"]
        g = a["gamma"]
        variants = ["full", "no-qk", "no-v", "no-mlp", "no-embed", "fixed-rate", "score", "fixed-rate-score"]
        cell = {(5.0, 2.5): "full"}
        runs = {(s, v, a["alpha"]) for s in a["subtasks"] for v in variants}
        runs |= {(s, cell.get((float(e), float(d)), f"{e}-{d}"), g["alpha"]) for s in g.get("subtasks", a["subtasks"])
                 for e in g["exp"] for d in g["emb"]}
        jobs = _scheduled("ablations", "--config", f"profile={profile}")
        assert jobs["ablation_run"] == len(runs), profile
        assert jobs["ablation_sweep"] == len(a["subtasks"])
        assert jobs["ablation_tables"] == jobs["ablation_fig7"] == jobs["ablation_fig12"] == 1


@pytest.fixture(scope="module")
def ablated(built) -> Path:
    """The session's `test` profile build (tests/conftest.py `built`): its default target includes
    `ablations`, so this is what `snakemake ablations` builds, and more."""
    return built[0]


def test_the_test_profile_builds_the_ablation_tables_figures_and_summary(ablated):
    r = ablated / "results/test"
    params = yaml.safe_load((ablated / "params.yaml").read_text())["profiles"]["test"]["ablations"]
    t1 = pd.read_parquet(r / "tables/table1_svd_vs_score.parquet")
    assert len(t1) == len(params["subtasks"]) * 2 * len(params["sweep"]["rates"]) * 2
    sizes = t1.pivot_table(index=["subtask", "dim", "rate"], columns="technique", values="params")
    assert (sizes["svd"] == sizes["score"]).all()
    f12 = pd.read_parquet(r / "tables/fig12_dimension_sweep.parquet")
    assert set(f12.dim) == set(DIMS) and (f12.n == params["sweep"]["eval_limit"]).all()
    t5 = pd.read_parquet(r / "tables/table5_dimension_exclusion.parquet")
    assert t5.excluded.tolist() == ["none", "qk", "v", "mlp", "embed"]
    t6 = pd.read_parquet(r / "tables/table6_techniques.parquet")
    assert len(t6) == 4 and t6.top1.between(0, 1).all()
    f7 = pd.read_parquet(r / "tables/fig7_gamma_grid.parquet")
    assert len(f7) == len(params["gamma"]["exp"]) * len(params["gamma"]["emb"])
    for name in ("table1_svd_vs_score", "table5_dimension_exclusion", "table6_techniques"):
        assert (r / f"tables/{name}.csv").is_file() and (r / f"tables/{name}.md").read_text().startswith("# Table")
    for fig in ("fig7_gamma_grid_tiny-fmnist.png", "fig12_dimension_sweep_tiny-fmnist.png"):
        assert (r / "figures" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((r / "ablations.json").read_text())
    assert {"table1", "fig12", "table5", "table6", "fig7"} <= set(summary)
    # Every job logged; the costly ones were timed; the models are where DVC tracks them.
    assert (ablated / "logs/test/ablation/sweep/tiny-fmnist/H2.log").is_file()
    assert len(list((ablated / "benchmarks/test/ablation/run").rglob("*.tsv"))) == 9
    assert len(list((ablated / "models/test/ablations").rglob("finetuned/model.safetensors"))) == 9


def test_ablation_figures_are_byte_identical_when_rebuilt(built_copy):
    ablated = built_copy
    figs = sorted((ablated / "results/test/figures").glob("fig*_*.png"))
    before = {f.name: f.read_bytes() for f in figs}
    run([SNAKEMAKE, "ablations", "--cores", "1", "--forcerun", "ablation_fig7", "ablation_fig12", "--config",
         "profile=test"], ablated)
    assert {f.name: f.read_bytes() for f in figs} == before
    proc = run([SNAKEMAKE, "-n", "ablations", "--config", "profile=test"], ablated)
    assert scheduled_jobs(proc.stdout + proc.stderr) == {}
