"""timm MobileViT -> `EdgeMobileViT`.

Supported: `mobilevit_xxs`, `mobilevit_xs`, `mobilevit_s` (multi-head attention over unfolded
patches). Refused with the reason: `mobilevitv2_*`, whose separable linear attention has no
heads and no query-key or value size per head (NuWa's attention dimensions do not exist
there), and `semobilevit_s` (squeeze-excitation inside the blocks).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..arch import LayerConfig
from ..errors import NuwaError
from .arch import BlockConfig, MobileViTConfig
from .model import EdgeMobileViT

SUPPORTED = ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s")


def is_mobilevit_name(name: str) -> bool:
    return name.split(".")[0].startswith(("mobilevit", "semobilevit"))


def check_name(name: str) -> None:
    arch = name.split(".")[0]
    if arch.startswith("mobilevitv2"):
        raise NuwaError(f"model {name!r}: MobileViT-v2's separable linear attention has no heads or per-head "
                        f"query-key/value sizes to prune; supported: {', '.join(SUPPORTED)}")
    if arch not in SUPPORTED:
        raise NuwaError(f"model {name!r}: unsupported MobileViT variant; supported: {', '.join(SUPPORTED)}")


def check_convertible(model: nn.Module) -> None:
    """Raise `NuwaError` unless `model` is a timm MobileViT that `from_timm` reproduces exactly."""
    from timm.layers import Mlp
    from timm.layers.attention import Attention
    from timm.models.byobnet import BottleneckBlock, ByobNet
    from timm.models.mobilevit import MobileVitBlock

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise NuwaError(f"unsupported MobileViT variant: {what}")

    need(type(model) is ByobNet, f"{type(model).__name__} is not timm's ByobNet")
    need(len(model.stages) == 5, f"{len(model.stages)} stages (MobileViT has 5)")
    need(isinstance(model.stem, nn.Module) and hasattr(model.stem, "conv") and model.stem.conv.kernel_size == (3, 3),
         "stem")
    for s, stage in enumerate(model.stages):
        for i, blk in enumerate(stage):
            where = f"block {s}.{i}"
            if type(blk) is BottleneckBlock:
                need(isinstance(blk.attn, nn.Identity) and isinstance(blk.attn_last, nn.Identity), f"{where}: attention")
                need(isinstance(blk.conv2b_kxk, nn.Identity), f"{where}: second kxk conv")
                need(blk.conv2_kxk.conv.groups == blk.conv2_kxk.conv.in_channels, f"{where}: not depthwise")
            elif type(blk) is MobileVitBlock:
                need(blk.conv_fusion is not None, f"{where}: no fusion conv")
                for j, layer in enumerate(blk.transformer):
                    need(type(layer.attn) is Attention and type(layer.mlp) is Mlp, f"{where} layer {j}: attention/MLP")
                    need(isinstance(layer.ls1, nn.Identity) and isinstance(layer.ls2, nn.Identity),
                         f"{where} layer {j}: layer scale")
            else:
                need(False, f"{where} is {type(blk).__name__} (MobileViT-v2's linear attention has no heads)")
    need(type(model.head.fc) is nn.Linear, "head must be a Linear classifier (num_classes > 0)")


def _block(blk: nn.Module) -> BlockConfig:
    from timm.models.byobnet import BottleneckBlock

    if type(blk) is BottleneckBlock:
        return BlockConfig(kind="ir", out_chs=blk.conv3_1x1.conv.out_channels, stride=blk.conv2_kxk.conv.stride[0],
                           mid_chs=blk.conv1_1x1.conv.out_channels)
    layers = [LayerConfig(num_heads=l.attn.num_heads, qk_dim=l.attn.head_dim, v_dim=l.attn.head_dim,
                          mlp_dim=l.mlp.fc1.out_features) for l in blk.transformer]
    return BlockConfig(kind="mvit", out_chs=blk.conv_proj.conv.out_channels, stride=blk.conv_kxk.conv.stride[0],
                       width=blk.conv_1x1.out_channels, layers=layers, patch_size=blk.patch_size[0])


def config_of(model: nn.Module, *, img_size: tuple[int, int] | int = (256, 256), task: str = "classify",
              num_classes: int | None = None, decoder_dim: int = 64,
              class_names: list[str] | None = None) -> MobileViTConfig:
    """The config of a timm MobileViT: its sizes, and for `task="segment"` a decoder on top."""
    dcfg = getattr(model, "pretrained_cfg", {}) or {}
    in_chans = model.stem.conv.in_channels
    mean, std = tuple(dcfg.get("mean", (0.0,) * 3)), tuple(dcfg.get("std", (1.0,) * 3))
    if len(mean) != in_chans:
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    return MobileViTConfig(
        stages=[[_block(b) for b in stage] for stage in model.stages],
        stem_chs=model.stem.conv.out_channels, final_chs=model.final_conv.conv.out_channels,
        img_size=img_size, in_chans=in_chans,
        num_classes=num_classes if num_classes is not None else model.head.fc.out_features,
        norm_eps=model.stem.bn.eps, mean=mean, std=std, task=task, decoder_dim=decoder_dim,
        class_names=class_names, source=dict(timm_model=dcfg.get("architecture", type(model).__name__)),
    )


@torch.no_grad()
def from_timm(model: nn.Module, *, img_size: tuple[int, int] | int = (256, 256), task: str = "classify",
              num_classes: int | None = None, decoder_dim: int = 64, class_names: list[str] | None = None,
              seed: int = 0) -> EdgeMobileViT:
    """Convert a timm MobileViT. Classification copies every tensor (same logits); segmentation
    copies the backbone and initialises the decoder from `seed` (timm has no MobileViT decoder)."""
    check_convertible(model)
    if task == "classify" and num_classes not in (None, model.head.fc.out_features):
        raise NuwaError(f"num_classes={num_classes} but the timm model's classifier has {model.head.fc.out_features}"
                        " outputs (build it with timm's num_classes)")
    cfg = config_of(model, img_size=img_size, task=task, num_classes=num_classes, decoder_dim=decoder_dim,
                    class_names=class_names)
    torch.manual_seed(seed)
    edge = EdgeMobileViT(cfg)
    state = dict(model.state_dict())
    head = {k: state.pop(k) for k in list(state) if k.startswith("head.")}
    if task == "classify":
        state.update({k.replace("head.fc.", "head."): v for k, v in head.items()})
    missing, unexpected = edge.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("decoder.")]
    if missing or unexpected:  # check_convertible should have refused such a model
        raise NuwaError(f"MobileViT conversion: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return edge.eval()


def create(name: str, *, checkpoint: str | None = None, **timm_kwargs: Any) -> nn.Module:
    """A timm MobileViT by name (random init, or a local checkpoint through timm's loader)."""
    import timm

    check_name(name)
    if checkpoint is not None:
        timm_kwargs["pretrained_cfg_overlay"] = dict(file=str(checkpoint))
    try:
        return timm.create_model(name, pretrained=checkpoint is not None, **timm_kwargs).eval()
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        what = f"checkpoint {checkpoint!r}" if checkpoint is not None else f"model {name!r}"
        raise NuwaError(f"{what}: cannot build or load weights ({str(e).splitlines()[0][:300]})") from None
