"""Derivation without the device's raw data (TAP-ViTs style): a Gaussian mixture as the only upload.

Device side (`fit_device_gmm`, `nuwa fit-gmm`): embed the device's own training images of its
classes with the base model, fit a diagonal Gaussian mixture by EM, and write `gmm.json` with
the mixture (weights, means, variances), the feature definition, the base weights' SHA-256,
the class names the device wants, the sample count, K and the seed. No sample and no
per-sample statistic leaves the device; components that end up describing fewer than
`MIN_COMPONENT_COUNT` samples are dropped during EM, so no mean sits on one device image.

Server side (`open_proxy_subtask`, `nuwa derive --proxy-gmm`): embed every sample of a public
pool's training split (labelled with the base's class names) the same way, score it by its
log-likelihood under the mixture, keep the top-scoring ones (by default per component, in
proportion to the mixture weights: `select`), and of those the ones whose public label is one
of the derived model's classes. That selection replaces the device data for importance scores,
recovery and validation. The server reads only gmm.json and the pool.

Features: the base's class token after the last block and the final LayerNorm (the head's
input, `forward_head(..., pre_logits=True)`), projected onto the top-r right singular vectors
of the base's classifier weight W (C x d), r = min(dims, rank W), default dims 16. Why:
- Both sides compute it from the base alone (W is in the weights the checksum covers); signs
  of the singular vectors are fixed (largest entry positive) so LAPACK builds agree, and a
  projected probe vector stored in gmm.json catches any disagreement.
- It is the subspace the base's classifier reads, i.e. a whitened rotation of the logits
  (V_r^T h = S_r^-1 U_r^T (W h)): class identity, which is what the selection must match,
  dominates it; the d - r directions the head ignores add parameters, EM time and noise to
  the likelihood without improving the selection (measured below).
- r <= 16 keeps the mixture small (K * (2r + 1) numbers) and well conditioned, also for wide
  bases (DeiT-Base: d = 768) and few device samples.
Measured (precision = share of the top-scored public samples whose label is a device class, top =
as many as the pool holds of those classes; device = 2048 FMNIST test images of the classes, pool =
FMNIST train, repo base vit96-fmnist, K = 8): head-svd (10 dims) 0.887 mean over H1/H2/S1/S2 (base
rates 0.3-0.4), the full 96-dim token 0.890 at ten times the parameters and EM time, a seeded
random projection 0.869 (9 dims) / 0.872 (16 dims); with K = 4: 0.904, 0.899, 0.867, 0.888. On the
test fixture (blobs) every choice reaches 1.0.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import NuwaError

FORMAT = "nuwa-gmm/1"
FEATURE_NAME = "cls-after-final-norm"
PROJECTIONS = ("head-svd", "random", "none")
DEFAULT_DIMS = 16
VAR_FLOOR = 1e-3  # variance floor, relative to the fitted data's per-dimension variance
MIN_COMPONENT_COUNT = 5.0  # a component must explain this many samples (privacy and conditioning)
MIN_SAMPLES_PER_COMPONENT = 10  # refuse to fit K components from fewer than this many samples each
PROBE_SEED = 12345
PROBE_TOL = 1e-4


# ---- the mixture ----------------------------------------------------------------------------
@dataclass
class GaussianMixture:
    """Diagonal-covariance Gaussian mixture, float64: weights (K,), means (K, r), variances (K, r)."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    @property
    def components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dims(self) -> int:
        return int(self.means.shape[1])

    def component_log_prob(self, x: np.ndarray) -> np.ndarray:
        """log(w_k) + log N(x | mu_k, diag var_k), shape (n, K)."""
        x = np.asarray(x, dtype=np.float64)
        out = np.empty((x.shape[0], self.components))
        norm = np.log(self.weights) - 0.5 * (self.dims * math.log(2 * math.pi) + np.log(self.variances).sum(1))
        for k in range(self.components):  # per component: no (n, K, r) temporary on large pools
            out[:, k] = norm[k] - 0.5 * (((x - self.means[k]) ** 2) / self.variances[k]).sum(1)
        return out

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Log-likelihood of each row of `x` under the mixture, shape (n,)."""
        return _logsumexp(self.component_log_prob(x))


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=1)
    return m + np.log(np.exp(a - m[:, None]).sum(1))


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to squared distance."""
    n = len(x)
    centres = [x[rng.integers(n)]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = int(rng.integers(n)) if total <= 0 else int(rng.choice(n, p=d2 / total))
        centres.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    return np.stack(centres)


def _lloyd(x: np.ndarray, centres: np.ndarray, iters: int) -> np.ndarray:
    for _ in range(iters):
        assign = (((x[:, None, :] - centres[None]) ** 2).sum(-1)).argmin(1)
        new = centres.copy()
        for j in range(len(centres)):
            members = x[assign == j]
            if len(members):  # an empty cluster keeps its centre
                new[j] = members.mean(0)
        if np.allclose(new, centres):
            break
        centres = new
    return centres


def fit_gmm(x: np.ndarray, *, components: int, seed: int = 0, max_iter: int = 300, tol: float = 1e-6,
            var_floor: float = VAR_FLOOR, kmeans_iter: int = 10,
            min_count: float = MIN_COMPONENT_COUNT) -> tuple[GaussianMixture, dict[str, Any]]:
    """EM for a diagonal Gaussian mixture (float64), k-means++ then Lloyd initialisation, seeded.

    Variances are floored at `var_floor` times the data's per-dimension variance (a collapsing
    component cannot drive the likelihood to infinity). Components explaining fewer than
    `min_count` samples are dropped as EM goes. Stops when the mean log-likelihood improves
    by less than `tol`. Returns the mixture and {iterations, converged, mean_log_likelihood}.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise NuwaError(f"features must be a finite (n, r) array, got shape {x.shape}")
    if isinstance(components, bool) or not isinstance(components, (int, np.integer)) or components < 1:
        raise NuwaError(f"components K={components!r} must be an integer >= 1")
    n, r = x.shape
    if n < components:
        raise NuwaError(f"components K={components} exceeds the {n} samples")
    rng = np.random.default_rng(seed)
    floor = var_floor * x.var(0) + 1e-12
    centres = _lloyd(x, kmeans_pp(x, int(components), rng), kmeans_iter)
    assign = (((x[:, None, :] - centres[None]) ** 2).sum(-1)).argmin(1)
    resp = np.zeros((n, len(centres)))
    resp[np.arange(n), assign] = 1.0
    prev, converged, it = -np.inf, False, 0
    gmm = None
    for it in range(1, max_iter + 1):
        gmm = _m_step(x, resp, floor, min_count)
        logp = gmm.component_log_prob(x)
        ll = _logsumexp(logp)
        resp = np.exp(logp - ll[:, None])
        mean_ll = float(ll.mean())
        if mean_ll - prev < tol:
            converged = True
            break
        prev = mean_ll
    gmm = _m_step(x, resp, floor, min_count)  # parameters consistent with the last E-step
    return gmm, dict(iterations=it, converged=converged, mean_log_likelihood=float(gmm.log_prob(x).mean()))


def _m_step(x: np.ndarray, resp: np.ndarray, floor: np.ndarray, min_count: float) -> GaussianMixture:
    counts = resp.sum(0)
    keep = counts >= min_count
    if not keep.any():  # cannot happen with n >= min_count, but never return an empty mixture
        keep = counts == counts.max()
    resp, counts = resp[:, keep], counts[keep]
    means = (resp.T @ x) / counts[:, None]
    variances = np.stack([(resp[:, k] @ (x - means[k]) ** 2) / counts[k] for k in range(len(counts))])
    return GaussianMixture(weights=counts / counts.sum(), means=means, variances=np.maximum(variances, floor))


# ---- features -------------------------------------------------------------------------------
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
    from .data import Preprocess, batches

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


# ---- device side ----------------------------------------------------------------------------
def fit_device_gmm(model, data: str, *, classes: str | Sequence[str | int], out: str | Path,
                   components: int = 8, samples: int = 2048, seed: int = 0, dims: int = DEFAULT_DIMS,
                   projection: str = "head-svd", batch_size: int = 256) -> dict[str, Any]:
    """Runs on the device: fit the mixture to the base's features of the device's own training
    images of `classes` (at most `samples`, a seeded random subset) and write `out` (gmm.json)
    atomically. Returns what was written."""
    from .data import class_subset, open_split, resolve_classes
    from .base import load_base

    for name, v in (("components K", components), ("samples", samples), ("dims", dims), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise NuwaError(f"{name}={v!r} must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise NuwaError(f"seed={seed!r} must be an integer in [0, 2**32)")
    if projection not in PROJECTIONS:
        raise NuwaError(f"projection {projection!r} must be one of {', '.join(PROJECTIONS)}")
    from .atomic import _prepare_parent

    _prepare_parent(Path(out))
    base, _ = load_base(model)
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
    from .atomic import atomic_file

    with atomic_file(out) as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    return doc


# ---- server side ----------------------------------------------------------------------------
def read_gmm(path: str | Path) -> tuple[dict[str, Any], GaussianMixture, str]:
    """Read and check gmm.json: (document, mixture, SHA-256 of the bytes read). One NuwaError
    naming the file and the bad key if it is not usable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise NuwaError(f"gmm file {str(path)!r}: cannot read ({e.strerror})") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NuwaError(f"gmm file {str(path)!r} is corrupt: not valid JSON ({e})") from None

    def bad(what: str) -> NuwaError:
        return NuwaError(f"gmm file {str(path)!r} is corrupt: {what}")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise bad(f"format is {got!r}, expected {FORMAT!r}")
    for key in ("base_sha256", "class_names", "feature", "weights", "means", "variances", "samples", "components"):
        if key not in doc:
            raise bad(f"key {key!r} missing")
    sha = doc["base_sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise bad(f"base_sha256={sha!r} is not a SHA-256 hex digest")
    names = doc["class_names"]
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(c, str) for c in names)):
        raise bad(f"class_names={names!r} must be a list of at least 2 names")
    feat = doc["feature"]
    if not (isinstance(feat, dict) and feat.get("name") == FEATURE_NAME and feat.get("projection") in PROJECTIONS
            and isinstance(feat.get("dims"), int) and feat["dims"] >= 1 and isinstance(feat.get("probe"), list)):
        raise bad(f"feature={feat!r} is not a known feature definition")
    try:
        w, mu, var = (np.asarray(doc[k], dtype=np.float64) for k in ("weights", "means", "variances"))
    except (TypeError, ValueError):
        raise bad("weights, means and variances must be numeric arrays") from None
    k, r = len(w), feat["dims"]
    if w.shape != (k,) or k < 1 or doc["components"] != k:
        raise bad(f"weights has shape {list(w.shape)}, components={doc['components']!r}")
    for key, a in (("means", mu), ("variances", var)):
        if a.shape != (k, r):
            raise bad(f"{key} has shape {list(a.shape)}, expected [{k}, {r}]")
    if not (np.isfinite(w).all() and np.isfinite(mu).all() and np.isfinite(var).all()):
        raise bad("a parameter is not finite")
    if (w <= 0).any() or abs(w.sum() - 1) > 1e-6:
        raise bad(f"weights must be positive and sum to 1 (sum {w.sum():.6g})")
    if (var <= 0).any():
        raise bad("variances must be positive")
    return doc, GaussianMixture(weights=w, means=mu, variances=var), hashlib.sha256(raw).hexdigest()


