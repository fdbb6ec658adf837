"""The comparison of "Compressing Vision Transformers for Low-Resource Visual Learning" (arXiv
2309.02617, "the MobileViT compression study") in miniature: MobileViT segmenters on Fashion-MNIST
scenes.

`measure` runs one model at one precision through ONNX Runtime (the deployed path): its
per-image confusions on the test scenes, latency and throughput at batch 1 on the given threads,
the peak memory the session and its runs add, and the file size. `table` pools the records of
every seed into the study's table and answers its findings with paired intervals over test
images and seeds (each resample draws the same (seed, image) units for both models).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .stats import CONTRADICTED, HOLDS, INCONCLUSIVE, verdict

# (row key, model, precision, label); "@subset": the full model read for the sub-task's classes.
ROWS = (
    ("teacher", "teacher", "fp32", "teacher (distillation source)"),
    ("baseline", "baseline", "fp32", "baseline MobileViT"),
    ("kd", "kd", "fp32", "+ distillation"),
    ("norm", "norm", "fp32", "+ MobileViT-compression pruning (heads 4->2, neurons by weight norm)"),
    ("nuwa", "nuwa", "fp32", "+ NuWa derivation instead (same params budget)"),
    ("nuwa-fp16", "nuwa", "fp16", "+ fp16"),
    ("nuwa-int8", "nuwa", "int8", "+ int8 (dynamic)"),
    ("nuwa-svdoff", "nuwa-svdoff", "fp32", "open question: NuWa with Taylor-picked query-key/value dims (no SVD)"),
    ("nuwa-norm", "nuwa-norm", "fp32", "open question: NuWa's adaptive schedule ranked by weight norm"),
    ("kd@subset", "kd", "fp32", "task-specific: the distilled model on the sub-task"),
    ("nuwa-subset", "nuwa-subset", "fp32", "task-specific: NuWa segmenter for the sub-task (same rate)"),
)


def measure(model_dir: str | Path, data: str, *, precision: str, onnx_out: str | Path, threads: int = 2,
            warmup: int = 10, repeats: int = 50, classes: Any = None) -> tuple[dict[str, Any], np.ndarray]:
    """(record, (N, K, K) per-image confusions) of one model at one precision."""
    from .. import io
    from ..bench import measure_latency
    from ..export import export
    from ..mobilevit import cost
    from ..mobilevit.evaluate import onnx_confusions, scenes_for
    from ..segmentation import mean_iou

    model = io.load(model_dir)
    cfg = model.config
    path = export(model, onnx_out, precision=precision)
    ds, merge, fg = scenes_for(cfg, data, "test", classes)
    confs = onnx_confusions(path, ds, cfg, classes=merge, threads=threads).numpy()
    lat = measure_latency(model, runtime="onnx", onnx_path=path, threads=threads, batch_size=1, warmup=warmup,
                          repeats=repeats)
    pooled = confs.sum(0)
    record = dict(model=str(model_dir), precision=precision, classes=fg, params=cost.count_params(cfg),
                  flops=cost.count_flops(cfg), miou=mean_iou(pooled), images=int(len(confs)),
                  latency_ms=lat["latency_ms_median"], latency_ms_p90=lat["latency_ms_p90"], fps=lat["throughput"],
                  peak_mem_mb=peak_memory(path, (1, cfg.in_chans, *cfg.img_size), threads=threads),
                  onnx_mb=Path(path).stat().st_size / 2**20, threads=lat["threads"])
    return record, confs


_PEAK = """
import sys, numpy as np, onnxruntime as ort
def kb(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
before = kb("VmRSS:")
o = ort.SessionOptions(); o.intra_op_num_threads, o.inter_op_num_threads = int(sys.argv[2]), 1
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
x = np.zeros([int(v) for v in sys.argv[3].split(",")], np.float32)
for _ in range(int(sys.argv[4])):
    s.run(None, {"images": x})
print((kb("VmHWM:") - before) / 1024)
"""


def peak_memory(path: str | Path, shape: tuple[int, ...], *, threads: int = 2, runs: int = 20) -> float | None:
    """MiB of resident memory that loading `path` into ONNX Runtime and running it adds, at its
    peak: measured in a fresh process (VmHWM - VmRSS after imports), so nothing this process
    already holds hides it. None where /proc is missing."""
    import subprocess
    import sys

    if not Path("/proc/self/status").exists():
        return None
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(threads), ",".join(map(str, shape)), str(runs)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(xs)) if xs else math.nan


def summarise(records: dict[str, list[dict]], confs: dict[str, list[np.ndarray]]) -> list[dict[str, Any]]:
    """One row per ROWS key present: sizes, mIoU (pooled over seeds, with its interval), speed, memory."""
    from ..segmentation import iou_per_class, mean_iou, miou_interval

    rows = []
    for key, _model, precision, label in ROWS:
        if key not in records:
            continue
        recs, stacked = records[key], np.concatenate(confs[key])
        lo, hi = miou_interval(stacked)
        rows.append(dict(row=key, label=label, precision=precision, seeds=len(recs), params=recs[0]["params"],
                         flops=recs[0]["flops"], miou=mean_iou(stacked.sum(0)), miou_lo=lo, miou_hi=hi,
                         # Speed: the median over seeds, so a run slowed by another process does not move the row.
                         latency_ms=float(np.median([r["latency_ms"] for r in recs])),
                         fps=float(np.median([r["fps"] for r in recs])),
                         peak_mem_mb=_mean([r["peak_mem_mb"] for r in recs]),
                         onnx_mb=_mean([r["onnx_mb"] for r in recs]), per_class=iou_per_class(stacked.sum(0))))
    return rows


# (a, b, direction, statement): the claim is mIoU(a) - mIoU(b) > 0 (direction +1) or < 0 (-1).
COMPARISONS = (
    ("kd", "baseline", 1, "distillation raises mIoU"),
    ("norm", "kd", -1, "MobileViT-compression pruning alone costs mIoU (after recovery)"),
    ("nuwa", "norm", 1, "NuWa beats MobileViT-compression pruning at the same params budget"),
    ("nuwa-fp16", "nuwa", -1, "fp16 costs mIoU"),
    ("nuwa-int8", "nuwa", -1, "int8 costs mIoU"),
    ("nuwa", "nuwa-svdoff", 1, "SVD query-key/value sizes beat Taylor-picked dims"),
    ("nuwa", "nuwa-norm", 1, "Taylor scores beat weight norm under NuWa's adaptive schedule"),
    ("nuwa-norm", "norm", 1, "the adaptive schedule beats the fixed 4 -> 2 recipe (both by weight norm)"),
    ("nuwa-subset", "kd@subset", 1, "a task-specific segmenter beats the full model on its classes"),
)


def compare(confs: dict[str, list[np.ndarray]], samples: int = 2000) -> list[dict[str, Any]]:
    from ..segmentation import mean_iou, miou_diff_interval

    out = []
    for a, b, direction, statement in COMPARISONS:
        if a not in confs or b not in confs or len(confs[a]) != len(confs[b]):
            continue
        ca, cb = np.concatenate(confs[a]), np.concatenate(confs[b])
        lo, hi = miou_diff_interval(ca, cb, samples=samples)
        diff = mean_iou(ca.sum(0)) - mean_iou(cb.sum(0))
        out.append(dict(a=a, b=b, statement=statement, diff=diff, lo=lo, hi=hi, seeds=len(confs[a]),
                        verdict=verdict(lo, hi, direction)))
    return out


def findings(rows: list[dict], comps: list[dict]) -> list[dict[str, str]]:
    """The MobileViT compression study's three findings, answered from the table."""
    by_row = {r["row"]: r for r in rows}
    by_pair = {(c["a"], c["b"]): c for c in comps}
    out = []
    kd = by_pair.get(("kd", "baseline"))
    # The MobileViT compression study's pipeline steps after distillation: pruning, then fp16. "Largest": distillation's
    # gain holds and its lower bound lies above the upper bound of every other step's change.
    steps = [by_pair.get(k) for k in (("norm", "kd"), ("nuwa-fp16", "nuwa"))]
    if kd is not None and all(steps):
        largest = kd["verdict"] == HOLDS and all(kd["lo"] > s["hi"] for s in steps)
        out.append(dict(finding="distillation gives the largest gain",
                        verdict=HOLDS if largest else CONTRADICTED if kd["verdict"] == CONTRADICTED else INCONCLUSIVE,
                        evidence=f"KD {_pts(kd)}; pruning {_pts(steps[0])}; fp16 {_pts(steps[1])}"))
    norm = by_pair.get(("norm", "kd"))
    if norm is not None:
        little = -0.02 < norm["lo"] and norm["hi"] < 0.02
        out.append(dict(finding="pruning alone changes mIoU little (within 2 points)",
                        verdict=HOLDS if little else CONTRADICTED if norm["hi"] < -0.02 or norm["lo"] > 0.02 else INCONCLUSIVE,
                        evidence=f"norm - KD {_pts(norm)}"))
    fp = by_pair.get(("nuwa-fp16", "nuwa"))
    if fp is not None and "nuwa" in by_row and "nuwa-fp16" in by_row:
        mem = by_row["nuwa-fp16"]["peak_mem_mb"] / by_row["nuwa"]["peak_mem_mb"]
        size = by_row["nuwa-fp16"]["onnx_mb"] / by_row["nuwa"]["onnx_mb"]
        # "No IoU cost": the interval within half a point of zero; "halves": at most 0.6 of the fp32 peak.
        free, costly = -0.005 < fp["lo"] and fp["hi"] < 0.005, fp["hi"] < -0.005
        out.append(dict(finding="fp16 halves memory at no IoU cost",
                        verdict=CONTRADICTED if mem > 0.6 or costly else HOLDS if free else INCONCLUSIVE,
                        evidence=f"peak memory x{mem:.2f}, file x{size:.2f}; mIoU {_pts(fp)}"))
    return out


def _pts(c: dict) -> str:
    from .stats import Interval

    return Interval(c["diff"], c["lo"], c["hi"]).pts()


def to_markdown(rows: list[dict], comps: list[dict], finds: list[dict], *, subset: list[str], seeds: list[int],
                class_names: list[str] | None = None) -> str:
    from ..data.scenes import SCENE_CLASSES

    class_names = list(class_names or SCENE_CLASSES)
    lines = [f"Seeds {', '.join(map(str, seeds))}; mIoU over background + 10 classes on the test scenes (sub-task "
             f"rows: background + {', '.join(subset)}), pooled over seeds, 95 % bootstrap interval over "
             "(seed, image); ONNX Runtime, batch 1, latency and FPS the median over seeds of each run's median.", "",
             "| model | params | MMACs | mIoU [95 % CI] | latency ms | FPS | peak mem MiB | file MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['params'] / 1e6:.3f} M | {r['flops'] / 1e6:.1f} | "
                     f"{100 * r['miou']:.1f} [{100 * r['miou_lo']:.1f}, {100 * r['miou_hi']:.1f}] | "
                     f"{r['latency_ms']:.2f} | {r['fps']:.0f} | {r['peak_mem_mb']:.1f} | {r['onnx_mb']:.2f} |")
    full = [r for r in rows if len(r["per_class"]) == len(class_names)]
    if full:  # the MobileViT compression study's open question: which classes gain or lose
        lines += ["", "Per-class IoU (%), all seeds pooled:", "",
                  "| model | " + " | ".join(class_names) + " |", "|---" * (len(class_names) + 1) + "|"]
        lines += [f"| {r['label']} | " + " | ".join("-" if v is None else f"{100 * v:.1f}" for v in r["per_class"]) + " |"
                  for r in full]
    lines += ["", "| comparison | difference (pts) [95 % CI] | verdict |", "|---|---|---|"]
    lines += [f"| {c['statement']} ({c['a']} - {c['b']}) | {_pts(c)} | {c['verdict']} |" for c in comps]
    lines += ["", "| the MobileViT compression study's finding | verdict here | evidence |", "|---|---|---|"]
    lines += [f"| {f['finding']} | {f['verdict']} | {f['evidence']} |" for f in finds]
    return "\n".join(lines) + "\n"
