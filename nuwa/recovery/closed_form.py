"""Closed-form recovery: a ridge refit of the pruned model towards its base, no training.

`closed_form` trains nothing. On calibration images of the sub-task it refits by ridge least
squares the output projections the cut starved (each block's attention `proj`, given the
pruned model's kept value directions, and its MLP `fc2`, given the kept hidden neurons), so
that each sublayer reproduces the base model's output of the same sublayer on the kept
embedding dims. Layers go in order and the inputs are the pruned model's own activations
(with the earlier layers already refitted), so later layers absorb the earlier layers' error.
Pruned layer i is base layer i: depth pruning (`nuwa.prune.depth`) keeps blocks 0..depth-1.

With held-out images (`val_batches`) every refit is guarded: each sublayer tries a small grid of
ridges and keeps whichever weights, its original ones included, best explain the target on the
held-out images; `refit_on_task` then keeps the whole refit only if it lowers the model's
validation loss. A refit fitted on few or unrepresentative images can otherwise make things worse.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ..errors import NuwaError
from ..loop_utils import check_number, eval_mode, model_device, progress
from ..model import EdgeViT
from .pairing import base_embed_positions, check_pair, restrict
from .ridge import RidgeStats

TARGETS = ("output", "residual")
# The guarded refit's grid around the asked ridge: mostly more shrinkage, which is what a refit on
# few or unrepresentative images lacks.
RIDGE_FACTORS = (0.1, 1.0, 10.0, 100.0)
ORIGINAL = "original"  # what a sublayer's `kept` says when the refit did not beat its own weights
# Held-out images the guarded refit chooses on: as many as it calibrates on, and at least this many
# (a few calibration images are when a refit most needs checking).
CHOICE_IMAGES = 256
Streams = tuple[list[torch.Tensor], list[torch.Tensor]]  # residual streams per batch: pruned, base


def ridge_grid(ridge: float) -> list[float]:
    """The ridges a guarded refit tries around `ridge` (only 0 for 0: no penalty was asked for)."""
    return sorted({ridge * f for f in RIDGE_FACTORS})


@torch.no_grad()
def closed_form(pruned: EdgeViT, base: EdgeViT, batches: Iterable[tuple[torch.Tensor, Any]], *, ridge: float = 1e-3,
                target: str = "output", refit_head: bool = True,
                val_batches: Iterable[tuple[torch.Tensor, Any]] | None = None,
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
    With `val_batches` (preprocessed held-out images) each projection tries the ridges of
    `ridge_grid(ridge)` and keeps the weights, original included, with the least unexplained
    target variance on those images (their streams go through the kept weights, like the
    calibration ones); without, it always takes the refit at `ridge`.
    Returns the number of images and, per layer (and for the head), the unexplained variance
    (1 - R^2) of the target before and after on the calibration images (`fit_unexplained`,
    `head`), and with held-out images the same on those (`val_unexplained`, `head_val`) and
    what was kept: the chosen ridge or "original" (`kept`, `head_kept`).
    """
    if target not in TARGETS:
        raise NuwaError(f"closed-form target {target!r}: expected one of {', '.join(TARGETS)}")
    check_number("ridge", ridge, low=0.0, strict=False)
    check_pair(pruned, base)
    pos = base_embed_positions(pruned, base)
    p_dev = model_device(pruned)
    grid = [ridge] if val_batches is None else ridge_grid(ridge)
    with eval_mode(pruned), eval_mode(base):
        calib = _streams(pruned, base, batches)  # residual streams: pruned, base
        n_img = sum(len(h) for h in calib[0])
        if n_img == 0:
            raise NuwaError("closed-form recovery: no calibration images")
        val = None if val_batches is None else _streams(pruned, base, val_batches)
        if val is not None and not val[0]:
            raise NuwaError("closed-form recovery: no held-out images to choose the refit on")
        depth = pruned.config.depth
        layers: list[dict[str, dict[str, Any]]] = []
        bar = progress(n_img * depth, desc)
        try:
            for i in range(depth):
                bp, bb = pruned.blocks[i], base.blocks[i]
                fit = dict(pos=pos, dev=p_dev, target=target, grid=grid)
                # Attention: the inputs are the pruned model's kept value directions (proj's input);
                # MLP: the kept hidden neurons (fc2's input), behind the refitted attention.
                layers.append(dict(
                    attn=_refit_sublayer(bp.attn.proj, lambda h: bp.attn(bp.norm1(h)), lambda h: bb.attn(bb.norm1(h)),
                                         calib, val, **fit),
                    mlp=_refit_sublayer(bp.mlp.fc2, lambda h: bp.mlp(bp.norm2(h)), lambda h: bb.mlp(bb.norm2(h)),
                                        calib, val, **fit)))
                bar.update(n_img)
        finally:
            bar.close()
        info: dict[str, Any] = dict(calib_images=n_img, target=target,
                                    fit_unexplained=[{k: r["calib"] for k, r in l.items()} for l in layers])
        if val is not None:
            info.update(val_images=sum(len(h) for h in val[0]), ridges=grid,
                        val_unexplained=[{k: r["val"] for k, r in l.items()} for l in layers],
                        kept=[{k: r["kept"] for k, r in l.items()} for l in layers])
        if refit_head:
            head = _refit(pruned.head, _head_stats(pruned, base, *calib), grid,
                          None if val is None else _head_stats(pruned, base, *val))
            info["head"] = head["calib"]
            if val is not None:
                info.update(head_val=head["val"], head_kept=head["kept"])
    return info


