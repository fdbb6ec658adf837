"""nuwa: derive small, fast, task-specific ViTs from one pretrained ViT (NuWa, arXiv 2504.03118).

The flat public API::

    import nuwa
    base = nuwa.from_timm(nuwa.create_base("deit_tiny_patch16_224", checkpoint="deit.pth"))
    nuwa.save(base, "models/base"); model = nuwa.load("models/base")
    nuwa.count_params(model), nuwa.count_flops(model)
    model, report = nuwa.derive("models/base", "fashion-mnist", classes="Sandal,Sneaker", rate=0.6)
    with nuwa.device.use(nuwa.Runtime(device="cuda")):  # default: auto (CUDA, then MPS, then CPU)
        model, report = nuwa.derive(...)

Names are imported on first use, so `import nuwa` (and `nuwa --help`) does not pay for torch
and timm until something computes.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_HOME = {
    "EdgeViTConfig": "arch", "LayerConfig": "arch",
    "EdgeAttention": "model", "EdgeBlock": "model", "EdgeViT": "model",
    "create_base": "convert", "from_timm": "convert",
    "bias_params": "cost", "count_flops": "cost", "count_params": "cost", "flops_eq8": "cost",
    "measure_flops": "cost", "params_eq7": "cost",
    "NuwaError": "errors",
    "export_onnx": "io", "load": "io", "save": "io",
    "DeriveOptions": "options",
    "Runtime": "device",
    "derive": "derivation",
}
_SUBMODULES = ("bench", "cost", "device", "io")

__all__ = sorted([*_HOME, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'nuwa' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
