"""Data set specs: the `KIND[:ROOT]` strings users type on the command line."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import NuwaError

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist

# Kind -> default root (None: a root is required).
KINDS: dict[str, Path | None] = {
    "fashion-mnist": FASHION_MNIST_ROOT,
    "cifar10": None,
    "cifar100": None,
    "imagenet": None,
    "folder": None,
    "npz": None,
    "scenes": None,  # a segmentation set (nuwa.data.scenes): images with per-pixel labels
}
# Spellings people reach for; mapped to the canonical kind so reports stay uniform.
_ALIASES = {
    "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
    "cifar-10": "cifar10", "cifar_10": "cifar10", "cifar-100": "cifar100", "cifar_100": "cifar100",
}


@dataclass(frozen=True)
class DataSpec:
    """A parsed spec: which reader (`kind`) and where its files are (`root`)."""

    kind: str
    root: Path

    def __str__(self) -> str:
        return f"{self.kind}:{self.root}"


def parse_spec(spec: str | DataSpec) -> DataSpec:
    """Parse `KIND[:ROOT]`; raise `NuwaError` naming the spec if it cannot be used.

    The fashion-mnist root may be missing here: opening it can still fall back to a
    torchvision download, and that step gives the actionable error.
    """
    if isinstance(spec, DataSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise NuwaError(f"data spec {spec!r} is empty; expected KIND[:ROOT] with KIND in {', '.join(KINDS)}")
    text = spec.strip()
    kind, sep, root = text.partition(":")
    kind = _ALIASES.get(kind.strip().lower(), kind.strip().lower())
    if kind not in KINDS:
        raise NuwaError(f"data spec {spec!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    root = root.strip()
    if not root:
        default = KINDS[kind]
        if default is None:
            raise NuwaError(f"data spec {spec!r}: kind {kind!r} needs a path, e.g. '{kind}:/path/to/data'")
        return DataSpec(kind, default)
    path = Path(root).expanduser()
    if kind != "fashion-mnist" and not path.exists():
        raise NuwaError(f"data spec {spec!r}: path {str(path)!r} does not exist")
    if kind in ("npz", "scenes") and not path.is_file():
        raise NuwaError(f"data spec {spec!r}: {str(path)!r} is not a file")
    if kind in ("cifar10", "cifar100", "imagenet", "folder") and not path.is_dir():
        raise NuwaError(f"data spec {spec!r}: {str(path)!r} is not a directory")
    return DataSpec(kind, path)
