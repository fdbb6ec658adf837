"""Baselines: each reaches the requested rate, never looks at the test split, and costs what it says;
NViT ranks by Hessian-aware saliency per cost saved, X-Pruner trains class-wise masks jointly with
the weights and keeps the grid point of best validation top-1."""
import copy

import pytest
import torch
import torch.nn.functional as F

import nuwa
from nuwa.methods.nvit import hessian_saliency
from nuwa.methods.selection import Selection, global_ranking, random_quantiles, unit_costs
from nuwa.methods.xpruner import MaskOptions, joint_run
from nuwa.options import DeriveOptions
from nuwa.derivation import derive
from nuwa.importance import GroupScores

from .test_derive import FAST  # `npz` and `base_dir` are session fixtures (tests/conftest.py)

XP = dict(steps=20, lr_scales=(0.5, 2.0), stops=(0.5, 1.0))  # a small X-Pruner grid: 2 runs x 2 stops


@pytest.mark.parametrize("method", ["random", "nvit", "xpruner"])
@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_each_baseline_reaches_the_rate_within_a_few_points(base_dir, npz, method, alpha):
    opts = DeriveOptions(**FAST, xpruner=XP)
    model, report = derive(base_dir, npz, classes=[0, 3, 5], rate=alpha, method=method, recovery="none",
                           options=opts)
    assert alpha <= report["rate_achieved"] <= alpha + 0.03, report["rate_achieved"]
    assert report["method"] == method and model.config.classes == [0, 3, 5]
    assert model.config.depth == nuwa.load(base_dir).config.depth  # no baseline prunes depth
    passes = report["details"]["passes"]
    assert passes == {"random": 0, "nvit": FAST["score_samples"], "xpruner": 20 * 2}[method]


@pytest.mark.slow
def test_derivation_never_opens_the_test_split(base_dir, npz, monkeypatch):
    import nuwa.data as data

    opened = []
    real = data.open_split
    monkeypatch.setattr(data, "open_split", lambda spec, split, **kw: opened.append(split) or real(spec, split, **kw))
    for method in ("nuwa", "random", "nvit", "xpruner"):
        derive(base_dir, npz, classes=[1, 2], rate=0.4, method=method, recovery="finetune", finetune_epochs=1,
               options=DeriveOptions(**FAST, xpruner=dict(steps=5)))
    assert opened and set(opened) == {"train"}


def test_random_quantiles_prune_every_layer_at_the_same_pace():
    cfg = nuwa.EdgeViTConfig.uniform(depth=4, embed_dim=64, num_heads=4, img_size=28, patch_size=7, in_chans=1,
                                     num_classes=10, mean=(0.5,), std=(0.5,))
    budget = 0.5 * nuwa.count_flops(cfg)
    sel, _ = global_ranking(cfg, random_quantiles(cfg, seed=0),
                            lambda s: nuwa.count_flops(s.config(cfg)) <= budget)
    widths = [len(n) for n in sel.neurons]
    assert max(widths) - min(widths) <= 1  # uniform per layer
    a = random_quantiles(cfg, seed=1).neurons[0]
    assert not torch.equal(a, random_quantiles(cfg, seed=2).neurons[0])


def test_global_ranking_removes_the_least_salient_units_first():
    cfg = nuwa.EdgeViTConfig.uniform(depth=2, embed_dim=16, num_heads=2, mlp_ratio=1, img_size=28, patch_size=14,
                                     in_chans=1, num_classes=2, mean=(0.5,), std=(0.5,))
    one = lambda *s: torch.ones(*s)  # noqa: E731
    neurons = [one(16), one(16)]
    neurons[1][[3, 7]] = 0.0  # two useless neurons
    scores = GroupScores(heads=[one(2), one(2)], qk=[one(2, 8), one(2, 8)], v=[one(2, 8), one(2, 8)],
                         neurons=neurons, embed=one(16))
    full = nuwa.count_params(cfg)
    sel, _ = global_ranking(cfg, scores, lambda s: nuwa.count_params(s.config(cfg)) < full)
    assert sel.neurons[1] == [i for i in range(16) if i != 3] and sel.neurons[0] == list(range(16))
    assert isinstance(sel, Selection)


# ---- NViT ------------------------------------------------------------------------------------------
def _tiny_cfg(**kw):
    base = dict(depth=2, embed_dim=16, num_heads=2, mlp_ratio=1, img_size=28, patch_size=14, in_chans=1,
                num_classes=2, mean=(0.5,), std=(0.5,))
    return nuwa.EdgeViTConfig.uniform(**{**base, **kw})


def test_unit_costs_are_what_removing_one_unit_saves():
    cfg = _tiny_cfg()
    N, d = cfg.num_tokens, cfg.embed_dim
    assert unit_costs(cfg, "flops")[("neuron", 0)] == 2 * N * d  # one row of fc1, one column of fc2
    assert unit_costs(cfg, "params")[("neuron", 1)] == 2 * d + 1  # ... and fc1's bias
    smaller = cfg.with_layers(cfg.layers, embed_dim=d - 1)
    assert unit_costs(cfg, "params")[("embed", -1)] == nuwa.count_params(cfg) - nuwa.count_params(smaller)


