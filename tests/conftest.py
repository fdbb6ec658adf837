"""Shared fixtures: tiny configs and models that build in milliseconds."""
from __future__ import annotations

import os

import pytest
import torch

import nuwa

# Tests must never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def irregular_config(**kw) -> nuwa.EdgeViTConfig:
    """A pruned-looking config: per-layer heads, qk != v, odd MLP widths, explicit scale."""
    layers = [
        nuwa.LayerConfig(num_heads=3, qk_dim=16, v_dim=8, mlp_dim=100),
        nuwa.LayerConfig(num_heads=1, qk_dim=5, v_dim=12, mlp_dim=7, attn_scale=0.3),
        nuwa.LayerConfig(num_heads=2, qk_dim=8, v_dim=8, mlp_dim=64),
    ]
    base = dict(layers=layers, embed_dim=40, img_size=28, patch_size=7, in_chans=1, num_classes=4,
                mean=(0.5,), std=(0.25,), classes=[7, 5, 9, 1], class_names=["a", "b", "c", "d"])
    base.update(kw)
    return nuwa.EdgeViTConfig(**base)


@pytest.fixture
def irregular_model() -> nuwa.EdgeViT:
    torch.manual_seed(0)
    model = nuwa.EdgeViT(irregular_config())
    # Non-trivial norms and biases so that every tensor matters in equality tests.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()
