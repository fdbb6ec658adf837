"""timm <-> EdgeViT: build base models from timm names and convert them into `EdgeViT`s."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .arch import EdgeViTConfig, LayerConfig
from .errors import NuwaError
from .model import EdgeViT


def check_model_name(name: str) -> None:
    """Fail before any data is read when `name` is not a timm model or not from its ViT/DeiT modules
    (the building code checks the built model again, for ViT variants we cannot convert)."""
    import timm

    if not timm.is_model(name):
        raise NuwaError(f"unknown timm model name {name!r}")
    if not timm.models.is_model_in_modules(name, ["vision_transformer", "deit"]):
        raise NuwaError(f"model {name!r} is not a plain timm VisionTransformer (ViT/DeiT with a class token)")


def create_base(name: str, *, pretrained: bool = False, checkpoint: str | Path | None = None, **timm_kwargs: Any) -> nn.Module:
    """Build a timm ViT by name; weights from a local `checkpoint` file or (pretrained=True) the hub.

    The local file goes through timm's own loader (`pretrained_cfg_overlay=dict(file=...)`),
    so timm's checkpoint filters apply (position-embedding resampling, classifier reset when
    `num_classes` differs).
    """
    import timm

    check_model_name(name)
    if checkpoint is not None:
        ckpt = Path(checkpoint)
        if not ckpt.is_file():
            raise NuwaError(f"checkpoint {str(ckpt)!r}: no such file")
        # Tell timm how many classes the file holds, so that a file matching the requested
        # num_classes keeps its classifier and a mismatching one (e.g. ImageNet weights for a
        # 10-class model) has it dropped, as timm does for hub weights.
        overlay = dict(file=str(ckpt))
        head_rows = _checkpoint_head_rows(ckpt)
        if head_rows is not None:
            overlay["num_classes"] = head_rows
        timm_kwargs["pretrained_cfg_overlay"] = overlay
        pretrained = True
    try:
        model = timm.create_model(name, pretrained=pretrained, **timm_kwargs)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        what = f"checkpoint {str(checkpoint)!r}" if checkpoint is not None else f"model {name!r}"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NuwaError(f"{what}: cannot build or load weights ({msg[:300]})") from None
    try:
        check_convertible(model)
    except NuwaError as e:
        raise NuwaError(f"model {name!r}: {e}") from None
    return model.eval()


def _checkpoint_head_rows(path: Path) -> int | None:
    """Rows of `head.weight` in a checkpoint, read lazily; NuwaError if it is not a checkpoint."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return f.get_slice("head.weight").get_shape()[0] if "head.weight" in f.keys() else None
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch and safetensors raise many types for a bad file
        raise NuwaError(f"checkpoint {str(path)!r}: not a readable checkpoint ({type(e).__name__})") from None
    if isinstance(state, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    w = state.get("head.weight") if isinstance(state, dict) else None
    return int(w.shape[0]) if isinstance(w, torch.Tensor) else None


def check_convertible(model: nn.Module) -> None:
    """Raise `NuwaError` unless `model` is a class-token timm ViT that `from_timm` reproduces exactly."""
    from timm.layers import Mlp, PatchEmbed
    from timm.layers.attention import Attention
    from timm.models.vision_transformer import Block, VisionTransformer

    name = type(model).__name__
    if not isinstance(model, VisionTransformer) or type(model).__name__ != "VisionTransformer":
        raise NuwaError(f"{name} is not a plain timm VisionTransformer (DeiT/ViT with a class token)")

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise NuwaError(f"unsupported timm ViT variant: {what}")

    need(model.cls_token is not None and model.global_pool == "token", "needs a class token and global_pool='token'")
    need(getattr(model, "reg_token", None) is None, "register tokens")
    need(model.pos_embed is not None and not model.no_embed_class, "position embedding must cover the class token")
    need(not model.dynamic_img_size, "dynamic_img_size")
    need(isinstance(model.norm_pre, nn.Identity), "pre-norm (CLIP-style)")
    need(isinstance(model.fc_norm, nn.Identity), "fc_norm")
    need(getattr(model, "attn_pool", None) is None, "attention pooling")
    need(isinstance(model.head, nn.Linear), "head must be a Linear classifier (num_classes > 0)")
    need(isinstance(model.patch_embed, PatchEmbed) and isinstance(model.patch_embed.norm, nn.Identity),
         "patch embedding with a norm")
    need(isinstance(model.norm, nn.LayerNorm), "final norm must be LayerNorm")
    for i, blk in enumerate(model.blocks):
        need(type(blk) is Block, f"block {i} is {type(blk).__name__}, not timm Block")
        a = blk.attn
        need(type(a) is Attention, f"block {i} attention is {type(a).__name__}")
        need(isinstance(a.q_norm, nn.Identity) and isinstance(a.k_norm, nn.Identity), f"block {i} qk-norm")
        need(isinstance(a.norm, nn.Identity) and getattr(a, "gate", None) is None, f"block {i} attention norm/gate")
        need(type(blk.mlp) is Mlp and isinstance(blk.mlp.norm, nn.Identity), f"block {i} MLP type")
        need(type(blk.mlp.act) is nn.GELU and blk.mlp.act.approximate == "none", f"block {i} activation")
        need(isinstance(blk.norm1, nn.LayerNorm) and isinstance(blk.norm2, nn.LayerNorm), f"block {i} norm type")
        need(blk.norm1.eps == model.norm.eps, f"block {i} norm eps differs")


def _layer_scale(ls: nn.Module) -> torch.Tensor | None:
    return None if isinstance(ls, nn.Identity) else ls.gamma.detach()


@torch.no_grad()
def from_timm(model: nn.Module, *, class_names: list[str] | None = None) -> EdgeViT:
    """Convert a timm `VisionTransformer` into an `EdgeViT` computing the same function.

    LayerScale (if present) is folded into the attention output and second MLP linear.
    """
    check_convertible(model)
    pe = model.patch_embed
    blocks = list(model.blocks)
    d = model.embed_dim
    qkv_bias = blocks[0].attn.qkv.bias is not None if blocks else True
    proj_bias = blocks[0].attn.proj.bias is not None if blocks else True
    layers = [
        LayerConfig(num_heads=b.attn.num_heads, qk_dim=b.attn.head_dim, v_dim=b.attn.head_dim,
                    mlp_dim=b.mlp.fc1.out_features, attn_scale=float(b.attn.scale))
        for b in blocks
    ]
    dcfg = getattr(model, "pretrained_cfg", {}) or {}
    in_chans = pe.proj.in_channels
    mean, std = tuple(dcfg.get("mean", (0.485, 0.456, 0.406))), tuple(dcfg.get("std", (0.229, 0.224, 0.225)))
    if len(mean) != in_chans:
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    cfg = EdgeViTConfig(
        layers=layers, embed_dim=d, img_size=tuple(pe.img_size), patch_size=pe.patch_size[0], in_chans=in_chans,
        num_classes=model.num_classes, qkv_bias=qkv_bias, proj_bias=proj_bias, norm_eps=model.norm.eps,
        mean=mean, std=std, class_names=class_names,
        source=dict(timm_model=dcfg.get("architecture", type(model).__name__)),
    )
    if pe.patch_size[0] != pe.patch_size[1]:
        raise NuwaError(f"non-square patch size {pe.patch_size} is not supported")
    edge = EdgeViT(cfg)
    edge.patch_embed.proj.load_state_dict(pe.proj.state_dict())
    edge.cls_token.copy_(model.cls_token)
    edge.pos_embed.copy_(model.pos_embed)
    for src, dst in zip(blocks, edge.blocks):
        dst.norm1.load_state_dict(src.norm1.state_dict())
        dst.norm2.load_state_dict(src.norm2.state_dict())
        dst.attn.qkv.load_state_dict(src.attn.qkv.state_dict())
        dst.mlp.fc1.load_state_dict(src.mlp.fc1.state_dict())
        for src_lin, dst_lin, ls in ((src.attn.proj, dst.attn.proj, src.ls1), (src.mlp.fc2, dst.mlp.fc2, src.ls2)):
            dst_lin.load_state_dict(src_lin.state_dict())
            gamma = _layer_scale(ls)
            if gamma is not None:  # y = gamma * (W x + b)  ==  (gamma W) x + gamma b
                dst_lin.weight.mul_(gamma[:, None])
                if dst_lin.bias is not None:
                    dst_lin.bias.mul_(gamma)
    edge.norm.load_state_dict(model.norm.state_dict())
    edge.head.load_state_dict(model.head.state_dict())
    return edge.eval()
