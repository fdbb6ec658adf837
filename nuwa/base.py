"""The base model of a derivation and the artefacts cached beside it, built once per base and
reused by every sub-task: the per-layer classifiers (depth pruning) and the Taylor scores of
the embedding dims (both on all-class fit data)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from . import io
from . import layer_classifiers as lc
from .errors import NuwaError
from .importance import Taylor
from .model import EdgeViT
from .options import EMBED_SCORE_KEY, LAYER_HEAD_KEY, CACHE_FILES, DeriveOptions, cache_file
from .task import SubTask, open_base_data

EMBED_FILE = CACHE_FILES[1]



def load_base(model: str | Path | EdgeViT, *, checkpoint: str | Path | None = None,
              class_names: list[str] | None = None, **timm_kwargs: Any) -> tuple[EdgeViT, Path | None]:
    """An EdgeViT from a model directory, a timm name (+ optional local checkpoint) or a module."""
    if isinstance(model, EdgeViT):
        return model.eval(), None
    path = Path(str(model))
    if path.is_dir():
        return io.load(path), path
    if path.exists() or "/" in str(model):
        raise NuwaError(f"model {str(model)!r}: no such model directory")
    from .convert import check_model_name, create_base, from_timm

    check_model_name(str(model))  # a ViT: a MobileViT derives from a base directory
    return from_timm(create_base(str(model), checkpoint=checkpoint, **timm_kwargs), class_names=class_names), None


def prepare_base(model_dir: str | Path, data: str, *, options: DeriveOptions | None = None) -> dict[str, str]:
    """Build and cache the per-base artefacts every derivation reuses: per-layer classifiers and
    embedding-dim scores (both on all-class data). Returns their paths."""
    opts = (options or DeriveOptions()).validate()
    from .device import device

    base_dir = Path(model_dir)
    dev = device()
    base = io.load(base_dir).to(dev)
    bd = open_base_data(data, base, opts=opts)
    task = SubTask(spec=data, classes=[], class_names=[], fit=None, val=None, fit_all=bd.fit_all,
                   preprocess=bd.preprocess, device=dev)
    base_layer_heads(base, base_dir, task, opts)
    base_embed_scores(base, base_dir, task, opts)
    return dict(layer_heads=str(base_dir / cache_file(lc.FILE, opts.split())),
                embed_scores=str(base_dir / cache_file(EMBED_FILE, opts.split())))


def base_layer_heads(base: EdgeViT, base_dir: Path | None, task: SubTask, opts: DeriveOptions) -> list:
    sha = lc.base_sha(base_dir) if base_dir is not None else None
    cache = base_dir / cache_file(lc.FILE, opts.split()) if (base_dir is not None and opts.cache) else None
    key = cache_key(sha, opts, LAYER_HEAD_KEY)
    heads = lc.load(cache, key=key) if cache is not None else None
    if heads is None:
        from .evaluate import collect_cls_tokens

        feats, labels = collect_cls_tokens(base, task.fit_all, preprocess=task.preprocess, batch_size=opts.batch_size,
                                           limit=opts.layer_head_samples, desc="layer-head features")
        heads = lc.build(base, feats, labels, epochs=opts.layer_head_epochs, seed=opts.split())
        if cache is not None and _writable(base_dir):
            lc.save(cache, heads, key=key, meta=dict(samples=len(labels), epochs=opts.layer_head_epochs))
    return heads


def base_embed_scores(base: EdgeViT, base_dir: Path | None, task: SubTask, opts: DeriveOptions) -> tuple[torch.Tensor, int]:
    """Taylor scores of the embedding dims on all-class data, once per base model."""
    from safetensors.torch import load_file, save_file

    from .atomic import atomic_path

    sha = lc.base_sha(base_dir) if base_dir is not None else None
    cache = base_dir / cache_file(EMBED_FILE, opts.split()) if (base_dir is not None and opts.cache) else None
    key = cache_key(sha, opts, EMBED_SCORE_KEY)
    if cache is not None and cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), framework="pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return load_file(str(cache))["embed"], 0
    batches = task.batches(task.fit_all, opts.embed_score_samples, seed=opts.split(),
                           batch_size=opts.batch_size, desc="embedding scores")
    scores = Taylor(microbatch=opts.taylor_microbatch)(base, batches)
    if cache is not None and _writable(base_dir):
        with atomic_path(cache) as tmp:
            save_file({"embed": scores.embed.contiguous()}, str(tmp), metadata={"key": key})
    return scores.embed, scores.passes


def cache_key(sha: str | None, opts: DeriveOptions, names: tuple[str, ...]) -> str:
    """The key a cache is stored under: the base's hash, then the values of the options that built
    it, joined by colons."""
    values = (opts.split() if n == "split_seed" else getattr(opts, n) for n in names)
    return ":".join(f"{v}" for v in (sha, *values))


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)