def check_against_base(doc: dict[str, Any], base, path: str | Path) -> np.ndarray:
    """Refuse a mixture fitted on other base weights or other features; return the projection."""
    sha = weights_sha256(base)
    if doc["base_sha256"] != sha:
        raise NuwaError(f"gmm file {str(path)!r} was fitted on base weights sha256 {doc['base_sha256']} "
                        f"but this base has sha256 {sha}")
    feat = doc["feature"]
    if feat.get("embed_dim") != base.config.embed_dim:
        raise NuwaError(f"gmm file {str(path)!r}: feature embed_dim {feat.get('embed_dim')} != base's "
                        f"{base.config.embed_dim}")
    proj = feature_projection(base, projection=feat["projection"], dims=feat["dims"])
    probe = projection_probe(proj)
    if proj.shape[1] != feat["dims"] or len(feat["probe"]) != len(probe) or \
            not np.allclose(probe, feat["probe"], rtol=PROBE_TOL, atol=PROBE_TOL):
        raise NuwaError(f"gmm file {str(path)!r}: this machine computes other {feat['projection']} features "
                        f"from the base than the device did (probe mismatch)")
    return proj


def selection_size(*, pool: int, in_classes: int, samples: int | None, quantile: float | None) -> tuple[int, str]:
    """How many top-scoring pool samples to keep, and the rule's name for the report."""
    if samples is not None:
        return min(int(samples), pool), f"samples={samples}"
    if quantile is not None:
        return max(1, int(round(float(quantile) * pool))), f"quantile={quantile}"
    # Default: as many as the pool holds of the derived classes, so precision equals recall.
    return in_classes, "class-share"


