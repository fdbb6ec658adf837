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
    if _is_mobilevit(name):
        raise NuwaError(f"model {name!r} is a MobileViT: derive from a base directory (nuwa pretrain --model {name}, "
                        "or nuwa.save(nuwa.from_timm(nuwa.create_base(name), img_size=...), DIR))")
    if not timm.models.is_model_in_modules(name, ["vision_transformer", "deit"]):
        raise NuwaError(f"model {name!r} is not a plain timm VisionTransformer (from timm's ViT/DeiT modules)")


def _is_mobilevit(name: str) -> bool:
    return name.split(".")[0].startswith(("mobilevit", "semobilevit"))


def create_base(name: str, *, pretrained: bool = False, checkpoint: str | Path | None = None, **timm_kwargs: Any) -> nn.Module:
    """Build a timm ViT by name; weights from a local `checkpoint` file or (pretrained=True) the hub.
    A MobileViT name builds timm's MobileViT (`nuwa.mobilevit.convert.create`; local weights only).

    The local file goes through timm's own loader (`pretrained_cfg_overlay=dict(file=...)`),
    so timm's checkpoint filters apply (position-embedding resampling, classifier reset when
    `num_classes` differs).
    """
    import timm

    if _is_mobilevit(name) and not pretrained:
        from .mobilevit.convert import create

        return create(name, checkpoint=None if checkpoint is None else str(checkpoint), **timm_kwargs)
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
    """Raise `NuwaError` unless `model` is a timm ViT that `from_timm` reproduces exactly.

    Supported: ViT/DeiT, DeiT distilled, DeiT-III/FlexiViT (no position embedding on the class
    token), register tokens (DINOv2-reg), CLIP's pre-norm, average pooling with `fc_norm`, a
    LayerNorm on the patch embedding, LayerScale (folded). Anything else is named and refused.
    """
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    name = type(model).__name__
    if type(model) not in (VisionTransformer, VisionTransformerDistilled):
        raise NuwaError(f"{name} is not a plain timm VisionTransformer (ViT, DeiT, DeiT-III, FlexiViT, DINOv2, CLIP)")

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise NuwaError(f"unsupported timm ViT variant: {what}")

    distilled = isinstance(model, VisionTransformerDistilled)
    eps = _final_norm(model).eps if _final_norm(model) is not None else None
    _check_tokens(model, distilled, need)
    _check_pooling(model, distilled, need)
    need(_is_layernorm(model.norm_pre, eps) or isinstance(model.norm_pre, nn.Identity),
         "pre-norm must be a LayerNorm with the blocks' eps")
    _check_patch_embed(model.patch_embed, eps, need)
    for i, blk in enumerate(model.blocks):
        _check_block(i, blk, eps, need)


def _final_norm(model: nn.Module) -> nn.Module | None:
    """timm's final norm: `norm` before pooling or `fc_norm` after it (at most one is not Identity)."""
    for m in (model.norm, model.fc_norm):
        if not isinstance(m, nn.Identity):
            return m
    return None


def _is_layernorm(m: nn.Module, eps: float | None) -> bool:
    return (isinstance(m, nn.LayerNorm) and m.elementwise_affine and m.bias is not None
            and len(m.normalized_shape) == 1 and m.eps == eps)


def _check_tokens(model: nn.Module, distilled: bool, need) -> None:
    need(not model.dynamic_img_size, "dynamic_img_size")
    need(model.pos_embed is not None, "no position embedding (pos_embed='none')")
    if distilled:  # timm's distilled ViT ignores register tokens and always embeds the class token
        need(model.reg_token is None, "distilled with register tokens")
        need(not model.no_embed_class, "distilled with no_embed_class")
    prefix = model.num_prefix_tokens
    expected = model.patch_embed.num_patches + (0 if model.no_embed_class else prefix)
    need(model.pos_embed.shape[1] == expected, f"position embedding of {model.pos_embed.shape[1]} tokens")


def _check_pooling(model: nn.Module, distilled: bool, need) -> None:
    pool = model.global_pool
    need(getattr(model, "attn_pool", None) is None, "attention pooling (global_pool='map')")
    need(pool in ("token", "avg"), f"global_pool={pool!r} (only 'token' and 'avg')")
    need(pool != "token" or model.cls_token is not None, "token pooling without a class token")
    need(pool == "token" or not model.pool_include_prefix, "pool_include_prefix")
    final = _final_norm(model)
    need(final is not None, "no final norm (final_norm=False)")
    # LayerNorm is per token: before pooling it commutes with taking the class token, not with a mean.
    need(pool == "token" or isinstance(model.norm, nn.Identity),
         "global_pool='avg' with the norm before pooling (fc_norm=False)")
    need(_is_layernorm(final, final.eps), "final norm must be LayerNorm")
    need(isinstance(model.head, nn.Linear), "head must be a Linear classifier (num_classes > 0)")
    if distilled:
        need(isinstance(model.head_dist, nn.Linear), "distillation head must be a Linear classifier")


