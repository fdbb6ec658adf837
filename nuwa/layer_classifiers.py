"""Per-layer (early-exit) classifiers for depth pruning, trained once per base model and cached.

A classifier per layer l < L reads the pooled token after block l (`EdgeViT.pool`: the class
token, or the mean patch token of an average-pooled model) through its own LayerNorm and
Linear, trained on all classes with the backbone frozen; layer L uses the base model's own
final norm and head. A sub-task slices all of them to its classes (no retraining).

A distilled model (DeiT's two heads) keeps both heads in its layer-L entry, but the per-layer
accuracies read the class-token head alone: the features are the pooled (class) token.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import atomic_path
from .errors import NuwaError
from .io import sha256_file
from .loop_utils import check_labels, check_number, check_positive_int, progress
from .model import EdgeViT

FILE = "layer_heads.safetensors"
KEYS = ("norm.weight", "norm.bias", "head.weight", "head.bias")
DIST_KEYS = ("head_dist.weight", "head_dist.bias")  # a distilled model's final classifier only


def final_head(model: EdgeViT) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.split(".")[0] in ("norm", "head", "head_dist")}


def build(model: EdgeViT, features: list[torch.Tensor], labels: torch.Tensor, *, epochs: int = 30,
          seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Train layers 1..L-1 on cached class-token features; layer L is the model's own classifier."""
    heads = train_linear_heads(features[:-1], labels, model.config.num_classes, epochs=epochs, seed=seed,
                               norm_eps=model.config.norm_eps) if len(features) > 1 else []
    return [{k: v.detach().float() for k, v in h.items()} for h in heads] + [final_head(model)]


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
    check_positive_int("num_classes", num_classes)
    check_labels(labels, num_classes)


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
    from .train import cosine_lr

    _check_features(features, labels, num_classes)
    check_positive_int("epochs", epochs, minimum=0)
    check_number("lr", lr, low=0.0, strict=True)
    check_number("weight_decay", weight_decay, low=0.0, strict=False)
    check_positive_int("batch_size", batch_size)
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
    bar = progress(epochs * N, desc)
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


def save(path: str | Path, heads: list[dict[str, torch.Tensor]], *, key: str, meta: dict) -> None:
    """`key` identifies what the heads were trained from (base weights, samples, epochs, split)."""
    tensors = {f"{l}.{k}": h[k].contiguous() for l, h in enumerate(heads) for k in KEYS + DIST_KEYS if k in h}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"key": key, "meta": json.dumps(meta, sort_keys=True)})


def load(path: str | Path, *, key: str | None = None) -> list[dict[str, torch.Tensor]] | None:
    """Cached heads, or None when absent or trained from something else than `key` says."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise NuwaError(f"{path}: corrupt layer-classifier cache ({e}); delete it to retrain") from None
    if key is not None and meta.get("key") != key:
        return None
    depth = 1 + max(int(k.split(".")[0]) for k in tensors)
    return [{**{k: tensors[f"{l}.{k}"] for k in KEYS},
             **{k: tensors[f"{l}.{k}"] for k in DIST_KEYS if f"{l}.{k}" in tensors}} for l in range(depth)]


def base_sha(model_dir: str | Path) -> str:
    return sha256_file(Path(model_dir) / "model.safetensors")


@torch.no_grad()
def accuracies(features: list[torch.Tensor], labels: torch.Tensor, heads: list[dict[str, torch.Tensor]],
               classes: list[int], eps: float = 1e-6) -> list[float]:
    """Top-1 of every layer's classifier sliced to `classes`; `labels` are positions in `classes`."""
    out = []
    for f, h in zip(features, heads):
        z = torch.nn.functional.layer_norm(f, (f.shape[-1],), h["norm.weight"], h["norm.bias"], eps)
        logits = z @ h["head.weight"][classes].T + h["head.bias"][classes]
        out.append((logits.argmax(-1) == labels).float().mean().item() if labels.numel() else 0.0)
    return out


def choose_depth(accs: list[float], rho: float) -> int:
    """Layers to keep: from the top, drop layer l while acc(l-1) >= rho * acc(L); stop at the first failure."""
    if not accs:
        raise ValueError("no layer accuracies")
    keep, target = len(accs), rho * accs[-1]
    while keep > 1 and accs[keep - 2] >= target:
        keep -= 1
    return keep


def budget_depth(rule_keep: int, depth: int, within_budget: Callable[[int], bool]) -> int:
    """The budget policy: start from the layers the rule keeps (`rule_keep` of `depth`) and add
    layers back while a model of that many layers would meet the budget on its own, i.e. would
    undershoot the requested cost. The result is the fewest layers at or above the request (or
    all of them); the adaptive stage then trims the widths down to it. `within_budget(k)` must be
    monotone: fewer layers never cost more."""
    if not 1 <= rule_keep <= depth:
        raise ValueError(f"rule keeps {rule_keep} layers of {depth}")
    keep = rule_keep
    while keep < depth and within_budget(keep):
        keep += 1
    return keep
