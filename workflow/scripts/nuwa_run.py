"""Run one `nuwa` command for a rule (the CLI contract of DESIGN.md section 7).

snakemake.params.args: the command line after `nuwa`; snakemake.params.options (optional): derive
options, handed over as a YAML file (`--options`). stderr (progress bars) goes to the job's log;
the JSON object on the last line of stdout goes to snakemake.output.json when the rule has one.
torch gets the job's threads (OMP_NUM_THREADS).
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, sm.scriptdir)
from _common import write_json  # noqa: E402

args = [str(a) for a in sm.params.args]
threads = str(max(1, int(sm.threads)))
env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
Path(sm.log[0]).parent.mkdir(parents=True, exist_ok=True)
with open(sm.log[0], "w") as log, tempfile.TemporaryDirectory() as tmp:
    options = sm.params.get("options")
    if options is not None:
        path = Path(tmp) / "options.yaml"
        path.write_text(yaml.safe_dump(dict(options), sort_keys=True))
        args += ["--options", str(path)]
        print(f"# options: {json.dumps(dict(options), sort_keys=True)}", file=log)
    print(f"$ OMP_NUM_THREADS={threads} nuwa {shlex.join(args)}", file=log, flush=True)
    proc = subprocess.run([sys.executable, "-m", "nuwa.cli", *args], stdout=subprocess.PIPE, stderr=log, text=True,
                          env=env)
    print(proc.stdout, file=log, end="")
if proc.returncode != 0:
    sys.exit(f"nuwa {args[0]} failed with exit status {proc.returncode}; see {sm.log[0]}")
if "json" in sm.output.keys():
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else None
    if not isinstance(result, dict):
        sys.exit(f"nuwa {args[0]} printed no JSON object on its last line; see {sm.log[0]}")
    write_json(sm.output.json, result)
