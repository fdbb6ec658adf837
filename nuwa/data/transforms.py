"""`Preprocess`: uint8 image batches -> the normalised float input a model expects."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import NuwaError

# ITU-R 601-2 luma weights, the same PIL uses for convert("L"), so an RGB image fed to a
# 1-channel model looks like the grayscale images it was trained on.
LUMA = (0.299, 0.587, 0.114)


class Preprocess:
    """Scale to [0,1], adapt channels, resize, normalise; runs on the batch's device.

    Channel adaptation: 1 -> 3 repeats the gray plane, 3 -> 1 takes the luma-weighted mean;
    any other mismatch raises `NuwaError`. Resizing is bilinear with antialiasing and only
    happens when the size differs. Float input is taken as already scaled to [0, 1].
    """

    def __init__(
        self,
        img_size: Sequence[int] | int,
        in_chans: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if isinstance(img_size, int):
            img_size = (img_size, img_size)
        size = tuple(img_size)
        if len(size) != 2 or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in size):
            raise NuwaError(f"Preprocess: img_size={img_size!r} must be two positive integers (H, W)")
        if not isinstance(in_chans, int) or in_chans < 1:
            raise NuwaError(f"Preprocess: in_chans={in_chans!r} must be a positive integer")
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) != in_chans or len(std) != in_chans:
            raise NuwaError(f"Preprocess: mean/std have {len(mean)}/{len(std)} entries but in_chans={in_chans}")
        if any(not (math.isfinite(s) and s > 0) for s in std):
            raise NuwaError(f"Preprocess: std={list(std)} must be positive")
        self.img_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.in_chans = in_chans
        self.mean = mean
        self.std = std

    @classmethod
    def for_config(cls, cfg: Any) -> "Preprocess":
        """The preprocessing an `EdgeViTConfig` was built for."""
        return cls(tuple(cfg.img_size), int(cfg.in_chans), cfg.mean, cfg.std)

    def __repr__(self) -> str:
        return f"Preprocess(img_size={self.img_size}, in_chans={self.in_chans}, mean={self.mean}, std={self.std})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise NuwaError(f"Preprocess: expected a (B,C,H,W) batch, got {shape}")
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255.0)
        elif x.is_floating_point():
            x = x.to(torch.float32)
        else:
            raise NuwaError(f"Preprocess: batch dtype {x.dtype} is neither uint8 nor floating point")
        c = x.shape[1]
        if c != self.in_chans and not {c, self.in_chans} == {1, 3}:
            raise NuwaError(f"Preprocess: images have {c} channels but the model takes {self.in_chans}")
        # Both channel maps are per-pixel linear, so they commute with resizing: shrink to one
        # channel before resizing and repeat to three after it, to resize as little as possible.
        if c == 3 and self.in_chans == 1:
            w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * w).sum(dim=1, keepdim=True)
        if tuple(x.shape[-2:]) != self.img_size:
            x = F.interpolate(x, size=self.img_size, mode="bilinear", align_corners=False, antialias=True)
        if c == 1 and self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()
