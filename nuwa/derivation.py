"""`nuwa.derive`: base ViT + class subset + budget -> a small dense edge ViT and its report.

Phases (wall-clock seconds of each go into the report): load the base, open the sub-task's
data, prune with the chosen method, recover, evaluate on the held-out validation split.
The test split is never opened here; `nuwa eval` measures it.

The pieces: `options` (DeriveOptions), `task` (the data split), `base` (per-base caches),
`methods` (NuWa and the baselines), `recovery`.

Data use. The base's training split is divided (seeded by `split_seed`, by default the run's
seed, so seeds differ in their split too; caches are kept per split) into a fit part and a
validation part. Per-layer classifiers and embedding scores use the fit part of all classes;
sub-task importance scores and fine-tuning use the fit part of the sub-task's classes; depth
decisions, the recovery's guard and the reported validation accuracy use the validation part
of the sub-task's classes.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

from . import cost, io
from .base import load_base
from .errors import NuwaError
from .model import EdgeViT
from .options import DEFAULT_RECOVERY, RATE_TOLERANCE, DeriveOptions, check_recovery, check_request
from .methods import METHODS
from .task import open_base_data, open_subtask
from .timing import PhaseTimer, peak_rss_mb  # noqa: F401  (re-exported: derivations report both)




class Budget:
    """Is a candidate within the derivation's budget? Cost comes from the config alone; latency
    needs the model, which is built only then."""

    def __init__(self, *, rate, metric, latency_ms, base_cost: dict[str, int], opts: DeriveOptions) -> None:
        self.rate, self.metric, self.latency_ms, self.base_cost, self.opts = rate, metric, latency_ms, base_cost, opts

    def rate_of(self, config) -> float:
        """The pruning rate `config` reaches in the budget's metric."""
        return round(1 - cost.cost(config, self.metric) / self.base_cost[self.metric], 6)

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


def explain_rate(rate: float | None, achieved: float, details: dict) -> str | None:
    """Why a derivation's achieved rate lies outside [rate, rate + RATE_TOLERANCE]; None inside it."""
    if rate is None or rate - 1e-9 <= achieved <= rate + RATE_TOLERANCE + 1e-9:
        return None
    d = details or {}
    if d.get("depth_policy") == "accuracy" and d.get("rate_after_depth", 0.0) > rate + RATE_TOLERANCE:
        return (f"the accuracy depth policy keeps {d['depth']} layers, which alone reach rate "
                f"{d['rate_after_depth']:.3f}; --depth-policy budget keeps the layers the request needs")
    over = d.get("nearest_over_budget_rate")
    if over is not None:
        return (f"no candidate lies in between: the search's finest step goes from rate {over:.3f} (over "
                f"budget) to {achieved:.3f}; a smaller --round-to gives finer steps")
    return f"rate {achieved:.3f} is the method's nearest candidate within budget"


