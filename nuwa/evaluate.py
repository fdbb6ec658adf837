"""Evaluation: top-1 and loss (`evaluate`), logits (`predict_logits`) and class-token features
(`collect_cls_tokens`) of a model on a data set, and `nuwa eval` (`evaluate_dir`): top-1 of a base
or edge model on a split, with full and sliced classifiers."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .correctness import pack_correct
from .errors import NuwaError
from .device import autocast
from .loop_utils import Preprocessor, check_labels, check_positive_int, eval_mode, model_device, preprocess_for


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


def evaluate(
    model: nn.Module,
    ds: Any,
    *,
    preprocess: Preprocessor | None = None,
    batch_size: int = 256,
    classes: list[int] | None = None,
    limit: int | None = None,
    desc: str | None = "eval",
    per_image: bool = False,
) -> dict[str, Any]:
    """Top-1 accuracy and mean cross-entropy of `model` on `ds`; with `per_image`, also "correct":
    each sample's 0/1 correctness in `ds`'s order (`nuwa.correctness.pack_correct`).

    With `classes` (indices of model outputs), only those logit columns compete: this is the
    accuracy of the classifier sliced to `classes`. Labels stay indices into the model's
    classes and are mapped to positions in `classes`; a label outside `classes` is an error.
    """
    from .data import batches

    check_positive_int("batch_size", batch_size)
    preprocess = preprocess_for(model, preprocess)
    device = model_device(model)
    num_classes = int(model.config.num_classes)  # type: ignore[attr-defined]
    table = _class_positions(classes, num_classes) if classes is not None else None
    cols = torch.tensor([int(c) for c in classes], device=device) if classes is not None else None
    correct, loss_sum, n, hits = 0, 0.0, 0, []
    with eval_mode(model), torch.inference_mode():
        for x, y in batches(ds, batch_size=batch_size, limit=limit, progress=desc):
            check_labels(y, num_classes)
            if table is not None:
                pos = table[y]
                if bool((pos < 0).any()):
                    raise NuwaError(f"label {int(y[pos < 0][0])} is not one of classes {list(classes)}")
                y = pos
            with autocast(device):
                logits = model(preprocess(x.to(device))).float()
            if cols is not None:
                logits = logits[:, cols]
            y = y.to(device)
            hit = logits.argmax(-1) == y
            correct += int(hit.sum())
            if per_image:
                hits.append(hit.cpu())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
    if n == 0:
        raise NuwaError(f"{desc or 'evaluate'}: no samples to evaluate (data set has {len(ds)}, limit={limit})")
    out = {"top1": correct / n, "loss": loss_sum / n, "n": n}
    if per_image:
        out["correct"] = pack_correct(torch.cat(hits).numpy())
    return out


@torch.no_grad()  # not inference_mode: callers may feed the outputs into autograd
def predict_logits(model: nn.Module, ds: Any, *, preprocess: Preprocessor | None = None, batch_size: int = 256,
                   limit: int | None = None, desc: str | None = "predict") -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (N, num_classes) as float32 on the CPU, with the labels (N,)."""
    from .data import batches

    check_positive_int("batch_size", batch_size)
    preprocess = preprocess_for(model, preprocess)
    device = model_device(model)
    logits, labels = [], []
    with eval_mode(model):
        for x, y in batches(ds, batch_size=batch_size, limit=limit, progress=desc):
            with autocast(device):
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

    check_positive_int("batch_size", batch_size)
    preprocess = preprocess_for(model, preprocess)
    device = model_device(model)
    depth = len(model.blocks)  # type: ignore[attr-defined]
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(depth)]
    labels = []
    with eval_mode(model):
        for x, y in batches(ds, batch_size=batch_size, limit=limit, progress=desc):
            x = preprocess(x.to(device))
            model.check_input(x)  # type: ignore[attr-defined]
            with autocast(device):
                tokens = model.forward_cls_tokens(x)  # type: ignore[attr-defined]
            for l, token in enumerate(tokens):
                # A copy: the pooled token is a view into the block's whole (B, N, d) output, which
                # would otherwise stay alive for as long as the features are kept.
                per_layer[l].append(token.to("cpu", torch.float32, copy=True))
            labels.append(y)
    d = int(model.config.embed_dim)  # type: ignore[attr-defined]
    if not labels:
        return [torch.zeros(0, d) for _ in range(depth)], torch.zeros(0, dtype=torch.int64)
    return [torch.cat(chunks) for chunks in per_layer], torch.cat(labels)


# ---- `nuwa eval` ----------------------------------------------------------------------------------
def evaluate_dir(model_dir: str | Path, data: str, *, classes=None, subtask: str | None = None,
                 split: str = "test", batch_size: int = 256, limit: int | None = None,
                 per_image: bool = False) -> dict:
    """For an edge model: accuracy on its classes' samples. For a base model with `classes`:
    accuracy with the full classifier (`top1`) and with the classifier sliced to `classes`.
    With `per_image`, each sample's 0/1 correctness too ("correct", and "correct_sliced" next to
    "top1_sliced"), in the split's order restricted to the classes: the same images in the same
    order for every model evaluated on the same classes, so two models' vectors are aligned."""
    from . import io
    from .data import class_subset, open_split, resolve_classes
    from .device import device

    model = io.load(model_dir).to(device())
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
    hits = {}
    if cfg.classes is not None or idx is None:
        hits["top1"] = logits.argmax(-1) == labels
        result["loss"] = torch.nn.functional.cross_entropy(logits, labels).item()
    else:
        t = torch.tensor(idx)
        hits["top1"] = logits.argmax(-1) == t[labels]  # full classifier
        hits["top1_sliced"] = logits[:, t].argmax(-1) == labels
        result["loss"] = torch.nn.functional.cross_entropy(logits, t[labels]).item()
    for key, hit in hits.items():
        result[key] = hit.float().mean().item()
        if per_image:
            result[key.replace("top1", "correct")] = pack_correct(hit.numpy())
    if idx is not None:
        result["classes"] = idx
        result["class_names"] = list(ds.class_names)
    return result
