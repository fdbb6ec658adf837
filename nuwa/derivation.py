"""`nuwa.derive`: base ViT + class subset + budget -> a small dense edge ViT and its report.

Phases (wall-clock seconds of each go into the report): load the base, open the sub-task's
data, prune with the chosen method, recover, evaluate on the held-out validation split.
The test split is never opened here; `nuwa eval` measures it.

Data use. The base's training split is divided once (seeded by `split_seed`, not by the
run's seed, so caches stay valid) into a fit part and a validation part. Per-layer
classifiers and embedding scores use the fit part of all classes; sub-task importance
scores and fine-tuning use the fit part of the sub-task's classes; depth decisions and the
reported validation accuracy use the validation part of the sub-task's classes.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import cost, io
from . import layer_heads as lh
from .errors import NuwaError
from .importance import GroupScores, Taylor
from .model import EdgeViT
from .prune import prune_classifier, prune_depth, prune_heads, slice_head
from .recovery import RECOVERIES  # noqa: F401  (re-exported: finetune, distill, closed-form, none)
from .schedule import AdaptiveOptions, Plan, materialise, search, select_heads
from .svd import reparametrize

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
        from .schedule import ADAPTIVE_DIMS

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


class PhaseTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0


@dataclass
class SubTask:
    """The data of one derivation, already split and remapped (labels 0..k-1 in `classes` order)."""

    spec: str
    classes: list[int]  # indices into the base model's classes
    class_names: list[str]
    fit: Any  # sub-task, fit part
    val: Any  # sub-task, validation part
    fit_all: Any  # all classes, fit part (labels = base indices)
    preprocess: Callable
    proxy: dict | None = None  # proxy derivation: how the public samples were selected (nuwa.proxy)

    def batches(self, ds, n: int | None, *, seed: int, batch_size: int, shuffle: bool = True, desc: str | None = None):
        from .data import batches

        for x, y in batches(ds, batch_size=batch_size, shuffle=shuffle, seed=seed, limit=n, progress=desc):
            yield self.preprocess(x), y


def check_request(*, rate, metric, latency_ms, method, recovery, finetune_epochs, methods) -> None:
    """Validate the cheap arguments before any heavy work (one clear error naming the value)."""
    if (rate is None) == (latency_ms is None):
        raise NuwaError("give exactly one of a pruning rate (--rate) or a latency budget (--latency-ms)")
    if rate is not None and not (isinstance(rate, (int, float)) and math.isfinite(rate) and 0 < rate < 1):
        raise NuwaError(f"rate {rate!r} must be a number in the open interval (0, 1)")
    if latency_ms is not None and not (math.isfinite(latency_ms) and latency_ms > 0):
        raise NuwaError(f"latency budget {latency_ms!r} ms must be a positive number")
    if metric not in METRICS:
        raise NuwaError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if method not in methods:
        raise NuwaError(f"unknown method {method!r}; expected one of {', '.join(sorted(methods))}")
    if recovery not in RECOVERIES:
        raise NuwaError(f"unknown recovery {recovery!r}; expected one of {', '.join(RECOVERIES)}")
    if finetune_epochs < 0:
        raise NuwaError(f"fine-tuning epochs {finetune_epochs} must be >= 0")


def load_base(model: str | Path | EdgeViT, *, checkpoint: str | Path | None = None,
              class_names: list[str] | None = None, **timm_kwargs: Any) -> tuple[EdgeViT, Path | None]:
    """An EdgeViT from a model directory, a timm name (+ optional local checkpoint) or a module."""
    if isinstance(model, EdgeViT):
        return model.eval(), None
    path = Path(str(model))
    if path.is_dir():
        return io.load(path), path
    if path.exists() or "/" in str(model):
        raise NuwaError(f"model {str(model)!r}: no such model directory")
    from .convert import create_base, from_timm

    return from_timm(create_base(str(model), checkpoint=checkpoint, **timm_kwargs), class_names=class_names), None


@dataclass
class BaseData:
    """A base model's training split, divided once into fit and validation parts (seeded by split_seed)."""

    spec: str
    class_names: list[str]
    fit_all: Any
    val_all: Any
    preprocess: Callable


