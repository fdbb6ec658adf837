"""Semantic segmentation: confusion-matrix metrics (IoU, mean IoU with bootstrap intervals over
images) and a small train / evaluate loop, generic over any `nn.Module` mapping float images
(B,C,H,W) to logits (B,K,h,w).

Logits at a lower resolution than the masks (a decoder at stride 2, 4, ...) are resized
bilinearly to the mask size, for the loss as for the metric. A data set yields (float image
(C,H,W), int64 mask (H,W)) pairs, as `nuwa.data.scenes.SceneDataset` does.

Confusion matrices are indexed [target, prediction].
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.scenes import scene_batches, subset_logits, subset_masks
from .device import autocast, to_device
from .errors import NuwaError
from .loop_utils import Preprocessor, check_number, check_positive_int, eval_mode, model_device

FeaturePairs = Callable[[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]


# ---- metrics ----------------------------------------------------------------------------------
def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixel counts (K,K) as int64: entry [t, p] counts pixels of class t predicted as p."""
    if pred.shape != target.shape:
        raise NuwaError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    p, t = pred.reshape(-1).long(), target.reshape(-1).long()
    _check_range(p, num_classes, "prediction")
    _check_range(t, num_classes, "target")
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def iou_per_class(conf: Any) -> list[float | None]:
    """IoU = TP / (TP + FP + FN) of each class; None for a class in neither targets nor predictions."""
    c = _as_numpy(conf)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise NuwaError(f"a confusion matrix must be square (K,K), got shape {c.shape}")
    tp = np.diag(c).astype(np.float64)
    union = c.sum(0) + c.sum(1) - tp
    return [float(tp[k] / union[k]) if union[k] > 0 else None for k in range(len(tp))]


def mean_iou(conf: Any) -> float:
    """Mean IoU over the classes present (in targets or predictions); NaN when there are none."""
    present = [v for v in iou_per_class(conf) if v is not None]
    return float(np.mean(present)) if present else math.nan


def _batched_miou(confs: np.ndarray) -> np.ndarray:
    """mean_iou of each matrix of a stack (S,K,K), vectorised for the bootstrap."""
    tp = np.diagonal(confs, axis1=1, axis2=2).astype(np.float64)
    union = confs.sum(1) + confs.sum(2) - tp
    present = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
    count = present.sum(1)
    return np.divide(iou.sum(1), count, out=np.full(len(iou), np.nan), where=count > 0)


