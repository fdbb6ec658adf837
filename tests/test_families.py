"""The timm ViT families users bring, beyond the plain class-token ViT: each converts into an
`EdgeViT` with timm's logits, counts its parameters and FLOPs exactly, saves and loads, prunes
along every dimension, exports to ONNX and derives; what `EdgeViT` cannot represent exactly is
refused by name. Every model is small and randomly initialised (no weights are downloaded)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import timm
import torch
from torch import nn

import nuwa
from nuwa import layer_classifiers as lc
from nuwa.arch import FAMILY_FIELDS, EdgeViTConfig
from nuwa.prune import prune_classifier, prune_depth, prune_embedding, prune_heads, prune_mlp, prune_qk, prune_v

from .conftest import CLASSES

SMALL = dict(pretrained=False, img_size=28, patch_size=7, embed_dim=48, depth=2, num_heads=2, num_classes=5)

# family: (timm name, overrides on SMALL, the EdgeViTConfig fields it sets). The table of families
# in docs/models.md is this one.
FAMILIES = {
    "deit3": ("deit3_small_patch16_224", {}, dict(no_embed_class=True)),  # + LayerScale, folded
    "flexivit": ("flexivit_small", {}, dict(no_embed_class=True)),
    "dinov2-reg": ("vit_small_patch14_reg4_dinov2", {}, dict(reg_tokens=4, no_embed_class=True)),
    "clip": ("vit_base_patch16_clip_224", {}, dict(pre_norm=True, patch_bias=False)),
    "avg-pool": ("eva_large_patch14_196", {}, dict(global_pool="avg")),
    "gap-reg": ("vit_wee_patch16_reg1_gap_256", dict(mlp_ratio=4),
                dict(class_token=False, reg_tokens=1, no_embed_class=True, global_pool="avg")),
    "patch-norm": ("vit_tiny_patch16_224", dict(embed_norm_layer="layernorm"), dict(patch_norm=True)),
    "distilled": ("deit_tiny_distilled_patch16_224", {}, dict(dist_token=True, head_dist=True)),
}


def _timm(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, **{**SMALL, **kw}).eval()
    with torch.no_grad():  # random init leaves norms at 1/0 and some tokens at 0: exercise every tensor
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


_CACHE: dict[str, tuple[nn.Module, nuwa.EdgeViT]] = {}


@pytest.fixture(params=list(FAMILIES))
def family(request):
    """(family, timm model, its EdgeViT), converted once per session."""
    key = request.param
    if key not in _CACHE:
        name, kw, _ = FAMILIES[key]
        ref = _timm(name, **kw)
        _CACHE[key] = ref, nuwa.from_timm(ref)
    return (key, *_CACHE[key])


def _x(cfg: EdgeViTConfig, n: int = 3) -> torch.Tensor:
    return torch.randn(n, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(1))


def _counts_are_exact(model: nuwa.EdgeViT) -> None:
    cfg = model.config
    assert nuwa.count_params(cfg) == nuwa.count_params(model) == sum(p.numel() for p in model.parameters())
    assert nuwa.count_params(cfg) == nuwa.params_eq7(cfg) + nuwa.bias_params(cfg)
    assert nuwa.count_flops(cfg) == nuwa.measure_flops(model)


def test_converts_with_timm_logits_and_exact_counts(family):
    key, ref, edge = family
    cfg = edge.config
    assert {k: getattr(cfg, k) for k in FAMILIES[key][2]} == FAMILIES[key][2]
    x = _x(cfg)
    with torch.no_grad():
        torch.testing.assert_close(edge(x), ref(x), atol=1e-4, rtol=0)
    layer_scale = sum(p.numel() for n, p in ref.named_parameters() if ".ls1." in n or ".ls2." in n)
    assert nuwa.count_params(edge) == sum(p.numel() for p in ref.parameters()) - layer_scale
    assert nuwa.count_flops(edge) == nuwa.measure_flops(ref, (1, cfg.in_chans, *cfg.img_size))
    _counts_are_exact(edge)


def test_per_layer_classifiers_read_the_pooled_token(family):
    """The features of the per-layer classifiers are what the model's own classifier reads: the
    last layer's, through the final norm and head, give the logits (the class-token head's alone
    for a distilled model)."""
    key, ref, edge = family
    x = _x(edge.config)
    with torch.no_grad():
        feats = edge.forward_cls_tokens(x)
        head = lc.final_head(edge)
        z = torch.nn.functional.layer_norm(feats[-1], (edge.config.embed_dim,), head["norm.weight"],
                                           head["norm.bias"], edge.config.norm_eps)
        logits = z @ head["head.weight"].T + head["head.bias"]
        if edge.config.head_dist:
            torch.testing.assert_close(logits, ref.head(ref.forward_features(x)[:, 0]), atol=1e-4, rtol=0)
        else:
            torch.testing.assert_close(logits, edge(x), atol=1e-5, rtol=0)
        if edge.config.global_pool == "avg":  # the mean patch token, registers and class token left out
            torch.testing.assert_close(feats[-1], ref.pool(ref.forward_features(x)), atol=1e-5, rtol=0)


def test_save_load_round_trip_keeps_the_family(family, tmp_path):
    key, _, edge = family
    nuwa.save(edge, tmp_path / "m")
    back = nuwa.load(tmp_path / "m")
    assert back.config == edge.config
    written = json.loads((tmp_path / "m" / "config.json").read_text())
    assert {k for k in FAMILY_FIELDS if k in written} == set(FAMILIES[key][2])  # defaults left out
    x = _x(edge.config)
    with torch.no_grad():
        torch.testing.assert_close(back(x), edge(x), atol=0, rtol=0)


def test_a_plain_vit_config_writes_the_same_keys_as_before_the_families():
    cfg = EdgeViTConfig.uniform(depth=2, embed_dim=48, num_heads=2, img_size=28, patch_size=7)
    assert set(cfg.to_dict()) == {"layers", "embed_dim", "img_size", "patch_size", "in_chans", "num_classes",
                                  "qkv_bias", "proj_bias", "norm_eps", "mean", "std", "classes", "class_names",
                                  "embed_index", "source"}
    assert EdgeViTConfig.from_json(cfg.to_json()) == cfg


def test_classifier_and_embedding_prune_slice_every_family_tensor(family):
    key, _, edge = family
    cfg = edge.config
    x = _x(cfg)
    sliced = prune_classifier(edge, [3, 1])
    with torch.no_grad():
        torch.testing.assert_close(sliced(x), edge(x)[:, [3, 1]], atol=1e-6, rtol=0)
        # Keeping every embedding dim is the identity: every d-sized tensor was sliced on the right axis.
        torch.testing.assert_close(prune_embedding(sliced, list(range(cfg.embed_dim)))(x), sliced(x), atol=1e-6,
                                   rtol=0)
    small = prune_embedding(sliced, list(range(0, cfg.embed_dim, 2)))
    assert small.config.embed_dim == cfg.embed_dim // 2 and {k: getattr(small.config, k) for k in FAMILY_FIELDS} \
        == {k: getattr(cfg, k) for k in FAMILY_FIELDS}
    with torch.no_grad():
        assert small(x).shape == (3, 2) and torch.isfinite(small(x)).all()
    _counts_are_exact(small)


def test_every_width_operator_and_depth_keep_the_family_running(family):
    _, _, edge = family
    cfg = edge.config
    m = prune_heads(edge, [[1], [0, 1]])
    m = prune_qk(m, [8, 16])
    m = prune_v(m, [[0, 2, 4], 5])
    m = prune_mlp(m, [list(range(0, 192, 3)), list(range(50))])
    m = prune_embedding(m, list(range(40)))
    x = _x(cfg)
    with torch.no_grad():
        assert m(x).shape == (3, cfg.num_classes) and torch.isfinite(m(x)).all()
    _counts_are_exact(m)
    # Depth through the model's own final classifier is exact; through a per-layer (pooled-token)
    # classifier, a distilled model exits through that classifier alone.
    with torch.no_grad():
        torch.testing.assert_close(prune_depth(edge, cfg.depth, lc.final_head(edge))(x), edge(x), atol=0, rtol=0)
    exit_head = {k: v for k, v in lc.final_head(edge).items() if k in lc.KEYS}
    short = prune_depth(edge, 1, exit_head)
    assert short.config.depth == 1 and not short.config.head_dist and short.config.dist_token == cfg.dist_token
    with torch.no_grad():
        assert short(x).shape == (3, cfg.num_classes)
    _counts_are_exact(short)


def test_onnx_export_matches_torch(family, tmp_path):
    from nuwa.bench import onnx_session

    _, _, edge = family
    model = prune_embedding(prune_classifier(edge, [0, 2, 4]), list(range(1, 48)))
    path = nuwa.export_onnx(model, tmp_path / "m.onnx")
    x = _x(model.config, 4)
    out = onnx_session(path, 1).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4, rtol=0)


def test_derive_runs_on_every_family(family, npz):
    """`nuwa derive` end to end (NuWa, no recovery) on a 6-class, 1-channel model of the family."""
    from nuwa.derivation import derive
    from nuwa.options import DeriveOptions

    key, _, _ = family
    name, kw, _ = FAMILIES[key]
    base = nuwa.from_timm(_timm(name, **{**kw, "in_chans": 1, "num_classes": len(CLASSES)}), class_names=CLASSES)
    opts = DeriveOptions(score_samples=16, embed_score_samples=32, layer_head_samples=96, layer_head_epochs=2,
                         batch_size=16)
    model, report = derive(base, npz, classes=[0, 2, 4], rate=0.5, recovery="none", options=opts)
    assert report["rate_achieved"] >= 0.5 and model.config.num_classes == 3
    assert {k: getattr(model.config, k) for k in ("class_token", "reg_tokens", "no_embed_class", "pre_norm",
                                                  "patch_norm", "global_pool", "dist_token")} \
        == {k: getattr(base.config, k) for k in ("class_token", "reg_tokens", "no_embed_class", "pre_norm",
                                                 "patch_norm", "global_pool", "dist_token")}
    with torch.no_grad():
        assert torch.isfinite(model(_x(model.config))).all()
    if base.config.head_dist:  # at full depth a distilled model keeps both heads through every stage
        model, report = derive(base, npz, classes=[0, 2, 4], rate=0.5, recovery="none",
                               options=dataclasses.replace(opts, prune_depth=False))
        assert report["rate_achieved"] >= 0.5 and model.config.head_dist and model.head_dist.out_features == 3


# ---- refused: what EdgeViT cannot represent exactly ------------------------------------------------
def _swiglu():
    from timm.layers import SwiGLU

    return dict(mlp_layer=SwiGLU, act_layer=nn.SiLU)


REFUSED = [
    ("vit_tiny_patch16_224", dict(qk_norm=True), "qk-norm"),
    ("vit_tiny_patch16_224", "swiglu", "MLP type"),
    ("vit_tiny_patch16_224", dict(global_pool="map"), "attention pooling"),
    ("vit_tiny_patch16_224", dict(global_pool="avgmax"), "global_pool='avgmax'"),
    ("vit_medium_patch16_gap_256", {}, "norm before pooling (fc_norm=False)"),
    ("vit_tiny_patch16_224", dict(final_norm=False), "no final norm"),
    ("vit_tiny_patch16_224", dict(global_pool="avg", pool_include_prefix=True), "pool_include_prefix"),
    ("vit_tiny_patch16_224", dict(dynamic_img_size=True), "dynamic_img_size"),
    ("vit_tiny_patch16_224", dict(pos_embed="none"), "no position embedding"),
    ("vit_tiny_patch16_224", dict(embed_norm_layer="rmsnorm"), "patch embedding norm RmsNorm"),
    ("vit_tiny_patch16_224", dict(act_layer="gelu_tanh"), "activation"),
    ("vit_base_patch16_rpn_224", {}, "ResPostBlock"),
    ("deit_tiny_distilled_patch16_224", dict(reg_tokens=2), "distilled with register tokens"),
]


@pytest.mark.parametrize("name, kw, needle", REFUSED, ids=[r[2] for r in REFUSED])
def test_what_edgevit_cannot_represent_is_refused_by_name(name, kw, needle):
    model = timm.create_model(name, **{**SMALL, **(_swiglu() if kw == "swiglu" else kw)})
    with pytest.raises(nuwa.NuwaError, match="unsupported timm ViT variant|not a plain timm") as e:
        nuwa.from_timm(model)
    assert needle in str(e.value)


@pytest.mark.parametrize("change, needle", [
    (dict(class_token=False), "global_pool='token' needs class_token"),
    (dict(global_pool="max"), "global_pool='max'"),
    (dict(head_dist=True), "head_dist needs dist_token"),
    (dict(class_token=False, global_pool="avg", dist_token=True), "dist_token needs class_token"),
    (dict(reg_tokens=-1), "reg_tokens=-1"),
    (dict(pre_norm=1), "pre_norm=1 must be a bool"),
])
def test_inconsistent_family_fields_are_rejected(change, needle):
    cfg = EdgeViTConfig.uniform(depth=1, embed_dim=8, num_heads=2, img_size=8, patch_size=4, **change)
    with pytest.raises(nuwa.NuwaError) as e:
        cfg.validate()
    assert needle in str(e.value)
