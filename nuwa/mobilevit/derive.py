"""`derive` for a MobileViT base: a classifier on a class subset, or a segmenter for a subset of
the scene classes (background + the chosen ones), at a pruning rate, then recovery.

`nuwa.derive` hands a MobileViT base directory here. Recovery: `finetune`; `distill` from a
`teacher` (a model directory `nuwa` can load, or, for a classifier, a timm model with a local
checkpoint), with the MobileViT compression study's early-feature mimicking for segmenters when
`distill_feature_weight` > 0; `none`.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import io
from ..errors import NuwaError
from ..options import DeriveOptions
from . import cost
from .methods import METHODS, derive_nuwa, derive_norm
from .model import EdgeMobileViT
from .prune import prune_classes

# The early feature the MobileViT compression study mimics: the stride-4 stage output (stage 1), through a 1x1 adapter.
MIMIC_STAGE = 1


@dataclass
class Task:
    kind: str  # "classify" or "segment"
    classes: list[int]  # the base's outputs kept, in order
    class_names: list[str]
    fit: Any
    val: Any
    preprocess: Callable[[torch.Tensor], torch.Tensor]
    scene_classes: list[int] | None = None  # segment: Fashion-MNIST indices of the foreground classes

    def batches(self, ds, n: int | None, *, seed: int, batch_size: int):
        if self.kind == "classify":
            from ..data import batches

            for x, y in batches(ds, batch_size=batch_size, shuffle=True, seed=seed, limit=n):
                yield self.preprocess(x), y
            return
        from ..data.scenes import scene_batches

        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
        for x, y in scene_batches(ds, batch_size=batch_size, order=order):
            yield self.preprocess(x), y


def normaliser(cfg) -> Callable[[torch.Tensor], torch.Tensor]:
    mean = torch.tensor(cfg.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std).view(1, -1, 1, 1)
    return lambda x: (x - mean.to(x.device)) / std.to(x.device)


def open_task(data: str, base: EdgeMobileViT, classes: Any, opts: DeriveOptions) -> Task:
    cfg = base.config
    if cfg.task == "classify":
        from ..task import open_subtask

        st = open_subtask(data, base, classes, opts=opts)
        return Task("classify", st.classes, st.class_names, st.fit, st.val, st.preprocess)
    from ..data import resolve_classes
    from ..data.scenes import read_scenes
    from ..data.spec import parse_spec

    spec = parse_spec(data)
    if spec.kind != "scenes":
        raise NuwaError(f"data {data!r}: a segmenter derives on a scenes set (scenes:PATH), not {spec.kind!r}")
    if cfg.classes is not None:
        raise NuwaError("the base segmenter is already a sub-task model; derive from the full one")
    train = read_scenes(spec.root, "train")
    if train.num_classes != cfg.num_classes:
        raise NuwaError(f"data {data!r} has {train.num_classes} classes but the base segmenter {cfg.num_classes}")
    fg = [c - 1 for c in resolve_classes(classes, train.class_names) if c != 0]
    if len(fg) < 1:
        raise NuwaError(f"classes {classes!r}: name at least one foreground class")
    gen = torch.Generator().manual_seed(opts.split())
    order = torch.randperm(len(train), generator=gen)
    n_val = max(1, round(opts.val_fraction * len(train)))
    sub = train.subset(fg)
    fit, val = _take(sub, order[n_val:]), _take(sub, order[:n_val])
    return Task("segment", [0] + [c + 1 for c in fg], sub.class_names, fit, val, normaliser(cfg), fg)


def _take(ds, idx: torch.Tensor):
    from ..data.scenes import SceneDataset

    return SceneDataset(ds.images[idx], ds.masks[idx], ds.class_names)


# ---- teachers -------------------------------------------------------------------------------------
class TimmTeacher(nn.Module):
    """A timm classifier as a teacher: its logits, and a config saying which classes they are."""

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.config = _Classes(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass
class _Classes:
    num_classes: int
    classes: list[int] | None = None


def load_teacher(spec: str, base: EdgeMobileViT, *, checkpoint: str | None = None) -> nn.Module:
    """The `--teacher`: a model directory, or a timm name with `checkpoint` (nothing is fetched
    from a hub). Its outputs must be the base's classes, checked here with one clear error."""
    cfg = base.config
    path = Path(spec)
    if path.is_dir():
        teacher = io.load(path)
        t = teacher.config
        task = getattr(t, "task", "classify")
        if task != cfg.task:
            raise NuwaError(f"teacher {spec!r} is a {task} model but the base is a {cfg.task} model")
        names, base_names = t.class_names, cfg.class_names
        if t.num_classes != cfg.num_classes or (names and base_names and list(names) != list(base_names)) \
                or (t.classes is not None and list(t.classes) != list(range(cfg.num_classes))):
            raise NuwaError(f"teacher {spec!r} has classes {names or t.num_classes} but the base has "
                            f"{base_names or cfg.num_classes}: a teacher must output the base's classes")
        return teacher.eval()
    import timm

    if not timm.is_model(spec):
        raise NuwaError(f"teacher {spec!r}: not a model directory nor a timm model name")
    if cfg.task != "classify":
        raise NuwaError(f"teacher {spec!r}: a segmenter distils from a segmenter (a model directory), "
                        "not from a timm classifier")
    if checkpoint is None:
        raise NuwaError(f"teacher {spec!r} is a timm name: give its weights with --teacher-checkpoint FILE "
                        "(nothing is fetched from a hub)")
    if not Path(checkpoint).is_file():
        raise NuwaError(f"--teacher-checkpoint {checkpoint!r}: no such file")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    try:  # transformers take the input size; convolutional nets do not
        model = timm.create_model(spec, num_classes=cfg.num_classes, in_chans=cfg.in_chans, img_size=cfg.img_size)
    except TypeError:
        model = timm.create_model(spec, num_classes=cfg.num_classes, in_chans=cfg.in_chans)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise NuwaError(f"teacher {spec!r}: checkpoint {checkpoint!r} does not fit a {cfg.num_classes}-class "
                        f"{spec} ({str(e).splitlines()[-1].strip()[:200]})") from None
    return TimmTeacher(model.eval(), cfg.num_classes)


