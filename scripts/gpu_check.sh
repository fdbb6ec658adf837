#!/usr/bin/env bash
# GPU check, for someone with an NVIDIA GPU (minutes; not part of CI; docs/containers.md):
#   1. the workflow's `test` profile end to end on CUDA, in a temporary copy of the repository;
#   2. a DeiT-S derivation (224x224, rate 0.5, one epoch of fine-tuning) from a base pretrained
#      briefly on CUDA on a Fashion-MNIST sample, once with --device cuda and once with --device cpu;
#   3. the two derivations compared: the same architecture (nuwa info), test top-1 within TOP1_TOL
#      points, and their per-phase seconds.
# Writes results/gpu/ (summary.json, phases.md, logs/) and ends with one line: PASS, or FAIL and why.
# Without a CUDA device: one line on stderr, exit 2, nothing written.
#   bash scripts/gpu_check.sh          (KEEP_WORK=1 keeps the temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- settings ----------------------------------------------------------------------------------
DEVICE_OVERRIDE="device=cuda"       # the workflow's --config entry that puts its jobs on the GPU
TOP1_TOL=1.0                        # test top-1 points the CUDA and CPU derivations may differ by
MODEL=deit_small_patch16_224        # DeiT-S, at its real input size
IMG_SIZE=224
RATE=0.5                            # FLOPs pruning rate
CLASSES=5,7,9                       # Sandal, Sneaker, Ankle boot (the footwear sub-task H2)
N_TRAIN=6000                        # Fashion-MNIST training images in the npz (a seeded sample)
N_TEST=10000                        # test images (all: 3000 of the sub-task's classes)
PRETRAIN_EPOCHS=3                   # the base: DeiT-S from scratch on the sample, on CUDA
PY=.venv/bin/python
NUWA=.venv/bin/nuwa
SNAKEMAKE=.venv/bin/snakemake
OUT=results/gpu

# ---- a CUDA device, before anything is written --------------------------------------------------
if [ ! -x "$PY" ]; then
  echo "gpu_check: no $PY here (bash scripts/setup.sh makes it)" >&2
  exit 2
