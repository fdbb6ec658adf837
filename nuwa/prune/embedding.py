"""Embedding size: keep residual-stream dims everywhere they appear."""
from __future__ import annotations

import torch

from ..errors import NuwaError
from ..model import EdgeViT
from ._rebuild import rebuild, state_of

# Where the embedding dim is the input (columns) of a tensor, or absent; tokens run over it on
# their last axis; every other tensor (patch projection, outputs of attn.proj / fc2, every
# LayerNorm, pre- and patch-embedding norms included) has it first.
_INPUT_AXIS = ("attn.qkv.weight", "mlp.fc1.weight", "head.weight", "head_dist.weight")
_UNTOUCHED = ("attn.qkv.bias", "mlp.fc1.bias", "head.bias", "head_dist.bias")
_TOKENS = ("cls_token", "dist_token", "reg_token", "pos_embed")


def embed_axis(name: str) -> int | None:
    """The axis of tensor `name` that runs over the embedding dims (None: no such axis)."""
    if name.endswith(_UNTOUCHED):
        return None
    if name.endswith(_INPUT_AXIS):
        return 1
    if name in _TOKENS:
        return 2
    return 0


def prune_embedding(model: EdgeViT, keep: list[int]) -> EdgeViT:
    """Keep embedding dims `keep` (indices into the current embedding)."""
    cfg = model.config
    idx = torch.tensor(sorted(keep), dtype=torch.long)
    if idx.numel() == 0 or idx.unique().numel() != idx.numel() or idx.min() < 0 or idx.max() >= cfg.embed_dim:
        raise NuwaError(f"kept embedding dims must be distinct, in 0..{cfg.embed_dim - 1}, non-empty")
    state = {}
    for k, v in state_of(model).items():
        axis = embed_axis(k)
        state[k] = v if axis is None else v.index_select(axis, idx.to(v.device))
    base_index = cfg.embed_index if cfg.embed_index is not None else list(range(cfg.embed_dim))
    new = cfg.with_layers(cfg.layers, embed_dim=idx.numel(), embed_index=[base_index[i] for i in idx.tolist()])
    return rebuild(new, state)
