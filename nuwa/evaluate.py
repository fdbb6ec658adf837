"""`nuwa eval`: top-1 of a base or edge model on a split, with full and sliced classifiers."""
from __future__ import annotations

from pathlib import Path

import torch

from . import io
from .errors import NuwaError


def evaluate_dir(model_dir: str | Path, data: str, *, classes=None, subtask: str | None = None,
                 split: str = "test", batch_size: int = 256, limit: int | None = None) -> dict:
    """For an edge model: accuracy on its classes' samples. For a base model with `classes`:
    accuracy with the full classifier (`top1`) and with the classifier sliced to `classes`."""
    from .data import class_subset, open_split, resolve_classes
    from .train import predict_logits

    model = io.load(model_dir)
    cfg = model.config
    ds = open_split(data, split, img_size=cfg.img_size)
    names = cfg.class_names if cfg.classes is None else None
    if subtask is not None:
        from .subtasks import lookup

        classes = lookup(subtask, data)
    if cfg.classes is not None:  # an edge model knows its classes (indices into the base's)
        if classes is not None:
            base_names = list(ds.class_names)
            asked = resolve_classes(classes, base_names)
            if asked != list(cfg.classes):
                raise NuwaError(f"model {model_dir} was derived for classes {cfg.classes}, not {asked}")
        idx = list(cfg.classes)
    elif classes is not None:
        idx = resolve_classes(classes, names or list(ds.class_names))
    else:
        idx = None
    if idx is not None:
        if max(idx) >= len(ds.class_names):
            raise NuwaError(f"class index {max(idx)} is not in data {data!r} ({len(ds.class_names)} classes)")
        ds = class_subset(ds, idx)
    logits, labels = predict_logits(model, ds, batch_size=batch_size, limit=limit)
    n = int(labels.numel())
    if n == 0:
        raise NuwaError(f"no {split} samples for the requested classes in {data!r}")
    result = dict(n=n, split=split, data=data, model=str(model_dir))
    if cfg.classes is not None or idx is None:
        result["top1"] = (logits.argmax(-1) == labels).float().mean().item()
        result["loss"] = torch.nn.functional.cross_entropy(logits, labels).item()
    else:
        t = torch.tensor(idx)
        result["top1"] = (logits.argmax(-1) == t[labels]).float().mean().item()  # full classifier
        result["top1_sliced"] = (logits[:, t].argmax(-1) == labels).float().mean().item()
        result["loss"] = torch.nn.functional.cross_entropy(logits, t[labels]).item()
    if idx is not None:
        result["classes"] = idx
        result["class_names"] = list(ds.class_names)
    return result
