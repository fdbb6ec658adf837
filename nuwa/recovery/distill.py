"""Distillation recovery: `distill` fine-tunes like `finetune` with DeiT's soft distillation from
the base restricted to the sub-task's classes, optionally plus feature mimicking of the exit class
token.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..loop_utils import check_number, model_device
from ..model import EdgeViT
from .pairing import base_embed_positions, check_pair, restrict


def _teacher_outputs(base: EdgeViT, x: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The base's logits and its class token after block `depth` - 1 (before any norm), in one pass."""
    h = base.embed(x)
    cls = None
    for k, blk in enumerate(base.blocks):
        h = blk(h)
        if k == depth - 1:
            cls = base.pool(h)
    assert cls is not None
    return base.forward_head(h), cls


def distill(pruned: EdgeViT, base: EdgeViT, train_ds: Any, *, epochs: int, lr: float, weight_decay: float,
            batch_size: int, seed: int, tau: float = 1.0, alpha: float = 0.5, feature_weight: float = 0.0,
            val_ds: Any = None, preprocess: Any = None, limit: int | None = None,
            desc: str | None = "distill") -> dict[str, Any]:
    """Fine-tune `pruned` in place with `nuwa.train.fit`, loss DeiT's soft distillation
    (`distillation_loss`: (1 - alpha) CE + alpha tau^2 KL) from the base's logits of the pruned
    model's classes, plus `feature_weight` times the MSE between the pruned model's exit class
    token and the base's at the same depth (kept embedding dims), divided by the mean square of
    the base's token so the weight does not depend on the residual stream's scale.

    Both tokens are taken before any final norm: that is where the two models share a space
    (the residual stream, of which the pruned model keeps a subset of dims), and it is the input
    that the pruned model's exit classifier was trained on (the base's stream at that depth);
    after a LayerNorm over fewer dims the statistics differ, so post-norm tokens do not match
    even for a perfect student. Returns `fit`'s history; with `val_ds`, `fit` keeps the weights
    (the starting ones included) of lowest validation loss, the distillation loss notwithstanding."""
    from ..train import distillation_loss, fit, teacher_columns

    check_number("distill_tau", tau, low=0.0, strict=True)
    check_number("distill_alpha", alpha, low=0.0, strict=False, high=1.0)
    check_number("distill_feature_weight", feature_weight, low=0.0, strict=False)
    check_pair(pruned, base)
    cols = teacher_columns(pruned, base)
    pos = base_embed_positions(pruned, base)
    depth = pruned.config.depth
    seen: dict[str, torch.Tensor] = {}

    def loss_fn(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # not inference_mode: the teacher's outputs enter the loss's graph
            t_logits, t_cls = _teacher_outputs(base, x.to(model_device(base)), depth)
        t_logits = (t_logits if cols is None else t_logits[:, cols]).to(logits.device)
        loss = distillation_loss(logits, y, t_logits, alpha=alpha, tau=tau)
        if feature_weight > 0:
            t = restrict(t_cls, pos).to(logits.device)
            loss = loss + feature_weight * F.mse_loss(seen["cls"], t) / t.pow(2).mean().clamp_min(1e-12)
        return loss

    def hook(_m: nn.Module, args: tuple) -> None:
        seen["cls"] = args[0]  # forward_head feeds the exit class token to the final norm

    handle = pruned.norm.register_forward_pre_hook(hook) if feature_weight > 0 else None
    try:
        return fit(pruned, train_ds, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                   seed=seed, val_ds=val_ds, preprocess=preprocess, loss_fn=loss_fn, teacher=base, limit=limit,
                   desc=desc)
    finally:
        if handle is not None:
            handle.remove()
