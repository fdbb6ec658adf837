"""SVD of the attention's weight products (paper Eq. 5, Appendix A.3 with biases, Eq. 13 joint).

Rather than truncating directly, each layer is *rotated* into its singular basis, per head,
with the directions sorted by singular value. The rotated model computes the same function
(exactly, up to float error), and pruning the query-key or value size then means keeping the
first r dims of every head -- the same slicing operator that score-based pruning uses.

Product SVD of W_Q~^T W_K~ ((d+1) x (d+1), rank <= q/H) is computed through two thin QR
factorisations and one small (q/H x q/H) SVD, so a DeiT-Base layer costs milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import EdgeViT
from .prune._rebuild import layer_config, rebuild, state_of

METHODS = ("product", "joint")


@dataclass
class Spectra:
    """Singular values per layer, each a (heads, dims) tensor sorted in decreasing order."""

    qk: list[torch.Tensor]
    v: list[torch.Tensor]


def _factor_product(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a (r x m), b (r x n) -> a', b' (r x m, r x n) with a'^T b' == a^T b, rows sorted by sigma.

    a'^T b' = U sqrt(S) sqrt(S) V^T, the SVD of a^T b, split evenly between the two factors.
    """
    qa, ra = torch.linalg.qr(a.T)  # a^T = qa ra
    qb, rb = torch.linalg.qr(b.T)
    us, s, vsh = torch.linalg.svd(ra @ rb.T)
    root = s.clamp_min(0).sqrt()
    a_new = root[:, None] * (qa @ us).T
    b_new = root[:, None] * (qb @ vsh.T).T
    return a_new, b_new, s


def _factor_joint(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 13: SVD of [a, b] = U S V^T; a' = U^T a, b' = U^T b (an orthogonal rotation of the rows)."""
    u, s, _ = torch.linalg.svd(torch.cat([a, b], dim=1), full_matrices=False)
    return u.T @ a, u.T @ b, s


def _factor(method: str):
    if method not in METHODS:
        raise ValueError(f"unknown SVD method {method!r}; expected one of {METHODS}")
    return _factor_product if method == "product" else _factor_joint


@torch.no_grad()
def reparametrize(model: EdgeViT, method: str = "product", *, qk: bool = True, v: bool = True) -> tuple[EdgeViT, Spectra]:
    """Rotate every head's query-key and/or value dims into its singular basis.

    Returns the rotated model (same sizes, same function) and the spectra. With biases, the
    bias is appended to the weight as an extra input column (Appendix A.3).
    """
    factor = _factor(method)
    state = state_of(model)
    cfg = model.config
    spectra = Spectra(qk=[], v=[])
    for i in range(cfg.depth):
        lc = layer_config(model, i)
        H, dq, dv, d = lc.num_heads, lc.qk_dim, lc.v_dim, cfg.embed_dim
        p = f"blocks.{i}.attn."
        w = state[p + "qkv.weight"].double()
        b = state.get(p + "qkv.bias")
        w_aug = torch.cat([w, b.double()[:, None]], dim=1) if b is not None else w
        wo = state[p + "proj.weight"].double()
        qk_s, v_s = [], []
        for h in range(H):
            qs, ks = slice(h * dq, (h + 1) * dq), slice(H * dq + h * dq, H * dq + (h + 1) * dq)
            vs = slice(2 * H * dq + h * dv, 2 * H * dq + (h + 1) * dv)
            if qk:
                w_aug[qs], w_aug[ks], s = factor(w_aug[qs], w_aug[ks])
                qk_s.append(_pad(s, dq))
            if v:
                a, o_t, s = factor(w_aug[vs], wo[:, h * dv:(h + 1) * dv].T)
                w_aug[vs], wo[:, h * dv:(h + 1) * dv] = a, o_t.T
                v_s.append(_pad(s, dv))
        dtype = state[p + "qkv.weight"].dtype
        state[p + "qkv.weight"] = w_aug[:, :d].to(dtype)
        if b is not None:
            state[p + "qkv.bias"] = w_aug[:, d].to(dtype)
        state[p + "proj.weight"] = wo.to(dtype)
        if qk:
            spectra.qk.append(torch.stack(qk_s).float())
        if v:
            spectra.v.append(torch.stack(v_s).float())
    return rebuild(cfg, state), spectra


def _pad(s: torch.Tensor, n: int) -> torch.Tensor:
    """Singular values padded with zeros to the head's size (a rank-deficient head)."""
    return torch.cat([s, s.new_zeros(n - s.numel())]) if s.numel() < n else s[:n]
