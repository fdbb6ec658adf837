"""Depth: keep the first `depth` blocks and exit through that layer's classifier."""
from __future__ import annotations

import torch

from ..errors import NuwaError
from ..model import EdgeViT
from ._rebuild import rebuild, state_of

EXIT_KEYS = ("norm.weight", "norm.bias", "head.weight", "head.bias")
DIST_KEYS = ("head_dist.weight", "head_dist.bias")


def prune_depth(model: EdgeViT, depth: int, exit_head: dict[str, torch.Tensor] | None = None) -> EdgeViT:
    """Drop blocks `depth..L-1`. `exit_head` ({norm,head}.{weight,bias}) replaces the final classifier;
    without it the model's own final norm and head are kept (an untrained early exit).

    A distilled model keeps its distillation head only if `exit_head` has one (`head_dist.*`): a
    per-layer classifier reads the pooled token alone, so the model then exits through it alone
    (the distillation token stays: the blocks attend to it)."""
    cfg = model.config
    if not 1 <= depth <= cfg.depth:
        raise NuwaError(f"depth={depth} must be between 1 and {cfg.depth}")
    state = {k: v for k, v in state_of(model).items()
             if not (k.startswith("blocks.") and int(k.split(".")[1]) >= depth)}
    head_dist = cfg.head_dist
    if exit_head is not None:
        head_dist = cfg.head_dist and "head_dist.weight" in exit_head
        if not head_dist:
            state = {k: v for k, v in state.items() if not k.startswith("head_dist.")}
        keys = EXIT_KEYS + (DIST_KEYS if head_dist else ())
        for k in keys:
            state[k] = exit_head[k].detach().clone().to(state[k].dtype)
    num_classes = state["head.weight"].shape[0]
    if num_classes != cfg.num_classes:
        raise NuwaError(f"exit head has {num_classes} classes but the model has {cfg.num_classes}")
    return rebuild(cfg.with_layers(cfg.layers[:depth], head_dist=head_dist), state)

