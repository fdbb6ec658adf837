"""Depth: keep the first `depth` blocks and exit through that layer's classifier."""
from __future__ import annotations

import torch

from ..errors import NuwaError
from ..model import EdgeViT
from ._rebuild import rebuild, state_of


def prune_depth(model: EdgeViT, depth: int, exit_head: dict[str, torch.Tensor] | None = None) -> EdgeViT:
    """Drop blocks `depth..L-1`. `exit_head` ({norm,head}.{weight,bias}) replaces the final classifier;
    without it the model's own final norm and head are kept (an untrained early exit)."""
    cfg = model.config
    if not 1 <= depth <= cfg.depth:
        raise NuwaError(f"depth={depth} must be between 1 and {cfg.depth}")
    state = {k: v for k, v in state_of(model).items()
             if not (k.startswith("blocks.") and int(k.split(".")[1]) >= depth)}
    if exit_head is not None:
        for k in ("norm.weight", "norm.bias", "head.weight", "head.bias"):
            state[k] = exit_head[k].detach().clone().to(state[k].dtype)
    num_classes = state["head.weight"].shape[0]
    if num_classes != cfg.num_classes:
        raise NuwaError(f"exit head has {num_classes} classes but the model has {cfg.num_classes}")
    return rebuild(cfg.with_layers(cfg.layers[:depth]), state)
