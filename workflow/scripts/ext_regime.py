"""One data regime: NuWa at alpha with fine-tuning, from the device's own images (`own`: derive
reads device.npz) or without them (`proxy`: derive reads only the public pool and the device's
gmm.json, and keeps the public samples the mixture scores highest). Both models are measured on
the original data set's test split."""
import sys
from pathlib import Path

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, read_json, run_nuwa, start, write_json  # noqa: E402

log = start(sm, "ext_regime")
from nuwa.evaluate import evaluate_dir  # noqa: E402

p, w = sm.params, sm.wildcards
out, seed, ft, ev, px = model_dir(sm.output.model), int(w.seed), dict(p.finetune), dict(p.eval), dict(p.proxy)
options = dict(p.options)
log.info("inputs: %s", ", ".join(map(str, sm.input)))
args = ["derive", "--model", p.base_dir, "--data", f"npz:{sm.input.train}", "--rate", w.alpha, "--metric", p.metric,
        "--method", "nuwa", "--recovery", "finetune", "--finetune-epochs", ft["epochs"], "--seed", seed, "--out", out]
if w.regime == "own":
    args += ["--classes", ",".join(map(str, p.classes))]
else:  # the server side: the device's images are not an input of this job
    args += ["--proxy-gmm", sm.input.gmm]
    options["proxy_samples"] = int(px.get("proxy_samples", px["device_samples"]))
run_nuwa([args], sm.log[0], options=options)
d = read_json(Path(out) / "report.json")
ev_kw = dict(limit=ev.get("limit"), batch_size=ev.get("batch_size", 256))
after = evaluate_dir(out, p.spec, **ev_kw)
proxy = d.get("proxy") or {}
history = d.get("finetune_history") or {}
write_json(sm.output.json, dict(
    base=w.base, subtask=w.subtask, alpha=float(w.alpha), seed=seed, regime=w.regime, data=d["data"],
    data_regime=d["data_regime"], test_top1=after["top1"], test_n=after["n"],
    val_top1_before=d["val_top1_before_recovery"], val_top1=d["val_top1"], val_n=d["val_n"],
    rate_achieved=d["rate_achieved"], params=d["params"], flops=d["flops"], depth=d["depth"],
    embed_dim=d["embed_dim"], finetune_epochs=d["finetune_epochs"], derive_seconds=d["derive_seconds"],
    recovery_seconds=d["seconds"].get("recovery"), data_seconds=d["seconds"].get("data"),
    train_samples_seen=history.get("samples_seen"), proxy={k: v for k, v in proxy.items() if k != "gmm"}))
log.info("%s: test top-1 %.4f (rate %.3f)%s", w.regime, after["top1"], d["rate_achieved"],
         f", proxy precision {proxy['precision']:.3f}" if proxy else "")
