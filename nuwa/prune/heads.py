"""Number of heads: keep whole heads (their Q, K, V rows and output-projection columns)."""
from __future__ import annotations

from ..errors import NuwaError
from ..model import EdgeViT
from ._rebuild import layer_config, proj_cols, qkv_rows, rebuild, state_of


def prune_heads(model: EdgeViT, keep: list[list[int]]) -> EdgeViT:
    """`keep[l]`: head indices kept in layer l (at least one per layer)."""
    cfg = model.config
    if len(keep) != cfg.depth:
        raise NuwaError(f"keep lists {len(keep)} layers but the model has {cfg.depth}")
    state, layers = state_of(model), []
    for i, heads in enumerate(keep):
        lc = layer_config(model, i)
        heads = sorted(heads)
        if not heads or len(set(heads)) != len(heads) or not all(0 <= h < lc.num_heads for h in heads):
            raise NuwaError(f"layer {i}: kept heads {heads} must be distinct, in 0..{lc.num_heads - 1}, non-empty")
        p = f"blocks.{i}.attn."
        rows = qkv_rows(lc.num_heads, lc.qk_dim, lc.v_dim, heads)
        state[p + "qkv.weight"] = state[p + "qkv.weight"][rows]
        if p + "qkv.bias" in state:
            state[p + "qkv.bias"] = state[p + "qkv.bias"][rows]
        state[p + "proj.weight"] = state[p + "proj.weight"][:, proj_cols(lc.v_dim, heads)]
        lc.num_heads = len(heads)
        layers.append(lc)
    return rebuild(cfg.with_layers(layers), state)
