"""EdgeViT: a dense ViT with per-layer sizes and query-key size != value size."""
import pytest
import torch

import nuwa
from nuwa.model import EdgeAttention

from .conftest import irregular_config


def test_forward_shapes_and_weight_shapes_follow_the_config(irregular_model):
    x = torch.randn(2, 1, 28, 28)
    assert irregular_model(x).shape == (2, 4)
    blk = irregular_model.blocks[1]
    assert blk.attn.qkv.weight.shape == (1 * (5 + 5 + 12), 40)
    assert blk.attn.proj.weight.shape == (40, 12)
    assert blk.mlp.fc1.weight.shape == (7, 40)
    assert len(irregular_model.forward_cls_tokens(x)) == 3


def test_sdpa_path_equals_explicit_softmax_attention_with_qk_ne_v():
    torch.manual_seed(0)
    attn = EdgeAttention(24, num_heads=3, qk_dim=5, v_dim=11, scale=0.37).eval()
    x = torch.randn(2, 9, 24)
    fused = attn(x)
    explicit, weights = attn(x, return_attn=True)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, 3, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 9))


def test_attention_scale_is_used():
    torch.manual_seed(0)
    a = EdgeAttention(16, num_heads=2, qk_dim=4, v_dim=4, scale=0.1).eval()
    b = EdgeAttention(16, num_heads=2, qk_dim=4, v_dim=4, scale=1.0).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 5, 16)
    assert not torch.allclose(a(x), b(x))


@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (2, 1, 32, 32), (1, 28, 28)])
def test_wrong_image_shape_is_a_clear_error(irregular_model, shape):
    with pytest.raises(nuwa.NuwaError, match=r"expected \(B, 1, 28, 28\)"):
        irregular_model(torch.randn(*shape))


def test_same_seed_same_init():
    torch.manual_seed(3)
    a = nuwa.EdgeViT(irregular_config())
    torch.manual_seed(3)
    b = nuwa.EdgeViT(irregular_config())
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