# ---- derive and its recovery step ----------------------------------------------------------
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
    recovery: str | None = None,
    finetune_epochs: int = 5,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    options: DeriveOptions | None = None,
    proxy_gmm: str | Path | None = None,
    teacher: str | None = None,
    teacher_checkpoint: str | None = None,
) -> tuple[EdgeViT, dict]:
    """Derive an edge ViT for `classes` (names or indices of the base model's classes) or a named
    `subtask`, at a pruning `rate` of `metric` or within `latency_ms`. Returns (model, report);
    with `out`, also writes the model directory (config, weights, report.json) atomically.
    With `proxy_gmm` (a device's gmm.json, `nuwa fit-gmm`), `data` is a public pool and the data
    set is its samples the device's mixture scores highest (nuwa.proxy); `classes` defaults to
    the gmm's class names. `recovery` (nuwa.recovery.recover) defaults to `standard`. A MobileViT
    base directory is derived by `nuwa.mobilevit.derive` (`teacher`: its distillation teacher;
    `recovery` defaults to finetune there)."""
    opts = (options or DeriveOptions()).validate().for_seed(seed)
    mobilevit = isinstance(model, (str, Path)) and Path(model).is_dir() and not hasattr(io.read_config(model), "layers")
    if recovery is None:
        recovery = "finetune" if mobilevit else DEFAULT_RECOVERY
    check_request(rate=rate, metric=metric, latency_ms=latency_ms, method=method, recovery=recovery,
                  finetune_epochs=finetune_epochs, classes=classes, subtask=subtask, proxy_gmm=proxy_gmm)
    if mobilevit:
        for name, value in (("latency_ms", latency_ms), ("proxy_gmm", proxy_gmm), ("subtask", subtask),
                            ("checkpoint", checkpoint)):
            if value is not None:
                raise NuwaError(f"{name.replace('_', '-')} {value!r} is not available for a MobileViT base")
        from .mobilevit.derive import derive as derive_mobilevit

        return derive_mobilevit(model, data, classes=classes, rate=rate, metric=metric, method=method,
                                recovery=recovery, finetune_epochs=finetune_epochs, seed=seed, out=out, options=opts,
                                teacher=teacher, teacher_checkpoint=teacher_checkpoint)
    if teacher is not None or teacher_checkpoint is not None:
        raise NuwaError("--teacher is for MobileViT bases; a ViT's distill recovery distils from its base")
    if method not in METHODS:
        raise NuwaError(f"method {method!r} (the MobileViT compression study's weight-norm recipe) is for MobileViT "
                        f"bases; a ViT takes "
                        f"{', '.join(METHODS)}")
    from .evaluate import evaluate
    from .train import seed_everything

    if subtask is not None:
        from .subtasks import lookup

        classes = lookup(subtask, data)
    if out is not None:
        from .atomic import prepare_parent

        prepare_parent(Path(out))  # fail on an unwritable place before hours of work
    from .device import device

    dev = device()  # the runtime's (nuwa.device.use; default auto): fail before any work
    seed_everything(seed)
    timer = PhaseTimer()
    with timer("load"):
        base, base_dir = load_base(model, checkpoint=checkpoint)
        base = base.to(dev)
    with timer("data"):
        if proxy_gmm is None:
            task = open_subtask(data, base, classes, opts=opts)
        else:  # no device data: `data` is a public pool, selected by the device's mixture
            from .proxy import open_proxy_subtask

            task = open_proxy_subtask(data, base, classes, gmm_path=proxy_gmm, opts=opts)
        task.device = dev
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
    val_before = evaluate(pruned, task.val, preprocess=task.preprocess, batch_size=opts.batch_size, desc="val")
    from .recovery import recover, trained_epochs

    with timer("recovery"):
        history, recovery_params, recovery_details = recover(pruned, base, task, recovery=recovery,
                                                             epochs=finetune_epochs, opts=opts, seed=seed)
    val_after = evaluate(pruned, task.val, preprocess=task.preprocess, batch_size=opts.batch_size, desc="val")
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
        seconds={k: round(v, 3) for k, v in timer.seconds.items()}, peak_rss_mb=timer.peak_rss_mb,
        device=str(next(pruned.parameters()).device),
        rate_note=explain_rate(rate, 1 - cost.cost(pcfg, metric) / base_cost[metric], info),
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


def finetune_dir(model_dir: str | Path, data: str, *, epochs: int = 5, seed: int = 0, out: str | Path,
                 options: DeriveOptions | None = None, limit: int | None = None, recovery: str = DEFAULT_RECOVERY,
                 base: str | Path | None = None) -> tuple[EdgeViT, dict]:
    """Recovery as its own step: recover a derived model (`recovery`: standard, paper, finetune,
    distill, closed-form or none; nuwa.recovery.recover) on its classes' fit split (the same split `derive` uses) and write it to
    `out` with its report extended by the recovery's parameters, history and seconds. `limit`
    caps the training samples per epoch (a fresh random subset each epoch; None: all). distill and
    closed-form need the base: `base`, else the base directory the derive report names."""
    from .recovery import recover, trained_epochs
    from .evaluate import evaluate
    from .train import seed_everything

    opts = (options or DeriveOptions()).validate()
    check_recovery(recovery, epochs)
    from .atomic import prepare_parent

    prepare_parent(Path(out))
    from .device import device

    dev = device()
    model = io.load(model_dir).to(dev)
    cfg = model.config
    if cfg.classes is None:
        raise NuwaError(f"{model_dir} is a base model (no class subset); derive an edge model first")
    report = dict(io.read_report(model_dir) or {})
    # The derivation's split, so fine-tuning never trains on the images its validation used.
    derived_split = (report.get("options") or {}).get("split_seed")
    opts = opts.for_seed(seed if derived_split is None else derived_split)
    teacher = None
    if recovery in ("distill", "closed-form") or (recovery == "standard" and max(opts.recovery_distill_alphas) > 0):
        where = base if base is not None else report.get("base")
        if where is None or not Path(str(where)).is_dir():
            raise NuwaError(f"--recovery {recovery} needs the base model directory: {where!r} is not one "
                            f"(give --base)")
        teacher = io.load(where).to(dev)
    seed_everything(seed)
    timer = PhaseTimer()
    with timer("data"):
        task = open_subtask(open_base_data(data, model, opts=opts), model, list(cfg.classes), opts=opts)
        task.device = dev
    val_before = evaluate(model, task.val, preprocess=task.preprocess, batch_size=opts.batch_size, desc="val")
    with timer("recovery"):
        history, params, details = recover(model, teacher, task, recovery=recovery, epochs=epochs, opts=opts,
                                           seed=seed, limit=limit)
    val = evaluate(model, task.val, preprocess=task.preprocess, batch_size=opts.batch_size, desc="val")
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