fi
# One line: "cuda<TAB>device name<TAB>torch version", or "none<TAB>torch version<TAB>its CUDA build".
probe=$("$PY" -c 'import torch
if torch.cuda.is_available() and torch.cuda.device_count() > 0:
    print("cuda", torch.cuda.get_device_name(0), torch.__version__, sep="\t")
else:
    print("none", torch.__version__, torch.version.cuda or "none", sep="\t")' 2>/dev/null) || probe="none"
IFS=$'\t' read -r kind field2 field3 <<< "$probe"
if [ "$kind" != cuda ]; then
  echo "gpu_check: no CUDA device visible to torch ${field2:-(it does not import)} (CUDA build: ${field3:-?}); run it on a machine with an NVIDIA GPU" >&2
  exit 2
fi
GPU_NAME=$field2
TORCH_VERSION=$field3
export GPU_NAME TORCH_VERSION TOP1_TOL MODEL RATE CLASSES N_TRAIN N_TEST DEVICE_OVERRIDE

rm -rf "$OUT"
mkdir -p "$OUT/logs"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nuwa-gpu-check.XXXXXX")
if [ "${KEEP_WORK:-0}" = 1 ]; then
  echo "gpu_check: keeping $WORK" >&2
else
  trap 'rm -rf "$WORK"' EXIT
fi

say() { echo "gpu_check: $*" >&2; }

# summary.json and phases.md from what $OUT holds; prints the summary line; exits 0 (PASS) or 1.
# $1: PASS when every step ran (the comparison decides), else FAIL; $2: why it failed.
report() {
  "$PY" - "$OUT" "$1" "${2:-}" <<'EOF'
import json
import os
import sys
from pathlib import Path

out, status, reason = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
env = os.environ
reasons = [reason] if reason else []


def load(name):
    try:
        return json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def clock(s):
    return f"{s // 60}m{s % 60:02d}s" if s is not None and s >= 60 else f"{s}s"


times = {}
if (out / "logs/times.tsv").is_file():
    for line in (out / "logs/times.tsv").read_text().splitlines():
        step, seconds = line.split("\t")
        times[step] = int(seconds)
devices = ("cuda", "cpu")
derive = {d: load(f"derive-{d}") for d in devices}
info = {d: load(f"info-{d}") for d in devices}
evals = {d: load(f"eval-{d}") for d in devices}
reports = {d: load(f"report-{d}") for d in devices}
base = load("pretrain")

sizes_equal, differences, diff = None, [], None
if all(info.values()):
    differences = [k for k in ("depth", "embed_dim", "layers", "params", "flops") if info["cuda"][k] != info["cpu"][k]]
    sizes_equal = not differences
    if differences:
        reasons.append(f"architectures differ in {', '.join(differences)}")
if all(evals.values()):
    diff = round(100 * abs(evals["cuda"]["top1"] - evals["cpu"]["top1"]), 2)
    if diff > float(env["TOP1_TOL"]):
        reasons.append(f"test top-1 differs by {diff} points (cuda {evals['cuda']['top1']:.4f}, "
                       f"cpu {evals['cpu']['top1']:.4f}; at most {env['TOP1_TOL']})")
if status == "PASS" and reasons:
    status = "FAIL"

# Seconds per derivation phase (the derive report's `seconds`), and each command's wall clock.
seconds = {d: (reports[d] or {}).get("seconds") or {} for d in devices}
table = [(phase, seconds["cuda"].get(phase), seconds["cpu"].get(phase))
         for phase in dict.fromkeys([*seconds["cuda"], *seconds["cpu"]])]
table.append(("`nuwa derive`, wall clock", times.get("derive-cuda"), times.get("derive-cpu")))
rows = ["| phase | cuda (s) | cpu (s) | cpu / cuda |", "|---|---:|---:|---:|"]
for phase, cu, cp in table:
    ratio = f"{cp / cu:.1f}x" if cu and cp else "-"
    rows.append(f"| {phase} | {'-' if cu is None else cu} | {'-' if cp is None else cp} | {ratio} |")
(out / "phases.md").write_text(f"# DeiT-S derivation on {env['GPU_NAME']} and on the CPU\n\n" + "\n".join(rows) + "\n")

summary = dict(
    status=status, reasons=reasons, device=env["GPU_NAME"], torch=env["TORCH_VERSION"],
    test_profile=dict(seconds=times.get("test-profile"), config_override=env["DEVICE_OVERRIDE"],
                      log="logs/test-profile.log", metrics=load("test-profile/metrics")),
    deit_s=dict(
        model=env["MODEL"], rate=float(env["RATE"]), classes=env["CLASSES"],
        data=dict(source="Fashion-MNIST", train=int(env["N_TRAIN"]), test=int(env["N_TEST"])),
        base=dict(seconds=times.get("pretrain"), test_top1=(base or {}).get("test_top1")),
        sizes_equal=sizes_equal, size_differences=differences, top1_diff_points=diff,
        top1_tolerance_points=float(env["TOP1_TOL"]),
        **{d: dict(seconds=times.get(f"derive-{d}"), val_top1=(derive[d] or {}).get("val_top1"),
                   test_top1=(evals[d] or {}).get("top1"), phases=(reports[d] or {}).get("seconds"),
                   architecture={k: (info[d] or {}).get(k) for k in ("depth", "embed_dim", "params", "flops", "layers")})
           for d in devices}),
)
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
if status == "PASS":
    print(f"gpu_check: PASS device={env['GPU_NAME']} test-profile {clock(times['test-profile'])} deit-s "
          f"cuda {clock(times['derive-cuda'])} vs cpu {clock(times['derive-cpu'])}, sizes equal, top-1 diff {diff}")
else:
    print(f"gpu_check: FAIL device={env['GPU_NAME']}: {'; '.join(reasons) or 'see results/gpu/logs'}")
sys.exit(0 if status == "PASS" else 1)
EOF
}

fail() { report FAIL "$1" || true; exit 1; }

# run_step NAME CMD...: runs CMD in a subshell, all output to logs/NAME.log, its wall-clock seconds
# to logs/times.tsv and the JSON object it printed last (a `nuwa` command's) to NAME.json.
run_step() {
  local name=$1 t0 rc=0
  shift
  t0=$(date +%s)
  ( "$@" ) > "$WORK/$name.stdout" 2> "$OUT/logs/$name.log" || rc=$?
  cat "$WORK/$name.stdout" >> "$OUT/logs/$name.log"
  printf '%s\t%s\n' "$name" "$(( $(date +%s) - t0 ))" >> "$OUT/logs/times.tsv"
  if [ "$rc" -ne 0 ]; then
    fail "$name exited with status $rc (see $OUT/logs/$name.log)"
  fi
  if tail -n 1 "$WORK/$name.stdout" | grep -q '^{'; then
    tail -n 1 "$WORK/$name.stdout" > "$OUT/$name.json"
  fi
}
in_dir() { cd "$1" && shift && "$@"; }

# ---- [1/4] the test profile on CUDA, in a copy (this checkout's models/ and results/ untouched) ----
say "[1/4] test profile on $GPU_NAME ($OUT/logs/test-profile.log)"
REPO="$WORK/repo"
mkdir -p "$REPO"
tar -C . --exclude=./.git --exclude=./.venv --exclude=./models --exclude=./logs --exclude=./benchmarks \
  --exclude=./.snakemake --exclude=./.dvc/cache --exclude=./results/test --exclude=./results/gpu \
  --exclude=./work --exclude=__pycache__ -cf - . | tar -C "$REPO" -xf -
ln -s "$PWD/.venv" "$REPO/.venv"
run_step test-profile in_dir "$REPO" "$SNAKEMAKE" --profile workflow/profiles/default \
  --config profile=test "$DEVICE_OVERRIDE"
mkdir -p "$OUT/test-profile"
for f in metrics.json tables/table3.md; do
  cp "$REPO/results/test/$f" "$OUT/test-profile/" || fail "the test profile wrote no results/test/$f"
done

# ---- [2/4], [3/4] DeiT-S on a Fashion-MNIST sample: a base on CUDA, then a derivation per device -
say "[2/4] DeiT-S base: $PRETRAIN_EPOCHS epochs on $N_TRAIN Fashion-MNIST images at ${IMG_SIZE}x$IMG_SIZE, on CUDA"
FMNIST=/usr/share/datasets/fashion-mnist
[ -f "$FMNIST/train-images-idx3-ubyte.gz" ] || FMNIST=data/fashion-mnist
NPZ="$WORK/fashion-mnist-sample.npz"
run_step make-npz "$PY" - "$FMNIST" "$NPZ" "$N_TRAIN" "$N_TEST" <<'EOF'
import json
import sys
from pathlib import Path

import numpy as np

from nuwa.data import FASHION_MNIST_CLASSES, read_idx

root, out, n_train, n_test = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
arrays = {}
for split, stem, n in (("train", "train", n_train), ("test", "t10k", n_test)):
    x = read_idx(root / f"{stem}-images-idx3-ubyte.gz")
    y = read_idx(root / f"{stem}-labels-idx1-ubyte.gz").astype(np.int64)
    keep = np.sort(rng.choice(len(y), size=min(n, len(y)), replace=False))
    arrays[f"x_{split}"], arrays[f"y_{split}"] = x[keep], y[keep]
np.savez(out, class_names=np.array(FASHION_MNIST_CLASSES), **arrays)
print(json.dumps(dict(npz=out, train=len(arrays["y_train"]), test=len(arrays["y_test"]))))
EOF
run_step pretrain "$NUWA" pretrain --model "$MODEL" --data "npz:$NPZ" --img-size "$IMG_SIZE" \
  --epochs "$PRETRAIN_EPOCHS" --seed 0 --device cuda --out "$WORK/base"

# Fewer scoring samples than the paper's defaults (minutes on the CPU, not an hour), and no cache
# in the base directory, so that each device computes every phase itself.
cat > "$WORK/options.yaml" <<'EOF'
score_samples: 256
embed_score_samples: 1024
layer_head_samples: 3000
cache: false
EOF
for dev in cuda cpu; do
  say "[3/4] DeiT-S derivation, rate $RATE, 1 fine-tuning epoch, --device $dev"
  run_step "derive-$dev" "$NUWA" derive --model "$WORK/base" --data "npz:$NPZ" --classes "$CLASSES" \
    --rate "$RATE" --recovery finetune --finetune-epochs 1 --options "$WORK/options.yaml" --seed 0 \
    --device "$dev" --out "$WORK/derived-$dev"
  cp "$WORK/derived-$dev/report.json" "$OUT/report-$dev.json"
done

# ---- [4/4] compare: architecture, test top-1 (both evaluated alike: CUDA, float32), seconds -------
say "[4/4] comparing the two derivations"
for dev in cuda cpu; do
  run_step "info-$dev" "$NUWA" info "$WORK/derived-$dev" --json
  run_step "eval-$dev" "$NUWA" eval --model "$WORK/derived-$dev" --data "npz:$NPZ" --device cuda --no-amp
done
report PASS
