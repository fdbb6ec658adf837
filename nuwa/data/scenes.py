"""A miniature scene-parsing task built offline from Fashion-MNIST.

A scene is a black canvas with 1..3 rescaled Fashion-MNIST items at random places; its mask
labels each pixel 0 (background) or class+1 of the item whose silhouette covers it, so
segmentation can be studied without a download. Later items occlude earlier ones with their
silhouette only (pixels brighter than `FOREGROUND`), which keeps one invariant exact:
`mask > 0` exactly where `image > FOREGROUND`.

    write_scenes("data/fashion-mnist", "data/scenes.npz", train=10000, test=2000, canvas=64, seed=0)
    ds = read_scenes("data/scenes.npz", "train")      # ds[i] -> (float (1,H,W) in [0,1], int64 (H,W))
    sub = ds.subset([5, 7, 9])                         # background + Sandal, Sneaker, Ankle boot
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import NuwaError
from .sources import FASHION_MNIST_CLASSES, read_fashion_mnist

FOREGROUND = 25  # an item's pixel belongs to its silhouette when brighter than this (of 255)
MIN_SIZE, MAX_SIZE = 20, 36  # side of a placed item in pixels (28 px sources, nearest resize)
SCENE_CLASSES = ["background", *FASHION_MNIST_CLASSES]
_KEYS = "need x_train, m_train, x_test, m_test, class_names"


class Placement(NamedTuple):
    """One item of a scene: which source image, where (top-left corner) and how big (square)."""

    index: int
    top: int
    left: int
    size: int


def plan_scenes(n_source: int, *, n: int, canvas: int = 64, items: tuple[int, int] = (1, 3),
                seed: int) -> list[list[Placement]]:
    """The layout of `n` scenes, drawn from `numpy.random.default_rng(seed)` alone.

    Separate from drawing so tests (and provenance) can see where every item went."""
    _check_args(n_source=n_source, n=n, canvas=canvas, items=items)
    rng = np.random.default_rng(seed)
    lo, hi = min(MIN_SIZE, canvas), min(MAX_SIZE, canvas)
    plans = []
    for _ in range(n):
        count = int(rng.integers(items[0], items[1] + 1))
        scene = []
        for _ in range(count):
            index = int(rng.integers(n_source))
            size = int(rng.integers(lo, hi + 1))
            top, left = (int(v) for v in rng.integers(0, canvas - size + 1, size=2))
            scene.append(Placement(index, top, left, size))
        plans.append(scene)
    return plans


def render_scenes(source_images: Any, source_labels: Any, plans: Sequence[Sequence[Placement]], *,
                  canvas: int = 64, desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw planned scenes: uint8 images (n,1,canvas,canvas) and uint8 masks (n,canvas,canvas)."""
    src, labels = _source_arrays(source_images, source_labels)
    n = len(plans)
    images = np.zeros((n, 1, canvas, canvas), np.uint8)
    masks = np.zeros((n, canvas, canvas), np.uint8)
    from ..loop_utils import progress

    resized: dict[int, np.ndarray] = {}  # size -> nearest-neighbour source rows/columns
    with progress(n, desc) as bar:
        for i, scene in enumerate(plans):
            image, mask = images[i, 0], masks[i]
            for p in scene:
                if p.size not in resized:
                    resized[p.size] = ((np.arange(p.size) + 0.5) * src.shape[1] / p.size).astype(np.int64)
                idx = resized[p.size]
                item = src[p.index][idx[:, None], idx[None, :]]
                region = image[p.top:p.top + p.size, p.left:p.left + p.size]
                mregion = mask[p.top:p.top + p.size, p.left:p.left + p.size]
                fg = item > FOREGROUND
                region[fg] = item[fg]
                mregion[fg] = labels[p.index] + 1
                # The faint rim of an item shows on the background only, never over another item.
                faint = ~fg & (mregion == 0)
                region[faint] = np.maximum(region[faint], item[faint])
            bar.update(1)
    return images, masks


