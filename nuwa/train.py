"""Training: `fit` (AdamW, cosine schedule, augmentation, DeiT distillation) and seeding.

Everything here is deterministic for a seed on CPU: data order and augmentation draw from
local generators seeded by `seed`, and the global RNG is forked (not clobbered) inside
`fit`, so calling it does not change the caller's random state.
"""
from __future__ import annotations

import math
import random
import time
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .device import autocast
from .errors import NuwaError
from .evaluate import evaluate
from .loop_utils import (
    Preprocessor, check_labels, check_number, check_positive_int, model_device, preprocess_for, progress,
)
from .optim import NO_DECAY_NAMES, cosine_lr, layer_id, param_groups  # noqa: F401  (this module's API)
from .distillation import (  # noqa: F401  (this module's API)
    DISTILL_ALPHA, DISTILL_TAU, TeacherCache, distillation_loss, sliced_teacher_logits, teacher_columns,
)

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

AUGMENT_SHIFT = 2  # pixels


# ---- seeding ------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global RNG and torch (all devices)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise NuwaError(f"seed={seed!r} must be an integer in [0, 2**32)")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def augment_batch(x: torch.Tensor, generator: torch.Generator, shift: int = AUGMENT_SHIFT) -> torch.Tensor:
    """Random translation by up to `shift` px (zero pad + crop, torchvision's RandomCrop with
    padding) and random horizontal flip, independently per image. Works on the raw uint8
    batch, so padding is black like the background of the data sets we train on, and it is
    cheap: one gather, no per-image Python loop."""
    B, C, H, W = x.shape
    dy = torch.randint(0, 2 * shift + 1, (B,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (B,), generator=generator)
    flip = torch.rand(B, generator=generator) < 0.5
    padded = F.pad(x, (shift, shift, shift, shift))
    rows = (dy[:, None] + torch.arange(H)).to(x.device)  # (B, H)
    cols = (dx[:, None] + torch.arange(W)).to(x.device)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    out = padded[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, C, H, W)
    return torch.where(flip.to(x.device)[:, None, None, None], out.flip(-1), out).contiguous()


# ---- training -----------------------------------------------------------------------------------
def _n_samples(ds: Any, limit: int | None) -> int:
    return len(ds) if limit is None else min(int(limit), len(ds))


def _check_fit_args(epochs: Any, lr: Any, weight_decay: Any, batch_size: Any, warmup_epochs: Any,
                    label_smoothing: Any, limit: Any, seed: Any) -> None:
    check_positive_int("epochs", epochs, minimum=0)
    check_number("lr", lr, low=0.0, strict=True)
    check_number("weight_decay", weight_decay, low=0.0, strict=False)
    check_positive_int("batch_size", batch_size)
    check_number("warmup_epochs", warmup_epochs, low=0.0, strict=False)
    check_number("label_smoothing", label_smoothing, low=0.0, strict=False)
    if label_smoothing >= 1.0:
        raise NuwaError(f"label_smoothing={label_smoothing!r} must be < 1")
    if limit is not None:
        check_positive_int("limit", limit, minimum=0)
    check_positive_int("seed", seed, minimum=0)


def fit(
    model: nn.Module,
    train_ds: Any,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int = 128,
    seed: int = 0,
    val_ds: Any = None,
    preprocess: Preprocessor | None = None,
    augment: bool = False,
    warmup_epochs: float = 0.0,
    label_smoothing: float = 0.0,
    loss_fn: LossFn | None = None,
    teacher: nn.Module | None = None,
    distill_alpha: float = DISTILL_ALPHA,
    distill_tau: float = DISTILL_TAU,
    teacher_cache: "TeacherCache | None" = None,
    layer_decay: float = 1.0,
    patience: int | None = None,
    limit: int | None = None,
    desc: str | None = "train",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train `model` in place with AdamW and a per-step cosine schedule (linear warm-up).

    Loss: cross-entropy with `label_smoothing`; with a `teacher` (and no `loss_fn`), DeiT
    soft distillation (`distill_alpha`, `distill_tau`) against the teacher's logits for the
    student's classes; `loss_fn(logits, targets, x)` (x: the preprocessed batch) replaces either,
    and then a teacher is only held in eval mode. `teacher_cache` (a `TeacherCache` of
    `train_ds`, instead of `teacher`; no augmentation): each training image's teacher logits
    are computed the first time it is drawn and reused in later epochs (and by later `fit`
    calls sharing the cache), so the teacher costs one forward pass per image, not one per step.
    `layer_decay`: layer-wise lr decay (`param_groups`). `limit` caps the samples per epoch (a fresh random
    subset each epoch). `patience` (needs `val_ds`): stop once that many epochs in a row have
    not lowered the validation loss (history "stopped_after").
    `log` receives one summary line per epoch (and one when an earlier epoch's weights are kept).
    The model is left in eval mode.

    With `val_ds`, training never makes the model worse on it: the starting weights are evaluated
    too (epoch 0), and the model ends with the weights of the epoch with the lowest validation
    loss (loss, not top-1: on a small validation set top-1 moves in coarse steps and ties), the
    starting ones if no epoch beat them. Without `val_ds` it ends with the last epoch's.

    Returns {"epochs": [{"epoch", "train_loss", "val_top1", "val_loss", "seconds"}],
    "steps": optimiser steps, "samples_seen": training samples, "guard": "val_loss" or None
    (no validation set), "val_at_start": {"top1", "loss"} of the starting weights or None,
    "best_epoch": the epoch whose weights the model ends with (0: the starting weights),
    "stopped_after": the last epoch trained, "teacher_forwards": images the teacher ran on}.
    """
    _check_fit_args(epochs, lr, weight_decay, batch_size, warmup_epochs, label_smoothing, limit, seed)
    check_number("distill_alpha", distill_alpha, low=0.0, strict=False, high=1.0)
    check_number("distill_tau", distill_tau, low=0.0, strict=True)
    check_number("layer_decay", layer_decay, low=0.0, strict=True, high=1.0)
    if patience is not None:
        check_positive_int("patience", patience)
        if val_ds is None:
            raise NuwaError("patience (early stopping) needs a validation set")
    if teacher_cache is not None:
        if augment or teacher is not None or loss_fn is not None:
            raise NuwaError("a teacher cache replaces `teacher` and needs no loss_fn and no augmentation "
                            "(each augmented view would need its own teacher pass)")
        if len(teacher_cache.known) != len(train_ds):
            raise NuwaError(f"the teacher cache holds {len(teacher_cache.known)} images, the training set "
                            f"{len(train_ds)}")
        teacher = teacher_cache.teacher
    history: dict[str, Any] = {"epochs": [], "steps": 0, "samples_seen": 0, "guard": None, "val_at_start": None,
                               "best_epoch": epochs, "stopped_after": epochs, "teacher_forwards": 0}
    if epochs == 0:
        model.eval()
        return history
    n = _n_samples(train_ds, limit)
    if n == 0:
        raise NuwaError(f"{desc or 'fit'}: no training samples (data set has {len(train_ds)}, limit={limit})")
    steps_per_epoch = math.ceil(n / batch_size)
    preprocess = preprocess_for(model, preprocess)
    device = model_device(model)
    cols = None
    if teacher_cache is not None:
        cols = teacher_cache.cols  # the cache matched the classes already
    elif teacher is not None and loss_fn is None:
        cols = teacher_columns(model, teacher)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay, layer_decay=layer_decay), lr=lr)
    schedule = dict(total_steps=epochs * steps_per_epoch, warmup_steps=round(warmup_epochs * steps_per_epoch),
                    base_lr=lr)
    # Separate streams, so turning augmentation on or off does not change the data order.
    order_gen = torch.Generator().manual_seed(seed)
    augment_gen = torch.Generator().manual_seed(seed + 0x9E3779B9)
    teacher_mode = teacher.training if teacher is not None else False
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    forwards_before = teacher_cache.forwards if teacher_cache is not None else 0
    step_kw = dict(loss_fn=loss_fn, teacher=teacher, cols=cols, label_smoothing=label_smoothing,
                   alpha=distill_alpha, tau=distill_tau)
    best = None  # (validation loss, epoch, weights) of the best weights so far
    if val_ds is not None:
        start_metrics = evaluate(model, val_ds, preprocess=preprocess, desc=None if desc is None else "val")
        history.update(guard="val_loss", val_at_start=dict(top1=start_metrics["top1"], loss=start_metrics["loss"]))
        best = (start_metrics["loss"], 0, _snapshot(model))
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)  # any stochastic layer (dropout, drop-path) is seeded too
        if teacher is not None:
            teacher.eval()
        try:
            for epoch in range(epochs):
                start = time.perf_counter()
                epoch_seed = int(torch.randint(0, 2**62, (1,), generator=order_gen))
                bar = progress(n, None if desc is None else f"{desc} {epoch + 1}/{epochs}")
                try:
                    train_loss = _train_epoch(
                        model, optimizer, train_ds, history, bar=bar, batch_size=batch_size, seed=epoch_seed,
                        limit=limit, augment_gen=augment_gen if augment else None, preprocess=preprocess,
                        schedule=schedule, step_kw=step_kw, cache=teacher_cache,
                        where=f"{desc or 'fit'} epoch {epoch + 1}")
                    record = _end_epoch(model, epoch, train_loss, val_ds, preprocess, start, desc)
                    if record["val_top1"] is not None:
                        bar.set_postfix(loss=f"{train_loss:.4f}", val_top1=f"{record['val_top1']:.4f}")
                finally:
                    bar.close()
                history["epochs"].append(record)
                if best is not None and record["val_loss"] < best[0]:  # a NaN loss never wins
                    best = (record["val_loss"], epoch + 1, _snapshot(model) if epoch + 1 < epochs else None)
                if log is not None:
                    log(_summary(desc, epoch, epochs, record))
                if patience is not None and best is not None and epoch + 1 - best[1] >= patience:
                    history["stopped_after"] = epoch + 1
                    if best[2] is None:  # the last epoch was the best: nothing was snapshotted
                        best = (best[0], best[1], _snapshot(model))
                    break
        finally:
            if teacher is not None:
                teacher.train(teacher_mode)
    if teacher_cache is not None:
        history["teacher_forwards"] = teacher_cache.forwards - forwards_before
    if best is not None:
        history["best_epoch"] = best[1]
        if best[1] != history["stopped_after"]:
            model.load_state_dict(best[2])
            if log is not None:
                log(f"{desc or 'fit'}: kept the weights of epoch {best[1]} (0: the starting ones), "
                    f"lowest val loss {best[0]:.4f}")
    model.eval()
    return history


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, ds: Any, history: dict[str, Any], *,
                 bar: Any, batch_size: int, seed: int, limit: int | None, augment_gen: torch.Generator | None,
                 preprocess: Preprocessor, schedule: dict[str, Any], step_kw: dict[str, Any],
                 cache: "TeacherCache | None", where: str) -> float:
    """One pass over (a `limit`ed random subset of) `ds`; counts steps and samples into
    `history` and returns the mean training loss per sample."""
    from .data import sample_order

    device = model_device(model)
    num_classes = int(model.config.num_classes)  # type: ignore[attr-defined]
    order = sample_order(len(ds), True, seed, limit) if cache is not None else None
    model.train()
    total_loss, seen = 0.0, 0
    for x, y in _train_batches(ds, batch_size, seed, limit):
        check_labels(y, num_classes)
        if augment_gen is not None:
            x = augment_batch(x, augment_gen)
        x, y = preprocess(x.to(device)), y.to(device)
        soft = None
        if cache is not None:
            soft = cache.logits(order[seen:seen + len(y)], x)
        elif step_kw["teacher"] is not None and step_kw["loss_fn"] is None:
            history["teacher_forwards"] += len(y)
        loss = _step(model, optimizer, x, y, schedule, history["steps"], soft=soft, **step_kw)
        if not math.isfinite(loss):
            raise NuwaError(f"{where}: loss became {loss} at step {history['steps'] + 1}; "
                            f"try a smaller lr than {schedule['base_lr']}")
        history["steps"] += 1
        history["samples_seen"] += len(y)
        total_loss, seen = total_loss + loss * len(y), seen + len(y)
        bar.update(len(y))
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
    return total_loss / seen


def _train_batches(ds: Any, batch_size: int, seed: int, limit: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from .data import batches

    return batches(ds, batch_size=batch_size, shuffle=True, seed=seed, limit=limit)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          schedule: dict[str, Any], step: int, *, loss_fn: LossFn | None, teacher: nn.Module | None,
          cols: list[int] | None, label_smoothing: float, alpha: float, tau: float,
          soft: torch.Tensor | None = None) -> float:
    """One optimiser step at the scheduled learning rate; returns the batch loss. `soft`: the
    teacher's logits of the batch, already computed (the teacher cache)."""
    lr = cosine_lr(step, **schedule)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    with autocast(x.device):
        logits = model(x)
        if loss_fn is not None:
            loss = loss_fn(logits, y, x)
        elif teacher is not None:
            if soft is None:
                soft = sliced_teacher_logits(teacher, x, cols)
            loss = distillation_loss(logits.float(), y, soft.float(), alpha=alpha, tau=tau,
                                     label_smoothing=label_smoothing)
        else:
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _end_epoch(model: nn.Module, epoch: int, train_loss: float, val_ds: Any, preprocess: Preprocessor,
               start: float, desc: str | None) -> dict[str, Any]:
    record: dict[str, Any] = dict(epoch=epoch + 1, train_loss=train_loss, val_top1=None, val_loss=None)
    if val_ds is not None:
        metrics = evaluate(model, val_ds, preprocess=preprocess, desc=None if desc is None else "val")
        record.update(val_top1=metrics["top1"], val_loss=metrics["loss"])
    record["seconds"] = time.perf_counter() - start
    return record


def _summary(desc: str | None, epoch: int, epochs: int, record: dict[str, Any]) -> str:
    line = f"{desc or 'fit'} epoch {epoch + 1}/{epochs}: train loss {record['train_loss']:.4f}"
    if record["val_top1"] is not None:
        line += f", val top1 {record['val_top1']:.4f}, val loss {record['val_loss']:.4f}"
    return line + f" ({record['seconds']:.1f} s)"

