"""X-Pruner-style learnable masks: a sigmoid gate on every prunable unit, trained on the sub-task
with the weights frozen and a penalty that drives the masks' expected cost to the target; the
final mask values then rank the units for the shared global selection.

Gates: per head and per embedding dim, per query-key / value dim (shared by the heads of a layer,
because EdgeViT keeps one per-head size per layer) and per MLP neuron. They act through forward
hooks on the model's own modules (nothing of timm or of the model is patched), removed afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..cost import cost_of_sizes
from ..importance import GroupScores
from ..model import EdgeViT


@dataclass
class MaskOptions:
    steps: int = 100
    lr: float = 0.05
    penalty: float = 20.0  # weight of the squared excess of expected cost over the target
    init: float = 3.0  # initial gate logit (sigmoid 0.95: start from the dense model)


class Gates(torch.nn.Module):
    def __init__(self, model: EdgeViT, init: float) -> None:
        super().__init__()
        cfg = model.config
        P = torch.nn.ParameterList
        full = lambda n: torch.nn.Parameter(torch.full((n,), init))  # noqa: E731
        self.heads = P([full(l.num_heads) for l in cfg.layers])
        self.qk = P([full(l.qk_dim) for l in cfg.layers])
        self.v = P([full(l.v_dim) for l in cfg.layers])
        self.neurons = P([full(l.mlp_dim) for l in cfg.layers])
        self.embed = full(cfg.embed_dim)

    def attach(self, model: EdgeViT) -> list:
        hooks = []
        emb = lambda: torch.sigmoid(self.embed)  # noqa: E731
        hooks.append(model.blocks[0].register_forward_pre_hook(lambda m, a: (a[0] * emb(),)))
        for i, blk in enumerate(model.blocks):
            lc = model.config.layers[i]
            H, dq, dv = lc.num_heads, lc.qk_dim, lc.v_dim

            def qkv_hook(m, a, out, i=i, H=H, dq=dq, dv=dv):
                q, k, v = out.split([H * dq, H * dq, H * dv], dim=-1)
                gq = torch.sigmoid(self.qk[i]).repeat(H)
                gv = (torch.sigmoid(self.heads[i])[:, None] * torch.sigmoid(self.v[i])[None, :]).flatten()
                return torch.cat([q * gq, k, v * gv], dim=-1)

            hooks.append(blk.attn.qkv.register_forward_hook(qkv_hook))
            hooks.append(blk.mlp.fc2.register_forward_pre_hook(
                lambda m, a, i=i: (a[0] * torch.sigmoid(self.neurons[i]),)))
            for mod in (blk.attn.proj, blk.mlp.fc2):  # keep the residual stream gated
                hooks.append(mod.register_forward_hook(lambda m, a, out: out * emb()))
        return hooks

    def soft_cost(self, model: EdgeViT, metric: str) -> torch.Tensor:
        s = torch.sigmoid
        layers = [(s(h).sum(), s(q).sum(), s(v).sum(), s(n).sum())
                  for h, q, v, n in zip(self.heads, self.qk, self.v, self.neurons)]
        return cost_of_sizes(model.config, s(self.embed).sum(), layers, metric)

    def scores(self) -> GroupScores:
        s = lambda t: torch.sigmoid(t.detach())  # noqa: E731
        return GroupScores(
            heads=[s(h) for h in self.heads],
            qk=[s(q)[None, :].expand(len(h), -1).clone() for q, h in zip(self.qk, self.heads)],
            v=[s(v)[None, :].expand(len(h), -1).clone() for v, h in zip(self.v, self.heads)],
            neurons=[s(n) for n in self.neurons], embed=s(self.embed))


def train_masks(model: EdgeViT, batches, *, target_cost: float, metric: str, opts: MaskOptions,
                seed: int) -> tuple[GroupScores, int, list[float]]:
    """Train the gates for `opts.steps` steps over `batches` (cycled); returns (scores, passes, cost trace)."""
    torch.manual_seed(seed)
    gates = Gates(model, opts.init)
    was = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    hooks = gates.attach(model)
    opt = torch.optim.Adam(gates.parameters(), lr=opts.lr)
    trace, passes = [], 0
    data = list(batches)
    try:
        for step in tqdm(range(opts.steps), desc="x-pruner masks", leave=False):
            x, y = data[step % len(data)]
            ratio = gates.soft_cost(model, metric) / target_cost
            loss = F.cross_entropy(model(x), y) + opts.penalty * F.relu(ratio - 1) ** 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            passes += 1
            trace.append(float(ratio.detach()))
    finally:
        for h in hooks:
            h.remove()
        for p, w in zip(model.parameters(), was):
            p.requires_grad_(w)
    return gates.scores(), passes, trace