# ---- recovery -------------------------------------------------------------------------------------
def _evaluate(model: EdgeMobileViT, task: Task, opts: DeriveOptions) -> dict[str, Any]:
    if task.kind == "classify":
        from ..evaluate import evaluate

        r = evaluate(model, task.val, preprocess=task.preprocess, batch_size=opts.batch_size, desc=None)
        return dict(val_top1=r["top1"], val_loss=r["loss"], val_n=r["n"])
    from ..segmentation import evaluate_segmenter

    r = evaluate_segmenter(model, task.val, batch_size=opts.batch_size, preprocess=task.preprocess)
    return dict(val_miou=r["miou"], val_miou_ci=r["miou_ci"], val_pixel_acc=r["pixel_acc"], val_n=r["images"])


def recover(model: EdgeMobileViT, task: Task, *, recovery: str, epochs: int, opts: DeriveOptions, seed: int,
            teacher: nn.Module | None) -> dict[str, Any]:
    """Fine-tune or distil `model` in place on the task's fit part; returns the history."""
    if recovery == "none" or epochs == 0:
        return {}
    if recovery not in ("finetune", "distill"):
        raise NuwaError(f"recovery {recovery!r} is not available for MobileViT (finetune, distill or none)")
    if recovery == "distill" and teacher is None:
        raise NuwaError("--recovery distill on a MobileViT needs --teacher DIR_OR_TIMM_NAME")
    kd = teacher if recovery == "distill" else None
    if task.kind == "classify":
        from ..train import fit

        return fit(model, task.fit, epochs=epochs, lr=opts.finetune_lr, weight_decay=opts.weight_decay,
                   batch_size=opts.batch_size, seed=seed, val_ds=task.val, preprocess=task.preprocess, teacher=kd,
                   desc="fine-tune" if kd is None else "distill")
    from ..segmentation import train_segmenter

    kw: dict[str, Any] = dict(epochs=epochs, batch_size=opts.batch_size, lr=opts.finetune_lr, seed=seed,
                              weight_decay=opts.weight_decay, preprocess=task.preprocess,
                              log=lambda line: print(line, file=sys.stderr))  # stdout: the CLI's JSON
    if kd is None:
        return train_segmenter(model, task.fit, **kw)
    kw.update(teacher=kd.to(next(model.parameters()).device), kd_weight=opts.distill_alpha,
              kd_temperature=opts.distill_tau,
              teacher_classes=task.scene_classes if kd.config.num_classes != model.config.num_classes else None)
    if opts.distill_feature_weight <= 0:
        return train_segmenter(model, task.fit, **kw)
    return _with_mimicking(model, kd, task, kw, opts.distill_feature_weight)