def open_base_data(data: str, model: EdgeViT, *, opts: DeriveOptions) -> BaseData:
    """The split of the base's training data; `model` may be the base or a model derived from it."""
    from .data import Preprocess, open_split, train_val_split

    cfg = model.config
    train = open_split(data, "train", img_size=cfg.img_size)
    if cfg.classes is None and len(train.class_names) > cfg.num_classes:
        raise NuwaError(f"data {data!r} has {len(train.class_names)} classes but the base model only "
                        f"{cfg.num_classes}; its labels must index the base model's classes")
    fit_all, val_all = train_val_split(train, val_fraction=opts.val_fraction, seed=opts.split_seed)
    names = cfg.class_names if cfg.classes is None and cfg.class_names else train.class_names
    return BaseData(spec=data, class_names=list(names), fit_all=fit_all,
                    val_all=val_all, preprocess=Preprocess.for_config(cfg))


def open_subtask(data: str | BaseData, base: EdgeViT, classes, *, opts: DeriveOptions,
                 proxy_gmm: str | Path | None = None) -> SubTask:
    from .data import class_subset, resolve_classes

    if proxy_gmm is not None:  # no device data: `data` is a public pool, selected by the device's mixture
        from .proxy import open_proxy_subtask

        spec = data.spec if isinstance(data, BaseData) else data
        return open_proxy_subtask(spec, base, classes, gmm_path=proxy_gmm, opts=opts)
    bd = data if isinstance(data, BaseData) else open_base_data(data, base, opts=opts)
    names = bd.class_names
    idx = resolve_classes(classes, names)
    fit, val = class_subset(bd.fit_all, idx), class_subset(bd.val_all, idx)
    if len(fit) == 0 or len(val) == 0:
        raise NuwaError(f"classes {[names[i] for i in idx]} have no training samples in {bd.spec!r}")
    return SubTask(spec=bd.spec, classes=idx, class_names=[names[i] for i in idx], fit=fit, val=val,
                   fit_all=bd.fit_all, preprocess=bd.preprocess)


def finetune_dir(model_dir: str | Path, data: str, *, epochs: int = 5, seed: int = 0, out: str | Path,
                 options: DeriveOptions | None = None, limit: int | None = None, recovery: str = "finetune",
                 base: str | Path | None = None) -> tuple[EdgeViT, dict]:
    """Recovery as its own step: recover a derived model (`recovery`: finetune, distill,
    closed-form or none) on its classes' fit split (the same split `derive` uses) and write it to
    `out` with its report extended by the recovery's parameters, history and seconds. `limit`
    caps the training samples per epoch (a fresh random subset each epoch; None: all). distill and
    closed-form need the base: `base`, else the base directory the derive report names."""
    from .recovery import RECOVERIES, recover, trained_epochs
    from .train import evaluate, seed_everything

    opts = (options or DeriveOptions()).validate()
    if epochs < 0:
        raise NuwaError(f"fine-tuning epochs {epochs} must be >= 0")
    if recovery not in RECOVERIES:
        raise NuwaError(f"unknown recovery {recovery!r}; expected one of {', '.join(RECOVERIES)}")
    from .atomic import _prepare_parent

    _prepare_parent(Path(out))
    model = io.load(model_dir)
    cfg = model.config
    if cfg.classes is None:
        raise NuwaError(f"{model_dir} is a base model (no class subset); derive an edge model first")
    report = dict(io.read_report(model_dir) or {})
    teacher = None
    if recovery in ("distill", "closed-form"):
        where = base if base is not None else report.get("base")
        if where is None or not Path(str(where)).is_dir():
            raise NuwaError(f"--recovery {recovery} needs the base model directory: {where!r} is not one "
                            f"(give --base)")
        teacher = io.load(where)
    seed_everything(seed)
    timer = PhaseTimer()
    with timer("data"):
        task = open_subtask(open_base_data(data, model, opts=opts), model, list(cfg.classes), opts=opts)
    val_before = evaluate(model, task.val, preprocess=task.preprocess, desc="val")
    with timer("recovery"):
        history, params, details = recover(model, teacher, task, recovery=recovery, epochs=epochs, opts=opts,
                                           seed=seed, limit=limit)
    val = evaluate(model, task.val, preprocess=task.preprocess, desc="val")
    report.pop("weights_sha256", None)
    if limit is not None:
        report["finetune_limit"] = limit
    report.update(recovery=recovery, recovery_params=params, recovery_details=details,
                  finetune_epochs=trained_epochs(recovery, epochs), finetune_history=history,
                  val_top1_before_recovery=val_before["top1"], val_loss_before_recovery=val_before["loss"],
                  val_top1=val["top1"], val_loss=val["loss"], val_n=val["n"], seed=seed)
    report["seconds"] = dict(report.get("seconds", {}), **{k: round(v, 3) for k, v in timer.seconds.items()})
    io.save(model, out, report=report)
    return model, report


