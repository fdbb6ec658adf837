"""Peak memory of one NuWa derivation on a paper-sized model: a random timm DeiT shape at 224x224
(default DeiT-Base), prepared and derived with recovery none on synthetic data, in this process.
Prints one JSON line: peak resident memory (ru_maxrss), the scoring batch size, seconds.
Usage: .venv/bin/python scripts/memory_paper_shape.py [MODEL] [BATCH_SIZE] [ALPHA]"""
from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

from nuwa import io
from nuwa.convert import from_timm
from nuwa.options import DeriveOptions
from nuwa.derivation import derive
from nuwa.paper.speed_check import CHECK_OPTIONS, synthetic_npz

name = sys.argv[1] if len(sys.argv) > 1 else "deit_base_patch16_224"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 16
alpha = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
t0 = time.perf_counter()
torch.manual_seed(0)
with tempfile.TemporaryDirectory() as d:
    base = from_timm(timm.create_model(name, pretrained=False, num_classes=50, img_size=224))
    io.save(base, Path(d) / "base")
    del base
    data = synthetic_npz(Path(d) / "data.npz", n=200, img_size=224, num_classes=50, seed=0)
    _, report = derive(str(Path(d) / "base"), f"npz:{data}", classes=list(range(25)), rate=alpha, recovery="none",
                       options=DeriveOptions.from_dict(dict(CHECK_OPTIONS, batch_size=batch)))
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
print(json.dumps(dict(model=name, batch_size=batch, alpha=alpha, peak_rss_mb=round(peak_mb),
                      rate_achieved=report["rate_achieved"], seconds=round(time.perf_counter() - t0, 1))))
