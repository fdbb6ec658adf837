"""Cost model: exact counters, the paper's Eq. 7/8, and the documented differences between them."""
import pytest
import timm
import torch

import nuwa
from nuwa.arch import EdgeViTConfig

from .conftest import irregular_config

CONFIGS = {
    "irregular": irregular_config(),
    "irregular-nobias": irregular_config(qkv_bias=False, proj_bias=False),
    "tiny-28": EdgeViTConfig.uniform(depth=4, embed_dim=96, num_heads=3, img_size=28, patch_size=7,
                                     in_chans=1, num_classes=10, mean=(0.5,), std=(0.5,)),
    "rect": EdgeViTConfig.uniform(depth=2, embed_dim=48, num_heads=4, img_size=(32, 16), patch_size=8),
}


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_analytic_counts_equal_the_built_model(cfg):
    model = nuwa.EdgeViT(cfg)
    assert nuwa.count_params(cfg) == nuwa.count_params(model) == sum(p.numel() for p in model.parameters())
    assert nuwa.count_flops(cfg) == nuwa.measure_flops(model)


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_eq7_differs_from_exact_count_by_the_biases_only(cfg):
    assert nuwa.count_params(cfg) == nuwa.params_eq7(cfg) + nuwa.bias_params(cfg)
    if not cfg.qkv_bias and not cfg.proj_bias:  # only patch-projection and classifier biases left
        assert nuwa.bias_params(cfg) == cfg.embed_dim + cfg.num_classes


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_eq8_differs_from_measured_matmul_flops_by_the_layernorms_only(cfg):
    N, d, L = cfg.num_tokens, cfg.embed_dim, cfg.depth
    assert nuwa.flops_eq8(cfg) == nuwa.count_flops(cfg) + 2 * N * d * L + d


def test_counts_react_to_every_adaptive_dimension():
    base = irregular_config()
    for field in ("qk_dim", "v_dim", "mlp_dim"):
        layers = [nuwa.LayerConfig(**{**l.__dict__}) for l in base.layers]
        setattr(layers[0], field, getattr(layers[0], field) - 1)
        smaller = base.with_layers(layers)
        assert nuwa.count_params(smaller) < nuwa.count_params(base), field
        assert nuwa.count_flops(smaller) < nuwa.count_flops(base), field
    narrower = irregular_config(embed_dim=32)
    assert nuwa.count_flops(narrower) < nuwa.count_flops(base)


# Published sizes (DeiT paper, Table 1): params and GFLOPs (= G multiply-accumulates) at 224.
PUBLISHED = [
    ("deit_tiny_patch16_224", 5.7e6, 1.3e9),
    ("deit_small_patch16_224", 22e6, 4.6e9),
    ("deit_base_patch16_224", 86e6, 17.6e9),
]


@pytest.mark.parametrize("name, params, flops", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_converted_deit_matches_published_sizes(name, params, flops):
    with torch.device("meta"):  # sizes only: no memory, no init time
        ref = timm.create_model(name, pretrained=False)
    timm_params = sum(p.numel() for p in ref.parameters())
    cfg = EdgeViTConfig.uniform(depth=len(ref.blocks), embed_dim=ref.embed_dim,
                                num_heads=ref.blocks[0].attn.num_heads, img_size=224, patch_size=16)
    assert nuwa.count_params(cfg) == timm_params
    assert nuwa.count_params(cfg) == pytest.approx(params, rel=0.02)
    # Published FLOPs are rounded and count some elementwise work; within 6 %.
    assert nuwa.count_flops(cfg) == pytest.approx(flops, rel=0.06)
    assert nuwa.flops_eq8(cfg) == pytest.approx(flops, rel=0.06)


def test_measured_flops_of_real_deit_tiny_at_224():
    torch.manual_seed(0)
    ref = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    edge = nuwa.from_timm(ref)
    assert nuwa.measure_flops(ref, (1, 3, 224, 224)) == nuwa.count_flops(edge) == nuwa.measure_flops(edge)
