"""`EdgeMobileViT`: a dense MobileViT whose sizes may differ per block and per layer.

Module names follow timm's `ByobNet` (`stem`, `stages.S.I.conv1_1x1.conv`, ...,
`final_conv`), so a timm state dict loads with one renamed key (`head.fc` -> `head`). The
transformer layers are `EdgeBlock`s with `EdgeAttention`, the same parts as `EdgeViT`'s, with
SiLU in the MLP as in MobileViT.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from ..arch import LayerConfig
from ..model import EdgeAttention, EdgeBlock, ImageModel
from .arch import BlockConfig, MobileViTConfig


class ConvBNAct(nn.Module):
    """Convolution (no bias), BatchNorm, optional SiLU: timm's `ConvNormAct` with the act taken
    out of the norm, so the state dict keys are the same."""

    def __init__(self, in_chs: int, out_chs: int, *, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, eps=eps)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when shapes allow."""

    def __init__(self, in_chs: int, cfg: BlockConfig, *, eps: float = 1e-5) -> None:
        super().__init__()
        mid = cfg.mid_chs
        self.conv1_1x1 = ConvBNAct(in_chs, mid, eps=eps)
        self.conv2_kxk = ConvBNAct(mid, mid, kernel_size=3, stride=cfg.stride, groups=mid, eps=eps)
        self.conv3_1x1 = ConvBNAct(mid, cfg.out_chs, act=False, eps=eps)
        self.residual = cfg.stride == 1 and in_chs == cfg.out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return x + y if self.residual else y


def transformer_layer(width: int, layer: LayerConfig, *, eps: float) -> EdgeBlock:
    return EdgeBlock(
        norm1=nn.LayerNorm(width, eps=eps),
        attn=EdgeAttention(width, num_heads=layer.num_heads, qk_dim=layer.qk_dim, v_dim=layer.v_dim,
                           scale=layer.scale),
        norm2=nn.LayerNorm(width, eps=eps),
        mlp=Mlp(in_features=width, hidden_features=layer.mlp_dim, act_layer=nn.SiLU),
    )


class MobileViTBlock(nn.Module):
    """Local 3x3 conv, 1x1 to the transformer width, transformer layers over unfolded patches
    (pixel (i, j) of every patch attends to the same pixel of the other patches), 1x1 back,
    3x3 fusion with the block's input. Unfold and fold are timm's."""

    def __init__(self, in_chs: int, cfg: BlockConfig, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv_kxk = ConvBNAct(in_chs, in_chs, kernel_size=3, stride=cfg.stride, eps=eps)
        self.conv_1x1 = nn.Conv2d(in_chs, cfg.width, 1, bias=False)
        self.transformer = nn.ModuleList(transformer_layer(cfg.width, l, eps=eps) for l in cfg.layers)
        self.norm = nn.LayerNorm(cfg.width, eps=eps)
        self.conv_proj = ConvBNAct(cfg.width, cfg.out_chs, eps=eps)
        self.conv_fusion = ConvBNAct(in_chs + cfg.out_chs, cfg.out_chs, kernel_size=3, eps=eps)
        self.patch = cfg.patch_size

    def unfold(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(B, C, H, W) -> (B * P, N, C) sequences, P pixels per patch, N patches."""
        p = self.patch
        B, C, H, W = x.shape
        nh, nw = math.ceil(H / p), math.ceil(W / p)
        if (nh * p, nw * p) != (H, W):
            x = F.interpolate(x, size=(nh * p, nw * p), mode="bilinear", align_corners=False)
        x = x.reshape(B * C * nh, p, nw, p).transpose(1, 2)
        x = x.reshape(B, C, nh * nw, p * p).transpose(1, 3).reshape(B * p * p, nh * nw, -1)
        return x, (B, C, H, W, nh, nw)

    def fold(self, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        p = self.patch
        B, C, H, W, nh, nw = shape
        x = x.contiguous().view(B, p * p, nh * nw, -1)
        x = x.transpose(1, 3).reshape(B * C * nh, nw, p, p)
        x = x.transpose(1, 2).reshape(B, C, nh * p, nw * p)
        if (nh * p, nw * p) != (H, W):
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y, shape = self.unfold(self.conv_1x1(self.conv_kxk(x)))
        for layer in self.transformer:
            y = layer(y)
        y = self.conv_proj(self.fold(self.norm(y), shape))
        return self.conv_fusion(torch.cat((shortcut, y), dim=1))


class FPNDecoder(nn.Module):
    """A light UPerNet-style decoder without the pyramid pooling module: 1x1 laterals on the
    four stage outputs (strides 4-32), a top-down pathway of upsample-and-add, every level
    upsampled to stride 4 and concatenated, one 3x3 fusion conv and a 1x1 classifier."""

    def __init__(self, in_chs: list[int], dim: int, num_classes: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(ConvBNAct(c, dim, eps=eps) for c in in_chs)
        self.fuse = ConvBNAct(dim * len(in_chs), dim, kernel_size=3, eps=eps)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        lat = [m(f) for m, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 2, -1, -1):  # top-down: coarse context into finer levels
            lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="bilinear", align_corners=False)
        size = lat[0].shape[-2:]
        up = [lat[0]] + [F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in lat[1:]]
        return self.classifier(self.fuse(torch.cat(up, dim=1)))


class EdgeMobileViT(ImageModel, nn.Module):
    """MobileViT built from a `MobileViTConfig`: a classifier (timm's `mobilevit_*`) or, with
    `task="segment"`, a segmenter whose logits are (B, classes, H, W) at the input size."""

    def __init__(self, config: MobileViTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        eps = config.norm_eps
        self.stem = ConvBNAct(config.in_chans, config.stem_chs, kernel_size=3, stride=2, eps=eps)
        chs = config.stem_chs
        self.stages = nn.ModuleList()
        for stage in config.stages:
            blocks = nn.ModuleList()
            for b in stage:
                blocks.append(InvertedResidual(chs, b, eps=eps) if b.kind == "ir" else MobileViTBlock(chs, b, eps=eps))
                chs = b.out_chs
            self.stages.append(blocks)
        self.final_conv = ConvBNAct(chs, config.final_chs, eps=eps)
        if config.task == "classify":
            self.head = nn.Linear(config.final_chs, config.num_classes)
        else:
            self.decoder = FPNDecoder(config.pyramid_chs, config.decoder_dim, config.num_classes, eps=eps)

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs at strides 4, 8, 16 and the final conv's at 32 (the decoder's inputs)."""
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            for blk in stage:
                x = blk(x)
            feats.append(x)
        return [*feats[1:4], self.final_conv(x)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pyramid(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            self.check_input(x)
        feats = self.forward_pyramid(x)
        if self.config.task == "classify":
            return self.head(feats[-1].mean(dim=(2, 3)))
        logits = self.decoder(feats)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
