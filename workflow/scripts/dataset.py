"""Materialise a data set under data/NAME by copying its files from `source` (checksums logged)."""
import hashlib
import shutil
import sys
from pathlib import Path

sm = snakemake  # noqa: F821
out = Path(sm.output[0])
source = Path(sm.params.source)
with open(sm.log[0], "w") as log:
    missing = [f for f in sm.params.files if not (source / f).is_file()]
    if missing:
        sys.exit(f"dataset {out.name}: {missing} not found in {source} (Fashion-MNIST: "
                 "`apt-get install dataset-fashion-mnist`, as scripts/setup.sh does)")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in sm.params.files:
        shutil.copy2(source / name, tmp / name)
        print(f"{name} md5 {hashlib.md5((tmp / name).read_bytes()).hexdigest()}", file=log)
    tmp.rename(out)