SELECTIONS = ("stratified", "top")


def select(gmm: GaussianMixture, comp_log_prob: np.ndarray, n: int, *, how: str = "stratified") -> np.ndarray:
    """Indices of the `n` pool samples to keep, given their (n_pool, K) component log-probabilities.

    "top": the n highest mixture log-likelihoods. "stratified" (default): each component k gets a
    quota round(n * w_k) filled with its own samples (those it explains best), highest likelihood
    first, the remainder by global rank. A plain top-n collapses onto the densest mode when n is
    small (measured on FMNIST S1: top 2700 were all Trousers for a Trouser/Pullover/Sneaker/Bag
    device); quotas keep the selection's mix that of the device's mixture.
    """
    if how not in SELECTIONS:
        raise NuwaError(f"proxy selection {how!r} must be one of {', '.join(SELECTIONS)}")
    ll = _logsumexp(comp_log_prob)
    order = np.argsort(-ll, kind="stable")
    if how == "top" or n >= len(ll):
        return order[:n]
    quota = np.floor(n * gmm.weights).astype(int)
    quota[np.argsort(-(n * gmm.weights - quota), kind="stable")[: n - quota.sum()]] += 1  # largest remainders
    owner = comp_log_prob.argmax(1)
    chosen = np.zeros(len(ll), dtype=bool)
    for k in range(gmm.components):
        members = order[owner[order] == k]  # component k's samples, best first
        chosen[members[: quota[k]]] = True
    short = n - int(chosen.sum())  # components with fewer samples than their quota
    if short > 0:
        chosen[order[~chosen[order]][:short]] = True
    return order[chosen[order]]  # best first


