"""Recovery after pruning: the standard recipe (the default), the paper's, plain fine-tuning,
distillation from the base, or a closed-form refit.

`recover` runs the one a derivation asks for. Modules: `recipe` (standard and paper), `ridge`
(least squares), `closed_form` (the refit), `distill` (distillation from the base), `pairing` (how
a pruned model lines up with its base).
"""
from __future__ import annotations

from typing import Any

from ..errors import NuwaError
from ..model import EdgeViT
from ..options import RECOVERY_NAMES
from .closed_form import TARGETS, closed_form, refit_on_task
from .distill import distill
from .pairing import base_embed_positions
from .recipe import PAPER_RECIPE, paper, standard
from .ridge import RidgeStats, ridge_fit

RECOVERIES = RECOVERY_NAMES  # `recover` dispatches on these names

__all__ = ["PAPER_RECIPE", "RECOVERIES", "TARGETS", "RidgeStats", "base_embed_positions", "closed_form", "distill", "recover",
           "refit_on_task", "ridge_fit", "trained_epochs"]


def recover(pruned: EdgeViT, base: EdgeViT | None, task: Any, *, recovery: str, epochs: int, opts: Any,
            seed: int, limit: int | None = None) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any] | None]:
    """Run `recovery` on `pruned` in place for a `derivation.SubTask`. Returns (training history or
    None, the recovery's parameters, its details or None) for the report. `epochs` and `limit`
    (the training samples per epoch; None: all) are those of finetune and distill: standard sets
    its budget on validation, paper trains 5 epochs on every sample. `base` is the teacher of
    standard (without it, labels only) and distill, and the target of closed-form.

    Each one ends with the weights of lowest validation loss on `task.val` that it saw, the
    starting weights included (history "best_epoch", "val_at_start"); the closed-form refit is
    chosen and kept on it (`refit_on_task`; details "kept", "guard"). Lowest validation loss is
    not highest test top-1: a guarded model can still score lower on the test split."""
    from ..train import fit

    if recovery not in RECOVERIES:
        raise NuwaError(f"unknown recovery {recovery!r}; expected one of {', '.join(RECOVERIES)}")
    train_kw = dict(epochs=epochs, lr=opts.finetune_lr, weight_decay=opts.weight_decay, batch_size=opts.batch_size,
                    seed=seed, val_ds=task.val, preprocess=task.preprocess, limit=limit)
    if recovery in ("distill", "closed-form") and base is None:
        raise NuwaError(f"--recovery {recovery} needs the base model (the teacher / the refit target)")
    if recovery in ("standard", "paper") and limit is not None:
        raise NuwaError(f"--limit {limit} is for --recovery finetune and distill; {recovery} sets its own budget")
    if recovery == "standard":
        return standard(pruned, base, task, opts=opts, seed=seed)
    if recovery == "paper":
        history, params = paper(pruned, task, batch_size=opts.batch_size, seed=seed)
        return history, params, None
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


def trained_epochs(recovery: str, epochs: int) -> int | None:
    """Epochs of gradient training a recovery ran (the report's `finetune_epochs`). None for
    standard, which trains in rounds of samples (its details count them)."""
    if recovery == "standard":
        return None
    if recovery == "paper":
        return PAPER_RECIPE["epochs"]
    return epochs if recovery in ("finetune", "distill") else 0