def _check_patch_embed(pe: nn.Module, eps: float | None, need) -> None:
    from timm.layers import PatchEmbed

    need(type(pe) is PatchEmbed, f"patch embedding {type(pe).__name__}")
    need(pe.flatten and not pe.dynamic_img_pad, "patch embedding output format / dynamic padding")
    need(pe.patch_size[0] == pe.patch_size[1], f"non-square patch size {tuple(pe.patch_size)}")
    need(isinstance(pe.norm, nn.Identity) or _is_layernorm(pe.norm, eps),
         f"patch embedding norm {type(pe.norm).__name__} (only LayerNorm with the blocks' eps)")


def _check_block(i: int, blk: nn.Module, eps: float | None, need) -> None:
    from timm.layers import Mlp
    from timm.layers.attention import Attention
    from timm.models.vision_transformer import Block

    need(type(blk) is Block, f"block {i} is {type(blk).__name__}, not timm Block")
    a = blk.attn
    need(type(a) is Attention, f"block {i} attention is {type(a).__name__}")
    need(isinstance(a.q_norm, nn.Identity) and isinstance(a.k_norm, nn.Identity), f"block {i} qk-norm")
    need(isinstance(a.norm, nn.Identity) and getattr(a, "gate", None) is None, f"block {i} attention norm/gate")
    need(type(blk.mlp) is Mlp and isinstance(blk.mlp.norm, nn.Identity), f"block {i} MLP type")
    need(type(blk.mlp.act) is nn.GELU and blk.mlp.act.approximate == "none", f"block {i} activation")
    need(isinstance(blk.norm1, nn.LayerNorm) and isinstance(blk.norm2, nn.LayerNorm), f"block {i} norm type")
    need(_is_layernorm(blk.norm1, eps) and _is_layernorm(blk.norm2, eps), f"block {i} norm eps or affine differs")


def _layer_scale(ls: nn.Module) -> torch.Tensor | None:
    return None if isinstance(ls, nn.Identity) else ls.gamma.detach()


@torch.no_grad()
def from_timm(model: nn.Module, *, class_names: list[str] | None = None, **mobilevit_kwargs: Any) -> EdgeViT:
    """Convert a timm `VisionTransformer` into an `EdgeViT` computing the same function.

    LayerScale (if present) is folded into the attention output and second MLP linear; timm's
    final norm (`norm`, or `fc_norm` after average pooling) becomes `EdgeViT.norm`. A timm
    MobileViT becomes an `EdgeMobileViT` (`nuwa.mobilevit.convert.from_timm`, whose keyword
    arguments, such as `img_size` and `task`, pass through).
    """
    if type(model).__name__ == "ByobNet":
        from .mobilevit.convert import from_timm as mobilevit_from_timm

        return mobilevit_from_timm(model, class_names=class_names, **mobilevit_kwargs)
    if mobilevit_kwargs:
        raise TypeError(f"from_timm() got unexpected keyword arguments {sorted(mobilevit_kwargs)} for a ViT")
    check_convertible(model)
    edge = EdgeViT(_config_of(model, class_names))
    _copy_embedding(model, edge)
    for src, dst in zip(model.blocks, edge.blocks):
        _copy_block(src, dst)
    edge.norm.load_state_dict(_final_norm(model).state_dict())
    edge.head.load_state_dict(model.head.state_dict())
    if edge.head_dist is not None:
        edge.head_dist.load_state_dict(model.head_dist.state_dict())
    return edge.eval()


def _config_of(model: nn.Module, class_names: list[str] | None) -> EdgeViTConfig:
    pe = model.patch_embed
    blocks = list(model.blocks)
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
    dist_token = getattr(model, "dist_token", None) is not None
    return EdgeViTConfig(
        layers=layers, embed_dim=model.embed_dim, img_size=tuple(pe.img_size), patch_size=pe.patch_size[0],
        in_chans=in_chans, num_classes=model.num_classes, qkv_bias=qkv_bias, proj_bias=proj_bias,
        norm_eps=_final_norm(model).eps, mean=mean, std=std, class_names=class_names,
        source=dict(timm_model=dcfg.get("architecture", type(model).__name__)),
        class_token=model.cls_token is not None, dist_token=dist_token, head_dist=dist_token,
        reg_tokens=model.reg_token.shape[1] if model.reg_token is not None else 0,
        no_embed_class=bool(model.no_embed_class), patch_bias=pe.proj.bias is not None,
        patch_norm=not isinstance(pe.norm, nn.Identity), pre_norm=not isinstance(model.norm_pre, nn.Identity),
        global_pool=model.global_pool,
    )


def _copy_embedding(model: nn.Module, edge: EdgeViT) -> None:
    # Same module and parameter names as timm's: copy every one the EdgeViT has.
    edge.patch_embed.load_state_dict(model.patch_embed.state_dict())
    edge.norm_pre.load_state_dict(model.norm_pre.state_dict())
    for name in ("cls_token", "dist_token", "reg_token", "pos_embed"):
        if getattr(edge, name) is not None:
            getattr(edge, name).copy_(getattr(model, name))


def _copy_block(src: nn.Module, dst: nn.Module) -> None:
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
