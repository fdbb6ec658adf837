"""scripts/recovery_diagnosis.py: the verdict its committed table states follows from the table."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "recovery_diagnosis.py"
COMMITTED = ROOT / "results" / "dinov2" / "recovery_diagnosis"


def _script():
    spec = importlib.util.spec_from_file_location("recovery_diagnosis", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(method: str, alpha: float, today: float, low: float, longer: float) -> list[dict]:
    base = dict(method=method, alpha=alpha, rate_achieved=alpha, test_top1=None, seconds=1.0)
    return [dict(base, recipe="today", samples=6000, val_top1=today),
            dict(base, recipe="low-lr", samples=6000, val_top1=low),
            dict(base, recipe="longer", samples=12000, val_top1=0.0),  # mid-schedule: not the end
            dict(base, recipe="longer", samples=24000, val_top1=longer)]


def test_a_smaller_step_worth_more_than_four_times_the_budget_is_the_step_size_per_model_and_by_alpha():
    table = pd.DataFrame(_rows("nuwa", 0.4, 0.50, 0.78, 0.77) + _rows("random", 0.4, 0.60, 0.70, 0.75)
                         + _rows("nuwa", 0.8, 0.60, 0.70, 0.705))  # within a point of longer: the step
    decided, lines = _script().verdict(table)
    assert decided == "alpha 0.4: split (1 budget, 1 step size); alpha 0.8: step size (1 of 1 models)"
    assert lines[1] == "random at alpha 0.4: low-lr +10.0 pts, longer +15.0 pts (validation, against today's recipe): budget"


def test_without_the_four_recipes_nothing_is_decided():
    table = pd.DataFrame(_rows("nuwa", 0.4, 0.5, 0.6, 0.7)).query("recipe != 'longer'")
    assert _script().verdict(table)[0] == "not decided (the four recipes did not all run)"


@pytest.mark.skipif(not COMMITTED.with_suffix(".csv").exists(), reason="no committed diagnosis")
def test_the_committed_page_is_the_rendering_of_the_committed_table(tmp_path):
    out = tmp_path / "page"
    subprocess.run([sys.executable, str(SCRIPT), "--render", str(COMMITTED.with_suffix(".csv")), "--out", str(out)],
                   check=True, cwd=ROOT)
    assert out.with_suffix(".md").read_text() == COMMITTED.with_suffix(".md").read_text()


@pytest.mark.parametrize("args, needle", [
    (["--recipes", "today,bogus", "--models", "m", "--data", "d"], "unknown recipe 'bogus'"),
    (["--recipes", "today"], "--models and --data are needed"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(args, needle, tmp_path):
    out = tmp_path / "diag"
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and needle in proc.stderr
    assert list(tmp_path.iterdir()) == []
