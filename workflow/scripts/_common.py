"""Shared by the rule scripts: log set-up, torch threads, small writers, and `run_nuwa`, the one
way a job derives, fine-tunes or prepares a model (`nuwa` command lines, in-process).

A script imports it with `sys.path.insert(0, snakemake.scriptdir)` (Snakemake runs a copy of
the script from .snakemake/scripts/, so its own folder is not on the path).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

if importlib.util.find_spec("nuwa") is None:  # not installed (conda deployment): the repository's copy
    sys.path.insert(0, os.getcwd())


def job_device(snakemake: Any) -> str:
    """Where this job computes: `--config device=D` for every job; else `cuda` when its rule asks
    for a GPU (params.yaml: profiles.P.resources.RULE.gpu > 0); else the profile's `device`."""
    config = snakemake.config
    if config.get("device"):
        return config["device"]
    if int(snakemake.resources.get("gpu", 0) or 0) > 0:
        return "cuda"
    return config["profiles"][config["profile"]].get("device", "cpu")


def start(snakemake: Any, name: str) -> logging.Logger:
    """Send this job's stdout, stderr (progress bars, warnings) and logging to its log file,
    give torch the job's threads and nuwa the job's device (`job_device`)."""
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "w", buffering=1)
    sys.stdout = sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    import torch

    torch.set_num_threads(max(1, int(snakemake.threads)))
    from nuwa.device import Runtime, set_runtime

    device = set_runtime(Runtime(device=job_device(snakemake)))
    log = logging.getLogger(name)
    log.info("threads=%s device=%s params=%s", snakemake.threads, device, dict(snakemake.params.items()))
    return log


def write_json(path: str | Path, data: Any) -> None:
    from nuwa.atomic import atomic_file

    with atomic_file(path) as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def model_dir(files: list[str]) -> str:
    """The directory of a model given as its files (config.json, model.safetensors, ...)."""
    dirs = {str(Path(f).parent) for f in files}
    if len(dirs) != 1:
        raise ValueError(f"model files {files} are not in one directory")
    return dirs.pop()


# ---- `nuwa` commands, run in this process ---------------------------------------------------------
# The commands that take --device and compute with the model (bench is timed where its rule says).
DEVICE_COMMANDS = ("pretrain", "prepare", "derive", "finetune", "eval", "fit-gmm")


class NuwaFailed(RuntimeError):
    """A `nuwa` command exited with a non-zero status; `error` is the line it printed saying why
    (status 2: the user's error, such as a budget no model meets)."""

    def __init__(self, command: list[str], status: int, error: str, log: str | Path):
        super().__init__(f"nuwa {command[0]} failed with exit status {status}; see {log}")
        self.command, self.status, self.error = command, status, error


def run_nuwa(commands: list[list[Any]], log: str | Path, *, options: dict | None = None,
             reuse_identical: bool = False) -> list[str | None]:
    """Run `nuwa` command lines (the arguments after `nuwa`) one after the other, in this process.

    Every job that derives, fine-tunes or prepares a model does it through the command line, so
    a model is made the same way whichever rule asks for it; running the commands in-process
    means a job pays for starting Python and importing torch and timm once, not once per command.
    options: derive options handed to every command as a YAML file (`--options`).
    reuse_identical: a command whose `--model` directory holds the same bytes as an earlier
    command's gets a copy of that command's `--out` instead of running again: the commands are
    deterministic, so it would write the same bytes (tests/test_reliability.py); the copy's
    report names the run it was copied from.
    What the commands print goes to this process's stdout and stderr (the job's log; `log` is its
    path, for messages). Returns each command's stdout (None for a copied one); a command that
    fails raises NuwaFailed.
    """
    import contextlib
    import io
    import shlex
    import tempfile

    import yaml

    from nuwa.cli import main
    from nuwa.device import current

    commands = [[str(a) for a in c] for c in commands]
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    outputs: list[str | None] = []
    done: dict[tuple, str] = {}  # model digest -> the --out an earlier command wrote from it
    with tempfile.TemporaryDirectory() as tmp:
        extra = []
        if options is not None:
            path = Path(tmp) / "options.yaml"
            path.write_text(yaml.safe_dump(dict(options), sort_keys=True))
            extra = ["--options", str(path)]
            print(f"# options: {json.dumps(dict(options), sort_keys=True)}")
        for i, args in enumerate(commands, 1):
            args = args + extra
            if args[0] in DEVICE_COMMANDS and "--device" not in args:  # the job's device, not auto
                args += ["--device", current().device]
            tag = f"[{i}/{len(commands)}] " if len(commands) > 1 else ""
            digest = _model_digest(_option(args, "--model")) if reuse_identical else None
            if digest is not None and digest in done:
                print(f"{tag}# --model {_option(args, '--model')} holds the same bytes as an earlier run's: "
                      f"copying {done[digest]} to {_option(args, '--out')} instead of `nuwa {args[0]}`", flush=True)
                _copy_run(done[digest], _option(args, "--out"))
                outputs.append(None)
                continue
            print(f"{tag}$ {env}nuwa {shlex.join(args)}", flush=True)
            out, err = io.StringIO(), _Tail(sys.stderr)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = main(args)
            print(out.getvalue(), end="", flush=True)
            if status != 0:
                raise NuwaFailed(args, status, err.reason(args[0]), log)
            if digest is not None:
                done[digest] = _option(args, "--out")
            outputs.append(out.getvalue())
    return outputs


class _Tail:
    """stderr of one command: written through, its end kept for the line saying why it failed."""

    def __init__(self, stream: Any):
        self.stream, self.text = stream, ""

    def write(self, s: str) -> int:
        self.text = (self.text + s)[-4000:]
        return self.stream.write(s)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding: the stream's
        return getattr(self.stream, name)

    def reason(self, command: str) -> str:
        lines = [line for line in self.text.splitlines() if line.strip()]
        prefix = f"nuwa {command}: error: "
        said = [line[len(prefix):] for line in lines if line.startswith(prefix)]
        return said[-1] if said else (lines[-1] if lines else "")


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def _model_digest(directory: str | None) -> tuple | None:
    """The bytes of a model directory (config and weights), or None if it is not one."""
    from nuwa.io import sha256_file

    files = [Path(str(directory)) / f for f in ("config.json", "model.safetensors")]
    return tuple(sha256_file(f) for f in files) if directory and all(f.is_file() for f in files) else None


def _copy_run(source: str, out: str) -> None:
    """`out` := `source`'s files, with a report saying where they came from (atomic)."""
    import shutil

    from nuwa.atomic import atomic_dir

    with atomic_dir(out) as tmp:
        for f in Path(source).iterdir():
            shutil.copyfile(f, Path(tmp) / f.name)
        report = Path(tmp) / "report.json"
        if report.is_file():
            doc = json.loads(report.read_text())
            doc["reused_from"] = str(source)
            report.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
