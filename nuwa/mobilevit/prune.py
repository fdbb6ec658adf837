"""Pruning operators of `EdgeMobileViT`: one per dimension, each returning a smaller dense model.

Addresses: a MobileViT block is `(stage, index)`; `keep[(s, i)]` holds that block's choice, one
entry per transformer layer where the dimension is per layer. Blocks left out keep everything.
The attention operators slice the fused qkv rows with the same helpers as `EdgeViT`'s.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ..errors import NuwaError
from ..prune._rebuild import normalise_dims, proj_cols, qkv_rows
from .arch import MobileViTConfig
from .model import EdgeMobileViT

Address = tuple[int, int]


def _state(model: EdgeMobileViT) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rebuild(config: MobileViTConfig, state: dict[str, torch.Tensor]) -> EdgeMobileViT:
    config.validate()
    ref = next(iter(state.values()))
    with torch.device("meta"):
        model = EdgeMobileViT(config)
    model = model.to_empty(device=ref.device)
    model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True)
    return model.eval()


def _copy(cfg: MobileViTConfig) -> MobileViTConfig:
    return MobileViTConfig.from_dict(cfg.to_dict())


def _block(cfg: MobileViTConfig, at: Address, kind: str):
    s, i = at
    try:
        b = cfg.stages[s][i]
    except (IndexError, TypeError):
        raise NuwaError(f"block {at} does not exist") from None
    if b.kind != kind:
        raise NuwaError(f"block {s}.{i} is {b.kind!r}, not {kind!r}")
    return b


def _slice(state: dict, key: str, idx: torch.Tensor, dim: int) -> None:
    if key in state:
        state[key] = state[key].index_select(dim, idx.to(state[key].device))


def _attention(model: EdgeMobileViT, keep: dict[Address, list[Any]], what: str) -> EdgeMobileViT:
    """Heads, query-key dims or value dims of every transformer layer named in `keep`."""
    cfg, state = _copy(model.config), _state(model)
    for at, per_layer in keep.items():
        b = _block(cfg, at, "mvit")
        if len(per_layer) != len(b.layers):
            raise NuwaError(f"block {at}: keep lists {len(per_layer)} layers but the block has {len(b.layers)}")
        for j, (lc, sel) in enumerate(zip(b.layers, per_layer)):
            p = f"stages.{at[0]}.{at[1]}.transformer.{j}.attn."
            H, dq, dv = lc.num_heads, lc.qk_dim, lc.v_dim
            if what == "heads":
                heads = sorted(set(sel))
                if not heads or heads[0] < 0 or heads[-1] >= H:
                    raise NuwaError(f"block {at} layer {j}: kept heads {sel} must be non-empty, in 0..{H - 1}")
                rows, cols = qkv_rows(H, dq, dv, heads), proj_cols(dv, heads)
                b.layers[j] = replace(lc, num_heads=len(heads), attn_scale=lc.scale)
            elif what == "qk":
                dims = normalise_dims(sel, dq, H, j, "query-key")
                rows, cols = qkv_rows(H, dq, dv, qk_keep=dims), None
                b.layers[j] = replace(lc, qk_dim=len(dims[0]), attn_scale=lc.scale)
            else:
                dims = normalise_dims(sel, dv, H, j, "value")
                rows, cols = qkv_rows(H, dq, dv, v_keep=dims), proj_cols(dv, list(range(H)), dims)
                b.layers[j] = replace(lc, v_dim=len(dims[0]), attn_scale=lc.scale)
            _slice(state, p + "qkv.weight", rows, 0)
            _slice(state, p + "qkv.bias", rows, 0)
            if cols is not None:
                _slice(state, p + "proj.weight", cols, 1)
    return rebuild(cfg, state)


def prune_heads(model: EdgeMobileViT, keep: dict[Address, list[list[int]]]) -> EdgeMobileViT:
    """`keep[(s, i)][j]`: the heads kept in layer j of block (s, i)."""
    return _attention(model, keep, "heads")


def prune_qk(model: EdgeMobileViT, keep: dict[Address, list[list[int] | int]]) -> EdgeMobileViT:
    """Per-head query-key dims kept (an int r: dims 0..r-1, the top-r after an SVD rotation);
    the softmax scale stays the base's."""
    return _attention(model, keep, "qk")


def prune_v(model: EdgeMobileViT, keep: dict[Address, list[list[int] | int]]) -> EdgeMobileViT:
    """Per-head value dims kept (an int r: dims 0..r-1)."""
    return _attention(model, keep, "v")


