"""X-Pruner (Yu & Xiang, CVPR 2023), adapted to EdgeViT's prunable units.

Faithful: every prunable unit has an explainability-aware mask that is class-wise (one learnable
logit per class and unit; a training sample is gated by its label's row), trained jointly with the
weights on the sub-task; the pruned model inherits the jointly trained weights, and the final
fine-tuning is the shared recovery. Units are ranked by their masks summed over the classes (as
the paper's first version does) and pruned to meet the cost target.

Approximated: the paper learns per-layer thresholds under its cost constraint; here one global
threshold on the class-mean logits, recomputed every step, keeps the hard mask exactly at a cost
cap that falls gradually (cubic) from the full cost to the target after a warm-up: the sparsity
term is that differentiable thresholding, sigmoid((logit - threshold) / temperature), not a
penalty. The final selection is the shared global ranking to the exact budget. A `tie` term
keeps each class's logits near their mean, because the deployed model (no label at inference)
keeps the class-mean mask, folded into the weights. Step count and learning rates are tuned on a
grid scored by the pruned model's top-1 on the derivation's validation split (before recovery),
never on the test split.

Units: heads and embedding dims, query-key and value dims (shared by the heads of a layer,
because EdgeViT keeps one per-head size per layer) and MLP neurons. Gates act through forward
hooks on the model's own modules (nothing of timm or of the model is patched), removed afterwards.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..cost import cost, cost_of_sizes
from ..device import autocast
from ..errors import NuwaError
from ..importance import GroupScores
from ..model import EdgeViT
from .selection import global_ranking


@dataclass
class MaskOptions:
    steps: int = 100  # joint training steps of each grid run (one batch each)
    lr: float = 0.1  # mask learning rate (Adam) at scale 1
    weight_lr: float = 2e-4  # the weights' learning rate (Adam) at scale 1
    lr_scales: tuple[float, ...] = (0.5, 2.0)  # grid: both learning rates times each scale, one run each
    stops: tuple[float, ...] = (0.5, 1.0)  # grid: every run is also evaluated at these shares of `steps`
    warmup: float = 0.2  # share of the steps to the first stop that learns the masks before any unit goes
    temperature: float = 0.5  # of the gates sigmoid((logit - threshold) / temperature)
    tie: float = 0.1  # weight of the class-wise logits' variance around their class mean
    val_samples: int = 1024  # validation images that score each grid point

    def __post_init__(self) -> None:
        self.lr_scales, self.stops = tuple(self.lr_scales), tuple(self.stops)
        if not (self.lr_scales and all(s > 0 for s in self.lr_scales)):
            raise NuwaError(f"xpruner lr_scales={self.lr_scales!r} must be positive numbers, at least one")
        if not (self.stops and all(0 < f <= 1 for f in self.stops)):
            raise NuwaError(f"xpruner stops={self.stops!r} must be shares of the steps in (0, 1], at least one")
        if not (0 <= self.warmup < 1 and self.temperature > 0):
            raise NuwaError(f"xpruner warmup={self.warmup!r} must be in [0, 1), temperature={self.temperature!r} > 0")


class ClassGates(torch.nn.Module):
    """Class-wise mask logits (classes, units) for every unit kind; `labels` picks the rows and
    `threshold` (one for all units, set by `retarget`) separates kept from pruned units."""

    def __init__(self, model: EdgeViT, T: float) -> None:
        super().__init__()
        cfg, C = model.config, model.config.num_classes
        P = torch.nn.ParameterList
        full = lambda n: torch.nn.Parameter(torch.zeros(C, n))  # noqa: E731
        self.heads = P([full(l.num_heads) for l in cfg.layers])
        self.qk = P([full(l.qk_dim) for l in cfg.layers])
        self.v = P([full(l.v_dim) for l in cfg.layers])
        self.neurons = P([full(l.mlp_dim) for l in cfg.layers])
        self.embed = full(cfg.embed_dim)
        self.T, self.threshold = T, -2.0 * T
        self.labels: torch.Tensor | None = None

    def _g(self, z: torch.Tensor) -> torch.Tensor:  # per-sample gates (B, n)
        return torch.sigmoid((z[self.labels] - self.threshold) / self.T)

    def mean_gate(self, z: torch.Tensor) -> torch.Tensor:  # the deployed, label-free mask (n,)
        return torch.sigmoid((z - self.threshold) / self.T).mean(0)

    def attach(self, model: EdgeViT) -> list:
        hooks = []
        emb = lambda: self._g(self.embed)[:, None, :]  # noqa: E731
        hooks.append(model.blocks[0].register_forward_pre_hook(lambda m, a: (a[0] * emb(),)))
        for i, blk in enumerate(model.blocks):
            lc = model.config.layers[i]
            H, dq, dv = lc.num_heads, lc.qk_dim, lc.v_dim

            def qkv_hook(m, a, out, i=i, H=H, dq=dq, dv=dv):
                q, k, v = out.split([H * dq, H * dq, H * dv], dim=-1)
                gq = self._g(self.qk[i]).repeat(1, H)
                gv = (self._g(self.heads[i])[:, :, None] * self._g(self.v[i])[:, None, :]).flatten(1)
                return torch.cat([q * gq[:, None], k, v * gv[:, None]], dim=-1)

            hooks.append(blk.attn.qkv.register_forward_hook(qkv_hook))
            hooks.append(blk.mlp.fc2.register_forward_pre_hook(
                lambda m, a, i=i: (a[0] * self._g(self.neurons[i])[:, None, :],)))
            for mod in (blk.attn.proj, blk.mlp.fc2):  # keep the residual stream gated
                hooks.append(mod.register_forward_hook(lambda m, a, out: out * emb()))
        return hooks

    def _groups(self) -> list[torch.Tensor]:  # per layer heads, qk, v, neurons; then embed
        return [t for l in zip(self.heads, self.qk, self.v, self.neurons) for t in l] + [self.embed]

    @torch.no_grad()
    def retarget(self, cfg, cap: float, metric: str) -> float:
        """Put the threshold between the units a cost cap removes and those it keeps: the units of
        lowest class-mean logit go first, all kinds together, until the hard mask's cost fits."""
        groups = self._groups()
        z = torch.cat([g.mean(0) for g in groups]).cpu()
        gid = torch.cat([torch.full((g.shape[1],), j) for j, g in enumerate(groups)])
        order = torch.sort(z, stable=True).indices
        removed = torch.nn.functional.one_hot(gid[order], len(groups)).cumsum(0)
        full = torch.tensor([g.shape[1] for g in groups])

        def fits(k: int) -> bool:
            n = (full - removed[k - 1]) if k else full
            layers = [tuple(int(x) for x in n[4 * l: 4 * l + 4]) for l in range(len(cfg.layers))]
            return cost_of_sizes(cfg, int(n[-1]), layers, metric) <= cap

        lo, hi = 0, len(z) - 1  # bisection: fewest removals that fit (at worst all but one)
        if fits(0):
            hi = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        zs = z[order]
        self.threshold = float(zs[0]) - 2 * self.T if hi == 0 else float(zs[hi - 1] + zs[hi]) / 2
        return hi / len(z)

    def soft_cost(self, model: EdgeViT, metric: str) -> torch.Tensor:
        s = self.mean_gate
        layers = [(s(h).sum(), s(q).sum(), s(v).sum(), s(n).sum())
                  for h, q, v, n in zip(self.heads, self.qk, self.v, self.neurons)]
        return cost_of_sizes(model.config, s(self.embed).sum(), layers, metric)

    def spread(self) -> torch.Tensor:
        """Mean variance of the class-wise logits around their class mean."""
        zs = self._groups()
        return sum(z.var(0, unbiased=False).sum() for z in zs) / sum(z.shape[1] for z in zs)

    def scores(self) -> GroupScores:
        # The class-summed mask logit ranks the units (the order of the summed masks, without ties
        # where sigmoids saturate); sigmoid keeps the scores positive.
        s = lambda z: torch.sigmoid(z.detach().double().mean(0)).cpu()  # noqa: E731
        return GroupScores(
            heads=[s(h) for h in self.heads],
            qk=[s(q)[None, :].expand(h.shape[1], -1).clone() for q, h in zip(self.qk, self.heads)],
            v=[s(v)[None, :].expand(h.shape[1], -1).clone() for v, h in zip(self.v, self.heads)],
            neurons=[s(n) for n in self.neurons], embed=s(self.embed))

    @torch.no_grad()
    def fold(self, model: EdgeViT) -> EdgeViT:
        """A copy of `model` computing what the hooks compute with the class-mean mask."""
        m = copy.deepcopy(model)
        e = self.mean_gate(self.embed)
        m.patch_embed.proj.weight.mul_(e[:, None, None, None])
        m.patch_embed.proj.bias.mul_(e)
        m.cls_token.mul_(e)
        m.pos_embed.mul_(e)
        for i, blk in enumerate(m.blocks):
            H = blk.attn.num_heads
            gq = self.mean_gate(self.qk[i]).repeat(H)
            gv = (self.mean_gate(self.heads[i])[:, None] * self.mean_gate(self.v[i])[None, :]).flatten()
            g = torch.cat([gq, torch.ones_like(gq), gv])
            blk.attn.qkv.weight.mul_(g[:, None])
            if blk.attn.qkv.bias is not None:
                blk.attn.qkv.bias.mul_(g)
            blk.mlp.fc2.weight.mul_(self.mean_gate(self.neurons[i])[None, :])
            for lin in (blk.attn.proj, blk.mlp.fc2):
                lin.weight.mul_(e[:, None])
                if lin.bias is not None:
                    lin.bias.mul_(e)
        return m


