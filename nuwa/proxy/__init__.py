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

Modules: `gmm` (the mixture, EM), `features` (the projection, `embed`), `device` (`fit_device_gmm`),
`server` (`read_gmm`, `select`, `open_proxy_subtask`).
"""
from .device import FORMAT, MIN_SAMPLES_PER_COMPONENT, fit_device_gmm
from .features import (
    DEFAULT_DIMS, FEATURE_NAME, PROBE_SEED, PROJECTIONS, embed, feature_projection, projection_probe, weights_sha256,
)
from .gmm import MIN_COMPONENT_COUNT, VAR_FLOOR, GaussianMixture, fit_gmm, kmeans_pp, logsumexp
from .server import (
    PROBE_TOL, SELECTIONS, check_against_base, open_proxy_subtask, read_gmm, select, selection_size,
)

__all__ = [
    "DEFAULT_DIMS", "FEATURE_NAME", "FORMAT", "MIN_COMPONENT_COUNT", "MIN_SAMPLES_PER_COMPONENT", "PROBE_SEED",
    "PROBE_TOL", "PROJECTIONS", "SELECTIONS", "VAR_FLOOR", "GaussianMixture", "check_against_base", "embed",
    "feature_projection", "fit_device_gmm", "fit_gmm", "kmeans_pp", "logsumexp", "open_proxy_subtask",
    "projection_probe", "read_gmm", "select", "selection_size", "weights_sha256",
]
