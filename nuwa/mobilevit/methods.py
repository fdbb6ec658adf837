"""Pruning methods on a MobileViT: NuWa's schedule and the MobileViT compression study's weight-norm recipe.

* `nuwa`: Taylor head ranking (rho_head, and under the budget policy no further than the
  request), every layer rotated into its SVD basis, then NuWa's adaptive stage over query-key
  and value sizes (SVD energy), MLP neurons and expanded conv channels (Taylor, ranked
  globally) and the blocks' transformer widths (Taylor, ranked globally), searched to the budget.
  Depth does not apply: NuWa's depth stage cuts the layer stack at an early exit on the class
  token, and a MobileViT has no class token, and its transformer layers sit between convolutions.
* `nuwa-norm`: NuWa's schedule with the MobileViT compression study's criterion (weight norms instead of Taylor
  scores), which separates the criterion from the schedule.
* `norm` (the MobileViT compression study): every layer keeps half its heads (4 -> 2), those of largest weight norm;
  then the same share of MLP neurons in every layer, those of largest weight norm, the largest
  share within budget. Widths and convolutions stay.
"""
from __future__ import annotations

import math
from typing import Callable


from ..errors import NuwaError
from ..methods.nuwa import _slice_scores, restore_heads
from ..prune.rules import round_size, top_k
from ..schedule import Plan, search, select_heads
from ..svd import Spectra, rotate_layer
from . import prune as P
from . import scores as S
from .arch import MobileViTConfig
from .model import EdgeMobileViT

METHODS = ("nuwa", "norm", "nuwa-norm")
Fits = Callable[[MobileViTConfig], bool]


def _per_block(lay: S.Layout, per_layer: list) -> dict:
    out: dict = {}
    for (at, _j), v in zip(lay.layers, per_layer):
        out.setdefault(at, []).append(v)
    return out


def heads_config(cfg: MobileViTConfig, lay: S.Layout, keep: list[list[int]]) -> MobileViTConfig:
    cfg = MobileViTConfig.from_dict(cfg.to_dict())
    for ((s, i), j), k in zip(lay.layers, keep):
        lc = cfg.stages[s][i].layers[j]
        lc.attn_scale, lc.num_heads = lc.scale, len(k)
    return cfg


def plan_config(cfg: MobileViTConfig, lay: S.Layout, plan: Plan) -> MobileViTConfig:
    """The sizes a plan gives, without touching weights (the budget check)."""
    cfg = MobileViTConfig.from_dict(cfg.to_dict())
    n = len(lay.layers)
    for ((s, i), j), q, v, neurons in zip(lay.layers, plan.qk, plan.v, plan.neurons[:n]):
        lc = cfg.stages[s][i].layers[j]
        lc.attn_scale, lc.qk_dim, lc.v_dim, lc.mlp_dim = lc.scale, q, v, len(neurons)
    for (s, i), ch in zip(lay.irs, plan.neurons[n:]):
        cfg.stages[s][i].mid_chs = len(ch)
    for (s, i), keep in _widths(lay, plan).items():
        cfg.stages[s][i].width = len(keep)
    return cfg


def _widths(lay: S.Layout, plan: Plan) -> dict:
    """Each block's kept width dims; a block the global ranking emptied keeps its first dim
    (an empty transformer would cut the block's global path)."""
    return {at: keep or [0] for at, keep in lay.split_embed(plan.embed).items()}


def materialise(source: EdgeMobileViT, lay: S.Layout, plan: Plan, scores=None) -> EdgeMobileViT:
    """A plan applied. `source` in its SVD basis keeps the first r query-key/value dims; with
    `scores` (svd off) `source` is unrotated and the r best-scored dims of each head are kept."""
    n = len(lay.layers)
    qk, v = plan.qk, plan.v
    if scores is not None:
        qk = [[top_k(h, r).tolist() for h in s] for s, r in zip(scores.qk, plan.qk)]
        v = [[top_k(h, r).tolist() for h in s] for s, r in zip(scores.v, plan.v)]
    m = P.prune_qk(source, _per_block(lay, qk))
    m = P.prune_v(m, _per_block(lay, v))
    m = P.prune_mlp(m, _per_block(lay, plan.neurons[:n]))
    m = P.prune_expansion(m, dict(zip(lay.irs, plan.neurons[n:])))
    return P.prune_width(m, _widths(lay, plan))


