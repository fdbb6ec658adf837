"""Taylor importance (Eq. 3-4): a cheap estimate that ranks units like actually removing them."""
import pytest
import torch
import torch.nn.functional as F

import nuwa
from nuwa.importance import RandomScores, Taylor, group_scores, weight_saliency
from nuwa.prune import prune_heads, prune_mlp


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()))


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained a little on a learnable synthetic task, so losses mean something."""
    torch.manual_seed(0)
    cfg = nuwa.EdgeViTConfig.uniform(depth=2, embed_dim=32, num_heads=4, mlp_ratio=2, img_size=28, patch_size=7,
                                     in_chans=1, num_classes=4, mean=(0.0,), std=(1.0,))
    model = nuwa.EdgeViT(cfg)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (256,), generator=g)
    x = 0.3 * torch.randn(256, 1, 28, 28, generator=g)
    for i, c in enumerate(y.tolist()):  # class = which quadrant is bright
        r, col = divmod(c, 2)
        x[i, 0, r * 14:(r + 1) * 14, col * 14:(col + 1) * 14] += 1.0
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        idx = torch.randint(0, 256, (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval(), x[:48], y[:48]


def _brute_force(model, x, y, variants):
    """E_x |L(x) - L_{group=0}(x)| per group, by actually removing each group."""
    with torch.no_grad():
        ref = F.cross_entropy(model(x), y, reduction="none")
        return torch.tensor([(F.cross_entropy(m(x), y, reduction="none") - ref).abs().mean().item()
                             for m in variants])


def test_head_scores_rank_like_removing_the_head(trained):
    model, x, y = trained
    scores = Taylor(microbatch=1)(model, [(x, y)])
    variants, taylor = [], []
    for l, lc in enumerate(model.config.layers):
        for h in range(lc.num_heads):
            keep = [list(range(c.num_heads)) for c in model.config.layers]
            keep[l].remove(h)
            variants.append(prune_heads(model, keep))
            taylor.append(scores.heads[l][h])
    brute = _brute_force(model, x, y, variants)
    assert _spearman(torch.stack(taylor), brute) > 0.5


def test_neuron_scores_rank_like_removing_the_neuron(trained):
    model, x, y = trained
    scores = Taylor(microbatch=1)(model, [(x, y)])
    lc = model.config.layers[1]
    variants = []
    for n in range(lc.mlp_dim):
        keep = [list(range(c.mlp_dim)) for c in model.config.layers]
        keep[1].remove(n)
        variants.append(prune_mlp(model, keep))
    brute = _brute_force(model, x, y, variants)
    rho = _spearman(scores.neurons[1], brute)
    rand = _spearman(RandomScores(seed=0)(model).neurons[1], brute)
    assert rho > 0.5 and rho > rand + 0.3


def test_per_sample_expectation_differs_from_batch_gradient(trained):
    """microbatch=1 is Eq. 4's E|g w|; one big batch takes |E g w|, which can only be smaller."""
    model, x, y = trained
    per_sample, n1 = weight_saliency(model, [(x, y)], microbatch=1, desc=None)
    batch, n2 = weight_saliency(model, [(x, y)], microbatch=len(x), desc=None)
    assert n1 == len(x) and n2 == 1
    w = "blocks.0.mlp.fc1.weight"
    assert (batch[w] <= per_sample[w] + 1e-7).all()
    assert batch[w].sum() < per_sample[w].sum()


def test_group_sums_cover_exactly_the_groups_weights(trained):
    """With saliency 1 on every weight, a group's score is its number of weights."""
    model, _, _ = trained
    ones = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    g = group_scores(model, ones)
    d, lc = 32, model.config.layers[0]
    assert g.heads[0][0] == 2 * lc.qk_dim * (d + 1) + lc.v_dim * (d + 1) + lc.v_dim * d  # Q, K, V rows; W_O cols
    assert g.neurons[0][0] == d + 1 + d  # fc1 row + bias + fc2 column
    assert g.qk[0][0, 0] == 2 * (d + 1) and g.v[0][0, 0] == (d + 1) + d
    # an embedding dim: patch conv (49 + bias) + cls + pos (17 tokens) + per block (2 norms x 2, qkv column,
    # proj row + bias, fc1 column, fc2 row + bias) + final norm (2) + head column (4 classes)
    per_block = 4 + 3 * 32 + (32 + 1) + 64 + (64 + 1)
    assert g.embed[0] == (49 + 1) + 1 + 17 + 2 * per_block + 2 + 4


def test_vectorised_per_sample_gradients_equal_the_sample_loop(trained):
    model, x, y = trained
    fast, _ = weight_saliency(model, [(x, y)], microbatch=1, desc=None)
    slow, _ = weight_saliency(model, [(x, y)], microbatch=1, desc=None, memory_budget=1)  # chunk 1: loop
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-4, atol=1e-9)
