"""Baselines: each reaches the requested rate, never looks at the test split, and costs what it says."""
import pytest
import torch

import nuwa
from nuwa.methods.selection import Selection, global_ranking, random_quantiles
from nuwa.options import DeriveOptions
from nuwa.derivation import derive
from nuwa.importance import GroupScores

from .test_derive import FAST  # `npz` and `base_dir` are session fixtures (tests/conftest.py)


@pytest.mark.parametrize("method", ["random", "nvit", "xpruner"])
@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_each_baseline_reaches_the_rate_within_a_few_points(base_dir, npz, method, alpha):
    opts = DeriveOptions(**FAST, xpruner=dict(steps=20))
    model, report = derive(base_dir, npz, classes=[0, 3, 5], rate=alpha, method=method, recovery="none",
                           options=opts)
    assert alpha <= report["rate_achieved"] <= alpha + 0.03, report["rate_achieved"]
    assert report["method"] == method and model.config.classes == [0, 3, 5]
    assert model.config.depth == nuwa.load(base_dir).config.depth  # no baseline prunes depth
    passes = report["details"]["passes"]
    assert passes == {"random": 0, "nvit": FAST["score_samples"], "xpruner": 20}[method]


def test_derivation_never_opens_the_test_split(base_dir, npz, monkeypatch):
    import nuwa.data as data

    opened = []
    real = data.open_split
    monkeypatch.setattr(data, "open_split", lambda spec, split, **kw: opened.append(split) or real(spec, split, **kw))
    for method in ("nuwa", "random", "nvit", "xpruner"):
        derive(base_dir, npz, classes=[1, 2], rate=0.4, method=method, finetune_epochs=1,
               options=DeriveOptions(**FAST, xpruner=dict(steps=5)))
    assert opened and set(opened) == {"train"}


def test_random_quantiles_prune_every_layer_at_the_same_pace():
    cfg = nuwa.EdgeViTConfig.uniform(depth=4, embed_dim=64, num_heads=4, img_size=28, patch_size=7, in_chans=1,
                                     num_classes=10, mean=(0.5,), std=(0.5,))
    budget = 0.5 * nuwa.count_flops(cfg)
    sel, _ = global_ranking(cfg, random_quantiles(cfg, seed=0),
                            lambda s: nuwa.count_flops(s.config(cfg)) <= budget, per_parameter=False)
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
    sel, _ = global_ranking(cfg, scores, lambda s: nuwa.count_params(s.config(cfg)) < full, per_parameter=False)
    assert sel.neurons[1] == [i for i in range(16) if i != 3] and sel.neurons[0] == list(range(16))
    assert isinstance(sel, Selection)
