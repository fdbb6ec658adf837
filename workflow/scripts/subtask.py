"""Extract one sub-task: its classes and the indices of its samples in the fit / val / test splits.

The fit/val division of the training split is nuwa's (`train_val_split` with the derive options'
split_seed and val_fraction), so these are exactly the samples `nuwa derive` fits and validates on.
"""
import sys

import numpy as np
import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start  # noqa: E402

log = start(sm, "subtask")
from nuwa.atomic import atomic_path  # noqa: E402
from nuwa.data import open_split, train_val_split  # noqa: E402

definition = sm.params.definition
indices = [int(i) for i in definition["indices"]]
train, test = open_split(sm.params.spec, "train"), open_split(sm.params.spec, "test")
names = list(train.class_names)
expected = definition.get("wnids") or definition["names"]  # folder data sets name classes by WordNet id
actual = [names[i] if i < len(names) else None for i in indices]
if [str(a).lower() for a in actual] != [e.lower() for e in expected]:
    sys.exit(f"sub-task {sm.wildcards.subtask}: classes {indices} are {actual} in {sm.params.spec}, "
             f"but the definition names them {expected}")

opts = dict(sm.params.options)
fit, val = train_val_split(train, val_fraction=opts.get("val_fraction", 0.1), seed=opts.get("split_seed", 0))
remap = np.full(len(names), -1, dtype=np.int64)
remap[indices] = np.arange(len(indices))
parts = []
for split, idx in (("fit", fit.indices), ("val", val.indices), ("test", np.arange(len(test)))):
    targets = np.asarray(test.targets if split == "test" else train.targets)[idx]
    keep = remap[targets] >= 0
    parts.append(pd.DataFrame({"split": split, "index": idx[keep].astype(np.int64),
                               "label": targets[keep].astype(np.int32),
                               "sublabel": remap[targets[keep]].astype(np.int32)}))
samples = pd.concat(parts, ignore_index=True)
samples["split"] = pd.Categorical(samples["split"], categories=["fit", "val", "test"])
classes = pd.DataFrame({"sublabel": np.arange(len(indices), dtype=np.int32), "index": indices,
                        "name": definition["names"], "kind": definition["kind"]})
if "wnids" in definition:
    classes["wnid"] = definition["wnids"]
for df, path in ((classes, sm.output.classes), (samples, sm.output.samples)):
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
log.info("%s: %d classes; samples per split %s", sm.wildcards.subtask, len(classes),
         samples.groupby("split", observed=True).size().to_dict())
