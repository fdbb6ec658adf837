"""What the baselines share: a `Selection` of units in every prunable dimension, its cost, its
application to a model, and two ways of reaching a budget -- a global ranking of all units by one
saliency (NViT, X-Pruner) and the same random share of every layer (Random).

Units: heads; query-key and value "slots" (slot j = the j-th best dim of every head of a layer,
because EdgeViT keeps one per-head size per layer); MLP neurons; embedding dims.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..arch import EdgeViTConfig, LayerConfig
from ..cost import cost_of_sizes
from ..errors import NuwaError
from ..importance import GroupScores
from ..model import EdgeViT
from ..prune import prune_embedding, prune_heads, prune_mlp, prune_qk, prune_v


@dataclass
class Selection:
    heads: list[list[int]]  # kept head indices per layer
    qk: list[list[list[int]]]  # per layer, per kept head: kept query-key dims
    v: list[list[list[int]]]
    neurons: list[list[int]]
    embed: list[int]

    def config(self, base: EdgeViTConfig) -> EdgeViTConfig:
        layers = [LayerConfig(num_heads=len(h), qk_dim=len(q[0]), v_dim=len(v[0]), mlp_dim=len(n), attn_scale=lc.scale)
                  for lc, h, q, v, n in zip(base.layers, self.heads, self.qk, self.v, self.neurons)]
        return base.with_layers(layers, embed_dim=len(self.embed))

    def apply(self, model: EdgeViT) -> EdgeViT:
        m = prune_heads(model, self.heads)
        m = prune_qk(m, self.qk)
        m = prune_v(m, self.v)
        m = prune_mlp(m, self.neurons)
        return prune_embedding(m, self.embed)


def _per_head_order(scores: torch.Tensor) -> torch.Tensor:
    """(H, n) -> (H, n) dim indices of each head, best first (stable)."""
    return torch.sort(-scores.double(), dim=1, stable=True).indices


@dataclass
class _Unit:
    kind: str  # head | qk | v | neuron | embed
    layer: int
    index: int  # head, slot rank, neuron or embed dim
    score: float


def unit_costs(cfg: EdgeViTConfig, metric: str) -> dict[tuple[str, int], float]:
    """What removing one unit of each (kind, layer) saves at `cfg`, in `metric` (params or flops;
    layer -1: the embedding). A query-key or value slot is one dim of every head of its layer."""
    sizes = [(l.num_heads, l.qk_dim, l.v_dim, l.mlp_dim) for l in cfg.layers]
    full = cost_of_sizes(cfg, cfg.embed_dim, sizes, metric)
    out = {("embed", -1): float(full - cost_of_sizes(cfg, cfg.embed_dim - 1, sizes, metric))}
    for l, s in enumerate(sizes):
        for pos, kind in enumerate(("head", "qk", "v", "neuron")):
            fewer = [*s[:pos], s[pos] - 1, *s[pos + 1:]]
            out[(kind, l)] = float(full - cost_of_sizes(cfg, cfg.embed_dim, [*sizes[:l], fewer, *sizes[l + 1:]], metric))
    return out


def _units(cfg: EdgeViTConfig, scores: GroupScores, cost_metric: str | None = None) -> list[_Unit]:
    """All prunable units with their saliency; with `cost_metric`, per unit of the cost their
    removal saves (so that a big group is not kept for its size alone, NViT's normalisation)."""
    saved = unit_costs(cfg, cost_metric) if cost_metric is not None else None

    def per(kind: str, layer: int) -> float:
        return saved[(kind, layer)] if saved is not None else 1.0

    units = []
    for l, lc in enumerate(cfg.layers):
        units += [_Unit("head", l, h, float(scores.heads[l][h]) / per("head", l)) for h in range(lc.num_heads)]
        for kind, s in (("qk", scores.qk[l]), ("v", scores.v[l])):
            slots = torch.sort(s.double(), dim=1, descending=True).values.sum(0)  # slot j: j-th best of every head
            units += [_Unit(kind, l, j, float(slots[j]) / per(kind, l)) for j in range(s.shape[1])]
        units += [_Unit("neuron", l, i, float(v) / per("neuron", l)) for i, v in enumerate(scores.neurons[l])]
    units += [_Unit("embed", -1, k, float(v) / per("embed", -1)) for k, v in enumerate(scores.embed)]
    return units


def _selection_from_removed(cfg: EdgeViTConfig, scores: GroupScores, removed: set[tuple[str, int, int]]) -> Selection:
    heads, qk, v, neurons = [], [], [], []
    for l, lc in enumerate(cfg.layers):
        keep_h = [h for h in range(lc.num_heads) if ("head", l, h) not in removed] or [int(scores.heads[l].argmax())]
        n_qk = max(1, sum(("qk", l, j) not in removed for j in range(lc.qk_dim)))
        n_v = max(1, sum(("v", l, j) not in removed for j in range(lc.v_dim)))
        oq, ov = _per_head_order(scores.qk[l]), _per_head_order(scores.v[l])
        heads.append(keep_h)
        qk.append([sorted(oq[h, :n_qk].tolist()) for h in keep_h])
        v.append([sorted(ov[h, :n_v].tolist()) for h in keep_h])
        kept_n = [i for i in range(lc.mlp_dim) if ("neuron", l, i) not in removed]
        neurons.append(kept_n or [int(scores.neurons[l].argmax())])
    embed = [k for k in range(cfg.embed_dim) if ("embed", -1, k) not in removed] or [int(scores.embed.argmax())]
    return Selection(heads=heads, qk=qk, v=v, neurons=neurons, embed=embed)


def global_ranking(cfg: EdgeViTConfig, scores: GroupScores, within_budget: Callable[[Selection], bool], *,
                   cost_metric: str | None = None) -> tuple[Selection, int]:
    """Remove the units of lowest saliency (per unit of `cost_metric` saved, when given), all kinds
    ranked together, until the config is within budget (the fewest removals that suffice, found by
    bisection). Query-key/value slots are removed worst-first within a layer by construction of
    their scores."""
    order = sorted(_units(cfg, scores, cost_metric), key=lambda u: (u.score, u.kind, u.layer, u.index))
    keys = [(u.kind, u.layer, u.index) for u in order]

    def select(k: int) -> Selection:
        return _selection_from_removed(cfg, scores, set(keys[:k]))

    lo, hi = 0, len(keys)
    if not within_budget(select(hi)):
        raise NuwaError("budget unreachable: even the smallest model of the global ranking exceeds it")
    if within_budget(select(0)):
        return select(0), 1
    evaluated = 2
    while hi - lo > 1:  # invariant: select(lo) over budget, select(hi) within
        mid = (lo + hi) // 2
        evaluated += 1
        if within_budget(select(mid)):
            hi = mid
        else:
            lo = mid
    return select(hi), evaluated


def random_quantiles(cfg: EdgeViTConfig, seed: int) -> GroupScores:
    """Task-agnostic random scores that make `global_ranking` (no cost normalisation) remove the same
    share of every layer and dimension: each unit's score is its random rank's quantile within its
    own (layer, kind) group, so units leave all groups at the same pace, one at a time."""
    g = torch.Generator().manual_seed(seed)

    def quantiles(n: int) -> torch.Tensor:
        return (torch.randperm(n, generator=g).double() + 1) / n

    heads, qk, v, neurons = [], [], [], []
    for lc in cfg.layers:
        heads.append(quantiles(lc.num_heads))
        # A slot's score is the sum over heads of its dims' scores: divide so it stays a quantile.
        qk.append(quantiles(lc.qk_dim)[None, :].expand(lc.num_heads, -1) / lc.num_heads)
        v.append(quantiles(lc.v_dim)[None, :].expand(lc.num_heads, -1) / lc.num_heads)
        neurons.append(quantiles(lc.mlp_dim))
    return GroupScores(heads=heads, qk=qk, v=v, neurons=neurons, embed=quantiles(cfg.embed_dim), passes=0)
