"""DVC's record of what each stage ran: every dependency dvc.yaml names exists, every stage depends
on the library, and a change to library code marks the stages that run it as changed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_workflow import DVC, ROOT, copy_repo, run, set_param

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _path(entry) -> str:
    return next(iter(entry)) if isinstance(entry, dict) else entry


def test_every_dependency_exists_or_is_another_stages_output():
    """A path left behind when code moves is not a dependency DVC can hash (it reports it deleted,
    and a change to the moved code reruns nothing)."""
    outs = {_path(o) for stage in STAGES.values() for o in stage.get("outs", [])}
    for record in ROOT.glob("data/*.dvc"):  # a frozen import: `dvc update` or `dvc checkout` makes it
        outs |= {str(record.parent.relative_to(ROOT) / o["path"]) for o in yaml.safe_load(record.read_text())["outs"]}
    for name, stage in STAGES.items():
        missing = [d for d in stage["deps"] if d not in outs and not (ROOT / d).exists()]
        assert not missing, f"stage {name}: {missing} do not exist"


def test_every_stage_depends_on_the_library():
    for name, stage in STAGES.items():
        assert "nuwa" in stage["deps"], f"stage {name} runs the library but does not depend on nuwa/"


@pytest.mark.skipif(not Path(DVC).exists(), reason="dvc is not installed next to python")
@pytest.mark.slow
def test_a_library_change_marks_the_derive_stage_changed(tmp_path):
    """Its outputs recorded as they are (`dvc commit`, empty stand-ins for the models and results),
    the stage is up to date, byte-code caches included; one comment added to nuwa/schedule.py
    changes it."""
    repo = copy_repo(tmp_path / "repo", git=True)
    set_param(repo, "profile", "test")
    stage = STAGES["derive"]
    for entry in stage["deps"] + stage["outs"]:
        path = repo / _path(entry).replace("${profile}", "test")
        if not path.exists():  # the base, its sub-tasks and the stage's outputs
            path.mkdir(parents=True)
            (path / "stand-in").write_text("")
    run([DVC, "commit", "--force", "derive"], repo)

    def status() -> dict:
        return json.loads(run([DVC, "status", "--json", "derive"], repo).stdout or "{}")

    (repo / "nuwa/__pycache__").mkdir(exist_ok=True)
    (repo / "nuwa/__pycache__/schedule.cpython-311.pyc").write_bytes(b"\0")  # importing writes these
    assert status() == {}
    quiet = run([sys.executable, "scripts/stale_results.py"], repo).stdout
    assert "  derive: " not in quiet  # (other stages, never recorded in this copy, are listed)
    with open(repo / "nuwa/schedule.py", "a") as f:
        f.write("# a change\n")
    assert status() == {"derive": [{"changed deps": {"nuwa": "modified"}}]}
    # The report CI prints names the stage whose committed results the change leaves stale.
    report = run([sys.executable, "scripts/stale_results.py"], repo)
    assert report.returncode == 0 and "  derive: nuwa (modified)" in report.stdout


def test_the_stale_report_names_code_and_parameters_not_missing_checkpoints():
    from scripts.stale_results import stale

    status = {
        "base": [{"changed deps": {"nuwa": "modified", "data/fashion-mnist": "deleted"}},
                 {"changed outs": {"models/default/bases": "not in cache"}}],
        "derive": [{"changed deps": {"models/default/bases": "deleted",
                                     "params.yaml": {"profiles.default.alphas": "modified"}}}],
        "analysis": [{"changed deps": {"models/default/bases": "deleted"}}],  # a fresh clone: nothing stale
        "data/fashion-mnist.dvc": "frozen",
    }
    assert stale(status) == {"base": ["nuwa (modified)"], "derive": ["params profiles.default.alphas (modified)"]}


def test_the_report_stage_depends_on_the_rules_that_list_its_inputs():
    """report_targets() and claims_inputs() live in common.smk: a change there must rerun it."""
    assert "workflow/rules/common.smk" in STAGES["report"]["deps"]


@pytest.mark.parametrize("args, message", [
    (["no-such-profile", "--log", "LOG", "--command", "x"], "no results/no-such-profile/"),
    (["dinov2", "--log", "no/such.log", "--command", "x"], "--log no/such.log: No such file or directory"),
    (["dinov2", "--log", "EMPTY", "--command", "x"], ": no DVC stage or Snakemake job in it"),
])
def test_recording_a_build_refuses_bad_input_in_one_line(args, message, tmp_path):
    import subprocess

    empty = tmp_path / "empty.log"
    empty.write_text("nothing ran\n")
    args = [str(empty) if a in ("LOG", "EMPTY") else a for a in args]
    before = (ROOT / "results/dinov2/build.json").exists()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/record_build.py"), *args], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (ROOT / "results/dinov2/build.json").exists() == before  # nothing written


def test_a_rebuild_log_gives_each_stages_seconds_the_jobs_and_the_wall_clock():
    """Stages DVC recorded count; one stopped midway (no lock update) does not, nor do its jobs."""
    from scripts.record_build import measured

    log = "\n".join(["Running stage 'base':", "Finished jobid: 3 (Rule: pretrain)", "Finished jobid: 0 (Rule: bases)",
                     "Elapsed time: 0:09:53.631834", "Updating lock file 'dvc.lock'", "Running stage 'report':",
                     "Finished jobid: 1 (Rule: claims)", "Elapsed time: 0:00:27.01", "Updating lock file 'dvc.lock'",
                     "Running stage 'mobilevit_compression':", "Finished jobid: 9 (Rule: mobilevit_train)", "Elapsed time: 0:31:42.8",
                     "WorkflowError:"])
    assert measured(log) == dict(wall_seconds=621, jobs=3, stage_seconds={"base": 594, "report": 27})
    timed = log + "\n\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:12:05"
    assert measured(timed)["wall_seconds"] == 4325