def prepare_base(model_dir: str | Path, data: str, *, options: DeriveOptions | None = None) -> dict[str, str]:
    """Build and cache the per-base artefacts every derivation reuses: per-layer classifiers and
    embedding-dim scores (both on all-class data). Returns their paths."""
    opts = (options or DeriveOptions()).validate()
    base_dir = Path(model_dir)
    base = io.load(base_dir)
    bd = open_base_data(data, base, opts=opts)
    task = SubTask(spec=data, classes=[], class_names=[], fit=None, val=None, fit_all=bd.fit_all,
                   preprocess=bd.preprocess)
    base_layer_heads(base, base_dir, task, opts)
    base_embed_scores(base, base_dir, task, opts)
    return dict(layer_heads=str(base_dir / lh.FILE), embed_scores=str(base_dir / EMBED_FILE))


# ---- per-base artefacts (cached next to the base model) ----------------------------------
def base_layer_heads(base: EdgeViT, base_dir: Path | None, task: SubTask, opts: DeriveOptions) -> list:
    sha = lh.base_sha(base_dir) if base_dir is not None else None
    cache = base_dir / lh.FILE if (base_dir is not None and opts.cache) else None
    key = f"{sha}:{opts.layer_head_samples}:{opts.layer_head_epochs}:{opts.split_seed}:{opts.val_fraction}"
    heads = lh.load(cache, key=key) if cache is not None else None
    if heads is None:
        from .train import collect_cls_tokens

        feats, labels = collect_cls_tokens(base, task.fit_all, preprocess=task.preprocess,
                                           limit=opts.layer_head_samples, desc="layer-head features")
        heads = lh.build(base, feats, labels, epochs=opts.layer_head_epochs, seed=opts.split_seed)
        if cache is not None and _writable(base_dir):
            lh.save(cache, heads, key=key, meta=dict(samples=len(labels), epochs=opts.layer_head_epochs))
    return heads


EMBED_FILE = "embed_scores.safetensors"


def base_embed_scores(base: EdgeViT, base_dir: Path | None, task: SubTask, opts: DeriveOptions) -> tuple[torch.Tensor, int]:
    """Taylor scores of the embedding dims on all-class data, once per base model."""
    from safetensors.torch import load_file, save_file

    from .atomic import atomic_path

    sha = lh.base_sha(base_dir) if base_dir is not None else None
    cache = base_dir / EMBED_FILE if (base_dir is not None and opts.cache) else None
    key = f"{sha}:{opts.embed_score_samples}:{opts.taylor_microbatch}:{opts.split_seed}:{opts.val_fraction}"
    if cache is not None and cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), framework="pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return load_file(str(cache))["embed"], 0
    batches = task.batches(task.fit_all, opts.embed_score_samples, seed=opts.split_seed,
                           batch_size=opts.batch_size, desc="embedding scores")
    scores = Taylor(microbatch=opts.taylor_microbatch)(base, batches)
    if cache is not None and _writable(base_dir):
        with atomic_path(cache) as tmp:
            save_file({"embed": scores.embed.contiguous()}, str(tmp), metadata={"key": key})
    return scores.embed, scores.passes


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK)


class Budget:
    """Is a candidate within the derivation's budget? Cost comes from the config alone; latency
    needs the model, which is built only then."""

    def __init__(self, *, rate, metric, latency_ms, base_cost: dict[str, int], opts: DeriveOptions) -> None:
        self.rate, self.metric, self.latency_ms, self.base_cost, self.opts = rate, metric, latency_ms, base_cost, opts

    def __call__(self, config, build: Callable[[], EdgeViT]) -> bool:
        if self.rate is not None:
            return cost.cost(config, self.metric) <= (1 - self.rate) * self.base_cost[self.metric]
        from .bench import measure_latency

        o = self.opts
        # A quick screen, then a confirmation as long as `nuwa bench`'s that must clear the budget
        # by `latency_margin`: a 10-run median at a few milliseconds is noisy enough that a
        # candidate passing by luck is slower when timed again in a fresh process.
        kw = dict(batch_size=o.latency_batch, runtime=o.latency_runtime, threads=o.latency_threads)
        model = build()
        if measure_latency(model, repeats=10, warmup=2, **kw)["latency_ms_median"] > self.latency_ms:
            return False
        confirm = measure_latency(model, repeats=30, warmup=5, min_seconds=0.25, **kw)
        return confirm["latency_ms_median"] <= (1 - o.latency_margin) * self.latency_ms


