"""Run `nuwa` commands for a rule, in this one Python process (the CLI contract: docs/architecture.md).

snakemake.params.args: the command line after `nuwa`; or snakemake.params.runs: several command
lines (a sweep: one derivation per alpha), run one after the other by `_common.run_nuwa`, so a
job pays for starting Python and importing torch and timm (~5 s on 2 cores) once instead of once
per alpha. snakemake.params.options (optional): derive options, handed over as a YAML file
(`--options`). snakemake.params.reuse_identical (optional): a run whose `--model` directory holds
the same bytes as an earlier run's of this job gets a copy of that run's `--out` (see run_nuwa).
Progress bars and messages go to the job's log; the JSON object a command prints last goes to
snakemake.output.json when the rule has one. torch gets the job's threads, the commands the job's
device (`_common.job_device`).
"""
import json
import os
import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, sm.scriptdir)
from _common import NuwaFailed, job_device, run_nuwa, write_json  # noqa: E402

threads = str(max(1, int(sm.threads)))
os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)  # before torch is imported
runs = sm.params.runs if "runs" in sm.params.keys() else [sm.params.args]
Path(sm.log[0]).parent.mkdir(parents=True, exist_ok=True)
log = open(sm.log[0], "w", buffering=1)
# Everything this process writes, Python or C++ (torch warnings), goes to the log.
for fd in (1, 2):
    os.dup2(log.fileno(), fd)
sys.stdout = sys.stderr = log

import torch  # noqa: E402

torch.set_num_threads(int(threads))
from nuwa.device import Runtime, set_runtime  # noqa: E402
from nuwa.errors import NuwaError  # noqa: E402

try:
    print(f"# device: {set_runtime(Runtime(device=job_device(sm)))}")
    outputs = run_nuwa(runs, sm.log[0], options=sm.params.get("options"),
                       reuse_identical=bool(sm.params.get("reuse_identical")))
except (NuwaFailed, NuwaError) as e:  # NuwaError: the job's device is missing
    sys.exit(str(e))
if "json" in sm.output.keys():
    last = next((o for o in reversed(outputs) if o is not None), "")
    lines = last.strip().splitlines()
    result = json.loads(lines[-1]) if lines else None
    if not isinstance(result, dict):
        sys.exit(f"nuwa {runs[-1][0]} printed no JSON object on its last line; see {sm.log[0]}")
    write_json(sm.output.json, result)
