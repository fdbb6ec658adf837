"""Value size: keep the same per-head value dims (V rows and output-projection columns) in every head."""
from __future__ import annotations

from ..errors import NuwaError
from ..model import EdgeViT
from ._rebuild import layer_config, normalise_dims, proj_cols, qkv_rows, rebuild, state_of


def prune_v(model: EdgeViT, keep: list[list[int] | int]) -> EdgeViT:
    """`keep[l]`: per-head value dims kept in layer l, or an int r meaning dims 0..r-1 (after SVD)."""
    cfg = model.config
    if len(keep) != cfg.depth:
        raise NuwaError(f"keep lists {len(keep)} layers but the model has {cfg.depth}")
    state, layers = state_of(model), []
    for i, dims in enumerate(keep):
        lc = layer_config(model, i)
        dims = normalise_dims(dims, lc.v_dim, lc.num_heads, i, "value")
        p = f"blocks.{i}.attn."
        heads = list(range(lc.num_heads))
        rows = qkv_rows(lc.num_heads, lc.qk_dim, lc.v_dim, v_keep=dims)
        state[p + "qkv.weight"] = state[p + "qkv.weight"][rows]
        if p + "qkv.bias" in state:
            state[p + "qkv.bias"] = state[p + "qkv.bias"][rows]
        state[p + "proj.weight"] = state[p + "proj.weight"][:, proj_cols(lc.v_dim, heads, dims)]
        lc.v_dim = len(dims[0])
        layers.append(lc)
    return rebuild(cfg.with_layers(layers), state)
