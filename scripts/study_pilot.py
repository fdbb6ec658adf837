"""The two choices the pretrained study makes before its main run, measured on validation only:

1. query-key/value SVD: `product` (weights only, biases that softmax ignores left out) against
   `data` (weighted by the statistics of the tokens each layer sees), NuWa at one rate, no recovery;
2. the fine-tuning budget: validation top-1 of the chosen derivation against fine-tuning samples.

Writes OUT/svd_choice.json and OUT/recovery_curve.csv (+ .md). Every number comes from the
derivation's validation split of the training set, never from the test set.

    .venv/bin/python scripts/study_pilot.py --base models/dinov2/bases/dinov2s-fmnist \
        --data fashion-mnist:data/fashion-mnist --subtask H1 --rate 0.6 --out results/dinov2/pilot
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--subtask", default="H1")
    p.add_argument("--rate", type=float, default=0.6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs of the curve")
    p.add_argument("--limit", type=int, default=4000, help="samples per fine-tuning epoch")
    p.add_argument("--options", help="YAML of derive options (the profile's derive: section)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    import dataclasses

    import pandas as pd
    import yaml

    import nuwa
    from nuwa.atomic import atomic_file, atomic_path
    from nuwa.derivation import finetune_dir
    from nuwa.options import DeriveOptions

    base_opts = DeriveOptions.from_dict(yaml.safe_load(Path(a.options).read_text())) if a.options else DeriveOptions()
    out = Path(a.out)
    rows, models = [], {}
    with tempfile.TemporaryDirectory(prefix="pilot-") as tmp:
        for svd in ("product", "data"):
            opts = dataclasses.replace(base_opts, svd=svd)
            start = time.perf_counter()
            _, report = nuwa.derive(a.base, a.data, subtask=a.subtask, rate=a.rate, recovery="none", seed=a.seed,
                                    options=opts, out=Path(tmp) / svd)
            rows.append(dict(svd=svd, val_top1=report["val_top1"], val_n=report["val_n"],
                             rate_achieved=report["rate_achieved"], seconds=time.perf_counter() - start,
                             heads=[l["heads"] for l in report["layers"]], qk_per_head=[l["qk_per_head"] for l in report["layers"]],
                             v_per_head=[l["v_per_head"] for l in report["layers"]], depth=report["depth"],
                             embed_dim=report["embed_dim"]))
            models[svd] = Path(tmp) / svd
            print(f"svd {svd}: val top-1 {report['val_top1']:.4f} at rate {report['rate_achieved']:.3f}", file=sys.stderr)
        chosen = max(rows, key=lambda r: r["val_top1"])["svd"]
        _, ft = finetune_dir(models[chosen], a.data, epochs=a.epochs, limit=a.limit, seed=a.seed, recovery="finetune",
                             options=dataclasses.replace(base_opts, svd=chosen), out=Path(tmp) / "finetuned")
    history = ft["finetune_history"]
    curve = [dict(samples=0, val_top1=history["val_at_start"]["top1"], seconds=0.0)]
    seconds = 0.0
    for e in history["epochs"]:
        seconds += e["seconds"]
        curve.append(dict(samples=e["epoch"] * a.limit, val_top1=e["val_top1"], seconds=seconds))
    setup = dict(base=a.base, data=a.data, subtask=a.subtask, rate=a.rate, seed=a.seed, method="nuwa")
    with atomic_file(out / "svd_choice.json") as f:
        json.dump(dict(setup, recovery="none", rows=rows, chosen=chosen,
                       rule="the higher validation top-1 before recovery"), f, indent=1)
        f.write("\n")
    table = pd.DataFrame(curve).assign(svd=chosen, epochs=a.epochs, limit=a.limit, **{k: str(v) for k, v in setup.items()})
    with atomic_path(out / "recovery_curve.csv") as tmp_csv:
        table.to_csv(tmp_csv, index=False)
    with atomic_file(out / "recovery_curve.md") as f:
        f.write(pd.DataFrame(curve).to_markdown(index=False, floatfmt=".4f") + "\n")
    print(json.dumps(dict(chosen=chosen, curve=curve)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
