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

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Parameters that timm/DeiT exclude from weight decay besides biases and norms (1-D tensors):
# decaying learned token embeddings towards zero only hurts.
NO_DECAY_NAMES = ("cls_token", "pos_embed", "dist_token")
# DeiT's soft-distillation defaults (--distillation-alpha 0.5 --distillation-tau 1.0).
DISTILL_ALPHA = 0.5
DISTILL_TAU = 1.0
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


# ---- optimiser pieces -------------------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups in the timm/DeiT convention: no decay on biases, norm weights (all 1-D
    tensors) and the class/position embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in NO_DECAY_NAMES:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]
    return [g for g in groups if g["params"]]


def cosine_lr(step: int, *, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate for optimiser step `step` (0-based): linear warm-up to `base_lr` over
    `warmup_steps`, then half a cosine down towards 0 at `total_steps`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


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


# ---- distillation ---------------------------------------------------------------------------------
def distillation_loss(logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor, *,
                      alpha: float = DISTILL_ALPHA, tau: float = DISTILL_TAU,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """DeiT's soft distillation: (1 - alpha) * CE(labels) + alpha * tau^2 * KL(teacher || student)
    at temperature tau (KL averaged over the batch)."""
    ce = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    kl = F.kl_div(F.log_softmax(logits / tau, dim=-1), F.log_softmax(teacher_logits / tau, dim=-1),
                  reduction="batchmean", log_target=True)
    return (1.0 - alpha) * ce + alpha * tau * tau * kl


def teacher_columns(student: nn.Module, teacher: nn.Module) -> list[int] | None:
    """Which teacher logits correspond to the student's outputs (None: all, in order).

    Both configs' `classes` map outputs to base-model classes (None: identity), so a base
    model can teach an edge model derived from it for a subset of its classes."""
    s_cfg, t_cfg = student.config, teacher.config  # type: ignore[attr-defined]
    s_classes = list(range(s_cfg.num_classes)) if s_cfg.classes is None else list(s_cfg.classes)
    t_classes = list(range(t_cfg.num_classes)) if t_cfg.classes is None else list(t_cfg.classes)
    position = {c: j for j, c in enumerate(t_classes)}
    missing = [c for c in s_classes if c not in position]
    if missing:
        raise NuwaError(f"teacher has no output for the student's class(es) {missing}")
    cols = [position[c] for c in s_classes]
    return None if cols == list(range(t_cfg.num_classes)) else cols


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
    limit: int | None = None,
    desc: str | None = "train",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train `model` in place with AdamW and a per-step cosine schedule (linear warm-up).

    Loss: cross-entropy with `label_smoothing`; with a `teacher` (and no `loss_fn`), DeiT
    soft distillation against the teacher's logits for the student's classes; `loss_fn(logits,
    targets, x)` (x: the preprocessed batch) replaces either, and then a teacher is only held
    in eval mode. `limit` caps the samples per epoch (a fresh random subset each epoch).
    `log` receives one summary line per epoch (and one when an earlier epoch's weights are kept).
    The model is left in eval mode.

    With `val_ds`, training never makes the model worse on it: the starting weights are evaluated
    too (epoch 0), and the model ends with the weights of the epoch with the lowest validation
    loss (loss, not top-1: on a small validation set top-1 moves in coarse steps and ties), the
    starting ones if no epoch beat them. Without `val_ds` it ends with the last epoch's.

    Returns {"epochs": [{"epoch", "train_loss", "val_top1", "val_loss", "seconds"}],
    "steps": optimiser steps, "samples_seen": training samples, "guard": "val_loss" or None
    (no validation set), "val_at_start": {"top1", "loss"} of the starting weights or None,
    "best_epoch": the epoch whose weights the model ends with (0: the starting weights)}.
    """
    _check_fit_args(epochs, lr, weight_decay, batch_size, warmup_epochs, label_smoothing, limit, seed)
    history: dict[str, Any] = {"epochs": [], "steps": 0, "samples_seen": 0, "guard": None, "val_at_start": None,
                               "best_epoch": epochs}
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
    if teacher is not None and loss_fn is None:
        cols = teacher_columns(model, teacher)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    schedule = dict(total_steps=epochs * steps_per_epoch, warmup_steps=round(warmup_epochs * steps_per_epoch),
                    base_lr=lr)
    # Separate streams, so turning augmentation on or off does not change the data order.
    order_gen = torch.Generator().manual_seed(seed)
    augment_gen = torch.Generator().manual_seed(seed + 0x9E3779B9)
    teacher_mode = teacher.training if teacher is not None else False
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    step_kw = dict(loss_fn=loss_fn, teacher=teacher, cols=cols, label_smoothing=label_smoothing)
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
                        schedule=schedule, step_kw=step_kw, where=f"{desc or 'fit'} epoch {epoch + 1}")
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
        finally:
            if teacher is not None:
                teacher.train(teacher_mode)
    if best is not None:
        history["best_epoch"] = best[1]
        if best[1] != epochs:
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
                 preprocess: Preprocessor, schedule: dict[str, Any], step_kw: dict[str, Any], where: str) -> float:
    """One pass over (a `limit`ed random subset of) `ds`; counts steps and samples into
    `history` and returns the mean training loss per sample."""
    device = model_device(model)
    num_classes = int(model.config.num_classes)  # type: ignore[attr-defined]
    model.train()
    total_loss, seen = 0.0, 0
    for x, y in _train_batches(ds, batch_size, seed, limit):
        check_labels(y, num_classes)
        if augment_gen is not None:
            x = augment_batch(x, augment_gen)
        x, y = preprocess(x.to(device)), y.to(device)
        loss = _step(model, optimizer, x, y, schedule, history["steps"], **step_kw)
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
          cols: list[int] | None, label_smoothing: float) -> float:
    """One optimiser step at the scheduled learning rate; returns the batch loss."""
    lr = cosine_lr(step, **schedule)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(x.device):
        logits = model(x)
        if loss_fn is not None:
            loss = loss_fn(logits, y, x)
        elif teacher is not None:
            with torch.no_grad():  # not inference_mode: KL keeps the teacher's logits for backward
                t_logits = teacher(x)
            if cols is not None:
                t_logits = t_logits[:, cols]
            loss = distillation_loss(logits.float(), y, t_logits.float(), label_smoothing=label_smoothing)
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

