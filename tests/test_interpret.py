"""Interpretation figures: attention rollout (Fig. 8), t-SNE (Fig. 11), top-activating samples of
MLP neurons (Table 2, Figs. 9-10), and their Snakemake rules on the `test` profile."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nuwa.data import MemoryDataset
from nuwa.errors import NuwaError
from nuwa.interpret.neurons import (class_spread, cls_activations, choose_neurons, deep_more_specific, neuron_table,
                          resolve_layers, top_samples)
from nuwa.interpret.rollout import attention_maps, cls_patch_map, rollout
from nuwa.interpret.tsne import tsne


# ---- the explicit attention path -----------------------------------------------------------------
def test_forward_attention_gives_the_sdpa_logits_and_one_map_per_layer(irregular_model):
    x = torch.randn(3, 1, 28, 28)
    logits, maps = irregular_model.forward_attention(x)
    torch.testing.assert_close(logits, irregular_model(x), atol=1e-5, rtol=1e-5)
    assert [tuple(m.shape) for m in maps] == [(3, 3, 17, 17), (3, 1, 17, 17), (3, 2, 17, 17)]
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:-1]))


# ---- rollout ---------------------------------------------------------------------------------------
def _random_attention(b, h, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, n, n, generator=g).softmax(-1)


def test_rollout_rows_sum_to_one_and_follow_the_layer_order():
    maps = [_random_attention(2, 3, 10, s) for s in range(4)]
    r = rollout(maps)
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 10))
    # Later layers multiply from the left: rollout(l1..l4) = A4' @ rollout(l1..l3).
    a4 = maps[3].mean(1) + torch.eye(10)
    a4 = a4 / a4.sum(-1, keepdim=True)
    torch.testing.assert_close(r, a4 @ rollout(maps, upto=3))


def test_uniform_attention_gives_a_uniform_patch_map():
    n = 1 + 4 * 4
    uniform = [torch.full((1, 2, n, n), 1.0 / n) for _ in range(5)]
    m = cls_patch_map(rollout(uniform), (4, 4))
    torch.testing.assert_close(m, torch.full((1, 4, 4), 1 / 16))


def test_attention_on_one_patch_puts_the_map_on_that_patch():
    n = 1 + 9
    a = torch.zeros(1, 1, n, n)
    a[..., 5] = 1.0  # every token attends only to patch 5 (token index 5)
    m = cls_patch_map(rollout([a, a]), (3, 3))
    assert m.flatten().argmax().item() == 4 and m.flatten()[4] > 0.99


def test_a_model_whose_attention_is_uniform_gives_uniform_maps(irregular_model):
    # Zero query/key weights and biases: every score is 0, so softmax is uniform in every layer.
    with torch.no_grad():
        for blk in irregular_model.blocks:
            a = blk.attn
            qk = a.num_heads * a.qk_dim * 2
            a.qkv.weight[:qk].zero_()
            a.qkv.bias[:qk].zero_()
    out = attention_maps(irregular_model, torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8))
    assert out["layers"].shape == (2, 3, 4, 4) and out["rollout"].shape == (2, 4, 4)
    torch.testing.assert_close(out["layers"], torch.full((2, 3, 4, 4), 1 / 16))
    torch.testing.assert_close(out["rollout"], torch.full((2, 4, 4), 1 / 16))


def test_rollout_rejects_a_grid_that_does_not_fit():
    with pytest.raises(NuwaError, match="grid"):
        cls_patch_map(torch.ones(1, 10, 10), (4, 4))


# ---- t-SNE -----------------------------------------------------------------------------------------
def _blobs(n=60, d=10, gap=20.0, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (n, d)), rng.normal(gap, 1, (n, d))])
    return x, np.repeat([0, 1], n)


def test_tsne_is_deterministic_with_a_seed_and_separates_two_blobs():
    x, y = _blobs()
    a = tsne(x, perplexity=15, iterations=300, seed=3)
    b = tsne(x, perplexity=15, iterations=300, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, tsne(x, perplexity=15, iterations=300, seed=4))
    # Every point is nearer the centre of its own blob than the other blob's.
    c0, c1 = a[y == 0].mean(0), a[y == 1].mean(0)
    own = np.where(y[:, None] == 0, np.linalg.norm(a - c0, axis=1)[:, None], np.linalg.norm(a - c1, axis=1)[:, None])
    other = np.where(y[:, None] == 0, np.linalg.norm(a - c1, axis=1)[:, None], np.linalg.norm(a - c0, axis=1)[:, None])
    assert (own < other).all()
    # And the blobs are well apart relative to their spread.
    spread = max(np.linalg.norm(a[y == 0] - c0, axis=1).max(), np.linalg.norm(a[y == 1] - c1, axis=1).max())
    assert np.linalg.norm(c0 - c1) > 2 * spread


def test_tsne_rejects_a_perplexity_too_large_for_the_points():
    with pytest.raises(NuwaError, match="perplexity"):
        tsne(np.zeros((10, 3)), perplexity=30)


# ---- neurons -----------------------------------------------------------------------------------------
def _tiny_data(n=40, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return MemoryDataset(images, np.arange(n) % classes, [f"c{i}" for i in range(classes)])


def test_activations_are_gelu_of_the_first_mlp_linear_on_the_class_token(irregular_model):
    ds = _tiny_data(6)
    acts, labels = cls_activations(irregular_model, ds, [0, 2], desc=None)
    assert set(acts) == {0, 2} and acts[0].shape == (6, 100) and acts[2].shape == (6, 64)
    assert labels.tolist() == [0, 1, 2, 3, 0, 1]
    # The same numbers by hand: run the blocks, read the class token entering layer 2's MLP.
    from nuwa.data import Preprocess

    x = irregular_model.embed(Preprocess.for_config(irregular_model.config)(ds.images))
    for blk in irregular_model.blocks[:2]:
        x = blk(x)
    blk = irregular_model.blocks[2]
    h = blk.norm2(x + blk.attn(blk.norm1(x)))[:, 0]
    torch.testing.assert_close(acts[2], torch.nn.functional.gelu(blk.mlp.fc1(h)), atol=1e-5, rtol=1e-5)


def test_neuron_table_has_a_row_per_layer_neuron_and_rank(irregular_model):
    ds = _tiny_data(40)
    acts, labels = cls_activations(irregular_model, ds, resolve_layers([1, -1], 3), desc=None)
    ids = list(range(100, 140))
    t = neuron_table(acts, labels, ids, ds.class_names, per_layer=4, k=5)
    assert list(t.columns) == ["layer", "neuron", "rank", "sample", "label", "class_name", "activation",
                               "distinct_classes"]
    assert len(t) == 2 * 4 * 5 and sorted(t.layer.unique()) == [1, 3]
    for (layer, neuron), g in t.groupby(["layer", "neuron"]):
        assert g["rank"].tolist() == [1, 2, 3, 4, 5]
        assert g.activation.is_monotonic_decreasing
        assert g.distinct_classes.nunique() == 1 and g.distinct_classes.iloc[0] == g.label.nunique()
        a = acts[layer - 1][:, neuron]
        assert g.activation.iloc[0] == pytest.approx(float(a.max()))
        assert set(g["sample"]) <= set(ids)
    assert (t.class_name == t.label.map(lambda c: f"c{c}")).all()
    spread = class_spread(acts, labels, t, k=5, depth=3)
    assert list(spread.layer) == [1, 3] and list(spread.neurons) == [100, 64]
    assert ((spread.all_mean_distinct_classes >= 1) & (spread.all_mean_distinct_classes <= 4)).all()
    # Every neuron's count, for the ledger's bootstrap over neurons: the mean is the layer's mean.
    assert [len(c) for c in spread.distinct_classes_per_neuron] == [100, 64]
    assert [sum(c) / len(c) for c in spread.distinct_classes_per_neuron] == pytest.approx(
        list(spread.all_mean_distinct_classes))
    holds, text = deep_more_specific(spread)
    assert isinstance(holds, bool) and "layer 1" in text and "layer 3" in text


def test_neuron_choice_is_by_variance_and_top_samples_by_activation():
    acts = torch.tensor([[0.0, 1.0, 5.0], [0.0, 3.0, -5.0], [0.0, 2.0, 0.0]])
    assert choose_neurons(acts, 2) == [2, 1]
    assert top_samples(acts, 1, 2) == [1, 2]
    assert top_samples(acts, 0, 3) == [0, 1, 2]  # ties: lower row first


def test_deep_more_specific_reads_the_first_and_last_layer():
    spread = pd.DataFrame(dict(layer=[1, 12], neurons=[384, 384], top_k=[8, 8],
                               all_mean_distinct_classes=[5.0, 2.0]))
    assert deep_more_specific(spread)[0] is True
    assert deep_more_specific(spread.assign(all_mean_distinct_classes=[2.0, 5.0]))[0] is False
    assert deep_more_specific(spread.iloc[:1])[0] is None


def test_layers_are_one_based_and_negative_from_the_end():
    assert resolve_layers([1, -1, 12], 12) == [0, 11]
    with pytest.raises(NuwaError):
        resolve_layers([13], 12)
    with pytest.raises(NuwaError):
        resolve_layers([0], 12)


# ---- the rules, on the `test` profile in a temporary copy of the repository --------------------------
wf = pytest.importorskip("tests.test_workflow")
FIGURES = ("fig8_attention_rollout_tiny-fmnist", "fig11_tsne_layers_tiny-fmnist",
           "fig9_10_neuron_top_samples_tiny-fmnist", "fig2_task_specific_finetuning")
TABLES = ("fig8_attention_rollout", "table2_neuron_top_samples", "table2_neuron_class_spread",
          "fig2_task_specific_finetuning")


@pytest.fixture(scope="module")
def interpreted(built):
    """The session's `test` profile build (tests/conftest.py `built`): its default target includes
    `interpretation`, so this is what `snakemake interpretation` builds, and more."""
    return built[0]


def test_interpretation_builds_every_figure_and_table(interpreted):
    r = interpreted / "results" / "test"
    for fig in FIGURES:
        png = r / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for t in TABLES:
        for ext in ("csv", "md", "parquet"):
            assert (r / "tables" / f"{t}.{ext}").stat().st_size > 0
    for log in ("fig8", "fig11", "table2", "fig2", "small_base"):
        assert (interpreted / "logs/test/interpret" / f"{log}.log").stat().st_size > 0


def test_interpretation_tables_say_what_the_captions_promise(interpreted):
    t = interpreted / "results/test/tables"
    neurons = pd.read_parquet(t / "table2_neuron_top_samples.parquet")
    # test profile: layers [1, -1] of a depth-3 base, 2 neurons each, top 4.
    assert sorted(neurons.layer.unique()) == [1, 3] and len(neurons) == 2 * 2 * 4
    assert neurons.groupby(["layer", "neuron"]).size().eq(4).all()
    spread = pd.read_parquet(t / "table2_neuron_class_spread.parquet")
    assert list(spread.layer) == [1, 3] and (spread.all_mean_distinct_classes.between(1, 4)).all()
    rollout = pd.read_parquet(t / "fig8_attention_rollout.parquet")
    assert sorted(rollout.model.unique()) == ["H2", "base"] and len(rollout) == 2 * 3
    assert ((rollout.rollout_mass_left + rollout.rollout_mass_right - 1).abs() < 1e-6).all()  # even grid: halves
    fig2 = pd.read_parquet(t / "fig2_task_specific_finetuning.parquet")
    assert sorted(zip(fig2["size"], fig2.model)) == sorted(
        (k, m) for k in (2, 5) for m in ("small base (sliced)", "large base (sliced)", "small base fine-tuned"))
    assert fig2.top1.between(0, 1).all() and (fig2.n > 0).all()
    # Nested subsets: the 2 classes are among the 5.
    sets = {k: set(c.split(",")) for k, c in zip(fig2["size"], fig2.classes)}
    assert sets[2] <= sets[5]


def test_interpretation_figures_are_byte_identical_on_rebuild(built_copy):
    interpreted = built_copy
    figs = interpreted / "results/test/figures"
    before = {f: wf.sha256(figs / f"{f}.png") for f in FIGURES[:2]}
    wf.run([wf.SNAKEMAKE, "--cores", "2", "--config", "profile=test", "--forcerun", "fig8_attention_rollout",
            "fig11_tsne_layers", "--", "interpretation"], interpreted)
    assert {f: wf.sha256(figs / f"{f}.png") for f in FIGURES[:2]} == before


@pytest.mark.parametrize("profile", ["default", "paper"])
def test_interpretation_is_declared_for_the_other_profiles(interpreted, profile):
    proc = wf.run([wf.SNAKEMAKE, "-n", "--forceall", "--config", f"profile={profile}", "--", "interpretation"], interpreted)
    jobs = wf.scheduled_jobs(proc.stdout + proc.stderr)
    for rule in ("fig8_attention_rollout", "fig11_tsne_layers", "table2_neuron_top_samples", "small_base",
                 "fig2_task_specific_finetuning"):
        assert jobs.get(rule) == 1, (rule, jobs)


# ---- Fig. 2 ----------------------------------------------------------------------------------------
def test_class_subsets_are_nested_seeded_and_within_range():
    from nuwa.paper.fig2 import nested_class_subsets

    s = nested_class_subsets(10, [2, 5, 10, 25], seed=0)
    assert list(s) == [2, 5, 10] and s[10] == list(range(10))
    assert set(s[2]) <= set(s[5]) and all(v == sorted(v) for v in s.values())
    assert s == nested_class_subsets(10, [2, 5, 10], seed=0) and s[5] != nested_class_subsets(10, [5], seed=1)[5]
    with pytest.raises(NuwaError):
        nested_class_subsets(10, [25], seed=0)


def test_finetuned_beats_larger_needs_every_subset():
    from nuwa.paper.fig2 import LARGE, SMALL, TUNED, finetuned_beats_larger

    t = pd.DataFrame([dict(size=k, model=m, top1=v) for k, vals in {2: (0.8, 0.85, 0.9), 5: (0.7, 0.75, 0.8)}.items()
                      for m, v in zip((SMALL, LARGE, TUNED), vals)])
    holds, text = finetuned_beats_larger(t)
    assert holds is True and "2 classes: fine-tuned 90.0% vs larger 85.0%" in text
    t.loc[(t["size"] == 5) & (t.model == TUNED), "top1"] = 0.7
    assert finetuned_beats_larger(t)[0] is False
    assert finetuned_beats_larger(t.iloc[:0])[0] is None
