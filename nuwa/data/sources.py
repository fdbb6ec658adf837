"""Readers for the in-memory formats: Fashion-MNIST IDX, CIFAR python pickles, npz.

Each returns a `MemoryDataset`. Nothing here downloads, except the one fallback the
Fashion-MNIST reader is asked to try when its files are missing.
"""
from __future__ import annotations

import gzip
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import NuwaError
from .datasets import MemoryDataset

log = logging.getLogger("nuwa.data")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ---- Fashion-MNIST (IDX) ------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip or plain) holding unsigned bytes."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise NuwaError(f"{path}: cannot read IDX file ({e})") from None
    # Header: two zero bytes, a type code (0x08 = ubyte), the number of dims, then
    # one big-endian int32 per dim.
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise NuwaError(f"{path}: not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise NuwaError(f"{path}: IDX type code 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(data) < header:
        raise NuwaError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise NuwaError(f"{path}: IDX header says {shape} ({expected} bytes) but the file holds {len(data) - header}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


def _find_fmnist(root: Path, stem: str) -> Path | None:
    # The Debian layout is ROOT/*.gz; torchvision's download goes to ROOT/FashionMNIST/raw.
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _try_torchvision_download(root: Path) -> None:
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except Exception as e:  # any failure (offline, read-only root) means "not available"
        log.debug("torchvision FashionMNIST download into %s failed: %s", root, e)


def read_fashion_mnist(root: Path, split: str) -> MemoryDataset:
    stems = _FMNIST_FILES[split]
    paths = [_find_fmnist(root, s) for s in stems]
    if None in paths:
        _try_torchvision_download(root)
        paths = [_find_fmnist(root, s) for s in stems]
    if None in paths:
        missing = stems[paths.index(None)]
        raise NuwaError(
            f"fashion-mnist: {missing}[.gz] not found in {str(root)!r}; "
            "install it with 'apt-get install dataset-fashion-mnist' or pass fashion-mnist:ROOT"
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])  # type: ignore[arg-type]
    if images.ndim != 3:
        raise NuwaError(f"{paths[0]}: expected (N,H,W) images, got shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise NuwaError(f"{paths[1]}: {labels.shape[0] if labels.ndim else 0} labels for {images.shape[0]} images")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise NuwaError(f"{paths[1]}: label {int(labels.max())} is out of range 0..9")
    return MemoryDataset(torch.from_numpy(images).unsqueeze(1), labels, FASHION_MNIST_CLASSES)


# ---- CIFAR (python pickles) ---------------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle only what CIFAR batches hold (dicts, lists, numpy arrays), so a tampered
    data file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise NuwaError(f"{path}: missing CIFAR file") from None
    except Exception as e:
        raise NuwaError(f"{path}: not a CIFAR python pickle ({e})") from None
    if not isinstance(obj, dict):
        raise NuwaError(f"{path}: expected a dict, got {type(obj).__name__}")
    # CIFAR was pickled by Python 2: keys come back as bytes.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_dir(root: Path, kind: str) -> Path:
    sub, marker = ("cifar-10-batches-py", "batches.meta") if kind == "cifar10" else ("cifar-100-python", "meta")
    for d in (root / sub, root):
        if (d / marker).is_file():
            return d
    raise NuwaError(f"{kind}: no {sub}/{marker} under {str(root)!r} (expected the python version of {kind})")


def _names(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_cifar(root: Path, kind: str, split: str) -> MemoryDataset:
    d = _cifar_dir(root, kind)
    if kind == "cifar10":
        files = [d / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [d / "test_batch"]
        meta, names_key, label_key = d / "batches.meta", "label_names", "labels"
    else:
        files = [d / ("train" if split == "train" else "test")]
        meta, names_key, label_key = d / "meta", "fine_label_names", "fine_labels"
    meta_d = _load_pickle(meta)
    if names_key not in meta_d:
        raise NuwaError(f"{meta}: missing key {names_key!r}")
    names = _names(meta_d[names_key])
    xs, ys = [], []
    for path in files:
        batch = _load_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise NuwaError(f"{path}: missing key 'data' or {label_key!r}")
        x = np.asarray(batch["data"])
        y = np.asarray(batch[label_key], dtype=np.int64)
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(y) != len(x):
            raise NuwaError(f"{path}: 'data' is {x.dtype} {x.shape} with {len(y)} labels; expected uint8 (N,3072)")
        xs.append(x.reshape(-1, 3, 32, 32))  # rows are R-plane, G-plane, B-plane
        ys.append(y)
    y = np.concatenate(ys)
    if y.size and (y.min() < 0 or y.max() >= len(names)):
        raise NuwaError(f"{kind}: label {int(y.max())} is out of range for {len(names)} classes")
    return MemoryDataset(torch.from_numpy(np.concatenate(xs)), y, names)


# ---- npz ------------------------------------------------------------------------------------
_NPZ_KEYS = "need x_train, y_train, x_test, y_test"


def _npz_header(z: Any, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array without decompressing it (the other split can be big)."""
    if key not in z.files:
        raise NuwaError(f"{path}: missing array {key!r} ({_NPZ_KEYS})")
    with z.zip.open(key + ".npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # rare header versions: just load it
            a = z[key]
            shape, dtype = a.shape, a.dtype
    return tuple(shape), np.dtype(dtype)


def _check_images(shape: tuple[int, ...], dtype: np.dtype, key: str, path: Path) -> tuple[int, ...]:
    """Validate an image array header; return the per-image (C,H,W) shape."""
    if dtype != np.uint8:
        raise NuwaError(f"{path}: {key} has dtype {dtype}; expected uint8")
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 4:
        return (shape[3], shape[1], shape[2])
    raise NuwaError(f"{path}: {key} has ndim {len(shape)} (shape {shape}); expected (N,H,W) or (N,H,W,C)")


def _npz_labels(z: Any, key: str, n: int, path: Path) -> np.ndarray:
    shape, dtype = _npz_header(z, key, path)
    if len(shape) != 1 or not np.issubdtype(dtype, np.integer):
        raise NuwaError(f"{path}: {key} is {dtype} with shape {shape}; expected 1-D integer labels")
    if shape[0] != n:
        raise NuwaError(f"{path}: {key} has {shape[0]} labels but x_{key[2:]} has {n} images")
    y = z[key]
    if y.size and y.min() < 0:
        raise NuwaError(f"{path}: {key} holds negative label {int(y.min())}")
    return y.astype(np.int64)


def _npz_class_names(z: Any, path: Path) -> list[str] | None:
    if "class_names" not in z.files:
        return None
    shape, dtype = _npz_header(z, "class_names", path)
    if len(shape) != 1 or dtype.kind not in "US":
        raise NuwaError(f"{path}: class_names is {dtype} with shape {shape}; expected a 1-D string array")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in z["class_names"].tolist()]


def read_npz(path: Path, split: str) -> MemoryDataset:
    try:
        z = np.load(path, allow_pickle=False)  # no pickles: object arrays are refused
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise NuwaError(f"{path}: not a readable .npz file ({e})") from None
    if not hasattr(z, "files"):
        raise NuwaError(f"{path}: holds a single array, not an .npz archive ({_NPZ_KEYS})")
    with z:
        try:
            return _read_npz(z, path, split)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            if isinstance(e, NuwaError):
                raise
            raise NuwaError(f"{path}: corrupt .npz archive ({e})") from None


def _read_npz(z: Any, path: Path, split: str) -> MemoryDataset:
    headers = {s: _npz_header(z, f"x_{s}", path) for s in ("train", "test")}
    per_image = {s: _check_images(*headers[s], f"x_{s}", path) for s in ("train", "test")}
    if per_image["train"] != per_image["test"]:
        raise NuwaError(f"{path}: x_test images are (C,H,W)={per_image['test']} but x_train are {per_image['train']}")
    ys = {s: _npz_labels(z, f"y_{s}", headers[s][0][0], path) for s in ("train", "test")}
    names = _npz_class_names(z, path)
    if names is None:
        top = max((int(y.max()) for y in ys.values() if y.size), default=-1)
        names = [str(i) for i in range(top + 1)]
    else:
        for s, y in ys.items():
            if y.size and y.max() >= len(names):
                raise NuwaError(f"{path}: y_{s} holds label {int(y.max())} but class_names has {len(names)} entries")
    if not names:
        raise NuwaError(f"{path}: no classes (y_train and y_test are empty)")
    x = z[f"x_{split}"]
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # -> (N,C,H,W)
    return MemoryDataset(torch.from_numpy(np.ascontiguousarray(x)), ys[split], names)