def _bootstrap(stacks: list[np.ndarray], samples: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile interval of mIoU(stacks[0]) [- mIoU(stacks[1])] over resamples of the images
    (as draw counts per image, so no resample is ever materialised)."""
    check_positive_int("samples", samples)
    if not 0 < level < 1:
        raise NuwaError(f"level={level!r} must be in (0, 1)")
    n, k = stacks[0].shape[0], [c.shape[1] for c in stacks]
    flat = [c.reshape(n, -1).astype(np.float64) for c in stacks]
    rng = np.random.default_rng(seed)
    chunk, stats = max(1, min(samples, 2_000_000 // n)), []
    for start in range(0, samples, chunk):
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, samples - start))
        values = [_batched_miou((w @ f).reshape(-1, kk, kk)) for f, kk in zip(flat, k)]
        stats.append(values[0] - values[1] if len(values) == 2 else values[0])
    s = np.concatenate(stats)
    s = s[~np.isnan(s)]
    if not len(s):
        return (math.nan, math.nan)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(s, [tail, 100 - tail])
    return float(low), float(high)


def _check_confs(confs: Any, name: str) -> np.ndarray:
    c = _as_numpy(confs)
    if c.ndim != 3 or c.shape[1] != c.shape[2] or len(c) == 0:
        raise NuwaError(f"{name} must be per-image confusion matrices (N,K,K) with N >= 1, got shape {c.shape}")
    return c


def miou_interval(confs: Any, *, samples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean IoU of the pooled confusion, resampling images.

    Images, not pixels, are the independent units: the pixels of one scene are strongly correlated."""
    return _bootstrap([_check_confs(confs, "confs")], samples, seed, level)


def miou_diff_interval(confs_a: Any, confs_b: Any, *, samples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Paired percentile-bootstrap interval of mIoU(a) - mIoU(b) for two models on the same images
    (each resample draws the same images for both, so the shared difficulty cancels)."""
    a, b = _check_confs(confs_a, "confs_a"), _check_confs(confs_b, "confs_b")
    if len(a) != len(b):
        raise NuwaError(f"paired comparison needs the same images: confs_a has {len(a)}, confs_b {len(b)}")
    return _bootstrap([a, b], samples, seed, level)


def _task_logits(logits: torch.Tensor, classes: Sequence[int] | None) -> torch.Tensor:
    """A model's logits for the task: as they are, or for a class subset. A model with 1+k outputs
    is taken to be a sub-task model already; with more, the full model (`subset_logits`)."""
    if classes is None or logits.shape[1] == len(classes) + 1:
        return logits
    return subset_logits(logits, classes)


# ---- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def per_image_confusions(model: nn.Module, dataset: Any, *, batch_size: int = 64,
                         classes: Sequence[int] | None = None,
                         preprocess: Preprocessor | None = None) -> torch.Tensor:
    """One confusion matrix per image, (N,K,K) int64 on the CPU, for bootstrap intervals.

    classes: evaluate the sub-task of these Fashion-MNIST classes (masks relabelled by
    `subset_masks`); the model has 1+k outputs, or is a full model (see `subset_logits`)."""
    check_positive_int("batch_size", batch_size)
    device = model_device(model)
    out = []
    with eval_mode(model):
        for x, m in scene_batches(dataset, batch_size=batch_size):
            m = subset_masks(m, classes) if classes is not None else m
            logits = _task_logits(_forward(model, x, device, preprocess, m.shape[-2:]), classes)
            out.append(_image_confusions(logits.argmax(1), m.to(logits.device), logits.shape[1]).cpu())
    if not out:
        raise NuwaError("per_image_confusions: the data set is empty")
    return torch.cat(out)


def evaluate_segmenter(model: nn.Module, dataset: Any, *, batch_size: int = 64,
                       classes: Sequence[int] | None = None, preprocess: Preprocessor | None = None,
                       samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """mIoU, per-class IoU, pixel accuracy and a 95% bootstrap interval of the mIoU over images."""
    confs = per_image_confusions(model, dataset, batch_size=batch_size, classes=classes, preprocess=preprocess)
    pooled = confs.sum(0)
    names = _class_names(dataset, classes, pooled.shape[0])
    total = int(pooled.sum())
    return {"miou": mean_iou(pooled), "per_class_iou": dict(zip(names, iou_per_class(pooled))),
            "pixel_acc": float(pooled.diag().sum()) / total if total else math.nan,
            "miou_ci": miou_interval(confs, samples=samples, seed=seed), "images": int(len(confs))}


# ---- training ---------------------------------------------------------------------------------
def train_segmenter(model: nn.Module, train_ds: Any, *, epochs: float, batch_size: int, lr: float, seed: int,
                    weight_decay: float = 0.05, teacher: nn.Module | None = None, kd_weight: float = 0.0,
                    kd_temperature: float = 1.0, teacher_classes: Sequence[int] | None = None,
                    feature_pairs: FeaturePairs | None = None, feature_weight: float = 1.0,
                    preprocess: Preprocessor | None = None,
                    log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Train `model` in place: AdamW, per-step cosine schedule, per-pixel cross-entropy.

    teacher: adds kd_weight * T^2 * KL(teacher || student), per pixel at temperature T, averaged
    over pixels; the teacher's logits are resized to the student's. teacher_classes: the teacher
    is a full model and the student a sub-task model for these classes (`subset_logits`).
    feature_pairs: feature mimicking, feature_weight * MSE summed over the pairs it returns. It
    is called with each preprocessed batch after the student's and the teacher's forward passes
    on it, so it may run its own passes or hand back what forward hooks caught (`hook_pairs`);
    teacher features are detached, a teacher feature of another spatial size is resized to the
    student's, and any adapter it applies must be a submodule of `model` to be trained.
    epochs may be fractional (a number of optimiser steps). Returns per-epoch mean losses, steps
    and seconds."""
    check_positive_int("batch_size", batch_size)
    check_number("epochs", epochs, low=0, strict=True)
    check_number("lr", lr, low=0, strict=True)
    check_number("kd_weight", kd_weight, low=0, strict=False)
    check_number("kd_temperature", kd_temperature, low=0, strict=True)
    check_number("feature_weight", feature_weight, low=0, strict=False)
    if len(train_ds) == 0:
        raise NuwaError("train_segmenter: the training set is empty")
    from .train import cosine_lr, param_groups

    device = model_device(model)
    steps_per_epoch = math.ceil(len(train_ds) / batch_size)
    total = max(1, math.ceil(epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    order_gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))  # dropout and the like
    distil = teacher is not None and kd_weight > 0
    history: dict[str, list[float]] = {"loss": [], "ce": [], "kd": [], "feat": []}
    start, step, epoch = time.perf_counter(), 0, 0
    model.train()
    if teacher is not None:
        teacher.eval()
    while step < total:
        epoch += 1
        sums = dict.fromkeys(history, 0.0)
        n_batches = 0
        order = torch.randperm(len(train_ds), generator=order_gen)
        for x, m in scene_batches(train_ds, batch_size=batch_size, order=order):
            if step >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, total_steps=total, warmup_steps=0, base_lr=lr)
            x = to_device(x, device)
            x = preprocess(x) if preprocess is not None else x
            m = to_device(m, device)
            with autocast(device):
                logits = model(x).float()
            ce = F.cross_entropy(_resize(logits, m.shape[-2:]), m)
            loss, parts = ce, {"ce": ce.item()}
            if teacher is not None:
                with torch.no_grad(), autocast(device):
                    t_logits = teacher(x).float()
                if distil:
                    kd = pixel_kd(logits, t_logits, temperature=kd_temperature, teacher_classes=teacher_classes)
                    loss = loss + kd_weight * kd
                    parts["kd"] = kd.item()
            if feature_pairs is not None:
                feat = _feature_loss(feature_pairs(x))
                loss = loss + feature_weight * feat
                parts["feat"] = feat.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            n_batches += 1
            sums["loss"] += loss.item()
            for k, v in parts.items():
                sums[k] += v
        for k in history:
            history[k].append(sums[k] / max(1, n_batches))
        if log is not None:
            extra = "".join(f" {k} {history[k][-1]:.4f}" for k in ("ce", "kd", "feat") if k == "ce" or sums[k])
            log(f"epoch {epoch}/{math.ceil(epochs)} step {step}/{total} loss {history['loss'][-1]:.4f}"
                f" ({extra.strip()}) {time.perf_counter() - start:.1f}s")
    return {"losses": history["loss"], "ce": history["ce"], "kd": history["kd"], "feat": history["feat"],
            "steps": step, "epochs": epoch, "seconds": time.perf_counter() - start}


def pixel_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0,
             teacher_classes: Sequence[int] | None = None) -> torch.Tensor:
    """T^2 * KL(teacher || student) at temperature T, summed over classes and averaged over pixels;
    the teacher's logits are resized bilinearly to the student's output size."""
    t = teacher_logits.detach() / temperature
    if teacher_classes is not None:
        t = subset_logits(t, teacher_classes)  # logsumexp merging commutes with the 1/T scaling
    if t.shape[1] != student_logits.shape[1]:
        raise NuwaError(f"teacher has {t.shape[1]} outputs but the student {student_logits.shape[1]} "
                        "(a full teacher for a sub-task student needs teacher_classes)")
    t = _resize(t, student_logits.shape[-2:])
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.log_softmax(t, dim=1),
                  reduction="none", log_target=True).sum(1)
    return temperature * temperature * kl.mean()


