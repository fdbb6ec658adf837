"""DVC's record of what each stage ran: every dependency dvc.yaml names exists, every stage depends
on the library, and a change to library code marks the stages that run it as changed."""
from __future__ import annotations

import json
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
    with open(repo / "nuwa/schedule.py", "a") as f:
        f.write("# a change\n")
    assert status() == {"derive": [{"changed deps": {"nuwa": "modified"}}]}
