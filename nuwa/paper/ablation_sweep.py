"""Per-dimension pruning sweeps: one structural dimension shrunk at a time (paper Table 1, Fig. 12).

The model swept is the base with its classifier sliced to the sub-task (no depth, head or other
pruning), so a row's accuracy change is due to the one dimension alone. A per-dimension rate r
keeps round((1 - r) * n) of the n units of that dimension in every head / layer (>= 1), so SVD
and score-based pruning at the same rate give models of identical sizes:

- qk / v, technique "svd": every head is rotated into its singular basis (`nuwa.svd.reparametrize`,
  product SVD, as NuWa's adaptive stage does) and its first dims are kept;
- qk / v, technique "score": the dims with the highest Taylor scores are kept (`DeriveOptions.svd:
  off`'s selection);
- mlp: the neurons with the highest Taylor scores in every layer;
- embed: the embedding dims with the highest scores (NuWa uses the base's all-class scores).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from ..progress import bar

from .. import cost
from ..errors import NuwaError
from ..model import EdgeViT
from ..prune import prune_embedding, prune_mlp, prune_qk, prune_v
from ..prune.rules import top_k
from ..svd import reparametrize

DIMS = ("qk", "v", "mlp", "embed")
TECHNIQUES = {"qk": ("svd", "score"), "v": ("svd", "score"), "mlp": ("score",), "embed": ("score",)}
# The technique NuWa itself uses per dimension (Fig. 12 shows these).
NUWA_TECHNIQUE = {"qk": "svd", "v": "svd", "mlp": "score", "embed": "score"}


@dataclass
class SweepScores:
    """Importance per unit of each dimension: qk/v (H, dims) and neurons (mlp_dim,) per layer,
    embed (embed_dim,)."""

    qk: list[torch.Tensor]
    v: list[torch.Tensor]
    neurons: list[torch.Tensor]
    embed: torch.Tensor


def kept(n: int, rate: float) -> int:
    """Units kept of `n` at a per-dimension pruning rate (at least one)."""
    if not 0 <= rate < 1:
        raise NuwaError(f"per-dimension pruning rate {rate!r} must be in [0, 1)")
    return max(1, min(n, int(round((1 - rate) * n))))


def dimension_sizes(model: EdgeViT) -> dict[str, list[int]]:
    """The four adaptive dimensions' sizes of a model (per layer; embed as a one-element list)."""
    layers = model.config.layers
    return dict(qk=[l.qk_dim for l in layers], v=[l.v_dim for l in layers], mlp=[l.mlp_dim for l in layers],
                embed=[model.config.embed_dim])


def prune_dimension(model: EdgeViT, dim: str, rate: float, *, technique: str, scores: SweepScores | None = None,
                    rotated: EdgeViT | None = None) -> EdgeViT:
    """`model` with only dimension `dim` pruned at `rate` in every layer (see the module doc).

    `rotated`: the model already reparametrised for `dim` (saves the SVD when sweeping rates)."""
    if dim not in DIMS:
        raise NuwaError(f"unknown dimension {dim!r}; expected one of {', '.join(DIMS)}")
    if technique not in TECHNIQUES[dim]:
        raise NuwaError(f"dimension {dim} is pruned by {' or '.join(TECHNIQUES[dim])}, not {technique!r}")
    if technique == "score" and scores is None:
        raise NuwaError(f"score-based pruning of {dim} needs importance scores")
    layers = model.config.layers
    if dim in ("qk", "v"):
        fn = prune_qk if dim == "qk" else prune_v
        sizes = [l.qk_dim if dim == "qk" else l.v_dim for l in layers]
        if technique == "svd":
            if rotated is None:
                rotated = reparametrize(model, "product", qk=dim == "qk", v=dim == "v")[0]
            return fn(rotated, [kept(n, rate) for n in sizes])  # an int r keeps the top-r singular dims
        per_layer = scores.qk if dim == "qk" else scores.v
        return fn(model, [[sorted(top_k(h, kept(n, rate)).tolist()) for h in s] for s, n in zip(per_layer, sizes)])
    if dim == "mlp":
        return prune_mlp(model, [sorted(top_k(s, kept(l.mlp_dim, rate)).tolist())
                                 for s, l in zip(scores.neurons, layers)])
    return prune_embedding(model, sorted(top_k(scores.embed, kept(model.config.embed_dim, rate)).tolist()))


def sweep(model: EdgeViT, *, dims: Iterable[str], rates: Iterable[float], scores: SweepScores | None,
          evaluate: Callable[[EdgeViT], dict], techniques: dict[str, tuple[str, ...]] | None = None,
          desc: str | None = "sweep") -> list[dict]:
    """One row per (dim, technique, rate) plus the unpruned reference (dim "none", rate 0).

    `evaluate(model)` returns at least {"top1", "n"} (and "correct", packed per-image correctness,
    when it evaluates per image: rows keep it for paired comparisons). Rows also carry the kept size of the dimension
    (per layer, first layer's value in `size`), params and FLOPs."""
    techniques = techniques or TECHNIQUES
    dims, rates = list(dims), [float(r) for r in rates]
    jobs = [(d, t, r) for d in dims for t in techniques[d] for r in rates]
    base_cost = dict(params=cost.count_params(model.config), flops=cost.count_flops(model.config))

    def row(m: EdgeViT, dim: str, technique: str, rate: float) -> dict:
        ev = evaluate(m)
        sizes = dimension_sizes(m)
        return dict(dim=dim, technique=technique, rate=rate, top1=float(ev["top1"]), n=int(ev["n"]),
                    correct=ev.get("correct"),
                    size=sizes[dim][0] if dim in sizes else None,
                    sizes=sizes[dim] if dim in sizes else None,
                    params=cost.count_params(m.config), flops=cost.count_flops(m.config),
                    base_params=base_cost["params"], base_flops=base_cost["flops"])

    rows = [row(model, "none", "none", 0.0)]
    rotated: dict[str, EdgeViT] = {}
    for dim, technique, rate in bar(jobs, desc=desc, unit="model"):
        if technique == "svd" and dim not in rotated:  # one SVD per dimension, reused across rates
            rotated[dim] = reparametrize(model, "product", qk=dim == "qk", v=dim == "v")[0]
        pruned = prune_dimension(model, dim, rate, technique=technique, scores=scores, rotated=rotated.get(dim))
        rows.append(row(pruned, dim, technique, rate))
    return rows
