"""Training and evaluation loops: `fit`, `evaluate`, logits and class-token features, layer heads.

Everything here is deterministic for a seed on CPU: data order and augmentation draw from
local generators seeded by `seed`, and the global RNG is forked (not clobbered) inside
`fit`, so calling it does not change the caller's random state.
"""
from __future__ import annotations

import math
import random
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import NuwaError

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Preprocessor = Callable[[torch.Tensor], torch.Tensor]

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


# ---- small helpers --------------------------------------------------------------------------
def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _preprocess_for(model: nn.Module, preprocess: Preprocessor | None) -> Preprocessor:
    if preprocess is not None:
        return preprocess
    from .data import Preprocess

    return Preprocess.for_config(model.config)  # type: ignore[attr-defined]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then back to whatever mode the caller had (so `fit` can
    evaluate between epochs without losing train mode)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise NuwaError(f"{name}={value!r} must be an integer >= {minimum}")


def _check_number(name: str, value: Any, *, low: float, strict: bool) -> None:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= low if strict else value < low):
        raise NuwaError(f"{name}={value!r} must be a finite number {'>' if strict else '>='} {low}")


def _n_samples(ds: Any, limit: int | None) -> int:
    return len(ds) if limit is None else min(int(limit), len(ds))


def _progress(total: int, desc: str | None) -> Any:
    """A tqdm bar on stderr; desc=None gives a silent one (as `batches(progress=None)` does)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True, disable=desc is None)


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
def _check_fit_args(epochs: Any, lr: Any, weight_decay: Any, batch_size: Any, warmup_epochs: Any,
                    label_smoothing: Any, limit: Any, seed: Any) -> None:
    _check_positive_int("epochs", epochs, minimum=0)
    _check_number("lr", lr, low=0.0, strict=True)
    _check_number("weight_decay", weight_decay, low=0.0, strict=False)
    _check_positive_int("batch_size", batch_size)
    _check_number("warmup_epochs", warmup_epochs, low=0.0, strict=False)
    _check_number("label_smoothing", label_smoothing, low=0.0, strict=False)
    if label_smoothing >= 1.0:
        raise NuwaError(f"label_smoothing={label_smoothing!r} must be < 1")
    if limit is not None:
        _check_positive_int("limit", limit, minimum=0)
    _check_positive_int("seed", seed, minimum=0)


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
    `log` receives one summary line per epoch. The model is left in eval mode.

    Returns {"epochs": [{"epoch", "train_loss", "val_top1", "val_loss", "seconds"}],
    "steps": optimiser steps, "samples_seen": training samples}.
    """
    _check_fit_args(epochs, lr, weight_decay, batch_size, warmup_epochs, label_smoothing, limit, seed)
    history: dict[str, Any] = {"epochs": [], "steps": 0, "samples_seen": 0}
    if epochs == 0:
        model.eval()
        return history
    n = _n_samples(train_ds, limit)
    if n == 0:
        raise NuwaError(f"{desc or 'fit'}: no training samples (data set has {len(train_ds)}, limit={limit})")
    steps_per_epoch = math.ceil(n / batch_size)
    preprocess = _preprocess_for(model, preprocess)
    device = _device(model)
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
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)  # any stochastic layer (dropout, drop-path) is seeded too
        if teacher is not None:
            teacher.eval()
        try:
            for epoch in range(epochs):
                start = time.perf_counter()
                epoch_seed = int(torch.randint(0, 2**62, (1,), generator=order_gen))
                bar = _progress(n, None if desc is None else f"{desc} {epoch + 1}/{epochs}")
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
                if log is not None:
                    log(_summary(desc, epoch, epochs, record))
        finally:
            if teacher is not None:
                teacher.train(teacher_mode)
    model.eval()
    return history


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, ds: Any, history: dict[str, Any], *,
                 bar: Any, batch_size: int, seed: int, limit: int | None, augment_gen: torch.Generator | None,
                 preprocess: Preprocessor, schedule: dict[str, Any], step_kw: dict[str, Any], where: str) -> float:
    """One pass over (a `limit`ed random subset of) `ds`; counts steps and samples into
    `history` and returns the mean training loss per sample."""
    device = _device(model)
    num_classes = int(model.config.num_classes)  # type: ignore[attr-defined]
    model.train()
    total_loss, seen = 0.0, 0
    for x, y in _train_batches(ds, batch_size, seed, limit):
        _check_labels(y, num_classes)
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
    logits = model(x)
    if loss_fn is not None:
        loss = loss_fn(logits, y, x)
    elif teacher is not None:
        with torch.no_grad():  # not inference_mode: KL keeps the teacher's logits for backward
            t_logits = teacher(x)
        if cols is not None:
            t_logits = t_logits[:, cols]
        loss = distillation_loss(logits, y, t_logits, label_smoothing=label_smoothing)
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


