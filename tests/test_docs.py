"""The documentation: a short README that keeps the two set-up commands, links that resolve, and
no citation of a file the repository does not have."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 250
RUN_COMMAND = "bash scripts/setup.sh && .venv/bin/snakemake --profile workflow/profiles/default"
TEST_COMMAND = "bash scripts/setup.sh && .venv/bin/python -m pytest -q"
GONE = "DESIGN" + ".md"  # a design note that is not part of the repository (spelt apart: this file is tracked too)

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOCS_PATH = re.compile(r"\bdocs/[A-Za-z0-9_.-]+\.md\b")


def links(md: Path) -> list[str]:
    """Inline link and image targets of a markdown file, outside fenced code blocks."""
    return LINK.findall(FENCE.sub("", md.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    text = FENCE.sub("", md.read_text())
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def repo_files() -> list[Path]:
    """Files git tracks or would track (not ignored), outside results/."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    names = {n for n in out.decode().split("\0") if n}
    return [ROOT / n for n in sorted(names) if not n.startswith("results/") and (ROOT / n).is_file()]


def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_keeps_the_two_setup_commands_and_ci_runs_the_test_one():
    text = README.read_text()
    assert RUN_COMMAND in text
    assert TEST_COMMAND in text
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()


def test_docs_exist():
    names = {p.name for p in DOCS}
    assert {"architecture.md", "method.md", "workflow.md", "results.md"} <= names


@pytest.mark.parametrize("md", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(md):
    broken = []
    for target in links(md):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{md.name}: broken links: {broken}"


def test_no_file_cites_a_missing_design_note_or_doc():
    design, docs = [], []
    for path in repo_files():
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue  # binary
        text = data.decode("utf-8", "replace")
        if GONE in text:
            design.append(str(path.relative_to(ROOT)))
        docs += [f"{path.relative_to(ROOT)}: {m}" for m in DOCS_PATH.findall(text) if not (ROOT / m).is_file()]
    assert not design, f"{GONE} is not in the repository but is cited by {design}"
    assert not docs, f"citations of docs that do not exist: {docs}"


def test_the_readme_claims_section_is_the_committed_ledger_verbatim():
    """Written by scripts/readme_claims.py from results/default/claims.csv, never by hand."""
    import pandas as pd

    from nuwa.paper.claims import README_BEGIN, README_END, readme_section

    text = README.read_text()
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1
    shown = README_BEGIN + text.split(README_BEGIN, 1)[1].split(README_END, 1)[0] + README_END
    assert shown == readme_section(pd.read_csv(ROOT / "results/default/claims.csv")), \
        "README claims section is stale: run .venv/bin/python scripts/readme_claims.py"


def test_the_readme_sets_the_ledgers_of_every_committed_profile_side_by_side():
    """Where a second profile's ledger is committed (the pretrained study), the README shows its
    verdicts next to the default's, written by scripts/readme_claims.py."""
    import sys

    import pandas as pd

    sys.path.insert(0, str(ROOT / "scripts"))
    from readme_claims import COMPARED, compared_frames

    from nuwa.paper.claims import COMPARE_BEGIN, COMPARE_END, comparison_section

    table = comparison_section({"a": pd.DataFrame([dict(id="x", source="T", statement="s", verdict="holds")]),
                                "b": pd.DataFrame([dict(id="y", source="T", statement="t", verdict="contradicted")])})
    assert "| s | T | **holds** | - |" in table and "| t | T | - | **contradicted** |" in table
    frames = compared_frames()
    text = README.read_text()
    if len(frames) < 2:
        assert COMPARE_BEGIN not in text
        return
    shown = COMPARE_BEGIN + text.split(COMPARE_BEGIN, 1)[1].split(COMPARE_END, 1)[0] + COMPARE_END
    assert shown == comparison_section(frames, COMPARED), "run .venv/bin/python scripts/readme_claims.py"
