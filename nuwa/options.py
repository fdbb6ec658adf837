"""Every knob of a derivation, defined once: `DeriveOptions` (the paper's values as defaults)
and its validation. The CLI flags, the workflow's parameter schema and its per-stage key subsets
are read from, or checked against, this dataclass."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import NuwaError

ADAPTIVE_DIMS = ("qk", "v", "mlp", "embed")


@dataclass
class AdaptiveOptions:
    gamma_qkv: float = 0.01
    gamma_ratio: tuple[float, float, float] = (1.0, 5.0, 2.5)  # qkv : exp : emb
    round_to: int = 8
    exclude: tuple[str, ...] = ()  # dims left unpruned (ablation, Table 5)
    global_ranking: bool = True  # neurons ranked across layers (False: same share per layer, Table 6)
    max_iters: int = 10_000
    # Bisect between the last over-budget iteration and the first within budget (keeping the
    # 1 : 5 : 2.5 decay ratio), so the achieved rate lands just above alpha rather than up to one
    # whole iteration (and a rounding step) beyond it. False: the paper's integer iterations.
    refine_steps: int = 12

METRICS = ("params", "flops")


@dataclass
class DeriveOptions:
    """Every knob of a derivation, with the paper's values as defaults."""

    rho_depth: float = 0.95
    rho_head: float = 0.90
    adaptive: AdaptiveOptions = field(default_factory=AdaptiveOptions)
    svd: str = "product"  # product | joint | off (score-based query-key/value selection)
    prune_depth: bool = True
    prune_heads: bool = True
    taylor_microbatch: int = 1  # 1 = per-sample expectation (Eq. 4)
    score_samples: int = 512  # sub-task samples for importance scores
    embed_score_samples: int = 2048  # all-class samples for embedding scores (once per base)
    layer_head_samples: int = 10_000  # all-class samples for per-layer classifiers (once per base)
    layer_head_epochs: int = 30
    val_fraction: float = 0.1
    split_seed: int = 0
    batch_size: int = 64  # scoring and fine-tuning batch
    finetune_lr: float = 1e-4
    weight_decay: float = 0.05
    # Recovery --recovery closed-form | distill (nuwa.recovery). ridge: penalty per calibration token,
    # relative to the inputs' mean variance, so one value suits every layer (RidgeStats.solve).
    ridge: float = 1e-3
    calib_samples: int = 256  # sub-task fit images for the closed-form refit
    distill_tau: float = 1.0  # DeiT soft distillation temperature
    distill_alpha: float = 0.5  # weight of the distillation term, (1 - alpha) on the labels
    distill_feature_weight: float = 0.0  # exit class-token mimicking (relative MSE); 0 = off
    latency_batch: int = 1
    latency_runtime: str = "torch"
    latency_threads: int | None = None
    latency_margin: float = 0.05  # a candidate must beat the latency budget by this share
    xpruner: dict[str, Any] | None = None  # MaskOptions for the X-Pruner baseline (steps, lr, penalty, init)
    cache: bool = True  # cache per-base artefacts (layer heads, embedding scores) in the base directory
    # Proxy derivation (derive(..., proxy_gmm=...)): how many top-scoring public samples to keep,
    # as a count or a share of the pool; neither: as many as the pool holds of the classes.
    proxy_samples: int | None = None
    proxy_quantile: float | None = None
    proxy_select: str = "stratified"  # stratified (per-component quotas) | top (nuwa.proxy.select)

    def validate(self) -> "DeriveOptions":
        """One clear error naming the first bad option."""
        def need(ok: bool, name: str, value: Any, what: str) -> None:
            if not ok:
                raise NuwaError(f"option {name}={value!r} {what}")

        for name in ("rho_depth", "rho_head"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and 0 < v <= 1, name, v, "must be in (0, 1]")
        a = self.adaptive
        need(isinstance(a.gamma_qkv, (int, float)) and 0 < a.gamma_qkv < 1, "gamma_qkv", a.gamma_qkv, "must be in (0, 1)")
        need(len(a.gamma_ratio) == 3 and all(r >= 0 for r in a.gamma_ratio) and max(a.gamma_ratio) > 0,
             "gamma_ratio", a.gamma_ratio, "must be three non-negative numbers (qkv, exp, emb)")
        need(isinstance(a.round_to, int) and a.round_to >= 1, "round_to", a.round_to, "must be an integer >= 1")
        bad = [d for d in a.exclude if d not in ADAPTIVE_DIMS]
        need(not bad, "exclude", bad, f"must name dims among {', '.join(ADAPTIVE_DIMS)}")
        need(self.svd in ("product", "joint", "off"), "svd", self.svd, "must be product, joint or off")
        for name in ("taylor_microbatch", "score_samples", "embed_score_samples", "layer_head_samples",
                     "batch_size", "latency_batch"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 1, name, v, "must be an integer >= 1")
        need(isinstance(self.layer_head_epochs, int) and self.layer_head_epochs >= 1, "layer_head_epochs",
             self.layer_head_epochs, "must be an integer >= 1")
        need(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "must be in (0, 1)")
        need(self.proxy_samples is None or (isinstance(self.proxy_samples, int) and self.proxy_samples >= 1),
             "proxy_samples", self.proxy_samples, "must be an integer >= 1")
        need(self.proxy_quantile is None or (isinstance(self.proxy_quantile, (int, float))
                                             and 0 < self.proxy_quantile <= 1),
             "proxy_quantile", self.proxy_quantile, "must be in (0, 1]")
        need(self.proxy_samples is None or self.proxy_quantile is None, "proxy_quantile", self.proxy_quantile,
             f"and proxy_samples={self.proxy_samples!r} exclude each other; give one")
        need(self.proxy_select in ("stratified", "top"), "proxy_select", self.proxy_select,
             "must be stratified or top")
        need(self.finetune_lr > 0, "finetune_lr", self.finetune_lr, "must be > 0")
        need(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        for name in ("ridge", "distill_feature_weight"):
            v = getattr(self, name)
            need(_finite(v) and v >= 0, name, v, "must be a finite number >= 0")
        need(_finite(self.distill_tau) and self.distill_tau > 0, "distill_tau", self.distill_tau,
             "must be a finite number > 0")
        need(_finite(self.distill_alpha) and 0 <= self.distill_alpha <= 1, "distill_alpha", self.distill_alpha,
             "must be a number in [0, 1]")
        need(isinstance(self.calib_samples, int) and not isinstance(self.calib_samples, bool)
             and self.calib_samples >= 1, "calib_samples", self.calib_samples, "must be an integer >= 1")
        need(isinstance(self.latency_margin, (int, float)) and 0 <= self.latency_margin < 1, "latency_margin",
             self.latency_margin, "must be in [0, 1)")
        need(self.latency_runtime in ("torch", "onnx"), "latency_runtime", self.latency_runtime, "must be torch or onnx")
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeriveOptions":
        d = dict(d)
        try:
            adaptive = AdaptiveOptions(**d.pop("adaptive", {}))
        except TypeError as e:
            raise NuwaError(f"adaptive options: {e}") from None
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise NuwaError(f"unknown derive option(s) {unknown}")
        return cls(adaptive=adaptive, **d).validate()


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