def make_scenes(source_images: Any, source_labels: Any, *, n: int, canvas: int = 64,
                items: tuple[int, int] = (1, 3), seed: int,
                desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`n` scenes of `items[0]..items[1]` items from the source set, each item rescaled to
    20..36 px and placed fully inside the canvas; the same arguments give the same bytes.

    Returns uint8 images (n,1,canvas,canvas) and uint8 masks (n,canvas,canvas) with labels 0
    (background) and class+1. `desc` names a progress bar on stderr."""
    src, labels = _source_arrays(source_images, source_labels)
    plans = plan_scenes(len(src), n=n, canvas=canvas, items=items, seed=seed)
    return render_scenes(src, labels, plans, canvas=canvas, desc=desc)


def write_scenes(fashion_root: str | Path, out_path: str | Path, *, train: int, test: int, canvas: int,
                 seed: int) -> Path:
    """Build train scenes from Fashion-MNIST's train split and test scenes from its test split
    (so no item is seen in both), and write them as one npz, atomically."""
    from ..atomic import atomic_path

    out_path = Path(out_path)
    arrays: dict[str, np.ndarray] = {}
    for split, n, stream in (("train", train, 0), ("test", test, 1)):
        source = read_fashion_mnist(Path(fashion_root), split)
        # One independent stream per split, so changing `train` leaves the test scenes as they were.
        split_seed = int(np.random.SeedSequence([int(seed), stream]).generate_state(1)[0])
        x, m = make_scenes(source.images, source.targets, n=n, canvas=canvas, seed=split_seed,
                           desc=f"scenes {split}")
        arrays[f"x_{split}"], arrays[f"m_{split}"] = x, m
    arrays["class_names"] = np.array(SCENE_CLASSES, dtype=np.str_)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no suffix
        np.savez_compressed(f, **arrays)
    return out_path


# ---- reading ----------------------------------------------------------------------------------
class SceneDataset(Dataset):
    """Scenes held in memory: `ds[i] -> (float image (C,H,W) in [0,1], int64 mask (H,W))`.

    `images` is uint8 (N,C,H,W), `masks` uint8 (N,H,W); `class_names[0]` is the background."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, class_names: Sequence[str]) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise NuwaError(f"scene images must be a uint8 (N,C,H,W) tensor, got {images.dtype} {tuple(images.shape)}")
        n, _, h, w = images.shape
        if tuple(masks.shape) != (n, h, w):
            raise NuwaError(f"scene masks have shape {tuple(masks.shape)}; expected {(n, h, w)} for the images")
        self.images = images.contiguous()
        self.masks = masks.to(torch.uint8).contiguous()
        self.class_names = [str(c) for c in class_names]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].float() / 255.0, self.masks[i].long()

    def subset(self, classes: Sequence[int]) -> "SceneDataset":
        """The same scenes as a sub-task: background + `classes` (Fashion-MNIST indices), in order."""
        masks = subset_masks(self.masks, classes)
        names = [self.class_names[0]] + [self.class_names[int(c) + 1] for c in classes]
        return SceneDataset(self.images, masks, names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, classes={self.num_classes}, shape={tuple(self.images.shape[1:])})"


def read_scenes(path: str | Path, split: str) -> SceneDataset:
    """One split of a scenes npz (as `write_scenes` writes it), checked: a missing or
    mis-shaped mask, or a label with no class name, raises `NuwaError` naming the file."""
    path = Path(path)
    if split not in ("train", "test"):
        raise NuwaError(f"{path}: split {split!r} is not 'train' or 'test'")
    if not path.is_file():
        raise NuwaError(f"{path}: no such scenes file")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:
        raise NuwaError(f"{path}: not an npz archive ({type(e).__name__})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise NuwaError(f"{path}: not an npz archive (a single array)")
    with z:
        xk, mk = f"x_{split}", f"m_{split}"
        if xk not in z.files:
            raise NuwaError(f"{path}: missing array {xk!r} ({_KEYS})")
        if mk not in z.files:
            raise NuwaError(f"{path}: has {xk} but no {mk} (a segmentation set needs a mask per image)")
        if "class_names" not in z.files:
            raise NuwaError(f"{path}: missing array 'class_names' ({_KEYS})")
        try:
            x, m, names = z[xk], z[mk], z["class_names"]
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise NuwaError(f"{path}: cannot read its arrays ({e})") from None
    if names.ndim != 1 or names.dtype.kind != "U" or len(names) < 2:
        raise NuwaError(f"{path}: class_names must be a 1-D string array with background first, got "
                        f"{names.dtype} {names.shape}")
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise NuwaError(f"{path}: {xk} is {x.dtype} {x.shape}; expected uint8 (N,H,W) or (N,C,H,W)")
    if x.ndim == 3:
        x = x[:, None]
    n, _, h, w = x.shape
    if m.shape != (n, h, w):
        raise NuwaError(f"{path}: {mk} has shape {m.shape} but {xk} holds {n} images of {h}x{w}; "
                        f"expected {(n, h, w)}")
    if m.dtype.kind not in "ui":
        raise NuwaError(f"{path}: {mk} has dtype {m.dtype}; expected integer labels")
    if m.size and (int(m.min()) < 0 or int(m.max()) >= len(names)):
        bad = int(m.max()) if int(m.max()) >= len(names) else int(m.min())
        raise NuwaError(f"{path}: {mk} holds label {bad} but class_names has {len(names)} classes "
                        f"(0..{len(names) - 1})")
    return SceneDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(m.astype(np.uint8)),
                        [str(s) for s in names])


