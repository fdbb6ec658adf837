"""MLP neurons and the samples that activate them most (the paper's Table 2 and Figs. 9-10).

A neuron's activation on a sample is a_i^l = GELU(x_cls^l W_1^l[i]^T + b_1^l[i]), x_cls^l the
class token entering layer l's MLP (after its LayerNorm): read with a forward hook on the MLP's
activation, so the model's own forward runs unchanged.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import NuwaError


def resolve_layers(layers: Sequence[int], depth: int) -> list[int]:
    """1-based layer numbers, negative counting from the last (-1 = last), as 0-based indices."""
    out = []
    for l in layers:
        i = l - 1 if l > 0 else depth + l
        if l == 0 or not 0 <= i < depth:
            raise NuwaError(f"layer {l} is not in 1..{depth} (or -1..-{depth})")
        if i not in out:
            out.append(i)
    return out


@torch.no_grad()
def cls_activations(model, ds: Any, layers: Sequence[int], *, limit: int | None = None, batch_size: int = 256,
                    desc: str | None = "neuron activations") -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """{0-based layer: (N, mlp_dim) float32 class-token activations} and the labels (N,), over the
    first `limit` samples of `ds` in order (so row n is sample n)."""
    from ..data import Preprocess, batches

    preprocess = Preprocess.for_config(model.config)
    store: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    hooks = [model.blocks[l].mlp.act.register_forward_hook(
        # A copy of the pooled row: a view would keep the whole (B, N, mlp_dim) activation alive.
        lambda _m, _inp, out, l=l: store[l].append(model.pool(out).to("cpu", torch.float32, copy=True)))
        for l in layers]
    labels = []
    was_training = model.training
    model.eval()
    try:
        for x, y in batches(ds, batch_size=batch_size, limit=limit, progress=desc):
            model(preprocess(x))
            labels.append(y)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if not labels:
        raise NuwaError("no samples to compute activations on")
    return {l: torch.cat(v) for l, v in store.items()}, torch.cat(labels)


def choose_neurons(acts: torch.Tensor, count: int) -> list[int]:
    """The `count` neurons whose activation varies most over the samples (ties: lower index) --
    a deterministic stand-in for the paper's hand-picked examples."""
    var = acts.double().var(dim=0).numpy()
    order = np.lexsort((np.arange(len(var)), -var))  # descending variance, then ascending index
    return [int(i) for i in order[:count]]


def top_samples(acts: torch.Tensor, neuron: int, k: int) -> list[int]:
    """Sample rows with the `k` highest activations of `neuron` (ties: lower row first)."""
    a = acts[:, neuron].double().numpy()
    order = np.lexsort((np.arange(len(a)), -a))
    return [int(i) for i in order[:k]]


def distinct_classes(acts: torch.Tensor, labels: torch.Tensor, k: int) -> np.ndarray:
    """For every neuron, how many distinct classes its top-k samples belong to."""
    a = acts.double().numpy()
    top = np.argsort(-a, axis=0, kind="stable")[:k]  # (k, neurons)
    lab = labels.numpy()[top]
    return np.array([len(np.unique(lab[:, j])) for j in range(a.shape[1])])


def neuron_table(acts: dict[int, torch.Tensor], labels: torch.Tensor, sample_ids: Sequence[int],
                 class_names: Sequence[str], *, per_layer: int, k: int) -> pd.DataFrame:
    """One row per (layer, chosen neuron, rank): the sample, its class and the activation, with
    the neuron's number of distinct classes among its top-k. Layers are reported 1-based."""
    rows = []
    for l, a in acts.items():
        for neuron in choose_neurons(a, per_layer):
            top = top_samples(a, neuron, k)
            distinct = len({int(labels[i]) for i in top})
            for rank, i in enumerate(top, start=1):
                rows.append(dict(layer=l + 1, neuron=neuron, rank=rank, sample=int(sample_ids[i]),
                                 label=int(labels[i]), class_name=class_names[int(labels[i])],
                                 activation=float(a[i, neuron]), distinct_classes=distinct))
    return pd.DataFrame(rows, columns=["layer", "neuron", "rank", "sample", "label", "class_name", "activation",
                                       "distinct_classes"])


def class_spread(acts: dict[int, torch.Tensor], labels: torch.Tensor, table: pd.DataFrame, *, k: int,
                 depth: int) -> pd.DataFrame:
    """Per layer: the mean number of distinct classes among the top-k samples of the chosen
    neurons and of every neuron of the layer (the robust number: it does not hang on 4 picks),
    and every neuron's count (`distinct_classes_per_neuron`, for a bootstrap over neurons)."""
    rows = []
    for l, a in acts.items():
        chosen = table[table.layer == l + 1].drop_duplicates("neuron")
        every = distinct_classes(a, labels, k)
        rows.append(dict(layer=l + 1, depth=depth, neurons=int(a.shape[1]), top_k=k,
                         chosen_mean_distinct_classes=float(chosen.distinct_classes.mean()),
                         all_mean_distinct_classes=float(every.mean()),
                         all_median_distinct_classes=float(np.median(every)),
                         distinct_classes_per_neuron=[int(c) for c in every]))
    return pd.DataFrame(rows)


def deep_more_specific(spread: pd.DataFrame) -> tuple[bool | None, str]:
    """The paper's claim on `class_spread`'s table: the deepest layer's neurons are more
    class-specific (fewer distinct classes among their top samples) than the shallowest's.
    None when fewer than two layers were measured."""
    if len(spread) < 2:
        return None, "fewer than two layers measured"
    s = spread.sort_values("layer")
    lo, hi = s.iloc[0], s.iloc[-1]
    holds = bool(hi.all_mean_distinct_classes < lo.all_mean_distinct_classes)
    return holds, (f"mean distinct classes among each neuron's top-{int(lo.top_k)} samples: layer {int(lo.layer)} "
                   f"{lo.all_mean_distinct_classes:.2f} vs layer {int(hi.layer)} {hi.all_mean_distinct_classes:.2f} "
                   f"(all {int(lo.neurons)}/{int(hi.neurons)} neurons)")
