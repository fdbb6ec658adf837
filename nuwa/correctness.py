"""Per-image correctness (0/1 per test image) in a compact text form for JSON records and tables.

Test images are evaluated in a fixed order, so two models' vectors on the same sub-task and split
are aligned image by image: what a paired comparison of the two needs."""
from __future__ import annotations

import base64
from typing import Sequence

import numpy as np


def pack_correct(correct: Sequence[bool] | np.ndarray) -> str:
    """0/1 correctness per image as "N:base64(packbits)": about N / 6 characters for N images."""
    c = np.asarray(correct, dtype=bool).ravel()
    return f"{c.size}:" + base64.b64encode(np.packbits(c).tobytes()).decode("ascii")


def unpack_correct(packed: str) -> np.ndarray:
    n, _, data = packed.partition(":")
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data), dtype=np.uint8))
    return bits[: int(n)].astype(bool)
