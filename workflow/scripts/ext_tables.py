"""The extension tables (csv, md, parquet):
recovery_methods -- per alpha, test top-1 and seconds of no recovery, fine-tuning (the main run),
  closed-form refit and distillation, all from the same NuWa model with no recovery;
data_regimes -- NuWa from the device's own images vs from the GMM-selected public proxy (and the
  main run, which read the whole training split), and how many device images each step read;
edge_export -- fp32 / fp16 / int8 ONNX bytes, top-1, latency and agreement with fp32."""
import sys
from pathlib import Path

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import read_json, start  # noqa: E402

log = start(sm, "ext_tables")
from nuwa.paper.tables import write_table  # noqa: E402

ORDER = {"none": 0, "closed-form": 1, "finetune": 2, "distill": 3}
out = sm.output


def write(name, rows, columns, title):
    df = pd.DataFrame(rows, columns=columns)
    write_table(df, out[f"{name}_csv"], out[f"{name}_md"], out[f"{name}_parquet"], title=title)
    log.info("%s: %d rows", name, len(df))


# ---- recovery methods ------------------------------------------------------------------------------
rows = []
for m in map(read_json, sm.input.main):
    common = dict(subtask=m["subtask"], alpha=m["alpha"], rate_achieved=m["rate_achieved"],
                  prune_seconds=m["derive_seconds"])
    none = m["test_top1_pruned"]
    rows.append(dict(common, recovery="none", test_top1=none, recovery_seconds=0.0, epochs=0, _none=none))
    rows.append(dict(common, recovery="finetune", test_top1=m["test_top1_finetuned"],
                     recovery_seconds=m["finetune_seconds"], epochs=m["finetune_epochs"], _none=none))
nones = {r["alpha"]: r["_none"] for r in rows}
for r in map(read_json, sm.input.recovery):
    rows.append(dict(subtask=r["subtask"], alpha=r["alpha"], rate_achieved=r["rate_achieved"],
                     prune_seconds=r["derive_seconds"], recovery=r["recovery"], test_top1=r["test_top1"],
                     recovery_seconds=r["recovery_seconds"], epochs=r["epochs"], _none=nones.get(r["alpha"])))
for r in rows:
    r["gain_vs_none"] = None if r["_none"] is None else r["test_top1"] - r["_none"]
    r["total_seconds"] = r["prune_seconds"] + r["recovery_seconds"]
rows.sort(key=lambda r: (r["alpha"], ORDER[r["recovery"]]))
write("recovery_methods", rows, ["subtask", "alpha", "recovery", "test_top1", "gain_vs_none", "epochs",
                                 "recovery_seconds", "prune_seconds", "total_seconds", "rate_achieved"],
      "Recovery methods: test top-1 and seconds from the same NuWa model with no recovery")

# ---- data regimes ------------------------------------------------------------------------------------
rows = []
if sm.input.regimes:
    files = {Path(f).name: f for f in sm.input.regimes}
    regimes = [read_json(f) for name, f in files.items() if name.startswith(("own-", "proxy-"))]
    split, gmm = read_json(files["split.json"]), read_json(files["gmm.json"])
    gmm_bytes = Path(files["gmm.json"]).stat().st_size
    for r in regimes:
        px = r["proxy"]
        own = r["regime"] == "own"
        rows.append(dict(
            subtask=r["subtask"], alpha=r["alpha"], regime=r["regime"],
            server_data="device images" if own else f"public pool ({split['public_samples']}) + gmm.json",
            device_images_read=split["device_samples"] if own else split["shared_images"],
            train_samples_seen=r["train_samples_seen"], proxy_precision=px.get("precision"),
            test_top1=r["test_top1"], val_top1_before=r["val_top1_before"], rate_achieved=r["rate_achieved"],
            prune_seconds=r["derive_seconds"], recovery_seconds=r["recovery_seconds"],
            gmm_components=None if own else gmm["components"], gmm_bytes=None if own else gmm_bytes))
    for m in map(read_json, sm.input.reference):
        rows.append(dict(subtask=m["subtask"], alpha=m["alpha"], regime="all-train (main run)",
                         server_data="the whole training split of the sub-task", device_images_read=None,
                         train_samples_seen=None, proxy_precision=None, test_top1=m["test_top1_finetuned"],
                         val_top1_before=m["val_top1_pruned"], rate_achieved=m["rate_achieved"],
                         prune_seconds=m["derive_seconds"], recovery_seconds=m["finetune_seconds"],
                         gmm_components=None, gmm_bytes=None))
write("data_regimes", rows, ["subtask", "alpha", "regime", "server_data", "device_images_read", "train_samples_seen",
                             "proxy_precision", "test_top1", "val_top1_before", "rate_achieved", "prune_seconds",
                             "recovery_seconds", "gmm_components", "gmm_bytes"],
      "Data regimes: NuWa from the device's images vs from a GMM-selected public proxy")

# ---- edge export ----------------------------------------------------------------------------------------
rows = [r for f in sm.input.export for r in read_json(f)]
lat = sorted({k for r in rows for k in r if k.startswith("latency_ms_b")}, key=lambda k: int(k[len("latency_ms_b"):]))
fp32 = {(r["subtask"], r["alpha"]): r for r in rows if r["precision"] == "fp32"}
for r in rows:
    ref = fp32.get((r["subtask"], r["alpha"]))
    for k in lat:
        r[f"speedup_{k[len('latency_ms_'):]}"] = ref[k] / r[k] if ref and r.get(k) else None
write("edge_export", rows, ["subtask", "alpha", "precision", "bytes", "bytes_vs_fp32", "top1", "n", "argmax_agreement",
                            "max_abs_logit_diff", *lat, *[f"speedup_{k[len('latency_ms_'):]}" for k in lat],
                            "threads"],
      "Edge export: ONNX Runtime fp32 / fp16 / int8 per model (base = all classes)")
