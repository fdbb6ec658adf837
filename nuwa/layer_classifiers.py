"""Per-layer (early-exit) classifiers for depth pruning, trained once per base model and cached.

A classifier per layer l < L reads the class token after block l through its own LayerNorm
and Linear, trained on all classes with the backbone frozen; layer L uses the base model's
own final norm and head. A sub-task slices all of them to its classes (no retraining).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_path
from .errors import NuwaError
from .io import sha256_file
from .model import EdgeViT

FILE = "layer_heads.safetensors"
KEYS = ("norm.weight", "norm.bias", "head.weight", "head.bias")


def final_head(model: EdgeViT) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.split(".")[0] in ("norm", "head")}


def build(model: EdgeViT, features: list[torch.Tensor], labels: torch.Tensor, *, epochs: int = 30,
          seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Train layers 1..L-1 on cached class-token features; layer L is the model's own classifier."""
    from .train import train_linear_heads

    heads = train_linear_heads(features[:-1], labels, model.config.num_classes, epochs=epochs, seed=seed,
                               norm_eps=model.config.norm_eps) if len(features) > 1 else []
    return [{k: v.detach().float() for k, v in h.items()} for h in heads] + [final_head(model)]


def save(path: str | Path, heads: list[dict[str, torch.Tensor]], *, key: str, meta: dict) -> None:
    """`key` identifies what the heads were trained from (base weights, samples, epochs, split)."""
    tensors = {f"{l}.{k}": h[k].contiguous() for l, h in enumerate(heads) for k in KEYS}
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
    return [{k: tensors[f"{l}.{k}"] for k in KEYS} for l in range(depth)]


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
