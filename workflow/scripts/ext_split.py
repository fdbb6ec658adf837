"""The data regimes' two disjoint data sets, from the data set's training split: the device's
images (`device_samples` random training images of the sub-task's classes) and the public pool
(`public_samples` random other training images, every class). Both carry the real test split so
they are complete npz data sets; results are always measured on the original data set's test split.
split.json records sizes, class counts and that the two share no image."""
import hashlib
import sys

import numpy as np

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start, write_json  # noqa: E402

log = start(sm, "ext_split")
from nuwa.atomic import atomic_path  # noqa: E402
from nuwa.data import open_split  # noqa: E402
from nuwa.errors import NuwaError  # noqa: E402

p, w = sm.params, sm.wildcards
train, test = open_split(p.spec, "train"), open_split(p.spec, "test")
classes = [int(c) for c in p.classes]
n_device, n_public = int(p.proxy["device_samples"]), int(p.proxy["public_samples"])
rng = np.random.default_rng(int(w.seed))
order = rng.permutation(len(train))
in_class = np.isin(train.targets[order], classes)
device = np.sort(order[in_class][:n_device])
rest = order[~np.isin(order, device)]
# A fresh draw: the head of `order` is short of the device's classes, which the device took.
public = np.sort(rng.choice(rest, size=min(n_public, len(rest)), replace=False))
if len(device) < n_device or len(public) < n_public:
    raise NuwaError(f"extensions.proxy: {n_device} device + {n_public} public images asked, the training split has "
                    f"{int(in_class.sum())} of the sub-task's classes and {len(train)} in all")


def save(path, idx):
    def hwc(x):  # (N,C,H,W) -> the npz layout, (N,H,W) for one channel
        x = x.numpy()
        return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: numpy would append .npz to the temporary name
            np.savez(f, x_train=hwc(train.images[idx]), y_train=train.targets[idx], x_test=hwc(test.images),
                     y_test=test.targets, class_names=np.array(train.class_names))


save(sm.output.device, device)
save(sm.output.public, public)
digest = lambda idx: hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()  # noqa: E731
counts = lambda idx: {train.class_names[c]: int((train.targets[idx] == c).sum()) for c in range(len(train.class_names))}  # noqa: E731
write_json(sm.output.json, dict(
    base=w.base, subtask=w.subtask, seed=int(w.seed), classes=classes,
    class_names=[train.class_names[c] for c in classes], device_samples=len(device), public_samples=len(public),
    shared_images=int(np.intersect1d(device, public).size), device_index_sha256=digest(device),
    public_index_sha256=digest(public), device_per_class=counts(device), public_per_class=counts(public),
    public_share_of_device_classes=float(np.isin(train.targets[public], classes).mean())))
log.info("device %d images (%s), public pool %d images, %d shared", len(device), counts(device), len(public),
         np.intersect1d(device, public).size)