def subset_masks(masks: Any, classes: Sequence[int]) -> Any:
    """Masks for a sub-task: 0 for background and for items of classes left out, 1..k for
    `classes` (indices into the 10 Fashion-MNIST classes, i.e. mask labels c+1) in that order.

    Takes and returns the same kind (numpy array or torch tensor) and dtype."""
    classes = [int(c) for c in classes]
    if not classes:
        raise NuwaError("classes is empty")
    if len(set(classes)) != len(classes):
        raise NuwaError(f"classes={classes} holds a duplicate")
    is_torch = isinstance(masks, torch.Tensor)
    m = masks.cpu().numpy() if is_torch else np.asarray(masks)
    top = int(m.max()) if m.size else 0
    bad = [c for c in classes if c < 0]
    if bad:
        raise NuwaError(f"classes {bad} are negative")
    table = np.zeros(max(top, max(classes) + 1) + 1, dtype=m.dtype)
    table[np.asarray(classes) + 1] = np.arange(1, len(classes) + 1)
    out = table[m]
    return torch.from_numpy(out).to(masks.device) if is_torch else out


def subset_logits(logits: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Logits (B,1+C,...) of a full model (background + C classes) as a sub-task's (B,1+k,...):
    the kept classes' columns in order, and a background that absorbs the classes left out
    (logsumexp of their logits, i.e. their probabilities summed), since in the sub-task their
    pixels are background."""
    total = logits.shape[1]
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < total - 1]
    if bad:
        raise NuwaError(f"classes {bad} are not outputs of a model with {total} outputs (background + 0..{total - 2})")
    kept = [c + 1 for c in classes]
    dropped = [j for j in range(total) if j not in kept]  # includes the background, column 0
    background = torch.logsumexp(logits[:, dropped], dim=1, keepdim=True)
    return torch.cat([background, logits[:, kept]], dim=1)


def scene_batches(ds: Any, *, batch_size: int,
                  order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float images (B,C,H,W) in [0,1], int64 masks (B,H,W)) in `order` (default: as stored):
    in-memory scenes are sliced as whole batches, anything else is collated item by item."""
    order = torch.arange(len(ds)) if order is None else order
    images, masks = getattr(ds, "images", None), getattr(ds, "masks", None)
    in_memory = isinstance(images, torch.Tensor) and isinstance(masks, torch.Tensor) and images.dtype == torch.uint8
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if in_memory:
            yield images[idx].float() / 255.0, masks[idx].long()
        else:
            items = [ds[int(i)] for i in idx]
            yield (torch.stack([x for x, _ in items]).float(),
                   torch.stack([torch.as_tensor(m) for _, m in items]).long())


# ---- helpers ----------------------------------------------------------------------------------
def _source_arrays(images: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Source items as uint8 (N,S,S) and int64 labels (N,), from numpy or torch, (N,S,S) or (N,1,S,S)."""
    x = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise NuwaError(f"source images are {x.dtype} {x.shape}; expected uint8 (N,S,S) or (N,1,S,S)")
    y = y.astype(np.int64)
    if y.shape != (len(x),):
        raise NuwaError(f"source labels have shape {y.shape} for {len(x)} images")
    if y.size and (y.min() < 0 or y.max() > 254):
        raise NuwaError(f"source label {int(y.max()) if y.max() > 254 else int(y.min())} does not fit a uint8 mask")
    return x, y


def _check_args(*, n_source: int, n: int, canvas: int, items: tuple[int, int]) -> None:
    from ..loop_utils import check_positive_int

    check_positive_int("n_source", n_source)
    check_positive_int("n", n, minimum=0)
    check_positive_int("canvas", canvas, minimum=8)
    if (len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in items)
            or not 1 <= items[0] <= items[1]):
        raise NuwaError(f"items={items!r} must be (low, high) integers with 1 <= low <= high")
