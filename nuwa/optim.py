"""Optimiser pieces of training: AdamW parameter groups (weight decay and layer-wise lr decay) and
the warm-up + cosine learning-rate schedule."""
from __future__ import annotations

import math
from typing import Any

from torch import nn

# Parameters that timm/DeiT exclude from weight decay besides biases and norms (1-D tensors):
# decaying learned token embeddings towards zero only hurts.
NO_DECAY_NAMES = ("cls_token", "pos_embed", "dist_token")


def layer_id(name: str, depth: int) -> int:
    """A parameter's depth for layer-wise lr decay, as BEiT and MAE count it: the embeddings 0,
    block i i + 1, everything after the blocks (final norm, classifier) depth + 1."""
    parts = name.split(".")
    if parts[0] == "blocks":
        return int(parts[1]) + 1
    if parts[0] in ("patch_embed", "cls_token", "pos_embed", "dist_token", "reg_token", "norm_pre"):
        return 0
    return depth + 1


def param_groups(model: nn.Module, weight_decay: float, *, layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups in the timm/DeiT convention: no decay on biases, norm weights (all 1-D
    tensors) and the class/position embeddings. With `layer_decay` < 1, each group's lr is
    scaled by layer_decay ** (depth + 1 - layer_id) (key "lr_scale"): the classifier moves at
    the full rate, the embeddings least (BEiT's layer-wise decay)."""
    depth = len(getattr(model, "blocks", ()))
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in NO_DECAY_NAMES
        layer = layer_id(name, depth) if layer_decay != 1.0 else depth + 1
        groups.setdefault((layer, no_decay), []).append(p)
    return [dict(params=ps, weight_decay=0.0 if no_decay else weight_decay,
                 lr_scale=layer_decay ** (depth + 1 - layer))
            for (layer, no_decay), ps in sorted(groups.items())]


def cosine_lr(step: int, *, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate for optimiser step `step` (0-based): linear warm-up to `base_lr` over
    `warmup_steps`, then half a cosine down towards 0 at `total_steps`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))
