"""The fine-tuning recipes of recovery: `standard` (the default) and `paper`.

`standard` is the ViT fine-tuning recipe of DeiT, BEiT and MAE, scaled to a recovery budget:
AdamW, linear warm-up, cosine decay and layer-wise lr decay, with DeiT's soft distillation from
the base (its classifier sliced to the sub-task) whose logits are computed once per image
(`nuwa.distillation.TeacherCache`). The lr and the distillation weight are chosen on the
sub-task's validation split among candidates, each trained briefly from the same pruned weights
(the lr first, then the distillation weight at that lr); the chosen pair then trains in rounds,
validation read after each, until it stops improving or the sample cap is reached, and the model
keeps the best round's weights. The test split is never read.

`paper` is the NuWa paper's recovery: AdamW at lr 1e-4, weight decay 0.05, 5 epochs of the
sub-task, with nothing else.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import NuwaError
from ..evaluate import evaluate
from ..model import EdgeViT

PAPER_RECIPE = dict(lr=1e-4, weight_decay=0.05, epochs=5)


def paper(pruned: EdgeViT, task: Any, *, batch_size: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The paper's recipe on `pruned` in place: (history, parameters). The validation guard of
    every recovery keeps the epoch of lowest validation loss."""
    from ..train import fit

    history = fit(pruned, task.fit, epochs=PAPER_RECIPE["epochs"], lr=PAPER_RECIPE["lr"],
                  weight_decay=PAPER_RECIPE["weight_decay"], batch_size=batch_size, seed=seed, val_ds=task.val,
                  preprocess=task.preprocess, desc="fine-tune (paper)")
    return history, dict(PAPER_RECIPE, samples=history["samples_seen"])


def search_order(opts: Any, *, teacher: bool) -> tuple[list[float], list[float]]:
    """The lr candidates and the distillation weights to try (without a teacher: weight 0 only)."""
    alphas = [float(a) for a in opts.recovery_distill_alphas] if teacher else [0.0]
    return [float(lr) for lr in opts.recovery_lrs], alphas


def standard(pruned: EdgeViT, base: EdgeViT | None, task: Any, *, opts: Any,
             seed: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The standard recipe on `pruned` in place. Returns (history of the final run, parameters,
    details: every candidate with its validation top-1 and loss, the choice, and where the
    budget stopped). `base`: the teacher (None: labels only)."""
    from ..distillation import TeacherCache
    from ..train import fit

    if base is not None and base.config.img_size != pruned.config.img_size:
        raise NuwaError(f"teacher image size {base.config.img_size} differs from the student's "
                        f"{pruned.config.img_size}")
    cache = TeacherCache(base, pruned, len(task.fit)) if base is not None else None
    start = {k: v.detach().clone() for k, v in pruned.state_dict().items()}
    common = dict(weight_decay=opts.weight_decay, batch_size=opts.batch_size, seed=seed, preprocess=task.preprocess,
                  layer_decay=opts.layer_decay)
    lrs, alphas = search_order(opts, teacher=cache is not None)
    tried: list[dict[str, Any]] = []

    def trial(lr: float, alpha: float) -> dict[str, Any]:
        pruned.load_state_dict(start)
        fit(pruned, task.fit, epochs=1, lr=lr, limit=opts.recovery_search_samples,
            warmup_epochs=opts.warmup_fraction, teacher_cache=cache if alpha > 0 else None,
            distill_alpha=alpha, distill_tau=opts.distill_tau, desc=f"choose lr {lr:g} distill {alpha:g}", **common)
        val = evaluate(pruned, task.val, preprocess=task.preprocess, batch_size=opts.batch_size, desc=None)
        tried.append(dict(lr=lr, distill_alpha=alpha, val_top1=val["top1"], val_loss=val["loss"]))
        return tried[-1]

    def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return max(rows, key=lambda t: (t["val_top1"], -t["val_loss"]))

    # One coordinate at a time: the lr at the first distillation weight, then the weight at that
    # lr (len(lrs) + len(alphas) - 1 trials, not their product).
    lr, alpha = lrs[0], alphas[0]
    if len(lrs) > 1:
        lr = best([trial(x, alpha) for x in lrs])["lr"]
    if len(alphas) > 1:
        at_lr = [t for t in tried if t["lr"] == lr] or [trial(lr, alpha)]
        alpha = best(at_lr + [trial(lr, a) for a in alphas[1:]])["distill_alpha"]
    pruned.load_state_dict(start)
    rounds = math.ceil(opts.recovery_max_samples / opts.recovery_round)
    history = fit(pruned, task.fit, epochs=rounds, lr=lr, limit=opts.recovery_round,
                  warmup_epochs=opts.warmup_fraction * rounds, teacher_cache=cache if alpha > 0 else None,
                  distill_alpha=alpha, distill_tau=opts.distill_tau, val_ds=task.val,
                  patience=opts.recovery_patience, desc="recover", **common)
    params = dict(recipe="standard", lr=lr, distill_alpha=alpha, distill_tau=opts.distill_tau,
                  weight_decay=opts.weight_decay, layer_decay=opts.layer_decay, warmup_fraction=opts.warmup_fraction,
                  round_samples=opts.recovery_round, max_samples=opts.recovery_max_samples,
                  patience=opts.recovery_patience)
    details = dict(
        candidates=tried, chosen=dict(lr=lr, distill_alpha=alpha),
        choice_rule=(f"highest validation top-1 (ties: lower loss) after {opts.recovery_search_samples} samples, "
                     "the lr first, then the distillation weight" if tried else "one candidate"),
        search_samples=opts.recovery_search_samples * len(tried),
        rounds_trained=history["stopped_after"], kept_round=history["best_epoch"],
        samples_trained=history["samples_seen"], kept_at_samples=history["best_epoch"] * opts.recovery_round,
        stopped=("early: validation loss did not fall for "
                 f"{opts.recovery_patience} rounds" if history["stopped_after"] < rounds else "at the sample cap"),
        teacher_forwards=cache.forwards if cache is not None else 0)
    return history, params, details
