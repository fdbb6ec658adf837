"""Shared by the rule scripts: log set-up, torch threads, small writers.

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


def start(snakemake: Any, name: str) -> logging.Logger:
    """Send this job's stdout, stderr (progress bars, warnings) and logging to its log file,
    and give torch the job's threads."""
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "w", buffering=1)
    sys.stdout = sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    import torch

    torch.set_num_threads(max(1, int(snakemake.threads)))
    log = logging.getLogger(name)
    log.info("threads=%s params=%s", snakemake.threads, dict(snakemake.params.items()))
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
