"""Expansion size: keep MLP neurons (a row of W1 and its bias, a column of W2)."""
from __future__ import annotations

import torch

from ..errors import NuwaError
from ..model import EdgeViT
from ._rebuild import layer_config, rebuild, state_of


def prune_mlp(model: EdgeViT, keep: list[list[int]]) -> EdgeViT:
    """`keep[l]`: neuron indices kept in layer l's MLP (at least one)."""
    cfg = model.config
    if len(keep) != cfg.depth:
        raise NuwaError(f"keep lists {len(keep)} layers but the model has {cfg.depth}")
    state, layers = state_of(model), []
    for i, neurons in enumerate(keep):
        lc = layer_config(model, i)
        idx = torch.tensor(sorted(neurons), dtype=torch.long)
        if idx.numel() == 0 or idx.unique().numel() != idx.numel() or idx.min() < 0 or idx.max() >= lc.mlp_dim:
            raise NuwaError(f"layer {i}: kept neurons must be distinct, in 0..{lc.mlp_dim - 1}, non-empty")
        p = f"blocks.{i}.mlp."
        state[p + "fc1.weight"] = state[p + "fc1.weight"][idx]
        if p + "fc1.bias" in state:
            state[p + "fc1.bias"] = state[p + "fc1.bias"][idx]
        state[p + "fc2.weight"] = state[p + "fc2.weight"][:, idx]
        lc.mlp_dim = idx.numel()
        layers.append(lc)
    return rebuild(cfg.with_layers(layers), state)
