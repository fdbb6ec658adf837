"""Shared by the operators: turn (new config, new tensors) back into an EdgeViT."""
from __future__ import annotations

import torch

from ..arch import EdgeViTConfig
from ..model import EdgeViT


def rebuild(config: EdgeViTConfig, state: dict[str, torch.Tensor]) -> EdgeViT:
    """Build the smaller model and load the sliced tensors (strict: every tensor accounted for)."""
    config.validate()
    ref = next(iter(state.values()))
    with torch.device("meta"):
        model = EdgeViT(config)  # no wasted random init: every tensor is overwritten below
    model = model.to_empty(device=ref.device)
    model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True, assign=False)
    return model.eval()


def state_of(model: EdgeViT) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def layer_config(model: EdgeViT, i: int):
    from dataclasses import replace

    return replace(model.config.layers[i])


def _per_head(keep, n: int, heads: list[int]) -> list[list[int]]:
    """None (all dims), one list shared by all heads, or one list per kept head."""
    if keep is None:
        return [list(range(n)) for _ in heads]
    if keep and isinstance(keep[0], (list, tuple)):
        return [list(k) for k in keep]
    return [list(keep) for _ in heads]


def qkv_rows(num_heads: int, qk_dim: int, v_dim: int, heads: list[int] | None = None,
             qk_keep=None, v_keep=None) -> torch.Tensor:
    """Row indices of the fused qkv projection for the kept heads and per-head dims.

    Layout is [Q heads | K heads | V heads], head-major within each part. `qk_keep`/`v_keep`:
    None (all), a list shared by all heads, or a list per kept head.
    """
    heads = list(range(num_heads)) if heads is None else heads
    qk_sel, v_sel = _per_head(qk_keep, qk_dim, heads), _per_head(v_keep, v_dim, heads)
    q = [h * qk_dim + j for h, js in zip(heads, qk_sel) for j in js]
    k = [num_heads * qk_dim + h * qk_dim + j for h, js in zip(heads, qk_sel) for j in js]
    v = [2 * num_heads * qk_dim + h * v_dim + j for h, js in zip(heads, v_sel) for j in js]
    return torch.tensor(q + k + v, dtype=torch.long)


def proj_cols(v_dim: int, heads: list[int], v_keep=None) -> torch.Tensor:
    v_sel = _per_head(v_keep, v_dim, heads)
    return torch.tensor([h * v_dim + j for h, js in zip(heads, v_sel) for j in js], dtype=torch.long)


def normalise_dims(dims, full: int, num_heads: int, layer: int, what: str) -> list[list[int]]:
    """Per-head kept dims from an int r (dims 0..r-1), a shared list, or per-head lists; all the
    same length (one size per layer), distinct, in range."""
    from ..errors import NuwaError

    if isinstance(dims, int):
        dims = list(range(dims))
    per_head = _per_head(dims, full, list(range(num_heads)))
    per_head = [sorted(d) for d in per_head]
    sizes = {len(d) for d in per_head}
    ok = (len(per_head) == num_heads and len(sizes) == 1 and 0 not in sizes
          and all(len(set(d)) == len(d) and all(0 <= j < full for j in d) for d in per_head))
    if not ok:
        raise NuwaError(f"layer {layer}: kept {what} dims must be one non-empty size for all heads, distinct, "
                        f"in 0..{full - 1}")
    return per_head