def _with_mimicking(model: EdgeMobileViT, teacher: EdgeMobileViT, task: Task, kw: dict, weight: float):
    """The MobileViT compression study's early-feature mimicking: the student's stage-1 output, through a 1x1 conv
    adapter trained with it (held on the model during training only), against the teacher's."""
    from ..segmentation import train_segmenter

    s_mod, t_mod = model.stages[MIMIC_STAGE][-1], teacher.stages[MIMIC_STAGE][-1]
    s_ch, t_ch = model.config.stage_chs[MIMIC_STAGE], teacher.config.stage_chs[MIMIC_STAGE]
    adapter = nn.Conv2d(s_ch, t_ch, 1).to(next(model.parameters()).device)
    caught: dict[str, torch.Tensor] = {}
    handles = [s_mod.register_forward_hook(lambda _m, _a, out: caught.__setitem__("s", out)),
               t_mod.register_forward_hook(lambda _m, _a, out: caught.__setitem__("t", out))]
    model.add_module("mimic_adapter", adapter)  # so train_segmenter's optimiser trains it
    try:
        return train_segmenter(model, task.fit, feature_pairs=lambda _x: [(adapter(caught["s"]), caught["t"])],
                               feature_weight=weight, **kw)
    finally:
        del model.mimic_adapter
        for h in handles:
            h.remove()


# ---- derive ---------------------------------------------------------------------------------------
def derive(base_dir: str | Path, data: str, *, classes: Any, rate: float, metric: str = "params",
           method: str = "nuwa", recovery: str = "finetune", finetune_epochs: int = 1, seed: int = 0,
           out: str | Path | None = None, options: DeriveOptions | None = None, teacher: str | None = None,
           teacher_checkpoint: str | None = None) -> tuple[EdgeMobileViT, dict]:
    """Derive a MobileViT for `classes` at pruning `rate` of `metric`; see the module doc."""
    from ..timing import PhaseTimer
    from ..device import device
    from ..train import seed_everything

    opts = (options or DeriveOptions()).validate().for_seed(seed)
    if method not in METHODS:
        raise NuwaError(f"method {method!r} is not available for MobileViT; expected one of {', '.join(METHODS)}")
    if rate is None:
        raise NuwaError("a MobileViT derivation takes a pruning rate (--rate); latency budgets are for ViTs")
    dev = device()
    seed_everything(seed)
    timer = PhaseTimer()
    with timer("load"):
        base = io.load(base_dir).to(dev)
        kd = load_teacher(teacher, base, checkpoint=teacher_checkpoint) if teacher is not None else None
        if recovery == "distill" and kd is None:
            raise NuwaError("--recovery distill on a MobileViT needs --teacher DIR_OR_TIMM_NAME")
    with timer("data"):
        task = open_task(data, base, classes, opts)
    base_cost = dict(params=cost.count_params(base.config), flops=cost.count_flops(base.config))
    target = (1 - rate) * base_cost[metric]

    def fits(cfg) -> bool:
        return cost.cost(cfg, metric) <= target

    with timer("prune_total"):
        sliced = prune_classes(base, task.classes)
        if method in ("nuwa", "nuwa-norm"):
            batches = task.batches(task.fit, opts.score_samples, seed=seed, batch_size=opts.batch_size)
            pruned, info = derive_nuwa(sliced, batches, fits, opts, budget_policy=opts.depth_policy == "budget",
                                       criterion="taylor" if method == "nuwa" else "norm")
        else:
            pruned, info = derive_norm(sliced, fits, round_to=opts.adaptive.round_to)
    before = _evaluate(pruned, task, opts)
    with timer("recovery"):
        history = recover(pruned, task, recovery=recovery, epochs=finetune_epochs, opts=opts, seed=seed, teacher=kd)
    after = _evaluate(pruned, task, opts)
    pcfg = pruned.config
    report = dict(
        family="mobilevit", task=task.kind, method=method, rate_target=rate, metric=metric,
        params=cost.count_params(pcfg), flops=cost.count_flops(pcfg),
        base_params=base_cost["params"], base_flops=base_cost["flops"],
        rate_achieved=1 - cost.cost(pcfg, metric) / base_cost[metric],
        rate_achieved_params=1 - cost.count_params(pcfg) / base_cost["params"],
        rate_achieved_flops=1 - cost.count_flops(pcfg) / base_cost["flops"],
        blocks=pcfg.block_table(), classes=task.classes, class_names=task.class_names, data=data, seed=seed,
        base=str(base_dir), recovery=recovery, teacher=teacher, finetune_epochs=finetune_epochs,
        **{f"{k}_before_recovery": v for k, v in before.items()}, **after,
        finetune_history=history, derive_seconds=timer.seconds["prune_total"],
        seconds={k: round(v, 3) for k, v in timer.seconds.items()}, peak_rss_mb=timer.peak_rss_mb,
        device=str(dev), options=asdict(opts), details=info,
    )
    if out is not None:
        io.save(pruned, out, report=report)
    return pruned, report