# ---- evaluation -----------------------------------------------------------------------------------
def _class_positions(classes: Sequence[int], num_classes: int) -> torch.Tensor:
    """Lookup table: model class -> position in `classes`, -1 for classes left out."""
    classes = [int(c) for c in classes]
    if not classes:
        raise NuwaError("classes is empty")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise NuwaError(f"classes {bad} are not outputs of the model (0..{num_classes - 1})")
    if len(set(classes)) != len(classes):
        raise NuwaError(f"classes={classes} holds a duplicate")
    table = torch.full((num_classes,), -1, dtype=torch.int64)
    table[torch.tensor(classes)] = torch.arange(len(classes))
    return table


def _check_labels(y: torch.Tensor, num_classes: int) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.max()) if int(y.max()) >= num_classes else int(y.min())
        raise NuwaError(f"label {bad} is not a class of the model ({num_classes} outputs)")


def evaluate(
    model: nn.Module,
    ds: Any,
    *,
    preprocess: Preprocessor | None = None,
    batch_size: int = 256,
    classes: list[int] | None = None,
    limit: int | None = None,
    desc: str | None = "eval",
) -> dict[str, Any]:
    """Top-1 accuracy and mean cross-entropy of `model` on `ds`.

    With `classes` (indices of model outputs), only those logit columns compete: this is the
    accuracy of the classifier sliced to `classes`. Labels stay indices into the model's
    classes and are mapped to positions in `classes`; a label outside `classes` is an error.
    """
    from .data import batches

    _check_positive_int("batch_size", batch_size)
    preprocess = _preprocess_for(model, preprocess)
    device = _device(model)
    num_classes = int(model.config.num_classes)  # type: ignore[attr-defined]
    table = _class_positions(classes, num_classes) if classes is not None else None
    cols = torch.tensor([int(c) for c in classes], device=device) if classes is not None else None
    correct, loss_sum, n = 0, 0.0, 0
    with _eval_mode(model), torch.inference_mode():
        for x, y in batches(ds, batch_size=batch_size, limit=limit, progress=desc):
            _check_labels(y, num_classes)
            if table is not None:
                pos = table[y]
                if bool((pos < 0).any()):
                    raise NuwaError(f"label {int(y[pos < 0][0])} is not one of classes {list(classes)}")
                y = pos
            logits = model(preprocess(x.to(device))).float()
            if cols is not None:
                logits = logits[:, cols]
            y = y.to(device)
            correct += int((logits.argmax(-1) == y).sum())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
    if n == 0:
        raise NuwaError(f"{desc or 'evaluate'}: no samples to evaluate (data set has {len(ds)}, limit={limit})")
    return {"top1": correct / n, "loss": loss_sum / n, "n": n}


