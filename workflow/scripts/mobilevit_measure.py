"""One row of the MobileViT-compression table for one seed (`nuwa.paper.mobilevit_compression.measure`): its record as JSON,
its per-image confusions as npz (for paired intervals over images and seeds)."""
import sys
import tempfile
from pathlib import Path

import numpy as np

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, start, write_json  # noqa: E402

log = start(sm, "mobilevit_measure")
from nuwa.atomic import atomic_path  # noqa: E402
from nuwa.paper.mobilevit_compression import measure  # noqa: E402

bench = dict(sm.params.bench)
with tempfile.TemporaryDirectory() as d:
    record, confs = measure(model_dir(sm.input.model), sm.params.spec, precision=sm.params.precision,
                            onnx_out=Path(d) / "model.onnx", threads=bench.get("threads", 2),
                            warmup=bench.get("warmup", 10), repeats=bench.get("repeats", 50),
                            classes=sm.params.classes)
record.update(row=sm.wildcards.row, seed=int(sm.wildcards.seed))
with atomic_path(sm.output.npz) as tmp, open(tmp, "wb") as f:
    np.savez_compressed(f, confusions=confs)
write_json(sm.output.json, record)
log.info("%s", record)
