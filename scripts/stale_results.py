"""Which committed results the current code no longer vouches for: a report, never a failure.

dvc.lock records the hash of every code and parameter dependency of each stage as it was when the
stage last ran. This compares them with the working tree (`dvc status`) and prints, per stage,
the code or parameters that changed since, hence which committed results under results/ are stale
until that stage is rebuilt. Checkpoints that are only missing (not in this clone's DVC cache)
are not staleness: a fresh clone lacks them by design.

    .venv/bin/python scripts/stale_results.py          # CI prints this before the tests

It always exits 0: a code change need not cost an hour's rebuild at once, but it must be visible.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Dependencies that are code or parameters; anything else (models/, data/) is an input that a
# fresh clone may simply not have.
CODE = ("nuwa", "workflow", "scripts", "dvc.yaml")
PARAMS = "params.yaml"


def stale(status: dict) -> dict[str, list[str]]:
    """Stage -> the code files and parameters that changed since dvc.lock recorded it."""
    out: dict[str, list[str]] = {}
    for stage, entries in status.items():
        if not isinstance(entries, list):
            continue
        changed = []
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            for path, what in entry.get("changed deps", {}).items():
                if path == PARAMS and isinstance(what, dict):
                    changed += [f"params {k} ({v})" for k, v in sorted(what.items())]
                elif path.split("/")[0] in CODE and what == "modified":
                    changed.append(f"{path} (modified)")
        if changed:
            out[stage] = changed
    return out


def main(argv: list[str]) -> int:
    dvc = ROOT / ".venv/bin/dvc"
    try:
        run = subprocess.run([str(dvc) if dvc.exists() else "dvc", "status", "--json"], cwd=ROOT,
                             capture_output=True, text=True, timeout=900)
        status = json.loads(run.stdout or "{}")
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        print(f"stale results: could not read `dvc status` ({e}); nothing reported")
        return 0
    recorded = set(yaml.safe_load((ROOT / "dvc.lock").read_text()).get("stages", {})) if (ROOT / "dvc.lock").is_file() else set()
    found = stale(status)
    if not found:
        print("stale results: none; every stage's code and parameters are as dvc.lock recorded them")
        return 0
    print(f"stale results: {len(found)} stage(s) ran on other code or parameters than the working tree has; "
          "their committed results are stale until rebuilt (dvc repro, or the Snakemake target):")
    for stage, changed in found.items():
        if stage not in recorded:
            print(f"  {stage}: never recorded in dvc.lock (its committed results come from a run outside DVC)")
        else:
            print(f"  {stage}: " + ", ".join(changed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
