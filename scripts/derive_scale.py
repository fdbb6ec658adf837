"""Benchmark: `nuwa derive` of real-size timm ViTs (DeiT-S, DeiT-B) at 224x224, time per phase and
peak resident memory, against the bounds the project holds itself to.

    .venv/bin/python scripts/derive_scale.py [--models deit_small_patch16_224,deit_base_patch16_224]
        [--memory-only deit_base_patch16_224] [--train 4000] [--out results/scale] [--extra "..."]

The data: the first TRAIN Fashion-MNIST training images (28x28 grey, resized to 224 per batch by
the model's preprocessing) and 1000 test images, as an npz file. The request: classes 3,5,8 at
rate 0.8 (FLOPs), `--recovery none`, on the CPU, random weights (the cost of a derivation does not
depend on what the weights are). Each derivation runs in its own process, so its ru_maxrss is
its own peak. A `--memory-only` model runs with small sample budgets (MEMORY_ONLY): its peak
memory is what a full run's would be, since no budget changes a batch's size (tests/test_memory.py),
but its time is not. Writes OUT/derive_scale.json and OUT/derive_scale.md (atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BOUNDS_GIB = {"deit_small_patch16_224": 3.0, "deit_base_patch16_224": 6.0}
BOUND_SECONDS = {"deit_small_patch16_224": 600.0}
CLASSES = "3,5,8"
RATE = 0.8
MEMORY_ONLY = ["--layer-head-samples", "256", "--embed-score-samples", "64", "--score-samples", "64"]


def fashion_npz(path: Path, train: int, test: int = 1000) -> None:
    from nuwa.data import open_split

    tr, te = open_split("fashion-mnist", "train"), open_split("fashion-mnist", "test")
    np.savez(path, x_train=tr.images[:train].numpy()[:, 0], y_train=np.asarray(tr.targets)[:train],
             x_test=te.images[:test].numpy()[:, 0], y_test=np.asarray(te.targets)[:test])


def derive(model: str, data: Path, out: Path, extra: list[str], threads: int) -> dict:
    cmd = [sys.executable, "-m", "nuwa.cli", "derive", "--model", model, "--data", f"npz:{data}",
           "--classes", CLASSES, "--rate", str(RATE), "--recovery", "none", "--device", "cpu",
           "--out", str(out), *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print(f"derive_scale: {shlex.join(cmd[2:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"derive_scale: {model} failed (status {os.waitstatus_to_exitcode(status)}): {stdout[-500:]}")
    report = json.loads((out / "report.json").read_text())
    return dict(model=model, memory_only=MEMORY_ONLY[0] in extra, wall_seconds=round(wall, 1), peak_rss_gib=round(usage.ru_maxrss / 2**20, 2),
                seconds=report["seconds"], peak_rss_mb_by_phase=report.get("peak_rss_mb"),
                rate_achieved=round(report["rate_achieved"], 4), depth=report["depth"],
                embed_dim=report["embed_dim"], params=report["params"], options=report["options"],
                command=shlex.join(["nuwa", *cmd[3:]]))


def markdown(rows: list[dict], train: int, threads: int) -> str:
    phases = sorted({p for r in rows for p in r["seconds"]} - {"prune_total"},
                    key=lambda p: -max(r["seconds"].get(p, 0) for r in rows))
    out = [f"# `nuwa derive` at 224x224: time per phase and peak memory ({threads} CPU threads)", "",
           f"{train} Fashion-MNIST training images, classes {CLASSES}, rate {RATE} (FLOPs), `--recovery none`, "
           "random weights, the derive defaults (`--layer-head-samples 2048 --embed-score-samples 512 "
           "--score-samples 512`); `scripts/derive_scale.py`. A memory-only row ran with "
           f"`{' '.join(MEMORY_ONLY)}`: the same batches, so the same peak, but not the same time.", "",
           "| model | wall s | peak RSS GiB | bound | met | depth | embed | rate |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bound = [f"{BOUND_SECONDS[r['model']]:.0f} s"] if r["model"] in BOUND_SECONDS else []
        bound += [f"{BOUNDS_GIB[r['model']]:.0f} GiB"] if r["model"] in BOUNDS_GIB else []
        met = (r["wall_seconds"] <= BOUND_SECONDS.get(r["model"], float("inf"))
               and r["peak_rss_gib"] <= BOUNDS_GIB.get(r["model"], float("inf")))
        wall = f"({r['wall_seconds']:.0f}, memory only)" if r.get("memory_only") else f"{r['wall_seconds']:.0f}"
        out.append(f"| {r['model']} | {wall} | {r['peak_rss_gib']:.2f} | {', '.join(bound) or '-'} "
                   f"| {'yes' if met else '**no**'} | {r['depth']} | {r['embed_dim']} | {r['rate_achieved']:.3f} |")
    out += ["", "Seconds per phase (peak RSS in MiB when the phase ended):", "",
            "| phase | " + " | ".join(r["model"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for p in phases:
        cells = []
        for r in rows:
            s, m = r["seconds"].get(p), (r["peak_rss_mb_by_phase"] or {}).get(p)
            cells.append("-" if s is None else f"{s:.1f}" + (f" ({m:.0f})" if m is not None else ""))
        out.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(BOUNDS_GIB))
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-only", default="", help="models run with small sample budgets (comma-separated)")
    ap.add_argument("--extra", default="", help="more `nuwa derive` arguments for every model")
    ap.add_argument("--out", default="results/scale")
    args = ap.parse_args()
    from nuwa.atomic import atomic_file

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "fmnist.npz"
        fashion_npz(data, args.train)
        for model in args.models.split(","):
            extra = shlex.split(args.extra) + (MEMORY_ONLY if model in args.memory_only.split(",") else [])
            rows.append(derive(model, data, Path(tmp) / model, extra, args.threads))
            print(f"derive_scale: {model}: {rows[-1]['wall_seconds']:.0f} s, {rows[-1]['peak_rss_gib']:.2f} GiB",
                  file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "derive_scale.json") as f:
        json.dump(dict(train=args.train, threads=args.threads, rows=rows), f, indent=1)
    with atomic_file(out / "derive_scale.md") as f:
        f.write(markdown(rows, args.train, args.threads))
    print((out / "derive_scale.md").read_text())


if __name__ == "__main__":
    main()
