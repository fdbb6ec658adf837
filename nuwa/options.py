"""Every knob of a derivation, defined once: `DeriveOptions` (the paper's values as defaults),
its validation, and the cheap checks of a derive request. The CLI flags (a field's `flag`
metadata), the workflow's parameter schema and its per-stage key subsets are read from, or
checked against, this module. Pure Python: the CLI rejects a bad argument before torch loads."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import NuwaError

# The names a request may use, known without importing the code behind them (nuwa.methods and
# nuwa.recovery check their registries against these).
METHOD_NAMES = ("nuwa", "random", "nvit", "xpruner")
# Methods for MobileViT bases only: the MobileViT compression study's weight-norm recipe (nuwa.mobilevit.methods).
HYBRID_METHOD_NAMES = ("norm", "nuwa-norm")
# standard: the default recipe (nuwa.recovery.recipe); paper: the NuWa paper's; finetune: AdamW
# at finetune_lr for the given epochs (the workflow's profiles); distill, closed-form: nuwa.recovery.
RECOVERY_NAMES = ("standard", "paper", "finetune", "distill", "closed-form", "none")
DEFAULT_RECOVERY = "standard"  # of a ViT (a MobileViT's is finetune)
METRICS = ("params", "flops")
ADAPTIVE_DIMS = ("qk", "v", "mlp", "embed")
SVD_CHOICES = ("product", "joint", "data", "off")  # nuwa.svd; off: score-based query-key/value selection
LATENCY_RUNTIMES = ("torch", "onnx")
DEPTH_POLICIES = ("budget", "accuracy")  # see DeriveOptions.depth_policy
PROXY_SELECTS = ("stratified", "top")  # per-component quotas | best log-likelihoods (nuwa.proxy.select)
DEFAULT_GAMMA_RATIO = (1.0, 5.0, 2.5)  # the paper's decay ratio qkv : exp : emb
# A derivation at rate alpha aims at an achieved rate in [alpha, alpha + RATE_TOLERANCE]; the report
# says why when it lands outside. Models whose rates differ by more are not compared as equal-cost.
RATE_TOLERANCE = 0.03

# The options each per-base cache is keyed by, after the base's hash and in this order (the keys of
# files already written depend on it), and the fit/validation split of the base's training data.
SPLIT_KEYS = ("split_seed", "val_fraction")
_LAYER_HEADS = ("layer_head_samples", "layer_head_epochs")
_EMBED_SCORES = ("embed_score_samples", "taylor_microbatch")
LAYER_HEAD_KEY = _LAYER_HEADS + SPLIT_KEYS
EMBED_SCORE_KEY = _EMBED_SCORES + SPLIT_KEYS
# What `nuwa prepare` reads: both keys and the scoring batch. The workflow hands exactly these to
# its prepare stage, in this order (Snakemake compares a rule's recorded params by their repr).
CACHE_KEYS = _LAYER_HEADS + _EMBED_SCORES + SPLIT_KEYS + ("batch_size",)
CACHE_FILES = ("layer_heads.safetensors", "embed_scores.safetensors")  # the caches, named for split 0


def cache_file(name: str, split: int) -> str:
    """A per-base cache's file name for a split seed: `name` for split 0, else with the split in it
    (`layer_heads.split1.safetensors`), so runs of several seeds keep their caches side by side."""
    return name if split == 0 else name.replace(".safetensors", f".split{split}.safetensors")

# DeriveOptions fields that params.yaml's `derive:` leaves out (its schema, $defs/derive_options,
# lists every other field), with the profile key that sets each instead; None: the workflow never does.
WORKFLOW_ELSEWHERE = {
    "finetune_lr": "finetune.lr", "weight_decay": "finetune.weight_decay",
    **{k: f"extensions.recovery.{k}" for k in ("ridge", "calib_samples", "distill_tau", "distill_alpha",
                                               "distill_feature_weight")},
    "proxy_samples": "extensions.proxy.proxy_samples",
    "proxy_quantile": None,  # the proxy regime sets proxy_samples, which excludes it
    "cache": None,  # the stages rely on the per-base caches `nuwa prepare` builds
}


def _flagged(default: Any, *, help: str | None = None, choices: tuple[str, ...] | None = None,
             seed: bool = False) -> Any:
    """A field with a CLI flag --NAME-WITH-DASHES (nuwa.cli.add_option_flags), typed by the
    field's annotation: int a count >= 1 (a `seed`: >= 0), float a number, tuple a comma-separated list."""
    return field(default=default, metadata=dict(flag=True, help=help, choices=choices, seed=seed))


