"""Query-key size: keep the same per-head query-key dims in every head of a layer.

With SVD (the paper's method) the layer is first rotated into its singular basis
(`nuwa.svd.reparametrize_qk`), so "keep the first r dims" keeps the top-r singular directions.
Score-based pruning passes the dims to keep directly.
"""
from __future__ import annotations

from ..errors import NuwaError
from ..model import EdgeViT
from ._rebuild import layer_config, normalise_dims, qkv_rows, rebuild, state_of


def prune_qk(model: EdgeViT, keep: list[list[int] | int]) -> EdgeViT:
    """`keep[l]`: per-head query-key dims kept in layer l, or an int r meaning dims 0..r-1.

    The softmax scale is kept as it was, which is the paper's sqrt(q'/q) factor on W_Q.
    """
    cfg = model.config
    if len(keep) != cfg.depth:
        raise NuwaError(f"keep lists {len(keep)} layers but the model has {cfg.depth}")
    state, layers = state_of(model), []
    for i, dims in enumerate(keep):
        lc = layer_config(model, i)
        dims = normalise_dims(dims, lc.qk_dim, lc.num_heads, i, "query-key")
        p = f"blocks.{i}.attn."
        rows = qkv_rows(lc.num_heads, lc.qk_dim, lc.v_dim, qk_keep=dims)
        state[p + "qkv.weight"] = state[p + "qkv.weight"][rows]
        if p + "qkv.bias" in state:
            state[p + "qkv.bias"] = state[p + "qkv.bias"][rows]
        lc.attn_scale, lc.qk_dim = lc.scale, len(dims[0])
        layers.append(lc)
    return rebuild(cfg.with_layers(layers), state)