def prune_mlp(model: EdgeMobileViT, keep: dict[Address, list[list[int]]]) -> EdgeMobileViT:
    """`keep[(s, i)][j]`: the MLP neurons kept in layer j of block (s, i)."""
    cfg, state = _copy(model.config), _state(model)
    for at, per_layer in keep.items():
        b = _block(cfg, at, "mvit")
        for j, (lc, idx) in enumerate(zip(b.layers, per_layer)):
            idx = _indices(idx, lc.mlp_dim, f"block {at} layer {j} MLP")
            p = f"stages.{at[0]}.{at[1]}.transformer.{j}.mlp."
            _slice(state, p + "fc1.weight", idx, 0)
            _slice(state, p + "fc1.bias", idx, 0)
            _slice(state, p + "fc2.weight", idx, 1)
            b.layers[j] = replace(lc, mlp_dim=len(idx), attn_scale=lc.attn_scale)
    return rebuild(cfg, state)


def prune_width(model: EdgeMobileViT, keep: dict[Address, list[int]]) -> EdgeMobileViT:
    """The transformer width of each named MobileViT block: the block's own embedding, cut in
    every tensor it runs through (the 1x1 in, every LayerNorm, qkv inputs, proj and fc2 outputs,
    fc1 inputs, the 1x1 out)."""
    cfg, state = _copy(model.config), _state(model)
    for at, idx in keep.items():
        b = _block(cfg, at, "mvit")
        idx = _indices(idx, b.width, f"block {at} width")
        p = f"stages.{at[0]}.{at[1]}."
        _slice(state, p + "conv_1x1.weight", idx, 0)
        _slice(state, p + "conv_proj.conv.weight", idx, 1)
        for n in ("norm.weight", "norm.bias"):
            _slice(state, p + n, idx, 0)
        for j in range(len(b.layers)):
            t = f"{p}transformer.{j}."
            for n in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.proj.weight",
                      "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
                _slice(state, t + n, idx, 0)
            for n in ("attn.qkv.weight", "mlp.fc1.weight"):
                _slice(state, t + n, idx, 1)
        b.width = len(idx)
    return rebuild(cfg, state)


_BN = ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")


def prune_expansion(model: EdgeMobileViT, keep: dict[Address, list[int]]) -> EdgeMobileViT:
    """The expanded channels of each named inverted residual (1x1 expand out, the depthwise
    conv, 1x1 project in): the only convolution channels no residual, concat or decoder reads."""
    cfg, state = _copy(model.config), _state(model)
    for at, idx in keep.items():
        b = _block(cfg, at, "ir")
        idx = _indices(idx, b.mid_chs, f"block {at} expansion")
        p = f"stages.{at[0]}.{at[1]}."
        for conv in ("conv1_1x1.", "conv2_kxk."):
            _slice(state, p + conv + "conv.weight", idx, 0)
            for n in _BN:
                _slice(state, p + conv + n, idx, 0)
        _slice(state, p + "conv3_1x1.conv.weight", idx, 1)
        b.mid_chs = len(idx)
    return rebuild(cfg, state)


def prune_classes(model: EdgeMobileViT, classes: list[int]) -> EdgeMobileViT:
    """Keep the outputs `classes` (classifier rows, or the decoder's 1x1 output channels), in
    that order; `config.classes` maps them back to the base model's outputs."""
    cfg, state = _copy(model.config), _state(model)
    idx = torch.tensor(classes, dtype=torch.long)
    if not classes or len(set(classes)) != len(classes) or min(classes) < 0 or max(classes) >= cfg.num_classes:
        raise NuwaError(f"classes {classes} must be distinct outputs in 0..{cfg.num_classes - 1}")
    p = "head." if cfg.task == "classify" else "decoder.classifier."
    _slice(state, p + "weight", idx, 0)
    _slice(state, p + "bias", idx, 0)
    base = cfg.classes or list(range(cfg.num_classes))
    names = cfg.class_names
    cfg.classes = [base[c] for c in classes]
    cfg.class_names = [names[c] for c in classes] if names else None
    cfg.num_classes = len(classes)
    return rebuild(cfg, state)


def _indices(idx: Any, full: int, what: str) -> torch.Tensor:
    idx = sorted(set(int(i) for i in idx))
    if not idx or idx[0] < 0 or idx[-1] >= full:
        raise NuwaError(f"{what}: kept indices must be non-empty, in 0..{full - 1}")
    return torch.tensor(idx, dtype=torch.long)
