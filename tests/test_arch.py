"""EdgeViTConfig: the sizes of a ViT, per layer, with a lossless JSON form and clear errors."""
import pytest

import nuwa
from nuwa.arch import EdgeViTConfig, LayerConfig

from .conftest import irregular_config


def test_json_round_trip_preserves_every_field():
    cfg = irregular_config(embed_index=list(range(40)), source={"timm_model": "x"})
    back = EdgeViTConfig.from_json(cfg.to_json())
    assert back == cfg
    assert back.layers[1].attn_scale == 0.3 and back.layers[0].attn_scale is None
    assert back.img_size == (28, 28)


def test_derived_sizes():
    cfg = EdgeViTConfig.uniform(depth=12, embed_dim=192, num_heads=3, img_size=224, patch_size=16)
    assert cfg.depth == 12 and cfg.num_patches == 196 and cfg.num_tokens == 197
    assert cfg.layers[0].q_width == 192 and cfg.layers[0].mlp_dim == 768
    assert cfg.layers[0].scale == pytest.approx(64 ** -0.5)


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(layers=[LayerConfig(0, 8, 8, 8)]), "layers[0].num_heads=0"),
        (dict(layers=[LayerConfig(2, 8, 0, 8)]), "layers[0].v_dim=0"),
        (dict(layers=[LayerConfig(2, 8, 8, 8, attn_scale=-1.0)]), "attn_scale=-1.0"),
        (dict(layers=[]), "layers is empty"),
        (dict(embed_dim=0), "embed_dim=0"),
        (dict(img_size=30), "not divisible by patch_size=7"),
        (dict(embed_index=[0, 1, 2]), "embed_index has 3 entries"),
        (dict(embed_index=[0] * 40), "distinct"),
        (dict(classes=[1, 2]), "classes has 2 entries"),
        (dict(class_names=["x"]), "class_names has 1 entries"),
        (dict(mean=(0.5, 0.5, 0.5)), "in_chans=1"),
    ],
)
def test_inconsistent_sizes_are_rejected_naming_the_field(change, needle):
    with pytest.raises(nuwa.NuwaError, match=None) as e:
        irregular_config(**change).validate()
    assert needle in str(e.value)


def test_from_json_rejects_unknown_keys_and_bad_json():
    with pytest.raises(nuwa.NuwaError, match="unknown key"):
        EdgeViTConfig.from_dict(dict(irregular_config().to_dict(), depth_typo=3))
    with pytest.raises(nuwa.NuwaError, match="not valid JSON"):
        EdgeViTConfig.from_json("{not json")
    with pytest.raises(nuwa.NuwaError, match="needs num_heads"):
        EdgeViTConfig.from_dict(dict(irregular_config().to_dict(), layers=[{"num_heads": 1}]))