@torch.no_grad()  # not inference_mode: callers may feed the outputs into autograd
def predict_logits(model: nn.Module, ds: Any, *, preprocess: Preprocessor | None = None, batch_size: int = 256,
                   limit: int | None = None, desc: str | None = "predict") -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (N, num_classes) as float32 on the CPU, with the labels (N,)."""
    from .data import batches

    _check_positive_int("batch_size", batch_size)
    preprocess = _preprocess_for(model, preprocess)
    device = _device(model)
    logits, labels = [], []
    with _eval_mode(model):
        for x, y in batches(ds, batch_size=batch_size, limit=limit, progress=desc):
            logits.append(model(preprocess(x.to(device))).float().cpu())
            labels.append(y)
    num_classes = int(model.config.num_classes)  # type: ignore[attr-defined]
    if not logits:
        return torch.zeros(0, num_classes), torch.zeros(0, dtype=torch.int64)
    return torch.cat(logits), torch.cat(labels)


@torch.no_grad()  # not inference_mode: the features are training inputs for the layer heads
def collect_cls_tokens(model: nn.Module, ds: Any, *, preprocess: Preprocessor | None = None, batch_size: int = 256,
                       limit: int | None = None, desc: str | None = "features") -> tuple[list[torch.Tensor], torch.Tensor]:
    """The class token after every block, one float32 CPU tensor (N, d) per layer, and labels (N,)."""
    from .data import batches

    _check_positive_int("batch_size", batch_size)
    preprocess = _preprocess_for(model, preprocess)
    device = _device(model)
    depth = len(model.blocks)  # type: ignore[attr-defined]
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(depth)]
    labels = []
    with _eval_mode(model):
        for x, y in batches(ds, batch_size=batch_size, limit=limit, progress=desc):
            x = preprocess(x.to(device))
            model.check_input(x)  # type: ignore[attr-defined]
            for l, token in enumerate(model.forward_cls_tokens(x)):  # type: ignore[attr-defined]
                per_layer[l].append(token.float().cpu())
            labels.append(y)
    d = int(model.config.embed_dim)  # type: ignore[attr-defined]
    if not labels:
        return [torch.zeros(0, d) for _ in range(depth)], torch.zeros(0, dtype=torch.int64)
    return [torch.cat(chunks) for chunks in per_layer], torch.cat(labels)


# ---- per-layer linear heads ------------------------------------------------------------------------
def _check_features(features: list[torch.Tensor], labels: torch.Tensor, num_classes: int) -> None:
    if not features:
        raise NuwaError("train_linear_heads: no feature layers given")
    shape = tuple(features[0].shape)
    if len(shape) != 2 or shape[0] == 0:
        raise NuwaError(f"train_linear_heads: features must be non-empty (N, d) tensors, got {shape}")
    for l, f in enumerate(features):
        if tuple(f.shape) != shape:
            raise NuwaError(f"train_linear_heads: layer {l} features have shape {tuple(f.shape)}, layer 0 {shape}")
    if tuple(labels.shape) != (shape[0],):
        raise NuwaError(f"train_linear_heads: {tuple(labels.shape)} labels for {shape[0]} feature rows")
    _check_positive_int("num_classes", num_classes)
    _check_labels(labels, num_classes)


def train_linear_heads(
    features: list[torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 30,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 512,
    seed: int = 0,
    norm_eps: float = 1e-6,
    desc: str | None = "layer heads",
) -> list[dict[str, torch.Tensor]]:
    """One LayerNorm(d) + Linear(d, C) classifier per layer on cached features.

    The backbone is frozen, so this is cheap: all layers train together as one batched
    (stacked) problem, each with its own loss term (summed, so the layers do not interact).
    AdamW (decay on the head weights only) with a cosine schedule; zero-initialised heads and
    a seeded order make the result deterministic. Returns per layer {"norm.weight",
    "norm.bias", "head.weight", "head.bias"}.
    """
    _check_features(features, labels, num_classes)
    _check_positive_int("epochs", epochs, minimum=0)
    _check_number("lr", lr, low=0.0, strict=True)
    _check_number("weight_decay", weight_decay, low=0.0, strict=False)
    _check_positive_int("batch_size", batch_size)
    L, (N, d) = len(features), features[0].shape
    norm_w = nn.Parameter(torch.ones(L, 1, d))
    norm_b = nn.Parameter(torch.zeros(L, 1, d))
    head_w = nn.Parameter(torch.zeros(L, d, num_classes))  # stored transposed for bmm
    head_b = nn.Parameter(torch.zeros(L, 1, num_classes))
    optimizer = torch.optim.AdamW([dict(params=[head_w], weight_decay=weight_decay),
                                   dict(params=[norm_w, norm_b, head_b], weight_decay=0.0)], lr=lr)
    steps_per_epoch = math.ceil(N / batch_size)
    schedule = dict(total_steps=epochs * steps_per_epoch, warmup_steps=0, base_lr=lr)
    gen = torch.Generator().manual_seed(seed)
    labels = labels.to(torch.int64)
    step = 0
    bar = _progress(epochs * N, desc)
    try:
        for _ in range(epochs):
            order = torch.randperm(N, generator=gen)
            for start in range(0, N, batch_size):
                idx = order[start:start + batch_size]
                x = torch.stack([f[idx].float() for f in features])  # (L, B, d), batch by batch: no full copy
                y = labels[idx]
                for group in optimizer.param_groups:
                    group["lr"] = cosine_lr(step, **schedule)
                z = F.layer_norm(x, (d,), eps=norm_eps) * norm_w + norm_b
                logits = torch.baddbmm(head_b, z, head_w)  # (L, B, C)
                loss = F.cross_entropy(logits.reshape(-1, num_classes), y.repeat(L), reduction="sum") / len(y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                bar.update(len(y))
                bar.set_postfix(loss=f"{float(loss.detach()) / L:.4f}", refresh=False)
    finally:
        bar.close()
    return [
        {"norm.weight": norm_w[l, 0].detach().clone(), "norm.bias": norm_b[l, 0].detach().clone(),
         "head.weight": head_w[l].detach().T.contiguous(), "head.bias": head_b[l, 0].detach().clone()}
        for l in range(L)
    ]