def _streams(pruned: EdgeViT, base: EdgeViT, batches: Iterable[tuple[torch.Tensor, Any]]) -> Streams:
    hp, hb = [], []
    for x, _ in batches:
        hp.append(pruned.embed(x.to(model_device(pruned))))
        hb.append(base.embed(x.to(model_device(base))))
    return hp, hb


def _head_stats(pruned: EdgeViT, base: EdgeViT, hp: list[torch.Tensor], hb: list[torch.Tensor]) -> RidgeStats:
    """The classifier's inputs (pruned exit features) against the base's logits of the sub-task classes."""
    from ..train import teacher_columns

    cols = teacher_columns(pruned, base)
    stats = RidgeStats(pruned.head.in_features, pruned.head.out_features, bias=pruned.head.bias is not None)
    for j in range(len(hp)):
        h = hb[j]
        for blk in base.blocks[pruned.config.depth:]:
            h = blk(h)
        logits = base.forward_head(h)
        y = (logits if cols is None else logits[:, cols]).to(model_device(pruned))
        stats.add(pruned.forward_head(hp[j], pre_logits=True), y)
    return stats


def _refit_sublayer(linear: nn.Linear, run_pruned, run_base, calib: Streams, val: Streams | None, *,
                    pos: list[int] | None, dev: torch.device, target: str, grid: list[float]) -> dict[str, Any]:
    """Refit `linear`, the output projection inside `run_pruned` (one sublayer), on the calibration
    residual streams (pruned, base), choosing on the held-out ones `val` if given, then move all
    streams past the sublayer in place (the pruned ones through the kept projection). Returns
    `_refit`'s record."""
    def stats_of(hp: list[torch.Tensor], hb: list[torch.Tensor]) -> RidgeStats:
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
        return stats

    record = _refit(linear, stats_of(*calib), grid, None if val is None else stats_of(*val))
    for hp in [calib[0]] + ([] if val is None else [val[0]]):
        for j in range(len(hp)):
            hp[j] = hp[j] + run_pruned(hp[j])
    return record


def _refit(layer: nn.Linear, stats: RidgeStats, grid: list[float], val: RidgeStats | None) -> dict[str, Any]:
    """Set `layer` to the ridge solution on `stats` (at `grid[0]` without `val`), or to whichever of
    its own weights and the solutions at each ridge of `grid` leaves least of `val`'s target
    unexplained. Returns the unexplained share before/after on the calibration rows ("calib"),
    and with `val` on the held-out rows ("val") and the ridge kept or ORIGINAL ("kept")."""
    weight0 = layer.weight.detach().cpu().clone()  # a copy: on CPU, .cpu() aliases what _set_linear overwrites
    bias0 = None if layer.bias is None else layer.bias.detach().cpu().clone()
    if val is None:
        weight, bias = stats.solve(grid[0])
        _set_linear(layer, weight, bias)
        return dict(calib=[round(stats.unexplained(weight0, bias0), 6), round(stats.unexplained(weight, bias), 6)])
    best = (val.unexplained(weight0, bias0), ORIGINAL, weight0, bias0)
    val_before = best[0]
    for r in grid:  # few ridges: each is one solve of the same Gram matrix, no new activations
        weight, bias = stats.solve(r)
        err = val.unexplained(weight, bias)
        if err < best[0]:
            best = (err, r, weight, bias)
    err, kept, weight, bias = best
    if kept != ORIGINAL:
        _set_linear(layer, weight, bias)
    return dict(calib=[round(stats.unexplained(weight0, bias0), 6), round(stats.unexplained(weight, bias), 6)],
                val=[round(val_before, 6), round(err, 6)], kept=kept)


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


def refit_on_task(pruned: EdgeViT, base: EdgeViT, task: Any, *, ridge: float, calib_samples: int, batch_size: int,
                  seed: int, desc: str | None = "closed-form") -> dict[str, Any]:
    """The closed-form recovery of a derivation (`derivation.SubTask`), in place: refit on up to
    `calib_samples` fit images, choosing per projection on up to max(`calib_samples`, CHOICE_IMAGES)
    validation images, then keep the refit only if it lowers the whole model's validation loss,
    else restore the pruned weights. Returns `closed_form`'s details plus `guard`: the validation
    numbers that decided (before, and of the refit), what was kept ("refit" or "pruned") and
    whether a refit was reverted."""
    from ..evaluate import evaluate

    if pruned.config.head_dist:  # the head refit reads one token; a distilled model averages two heads
        raise NuwaError("recovery closed-form does not support a distilled model with both heads; use finetune")

    def val_metrics() -> dict[str, Any]:  # the same call as the derivation's report, so the numbers match
        m = evaluate(pruned, task.val, preprocess=task.preprocess, batch_size=batch_size, desc=None)
        return dict(loss=m["loss"], top1=m["top1"])

    before = val_metrics()
    saved = {k: v.clone() for k, v in pruned.state_dict().items()}
    details = closed_form(
        pruned, base, task.batches(task.fit, min(calib_samples, len(task.fit)), seed=seed, batch_size=batch_size),
        ridge=ridge, val_batches=task.batches(task.val, min(max(calib_samples, CHOICE_IMAGES), len(task.val)),
                                              seed=seed, batch_size=batch_size), desc=desc)
    changed = any(not torch.equal(v, saved[k]) for k, v in pruned.state_dict().items())
    refit = val_metrics() if changed else before
    improved = changed and refit["loss"] < before["loss"]
    if changed and not improved:
        pruned.load_state_dict(saved)
    details["guard"] = dict(metric="val_loss", val_before=before, val_refit=refit,
                            kept="refit" if improved else "pruned", reverted=changed and not improved)
    return details