def test_nvit_normalised_saliency_removes_the_unit_of_lowest_saliency_per_cost_saved_first():
    cfg = _tiny_cfg()
    one = lambda *s: torch.ones(*s)  # noqa: E731
    neurons, embed = [one(16), one(16)], one(16)
    neurons[1][3] = 0.01  # a cheap neuron of low saliency ...
    embed[5] = 0.02  # ... and a costly embedding dim of a little more saliency, far less per FLOP saved
    scores = GroupScores(heads=[one(2), one(2)], qk=[one(2, 8), one(2, 8)], v=[one(2, 8), one(2, 8)],
                         neurons=neurons, embed=embed)
    full = nuwa.count_flops(cfg)
    one_unit = lambda s: nuwa.count_flops(s.config(cfg)) < full  # noqa: E731  (remove one unit, the first)
    by_cost, _ = global_ranking(cfg, scores, one_unit, cost_metric="flops")
    assert 5 not in by_cost.embed and by_cost.neurons[1] == list(range(16))
    raw, _ = global_ranking(cfg, scores, one_unit)  # without the normalisation the neuron goes first
    assert raw.embed == list(range(16)) and 3 not in raw.neurons[1]


def test_nvit_saliency_squares_the_groups_summed_gradient_weight_product(irregular_model):
    """1/2 E[(sum_G w g)^2]: summed over the group before squaring, unlike squared Taylor per weight."""
    torch.manual_seed(0)
    x, y = torch.randn(3, 1, 28, 28), torch.tensor([0, 2, 1])
    scores = hessian_saliency(irregular_model, [(x, y)])
    expected = []
    for i in range(3):
        irregular_model.zero_grad()
        F.cross_entropy(irregular_model(x[i:i + 1]), y[i:i + 1]).backward()
        fc1, fc2 = irregular_model.blocks[0].mlp.fc1, irregular_model.blocks[0].mlp.fc2
        s = (fc1.weight.grad * fc1.weight).sum(1) + fc1.bias.grad * fc1.bias + (fc2.weight.grad * fc2.weight).sum(0)
        expected.append(s.detach() ** 2 / 2)
    assert scores.passes == 3
    assert torch.allclose(scores.neurons[0], torch.stack(expected).mean(0), rtol=1e-3, atol=1e-9)


def test_nvit_prunes_in_iterations_within_the_budget_of_either_metric(base_dir, npz):
    for metric in ("params", "flops"):
        _, report = derive(base_dir, npz, classes=[1, 4], rate=0.6, metric=metric, method="nvit", recovery="none",
                           options=DeriveOptions(**FAST))
        assert 0.6 <= report["rate_achieved"] <= 0.63, (metric, report["rate_achieved"])
        assert report["details"]["iterations"] == 3 and report["details"]["normalised_by"] == metric


# ---- X-Pruner ----------------------------------------------------------------------------------------
def test_xpruner_trains_class_wise_masks_and_the_weights_jointly_to_the_target_cost(base_dir):
    from nuwa.prune import prune_classifier

    model = prune_classifier(nuwa.load(base_dir), [0, 3, 5])
    start = copy.deepcopy(model.state_dict())
    torch.manual_seed(0)
    data = [(torch.randn(16, 1, 28, 28), torch.randint(0, 3, (16,))) for _ in range(4)]
    full = nuwa.count_flops(model.config)
    seen = []
    joint_run(model, data, full_cost=full, target_cost=0.5 * full, metric="flops", opts=MaskOptions(steps=12),
              scale=1.0, seed=0, at_stop=lambda step, gates: seen.append((step, copy.deepcopy(gates))))
    assert [step for step, _ in seen] == [6, 12]
    gates = seen[-1][1]
    assert all(not torch.equal(v, model.state_dict()[k]) for k, v in start.items() if k.endswith("qkv.weight"))
    neurons = gates.neurons[0].detach()
    assert neurons.abs().sum() > 0 and not torch.allclose(neurons[0], neurons[1])  # learnt, per class
    kept = [(g.detach().mean(0) > gates.threshold).sum().item() for g in (*gates.neurons, gates.embed)]
    assert min(kept) >= 1 and sum(kept) < sum(g.shape[1] for g in (*gates.neurons, gates.embed))


def test_xpruner_keeps_the_grid_point_of_best_validation_top1_and_states_its_cost(base_dir, npz):
    opts = DeriveOptions(**FAST, xpruner=dict(XP, val_samples=100_000))  # the whole validation split
    model, report = derive(base_dir, npz, classes=[0, 2, 4, 5], rate=0.7, method="xpruner", recovery="none",
                           options=opts)
    d = report["details"]
    assert d["passes"] == XP["steps"] * len(XP["lr_scales"]) and d["val_images"] == 4 * report["val_n"]
    assert [(g["lr"], g["steps"]) for g in d["grid"]] == [(0.05, 10), (0.05, 20), (0.2, 10), (0.2, 20)]
    assert d["chosen"] == max(d["grid"], key=lambda g: g["val_top1"])
    assert report["val_top1_before_recovery"] == pytest.approx(d["chosen"]["val_top1"])  # the chosen model
    assert d["chosen"]["weights_moved"] > 0  # the pruned model inherits the jointly trained weights
