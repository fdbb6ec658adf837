"""`EdgeViT`: a dense ViT whose sizes may differ per layer.

Pruning produces smaller weight matrices, not masks, so the speed-up is real. The layers
follow timm's style (typed keyword arguments, attention width separate from embed dim,
blocks composed from their parts) and reuse timm's `PatchEmbed` and `Mlp`; only the
attention is ours, because timm's assumes query-key size == value size.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import Mlp, PatchEmbed
from torch import nn

from .arch import EdgeViTConfig, LayerConfig
from .errors import NuwaError


class EdgeAttention(nn.Module):
    """Multi-head self-attention with a query-key head size separate from the value head size.

    The fused `qkv` projection is laid out [Q heads | K heads | V heads], head-major in each
    part, which is timm's layout, so conversion copies weights verbatim.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        qk_dim: int,
        v_dim: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qk_dim = qk_dim
        self.v_dim = v_dim
        self.scale = scale if scale is not None else qk_dim ** -0.5
        self.qkv = nn.Linear(dim, num_heads * (2 * qk_dim + v_dim), bias=qkv_bias)
        self.proj = nn.Linear(num_heads * v_dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        B, N, _ = x.shape
        H, dq, dv = self.num_heads, self.qk_dim, self.v_dim
        q, k, v = self.qkv(x).split([H * dq, H * dq, H * dv], dim=-1)
        q = q.reshape(B, N, H, dq).transpose(1, 2)
        k = k.reshape(B, N, H, dq).transpose(1, 2)
        v = v.reshape(B, N, H, dv).transpose(1, 2)
        if return_attn:
            # Explicit softmax for attention rollout and importance analysis.
            attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
            out = attn @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = self.proj(out.transpose(1, 2).reshape(B, N, H * dv))
        return (out, attn) if return_attn else out


class EdgeBlock(nn.Module):
    """Pre-norm transformer block composed from the parts it is given."""

    def __init__(self, *, norm1: nn.Module, attn: nn.Module, norm2: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.norm1 = norm1
        self.attn = attn
        self.norm2 = norm2
        self.mlp = mlp

    @classmethod
    def from_config(
        cls, dim: int, layer: LayerConfig, *, qkv_bias: bool = True, proj_bias: bool = True, norm_eps: float = 1e-6
    ) -> "EdgeBlock":
        return cls(
            norm1=nn.LayerNorm(dim, eps=norm_eps),
            attn=EdgeAttention(
                dim, num_heads=layer.num_heads, qk_dim=layer.qk_dim, v_dim=layer.v_dim,
                qkv_bias=qkv_bias, proj_bias=proj_bias, scale=layer.scale,
            ),
            norm2=nn.LayerNorm(dim, eps=norm_eps),
            mlp=Mlp(in_features=dim, hidden_features=layer.mlp_dim, act_layer=nn.GELU, bias=proj_bias),
        )

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        if return_attn:  # explicit softmax path (see EdgeAttention): also return the probabilities
            out, attn = self.attn(self.norm1(x), return_attn=True)
            x = x + out
            return x + self.mlp(self.norm2(x)), attn
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ImageModel:
    """What every nuwa model shares (`EdgeViT`, `EdgeMobileViT`): its class count, and a check
    that an input has the shape its config was built for."""

    config: object

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def check_input(self, x: torch.Tensor) -> None:
        c = self.config
        expected = (c.in_chans, *c.img_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise NuwaError(
                f"input shape {tuple(x.shape)} does not fit the model: expected (B, {expected[0]}, "
                f"{expected[1]}, {expected[2]})"
            )


class EdgeViT(ImageModel, nn.Module):
    """ViT built from an `EdgeViTConfig`: timm's `VisionTransformer` (and DeiT's distilled one)
    with per-layer sizes.

    Classification pools the tokens after the last block (`pool`: the class token, or the mean
    patch token) through `norm` + `head`; for a depth-pruned model these are the chosen layer's
    early-exit classifier. `norm` sits after pooling, which equals timm's norm-then-pool for a
    class token (LayerNorm is per token) and is timm's `fc_norm` for average pooling.
    """

    def __init__(self, config: EdgeViTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d, eps = config.embed_dim, config.norm_eps
        self.patch_embed = PatchEmbed(
            img_size=config.img_size, patch_size=config.patch_size, in_chans=config.in_chans, embed_dim=d,
            bias=config.patch_bias, norm_layer=partial(nn.LayerNorm, eps=eps) if config.patch_norm else None,
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if config.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if config.dist_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, config.reg_tokens, d)) if config.reg_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, config.pos_embed_len, d))
        self.norm_pre = nn.LayerNorm(d, eps=eps) if config.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(
            EdgeBlock.from_config(d, layer, qkv_bias=config.qkv_bias, proj_bias=config.proj_bias, norm_eps=eps)
            for layer in config.layers
        )
        self.norm = nn.LayerNorm(d, eps=eps)
        self.head = nn.Linear(d, config.num_classes)
        self.head_dist = nn.Linear(d, config.num_classes) if config.head_dist else None
        self.init_weights()

    def init_weights(self) -> None:
        """timm's ViT init: truncated normal std .02 for tokens and linears, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for token in (self.cls_token, self.dist_token, self.reg_token):
            if token is not None:
                nn.init.normal_(token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> the tokens the first block reads: patches, prefix tokens, position, pre-norm."""
        x = self.patch_embed(x)
        if self.config.no_embed_class:  # position embedding on the patches only
            x = x + self.pos_embed
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token, self.reg_token)
                  if t is not None]
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        if not self.config.no_embed_class:
            x = x + self.pos_embed
        return self.norm_pre(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, ...) tokens -> (B, ...): what the classifier reads, the class token or the mean
        of the patch tokens (prefix tokens excluded, as timm's 'avg'). Every reader of "the class
        token" goes through here (per-layer classifiers, feature mimicking, neuron activations)."""
        if self.config.global_pool == "avg":
            return x[:, self.config.num_prefix_tokens:].mean(dim=1)
        return x[:, 0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block (before the final norm), shape (B, N, d)."""
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward_cls_tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The pooled token (`pool`) after every block: the inputs of per-layer (early-exit) classifiers."""
        x = self.embed(x)
        out = []
        for blk in self.blocks:
            x = blk(x)
            out.append(self.pool(x))
        return out

    def forward_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and every block's attention probabilities (B, heads, N, N), computed as
        softmax(q k^T * scale) explicitly, since the fused SDPA kernel does not expose them
        (attention rollout, Fig. 8). The logits equal `forward`'s up to float rounding."""
        self.check_input(x)
        x = self.embed(x)
        maps = []
        for blk in self.blocks:
            x, attn = blk(x, return_attn=True)
            maps.append(attn)
        return self.forward_head(x), maps

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.head_dist is not None:
            return self._forward_head_dist(x, pre_logits)
        x = self.norm(self.pool(x))
        return x if pre_logits else self.head(x)

    def _forward_head_dist(self, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        """DeiT-distilled at inference: the mean of the class head's and the distillation head's logits
        (pre-logits: the mean of the two normed tokens, as timm)."""
        # The class token is normed last, so a hook on `norm` sees it (distillation recovery).
        x_dist = self.norm(x[:, 1])
        x = self.norm(x[:, 0])
        if pre_logits:
            return (x + x_dist) / 2
        return (self.head(x) + self.head_dist(x_dist)) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            self.check_input(x)
        return self.forward_head(self.forward_features(x))
