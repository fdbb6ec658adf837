"""NViT (Yang et al., "Global Vision Transformer Pruning with Hessian-Aware Saliency", CVPR 2023),
adapted to EdgeViT's prunable units.

Faithful: the saliency of a structural group G is the second-order Taylor term of the loss change
when G is removed, with the Hessian replaced by the per-sample Fisher (g g^T), i.e.
1/2 E_x[(sum_{w in G} w dL(x)/dw)^2] -- the gradient-weight products are summed over the group
*before* squaring, so a group's weights act together. Every unit (heads, query-key and value dims,
MLP neurons, embedding dims) is ranked globally by its saliency divided by the cost its removal
saves (NViT's latency-aware normalisation), and pruning proceeds in a few iterations, scores
re-estimated on the pruned model each time.

Approximated: NViT's latency lookup table becomes the budget's own measure (FLOPs or parameters,
`selection.unit_costs`; FLOPs for a latency budget); there is no fine-tuning or distillation
between iterations (the iterations share the one scoring budget, `score_samples`), and the final
fine-tuning is the shared recovery.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cost import cost
from ..device import autocast
from ..importance import Batches, GroupScores, _per_sample_grads, group_scores
from ..model import EdgeViT
from .selection import Selection, global_ranking

ITERATIONS = 3  # pruning iterations of a rate budget; each removes the same share of what is left


def hessian_saliency(model: EdgeViT, batches: Batches, *, memory_budget: float = 512e6) -> GroupScores:
    """1/2 E_x[(sum_{w in G} w g_w(x))^2] for every group G of `model`, over per-sample gradients."""
    was_training = model.training
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    chunk = max(1, min(64, int(memory_budget // (8 * sum(p.numel() for p in params.values())))))
    per_sample = _per_sample_grads(model, params, F.cross_entropy)
    acc, n = None, 0
    try:
        for x, y in batches:
            for xs, ys in zip(x.split(chunk), y.split(chunk)):
                with autocast(xs.device):
                    grads = per_sample(params, xs, ys)
                for i in range(len(xs)):
                    g = group_scores(model, {k: grads[k][i] * p for k, p in params.items()})
                    sq = [t.double() ** 2 for t in _flat(g)]
                    acc = sq if acc is None else [a + s for a, s in zip(acc, sq)]
                n += len(xs)
    finally:
        model.train(was_training)
    return _unflat(model, [(a / (2 * max(n, 1))).float().cpu() for a in acc], passes=n)


def _flat(g: GroupScores) -> list[torch.Tensor]:
    return [*g.heads, *g.qk, *g.v, *g.neurons, g.embed]


def _unflat(model: EdgeViT, ts: list[torch.Tensor], passes: int) -> GroupScores:
    L = model.config.depth
    return GroupScores(heads=ts[:L], qk=ts[L:2 * L], v=ts[2 * L:3 * L], neurons=ts[3 * L:4 * L], embed=ts[4 * L],
                       passes=passes)


def nvit_prune(model: EdgeViT, task, budget, *, samples: int, batch_size: int, seed: int, fits,
               timer) -> tuple[EdgeViT, Selection, dict]:
    """Iterative NViT pruning of `model` to `budget`: returns (the model the last selection applies
    to, that selection, info). `fits(model, budget)` turns the budget into a selection test."""
    rate = budget.rate
    metric = budget.metric if rate is not None else "flops"
    steps = min(ITERATIONS, samples) if rate is not None else 1  # a latency budget has no intermediate targets
    shares = [samples // steps + (k < samples % steps) for k in range(steps)]
    passes, evaluated = 0, 0
    for k in range(1, steps + 1):
        with timer("importance"):
            batches = task.batches(task.fit, shares[k - 1], seed=seed + k - 1, batch_size=batch_size, desc=None)
            scores = hessian_saliency(model, batches)
        passes += scores.passes
        with timer("select"):
            if k < steps:  # geometric schedule of the kept share: (1 - rate)^(k / steps)
                cap = (1 - rate) ** (k / steps) * budget.base_cost[metric]
                within = lambda s, m=model: cost(s.config(m.config), metric) <= cap  # noqa: E731
            else:
                within = fits(model, budget)
            sel, n = global_ranking(model.config, scores, within, cost_metric=metric)
        evaluated += n
        if k < steps:
            with timer("apply"):
                model = sel.apply(model)
    return model, sel, dict(passes=passes, plans_evaluated=evaluated, iterations=steps, normalised_by=metric)
