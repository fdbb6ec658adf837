"""The NuWa method (paper section 3): classifier slicing and depth by the per-layer classifiers
(one-shot), Taylor head selection, SVD reparametrisation of query-key and value, then the
adaptive stage that shrinks query-key/value sizes, MLP neurons and embedding dims together
until the budget is met."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from .. import layer_classifiers as lc
from ..base import base_embed_scores, base_layer_heads
from ..errors import NuwaError
from ..importance import GroupScores, Taylor
from ..model import EdgeViT
from ..options import DeriveOptions
from ..prune import prune_classifier, prune_depth, prune_heads, slice_head
from ..schedule import Plan, materialise, search, select_heads
from ..svd import collect_moments, reparametrize
from ..task import SubTask


def _slice_scores(scores: GroupScores, keep_heads: list[list[int]]) -> GroupScores:
    return GroupScores(heads=[s[k] for s, k in zip(scores.heads, keep_heads)],
                       qk=[s[k] for s, k in zip(scores.qk, keep_heads)],
                       v=[s[k] for s, k in zip(scores.v, keep_heads)],
                       neurons=scores.neurons, embed=scores.embed, passes=scores.passes)


def depth_accuracies(base: EdgeViT, base_dir: Path | None, task: SubTask,
                     opts: DeriveOptions) -> tuple[list[dict], list[float]]:
    """The per-layer classifiers (cached beside the base) and their validation top-1 on the sub-task."""
    from ..evaluate import collect_cls_tokens

    heads = base_layer_heads(base, base_dir, task, opts)
    feats, labels = collect_cls_tokens(base, task.val, preprocess=task.preprocess, batch_size=opts.batch_size,
                                       desc="depth features")
    return heads, lc.accuracies(feats, labels, heads, task.classes, eps=base.config.norm_eps)


def cut_depth(sliced: EdgeViT, keep: int, heads: list[dict], classes: list[int]) -> EdgeViT:
    """The classifier-sliced model cut to `keep` layers, exiting through that layer's classifier."""
    if keep >= sliced.config.depth:
        return sliced
    return prune_depth(sliced, keep, slice_head(heads[keep - 1], list(classes)))


def one_shot(base: EdgeViT, base_dir: Path | None, task: SubTask, opts: DeriveOptions,
             timer=None, budget=None, max_keep: int | None = None) -> tuple[EdgeViT, dict]:
    """NuWa's one-shot stage: slice the classifier to the sub-task, then drop layers from the top
    by the depth rule (rho_depth on the sliced per-layer classifiers' validation top-1). Under
    the budget policy with a `budget` (derivation.Budget), layers the rule drops come back while
    the cut model alone would be within the budget (never more than `max_keep`); without a budget
    the rule alone decides."""
    timer = timer or _untimed
    info: dict[str, Any] = {}
    with timer("classifier"):
        model = prune_classifier(base, task.classes)
    with timer("depth"):
        if opts.prune_depth and base.config.depth > 1:
            heads, accs = depth_accuracies(base, base_dir, task, opts)
            keep = lc.choose_depth(accs, opts.rho_depth)
            info.update(layer_val_top1=accs, depth_rule=keep, depth_policy=opts.depth_policy)
            if opts.depth_policy == "budget" and budget is not None:
                sliced = model

                keep = lc.budget_depth(keep, base.config.depth,
                                       lambda k: _fits(budget, cut_depth(sliced, k, heads, task.classes)))
                keep = keep if max_keep is None else max(info["depth_rule"], min(keep, max_keep))
            model = cut_depth(model, keep, heads, task.classes)
        info["depth"] = model.config.depth
        if budget is not None and budget.rate is not None:
            info["rate_after_depth"] = budget.rate_of(model.config)
    return model, info


