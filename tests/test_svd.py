"""The SVD reparametrisation (nuwa.svd): the rotated model computes the same function, the
spectra count only what can change the attention, and `data` weights them by the layers' inputs."""
from __future__ import annotations

import pytest
import torch

import nuwa
from nuwa.errors import NuwaError
from nuwa.options import DeriveOptions
from nuwa.prune import prune_qk
from nuwa.svd import collect_moments, reparametrize

from .conftest import CLASSES, irregular_config, write_blobs

X = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _perturbed(model: nuwa.EdgeViT, *, bias_scale: float = 0.5, seed: int = 0) -> nuwa.EdgeViT:
    """Every tensor non-trivial, and the attention biases large enough to matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = bias_scale if name.endswith(("qkv.bias", "proj.bias")) else 0.05
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


def _model(*, qkv_bias: bool = True, proj_bias: bool = True) -> nuwa.EdgeViT:
    torch.manual_seed(0)
    return _perturbed(nuwa.EdgeViT(irregular_config(qkv_bias=qkv_bias, proj_bias=proj_bias)))


def _centred_logits(model: nuwa.EdgeViT, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """(B, H, N, N) attention logits of `layer` minus each query's mean over the keys: what the
    softmax sees (a per-query constant never changes it)."""
    seen = {}
    attn = model.blocks[layer].attn
    handle = attn.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    t = seen["x"].double()
    B, N, _ = t.shape
    H, dq = attn.num_heads, attn.qk_dim
    q, k, _ = (t @ attn.qkv.weight.double().T + (attn.qkv.bias.double() if attn.qkv.bias is not None else 0)) \
        .split([H * dq, H * dq, H * attn.v_dim], dim=-1)
    q = q.reshape(B, N, H, dq).transpose(1, 2)
    k = k.reshape(B, N, H, dq).transpose(1, 2)
    logits = q @ k.transpose(-2, -1) * attn.scale
    return logits - logits.mean(dim=-1, keepdim=True)


def test_a_huge_key_bias_no_longer_takes_the_query_key_energy():
    cfg = nuwa.EdgeViTConfig.uniform(depth=1, embed_dim=32, num_heads=2, mlp_ratio=1.0, img_size=8, patch_size=4,
                                     in_chans=1, num_classes=2, mean=(0.5,), std=(0.5,))
    torch.manual_seed(0)
    model = nuwa.EdgeViT(cfg).eval()
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.qkv.weight.normal_(0, 0.3)
        attn.qkv.bias.normal_(0, 0.5)
        attn.qkv.bias[32:64] = 50 * torch.randn(32)  # the key biases
    w, b = attn.qkv.weight.double(), attn.qkv.bias.double()
    q, k = torch.cat([w[:16], b[:16, None]], 1), w[32:48]  # head 0
    old = torch.linalg.svdvals(q.T @ torch.cat([k, b[32:48, None]], 1))[:16]
    assert old[0] ** 2 / (old ** 2).sum() > 0.99  # the bias-augmented product is rank 1 by energy

    rotated, spectra = reparametrize(model, "product")
    fixed = spectra.qk[0][0].double()
    torch.testing.assert_close(fixed, torch.linalg.svdvals(q.T @ k)[:16], atol=1e-5, rtol=1e-4)
    assert fixed[0] ** 2 / (fixed ** 2).sum() < 0.5
    assert (rotated.blocks[0].attn.qkv.bias[32:64] == 0).all()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(_centred_logits(rotated, x), _centred_logits(model, x), atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("method", ["product", "joint", "data"])
@pytest.mark.parametrize("qkv_bias, proj_bias", [(True, True), (True, False), (False, True)],
                         ids=["biases", "no-proj-bias", "no-qkv-bias"])
def test_the_rotated_model_computes_the_same_function(method, qkv_bias, proj_bias):
    model = _model(qkv_bias=qkv_bias, proj_bias=proj_bias)
    stats = collect_moments(model, X, batch_size=3) if method == "data" else None
    rotated, spectra = reparametrize(model, method, stats=stats)
    with torch.no_grad():
        out, maps = model.forward_attention(X)
        out_r, maps_r = rotated.forward_attention(X)
    torch.testing.assert_close(out_r, out, atol=1e-5, rtol=0)
    for a, a_r in zip(maps, maps_r):
        torch.testing.assert_close(a_r, a, atol=1e-5, rtol=0)
    assert [s.shape for s in spectra.qk] == [(3, 16), (1, 5), (2, 8)]
    assert [s.shape for s in spectra.v] == [(3, 8), (1, 12), (2, 8)]
    for s in spectra.qk + spectra.v:  # sorted, non-negative
        assert (s[:, :-1] >= s[:, 1:] - 1e-6).all() and (s >= 0).all()


def test_the_value_bias_is_folded_into_the_proj_bias_and_the_key_bias_dropped():
    model = _model()
    rotated, spectra = reparametrize(model, "product")
    for i, (blk, blk_r) in enumerate(zip(model.blocks, rotated.blocks)):
        a, a_r = blk.attn, blk_r.attn
        H, dq, dv = a.num_heads, a.qk_dim, a.v_dim
        b = a.qkv.bias.double()
        folded = a.proj.bias.double() + a.proj.weight.double() @ b[2 * H * dq:]
        torch.testing.assert_close(a_r.proj.bias.double(), folded, atol=1e-6, rtol=0)
        assert (a_r.qkv.bias[H * dq:] == 0).all()  # key and value biases
        # the value spectrum is that of the bias-free W_V^T W_O^T
        wv, wo = a.qkv.weight.double()[2 * H * dq:2 * H * dq + dv], a.proj.weight.double()[:, :dv]
        torch.testing.assert_close(spectra.v[i][0].double(), torch.linalg.svdvals(wv.T @ wo.T)[:dv],
                                   atol=1e-5, rtol=1e-4)


def test_without_a_proj_bias_the_value_bias_stays_augmented():
    model = _model(proj_bias=False)
    rotated, spectra = reparametrize(model, "product")
    a, a_r = model.blocks[0].attn, rotated.blocks[0].attn
    assert a_r.proj.bias is None and a_r.qkv.bias[96:].abs().max() > 0  # 3 heads x 16 qk dims x 2, then V
    wv = torch.cat([a.qkv.weight, a.qkv.bias[:, None]], 1).double()[96:104]
    s = torch.linalg.svdvals(wv.T @ a.proj.weight.double()[:, :8].T)[:8]
    torch.testing.assert_close(spectra.v[0][0].double(), s, atol=1e-5, rtol=1e-4)


def test_data_truncation_has_a_lower_expected_logit_error_than_product():
    """Inputs far from isotropic (LayerNorm gains spanning three decades): the product SVD keeps the
    directions of largest weight, `data` those that move the logits on the calibration images."""
    cfg = nuwa.EdgeViTConfig.uniform(depth=1, embed_dim=32, num_heads=1, mlp_ratio=1.0, img_size=28, patch_size=7,
                                     in_chans=1, num_classes=2, mean=(0.5,), std=(0.5,))
    torch.manual_seed(0)
    model = _perturbed(nuwa.EdgeViT(cfg), bias_scale=0.2)
    with torch.no_grad():
        model.patch_embed.proj.weight.normal_(0, 0.3)
        model.blocks[0].attn.qkv.weight.normal_(0, 0.3)
        model.blocks[0].norm1.weight.copy_(torch.logspace(1, -2, 32)[torch.randperm(32)])
    stats = collect_moments(model, X)
    ref = _centred_logits(model, X)
    by_product, _ = reparametrize(model, "product", qk=True, v=False)
    by_data, _ = reparametrize(model, "data", qk=True, v=False, stats=stats)
    for r in (2, 4, 8):
        err = {name: (_centred_logits(prune_qk(m, [r]), X) - ref).pow(2).mean().item()
               for name, m in (("product", by_product), ("data", by_data))}
        assert err["data"] < 0.5 * err["product"], (r, err)


def test_collect_moments_are_those_of_the_attention_inputs():
    model = _model()
    with torch.no_grad():
        x = model.blocks[0].norm1(model.embed(X)).double()  # what layer 0's attention sees
    flat = x.reshape(-1, x.shape[-1])
    centred = (x - x.mean(1, keepdim=True)).reshape(-1, x.shape[-1])
    labelled = [(X[:5], torch.zeros(5)), (X[5:], torch.zeros(3))]  # (images, labels) batches as derive gives
    for stats in (collect_moments(model, X, batch_size=3), collect_moments(model, labelled)):
        m = stats[0]
        assert len(stats) == 3 and m.tokens == flat.shape[0]
        torch.testing.assert_close(m.mean, flat.mean(0))
        torch.testing.assert_close(m.second, flat.T @ flat / flat.shape[0])
        torch.testing.assert_close(m.within, centred.T @ centred / flat.shape[0])


def test_data_needs_the_moments_of_every_layer():
    model = _model()
    with pytest.raises(ValueError, match="collect_moments"):
        reparametrize(model, "data")
    with pytest.raises(NuwaError, match="no calibration images"):
        collect_moments(model, [])


def test_a_bad_svd_option_is_one_line_and_exit_2(tmp_path, capfd):
    from nuwa.cli import main

    def run(*args) -> tuple[int, str]:
        capfd.readouterr()
        try:
            code = main(["derive", "--model", str(tmp_path / "base"), "--data", "npz:/nonexistent.npz", "--classes",
                         "a", "--rate", "0.5", "--out", str(tmp_path / "edge"), *map(str, args)])
        except SystemExit as e:  # argparse's own errors
            code = e.code
        return code, capfd.readouterr().err

    code, err = run("--svd", "bogus")
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "'bogus'" in errors[0] and err.strip().endswith(errors[0]), err
    opts = tmp_path / "options.yaml"
    opts.write_text("svd: bogus\n")
    code, err = run("--options", opts)
    assert code == 2 and "svd='bogus'" in err.strip().splitlines()[-1] and "data" in err, err
    assert not (tmp_path / "edge").exists()
    with pytest.raises(NuwaError, match="svd='bogus'"):
        DeriveOptions(svd="bogus").validate()


def test_derive_with_data_svd_lands_the_rate(tmp_path):
    """`svd: data` end to end: its moments come from the sub-task's fit images (a random base
    suffices: the plumbing and the rate are what is checked)."""
    from nuwa.derivation import derive
    from nuwa.options import RATE_TOLERANCE
    from nuwa.schedule import AdaptiveOptions

    npz = f"npz:{write_blobs(tmp_path / 'blobs.npz', seed=0, n_train=300, n_test=60)}"
    cfg = nuwa.EdgeViTConfig.uniform(depth=3, embed_dim=48, num_heads=3, mlp_ratio=2.0, num_classes=6, img_size=28,
                                     patch_size=7, in_chans=1, mean=(0.5,), std=(0.25,), class_names=CLASSES)
    torch.manual_seed(0)
    nuwa.save(_perturbed(nuwa.EdgeViT(cfg)), tmp_path / "base")
    opts = DeriveOptions(svd="data", adaptive=AdaptiveOptions(round_to=1), score_samples=32, embed_score_samples=64,
                         layer_head_samples=128, layer_head_epochs=2, batch_size=32)
    _, report = derive(tmp_path / "base", npz, classes=[0, 2, 4], rate=0.5, recovery="none", options=opts)
    assert 0.5 <= report["rate_achieved"] <= 0.5 + RATE_TOLERANCE
    assert "svd" in report["seconds"]
