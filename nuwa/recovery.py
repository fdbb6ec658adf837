"""Recovery after pruning: fine-tuning, distillation from the base, or a closed-form refit.

`closed_form` trains nothing. On calibration images of the sub-task it refits by ridge least
squares the output projections the cut starved (each block's attention `proj`, given the
pruned model's kept value directions, and its MLP `fc2`, given the kept hidden neurons), so
that each sublayer reproduces the base model's output of the same sublayer on the kept
embedding dims. Layers go in order and the inputs are the pruned model's own activations
(with the earlier layers already refitted), so later layers absorb the earlier layers' error.
Pruned layer i is base layer i: depth pruning (`nuwa.prune.depth`) keeps blocks 0..depth-1.

`distill` fine-tunes like `finetune` with DeiT's soft distillation from the base restricted to
the sub-task's classes, optionally plus feature mimicking of the exit class token.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .errors import NuwaError
from .model import EdgeViT

RECOVERIES = ("finetune", "distill", "closed-form", "none")
TARGETS = ("output", "residual")


# ---- ridge least squares ------------------------------------------------------------------------
class RidgeStats:
    """Sufficient statistics of a linear least-squares fit Y ~ X W^T + b, accumulated in float64
    over batches (memory O(in^2 + in*out), whatever the number of rows)."""

    def __init__(self, in_dim: int, out_dim: int, *, bias: bool = True) -> None:
        f64 = dict(dtype=torch.float64)
        self.bias = bias
        self.n = 0
        self.xx = torch.zeros(in_dim, in_dim, **f64)
        self.xy = torch.zeros(in_dim, out_dim, **f64)
        self.x = torch.zeros(in_dim, **f64)
        self.y = torch.zeros(out_dim, **f64)
        self.yy = 0.0  # sum of squares of Y: for the fit errors in the report

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Rows of `x` (..., in) and `y` (..., out); leading dims are flattened (tokens are rows)."""
        x = x.reshape(-1, x.shape[-1]).to("cpu", torch.float64)
        y = y.reshape(-1, y.shape[-1]).to("cpu", torch.float64)
        self.n += x.shape[0]
        self.xx += x.T @ x
        self.xy += x.T @ y
        self.x += x.sum(0)
        self.y += y.sum(0)
        self.yy += float((y * y).sum())

    def _gram(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[X 1]^T [X 1] and [X 1]^T Y (without the bias column when there is no bias)."""
        if not self.bias:
            return self.xx, self.xy
        d = self.xx.shape[0]
        a = torch.empty(d + 1, d + 1, dtype=torch.float64)
        a[:d, :d], a[:d, d], a[d, :d], a[d, d] = self.xx, self.x, self.x, self.n
        return a, torch.cat([self.xy, self.y[None]])

    def scale(self) -> float:
        """Mean variance of the input features (their mean square without a bias column)."""
        if self.n == 0:
            return 0.0
        sq = float(torch.diagonal(self.xx).sum()) / self.n
        if self.bias:
            sq -= float((self.x / self.n).pow(2).sum())
        return max(sq, 0.0) / self.xx.shape[0]

    def solve(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight (out, in) and bias (out,) minimising ||Y - X W^T - b||^2 + ridge * n * s * ||W||^2,
        s the inputs' mean variance (`scale`); the bias is not penalised.

        Scaling by n (rows: calibration tokens) and s makes `ridge` a relative quantity: the
        same value shrinks alike whatever the number of tokens and whatever the scale of a
        layer's activations (value features of a trained ViT are ~0.1 here and ~10 there);
        with whitened inputs it is the share added to every eigenvalue."""
        if self.n == 0:
            raise NuwaError("closed-form recovery: no calibration rows")
        a, b = self._gram()
        d = self.xx.shape[0]
        a = a.clone()
        a[range(d), range(d)] += ridge * self.n * self.scale()
        try:
            theta = torch.linalg.solve(a, b)
        except RuntimeError:  # singular (ridge=0 and redundant inputs): the minimum-norm solution
            theta = torch.linalg.lstsq(a, b, driver="gelsd").solution
        return theta[:d].T.contiguous(), (theta[d].contiguous() if self.bias else None)

    def unexplained(self, weight: torch.Tensor, bias: torch.Tensor | None) -> float:
        """Share of Y's variance (about its mean) that X W^T + b leaves unexplained, 1 - R^2."""
        a, b = self._gram()
        theta = weight.T.to(torch.float64)
        if self.bias:
            theta = torch.cat([theta, (bias if bias is not None else torch.zeros(weight.shape[0]))
                               .to(torch.float64)[None]])
        sse = self.yy - 2 * float((theta * b).sum()) + float((theta * (a @ theta)).sum())
        sst = self.yy - float((self.y ** 2).sum()) / max(self.n, 1)
        return max(sse, 0.0) / sst if sst > 0 else 0.0


def ridge_fit(x: torch.Tensor, y: torch.Tensor, *, ridge: float,
              bias: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ridge regression of y (n, out) on x (n, in) in one call; see `RidgeStats.solve`."""
    stats = RidgeStats(x.shape[-1], y.shape[-1], bias=bias)
    stats.add(x, y)
    return stats.solve(ridge)


# ---- shared helpers -----------------------------------------------------------------------------
def base_embed_positions(pruned: EdgeViT, base: EdgeViT) -> list[int] | None:
    """Positions in the base's residual stream of the pruned model's embedding dims (None: all)."""
    p_idx, b_idx = pruned.config.embed_index, base.config.embed_index
    if p_idx is None:
        if pruned.config.embed_dim != base.config.embed_dim:
            raise NuwaError(f"pruned embed dim {pruned.config.embed_dim} != base {base.config.embed_dim} "
                            "and no embed_index records which dims were kept")
        return None
    where = {e: i for i, e in enumerate(b_idx if b_idx is not None else range(base.config.embed_dim))}
    missing = [e for e in p_idx if e not in where]
    if missing:
        raise NuwaError(f"embedding dims {missing[:5]} of the pruned model are not in the base model")
    pos = [where[e] for e in p_idx]
    return None if pos == list(range(base.config.embed_dim)) else pos


def _check_number(name: str, value: Any, *, low: float, strict: bool, high: float | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if strict else value >= low) and (high is None or value <= high)
    if not ok:
        where = f"in [{low}, {high}]" if high is not None else f"{'>' if strict else '>='} {low}"
        raise NuwaError(f"{name}={value!r} must be a finite number {where}")


def _check_pair(pruned: EdgeViT, base: EdgeViT) -> None:
    if pruned.config.depth > base.config.depth:
        raise NuwaError(f"pruned model has {pruned.config.depth} layers, more than the base's {base.config.depth}")


def _restrict(t: torch.Tensor, pos: list[int] | None) -> torch.Tensor:
    return t if pos is None else t[..., pos]


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


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---- closed form --------------------------------------------------------------------------------
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
    from .train import _eval_mode, _progress, teacher_columns

    if target not in TARGETS:
        raise NuwaError(f"closed-form target {target!r}: expected one of {', '.join(TARGETS)}")
    _check_number("ridge", ridge, low=0.0, strict=False)
    _check_pair(pruned, base)
    pos = base_embed_positions(pruned, base)
    p_dev, b_dev = _device(pruned), _device(base)
    with _eval_mode(pruned), _eval_mode(base):
        hp, hb = [], []  # residual streams of the calibration batches: pruned, base
        for x, _ in batches:
            hp.append(pruned.embed(x.to(p_dev)))
            hb.append(base.embed(x.to(b_dev)))
        n_img = sum(len(h) for h in hp)
        if n_img == 0:
            raise NuwaError("closed-form recovery: no calibration images")
        depth = pruned.config.depth
        layers: list[dict[str, list[float]]] = []
        bar = _progress(n_img * depth, desc)
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
        y = _restrict(out_b, pos).to(dev)
        if target == "residual":
            y = _restrict(hb[j] + out_b, pos).to(dev) - hp[j]
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


# ---- distillation ---------------------------------------------------------------------------------
def _teacher_outputs(base: EdgeViT, x: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The base's logits and its class token after block `depth` - 1 (before any norm), in one pass."""
    h = base.embed(x)
    cls = None
    for k, blk in enumerate(base.blocks):
        h = blk(h)
        if k == depth - 1:
            cls = h[:, 0]
    assert cls is not None
    return base.forward_head(h), cls


def distill(pruned: EdgeViT, base: EdgeViT, train_ds: Any, *, epochs: int, lr: float, weight_decay: float,
            batch_size: int, seed: int, tau: float = 1.0, alpha: float = 0.5, feature_weight: float = 0.0,
            val_ds: Any = None, preprocess: Any = None, limit: int | None = None,
            desc: str | None = "distill") -> dict[str, Any]:
    """Fine-tune `pruned` in place with `nuwa.train.fit`, loss DeiT's soft distillation
    (`distillation_loss`: (1 - alpha) CE + alpha tau^2 KL) from the base's logits of the pruned
    model's classes, plus `feature_weight` times the MSE between the pruned model's exit class
    token and the base's at the same depth (kept embedding dims), divided by the mean square of
    the base's token so the weight does not depend on the residual stream's scale.

    Both tokens are taken before any final norm: that is where the two models share a space
    (the residual stream, of which the pruned model keeps a subset of dims), and it is the input
    that the pruned model's exit classifier was trained on (the base's stream at that depth);
    after a LayerNorm over fewer dims the statistics differ, so post-norm tokens do not match
    even for a perfect student. Returns `fit`'s history."""
    from .train import distillation_loss, fit, teacher_columns

    _check_number("distill_tau", tau, low=0.0, strict=True)
    _check_number("distill_alpha", alpha, low=0.0, strict=False, high=1.0)
    _check_number("distill_feature_weight", feature_weight, low=0.0, strict=False)
    _check_pair(pruned, base)
    cols = teacher_columns(pruned, base)
    pos = base_embed_positions(pruned, base)
    depth = pruned.config.depth
    seen: dict[str, torch.Tensor] = {}

    def loss_fn(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # not inference_mode: the teacher's outputs enter the loss's graph
            t_logits, t_cls = _teacher_outputs(base, x.to(_device(base)), depth)
        t_logits = (t_logits if cols is None else t_logits[:, cols]).to(logits.device)
        loss = distillation_loss(logits, y, t_logits, alpha=alpha, tau=tau)
        if feature_weight > 0:
            t = _restrict(t_cls, pos).to(logits.device)
            loss = loss + feature_weight * F.mse_loss(seen["cls"], t) / t.pow(2).mean().clamp_min(1e-12)
        return loss

    def hook(_m: nn.Module, args: tuple) -> None:
        seen["cls"] = args[0]  # forward_head feeds the exit class token to the final norm

    handle = pruned.norm.register_forward_pre_hook(hook) if feature_weight > 0 else None
    try:
        return fit(pruned, train_ds, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                   seed=seed, val_ds=val_ds, preprocess=preprocess, loss_fn=loss_fn, teacher=base, limit=limit,
                   desc=desc)
    finally:
        if handle is not None:
            handle.remove()


# ---- dispatch from `derive` ---------------------------------------------------------------------------
def recover(pruned: EdgeViT, base: EdgeViT | None, task: Any, *, recovery: str, epochs: int, opts: Any,
            seed: int, limit: int | None = None) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any] | None]:
    """Run `recovery` on `pruned` in place for a `derivation.SubTask`. Returns (training history or
    None, the recovery's parameters, its details or None) for the report. `limit` caps the
    training samples per epoch of finetune/distill (None: all); `base` is needed by distill and
    closed-form only."""
    from .train import fit

    if recovery not in RECOVERIES:
        raise NuwaError(f"unknown recovery {recovery!r}; expected one of {', '.join(RECOVERIES)}")
    train_kw = dict(epochs=epochs, lr=opts.finetune_lr, weight_decay=opts.weight_decay, batch_size=opts.batch_size,
                    seed=seed, val_ds=task.val, preprocess=task.preprocess, limit=limit)
    if recovery in ("distill", "closed-form") and base is None:
        raise NuwaError(f"--recovery {recovery} needs the base model (the teacher / the refit target)")
    if recovery == "finetune":
        history = fit(pruned, task.fit, desc="fine-tune", **train_kw) if epochs > 0 else None
        return history, dict(epochs=epochs, lr=opts.finetune_lr), None
    if recovery == "distill":
        params = dict(epochs=epochs, lr=opts.finetune_lr, tau=opts.distill_tau, alpha=opts.distill_alpha,
                      feature_weight=opts.distill_feature_weight)
        if epochs == 0:
            return None, params, None
        history = distill(pruned, base, task.fit, tau=opts.distill_tau, alpha=opts.distill_alpha,
                          feature_weight=opts.distill_feature_weight, **train_kw)
        return history, params, None
    if recovery == "closed-form":
        n = min(opts.calib_samples, len(task.fit))
        batches = task.batches(task.fit, n, seed=seed, batch_size=opts.batch_size)
        details = closed_form(pruned, base, batches, ridge=opts.ridge)
        return None, dict(ridge=opts.ridge, calib_samples=opts.calib_samples), details
    return None, {}, None


def trained_epochs(recovery: str, epochs: int) -> int:
    """Epochs of gradient training a recovery actually ran (the report's `finetune_epochs`)."""
    return epochs if recovery in ("finetune", "distill") else 0
