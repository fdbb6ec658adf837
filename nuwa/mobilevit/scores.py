"""What the MobileViT methods rank by: Taylor scores (NuWa) or weight norms (the MobileViT compression study's recipe),
grouped per structural unit, and the flattened view the adaptive schedule reads.

The schedule (`nuwa.schedule`) was written for a ViT: per-layer heads, query-key and value
spectra, MLP neurons ranked globally with the first layer's kept whole, and one embedding. A
MobileViT maps onto it as: its transformer layers in order; "neurons" = the layers' MLP neurons
followed by the inverted residuals' expanded channels (both are expansions, ranked together by
the same loss-change estimate); "embedding" = the transformer widths of all MobileViT blocks,
concatenated and ranked globally.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..importance import GroupScores, layer_groups, weight_saliency
from .arch import MobileViTConfig
from .model import EdgeMobileViT

Address = tuple[int, int]


@dataclass
class Layout:
    """Where each flattened unit lives in the model."""

    layers: list[tuple[Address, int]]  # transformer layer k -> (block, layer in block)
    irs: list[Address]  # inverted residuals, after the layers in `neurons`
    blocks: list[Address]  # MobileViT blocks, in `embed` order
    widths: list[int]  # their transformer widths (segments of `embed`)

    @classmethod
    def of(cls, cfg: MobileViTConfig) -> "Layout":
        mv = [(s, i) for s, i, _ in cfg.mvit_blocks]
        return cls(layers=[((s, i), j) for s, i, b in cfg.mvit_blocks for j in range(len(b.layers))],
                   irs=[(s, i) for s, i, b in cfg.blocks if b.kind == "ir"], blocks=mv,
                   widths=[cfg.stages[s][i].width for s, i in mv])

    def split_embed(self, keep: list[int]) -> dict[Address, list[int]]:
        out, start = {}, 0
        for at, w in zip(self.blocks, self.widths):
            out[at] = [k - start for k in keep if start <= k < start + w]
            start += w
        return out


def _width_scores(sal: dict[str, torch.Tensor], cfg: MobileViTConfig, at: Address) -> torch.Tensor:
    s, i = at
    b = cfg.stages[s][i]
    p = f"stages.{s}.{i}."
    out = sal[p + "conv_1x1.weight"].flatten(1).sum(1) + sal[p + "conv_proj.conv.weight"].sum((0, 2, 3))
    out = out + sal[p + "norm.weight"] + sal[p + "norm.bias"]
    for j in range(len(b.layers)):
        t = f"{p}transformer.{j}."
        for n in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.proj.bias", "mlp.fc2.bias"):
            out = out + sal[t + n]
        out = out + sal[t + "attn.proj.weight"].sum(1) + sal[t + "mlp.fc2.weight"].sum(1)
        out = out + sal[t + "attn.qkv.weight"].sum(0) + sal[t + "mlp.fc1.weight"].sum(0)
    return out


def _expansion_scores(sal: dict[str, torch.Tensor], at: Address) -> torch.Tensor:
    p = f"stages.{at[0]}.{at[1]}."
    out = sal[p + "conv3_1x1.conv.weight"].sum((0, 2, 3))
    for conv in ("conv1_1x1.", "conv2_kxk."):
        out = out + sal[p + conv + "conv.weight"].flatten(1).sum(1) + sal[p + conv + "bn.weight"] + sal[p + conv + "bn.bias"]
    return out


def group(model: EdgeMobileViT, sal: dict[str, torch.Tensor], passes: int = 0) -> tuple[GroupScores, Layout]:
    """Per-weight saliencies summed into the schedule's flattened units."""
    cfg = model.config
    lay = Layout.of(cfg)
    heads, qk, v, neurons = [], [], [], []
    for (s, i), j in lay.layers:
        h, q, vv, n = layer_groups(sal, f"stages.{s}.{i}.transformer.{j}.", cfg.stages[s][i].layers[j])
        heads.append(h), qk.append(q), v.append(vv), neurons.append(n)
    neurons += [_expansion_scores(sal, at) for at in lay.irs]
    embed = torch.cat([_width_scores(sal, cfg, at) for at in lay.blocks])
    return GroupScores(heads=heads, qk=qk, v=v, neurons=neurons, embed=embed, passes=passes), lay


def taylor(model: EdgeMobileViT, batches, *, microbatch: int = 8) -> tuple[GroupScores, Layout]:
    """NuWa's first-order Taylor scores (E |g w| over micro-batches) under the task's loss:
    cross-entropy of the class, or per pixel for a segmenter."""
    sal, passes = weight_saliency(model, batches, microbatch=microbatch, loss_fn=F.cross_entropy)
    return group(model, sal, passes)


def norms(model: EdgeMobileViT) -> tuple[GroupScores, Layout]:
    """The MobileViT compression study's criterion, weight magnitude: each unit's squared L2 norm (the sum over its
    weights of w^2, grouped like the Taylor scores)."""
    sal = {n: p.detach().float().pow(2).cpu() for n, p in model.named_parameters()}
    return group(model, sal, 0)
