"""Run `nuwa` commands for a rule, in this one Python process (the CLI contract of DESIGN.md section 7).

snakemake.params.args: the command line after `nuwa`; or snakemake.params.runs: several command
lines (a sweep: one derivation per alpha), run one after the other, so a job pays for starting
Python and importing torch and timm (~5 s on 2 cores) once instead of once per alpha.
snakemake.params.options (optional): derive options, handed over as a YAML file (`--options`).
snakemake.params.reuse_identical (optional): a run whose `--model` directory holds the same bytes
as an earlier run's of this job gets a copy of that run's `--out` instead of being run again: the
commands are deterministic, so it would write the same bytes (tested); its report names the run
it was copied from. Progress bars and messages go to the job's log; the JSON object a command
prints last goes to snakemake.output.json when the rule has one. torch gets the job's threads.
"""
import contextlib
import io
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, sm.scriptdir)
from _common import write_json  # noqa: E402

threads = str(max(1, int(sm.threads)))
os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)  # before torch is imported
runs = [[str(a) for a in run] for run in (sm.params.runs if "runs" in sm.params.keys() else [sm.params.args])]
Path(sm.log[0]).parent.mkdir(parents=True, exist_ok=True)
log = open(sm.log[0], "w", buffering=1)
# Everything this process writes, Python or C++ (torch warnings), goes to the log.
for fd in (1, 2):
    os.dup2(log.fileno(), fd)
sys.stdout = sys.stderr = log

import torch  # noqa: E402

torch.set_num_threads(int(threads))
from nuwa.atomic import atomic_dir  # noqa: E402
from nuwa.cli import main  # noqa: E402
from nuwa.io import sha256_file  # noqa: E402


def option(args, name):
    return args[args.index(name) + 1] if name in args else None


def model_digest(directory):
    """The bytes of a model directory (config and weights), or None if it is not one."""
    files = [Path(directory) / f for f in ("config.json", "model.safetensors")]
    return tuple(sha256_file(f) for f in files) if all(f.is_file() for f in files) else None


def copy_run(source, out):
    """`out` := `source`'s files, with a report saying where they came from (atomic)."""
    with atomic_dir(out) as tmp:
        for f in Path(source).iterdir():
            shutil.copyfile(f, Path(tmp) / f.name)
        report = Path(tmp) / "report.json"
        if report.is_file():
            doc = json.loads(report.read_text())
            doc["reused_from"] = str(source)
            report.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


last = ""
done = {}  # model digest -> the out directory an earlier run of this job wrote from it
with tempfile.TemporaryDirectory() as tmp:
    options = sm.params.get("options")
    extra = []
    if options is not None:
        path = Path(tmp) / "options.yaml"
        path.write_text(yaml.safe_dump(dict(options), sort_keys=True))
        extra = ["--options", str(path)]
        print(f"# options: {json.dumps(dict(options), sort_keys=True)}")
    for i, args in enumerate(runs, 1):
        args = args + extra
        tag = f"[{i}/{len(runs)}] " if len(runs) > 1 else ""
        digest = model_digest(option(args, "--model")) if sm.params.get("reuse_identical") else None
        if digest is not None and digest in done:
            print(f"{tag}# --model {option(args, '--model')} holds the same bytes as an earlier run's: "
                  f"copying {done[digest]} to {option(args, '--out')} instead of `nuwa {args[0]}`", flush=True)
            copy_run(done[digest], option(args, "--out"))
            continue
        print(f"{tag}$ OMP_NUM_THREADS={threads} nuwa {shlex.join(args)}", flush=True)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = main(args)
        print(out.getvalue(), end="", flush=True)
        if status != 0:
            sys.exit(f"nuwa {args[0]} failed with exit status {status}; see {sm.log[0]}")
        if digest is not None:
            done[digest] = option(args, "--out")
        last = out.getvalue()
if "json" in sm.output.keys():
    lines = last.strip().splitlines()
    result = json.loads(lines[-1]) if lines else None
    if not isinstance(result, dict):
        sys.exit(f"nuwa {runs[-1][0]} printed no JSON object on its last line; see {sm.log[0]}")
    write_json(sm.output.json, result)
