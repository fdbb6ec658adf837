"""Pruning operators: each cuts one dimension for real, and keeping everything changes nothing."""
import pytest
import torch

import nuwa
from nuwa.prune import (prune_classifier, prune_depth, prune_embedding, prune_heads, prune_mlp, prune_qk,
                        prune_v)
from nuwa.prune.rules import cumulative_keep, energy_rank, round_size
from nuwa.svd import reparametrize

X = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _out(m):
    with torch.no_grad():
        return m(X)


def _full(model):
    cfg = model.config
    return dict(
        heads=[list(range(l.num_heads)) for l in cfg.layers],
        qk=[l.qk_dim for l in cfg.layers],
        v=[l.v_dim for l in cfg.layers],
        mlp=[list(range(l.mlp_dim)) for l in cfg.layers],
        embed=list(range(cfg.embed_dim)),
    )


def test_keeping_everything_is_the_identity(irregular_model):
    f = _full(irregular_model)
    ref = _out(irregular_model)
    for m in (prune_heads(irregular_model, f["heads"]), prune_qk(irregular_model, f["qk"]),
              prune_v(irregular_model, f["v"]), prune_mlp(irregular_model, f["mlp"]),
              prune_embedding(irregular_model, f["embed"]), prune_depth(irregular_model, 3),
              prune_classifier(irregular_model, [0, 1, 2, 3])):
        torch.testing.assert_close(_out(m), ref, atol=1e-6, rtol=0)


def test_each_operator_shrinks_its_dimension_and_the_counts(irregular_model):
    base_p = nuwa.count_params(irregular_model)
    cases = {
        "heads": prune_heads(irregular_model, [[0, 2], [0], [1]]),
        "qk": prune_qk(irregular_model, [3, 2, 8]),
        "v": prune_v(irregular_model, [8, [0, 5, 11], 4]),
        "mlp": prune_mlp(irregular_model, [list(range(50)), [0, 6], list(range(64))]),
        "embed": prune_embedding(irregular_model, list(range(0, 40, 2))),
        "depth": prune_depth(irregular_model, 1),
        "classifier": prune_classifier(irregular_model, [3, 1]),
    }
    cfg = {k: m.config for k, m in cases.items()}
    assert [l.num_heads for l in cfg["heads"].layers] == [2, 1, 1]
    assert [l.qk_dim for l in cfg["qk"].layers] == [3, 2, 8]
    assert [l.v_dim for l in cfg["v"].layers] == [8, 3, 4]
    assert [l.mlp_dim for l in cfg["mlp"].layers] == [50, 2, 64]
    assert cfg["embed"].embed_dim == 20 and cfg["embed"].embed_index == list(range(0, 40, 2))
    assert cfg["depth"].depth == 1
    assert cfg["classifier"].classes == [1, 5] and cfg["classifier"].class_names == ["d", "b"]
    for name, m in cases.items():
        assert nuwa.count_params(m) < base_p, name
        assert nuwa.count_params(m) == nuwa.count_params(m.config), name
        assert _out(m).shape[0] == 4


def test_head_pruning_equals_zeroing_the_heads_output(irregular_model):
    """Removing head h is exactly the model with h's W_O columns zeroed."""
    zeroed = nuwa.EdgeViT(irregular_model.config).eval()
    zeroed.load_state_dict(irregular_model.state_dict())
    with torch.no_grad():
        zeroed.blocks[0].attn.proj.weight[:, 16:] = 0  # head 2 of layer 0 (v_dim 8)
    pruned = prune_heads(irregular_model, [[0, 1], [0], [0, 1]])
    torch.testing.assert_close(_out(pruned), _out(zeroed), atol=1e-5, rtol=0)


def test_classifier_slice_composes_with_base_class_indices(irregular_model):
    once = prune_classifier(irregular_model, [2, 0, 3])  # base classes [9, 7, 1]
    twice = prune_classifier(once, [2, 0])
    assert twice.config.classes == [1, 9]
    torch.testing.assert_close(_out(twice), _out(irregular_model)[:, [3, 2]], atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["product", "joint"])
