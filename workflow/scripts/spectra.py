"""SVD spectra per head of the one-shot-pruned model (`nuwa.svd.reparametrize`): singular values
of W_Q~^T W_K~ (kind qk) and W_V~^T W_O^T (kind v), biases as an extra input column, with each
direction's share of the head's energy (sigma^2 / sum sigma^2) and the cumulative share that
NuWa's rho_qkv threshold is compared against."""
import sys

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import read_json, start  # noqa: E402

log = start(sm, "spectra")
from _oneshot import one_shot_models  # noqa: E402
from nuwa import io  # noqa: E402
from nuwa.atomic import atomic_path  # noqa: E402
from nuwa.prune import prune_heads  # noqa: E402
from nuwa.svd import reparametrize  # noqa: E402

oneshot = read_json(sm.input.oneshot)
base = io.load(sm.params.base_dir)
_, pruned = one_shot_models(base, sm.params.base_dir, oneshot["classes"], oneshot["depth"])
model = prune_heads(pruned, oneshot["heads_kept"])
_, spectra = reparametrize(model, "product" if sm.params.svd == "off" else sm.params.svd)
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