def restore_heads(keep: list[list[int]], scores: list, within_budget) -> list[list[int]]:
    """Under the budget policy, the head rule may not cut past the requested cost either: while
    the kept heads alone are within the budget, the best-scored dropped head comes back. Returns
    the fewest heads at or above the request (or every head)."""
    keep = [sorted(k) for k in keep]
    dropped = sorted(((float(s[j]), i, j) for i, s in enumerate(scores) for j in range(len(s)) if j not in keep[i]),
                     reverse=True)
    for _, i, j in dropped:
        if not within_budget(keep):
            break
        keep[i] = sorted(keep[i] + [j])
    return keep


def _fits(budget, model: EdgeViT) -> bool:
    return budget(model.config, lambda: model)


@contextlib.contextmanager
def _untimed(phase: str):
    yield


def derive_nuwa(base: EdgeViT, base_dir: Path | None, task: SubTask, budget, opts: DeriveOptions,
                timer, seed: int) -> tuple[EdgeViT, dict]:
    """NuWa. Under the budget policy, if the adaptive stage cannot reach the budget from the depth
    chosen (a latency budget of a model whose time goes to its layers' overhead, say), the depth
    steps back one layer at a time towards the rule's choice; the report says so (depth_fallback)."""
    model, info = one_shot(base, base_dir, task, opts, timer, budget)
    tried = []
    while True:
        try:
            pruned, out = _widths(model, info, base, base_dir, task, budget, opts, timer, seed)
            return pruned, dict(out, depth_fallback=tried) if tried else out
        except NuwaError as e:
            if "unreachable" not in str(e) or "depth_rule" not in info or info["depth"] <= info["depth_rule"] \
                    or opts.depth_policy != "budget":
                raise
            tried.append(info["depth"])
            model, info = one_shot(base, base_dir, task, opts, timer, budget, max_keep=info["depth"] - 1)


def _widths(model: EdgeViT, info: dict, base: EdgeViT, base_dir: Path | None, task: SubTask, budget,
            opts: DeriveOptions, timer, seed: int) -> tuple[EdgeViT, dict]:
    """Heads, then the adaptive stage, on the one-shot model."""
    info = dict(info)
    passes = 0
    with timer("importance"):
        batches = task.batches(task.fit, opts.score_samples, seed=seed, batch_size=opts.batch_size,
                               desc="importance")
        scores = Taylor(microbatch=opts.taylor_microbatch)(model, batches)
        passes += scores.passes
    with timer("heads"):
        keep_heads = select_heads(scores.heads, opts.rho_head) if opts.prune_heads else \
            [list(range(l.num_heads)) for l in model.config.layers]
        if opts.depth_policy == "budget" and opts.prune_heads:
            info["heads_rule"] = sum(map(len, keep_heads))
            keep_heads = restore_heads(keep_heads, scores.heads,
                                       lambda keep: _fits(budget, prune_heads(model, keep)))
        model = prune_heads(model, keep_heads)
        scores = _slice_scores(scores, keep_heads)
        info["heads_kept"] = keep_heads
    with timer("embedding_scores"):
        embed_scores, n = base_embed_scores(base, base_dir, task, opts)
        passes += n
    with timer("svd"):
        method = "product" if opts.svd == "off" else opts.svd
        stats = None
        if method == "data":  # the layers' inputs on the fit images the importance scores saw
            stats = collect_moments(model, task.batches(task.fit, opts.score_samples, seed=seed,
                                                        batch_size=opts.batch_size, desc="svd moments"))
        rotated, spectra = reparametrize(model, method, stats=stats)
    with timer("adaptive"):
        use_svd = opts.svd != "off"
        source = rotated if use_svd else model

        def build(plan: Plan) -> EdgeViT:
            return materialise(source, plan, svd=use_svd, scores=scores)

        plan, evaluated = search(spectra, scores, embed_scores, opts.adaptive,
                                 lambda plan: budget(plan.config(model.config), lambda: build(plan)))
        pruned = build(plan)
    if budget.rate is not None and plan.over is not None:
        info["nearest_over_budget_rate"] = budget.rate_of(plan.over.config(model.config))
    info.update(iterations=plan.t, thresholds=plan.rho, sizes_exact=plan.exact, plans_evaluated=evaluated,
                passes=passes)
    return pruned, info