@dataclass
class AdaptiveOptions:
    gamma_qkv: float = _flagged(0.01, help="adaptive stage: decay step of the query-key/value energy threshold (0.01)")
    gamma_ratio: tuple[float, float, float] = DEFAULT_GAMMA_RATIO  # qkv : exp : emb
    round_to: int = _flagged(8, help="round pruned sizes to a multiple of this (8; 1 = exact)")
    # dims left unpruned (ablation, Table 5)
    exclude: tuple[str, ...] = _flagged(
        (), help=f"adaptive dims left unpruned: any of {','.join(ADAPTIVE_DIMS)}")
    global_ranking: bool = True  # neurons ranked across layers (False: same share per layer, Table 6)
    max_iters: int = 10_000
    # Bisect between the last over-budget iteration and the first within budget (keeping the
    # 1 : 5 : 2.5 decay ratio), so the achieved rate lands just above alpha rather than up to one
    # whole iteration (and a rounding step) beyond it. False: the paper's integer iterations.
    refine_steps: int = 12
    # Then hold the embedding size the search chose and search the finer dims (query-key, value,
    # MLP) again: one rounding step of the embedding (8 of 96 dims) is ~8 % of the whole cost, so
    # the first plan within budget can otherwise overshoot the rate by that much.
    fill: bool = True


