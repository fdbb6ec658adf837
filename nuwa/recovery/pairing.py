"""A pruned model against its base (the refit target or teacher): which base embedding dims it kept,
and that it is no deeper than the base."""
from __future__ import annotations

import torch

from ..errors import NuwaError
from ..model import EdgeViT


def base_embed_positions(pruned: EdgeViT, base: EdgeViT) -> list[int] | None:
    """Positions in the base's residual stream of the pruned model's embedding dims (None: all)."""
    p_idx, b_idx = pruned.config.embed_index, base.config.embed_index
    if p_idx is None:
        if pruned.config.embed_dim != base.config.embed_dim:
            raise NuwaError(f"pruned embed dim {pruned.config.embed_dim} != base {base.config.embed_dim} "
                            "and no embed_index records which dims were kept")
        return None
    where = {e: i for i, e in enumerate(b_idx if b_idx is not None else range(base.config.embed_dim))}
    missing = [e for e in p_idx if e not in where]
    if missing:
        raise NuwaError(f"embedding dims {missing[:5]} of the pruned model are not in the base model")
    pos = [where[e] for e in p_idx]
    return None if pos == list(range(base.config.embed_dim)) else pos


def check_pair(pruned: EdgeViT, base: EdgeViT) -> None:
    if pruned.config.depth > base.config.depth:
        raise NuwaError(f"pruned model has {pruned.config.depth} layers, more than the base's {base.config.depth}")


def restrict(t: torch.Tensor, pos: list[int] | None) -> torch.Tensor:
    return t if pos is None else t[..., pos]