def joint_run(model: EdgeViT, data: list, *, full_cost: float, target_cost: float, metric: str, opts: MaskOptions,
              scale: float, seed: int, at_stop) -> list[float]:
    """Train `model` (in place) and fresh class-wise masks jointly for `opts.steps` steps over
    `data` (cycled); `at_stop(step, gates)` runs at every stop. The cost cap of the masks' threshold
    falls from `full_cost` to `target_cost` on a cubic schedule after a warm-up (gradual pruning),
    reached at the first stop. Returns the trace of the masks' soft cost over the target."""
    torch.manual_seed(seed)
    gates = ClassGates(model, opts.temperature).to(next(model.parameters()).device)
    stops = sorted({max(1, round(f * opts.steps)) for f in opts.stops})
    warm = int(opts.warmup * stops[0])
    opt = torch.optim.Adam([dict(params=gates.parameters(), lr=opts.lr * scale),
                            dict(params=model.parameters(), lr=opts.weight_lr * scale)])
    model.train()
    hooks = gates.attach(model)
    trace = []
    try:
        for step in range(1, opts.steps + 1):
            t = min(1.0, max(0, step - warm) / max(stops[0] - warm, 1))
            gates.retarget(model.config, full_cost - (full_cost - target_cost) * (1 - (1 - t) ** 3), metric)
            x, y = data[(step - 1) % len(data)]
            gates.labels = y
            with autocast(x.device):
                loss = F.cross_entropy(model(x), y) + opts.tie * gates.spread()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step in stops:
                gates.retarget(model.config, target_cost, metric)  # the masks moved: the threshold follows
                with torch.no_grad():
                    trace.append(float(gates.soft_cost(model, metric) / target_cost))
                for h in hooks:
                    h.remove()
                hooks = []
                at_stop(step, gates)
                hooks = gates.attach(model)
    finally:
        for h in hooks:
            h.remove()
        model.eval()
    return trace


