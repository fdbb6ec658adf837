"""The data of one derivation: the base's training split, divided once into fit and validation
parts (seeded by `split_seed`, by default the run's seed; per-base caches are kept per split), and a
sub-task's slice of both, relabelled 0..k-1 in the order of its classes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import NuwaError
from .model import EdgeViT
from .options import DeriveOptions


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
    device: Any = None  # torch.device the batches go to (None: where they are read, the CPU)

    def batches(self, ds, n: int | None, *, seed: int, batch_size: int, shuffle: bool = True, desc: str | None = None):
        """Preprocessed (images, labels) batches of `ds` on `device`: uint8 images cross to the
        device and are preprocessed there, a quarter of the bytes of float32 ones."""
        from .data import batches
        from .device import to_device

        for x, y in batches(ds, batch_size=batch_size, shuffle=shuffle, seed=seed, limit=n, progress=desc):
            if self.device is not None:
                x, y = to_device(x, self.device), to_device(y, self.device)
            yield self.preprocess(x), y


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
    fit_all, val_all = train_val_split(train, val_fraction=opts.val_fraction, seed=opts.split())
    names = cfg.class_names if cfg.classes is None and cfg.class_names else train.class_names
    return BaseData(spec=data, class_names=list(names), fit_all=fit_all,
                    val_all=val_all, preprocess=Preprocess.for_config(cfg))


def open_subtask(data: str | BaseData, base: EdgeViT, classes, *, opts: DeriveOptions) -> SubTask:
    """The sub-task's fit and validation parts of the base's training split (`classes`: names or
    indices of the base model's classes)."""
    from .data import class_subset, resolve_classes

    bd = data if isinstance(data, BaseData) else open_base_data(data, base, opts=opts)
    names = bd.class_names
    idx = resolve_classes(classes, names)
    fit, val = class_subset(bd.fit_all, idx), class_subset(bd.val_all, idx)
    if len(fit) == 0 or len(val) == 0:
        raise NuwaError(f"classes {[names[i] for i in idx]} have no training samples in {bd.spec!r}")
    return SubTask(spec=bd.spec, classes=idx, class_names=[names[i] for i in idx], fit=fit, val=val,
                   fit_all=bd.fit_all, preprocess=bd.preprocess)
