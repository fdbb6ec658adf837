"""Lazily loaded image folders: `ROOT/{train,val|test}/<class>/<image>` (ImageFolder layout)."""
from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import NuwaError

log = logging.getLogger("nuwa.data")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"})
# Below this many files every image is verified when the set is opened (cheap next to
# training); above it (ImageNet) a bad file is only found, and reported, when it is loaded.
VERIFY_LIMIT = 20000


def check_size(size: object) -> tuple[int, int]:
    """Validate an (H, W) pair of positive ints."""
    try:
        h, w = (int(s) for s in size)  # type: ignore[union-attr]
        ok = h > 0 and w > 0 and all(float(s) == int(s) for s in size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise NuwaError(f"img_size={size!r} must be two positive integers (H, W)")
    return (h, w)


def split_dir(root: Path, split: str) -> Path:
    names = ("train",) if split == "train" else ("val", "test")
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise NuwaError(f"{str(root)!r} has no {' or '.join(n + '/' for n in names)} folder for the {split} split")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    # Sorted so that indices (and hence seeded splits) are the same on every machine.
    return sorted(
        Path(e.path) for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
    )


def _readable(path: Path) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. DecompressionBombWarning, EXIF noise
            with Image.open(path) as im:
                im.verify()
        return True
    except Exception:
        return False


def load_image(path: Path, size: tuple[int, int] | None) -> torch.Tensor:
    """Decode one file to a uint8 (3,H,W) tensor, resized (PIL bilinear) to `size`=(H,W)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im = im.convert("RGB")
    except Exception as e:
        raise NuwaError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    if size is not None and (im.height, im.width) != tuple(size):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class FolderDataset(Dataset):
    """Images decoded on access; labels from the class folder names.

    `class_names` are the sorted class folders of `train/` (so train and test labels agree),
    `img_size` is the size every item is resized to (given, else the first image's), and
    `skipped` counts unreadable files left out when the set was opened.
    """

    in_chans = 3  # always decoded as RGB; Preprocess adapts to 1-channel models
    images = None  # lazy: no in-memory tensor

    def __init__(self, root: Path, split: str, img_size: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        folder = split_dir(self.root, split)
        train = self.root / "train"
        self.class_names = _class_dirs(train if train.is_dir() else folder)
        if not self.class_names:
            raise NuwaError(f"{str(train if train.is_dir() else folder)!r} has no class folders")
        index = {name: i for i, name in enumerate(self.class_names)}
        files: list[Path] = []
        targets: list[int] = []
        for name in _class_dirs(folder):
            if name not in index:
                raise NuwaError(f"{str(folder / name)!r}: class {name!r} is not among the train classes")
            found = _images_in(folder / name)
            files += found
            targets += [index[name]] * len(found)
        if not files:
            raise NuwaError(f"{str(folder)!r} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.skipped = 0
        if len(files) < VERIFY_LIMIT:
            with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
                keep = list(pool.map(_readable, files))  # I/O bound: threads overlap the reads
            self.skipped = keep.count(False)
            if self.skipped:
                bad = [str(f) for f, k in zip(files, keep) if not k]
                log.warning("skipped %d unreadable images in %s (first: %s)", self.skipped, folder, bad[0])
                files = [f for f, k in zip(files, keep) if k]
                targets = [t for t, k in zip(targets, keep) if k]
            if not files:
                raise NuwaError(f"{str(folder)!r}: all {self.skipped} images are unreadable")
        self.files = files
        self.targets = np.asarray(targets, dtype=np.int64)
        if img_size is None:
            try:
                with Image.open(files[0]) as im:
                    img_size = (im.height, im.width)
            except Exception as e:
                raise NuwaError(f"{files[0]}: unreadable image ({type(e).__name__}: {e})") from None
        self.img_size = check_size(img_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return load_image(self.files[i], self.img_size), int(self.targets[i])

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.root)!r}, n={len(self)}, classes={len(self.class_names)}, img_size={self.img_size})"
