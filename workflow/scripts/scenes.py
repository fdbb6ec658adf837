"""Build the Fashion-MNIST scene-parsing set: train scenes from the train split, test scenes from
the test split, one npz (`nuwa.data.scenes.write_scenes`, written atomically)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start  # noqa: E402

log = start(sm, "scenes")
from nuwa.data.scenes import read_scenes, write_scenes  # noqa: E402
from nuwa.data.spec import parse_spec  # noqa: E402

out = write_scenes(parse_spec(sm.params.fashion).root, sm.output.npz, train=int(sm.params.train), test=int(sm.params.test),
                   canvas=int(sm.params.canvas), seed=int(sm.params.seed))
for split in ("train", "test"):  # read back through the checked reader, so a bad file fails here
    ds = read_scenes(out, split)
    fg = ds.masks > 0
    log.info("%s: %d scenes of %dx%d, %.1f%% foreground pixels, classes %s", split, len(ds),
             ds.images.shape[2], ds.images.shape[3], 100 * float(fg.float().mean()), ds.class_names)
