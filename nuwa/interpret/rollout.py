"""Attention rollout (Abnar & Zuidema 2020) for the paper's Fig. 8.

Per layer: average the heads, add the identity (the residual path), renormalise the rows, and
multiply the layers' matrices from the first to the last. The class token's row, restricted to
the patch tokens, says how much each patch flows into the class token through every layer.
"""
from __future__ import annotations

import torch

from ..errors import NuwaError


def head_mean(attn: torch.Tensor) -> torch.Tensor:
    """(B, H, N, N) attention probabilities -> (B, N, N), heads averaged."""
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise NuwaError(f"attention maps must be (B, heads, N, N), got {tuple(attn.shape)}")
    return attn.float().mean(dim=1)


def rollout(attentions: list[torch.Tensor], *, residual: bool = True, upto: int | None = None) -> torch.Tensor:
    """The rollout matrix (B, N, N) through the first `upto` layers (all by default).

    With `residual`, each layer's head-mean A becomes (A + I) / 2 -- the identity stands for the
    skip connection -- renormalised so every row sums to 1; the product of row-stochastic
    matrices is row-stochastic, so the result's rows sum to 1.
    """
    if not attentions:
        raise NuwaError("rollout: no attention maps given")
    layers = attentions[:upto] if upto is not None else attentions
    result = None
    for attn in layers:
        a = head_mean(attn)
        if residual:
            a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result  # a later layer reads the earlier layers' mixing
    return result


def cls_patch_map(matrix: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The class token's row over the patches, as (B, gh, gw) maps that sum to 1.

    `matrix` is (B, N, N) with token 0 the class token and N - 1 == gh * gw patches.
    """
    gh, gw = grid
    if matrix.dim() != 3 or matrix.shape[-1] != gh * gw + 1:
        raise NuwaError(f"a (B, {gh * gw + 1}, {gh * gw + 1}) matrix is needed for a {gh}x{gw} grid, "
                        f"got {tuple(matrix.shape)}")
    row = matrix[:, 0, 1:]
    row = row / row.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return row.reshape(-1, gh, gw)


@torch.no_grad()
def attention_maps(model, x: torch.Tensor, *, preprocess=None) -> dict[str, torch.Tensor]:
    """Everything Fig. 8 draws for an `EdgeViT` and a uint8 or float batch `x`:
    `layers` (B, L, gh, gw): each layer's own head-mean class-token attention over the patches;
    `rollout` (B, gh, gw): the rollout through all layers; `logits` (B, classes)."""
    from ..data import Preprocess

    cfg = model.config
    preprocess = preprocess or Preprocess.for_config(cfg)
    was_training = model.training
    model.eval()
    try:
        logits, attns = model.forward_attention(preprocess(x))
    finally:
        model.train(was_training)
    grid = (cfg.img_size[0] // cfg.patch_size, cfg.img_size[1] // cfg.patch_size)
    layers = torch.stack([cls_patch_map(head_mean(a), grid) for a in attns], dim=1)
    return dict(layers=layers, rollout=cls_patch_map(rollout(attns), grid), logits=logits.float())