# ---- the NuWa method ------------------------------------------------------------------------
def _slice_scores(scores: GroupScores, keep_heads: list[list[int]]) -> GroupScores:
    return GroupScores(heads=[s[k] for s, k in zip(scores.heads, keep_heads)],
                       qk=[s[k] for s, k in zip(scores.qk, keep_heads)],
                       v=[s[k] for s, k in zip(scores.v, keep_heads)],
                       neurons=scores.neurons, embed=scores.embed, passes=scores.passes)


def derive_nuwa(base: EdgeViT, base_dir: Path | None, task: SubTask, budget: "Budget", opts: DeriveOptions,
                timer: PhaseTimer, seed: int) -> tuple[EdgeViT, dict]:
    info: dict[str, Any] = {}
    passes = 0
    with timer("classifier"):
        model = prune_classifier(base, task.classes)
    with timer("depth"):
        if opts.prune_depth and base.config.depth > 1:
            from .train import collect_cls_tokens

            heads = base_layer_heads(base, base_dir, task, opts)
            feats, labels = collect_cls_tokens(base, task.val, preprocess=task.preprocess, desc="depth features")
            accs = lh.accuracies(feats, labels, heads, task.classes, eps=base.config.norm_eps)
            keep = lh.choose_depth(accs, opts.rho_depth)
            info["layer_val_top1"] = accs
            if keep < base.config.depth:
                model = prune_depth(model, keep, slice_head(heads[keep - 1], task.classes))
        info["depth"] = model.config.depth
    with timer("importance"):
        batches = task.batches(task.fit, opts.score_samples, seed=seed, batch_size=opts.batch_size,
                               desc="importance")
        scores = Taylor(microbatch=opts.taylor_microbatch)(model, batches)
        passes += scores.passes
    with timer("heads"):
        keep_heads = select_heads(scores.heads, opts.rho_head) if opts.prune_heads else \
            [list(range(l.num_heads)) for l in model.config.layers]
        model = prune_heads(model, keep_heads)
        scores = _slice_scores(scores, keep_heads)
        info["heads_kept"] = keep_heads
    with timer("embedding_scores"):
        embed_scores, n = base_embed_scores(base, base_dir, task, opts)
        passes += n
    with timer("svd"):
        rotated, spectra = reparametrize(model, "product" if opts.svd == "off" else opts.svd)
    with timer("adaptive"):
        use_svd = opts.svd != "off"
        source = rotated if use_svd else model

        def build(plan: Plan) -> EdgeViT:
            return materialise(source, plan, svd=use_svd, scores=scores)

        plan, evaluated = search(spectra, scores, embed_scores, opts.adaptive,
                                 lambda plan: budget(plan.config(model.config), lambda: build(plan)))
        pruned = build(plan)
    info.update(iterations=plan.t, thresholds=plan.rho, sizes_exact=plan.exact, plans_evaluated=evaluated,
                passes=passes)
    return pruned, info


def _methods() -> dict[str, Callable]:
    from .baselines import METHODS as BASELINES

    return {"nuwa": derive_nuwa, **BASELINES}


METHODS: dict[str, Callable] = _methods()


