"""The two container types every reader and subset returns.

All data sets share one interface: `ds[i] -> (uint8 tensor (C,H,W), int label)`,
`ds.targets` (int64 labels, known without decoding images), `ds.class_names`, `len(ds)`.
In-memory sets also expose `ds.images`, one uint8 tensor (N,C,H,W), so loaders can slice
whole batches instead of paying Python overhead per item.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import NuwaError


def images_of(ds: Any) -> torch.Tensor | None:
    """The in-memory image tensor of `ds`, or None for lazily loaded sets."""
    images = getattr(ds, "images", None)
    return images if isinstance(images, torch.Tensor) else None


class MemoryDataset(Dataset):
    """Images held as one uint8 tensor (N,C,H,W) with int64 labels."""

    def __init__(self, images: torch.Tensor, targets: np.ndarray, class_names: Sequence[str]) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise NuwaError(f"images must be a uint8 (N,C,H,W) tensor, got {images.dtype} {tuple(images.shape)}")
        targets = np.asarray(targets, dtype=np.int64)
        if targets.shape != (images.shape[0],):
            raise NuwaError(f"targets has shape {targets.shape} but there are {images.shape[0]} images")
        self.images = images.contiguous()
        self.targets = targets
        self.class_names = [str(c) for c in class_names]

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def img_size(self) -> tuple[int, int]:
        return (int(self.images.shape[2]), int(self.images.shape[3]))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, classes={len(self.class_names)}, shape={tuple(self.images.shape[1:])})"


class SubsetDataset(Dataset):
    """Some positions of a parent set, optionally with relabelled targets.

    `indices` are positions in the parent. When the parent is in-memory the subset's images
    are gathered once into `images` (a copy), so batch slicing stays a single tensor index.
    """

    def __init__(
        self,
        parent: Dataset,
        indices: np.ndarray,
        targets: np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.parent = parent
        self.indices = np.asarray(indices, dtype=np.int64)
        parent_targets = np.asarray(parent.targets, dtype=np.int64)  # type: ignore[attr-defined]
        self.targets = parent_targets[self.indices] if targets is None else np.asarray(targets, dtype=np.int64)
        if self.targets.shape != self.indices.shape:
            raise NuwaError(f"subset has {len(self.indices)} indices but {len(self.targets)} targets")
        self.class_names = list(parent.class_names if class_names is None else class_names)  # type: ignore[attr-defined]
        parent_images = images_of(parent)
        self.images = None if parent_images is None else parent_images[torch.from_numpy(self.indices)]
        # Shape facts loaders and probes read; forwarded rather than recomputed.
        self.in_chans = getattr(parent, "in_chans", None)
        self.img_size = getattr(parent, "img_size", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.images is not None:
            return self.images[i], int(self.targets[i])
        image, _ = self.parent[int(self.indices[i])]
        return image, int(self.targets[i])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, classes={len(self.class_names)}, parent={self.parent!r})"
