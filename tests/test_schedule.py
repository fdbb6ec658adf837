"""NuWa's schedule: head selection, the adaptive thresholds, and reaching the requested rate."""
import pytest
import torch

import nuwa
from nuwa.importance import RandomScores
from nuwa.options import RATE_TOLERANCE
from nuwa.schedule import AdaptiveOptions, last_iteration, materialise, plan_at, search, select_heads
from nuwa.svd import reparametrize


def test_head_selection_is_global_and_keeps_one_head_per_layer():
    scores = [torch.tensor([10.0, 1.0, 1.0]), torch.tensor([0.5, 0.4]), torch.tensor([6.0, 2.0, 0.1])]
    # total 21: sorted 10, 6, 2, 1, 1, .5, .4, .1 -> cumulative .476 .762 .857 .905
    assert select_heads(scores, 0.90) == [[0, 1], [0], [0, 1]]  # layer 1 kept by the one-per-layer rule
    assert select_heads(scores, 0.76) == [[0], [0], [0]]
    assert select_heads(scores, 1.0) == [[0, 1, 2], [0, 1], [0, 1, 2]]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = nuwa.EdgeViTConfig.uniform(depth=6, embed_dim=96, num_heads=3, img_size=28, patch_size=7, in_chans=1,
                                     num_classes=10, mean=(0.5,), std=(0.5,))
    model = nuwa.EdgeViT(cfg).eval()
    rotated, spectra = reparametrize(model)
    scores = RandomScores(seed=1)(model)
    return model, rotated, spectra, scores


def test_thresholds_decay_in_the_paper_ratio(setup):
    _, _, spectra, scores = setup
    plan = plan_at(4, spectra, scores, scores.embed, AdaptiveOptions())
    assert plan.rho == pytest.approx({"qkv": 0.96, "exp": 0.80, "emb": 0.90})
    assert last_iteration(AdaptiveOptions()) == 100


def test_sizes_shrink_monotonically_with_iterations(setup):
    _, _, spectra, scores = setup
    opts = AdaptiveOptions(round_to=1)
    prev = None
    for t in range(0, 101, 5):
        p = plan_at(t, spectra, scores, scores.embed, opts)
        sizes = (sum(p.qk), sum(p.v), sum(map(len, p.neurons)), len(p.embed))
        if prev is not None:
            assert all(a <= b for a, b in zip(sizes, prev)), t
        prev = sizes
    assert len(p.neurons[0]) == 384  # layer 1's MLP is never pruned


@pytest.mark.parametrize("metric", ["params", "flops"])
@pytest.mark.parametrize("alpha", [0.2, 0.4, 0.6, 0.8])
@pytest.mark.parametrize("round_to", [1, 8])
def test_search_reaches_the_rate_and_stops_at_the_first_iteration(setup, metric, alpha, round_to):
    model, rotated, spectra, scores = setup
    opts = AdaptiveOptions(round_to=round_to)
    base = nuwa.cost.cost(model.config, metric)
    target = (1 - alpha) * base
    ok = lambda plan: nuwa.cost.cost(plan.config(model.config), metric) <= target  # noqa: E731
    plan, _ = search(spectra, scores, scores.embed, opts, ok)
    pruned = materialise(rotated, plan)
    achieved = 1 - nuwa.cost.cost(pruned, metric) / base
    assert alpha <= achieved <= alpha + RATE_TOLERANCE, achieved
    assert nuwa.cost.cost(pruned.config, metric) == nuwa.cost.cost(plan.config(model.config), metric)
    if plan.t > 0:  # a slightly smaller decay is over budget: the search stopped at the first fit
        held = plan if opts.fill else None
        assert not ok(plan_at(plan.t - 0.01, spectra, scores, scores.embed, opts, hold=held))
    assert plan.over is not None and not ok(plan.over)  # the step it could not split


@pytest.mark.parametrize("alpha", [0.2, 0.4, 0.6, 0.8])
def test_fill_keeps_the_embedding_and_lands_closer_to_the_budget(setup, alpha):
    model, _, spectra, scores = setup
    target = (1 - alpha) * nuwa.count_flops(model.config)
    ok = lambda plan: nuwa.count_flops(plan.config(model.config)) <= target  # noqa: E731
    coarse, _ = search(spectra, scores, scores.embed, AdaptiveOptions(fill=False), ok)
    filled, _ = search(spectra, scores, scores.embed, AdaptiveOptions(), ok)
    assert ok(filled) and filled.embed == coarse.embed and filled.t <= coarse.t
    assert nuwa.count_flops(filled.config(model.config)) >= nuwa.count_flops(coarse.config(model.config))


def test_integer_iterations_without_refinement(setup):
    model, _, spectra, scores = setup
    opts = AdaptiveOptions(refine_steps=0, fill=False)  # the paper's schedule
    target = 0.6 * nuwa.count_flops(model.config)
    ok = lambda plan: nuwa.count_flops(plan.config(model.config)) <= target  # noqa: E731
    plan, _ = search(spectra, scores, scores.embed, opts, ok)
    assert isinstance(plan.t, int) and plan.t > 0
    assert not ok(plan_at(plan.t - 1, spectra, scores, scores.embed, opts))


def test_unreachable_budget_is_an_error(setup):
    _, _, spectra, scores = setup
    with pytest.raises(nuwa.NuwaError, match="unreachable"):
        search(spectra, scores, scores.embed, AdaptiveOptions(), lambda plan: False)


def test_excluded_dimensions_stay_whole(setup):
    model, rotated, spectra, scores = setup
    opts = AdaptiveOptions(exclude=("qk", "embed"))
    plan = plan_at(30, spectra, scores, scores.embed, opts)
    assert plan.qk == [32] * 6 and len(plan.embed) == 96
    assert sum(plan.v) < 32 * 6 and sum(map(len, plan.neurons)) < 384 * 6
