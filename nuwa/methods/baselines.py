"""Baselines as derivation methods: Random, NViT-style and X-Pruner-style.

All three start from the same classifier-sliced base (no depth pruning: none of them has a depth
rule), select units in every prunable dimension through `selection`, and share NuWa's recovery.
Each records its derivation cost: wall seconds per phase (by the caller's timer) and the forward/
backward passes it spent.
"""
from __future__ import annotations

from ..importance import Taylor
from ..prune import prune_classifier
from .selection import Selection, global_ranking, random_quantiles
from .xpruner import MaskOptions, train_masks


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
        sel, evaluated = global_ranking(model.config, scores, _fits(model, budget), per_parameter=False)
    return _finish(model, sel, timer, dict(passes=0, plans_evaluated=evaluated))


def derive_nvit(base, base_dir, task, budget, opts, timer, seed):
    """One saliency for every unit (squared Taylor, NViT's Hessian-aware proxy), ranked globally
    per parameter; no dimension-specific strategy, no SVD."""
    model = _sliced(base, task, timer)
    with timer("importance"):
        batches = task.batches(task.fit, opts.score_samples, seed=seed, batch_size=opts.batch_size, desc="importance")
        scores = Taylor(microbatch=opts.taylor_microbatch, power=2)(model, batches)
    with timer("select"):
        sel, evaluated = global_ranking(model.config, scores, _fits(model, budget))
    return _finish(model, sel, timer, dict(passes=scores.passes, plans_evaluated=evaluated))


def derive_xpruner(base, base_dir, task, budget, opts, timer, seed):
    """Learnable masks trained on sub-task data towards the target cost, then pruned by mask value."""
    model = _sliced(base, task, timer)
    metric = budget.metric if budget.rate is not None else "flops"
    target = (1 - (budget.rate if budget.rate is not None else 0.5)) * budget.base_cost[metric]
    with timer("masks"):
        mo = MaskOptions(**(opts.xpruner or {}))
        batches = task.batches(task.fit, mo.steps * opts.batch_size, seed=seed, batch_size=opts.batch_size,
                               desc=None)
        scores, passes, trace = train_masks(model, batches, target_cost=target, metric=metric, opts=mo, seed=seed)
    with timer("select"):
        sel, evaluated = global_ranking(model.config, scores, _fits(model, budget), per_parameter=False)
    return _finish(model, sel, timer, dict(passes=passes, final_soft_cost_ratio=trace[-1] if trace else None,
                                           plans_evaluated=evaluated))

