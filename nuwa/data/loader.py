"""`batches`: seeded uint8 mini-batches from any nuwa data set."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..errors import NuwaError
from .datasets import images_of


@dataclass
class _Failure:
    """A worker-side NuwaError carried back as data: DataLoader re-raises worker exceptions
    with the whole traceback in the message, and our errors must stay one line."""

    message: str


class _Guarded(Dataset):
    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        try:
            return self.ds[i]
        except NuwaError as e:
            return _Failure(str(e))


def collate_images(items: list[Any]) -> Any:
    """Stack (uint8 (C,H,W), label) items, resizing any odd-sized image to the first's size."""
    for item in items:
        if isinstance(item, _Failure):
            return item
    size = tuple(items[0][0].shape[-2:])
    images = []
    for image, _ in items:
        if tuple(image.shape[-2:]) != size:
            resized = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
            image = resized[0].round_().clamp_(0, 255).to(torch.uint8)
        images.append(image)
    labels = torch.tensor([int(y) for _, y in items], dtype=torch.int64)
    return torch.stack(images), labels


def sample_order(n: int, shuffle: bool, seed: int, limit: int | None) -> torch.Tensor:
    """The data-set indices `batches` visits, in its order: batch k holds entries
    [k * batch_size, (k + 1) * batch_size) of this."""
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    else:
        order = torch.arange(n)
    return order if limit is None else order[:limit]


def batches(
    ds: Dataset,
    batch_size: int = 256,
    shuffle: bool = False,
    seed: int = 0,
    limit: int | None = None,
    progress: str | None = None,
    num_workers: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images (B,C,H,W), int64 labels (B,)).

    The order depends only on `seed` (when `shuffle`), never on the machine; `limit` keeps the
    first `limit` samples of that order. In-memory sets are sliced directly; lazy sets go
    through a DataLoader with `num_workers` worker processes (default: the runtime's `--workers`,
    else min(2, cpus)), each decoding a few batches ahead.
    `progress` names a progress bar on stderr (nuwa.progress).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NuwaError(f"batch_size={batch_size!r} must be a positive integer")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise NuwaError(f"limit={limit!r} must be a non-negative integer or None")
    order = sample_order(len(ds), shuffle, seed, limit)  # type: ignore[arg-type]
    bar = None
    if progress:
        from ..progress import bar as progress_bar

        bar = progress_bar(total=len(order), desc=progress, unit="img")
    try:
        for x, y in _iterate(ds, order, batch_size, num_workers):
            if bar is not None:
                bar.update(len(y))
            yield x, y
    finally:
        if bar is not None:
            bar.close()


def _iterate(ds: Dataset, order: torch.Tensor, batch_size: int, num_workers: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    images = images_of(ds)
    if images is not None:
        targets = torch.from_numpy(np.asarray(ds.targets, dtype=np.int64))  # type: ignore[attr-defined]
        n = len(order)
        base = int(order[0]) if n else 0
        contiguous = bool(n) and torch.equal(order, torch.arange(base, base + n))
        for start in range(0, n, batch_size):
            if contiguous:  # unshuffled: views, no copies
                s = slice(base + start, base + min(start + batch_size, n))
                yield images[s], targets[s]
            else:
                idx = order[start:start + batch_size]
                yield images[idx], targets[idx]
        return
    if len(order) == 0:
        return
    if num_workers is None:
        from ..device import current

        num_workers = current().workers
    workers = min(2, os.cpu_count() or 1) if num_workers is None else int(num_workers)
    loader = DataLoader(
        _Guarded(ds), batch_size=batch_size, sampler=order.tolist(), num_workers=workers,
        collate_fn=collate_images, persistent_workers=False, prefetch_factor=4 if workers else None,
    )
    for batch in loader:
        if isinstance(batch, _Failure):
            raise NuwaError(batch.message)
        yield batch
