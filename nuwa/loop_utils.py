"""What the training and evaluation loops share: argument and label checks, the model's device
and preprocessing, eval mode for a while, and the progress bar."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from .errors import NuwaError

Preprocessor = Callable[[torch.Tensor], torch.Tensor]


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def preprocess_for(model: nn.Module, preprocess: Preprocessor | None) -> Preprocessor:
    if preprocess is not None:
        return preprocess
    from .data import Preprocess

    return Preprocess.for_config(model.config)  # type: ignore[attr-defined]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then back to whatever mode the caller had (so `fit` can
    evaluate between epochs without losing train mode)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise NuwaError(f"{name}={value!r} must be an integer >= {minimum}")


def check_number(name: str, value: Any, *, low: float, strict: bool, high: float | None = None) -> None:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= low if strict else value < low) or (high is not None and value > high):
        where = f"in [{low}, {high}]" if high is not None else f"{'>' if strict else '>='} {low}"
        raise NuwaError(f"{name}={value!r} must be a finite number {where}")


def check_labels(y: torch.Tensor, num_classes: int) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.max()) if int(y.max()) >= num_classes else int(y.min())
        raise NuwaError(f"label {bad} is not a class of the model ({num_classes} outputs)")


def progress(total: int, desc: str | None) -> Any:
    """A progress bar of images on stderr (nuwa.progress.bar); desc=None gives a silent one (as
    `batches(progress=None)` does)."""
    from .progress import bar

    return bar(total=total, desc=desc, unit="img")
