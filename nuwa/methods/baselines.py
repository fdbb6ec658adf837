"""Baselines as derivation methods: Random, NViT and X-Pruner.

All three start from the same classifier-sliced base (no depth pruning: none of them has a depth
rule), select units in every prunable dimension through `selection`, and share NuWa's recovery.
NViT (`nvit.py`) and X-Pruner (`xpruner.py`) follow their papers; each module says what it keeps
and what it approximates. Each records its derivation cost: wall seconds per phase (by the
caller's timer) and the forward/backward passes it spent.
"""
from __future__ import annotations

from ..prune import prune_classifier
from .nvit import nvit_prune
from .selection import Selection, global_ranking, random_quantiles
from .xpruner import MaskOptions, xpruner


def _fits(model, budget):
    return lambda sel: budget(sel.config(model.config), lambda: sel.apply(model))


def _sliced(base, task, timer):
    with timer("classifier"):
        return prune_classifier(base, task.classes)


def _finish(model, sel: Selection, timer, info: dict):
    with timer("apply"):
        pruned = sel.apply(model)
    info.update(heads_kept=sel.heads, depth=pruned.config.depth)
    return pruned, info


def derive_random(base, base_dir, task, budget, opts, timer, seed):
    """Random units, removed at the same pace from every layer and dimension; task-agnostic (no data)."""
    model = _sliced(base, task, timer)
    with timer("select"):
        scores = random_quantiles(model.config, seed)
        sel, evaluated = global_ranking(model.config, scores, _fits(model, budget))
    return _finish(model, sel, timer, dict(passes=0, plans_evaluated=evaluated))


def derive_nvit(base, base_dir, task, budget, opts, timer, seed):
    """NViT: Hessian-aware group saliency over cost saved, ranked globally, in a few iterations
    (`score_samples` per-sample passes in all); no dimension-specific strategy, no SVD."""
    model = _sliced(base, task, timer)
    model, sel, info = nvit_prune(model, task, budget, samples=opts.score_samples, batch_size=opts.batch_size,
                                  seed=seed, fits=_fits, timer=timer)
    return _finish(model, sel, timer, info)


def derive_xpruner(base, base_dir, task, budget, opts, timer, seed):
    """X-Pruner: class-wise masks trained jointly with the weights towards the target cost, on a
    small grid of step counts and learning rates scored by validation top-1 before recovery."""
    model = _sliced(base, task, timer)
    metric = budget.metric if budget.rate is not None else "flops"
    # A latency budget has no cost target: the masks aim at half the FLOPs, the selection at the latency.
    target = (1 - (budget.rate if budget.rate is not None else 0.5)) * budget.base_cost[metric]
    with timer("masks"):
        mo = MaskOptions(**(opts.xpruner or {}))
        pruned, sel, info = xpruner(model, task, lambda s, m: _fits(m, budget)(s), target_cost=target,
                                    metric=metric, opts=mo, batch_size=opts.batch_size, seed=seed)
    info.update(heads_kept=sel.heads, depth=pruned.config.depth)
    return pruned, info
