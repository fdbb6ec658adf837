"""NuWa's pruning schedule: one-shot head selection and the adaptive stage (paper section 3.3).

The adaptive stage is a search over iterations t = 1, 2, ...: thresholds start at 1 and
decay as rho_qkv = 1 - t*g, rho_exp = 1 - 5*t*g, rho_emb = 1 - 2.5*t*g (g = gamma_qkv).
Every iteration's sizes are computed afresh from the one-shot model's spectra and scores
(the rules are monotone in rho, so this equals cumulative pruning), and its cost follows
from the config alone; the first t within budget is materialised once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .arch import EdgeViTConfig
from .errors import NuwaError
from .importance import GroupScores
from .model import EdgeViT
from .options import ADAPTIVE_DIMS, AdaptiveOptions  # noqa: F401  (re-exported)
from .prune import prune_embedding, prune_mlp, prune_qk, prune_v
from .prune.rules import cumulative_keep, energy_rank, round_size, top_k
from .svd import Spectra

@dataclass
class Plan:
    """Sizes chosen at one iteration of the adaptive stage."""

    t: float
    rho: dict[str, float]
    qk: list[int]  # per-head query-key size per layer (SVD rank or score count)
    v: list[int]
    neurons: list[list[int]]  # kept neuron indices per layer
    embed: list[int]  # kept embedding dims
    exact: dict[str, list[int] | int] = field(default_factory=dict)  # sizes before rounding
    # The search's nearest plan over budget (the step it could not split further), which says
    # why an achieved rate lands where it does; None: none was seen.
    over: "Plan | None" = field(default=None, repr=False, compare=False)

    def config(self, base: EdgeViTConfig) -> EdgeViTConfig:
        layers = []
        for lc, q, v, n in zip(base.layers, self.qk, self.v, self.neurons):
            layers.append(type(lc)(num_heads=lc.num_heads, qk_dim=q, v_dim=v, mlp_dim=len(n), attn_scale=lc.scale))
        return base.with_layers(layers, embed_dim=len(self.embed))


def select_heads(scores: list[torch.Tensor], rho: float) -> list[list[int]]:
    """Global ranking over all heads; the fewest whose importance share is >= rho, >= 1 per layer."""
    flat = torch.cat(scores)
    owner = torch.cat([torch.full((s.numel(),), i) for i, s in enumerate(scores)])
    offset = torch.tensor([0] + [s.numel() for s in scores]).cumsum(0)
    keep = set(cumulative_keep(flat, rho).tolist())
    out = []
    for i, s in enumerate(scores):
        kept = sorted(j - int(offset[i]) for j in keep if owner[j] == i)
        out.append(kept or [int(torch.argmax(s))])
    return out


def _thresholds(t: float, opts: AdaptiveOptions) -> dict[str, float]:
    g, (rq, re, rd) = opts.gamma_qkv, opts.gamma_ratio
    return {"qkv": max(0.0, 1 - t * g * rq), "exp": max(0.0, 1 - t * g * re), "emb": max(0.0, 1 - t * g * rd)}


def _neurons(scores: list[torch.Tensor], rho: float, opts: AdaptiveOptions) -> tuple[list[list[int]], list[int]]:
    """MLP neurons: global ranking over layers 2..L (layer 1's MLP is never pruned, Eq. 6)."""
    full = [list(range(s.numel())) for s in scores]
    if "mlp" in opts.exclude or len(scores) < 2:
        return full, [len(f) for f in full]
    rest = scores[1:]
    flat = torch.cat(rest)
    offset = torch.tensor([0] + [s.numel() for s in rest]).cumsum(0)
    kept = cumulative_keep(flat, rho)
    if opts.global_ranking:
        counts = [int(((kept >= offset[i]) & (kept < offset[i + 1])).sum()) for i in range(len(rest))]
    else:  # the same share in every layer ("pro rata uniformly")
        frac = kept.numel() / flat.numel()
        counts = [int(round(frac * s.numel())) for s in rest]
    out, exact = [full[0]], [len(full[0])]
    for s, c in zip(rest, counts):
        n = round_size(c, s.numel(), opts.round_to)
        exact.append(c)
        out.append(sorted(top_k(s, n).tolist()))
    return out, exact


def plan_at(t: float, spectra: Spectra, scores: GroupScores, embed_scores: torch.Tensor,
            opts: AdaptiveOptions, hold: Plan | None = None) -> Plan:
    """The sizes at iteration t; with `hold`, the embedding dims (and threshold) of that plan."""
    rho = _thresholds(t, opts)
    qk_exact, v_exact, qk, v = [], [], [], []
    for s_qk, s_v in zip(spectra.qk, spectra.v):
        rq = s_qk.shape[1] if "qk" in opts.exclude else energy_rank(s_qk, rho["qkv"])
        rv = s_v.shape[1] if "v" in opts.exclude else energy_rank(s_v, rho["qkv"])
        qk_exact.append(rq), v_exact.append(rv)
        qk.append(round_size(rq, s_qk.shape[1], opts.round_to))
        v.append(round_size(rv, s_v.shape[1], opts.round_to))
    neurons, n_exact = _neurons(scores.neurons, rho["exp"], opts)
    d = embed_scores.numel()
    if hold is not None:
        rho["emb"] = hold.rho["emb"]
        embed, d_exact = hold.embed, hold.exact["embed"]
    elif "embed" in opts.exclude:
        embed, d_exact = list(range(d)), d
    else:
        d_exact = max(1, cumulative_keep(embed_scores, rho["emb"]).numel())
        embed = sorted(top_k(embed_scores, round_size(d_exact, d, opts.round_to)).tolist())
    return Plan(t=t, rho=rho, qk=qk, v=v, neurons=neurons, embed=embed,
                exact=dict(qk=qk_exact, v=v_exact, mlp=n_exact, embed=d_exact))


def last_iteration(opts: AdaptiveOptions) -> int:
    """The iteration from which every threshold is 0, so sizes cannot shrink further."""
    slowest = min(r for r in opts.gamma_ratio if r > 0)
    return int(math.ceil(1.0 / (opts.gamma_qkv * slowest) - 1e-9))


def search(spectra: Spectra, scores: GroupScores, embed_scores: torch.Tensor, opts: AdaptiveOptions,
           within_budget: Callable[[Plan], bool]) -> tuple[Plan, int]:
    """The first iteration t (t = 0: the one-shot model unchanged) whose plan is within budget.

    Sizes only shrink as t grows, so cost is monotone in t and the first t is found by
    bisection (measured latency is monotone up to noise). Returns (plan, plans evaluated).
    """
    plans: dict[float, Plan] = {}
    evaluated = 0
    over: Plan | None = None

    def ok(t: float) -> bool:
        nonlocal evaluated, over
        if t not in plans:
            plans[t] = plan_at(t, spectra, scores, embed_scores, opts)
        evaluated += 1
        fits = within_budget(plans[t])
        if not fits and (over is None or t > over.t):
            over = plans[t]
        return fits

    hi = min(last_iteration(opts), opts.max_iters)
    if not ok(hi):
        raise NuwaError("budget unreachable: even the smallest model of the adaptive stage exceeds it")
    lo = -1  # invariant: ok(hi) and not ok(lo) (lo = -1 is a sentinel)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    if hi > 0:
        lo_f, hi_f = float(hi - 1), float(hi)
        for _ in range(opts.refine_steps):
            mid = (lo_f + hi_f) / 2
            if ok(mid):
                hi_f = mid
            else:
                lo_f = mid
        hi = hi_f if hi_f != int(hi_f) else int(hi_f)
    plan = plans[hi]
    plan.over = over
    if opts.fill and hi > 0 and "embed" not in opts.exclude:
        plan, n = _fill(plan, spectra, scores, embed_scores, opts, within_budget)
        evaluated += n
    return plan, evaluated


def _fill(found: Plan, spectra: Spectra, scores: GroupScores, embed_scores: torch.Tensor, opts: AdaptiveOptions,
          within_budget: Callable[[Plan], bool]) -> tuple[Plan, int]:
    """With `found`'s embedding dims held, the first t' <= found.t within budget (bisection: the
    cost is monotone in t'); `found` itself is within budget at t' = found.t."""
    at = lambda t: plan_at(t, spectra, scores, embed_scores, opts, hold=found)  # noqa: E731
    first = at(0.0)
    if within_budget(first):
        first.over = found.over
        return first, 1
    lo, hi, best, over, evaluated = 0.0, float(found.t), found, first, 1
    for _ in range(opts.refine_steps + int(math.log2(max(found.t, 1))) + 1):
        mid = (lo + hi) / 2
        candidate = at(mid)
        evaluated += 1
        if within_budget(candidate):
            hi, best = mid, candidate
        else:
            lo, over = mid, candidate
    best.over = over
    return best, evaluated


def materialise(rotated: EdgeViT, plan: Plan, *, svd: bool = True, scores: GroupScores | None = None) -> EdgeViT:
    """Apply a plan to the one-shot model. With `svd`, `rotated` is in its singular basis and the
    first r dims are kept; otherwise the r query-key/value dims with the highest scores are kept."""
    if svd:
        qk_keep: list = plan.qk
        v_keep: list = plan.v
    else:
        assert scores is not None, "score-based query-key/value pruning needs scores"
        qk_keep = [[top_k(h, r).tolist() for h in s] for s, r in zip(scores.qk, plan.qk)]
        v_keep = [[top_k(h, r).tolist() for h in s] for s, r in zip(scores.v, plan.v)]
    m = prune_qk(rotated, qk_keep)
    m = prune_v(m, v_keep)
    m = prune_mlp(m, plan.neurons)
    return prune_embedding(m, plan.embed)
