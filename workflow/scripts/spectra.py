"""SVD spectra per head of the one-shot-pruned model (`nuwa.svd.reparametrize`): singular values
of [W_Q b_Q]^T W_K (kind qk; the key bias shifts every key's score alike, so softmax ignores it)
and W_V^T W_O^T (kind v; the value bias is folded into the output bias), with each direction's
share of the head's energy (sigma^2 / sum sigma^2) and the cumulative share that NuWa's rho_qkv
threshold is compared against. With `svd: data` the spectra shown are these weight-only ones: the
data-weighted ones need the derivation's own fit samples."""
import sys
from pathlib import Path

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import read_json, start  # noqa: E402

log = start(sm, "spectra")
from nuwa import io  # noqa: E402
from nuwa import layer_classifiers as lc  # noqa: E402
from nuwa.atomic import atomic_path  # noqa: E402
from nuwa.methods.nuwa import cut_depth  # noqa: E402
from nuwa.prune import prune_classifier, prune_heads  # noqa: E402
from nuwa.svd import reparametrize  # noqa: E402

# The one-shot model `importance` ranked (its classes, depth and heads), rebuilt from the base and
# the per-layer classifiers `nuwa prepare` cached beside it.
oneshot = read_json(sm.input.oneshot)
base_dir = Path(sm.params.base_dir)
base = io.load(base_dir)
exits = lc.load(base_dir / lc.FILE) if oneshot["depth"] < base.config.depth else []
if exits is None:
    raise FileNotFoundError(f"{base_dir / lc.FILE}: per-layer classifiers missing (run `nuwa prepare`)")
pruned = cut_depth(prune_classifier(base, oneshot["classes"]), oneshot["depth"], exits, oneshot["classes"])
model = prune_heads(pruned, oneshot["heads_kept"])
_, spectra = reparametrize(model, "product" if sm.params.svd in ("off", "data") else sm.params.svd)
rows = []
for kind, per_layer in (("qk", spectra.qk), ("v", spectra.v)):
    for layer, heads in enumerate(per_layer):
        for head, sigma in enumerate(heads):
            energy = sigma.double() ** 2
            share = (energy / energy.sum().clamp_min(1e-30)).tolist()
            cum = 0.0
            for index, (s, e) in enumerate(zip(sigma.tolist(), share)):
                cum += e
                rows.append((layer, oneshot["heads_kept"][layer][head], kind, index, s, e, min(cum, 1.0)))
df = pd.DataFrame(rows, columns=["layer", "head", "kind", "index", "sigma", "energy_share", "cumulative_share"])
with atomic_path(sm.output.spectra) as tmp:
    df.to_parquet(tmp, index=False)
log.info("%d layers, %d rows", model.config.depth, len(df))
