"""Device side: fit the mixture to the base's features of the device's own images, write gmm.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import NuwaError
from .features import (
    DEFAULT_DIMS, FEATURE_NAME, PROJECTIONS, embed, feature_projection, projection_probe, weights_sha256,
)
from .gmm import MIN_COMPONENT_COUNT, VAR_FLOOR, fit_gmm

FORMAT = "nuwa-gmm/1"
MIN_SAMPLES_PER_COMPONENT = 10  # refuse to fit K components from fewer than this many samples each


def fit_device_gmm(model, data: str, *, classes: str | Sequence[str | int], out: str | Path,
                   components: int = 8, samples: int = 2048, seed: int = 0, dims: int = DEFAULT_DIMS,
                   projection: str = "head-svd", batch_size: int = 256) -> dict[str, Any]:
    """Runs on the device: fit the mixture to the base's features of the device's own training
    images of `classes` (at most `samples`, a seeded random subset) and write `out` (gmm.json)
    atomically. Returns what was written."""
    from ..data import class_subset, open_split, resolve_classes
    from ..base import load_base

    for name, v in (("components K", components), ("samples", samples), ("dims", dims), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise NuwaError(f"{name}={v!r} must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise NuwaError(f"seed={seed!r} must be an integer in [0, 2**32)")
    if projection not in PROJECTIONS:
        raise NuwaError(f"projection {projection!r} must be one of {', '.join(PROJECTIONS)}")
    from ..atomic import prepare_parent

    prepare_parent(Path(out))
    from ..device import device

    base, _ = load_base(model)
    base = base.to(device())
    cfg = base.config
    if cfg.classes is not None:
        raise NuwaError(f"model {model} is a derived model (classes {cfg.classes}); fit-gmm needs the base model")
    ds = open_split(data, "train", img_size=cfg.img_size)
    idx = resolve_classes(classes, ds.class_names)
    names = [ds.class_names[i] for i in idx]
    if cfg.class_names:  # the server resolves these names against the base: fail here, not there
        resolve_classes(names, cfg.class_names)
    sub = class_subset(ds, idx)
    n = min(int(samples), len(sub))
    need = MIN_SAMPLES_PER_COMPONENT * int(components)
    if n < need:
        raise NuwaError(f"components K={components} needs at least {need} samples of {names} "
                        f"({MIN_SAMPLES_PER_COMPONENT} per component); {data!r} has {n}; lower --components")
    proj = feature_projection(base, projection=projection, dims=dims)
    x, _ = embed(base, sub, proj, limit=n, shuffle=True, seed=seed, batch_size=batch_size, desc="gmm features")
    gmm, em = fit_gmm(x, components=int(components), seed=seed)
    doc = dict(
        format=FORMAT, base_sha256=weights_sha256(base), class_names=names,
        feature=dict(name=FEATURE_NAME, projection=projection, dims=int(proj.shape[1]), embed_dim=cfg.embed_dim,
                     probe=projection_probe(proj)),
        covariance="diag", components=gmm.components, components_requested=int(components),
        weights=gmm.weights.tolist(), means=gmm.means.tolist(), variances=gmm.variances.tolist(),
        samples=int(n), seed=int(seed),
        em=dict(em, var_floor=VAR_FLOOR, min_component_count=MIN_COMPONENT_COUNT),
    )
    from ..atomic import atomic_file

    with atomic_file(out) as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    return doc
