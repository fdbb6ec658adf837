"""SVD of the attention's weight products (paper Eq. 5, Appendix A.3 with biases, Eq. 13 joint).

Rather than truncating directly, each layer is *rotated* into its singular basis, per head,
with the directions sorted by singular value. The rotated model computes the same function
(exactly, up to float error), and pruning the query-key or value size then means keeping the
first r dims of every head -- the same slicing operator that score-based pruning uses.

Biases. Appendix A.3 appends each bias to its weight as an extra input column. Two of those
terms cannot change what a layer computes, yet on a pretrained ViT they dominate the product
(the key bias alone puts > 99 % of DINOv2-S's query-key energy in sigma_1, so the energy rule
keeps rank 1). Both are removed exactly before the SVD:

- the key bias adds x~_q^T W~_Q^T b_K to every key's score for query q, and softmax is
  shift-invariant per query: b_K is set to zero and the query-key SVD is of [W_Q b_Q]^T W_K;
- attention rows sum to 1, so the value bias adds W_O,h b_V,h to every token's output whatever
  the attention: it is folded into proj.bias, b_V is set to zero and the value SVD is of
  W_V^T W_O^T. A model with a qkv bias but no proj bias has nowhere to fold it and keeps the
  augmented [W_V b_V]^T W_O^T.

Methods. `product` (default): the SVD of that product, through two thin QR factorisations and
one small (q/H x q/H) SVD, so a DeiT-Base layer costs milliseconds. `joint` (Eq. 13): the SVD of
the stacked [a, b] (an orthogonal rotation of the rows), on the same bias-free factors.
`data`: the product weighted by the tokens the layer sees on calibration data
(`collect_moments`), so that truncation minimises the expected squared error of the logits
that matter, E (x~_q^T (M - M_r) (x_k - m))^2 = ||C_q^1/2 (M - M_r) S_k^1/2||_F^2 (query and key
tokens taken as independent): C_q is the uncentred second moment of x~ = [x; 1], S_k the
covariance of x about its own image's token mean m (a per-query constant, which softmax
ignores). The value side weighs the input by the uncentred moment of x (x~ where the value bias
stays augmented) and leaves the output side plain. The rotations found for the whitened factors
are applied to the unwhitened weights, so the model's function is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from .errors import NuwaError
from .model import EdgeViT
from .prune._rebuild import layer_config, rebuild, state_of

METHODS = ("product", "joint", "data")
# Ridge added to every eigenvalue of a moment matrix, relative to their mean: LayerNorm outputs
# lie in a hyperplane (and a few images span few directions), so the moments are singular; the
# ridge keeps the unwhitening finite and gives directions the data never visits a negligible weight.
RIDGE = 1e-6


@dataclass
class Spectra:
    """Singular values per layer, each a (heads, dims) tensor sorted in decreasing order."""

    qk: list[torch.Tensor]
    v: list[torch.Tensor]


@dataclass
class Moments:
    """What one attention sees on calibration data: its input tokens x (the LayerNorm-1 outputs)."""

    tokens: int
    mean: torch.Tensor  # (d,) E x
    second: torch.Tensor  # (d, d) E x x^T
    within: torch.Tensor  # (d, d) E (x - m)(x - m)^T, m the token mean of x's own image

    def augmented(self) -> torch.Tensor:
        """E x~ x~^T with x~ = [x; 1]."""
        d = self.mean.numel()
        out = self.second.new_empty(d + 1, d + 1)
        out[:d, :d], out[:d, d], out[d, :d], out[d, d] = self.second, self.mean, self.mean, 1.0
        return out


@torch.no_grad()
def collect_moments(model: EdgeViT, images: torch.Tensor | Iterable, *, batch_size: int = 64) -> list[Moments]:
    """Per-layer `Moments` of the attention inputs over `images`: a (N, C, H, W) tensor, or an
    iterable of batches (tensors or (images, labels) pairs) already preprocessed for `model`.
    Accumulated in float64, one batch at a time (memory: a d x d matrix per layer)."""
    if isinstance(images, torch.Tensor):
        images = images.split(batch_size)
    d = model.config.embed_dim
    device = next(model.parameters()).device
    acc_device = device if device.type != "mps" else torch.device("cpu")  # MPS has no float64
    zeros = lambda *s: torch.zeros(*s, dtype=torch.float64, device=acc_device)  # noqa: E731
    n = [0] * len(model.blocks)
    sums = [zeros(d) for _ in model.blocks]
    seconds, withins = [zeros(d, d) for _ in model.blocks], [zeros(d, d) for _ in model.blocks]

    def hook(i: int):
        def record(module, args):
            x = args[0].detach().to(acc_device, torch.float64)
            flat = x.reshape(-1, d)
            centred = (x - x.mean(dim=1, keepdim=True)).reshape(-1, d)
            n[i] += flat.shape[0]
            sums[i] += flat.sum(0)
            seconds[i] += flat.T @ flat
            withins[i] += centred.T @ centred
        return record

    handles = [blk.attn.register_forward_pre_hook(hook(i)) for i, blk in enumerate(model.blocks)]
    try:
        for batch in images:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))  # float32, no autocast: these moments weight the SVD
    finally:
        for h in handles:
            h.remove()
    if n[0] == 0:
        raise NuwaError("svd data: no calibration images to collect the layers' input moments from")
    return [Moments(tokens=k, mean=(s / k).cpu(), second=(c / k).cpu(), within=(w / k).cpu())
            for k, s, c, w in zip(n, sums, seconds, withins)]


@dataclass
class _Whitening:
    half: torch.Tensor  # C^1/2
    inv_half: torch.Tensor  # C^-1/2


def _whitening(c: torch.Tensor, ridge: float = RIDGE) -> _Whitening:
    lam, vec = torch.linalg.eigh(c.double())
    lam = lam.clamp_min(0)
    scale = lam.mean() if lam.mean() > 0 else lam.new_tensor(1.0)
    lam = lam + ridge * scale
    return _Whitening(half=(vec * lam.sqrt()) @ vec.T, inv_half=(vec * lam.rsqrt()) @ vec.T)


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


def _factor_weighted(a: torch.Tensor, b: torch.Tensor, wa: _Whitening | None,
                     wb: _Whitening | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_factor_product` of the whitened a C_a^1/2, b C_b^1/2, mapped back by C^-1/2: the rows of
    a', b' are R_a a, R_b b with R_a^T R_b = I (a'^T b' == a^T b), sorted by the whitened sigma.
    Mapping back rather than forming R keeps rank-deficient heads exact."""
    aw = a @ wa.half if wa is not None else a
    bw = b @ wb.half if wb is not None else b
    aw, bw, s = _factor_product(aw, bw)
    return (aw @ wa.inv_half if wa is not None else aw), (bw @ wb.inv_half if wb is not None else bw), s