def rotate(model: EdgeMobileViT, lay: S.Layout, method: str = "product") -> tuple[EdgeMobileViT, Spectra]:
    """Every transformer layer rotated into its singular basis (same function), and the spectra."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    spectra = Spectra(qk=[], v=[])
    for (s, i), j in lay.layers:
        lc = model.config.stages[s][i].layers[j]
        qk, v = rotate_layer(state, f"stages.{s}.{i}.transformer.{j}.attn.", lc, method, qk=True, v=True)
        spectra.qk.append(qk), spectra.v.append(v)
    device = next(model.parameters()).device
    return P.rebuild(MobileViTConfig.from_dict(model.config.to_dict()), state).to(device), spectra


def derive_nuwa(model: EdgeMobileViT, batches, fits: Fits, opts, *, budget_policy: bool = True,
                criterion: str = "taylor") -> tuple[EdgeMobileViT, dict]:
    """NuWa on a class-sliced MobileViT; `batches` feed the Taylor scores (criterion "norm":
    weight norms, no data)."""
    if criterion == "norm":
        scores, lay = S.norms(model)
    else:
        scores, lay = S.taylor(model, batches, microbatch=max(opts.taylor_microbatch, 8))
    info: dict = dict(passes=scores.passes)
    keep = [list(range(len(h))) for h in scores.heads]
    if opts.prune_heads:
        keep = select_heads(scores.heads, opts.rho_head)
        info["heads_rule"] = sum(map(len, keep))
        if budget_policy:
            keep = restore_heads(keep, scores.heads, lambda k: fits(heads_config(model.config, lay, k)))
        model = P.prune_heads(model, _per_block(lay, keep))
        scores = _slice_scores(scores, keep)
    info["heads_kept"] = keep
    method = "product" if opts.svd == "off" else opts.svd
    if method == "data":
        raise NuwaError("svd 'data' needs per-layer input moments, which MobileViT derivations do not collect; "
                        "use product, joint or off")
    rotated, spectra = rotate(model, lay, method)
    plan, evaluated = search(spectra, scores, scores.embed, opts.adaptive,
                             lambda plan: fits(plan_config(model.config, lay, plan)))
    info.update(iterations=plan.t, thresholds=plan.rho, sizes_exact=plan.exact, plans_evaluated=evaluated)
    if opts.svd == "off":  # sizes from the spectra, dims by Taylor score (Table 1's comparison)
        return materialise(model, lay, plan, scores), info
    return materialise(rotated, lay, plan), info


def derive_norm(model: EdgeMobileViT, fits: Fits, *, round_to: int = 8) -> tuple[EdgeMobileViT, dict]:
    """The MobileViT compression study's recipe at the budget: heads halved by norm, then MLP neurons by norm."""
    scores, lay = S.norms(model)
    keep = [sorted(top_k(h, max(1, math.ceil(len(h) / 2))).tolist()) for h in scores.heads]
    model = P.prune_heads(model, _per_block(lay, keep))
    scores = _slice_scores(scores, keep)
    mlp = scores.neurons[: len(lay.layers)]

    def neurons_at(share: float) -> list[list[int]]:
        return [sorted(top_k(s, round_size(max(1, round(share * s.numel())), s.numel(), round_to)).tolist())
                for s in mlp]

    def config_at(share: float) -> MobileViTConfig:
        cfg = MobileViTConfig.from_dict(model.config.to_dict())
        for ((s, i), j), n in zip(lay.layers, neurons_at(share)):
            cfg.stages[s][i].layers[j].mlp_dim = len(n)
        return cfg

    info: dict = dict(heads_kept=keep)
    if fits(model.config):
        info["mlp_share"] = 1.0
        return model, info
    if not fits(config_at(0.0)):
        raise NuwaError("budget unreachable: halving the heads and cutting the MLPs to their minimum exceeds it")
    lo, hi = 0.0, 1.0  # fits(lo), not fits(hi)
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(config_at(mid)) else (lo, mid)
    info["mlp_share"] = lo
    return P.prune_mlp(model, _per_block(lay, neurons_at(lo))), info
