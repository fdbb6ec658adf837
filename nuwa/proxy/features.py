"""The mixture's feature space, computed from the base alone on both sides: the class token after the
final norm, projected (head-svd by default; why: see the package doc)."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from ..errors import NuwaError

FEATURE_NAME = "cls-after-final-norm"
PROJECTIONS = ("head-svd", "random", "none")
DEFAULT_DIMS = 16
PROBE_SEED = 12345


def weights_sha256(model) -> str:
    """SHA-256 of the model's weights as `nuwa.save` writes them (equals report.json's
    `weights_sha256` and `layer_heads.base_sha` of its directory), for any EdgeViT in memory."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return hashlib.sha256(save(tensors, metadata={"format": "pt"})).hexdigest()


def feature_projection(model, *, projection: str = "head-svd", dims: int = DEFAULT_DIMS,
                       seed: int = 0) -> np.ndarray:
    """(d, r) float64 matrix mapping the normed class token to the mixture's feature space,
    computed from the base's weights alone (both sides compute the same)."""
    if projection not in PROJECTIONS:
        raise NuwaError(f"projection {projection!r} must be one of {', '.join(PROJECTIONS)}")
    if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or dims < 1:
        raise NuwaError(f"feature dims={dims!r} must be an integer >= 1")
    d = int(model.config.embed_dim)
    if projection == "none":
        return np.eye(d)
    if projection == "random":
        return np.random.default_rng(seed).standard_normal((d, min(int(dims), d))) / math.sqrt(d)
    w = model.head.weight.detach().to("cpu", torch.float64).numpy()
    _, s, vt = np.linalg.svd(w, full_matrices=False)
    rank = int((s > s[0] * 1e-6).sum()) if s.size and s[0] > 0 else 0
    if rank == 0:
        raise NuwaError("the base's classifier weights are all zero; no head-svd features")
    v = vt[:min(int(dims), rank)].T
    # SVD signs are arbitrary and differ between LAPACK builds: make each column's largest entry positive.
    signs = np.sign(v[np.abs(v).argmax(0), np.arange(v.shape[1])])
    return v * np.where(signs == 0, 1.0, signs)


def projection_probe(proj: np.ndarray) -> list[float]:
    """A fixed vector through the projection: lets the server check it computes the same features."""
    probe = np.random.default_rng(PROBE_SEED).standard_normal(proj.shape[0])
    return [round(float(v), 8) for v in probe @ proj]


@torch.no_grad()
def embed(model, ds, proj: np.ndarray, *, limit: int | None = None, shuffle: bool = False, seed: int = 0,
          batch_size: int = 256, desc: str | None = "features") -> tuple[np.ndarray, np.ndarray]:
    """Projected features (n, r) float64 and labels (n,) of (the first `limit` in seeded order of) `ds`."""
    from ..data import Preprocess, batches

    pre = Preprocess.for_config(model.config)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for x, y in batches(ds, batch_size=batch_size, shuffle=shuffle, seed=seed, limit=limit, progress=desc):
            h = model.forward_head(model.forward_features(pre(x.to(device))), pre_logits=True)
            feats.append(h.to("cpu", torch.float64).numpy() @ proj)
            labels.append(y.numpy())
    finally:
        model.train(was_training)
    if not feats:
        return np.zeros((0, proj.shape[1])), np.zeros(0, np.int64)
    return np.concatenate(feats), np.concatenate(labels).astype(np.int64)
