"""Where the time goes when a speedup falls short of the FLOPs bound: ONNX Runtime's per-operator
time for a random DeiT shape at 224x224 and its NuWa edge ViT (recovery none), as in
results/speed/. Usage: .venv/bin/python scripts/profile_paper_shape.py [MODEL] [ALPHA] [BATCH]"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import timm
import torch

from nuwa import io
from nuwa.bench import onnx_op_profile
from nuwa.convert import from_timm
from nuwa.options import DeriveOptions
from nuwa.derivation import derive
from nuwa.paper.speed_check import CHECK_OPTIONS, synthetic_npz

name = sys.argv[1] if len(sys.argv) > 1 else "deit_small_patch16_224"
alpha = float(sys.argv[2]) if len(sys.argv) > 2 else 0.8
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 16
torch.manual_seed(0)
with tempfile.TemporaryDirectory() as d:
    base = from_timm(timm.create_model(name, pretrained=False, num_classes=50, img_size=224))
    io.save(base, Path(d) / "base")
    data = synthetic_npz(Path(d) / "data.npz", n=200, img_size=224, num_classes=50, seed=0)
    edge, report = derive(str(Path(d) / "base"), f"npz:{data}", classes=list(range(25)), rate=alpha, recovery="none",
                          options=DeriveOptions.from_dict(CHECK_OPTIONS))
out = {"model": name, "alpha": alpha, "batch_size": batch, "edge_layers": report["layers"]}
for label, model in (("base", base), ("edge", edge)):
    ops = onnx_op_profile(model, batch_size=batch, threads=torch.get_num_threads())
    out[label] = {"total_ms": sum(ops.values()), "ops_ms": {k: round(v, 2) for k, v in ops.items()}}
out["speedup_by_op"] = {op: round(out["base"]["ops_ms"][op] / ms, 2) for op, ms in out["edge"]["ops_ms"].items()
                        if ms > 0 and op in out["base"]["ops_ms"]}
print(json.dumps(out, indent=1))