@pytest.mark.parametrize("bias", [True, False])
def test_full_rank_svd_leaves_logits_unchanged(irregular_model, method, bias):
    model = irregular_model
    if not bias:
        cfg = irregular_model.config.with_layers(irregular_model.config.layers, qkv_bias=False)
        model = nuwa.EdgeViT(cfg).eval()
        sd = {k: v for k, v in irregular_model.state_dict().items() if not k.endswith("qkv.bias")}
        model.load_state_dict(sd)
    rotated, spectra = reparametrize(model, method)
    torch.testing.assert_close(_out(rotated), _out(model), atol=1e-4, rtol=0)
    assert [s.shape for s in spectra.qk] == [(3, 16), (1, 5), (2, 8)]
    assert [s.shape for s in spectra.v] == [(3, 8), (1, 12), (2, 8)]
    for s in spectra.qk + spectra.v:  # sorted, non-negative
        assert (s[:, :-1] >= s[:, 1:] - 1e-6).all() and (s >= 0).all()


def test_svd_truncation_beats_dropping_dims_and_improves_with_rank(irregular_model):
    rotated, _ = reparametrize(irregular_model, "product")
    ref = _out(irregular_model)
    err = [(_out(prune_qk(rotated, [r, 5, 8])) - ref).norm().item() for r in (2, 6, 12, 16)]
    assert err[0] > err[1] > err[2] > err[3] and err[3] < 1e-3
    naive = (_out(prune_qk(irregular_model, [6, 5, 8])) - ref).norm().item()
    assert err[1] < naive


def test_product_svd_spectrum_is_that_of_the_weight_product(irregular_model):
    _, spectra = reparametrize(irregular_model, "product")
    attn = irregular_model.blocks[0].attn
    w = torch.cat([attn.qkv.weight, attn.qkv.bias[:, None]], 1).double()
    q, k = w[16:32], w[48 + 16:48 + 32, :-1]  # head 1; the key bias is dropped (softmax ignores it)
    s = torch.linalg.svdvals(q.T @ k)[:16]
    torch.testing.assert_close(spectra.qk[0][1].double(), s, atol=1e-5, rtol=1e-4)


def test_cumulative_share_rule_on_hand_made_scores():
    s = torch.tensor([1.0, 5.0, 3.0, 1.0])  # total 10; sorted 5, 3, 1, 1
    assert cumulative_keep(s, 0.5).tolist() == [1]
    assert cumulative_keep(s, 0.51).tolist() == [1, 2]
    assert cumulative_keep(s, 0.8).tolist() == [1, 2]
    assert cumulative_keep(s, 0.81).tolist() == [1, 2, 0]
    assert cumulative_keep(s, 1.0).tolist() == [1, 2, 0, 3]
    assert cumulative_keep(s, 0.0).tolist() == []


def test_energy_rule_picks_the_smallest_rank_meeting_the_threshold():
    s = torch.tensor([[2.0, 1.0, 1.0, 0.0], [3.0, 1.0, 0.0, 0.0]])  # energies 4,1,1 / 9,1
    # head shares: [4/6, 5/6, 1, 1] and [.9, 1, 1, 1]; mean: [.783, .917, 1, 1]
    assert energy_rank(s, 0.78) == 1
    assert energy_rank(s, 0.79) == 2
    assert energy_rank(s, 0.92) == 3
    assert energy_rank(s, 1.0) == 3


def test_rounding_to_hardware_friendly_sizes():
    assert round_size(13, 64, 8) == 16
    assert round_size(61, 64, 8) == 64
    assert round_size(5, 12, 8) == 5  # layer too small to round
    assert round_size(0, 64, 8) == 8
    assert round_size(13, 64, 1) == 13


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda m: prune_heads(m, [[], [0], [0]]), "layer 0"),
        (lambda m: prune_heads(m, [[0]]), "keep lists 1 layers"),
        (lambda m: prune_qk(m, [17, 5, 8]), "query-key"),
        (lambda m: prune_v(m, [[[0], [0, 1], [2]], 12, 8]), "value"),
        (lambda m: prune_mlp(m, [[0], [99], [0]]), "layer 1"),
        (lambda m: prune_embedding(m, [40]), "embedding"),
        (lambda m: prune_depth(m, 0), "depth=0"),
        (lambda m: prune_classifier(m, [4]), "class index 4"),
    ],
)
def test_operators_reject_impossible_cuts(irregular_model, call, needle):
    with pytest.raises(nuwa.NuwaError, match=needle):
        call(irregular_model)
