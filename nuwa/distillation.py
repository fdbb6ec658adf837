"""Distillation pieces of training: DeiT's soft-distillation loss, which teacher outputs match a
student's classes, and the per-image cache of a teacher's logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import NuwaError

# DeiT's soft-distillation defaults (--distillation-alpha 0.5 --distillation-tau 1.0).
DISTILL_ALPHA = 0.5
DISTILL_TAU = 1.0


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


def sliced_teacher_logits(teacher: nn.Module, x: torch.Tensor, cols: list[int] | None) -> torch.Tensor:
    with torch.no_grad():  # not inference_mode: KL keeps the teacher's logits for backward
        t_logits = teacher(x)
    return t_logits if cols is None else t_logits[:, cols]


class TeacherCache:
    """The teacher's logits (for the student's classes) per image of a training set, computed the
    first time the image is drawn: without augmentation an image's logits never change, so later
    epochs, and later runs on the same set, read them back."""

    def __init__(self, teacher: nn.Module, student: nn.Module, n: int) -> None:
        self.teacher, self.cols = teacher, teacher_columns(student, teacher)
        self.table: torch.Tensor | None = None
        self.known = torch.zeros(n, dtype=torch.bool)
        self.forwards = 0  # images the teacher has run on

    def logits(self, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits of the images `index` (data-set positions), whose preprocessed batch is `x`."""
        missing = ~self.known[index]
        if bool(missing.any()):
            mode = self.teacher.training
            self.teacher.eval()
            try:
                fresh = sliced_teacher_logits(self.teacher, x[missing.to(x.device)], self.cols).float()
            finally:
                self.teacher.train(mode)
            if self.table is None:
                self.table = torch.zeros(len(self.known), fresh.shape[1], dtype=torch.float32, device=fresh.device)
            self.table[index[missing].to(fresh.device)] = fresh
            self.known[index[missing]] = True
            self.forwards += int(missing.sum())
        assert self.table is not None
        return self.table[index.to(self.table.device)]
