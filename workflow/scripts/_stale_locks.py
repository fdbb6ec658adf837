"""Stale Snakemake locks: the workflow drops them at start-up (imported by rules/common.smk).

A run killed outright (SIGKILL, power loss) leaves Snakemake's lock behind, and every later run
then stops until someone types --unlock. When no snakemake process of this host works in the
directory, the lock is stale and goes, so a plain re-run resumes (rerun-incomplete redoes the
killed jobs). Hosts sharing one directory over NFS set NUWA_KEEP_LOCKS=1: only this host's
processes are visible here.
"""
import os
import sys
from pathlib import Path

PROC = Path("/proc")


def _snakemake_running_here(run_dir):
    """Is another snakemake process of this host working in `run_dir`? (Ours and our parents excluded.)"""
    skip, pid = set(), os.getpid()
    while pid > 1:  # this process and its ancestors (a dvc stage, a wrapper shell)
        skip.add(pid)
        try:
            pid = int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    for entry in PROC.glob("[0-9]*"):
        if int(entry.name) in skip:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            is_snakemake = any(Path(a.decode(errors="replace")).name == "snakemake" for a in argv[:2])
            if is_snakemake and Path(os.readlink(entry / "cwd")).resolve() == run_dir:
                return True
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return False


def clear_stale_locks(run_dir=None):
    """Drop the locks of `run_dir` (default: here) when they are stale; returns the files dropped."""
    run_dir = Path(run_dir or os.getcwd()).resolve()
    locks = run_dir / ".snakemake" / "locks"
    held = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    if not held or os.environ.get("NUWA_KEEP_LOCKS") == "1" or not (PROC / "self").exists():
        return []
    if _snakemake_running_here(run_dir):
        return []
    for f in held:
        f.unlink(missing_ok=True)
    print(f"nuwa: removed {len(held)} stale Snakemake lock(s) left by a killed run", file=sys.stderr)
    return held