def derive(
    model: str | Path | EdgeViT,
    data: str,
    *,
    classes: str | list | None = None,
    subtask: str | None = None,
    rate: float | None = None,
    metric: str = "flops",
    latency_ms: float | None = None,
    method: str = "nuwa",
    recovery: str = "finetune",
    finetune_epochs: int = 5,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    options: DeriveOptions | None = None,
    proxy_gmm: str | Path | None = None,
) -> tuple[EdgeViT, dict]:
    """Derive an edge ViT for `classes` (names or indices of the base model's classes) or a named
    `subtask`, at a pruning `rate` of `metric` or within `latency_ms`. Returns (model, report);
    with `out`, also writes the model directory (config, weights, report.json) atomically.
    With `proxy_gmm` (a device's gmm.json, `nuwa fit-gmm`), `data` is a public pool and the data
    set is its samples the device's mixture scores highest (nuwa.proxy); `classes` defaults to
    the gmm's class names."""
    opts = (options or DeriveOptions()).validate()
    check_request(rate=rate, metric=metric, latency_ms=latency_ms, method=method, recovery=recovery,
                  finetune_epochs=finetune_epochs, methods=METHODS)
    from .train import evaluate, seed_everything

    if classes is not None and subtask is not None or (proxy_gmm is None and classes is None and subtask is None):
        # With proxy_gmm neither is needed: the classes default to the gmm's class names.
        raise NuwaError("give exactly one of --classes or --subtask" + ("" if proxy_gmm else " (or --proxy-gmm)"))
    if subtask is not None:
        from .subtasks import lookup

        classes = lookup(subtask, data)
    if out is not None:
        from .atomic import _prepare_parent

        _prepare_parent(Path(out))  # fail on an unwritable place before hours of work
    seed_everything(seed)
    timer = PhaseTimer()
    with timer("load"):
        base, base_dir = load_base(model, checkpoint=checkpoint)
    with timer("data"):
        task = open_subtask(data, base, classes, opts=opts, proxy_gmm=proxy_gmm)
    base_cost = dict(params=cost.count_params(base.config), flops=cost.count_flops(base.config))

    budget = Budget(rate=rate, metric=metric, latency_ms=latency_ms, base_cost=base_cost, opts=opts)

    with timer("prune_total"):
        try:
            pruned, info = METHODS[method](base, base_dir, task, budget, opts, timer, seed)
        except NuwaError as e:
            if "unreachable" in str(e):
                what = f"rate {rate} ({metric})" if rate is not None else f"latency budget {latency_ms} ms"
                raise NuwaError(f"{what} is unreachable with method {method}: {e}") from None
            raise
    derive_seconds = timer.seconds["prune_total"]
    val_before = evaluate(pruned, task.val, preprocess=task.preprocess, desc="val")
    from .recovery import recover, trained_epochs

    with timer("recovery"):
        history, recovery_params, recovery_details = recover(pruned, base, task, recovery=recovery,
                                                             epochs=finetune_epochs, opts=opts, seed=seed)
    val_after = evaluate(pruned, task.val, preprocess=task.preprocess, desc="val")
    pcfg = pruned.config
    report = dict(
        method=method, rate_target=rate, metric=metric if rate is not None else "latency", latency_ms_target=latency_ms,
        params=cost.count_params(pcfg), flops=cost.count_flops(pcfg),
        base_params=base_cost["params"], base_flops=base_cost["flops"],
        rate_achieved=1 - cost.cost(pcfg, metric) / base_cost[metric],
        rate_achieved_params=1 - cost.count_params(pcfg) / base_cost["params"],
        rate_achieved_flops=1 - cost.count_flops(pcfg) / base_cost["flops"],
        depth=pcfg.depth, embed_dim=pcfg.embed_dim, layers=pcfg.layer_table(),
        classes=task.classes, class_names=task.class_names, data=data, seed=seed,
        base=str(base_dir) if base_dir is not None else str(model),
        recovery=recovery, recovery_params=recovery_params, recovery_details=recovery_details,
        finetune_epochs=trained_epochs(recovery, finetune_epochs),
        val_top1_before_recovery=val_before["top1"], val_top1=val_after["top1"], val_n=val_after["n"],
        val_loss_before_recovery=val_before["loss"], val_loss=val_after["loss"],
        finetune_history=history, derive_seconds=derive_seconds,
        seconds={k: round(v, 3) for k, v in timer.seconds.items()},
        options=asdict(opts), details=info,
        data_regime="own" if task.proxy is None else "proxy", proxy=task.proxy,
    )
    if latency_ms is not None:
        from .bench import measure_latency

        report["latency"] = measure_latency(pruned, batch_size=opts.latency_batch, runtime=opts.latency_runtime,
                                            threads=opts.latency_threads)
    if out is not None:
        io.save(pruned, out, report=report)
    return pruned, report