@dataclass
class DeriveOptions:
    """Every knob of a derivation, with the paper's values as defaults."""

    rho_depth: float = _flagged(0.95, help="depth: drop a layer while the earlier exit keeps this share of top-1 (0.95)")
    # budget: drop layers by the rho_depth rule from the top (and heads by rho_head), but never so
    # many that the cut model alone is within the budget (it would undershoot the requested cost);
    # the adaptive stage trims the rest, so the achieved rate lands at the request. accuracy: the
    # paper's rules alone, which may cut far past the request (a simple sub-task keeps 1 of 12
    # layers at any rate).
    depth_policy: str = _flagged("budget", choices=DEPTH_POLICIES,
                                 help="budget: depth never cuts past the requested cost (default); "
                                      "accuracy: the paper's rule alone")
    rho_head: float = _flagged(0.90, help="heads: keep the fewest with this share of the importance (0.90)")
    adaptive: AdaptiveOptions = field(default_factory=AdaptiveOptions)
    svd: str = _flagged("product", choices=SVD_CHOICES,
                        help="query-key/value rotation: product (default), joint (Eq. 13), data (weighted by the "
                             "layers' inputs on score_samples fit images), off (Taylor scores pick the dims)")
    prune_depth: bool = True
    prune_heads: bool = True
    taylor_microbatch: int = _flagged(1, help="images per Taylor-score gradient (1: per-sample, Eq. 4)")
    score_samples: int = _flagged(512, help="sub-task images the importance scores are computed on (512)")
    # The per-base caches (`nuwa prepare`), on all-class fit images. Each embedding-score image
    # costs a per-sample forward and backward pass (~3 forward passes); the per-layer classifiers'
    # features one forward pass for all layers. These sizes keep a DeiT-S derivation at 224x224
    # within minutes on a laptop's CPU (results/scale/); raise them for many classes (~10-20
    # images per class for the per-layer classifiers) or where compute is cheap.
    embed_score_samples: int = _flagged(512, help="all-class images the embedding scores are computed on "
                                                  "(per base, cached; default 512)")
    layer_head_samples: int = _flagged(2048, help="all-class images the per-layer classifiers are trained on "
                                                  "(per base, cached; default 2048)")
    layer_head_epochs: int = 30
    val_fraction: float = _flagged(0.1, help="share of the training split held out for validation (0.1)")
    # The fit/validation split of the base's training data. None: the run's seed (`--seed`), so
    # seeds differ in their split too; the per-base caches are kept per split (nuwa.base).
    split_seed: int | None = _flagged(None, help="seed of the fit/validation split (default: the run's --seed)",
                                      seed=True)
    batch_size: int = _flagged(64, help="batch of scoring, fine-tuning and validation (64)")
    finetune_lr: float = 1e-4
    weight_decay: float = 0.05
    # Recovery --recovery closed-form | distill (nuwa.recovery). ridge: penalty per calibration token,
    # relative to the inputs' mean variance, so one value suits every layer (RidgeStats.solve);
    # calib_samples: sub-task fit images for the closed-form refit. distill: DeiT soft distillation
    # at temperature tau, alpha its weight ((1 - alpha) on the labels), plus exit class-token
    # mimicking (relative MSE) weighted by feature_weight (0 = off).
    ridge: float = _flagged(1e-3, help="closed-form recovery: ridge, relative to input variance (1e-3)")
    calib_samples: int = _flagged(256, help="closed-form recovery: calibration images (256)")
    distill_tau: float = _flagged(1.0, help="distill recovery: temperature (1.0)")
    distill_alpha: float = _flagged(0.5, help="distill recovery: weight of the teacher term (0.5)")
    distill_feature_weight: float = _flagged(
        0.0, help="distill recovery: weight of exit class-token mimicking (0 = off)")
    # The standard recovery (nuwa.recovery.recipe): AdamW with linear warm-up over warmup_fraction of
    # the steps, cosine decay and layer-wise lr decay (MAE and BEiT fine-tune ViT-B at 0.65, larger
    # and smaller ViTs at 0.75), DeiT distillation from the base. Each lr (at the first distillation
    # weight), then each weight at the best lr, trains recovery_search_samples from the pruned
    # weights; the best pair on validation then trains in
    # rounds of recovery_round samples until validation loss has not fallen for recovery_patience
    # rounds, or recovery_max_samples. The lrs span a from-scratch miniature's (1e-4) and a
    # pretrained ViT's, which lr 1e-4 without warm-up wrecks (results/dinov2/recovery_diagnosis.md).
    recovery_lrs: tuple[float, ...] = _flagged(
        (1e-5, 3e-5, 1e-4), help="standard recovery: lr candidates, chosen on validation (1e-5,3e-5,1e-4)")
    recovery_distill_alphas: tuple[float, ...] = _flagged(
        (0.5, 0.9), help="standard recovery: distillation weight candidates in [0, 1], chosen on validation (0.5,0.9)")
    layer_decay: float = _flagged(0.75, help="standard recovery: layer-wise lr decay in (0, 1] (0.75; 1 = none)")
    warmup_fraction: float = _flagged(0.1, help="standard recovery: share of steps of linear warm-up (0.1)")
    recovery_round: int = _flagged(2000, help="standard recovery: samples between validation reads (2000)")
    recovery_max_samples: int = _flagged(32000, help="standard recovery: sample cap (32000)")
    recovery_patience: int = _flagged(2, help="standard recovery: rounds without a lower validation loss "
                                              "before it stops (2)")
    recovery_search_samples: int = _flagged(2000, help="standard recovery: samples each candidate trains (2000)")
    latency_batch: int = _flagged(1, help="--latency-ms: the batch size the budget is for (1)")
    latency_runtime: str = _flagged("torch", choices=LATENCY_RUNTIMES, help="--latency-ms: the runtime timed (torch)")
    latency_threads: int | None = None
    latency_margin: float = 0.05  # a candidate must beat the latency budget by this share
    xpruner: dict[str, Any] | None = None  # MaskOptions of the X-Pruner baseline (nuwa.methods.xpruner)
    cache: bool = True  # cache per-base artefacts (layer heads, embedding scores) in the base directory
    # Proxy derivation (derive(..., proxy_gmm=...)): how many top-scoring public samples to keep,
    # as a count or a share of the pool; neither: as many as the pool holds of the classes.
    proxy_samples: int | None = _flagged(None, help="keep this many top-scoring public samples")
    proxy_quantile: float | None = _flagged(None, help="keep this share of the pool (default: class share)")
    proxy_select: str = _flagged("stratified", choices=PROXY_SELECTS,
                                 help="stratified: per-component quotas (default); top: best log-likelihoods overall")

    def split(self) -> int:
        """The split seed in force: split_seed, or 0 where no run seed resolved it (analyses)."""
        return 0 if self.split_seed is None else self.split_seed

    def for_seed(self, seed: int) -> "DeriveOptions":
        """These options for a run with `seed`: an unset split_seed becomes the run's seed."""
        from dataclasses import replace

        return self if self.split_seed is not None else replace(self, split_seed=seed)

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
        need(self.depth_policy in DEPTH_POLICIES, "depth_policy", self.depth_policy,
             f"must be {_one_of(DEPTH_POLICIES)}")
        need(self.svd in SVD_CHOICES, "svd", self.svd, f"must be {_one_of(SVD_CHOICES)}")
        for name in ("taylor_microbatch", "score_samples", "embed_score_samples", "layer_head_samples",
                     "batch_size", "latency_batch"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 1, name, v, "must be an integer >= 1")
        need(isinstance(self.layer_head_epochs, int) and self.layer_head_epochs >= 1, "layer_head_epochs",
             self.layer_head_epochs, "must be an integer >= 1")
        need(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "must be in (0, 1)")
        need(self.split_seed is None or (isinstance(self.split_seed, int) and not isinstance(self.split_seed, bool)
                                         and self.split_seed >= 0), "split_seed", self.split_seed,
             "must be an integer >= 0")
        need(self.proxy_samples is None or (isinstance(self.proxy_samples, int) and self.proxy_samples >= 1),
             "proxy_samples", self.proxy_samples, "must be an integer >= 1")
        need(self.proxy_quantile is None or (isinstance(self.proxy_quantile, (int, float))
                                             and 0 < self.proxy_quantile <= 1),
             "proxy_quantile", self.proxy_quantile, "must be in (0, 1]")
        need(self.proxy_samples is None or self.proxy_quantile is None, "proxy_quantile", self.proxy_quantile,
             f"and proxy_samples={self.proxy_samples!r} exclude each other; give one")
        need(self.proxy_select in PROXY_SELECTS, "proxy_select", self.proxy_select,
             f"must be {_one_of(PROXY_SELECTS)}")
        need(self.finetune_lr > 0, "finetune_lr", self.finetune_lr, "must be > 0")
        need(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        for name in ("ridge", "distill_feature_weight"):
            v = getattr(self, name)
            need(_finite(v) and v >= 0, name, v, "must be a finite number >= 0")
        need(_finite(self.distill_tau) and self.distill_tau > 0, "distill_tau", self.distill_tau,
             "must be a finite number > 0")
        need(_finite(self.distill_alpha) and 0 <= self.distill_alpha <= 1, "distill_alpha", self.distill_alpha,
             "must be a number in [0, 1]")
        need(len(self.recovery_lrs) >= 1 and all(_finite(v) and v > 0 for v in self.recovery_lrs), "recovery_lrs",
             self.recovery_lrs, "must be one or more numbers > 0")
        need(len(self.recovery_distill_alphas) >= 1 and all(_finite(v) and 0 <= v <= 1 for v in self.recovery_distill_alphas),
             "recovery_distill_alphas", self.recovery_distill_alphas, "must be one or more numbers in [0, 1]")
        need(_finite(self.layer_decay) and 0 < self.layer_decay <= 1, "layer_decay", self.layer_decay,
             "must be a number in (0, 1]")
        need(_finite(self.warmup_fraction) and 0 <= self.warmup_fraction < 1, "warmup_fraction",
             self.warmup_fraction, "must be a number in [0, 1)")
        for name in ("recovery_round", "recovery_max_samples", "recovery_patience", "recovery_search_samples"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, v, "must be an integer >= 1")
        need(isinstance(self.calib_samples, int) and not isinstance(self.calib_samples, bool)
             and self.calib_samples >= 1, "calib_samples", self.calib_samples, "must be an integer >= 1")
        need(isinstance(self.latency_margin, (int, float)) and 0 <= self.latency_margin < 1, "latency_margin",
             self.latency_margin, "must be in [0, 1)")
        need(self.latency_runtime in LATENCY_RUNTIMES, "latency_runtime", self.latency_runtime,
             f"must be {_one_of(LATENCY_RUNTIMES)}")
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


def check_request(*, rate, metric, latency_ms, method, recovery, finetune_epochs, classes, subtask,
                  proxy_gmm) -> None:
    """Validate the cheap arguments of a derivation before any heavy work (one clear error naming
    the value): the CLI calls this before it imports torch, `derive` again."""
    if (rate is None) == (latency_ms is None):
        raise NuwaError("give exactly one of a pruning rate (--rate) or a latency budget (--latency-ms)")
    if rate is not None and not (isinstance(rate, (int, float)) and math.isfinite(rate) and 0 < rate < 1):
        raise NuwaError(f"rate {rate!r} must be a number in the open interval (0, 1)")
    if latency_ms is not None and not (math.isfinite(latency_ms) and latency_ms > 0):
        raise NuwaError(f"latency budget {latency_ms!r} ms must be a positive number")
    if metric not in METRICS:
        raise NuwaError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if method not in METHOD_NAMES + HYBRID_METHOD_NAMES:
        raise NuwaError(f"unknown method {method!r}; expected one of "
                        f"{', '.join(sorted(METHOD_NAMES + HYBRID_METHOD_NAMES))}")
    check_recovery(DEFAULT_RECOVERY if recovery is None else recovery, finetune_epochs)
    if classes is not None and subtask is not None or (proxy_gmm is None and classes is None and subtask is None):
        # With proxy_gmm neither is needed: the classes default to the gmm's class names.
        raise NuwaError("give exactly one of --classes or --subtask" + ("" if proxy_gmm else " (or --proxy-gmm)"))


def check_recovery(recovery: str, epochs: int) -> None:
    if recovery not in RECOVERY_NAMES:
        raise NuwaError(f"unknown recovery {recovery!r}; expected one of {', '.join(RECOVERY_NAMES)}")
    if epochs < 0:
        raise NuwaError(f"fine-tuning epochs {epochs} must be >= 0")


def _one_of(names: tuple[str, ...]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
