"""Server side: read and check gmm.json, score a public pool under the mixture and select the proxy
samples that replace the device's data (`open_proxy_subtask`)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NuwaError
from .device import FORMAT
from .features import FEATURE_NAME, PROJECTIONS, embed, feature_projection, projection_probe, weights_sha256
from .gmm import GaussianMixture, logsumexp

PROBE_TOL = 1e-4


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
    ll = logsumexp(comp_log_prob)
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
    from ..data import SubsetDataset, class_subset, resolve_classes
    from ..task import SubTask, open_base_data

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
    scores = logsumexp(comp)
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
