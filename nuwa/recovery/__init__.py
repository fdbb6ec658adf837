"""Recovery after pruning: fine-tuning, distillation from the base, or a closed-form refit.

`recover` runs the one a derivation asks for. Modules: `ridge` (least squares), `closed_form` (the
refit), `distill` (distillation from the base), `pairing` (how a pruned model lines up with its base).
"""
from __future__ import annotations

from typing import Any

from ..errors import NuwaError
from ..model import EdgeViT
from ..options import RECOVERY_NAMES
from .closed_form import TARGETS, closed_form, refit_on_task
from .distill import distill
from .pairing import base_embed_positions
from .ridge import RidgeStats, ridge_fit

RECOVERIES = RECOVERY_NAMES  # `recover` dispatches on these names

__all__ = ["RECOVERIES", "TARGETS", "RidgeStats", "base_embed_positions", "closed_form", "distill", "recover",
           "refit_on_task", "ridge_fit", "trained_epochs"]


def recover(pruned: EdgeViT, base: EdgeViT | None, task: Any, *, recovery: str, epochs: int, opts: Any,
            seed: int, limit: int | None = None) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any] | None]:
    """Run `recovery` on `pruned` in place for a `derivation.SubTask`. Returns (training history or
    None, the recovery's parameters, its details or None) for the report. `limit` caps the
    training samples per epoch of finetune/distill (None: all); `base` is needed by distill and
    closed-form only.

    None of them makes the model worse on `task.val`: finetune/distill end with the epoch of lowest
    validation loss, the starting weights included (history "best_epoch", "val_at_start"), and
    the closed-form refit is chosen and kept on it (`refit_on_task`; details "kept", "guard")."""
    from ..train import fit

    if recovery not in RECOVERIES:
        raise NuwaError(f"unknown recovery {recovery!r}; expected one of {', '.join(RECOVERIES)}")
    train_kw = dict(epochs=epochs, lr=opts.finetune_lr, weight_decay=opts.weight_decay, batch_size=opts.batch_size,
                    seed=seed, val_ds=task.val, preprocess=task.preprocess, limit=limit)
    if recovery in ("distill", "closed-form") and base is None:
        raise NuwaError(f"--recovery {recovery} needs the base model (the teacher / the refit target)")
    if recovery == "finetune":
        history = fit(pruned, task.fit, desc="fine-tune", **train_kw) if epochs > 0 else None
        return history, dict(epochs=epochs, lr=opts.finetune_lr), None
    if recovery == "distill":
        params = dict(epochs=epochs, lr=opts.finetune_lr, tau=opts.distill_tau, alpha=opts.distill_alpha,
                      feature_weight=opts.distill_feature_weight)
        if epochs == 0:
            return None, params, None
        history = distill(pruned, base, task.fit, tau=opts.distill_tau, alpha=opts.distill_alpha,
                          feature_weight=opts.distill_feature_weight, **train_kw)
        return history, params, None
    if recovery == "closed-form":
        details = refit_on_task(pruned, base, task, ridge=opts.ridge, calib_samples=opts.calib_samples,
                                batch_size=opts.batch_size, seed=seed)
        return None, dict(ridge=opts.ridge, calib_samples=opts.calib_samples), details
    return None, {}, None


def trained_epochs(recovery: str, epochs: int) -> int:
    """Epochs of gradient training a recovery actually ran (the report's `finetune_epochs`)."""
    return epochs if recovery in ("finetune", "distill") else 0
