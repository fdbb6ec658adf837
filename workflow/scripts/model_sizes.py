"""Params/FLOPs of timm ViT shapes converted to EdgeViT, measured and by Eq. 7/8, vs published."""
import logging

import pandas as pd
import timm
import torch

import nuwa
from nuwa.paper.tables import write_table

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
log = logging.getLogger("model_sizes")

rows = []
for spec in snakemake.params.models:
    torch.manual_seed(0)
    ref = timm.create_model(spec["name"], pretrained=False).eval()
    edge = nuwa.from_timm(ref)
    cfg = edge.config
    row = dict(
        model=spec["name"], params=nuwa.count_params(edge), params_eq7=nuwa.params_eq7(cfg),
        flops=nuwa.count_flops(cfg), flops_measured=nuwa.measure_flops(edge),
        flops_timm_measured=nuwa.measure_flops(ref, (1, cfg.in_chans, *cfg.img_size)),
        flops_eq8=nuwa.flops_eq8(cfg),
        params_published=spec["published_params"], flops_published=spec["published_flops"],
    )
    log.info("%s", row)
    rows.append(row)
df = pd.DataFrame(rows)
write_table(df, snakemake.output.csv, snakemake.output.md, snakemake.output.parquet,
            title="Model sizes: EdgeViT counts vs the paper's Eq. 7/8 vs published DeiT/ViT figures (FLOPs = MACs)")