def _rotate(method: str, a: torch.Tensor, b: torch.Tensor, wa: _Whitening | None,
            wb: _Whitening | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if method == "joint":
        return _factor_joint(a, b)
    return _factor_weighted(a, b, wa, wb) if method == "data" else _factor_product(a, b)


@torch.no_grad()
def reparametrize(model: EdgeViT, method: str = "product", *, qk: bool = True, v: bool = True,
                  stats: list[Moments] | None = None) -> tuple[EdgeViT, Spectra]:
    """Rotate every head's query-key and/or value dims into its singular basis.

    Returns the rotated model (same sizes, same function) and the spectra, whose energies
    (sigma^2) feed the adaptive stage's thresholds. The key bias is zeroed and the value bias
    folded into proj.bias first (see the module doc). `stats`: per-layer `Moments`
    (`collect_moments`), required by `data` and ignored otherwise.
    """
    if method not in METHODS:
        raise ValueError(f"unknown SVD method {method!r}; expected one of {METHODS}")
    cfg = model.config
    if method == "data" and (stats is None or len(stats) != cfg.depth):
        raise ValueError(f"SVD method 'data' needs the input moments of each of the {cfg.depth} layers "
                         "(nuwa.svd.collect_moments)")
    # In float64 on the CPU whatever the model's device: small matrices, and the same rotations
    # (hence the same derived sizes) on every device.
    device = next(model.parameters()).device
    state = {k: v.cpu() for k, v in state_of(model).items()}
    spectra = Spectra(qk=[], v=[])
    for i in range(cfg.depth):
        qk_s, v_s = rotate_layer(state, f"blocks.{i}.attn.", layer_config(model, i), method, qk=qk, v=v,
                                 moments=stats[i] if method == "data" else None)
        if qk:
            spectra.qk.append(qk_s)
        if v:
            spectra.v.append(v_s)
    return rebuild(cfg, state).to(device), spectra


@torch.no_grad()
def rotate_layer(state: dict[str, torch.Tensor], p: str, lc, method: str, *, qk: bool, v: bool,
                 moments: Moments | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Rotate one attention's tensors in `state` (keys `p + "qkv.weight"`, ...; on the CPU) into
    its singular basis, in place; returns the (heads, dims) query-key and value spectra.
    `lc` is the layer's `LayerConfig`. Shared by every model whose attention is `EdgeAttention`."""
    H, dq, dv = lc.num_heads, lc.qk_dim, lc.v_dim
    dtype = state[p + "qkv.weight"].dtype
    w = state[p + "qkv.weight"].double()
    b = state[p + "qkv.bias"].double() if p + "qkv.bias" in state else None
    wo = state[p + "proj.weight"].double()
    bo = state[p + "proj.bias"].double() if p + "proj.bias" in state else None
    fold = b is not None and bo is not None
    wq = wk = wv = None
    if method == "data":
        wq = _whitening(moments.augmented() if b is not None else moments.second)
        wk = _whitening(moments.within)
        wv = wq if b is not None and not fold else _whitening(moments.second)

    qk_s, v_s = [], []
    for h in range(H):
        qs, ks = slice(h * dq, (h + 1) * dq), slice(H * dq + h * dq, H * dq + (h + 1) * dq)
        vs, cols = slice(2 * H * dq + h * dv, 2 * H * dq + (h + 1) * dv), slice(h * dv, (h + 1) * dv)
        if qk:
            a = torch.cat([w[qs], b[qs, None]], dim=1) if b is not None else w[qs]
            a, w[ks], s = _rotate(method, a, w[ks], wq, wk)
            w[qs] = a[:, :w.shape[1]]
            if b is not None:
                b[qs], b[ks] = a[:, -1], 0.0  # key bias: a per-query shift, lost in the softmax
            qk_s.append(_pad(s, dq))
        if v:
            if fold:  # value bias: the same W_O,h b_V,h for every token
                bo += wo[:, cols] @ b[vs]
                b[vs] = 0.0
            aug = b is not None and not fold
            a = torch.cat([w[vs], b[vs, None]], dim=1) if aug else w[vs]
            a, o_t, s = _rotate(method, a, wo[:, cols].T, wv, None)
            w[vs], wo[:, cols] = a[:, :w.shape[1]], o_t.T
            if aug:
                b[vs] = a[:, -1]
            v_s.append(_pad(s, dv))
    state[p + "qkv.weight"] = w.to(dtype)
    if b is not None:
        state[p + "qkv.bias"] = b.to(dtype)
    state[p + "proj.weight"] = wo.to(dtype)
    if bo is not None:
        state[p + "proj.bias"] = bo.to(state[p + "proj.bias"].dtype)
    return (torch.stack(qk_s).float() if qk else None), (torch.stack(v_s).float() if v else None)


def _pad(s: torch.Tensor, n: int) -> torch.Tensor:
    """Singular values padded with zeros to the head's size (a rank-deficient head)."""
    return torch.cat([s, s.new_zeros(n - s.numel())]) if s.numel() < n else s[:n]
