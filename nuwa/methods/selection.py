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


def _units(cfg: EdgeViTConfig, scores: GroupScores, per_parameter: bool = True) -> list[_Unit]:
    """All prunable units with their saliency, per parameter by default (so that a big group is not
    kept for its size alone; NViT normalises by cost the same way)."""
    d, units = cfg.embed_dim, []
    for l, lc in enumerate(cfg.layers):
        H, dq, dv = lc.num_heads, lc.qk_dim, lc.v_dim
        head_params = (2 * dq * (d + 1) + dv * (d + 1) + dv * d) if per_parameter else 1
        units += [_Unit("head", l, h, float(scores.heads[l][h]) / head_params) for h in range(H)]
        for kind, s, per in (("qk", scores.qk[l], 2 * (d + 1) * H), ("v", scores.v[l], (2 * d + 1) * H)):
            slots = torch.sort(s.double(), dim=1, descending=True).values.sum(0)  # slot j: j-th best of every head
            units += [_Unit(kind, l, j, float(slots[j]) / (per if per_parameter else 1)) for j in range(s.shape[1])]
        per_neuron = (2 * d + 1) if per_parameter else 1
        units += [_Unit("neuron", l, i, float(v) / per_neuron) for i, v in enumerate(scores.neurons[l])]
    # One embedding dim runs through every d-sized tensor: patch projection, tokens, norms, all projections.
    per_dim = (cfg.in_chans * cfg.patch_size ** 2 + 1 + 1 + cfg.num_tokens + 2 + cfg.num_classes
               + sum(4 + 2 * l.q_width + l.v_width + l.v_width + 1 + 2 * l.mlp_dim + 1 for l in cfg.layers))
    units += [_Unit("embed", -1, k, float(v) / (per_dim if per_parameter else 1)) for k, v in enumerate(scores.embed)]
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
                   per_parameter: bool = True) -> tuple[Selection, int]:
    """Remove the units of lowest saliency per parameter, all kinds ranked together, until the
    config is within budget (the fewest removals that suffice, found by bisection).
    Query-key/value slots are removed worst-first within a layer by construction of their scores."""
    order = sorted(_units(cfg, scores, per_parameter), key=lambda u: (u.score, u.kind, u.layer, u.index))
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
    """Task-agnostic random scores that make `global_ranking(per_parameter=False)` remove the same
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