def _moved(start: EdgeViT, now: EdgeViT) -> float:
    """Relative L2 distance of the jointly trained weights from where they started."""
    a = torch.cat([p.detach().flatten() for p in start.parameters()])
    b = torch.cat([p.detach().flatten() for p in now.parameters()])
    return round(float((b - a).norm() / a.norm()), 6)


def xpruner(model: EdgeViT, task, within_budget, *, target_cost: float, metric: str, opts: MaskOptions,
            batch_size: int, seed: int):
    """The grid of joint runs; returns (pruned model of the best validation top-1, its selection, info)."""
    from ..evaluate import evaluate

    if model.config.family:  # its gates fold into a plain class-token ViT's layout only
        raise NuwaError(f"method xpruner supports plain class-token ViTs; this model has {model.config.family}")

    data = list(task.batches(task.fit, opts.steps * batch_size, seed=seed, batch_size=batch_size, desc=None))
    best, grid, evaluated = None, [], 0
    for scale in opts.lr_scales:
        run_model = copy.deepcopy(model)

        def at_stop(step, gates, scale=scale, run_model=run_model):
            nonlocal best, evaluated
            folded = gates.fold(run_model)
            sel, n = global_ranking(folded.config, gates.scores(), lambda s: within_budget(s, folded))
            evaluated += n
            pruned = sel.apply(folded)
            top1 = evaluate(pruned, task.val, preprocess=task.preprocess, limit=opts.val_samples,
                            batch_size=batch_size, desc=None)["top1"]
            point = dict(lr=opts.lr * scale, weight_lr=opts.weight_lr * scale, steps=step, val_top1=top1,
                         weights_moved=_moved(model, run_model))
            grid.append(point)
            if best is None or top1 > best[0]["val_top1"]:
                best = (point, pruned, sel)

        t0 = time.perf_counter()
        trace = joint_run(run_model, data, full_cost=cost(model.config, metric), target_cost=target_cost, metric=metric, opts=opts, scale=scale, seed=seed, at_stop=at_stop)
        grid[-1]["final_soft_cost_ratio"] = trace[-1]
        grid[-1]["run_seconds"] = round(time.perf_counter() - t0, 3)
    point, pruned, sel = best
    # passes: training batches (forward + backward); val_images: forward-only images of the grid's scoring
    info = dict(passes=opts.steps * len(opts.lr_scales), val_images=len(grid) * min(opts.val_samples, len(task.val)),
                grid=grid, chosen=point, plans_evaluated=evaluated)
    return pruned, sel, info