def hook_pairs(pairs: Sequence[tuple[nn.Module, nn.Module]],
               adapters: Sequence[nn.Module | None] | None = None) -> FeaturePairs:
    """A `feature_pairs` for `train_segmenter` that costs no extra forward pass: forward hooks
    keep the outputs of each (student module, teacher module) pair during the regular passes,
    and the callable hands them back (the student's through its adapter, if any)."""
    caught: dict[int, torch.Tensor] = {}
    adapters = list(adapters) if adapters is not None else [None] * len(pairs)
    if len(adapters) != len(pairs):
        raise NuwaError(f"{len(adapters)} adapters for {len(pairs)} feature pairs")

    def keep(key: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            caught[key] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    for i, (s, t) in enumerate(pairs):
        s.register_forward_hook(keep(2 * i))
        t.register_forward_hook(keep(2 * i + 1))

    def collect(_x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for i, adapter in enumerate(adapters):
            s = caught[2 * i]
            out.append((adapter(s) if adapter is not None else s, caught[2 * i + 1]))
        return out

    return collect


# ---- helpers ----------------------------------------------------------------------------------
def _feature_loss(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    if not pairs:
        raise NuwaError("feature_pairs returned no pairs")
    total = 0.0
    for s, t in pairs:
        t = t.detach().float()
        if s.ndim == 4 and t.ndim == 4 and s.shape[-2:] != t.shape[-2:]:
            t = _resize(t, s.shape[-2:])
        if s.shape != t.shape:
            raise NuwaError(f"feature pair shapes differ: student {tuple(s.shape)}, teacher {tuple(t.shape)} "
                            "(project the student's with an adapter)")
        total = total + F.mse_loss(s.float(), t)
    return total  # type: ignore[return-value]


def _resize(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def _forward(model: nn.Module, x: torch.Tensor, device: torch.device, preprocess: Preprocessor | None,
             size: Sequence[int]) -> torch.Tensor:
    x = to_device(x, device)
    x = preprocess(x) if preprocess is not None else x
    with autocast(device):
        logits = model(x).float()
    if logits.ndim != 4:
        raise NuwaError(f"a segmenter must return logits (B,K,h,w), got shape {tuple(logits.shape)}")
    return _resize(logits, size)


def _image_confusions(pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """Confusion matrices (B,K,K) of a batch in one bincount."""
    b = pred.shape[0]
    _check_range(target, k, "target")
    offset = torch.arange(b, device=pred.device).view(b, 1, 1) * (k * k)
    idx = offset + target.long() * k + pred.long()
    return torch.bincount(idx.reshape(-1), minlength=b * k * k).reshape(b, k, k)


def _class_names(ds: Any, classes: Sequence[int] | None, k: int) -> list[str]:
    names = list(getattr(ds, "class_names", None) or [f"class{i}" for i in range(k)])
    if classes is not None and hasattr(ds, "class_names"):
        names = [names[0]] + [names[int(c) + 1] for c in classes]
    if len(names) != k:
        raise NuwaError(f"the model has {k} outputs but the data set names {len(names)} classes")
    return names


def _check_range(t: torch.Tensor, k: int, what: str) -> None:
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
        bad = int(t.max()) if int(t.max()) >= k else int(t.min())
        raise NuwaError(f"{what} label {bad} is not a class (0..{k - 1})")


def _as_numpy(a: Any) -> np.ndarray:
    return a.cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
