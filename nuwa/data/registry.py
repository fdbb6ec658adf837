"""`open_split` and `probe`: from a spec string to a data set and its basic facts."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import NuwaError
from .datasets import SubsetDataset, images_of
from .folder import FolderDataset, check_size
from .loader import batches
from .sources import read_cifar, read_fashion_mnist, read_npz
from .spec import DataSpec, parse_spec

SPLITS = ("train", "test")
# Published Fashion-MNIST training-set statistics (pixels scaled to [0, 1]); they match the
# full 60000-image training set to 4 decimals (checked in tests/test_data.py).
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


def fashion_mnist_stats() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel of the Fashion-MNIST training images, without reading them."""
    return FASHION_MNIST_MEAN, FASHION_MNIST_STD


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a data set before it sees a batch."""

    num_classes: int
    class_names: list[str]
    in_chans: int
    img_size: tuple[int, int] | None  # raw image size; folders: the first image's (or img_size given)
    mean: tuple[float, ...]  # per channel, on training images scaled to [0, 1]
    std: tuple[float, ...]


def open_split(spec: str | DataSpec, split: str, img_size: Sequence[int] | None = None) -> Dataset:
    """Open one split ("train" or "test") of a data set.

    `img_size` = (H, W) only matters for lazily decoded folders, whose images may differ in
    size: every item is resized to it (default: the first image's size). In-memory sets keep
    their native size; `Preprocess` resizes batches for the model.
    """
    s = parse_spec(spec)
    if split not in SPLITS:
        raise NuwaError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    size = None if img_size is None else check_size(img_size)
    if s.kind == "fashion-mnist":
        return read_fashion_mnist(s.root, split)
    if s.kind in ("cifar10", "cifar100"):
        return read_cifar(s.root, s.kind, split)
    if s.kind == "npz":
        return read_npz(s.root, split)
    if s.kind == "scenes":
        raise NuwaError(f"data spec {str(spec)!r} is a segmentation set: it is read by MobileViT segmenters "
                        "(nuwa derive on a segmenter base, nuwa.segmentation), not as a classification set")
    if s.kind in ("imagenet", "folder"):
        return FolderDataset(s.root, split, size)
    raise NuwaError(f"data spec {str(spec)!r}: no reader for kind {s.kind!r}")  # parse_spec guards this


def channel_stats(ds: Dataset, sample: int = 10000, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (a seeded random sample of up to `sample`) images in [0, 1]."""
    n = len(ds)  # type: ignore[arg-type]
    if n == 0:
        raise NuwaError("cannot compute mean/std of an empty data set")
    if n > sample:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
        ds = SubsetDataset(ds, idx)
    total = sq = None
    count = 0
    for x, _ in batches(ds, batch_size=500 if images_of(ds) is not None else 64):
        x = x.to(torch.float64)
        s1, s2 = x.sum(dim=(0, 2, 3)), x.square().sum(dim=(0, 2, 3))
        total, sq = (s1, s2) if total is None else (total + s1, sq + s2)
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count / 255.0  # type: ignore[operator]
    var = (sq / count / 255.0**2 - mean.square()).clamp_min(0.0)  # type: ignore[operator]
    return tuple(float(m) for m in mean), tuple(float(math.sqrt(v)) if v > 0 else 1.0 for v in var)


def probe(spec: str | DataSpec, sample: int = 10000) -> DataInfo:
    """Open the training split and report classes, channels, raw size and mean/std."""
    ds = open_split(spec, "train")
    mean, std = channel_stats(ds, sample)
    images = images_of(ds)
    in_chans = int(images.shape[1]) if images is not None else int(ds.in_chans)  # type: ignore[attr-defined]
    size = tuple(int(s) for s in images.shape[2:]) if images is not None else ds.img_size  # type: ignore[attr-defined]
    names = list(ds.class_names)  # type: ignore[attr-defined]
    return DataInfo(len(names), names, in_chans, size, mean, std)  # type: ignore[arg-type]
