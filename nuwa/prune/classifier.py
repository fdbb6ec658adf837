"""Classifier size: keep the rows of the sub-task's classes (the paper's sub-classifier)."""
from __future__ import annotations

from ..errors import NuwaError
from ..model import EdgeViT
from ._rebuild import rebuild, state_of


HEADS = ("head", "head_dist")  # a distilled model's logits average both: slice both alike


def slice_head(head: dict, classes: list[int]) -> dict:
    """Rows `classes` of a classifier state ({norm,head,head_dist}.*); the norm is untouched."""
    out = dict(head)
    for name in HEADS:
        for k in (f"{name}.weight", f"{name}.bias"):
            if k in head:
                out[k] = head[k][classes].clone()
    return out


def prune_classifier(model: EdgeViT, classes: list[int]) -> EdgeViT:
    """Keep the logits `classes` (indices into the model's outputs), in that order.

    The config's `classes` records indices into the *base* model's classes, so slicing an
    already sliced model composes correctly; `class_names` follow.
    """
    cfg = model.config
    if len(classes) < 1 or len(set(classes)) != len(classes):
        raise NuwaError(f"classes={classes} must be distinct and non-empty")
    bad = [c for c in classes if not 0 <= c < cfg.num_classes]
    if bad:
        raise NuwaError(f"class index {bad[0]} is out of range for a {cfg.num_classes}-class model")
    state = state_of(model)
    state.update({k: v for k, v in slice_head(state, classes).items() if k.split(".")[0] in HEADS})
    base_classes = [cfg.classes[c] for c in classes] if cfg.classes is not None else list(classes)
    names = [cfg.class_names[c] for c in classes] if cfg.class_names is not None else None
    new = cfg.with_layers(cfg.layers, num_classes=len(classes), classes=base_classes, class_names=names)
    return rebuild(new, state)
