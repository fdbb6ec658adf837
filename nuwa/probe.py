"""Linear probing: the classifier alone, trained on a frozen model's features (computed once)."""
from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .device import autocast
from .loop_utils import Preprocessor, check_labels, check_positive_int, model_device, preprocess_for
from .train import cosine_lr


@torch.no_grad()
def pooled_features(model: nn.Module, ds: Any, *, limit: int | None = None, seed: int = 0, batch_size: int = 256,
                    preprocess: Preprocessor | None = None, desc: str | None = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier's input (pre-logits) and the label of `limit` samples drawn by `seed`."""
    from .data.loader import batches

    pre = preprocess_for(model, preprocess)
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for x, y in batches(ds, batch_size=batch_size, shuffle=True, seed=seed, limit=limit, progress=desc):
        x = pre(x.to(model_device(model)))
        with autocast(x.device):
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def linear_probe(model: nn.Module, ds: Any, *, epochs: int, limit: int | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 256, seed: int = 0,
                 desc: str | None = "probe") -> dict[str, Any]:
    """Train only `model.head`, on the frozen model's features of `limit` samples (computed once).

    A pretrained backbone adapted this way keeps every weight it was pretrained with, which is
    what a study of pretrained ViTs needs; the features cost one forward pass, not one per epoch.
    """
    check_positive_int("probe_epochs", epochs)
    start = time.perf_counter()
    feats, labels = pooled_features(model, ds, limit=limit, seed=seed, desc=None if desc is None else f"{desc} features")
    check_labels(labels, model.head.out_features)
    head = model.head
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps, total = 0, epochs * math.ceil(len(labels) / batch_size)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(labels), generator=gen).split(batch_size):
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(steps, total_steps=total, warmup_steps=0, base_lr=lr)
                loss = F.cross_entropy(head(feats[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
    with torch.no_grad():
        logits = head(feats)
        train_top1 = float((logits.argmax(1) == labels).float().mean())
        train_loss = float(F.cross_entropy(logits, labels))
    return dict(samples=len(labels), epochs=epochs, lr=lr, weight_decay=weight_decay, train_top1=train_top1,
                train_loss=train_loss, seconds=time.perf_counter() - start)
