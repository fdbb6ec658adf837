"""Record which code built a profile's committed results: results/PROFILE/build.json.

Run once a rebuild from nothing has finished (and before its results are committed), on the log
of that rebuild:

    /usr/bin/time -v .venv/bin/dvc repro > rebuild.log 2>&1
    .venv/bin/python scripts/record_build.py default --log rebuild.log --command ".venv/bin/dvc repro"

It writes the commit the code came from (HEAD), refusing when the code or parameters in the
working tree differ from that commit (the results would not be that commit's), the date, the
command, what the log measured (the wall-clock time, the Snakemake jobs, each DVC stage's
seconds), and the hash dvc.lock recorded for the library. A later code change shows in
`scripts/stale_results.py`; this file says where the results came from.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CODE = ["nuwa", "workflow", "dvc.yaml", "params.yaml"]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _seconds(hms: str) -> float:
    parts = [float(x) for x in hms.split(":")]
    return sum(x * 60 ** i for i, x in enumerate(reversed(parts)))


def measured(log: str) -> dict:
    """From a `dvc repro` log: each completed stage's Snakemake elapsed time (a stage counts once
    DVC recorded it in dvc.lock; one stopped midway does not), the jobs Snakemake finished in
    those stages, and the wall-clock time GNU time printed (else the completed stages' sum)."""
    stages, jobs, current, pending, stage_jobs = {}, 0, None, None, 0
    for line in log.splitlines():
        if m := re.match(r"Running stage '([^']+)'", line):
            current, pending, stage_jobs = m.group(1), None, 0
        elif line.startswith("Finished jobid"):
            stage_jobs += 1
        elif (m := re.match(r"Elapsed time: ([0-9:.]+)", line)) and current:
            pending = round(_seconds(m.group(1)))
        elif line.startswith("Updating lock file") and current and pending is not None:
            stages[current], jobs = pending, jobs + stage_jobs
            current = None
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([0-9:.]+)", log)
    return dict(wall_seconds=round(_seconds(wall.group(1))) if wall else sum(stages.values()),
                jobs=jobs, stage_seconds=stages)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--log", required=True, help="the rebuild's output (dvc repro under GNU time -v)")
    ap.add_argument("--command", required=True, help="the command that rebuilt it")
    a = ap.parse_args(argv)
    results = ROOT / "results" / a.profile
    if not results.is_dir():
        print(f"record_build: no results/{a.profile}/", file=sys.stderr)
        return 2
    try:
        m = measured(Path(a.log).read_text())
    except OSError as e:
        print(f"record_build: --log {a.log}: {e.strerror}", file=sys.stderr)
        return 2
    if not m["stage_seconds"] or m["jobs"] == 0:
        print(f"record_build: --log {a.log}: no DVC stage or Snakemake job in it", file=sys.stderr)
        return 2
    dirty = git("status", "--porcelain", "--", *CODE)
    if dirty:
        print(f"record_build: code or parameters differ from HEAD ({dirty.splitlines()[0].strip()} ...): "
              "commit them and rebuild first", file=sys.stderr)
        return 2
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    library = sorted({d["md5"] for s in lock.values() for d in s.get("deps", []) if d["path"] == "nuwa"})
    record = dict(profile=a.profile, commit=git("rev-parse", "HEAD"),
                  date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"), command=a.command,
                  **m, library_md5=library, stages=sorted(lock))
    tmp = results / ".build.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(results / "build.json")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
