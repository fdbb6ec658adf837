"""Derivation methods, side by side: NuWa and the baselines (Random, NViT-style, X-Pruner-style).

A method is a function `(base, base_dir, task, budget, opts, timer, seed) -> (model, info)`:
`budget(config, build)` says whether a candidate fits, `timer(phase)` times its phases.
"""
from __future__ import annotations

from typing import Callable

from ..options import METHOD_NAMES
from .baselines import derive_nvit, derive_random, derive_xpruner
from .nuwa import derive_nuwa

METHODS: dict[str, Callable] = {"nuwa": derive_nuwa, "random": derive_random, "nvit": derive_nvit,
                                "xpruner": derive_xpruner}
# The CLI checks --method against METHOD_NAMES before it imports this (torch-heavy) package.
if tuple(METHODS) != METHOD_NAMES:
    raise ImportError(f"nuwa.methods.METHODS {tuple(METHODS)} and nuwa.options.METHOD_NAMES {METHOD_NAMES} differ")
