"""`nuwa pretrain` for MobileViT: a timm MobileViT built for a data set (its classes, channels
and size), converted, and trained from its initialisation: a classifier on a classification set,
a segmenter (backbone + FPN decoder) on a scenes set. With a `teacher`, training is the MobileViT compression study's
distillation: logit transfer, plus early-feature mimicking when `feature_weight` > 0.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..errors import NuwaError
from ..options import DeriveOptions
from . import cost
from .convert import create, from_timm
from .derive import Task, load_teacher, normaliser, recover


def _check(epochs: int, batch_size: int, lr: float, weight_decay: float, decoder_dim: int, kd_alpha: float,
           kd_tau: float, feature_weight: float) -> None:
    if epochs < 0:
        raise NuwaError(f"epochs {epochs} must be >= 0")
    for name, v in (("--batch-size", batch_size), ("--decoder-dim", decoder_dim)):
        if v < 1:
            raise NuwaError(f"{name} {v} must be a positive integer")
    for name, v, low, strict in (("--lr", lr, 0.0, True), ("--weight-decay", weight_decay, 0.0, False),
                                 ("--kd-tau", kd_tau, 0.0, True), ("--kd-alpha", kd_alpha, 0.0, False),
                                 ("--feature-weight", feature_weight, 0.0, False)):
        if not (math.isfinite(v) and (v > low if strict else v >= low)):
            raise NuwaError(f"{name} {v} must be a finite number {'>' if strict else '>='} {low}")


def pretrain(model: str, data: str, *, out: str | Path, epochs: int = 4, img_size: int | None = None,
             lr: float = 2e-3, weight_decay: float = 0.05, batch_size: int = 64, seed: int = 0,
             checkpoint: str | None = None, teacher: str | None = None, kd_alpha: float = 0.5,
             kd_tau: float = 1.0, feature_weight: float = 0.0, decoder_dim: int = 32) -> tuple[Any, dict]:
    from ..atomic import prepare_parent
    from ..data.spec import parse_spec
    from ..device import device
    from ..train import seed_everything
    from .convert import check_name

    _check(epochs, batch_size, lr, weight_decay, decoder_dim, kd_alpha, kd_tau, feature_weight)
    check_name(model)
    spec = parse_spec(data)
    prepare_parent(Path(out))
    seed_everything(seed)
    dev = device()
    if spec.kind == "scenes":
        from ..data.scenes import read_scenes

        train, test = read_scenes(spec.root, "train"), read_scenes(spec.root, "test")
        chans, size = train.images.shape[1], img_size or train.images.shape[-1]
        x = train.images.float() / 255.0
        mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
        std = tuple(x.std(dim=(0, 2, 3)).tolist())
        timm_model = create(model, checkpoint=checkpoint, num_classes=train.num_classes - 1, in_chans=chans)
        edge = from_timm(timm_model, img_size=size, task="segment", num_classes=train.num_classes,
                         decoder_dim=decoder_dim, class_names=list(train.class_names), seed=seed)
        names, kind = list(train.class_names), "segment"
    else:
        from ..data import open_split, probe

        info = probe(data)
        size = img_size or (info.img_size[0] if info.img_size else 256)
        timm_model = create(model, checkpoint=checkpoint, num_classes=info.num_classes, in_chans=info.in_chans)
        edge = from_timm(timm_model, img_size=size, class_names=list(info.class_names))
        mean, std, names, kind = tuple(info.mean), tuple(info.std), list(info.class_names), "classify"
        train = open_split(data, "train", img_size=(size, size))
        test = open_split(data, "test", img_size=(size, size))
    if checkpoint is None:  # trained from scratch on this data: its own statistics
        edge.config.mean, edge.config.std = mean, std
    edge = edge.to(dev)
    kd = load_teacher(teacher, edge, checkpoint=None) if teacher is not None else None
    from ..data import Preprocess

    prep = normaliser(edge.config) if kind == "segment" else Preprocess.for_config(edge.config)
    task = Task(kind, list(range(edge.config.num_classes)), names, train, None, prep,
                list(range(edge.config.num_classes - 1)) if kind == "segment" else None)
    opts = DeriveOptions(batch_size=batch_size, finetune_lr=lr, weight_decay=weight_decay, distill_alpha=kd_alpha,
                         distill_tau=kd_tau, distill_feature_weight=feature_weight)
    history = recover(edge, task, recovery="finetune" if kd is None else "distill", epochs=epochs, opts=opts,
                      seed=seed, teacher=kd)
    report: dict[str, Any] = dict(kind="base", family="mobilevit", task=kind, timm_model=model, data=data,
                                  epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, seed=seed,
                                  teacher=teacher, kd_alpha=kd_alpha if kd else None, kd_tau=kd_tau if kd else None,
                                  feature_weight=feature_weight if kd else None, history=history,
                                  params=cost.count_params(edge.config), flops=cost.count_flops(edge.config))
    report.update(test_metrics(edge, test, kind, prep, batch_size))
    io.save(edge, out, report=report)
    return edge, report


@torch.no_grad()
def test_metrics(model, test, kind: str, prep, batch_size: int) -> dict[str, Any]:
    if kind == "segment":
        from ..segmentation import evaluate_segmenter

        r = evaluate_segmenter(model, test, batch_size=batch_size, preprocess=prep)
        return dict(test_miou=r["miou"], test_miou_ci=r["miou_ci"], test_per_class_iou=r["per_class_iou"],
                    test_pixel_acc=r["pixel_acc"], test_n=r["images"])
    from ..evaluate import evaluate

    r = evaluate(model, test, preprocess=prep, batch_size=batch_size, desc="test")
    return dict(test_top1=r["top1"], test_loss=r["loss"], test_n=r["n"])
