"""`nuwa pretrain`: build a timm ViT for a data set (own classes, size, channels) and train it.

The offline default has no pretrained weights to fetch, so its base model is trained here on
all classes; with `checkpoint`/`pretrained` the timm weights are the starting point instead.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import io
from .convert import check_model_name, create_base, from_timm
from .errors import NuwaError


def pretrain(model: str, data: str, *, out: str | Path, epochs: int = 4, img_size: int | None = None,
             in_chans: int | None = None, embed_dim: int | None = None, depth: int | None = None,
             num_heads: int | None = None, patch_size: int | None = None, lr: float = 1e-3,
             weight_decay: float = 0.05, batch_size: int = 128, warmup_epochs: float = 0.5, seed: int = 0,
             checkpoint: str | Path | None = None, pretrained: bool = False, limit: int | None = None,
             augment: bool = True, probe_epochs: int = 0, probe_limit: int | None = None,
             probe_lr: float = 1e-3) -> tuple[Any, dict]:
    from .atomic import prepare_parent
    from .data import open_split, probe
    from .evaluate import evaluate
    from .probe import linear_probe
    from .train import fit, seed_everything

    for name, v in dict(epochs=epochs, batch_size=batch_size, probe_epochs=probe_epochs).items():
        if v < (0 if name.endswith("epochs") else 1):
            raise NuwaError(f"{name.replace('_', ' ')} {v} must be >= {0 if name.endswith('epochs') else 1}")
    for name, v in dict(img_size=img_size, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
                        num_heads=num_heads, patch_size=patch_size).items():
        if v is not None and v < 1:
            raise NuwaError(f"--{name.replace('_', '-')} {v} must be a positive integer")
    if embed_dim and num_heads and embed_dim % num_heads:
        raise NuwaError(f"--num-heads {num_heads} must divide --embed-dim {embed_dim}")
    for flag, v in (("--lr", lr), ("--probe-lr", probe_lr)):
        if not (math.isfinite(v) and v > 0):
            raise NuwaError(f"{flag} {v} must be a finite positive number")
    if probe_limit is not None and probe_limit < 1:
        raise NuwaError(f"--probe-limit {probe_limit} must be a positive integer")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise NuwaError(f"--weight-decay {weight_decay} must be a finite non-negative number")
    check_model_name(model)
    prepare_parent(Path(out))
    seed_everything(seed)
    info = probe(data)
    size = img_size or (info.img_size[0] if info.img_size else None)
    if size and patch_size is None and size % 16:
        raise NuwaError(f"image size {size} is not divisible by the default patch size 16; give --patch-size")
    kw = dict(num_classes=info.num_classes, in_chans=in_chans or info.in_chans)
    kw.update({k: v for k, v in dict(img_size=size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                     patch_size=patch_size).items() if v is not None})
    from .device import device

    dev = device()
    base = from_timm(create_base(model, pretrained=pretrained, checkpoint=checkpoint, **kw),
                     class_names=list(info.class_names)).to(dev)
    if not (checkpoint or pretrained) and len(info.mean) == base.config.in_chans:
        # Trained from scratch on this data: normalise with its own statistics.
        base.config.mean, base.config.std = tuple(info.mean), tuple(info.std)
    train, test = open_split(data, "train", img_size=base.config.img_size), open_split(data, "test", img_size=base.config.img_size)
    # The probe first: fine-tuning (epochs > 0) then starts from a trained classifier, not a random one.
    probe = linear_probe(base, train, epochs=probe_epochs, limit=probe_limit, lr=probe_lr, batch_size=256,
                         seed=seed) if probe_epochs else None
    history = fit(base, train, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, seed=seed,
                  augment=augment, warmup_epochs=warmup_epochs, limit=limit, desc="pretrain")
    test_metrics = evaluate(base, test, desc="test")
    report = dict(kind="base", timm_model=model, data=data, epochs=epochs, lr=lr, weight_decay=weight_decay,
                  batch_size=batch_size, seed=seed, limit=limit, probe=probe, history=history, test_top1=test_metrics["top1"],
                  test_loss=test_metrics["loss"], test_n=test_metrics["n"],
                  params=sum(p.numel() for p in base.parameters()))
    io.save(base, out, report=report)
    return base, report
