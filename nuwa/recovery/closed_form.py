"""Closed-form recovery: a ridge refit of the pruned model towards its base, no training.

`closed_form` trains nothing. On calibration images of the sub-task it refits by ridge least
squares the output projections the cut starved (each block's attention `proj`, given the
pruned model's kept value directions, and its MLP `fc2`, given the kept hidden neurons), so
that each sublayer reproduces the base model's output of the same sublayer on the kept
embedding dims. Layers go in order and the inputs are the pruned model's own activations
(with the earlier layers already refitted), so later layers absorb the earlier layers' error.
Pruned layer i is base layer i: depth pruning (`nuwa.prune.depth`) keeps blocks 0..depth-1.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ..errors import NuwaError
from ..loop_utils import eval_mode, model_device, progress
from ..model import EdgeViT
from .pairing import base_embed_positions, check_number, check_pair, restrict
from .ridge import RidgeStats

TARGETS = ("output", "residual")


@torch.no_grad()
def closed_form(pruned: EdgeViT, base: EdgeViT, batches: Iterable[tuple[torch.Tensor, Any]], *, ridge: float = 1e-3,
                target: str = "output", refit_head: bool = True,
                desc: str | None = "closed-form") -> dict[str, Any]:
    """Refit `pruned`'s attention `proj` and MLP `fc2` of every block in place (see the module doc).

    `batches` yields preprocessed calibration images (and anything, ignored). The targets are
    the base's outputs of the same sublayer on the same images restricted to the kept embedding
    dims (`target="output"`), or what brings the pruned residual stream to the base's
    (`target="residual"`: base stream after the sublayer minus the pruned stream before it).
    `refit_head` then refits the classifier on the exit features against the base's logits of
    the sub-task classes (on by default: on the tiny test models blocks and head each help, and
    together they come close to the base's own validation loss). Both models' residual streams
    of the calibration images are held in memory (images x tokens x embed dims, float32).
    Returns the number of images and, per layer (and for the head), the unexplained variance
    (1 - R^2) of the target before and after the refit.
    """
    from ..train import teacher_columns

    if target not in TARGETS:
        raise NuwaError(f"closed-form target {target!r}: expected one of {', '.join(TARGETS)}")
    check_number("ridge", ridge, low=0.0, strict=False)
    check_pair(pruned, base)
    pos = base_embed_positions(pruned, base)
    p_dev, b_dev = model_device(pruned), model_device(base)
    with eval_mode(pruned), eval_mode(base):
        hp, hb = [], []  # residual streams of the calibration batches: pruned, base
        for x, _ in batches:
            hp.append(pruned.embed(x.to(p_dev)))
            hb.append(base.embed(x.to(b_dev)))
        n_img = sum(len(h) for h in hp)
        if n_img == 0:
            raise NuwaError("closed-form recovery: no calibration images")
        depth = pruned.config.depth
        layers: list[dict[str, list[float]]] = []
        bar = progress(n_img * depth, desc)
        try:
            for i in range(depth):
                bp, bb = pruned.blocks[i], base.blocks[i]
                fit = dict(pos=pos, dev=p_dev, target=target, ridge=ridge)
                # Attention: the inputs are the pruned model's kept value directions (proj's input);
                # MLP: the kept hidden neurons (fc2's input), behind the refitted attention.
                layers.append(dict(
                    attn=_refit_sublayer(bp.attn.proj, lambda h: bp.attn(bp.norm1(h)), lambda h: bb.attn(bb.norm1(h)),
                                         hp, hb, **fit),
                    mlp=_refit_sublayer(bp.mlp.fc2, lambda h: bp.mlp(bp.norm2(h)), lambda h: bb.mlp(bb.norm2(h)),
                                        hp, hb, **fit)))
                bar.update(n_img)
        finally:
            bar.close()
        info: dict[str, Any] = dict(calib_images=n_img, target=target, fit_unexplained=layers)
        if refit_head:
            cols = teacher_columns(pruned, base)
            stats = RidgeStats(pruned.head.in_features, pruned.head.out_features, bias=pruned.head.bias is not None)
            for j in range(len(hp)):
                h = hb[j]
                for blk in base.blocks[depth:]:
                    h = blk(h)
                logits = base.forward_head(h)
                y = (logits if cols is None else logits[:, cols]).to(p_dev)
                stats.add(pruned.forward_head(hp[j], pre_logits=True), y)
            info["head"] = _refit(pruned.head, stats, ridge)
    return info


def _refit_sublayer(linear: nn.Linear, run_pruned, run_base, hp: list[torch.Tensor], hb: list[torch.Tensor], *,
                    pos: list[int] | None, dev: torch.device, target: str, ridge: float) -> list[float]:
    """Refit `linear`, the output projection inside `run_pruned` (one sublayer), on the batches'
    residual streams `hp` (pruned) and `hb` (base), then move both streams past the sublayer in
    place (the pruned one through the refitted projection). Returns `_refit`'s fit errors."""
    stats = RidgeStats(linear.in_features, linear.out_features, bias=linear.bias is not None)
    for j in range(len(hp)):
        with _capture_input(linear) as seen:
            run_pruned(hp[j])
        out_b = run_base(hb[j])
        y = restrict(out_b, pos).to(dev)
        if target == "residual":
            y = restrict(hb[j] + out_b, pos).to(dev) - hp[j]
        stats.add(seen["x"], y)
        hb[j] = hb[j] + out_b
    errors = _refit(linear, stats, ridge)
    for j in range(len(hp)):
        hp[j] = hp[j] + run_pruned(hp[j])
    return errors


def _refit(layer: nn.Linear, stats: RidgeStats, ridge: float) -> list[float]:
    before = stats.unexplained(layer.weight.detach().cpu(), None if layer.bias is None else layer.bias.detach().cpu())
    weight, bias = stats.solve(ridge)
    _set_linear(layer, weight, bias)
    return [round(before, 6), round(stats.unexplained(weight, bias), 6)]


@contextlib.contextmanager
def _capture_input(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """The input of `module`'s latest call, via a forward pre-hook removed on exit."""
    seen: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, args: tuple) -> None:
        seen["x"] = args[0]

    handle = module.register_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def _set_linear(layer: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight.to(layer.weight.dtype))
        if layer.bias is not None and bias is not None:
            layer.bias.copy_(bias.to(layer.bias.dtype))
