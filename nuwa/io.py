"""Model directories: `config.json` + `model.safetensors` (+ `report.json`), and ONNX export.

Modules are never pickled: a model is its config and its tensors, so a directory loads with
any later version of this code that reads the same config keys.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .arch import EdgeViTConfig
from .atomic import atomic_dir, atomic_file
from .errors import NuwaError
from .model import EdgeViT

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
REPORT_FILE = "report.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write pretty, key-sorted JSON (stable bytes for DVC)."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _model_classes() -> tuple[type, ...]:
    from .mobilevit.model import EdgeMobileViT

    return (EdgeViT, EdgeMobileViT)


def save(model: EdgeViT, path: str | Path, *, report: dict[str, Any] | None = None) -> Path:
    """Write a model directory atomically; returns its path.

    If `report` is given it is written as `report.json` with the SHA-256 of the weights added.
    """
    if not isinstance(model, _model_classes()):
        raise TypeError(f"nuwa.save expects an EdgeViT or EdgeMobileViT, got {type(model).__name__} "
                        "(convert with nuwa.from_timm)")
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(path) as tmp:
        (tmp / CONFIG_FILE).write_text(model.config.to_json() + "\n")
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if report is not None:
            report = dict(report, weights_sha256=sha256_file(tmp / WEIGHTS_FILE))
            with open(tmp / REPORT_FILE, "w") as f:
                json.dump(report, f, indent=2, sort_keys=True, default=_json_default)
                f.write("\n")
    return path


def read_report(path: str | Path) -> dict[str, Any] | None:
    f = Path(path) / REPORT_FILE
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise NuwaError(f"{f}: not valid JSON ({e})") from None


def read_config(path: str | Path):
    """A model directory's config: `EdgeViTConfig`, or `MobileViTConfig` for `"family": "mobilevit"`."""
    f = Path(path) / CONFIG_FILE
    try:
        family = json.loads(f.read_text()).get("family")
    except (OSError, json.JSONDecodeError, AttributeError):
        family = None  # EdgeViTConfig.read names the problem
    if family == "mobilevit":
        from .mobilevit.arch import MobileViTConfig

        return MobileViTConfig.read(f)
    return EdgeViTConfig.read(f)


def build(config) -> EdgeViT:
    """The model class a config describes, freshly initialised."""
    if isinstance(config, EdgeViTConfig):
        return EdgeViT(config)
    from .mobilevit.model import EdgeMobileViT

    return EdgeMobileViT(config)


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> EdgeViT:
    """Load a model directory into an eval-mode `EdgeViT` (or `EdgeMobileViT`), checking every
    tensor's shape."""
    path = Path(path)
    if not path.is_dir():
        raise NuwaError(f"{path}: no such model directory")
    config = read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise NuwaError(f"{weights}: missing (a model directory holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise NuwaError(f"{weights}: corrupt or truncated safetensors file ({e})") from None
    model = build(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise NuwaError(f"{weights}: tensor {missing[0]!r} missing ({len(missing)} missing in all) for {CONFIG_FILE}")
    if unexpected:
        raise NuwaError(f"{weights}: unexpected tensor {unexpected[0]!r} not in the architecture of {CONFIG_FILE}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise NuwaError(
                f"{weights}: tensor {k!r} has shape {list(state[k].shape)} but {CONFIG_FILE} implies {list(v.shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


def export_onnx(model: EdgeViT, path: str | Path, *, opset: int = 18) -> Path:
    """Export with a dynamic batch axis (input `images`, output `logits`); atomic write."""
    path = Path(path)
    model = model.eval()
    cfg = model.config
    x = torch.zeros(2, cfg.in_chans, *cfg.img_size)
    from .atomic import atomic_path

    with atomic_path(path) as tmp, contextlib.redirect_stdout(sys.stderr):
        # torch.export-based exporter: the maintained path; it prints progress, so stdout is
        # kept clean for callers that print JSON.
        torch.onnx.export(
            model, (x,), str(tmp), input_names=["images"], output_names=["logits"],
            dynamo=True, opset_version=opset, external_data=False,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False,
        )
    return path