def open_proxy_subtask(public: str, base, classes=None, *, gmm_path: str | Path, opts):
    """The SubTask of a proxy derivation: the public pool's samples that score highest under the
    device's mixture and carry one of the derived classes, split by the pool's own fit/val
    split (so validation stays disjoint from the per-base artefacts' fit part)."""
    from .data import SubsetDataset, class_subset, resolve_classes
    from .task import SubTask, open_base_data

    samples, quantile = getattr(opts, "proxy_samples", None), getattr(opts, "proxy_quantile", None)
    doc, gmm, gmm_sha = read_gmm(gmm_path)
    proj = check_against_base(doc, base, gmm_path)
    bd = open_base_data(public, base, opts=opts)
    names = bd.class_names
    try:
        device_idx = resolve_classes(doc["class_names"], names)
    except NuwaError as e:
        raise NuwaError(f"gmm file {str(gmm_path)!r}: {e}") from None
    idx = device_idx if classes is None else resolve_classes(classes, names)

    comps, ys = [], []  # per-component log-probabilities and labels of the pool's fit, then val part
    for part, desc in ((bd.fit_all, "proxy scores (fit)"), (bd.val_all, "proxy scores (val)")):
        x, y = embed(base, part, proj, batch_size=opts.batch_size, desc=desc)
        comps.append(gmm.component_log_prob(x))
        ys.append(y)
    comp, labels = np.concatenate(comps), np.concatenate(ys)
    scores = _logsumexp(comp)
    pool, n_fit = len(scores), len(ys[0])
    n_sel, rule = selection_size(pool=pool, in_classes=int(np.isin(labels, idx).sum()), samples=samples,
                                 quantile=quantile)
    how = getattr(opts, "proxy_select", "stratified")
    top = select(gmm, comp, n_sel, how=how)
    chosen = np.zeros(pool, dtype=bool)
    chosen[top] = True
    fit = class_subset(SubsetDataset(bd.fit_all, np.flatnonzero(chosen[:n_fit])), idx)
    val = class_subset(SubsetDataset(bd.val_all, np.flatnonzero(chosen[n_fit:])), idx)
    per_class = {names[c]: int((fit.targets == j).sum() + (val.targets == j).sum()) for j, c in enumerate(idx)}
    empty = [c for c, n in per_class.items() if n == 0]
    if empty:
        raise NuwaError(f"the proxy selection ({n_sel} of {pool} public samples, {rule}) holds no sample of "
                        f"class {empty[0]!r}; select more (proxy_samples / proxy_quantile)")
    if len(val) == 0:
        raise NuwaError(f"the proxy selection ({n_sel} of {pool}) holds no sample of the pool's validation part; "
                        f"select more (proxy_samples / proxy_quantile)")
    info = dict(
        gmm=str(gmm_path), gmm_sha256=gmm_sha, components=gmm.components, feature=doc["feature"]["projection"],
        dims=gmm.dims, device_classes=list(doc["class_names"]), device_samples=doc["samples"],
        pool=pool, rule=rule, select=how, top=int(n_sel), selected=int(len(fit) + len(val)),
        fit=len(fit), val=len(val),
        per_class=per_class, precision=float(np.isin(labels[top], device_idx).mean()) if n_sel else 0.0,
        base_rate=float(np.isin(labels, device_idx).mean()),
        top_mean_log_likelihood=float(scores[top].mean()) if n_sel else None,
        device_mean_log_likelihood=(doc.get("em") or {}).get("mean_log_likelihood"),
    )
    return SubTask(spec=public, classes=idx, class_names=[names[i] for i in idx], fit=fit, val=val,
                   fit_all=bd.fit_all, preprocess=bd.preprocess, proxy=info)
