"""from_timm: an EdgeViT computes the same function as the timm ViT it was converted from."""
import pytest
import timm
import torch

import nuwa

SHAPES = [
    # name, timm overrides (small img_size keeps the test fast; weights are random)
    ("deit_tiny_patch16_224", dict(img_size=64)),
    ("deit_small_patch16_224", dict(img_size=48)),
    ("vit_base_patch16_224", dict(img_size=32, num_classes=17)),
    ("deit_tiny_patch16_224", dict(img_size=28, patch_size=7, in_chans=1, num_classes=10)),
    ("vit_tiny_patch16_224", dict(img_size=32, qkv_bias=False, depth=3)),
    ("vit_small_patch16_224", dict(img_size=32, init_values=0.1, depth=2)),  # LayerScale folded
    ("deit_tiny_patch16_224", dict(img_size=(32, 48), in_chans=2, depth=2)),
]


def _randomise(model: torch.nn.Module) -> None:
    # Random init leaves biases and norms at 0/1; perturb so every tensor is exercised.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))


@pytest.mark.parametrize("name, kw", SHAPES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SHAPES)])
def test_logits_match_timm(name, kw):
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, **kw).eval()
    _randomise(ref)
    edge = nuwa.from_timm(ref)
    cfg = edge.config
    x = torch.randn(3, cfg.in_chans, *cfg.img_size)
    with torch.no_grad():
        torch.testing.assert_close(edge(x), ref(x), atol=1e-4, rtol=0)
    layer_scale = sum(p.numel() for n, p in ref.named_parameters() if ".ls1." in n or ".ls2." in n)
    assert nuwa.count_params(edge) == sum(p.numel() for p in ref.parameters()) - layer_scale
    assert nuwa.count_flops(edge) == nuwa.measure_flops(ref, (1, cfg.in_chans, *cfg.img_size))


@pytest.mark.parametrize(
    "name, kw, needle",
    [
        ("resnet18", {}, "not a plain timm VisionTransformer"),
        ("vit_tiny_patch16_224", dict(img_size=32, depth=1, qk_norm=True), "qk-norm"),
        ("vit_tiny_patch16_224", dict(img_size=32, depth=1, global_pool="avg", fc_norm=False), "fc_norm=False"),
        ("vit_tiny_patch16_224", dict(img_size=32, depth=1, global_pool="map"), "attention pooling"),
    ],
)
def test_non_vit_or_unsupported_variants_are_refused(name, kw, needle):
    # The families that convert, and more refusals: tests/test_families.py.
    model = timm.create_model(name, pretrained=False, **kw)
    with pytest.raises(nuwa.NuwaError) as e:
        nuwa.from_timm(model)
    assert needle in str(e.value)


def test_create_base_loads_a_local_checkpoint(tmp_path):
    """The offline path for pretrained weights: timm's loader fed a file we wrote ourselves."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = timm.create_model("deit_tiny_patch16_224", img_size=32, depth=2, num_classes=5)
    _randomise(src)
    pth, st = tmp_path / "w.pth", tmp_path / "w.safetensors"
    torch.save(src.state_dict(), pth)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(st))
    x = torch.randn(2, 3, 32, 32)
    for ckpt in (pth, st):
        base = nuwa.create_base("deit_tiny_patch16_224", checkpoint=ckpt, img_size=32, depth=2, num_classes=5)
        with torch.no_grad():
            torch.testing.assert_close(base(x), src.eval()(x), atol=0, rtol=0)
            torch.testing.assert_close(nuwa.from_timm(base)(x), src(x), atol=1e-4, rtol=0)


def test_create_base_without_weights_is_randomly_initialised():
    m = nuwa.create_base("deit_tiny_patch16_224", img_size=32, depth=1)
    assert not m.training and m.num_classes == 1000


@pytest.mark.parametrize(
    "name, kw, needle",
    [
        ("deit_tinny_patch16_224", {}, "unknown timm model name 'deit_tinny_patch16_224'"),
        ("deit_tiny_patch16_224", dict(checkpoint="/nonexistent/w.pth"), "/nonexistent/w.pth"),
        ("resnet18", {}, "not a plain timm VisionTransformer"),
    ],
)
def test_create_base_bad_input(name, kw, needle):
    with pytest.raises(nuwa.NuwaError) as e:
        nuwa.create_base(name, **kw)
    assert needle in str(e.value)


def test_create_base_mismatched_or_corrupt_checkpoint(tmp_path):
    src = timm.create_model("deit_tiny_patch16_224", img_size=32, depth=2)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    with pytest.raises(nuwa.NuwaError, match="w.pth"):  # depth 3 model, depth 2 weights
        nuwa.create_base("deit_tiny_patch16_224", checkpoint=tmp_path / "w.pth", img_size=32, depth=3)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(nuwa.NuwaError, match="bad.pth"):
        nuwa.create_base("deit_tiny_patch16_224", checkpoint=tmp_path / "bad.pth", img_size=32, depth=2)


def test_checkpoint_with_more_classes_keeps_the_backbone_and_resets_the_head(tmp_path):
    """The ImageNet-weights-for-a-10-class-model case: timm drops the classifier only."""
    src = timm.create_model("deit_tiny_patch16_224", img_size=32, depth=2, num_classes=1000)
    _randomise(src)
    torch.save(src.state_dict(), tmp_path / "in1k.pth")
    base = nuwa.create_base("deit_tiny_patch16_224", checkpoint=tmp_path / "in1k.pth", img_size=32, depth=2,
                            num_classes=10)
    assert base.head.weight.shape == (10, 192)
    torch.testing.assert_close(base.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight, atol=0, rtol=0)
