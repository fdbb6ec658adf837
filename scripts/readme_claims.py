"""Rewrite the README's claims section from the committed ledger (results/default/claims.csv), so
the section is never edited by hand: `.venv/bin/python scripts/readme_claims.py` after a rebuild
of the default profile; tests/test_docs.py checks that the two agree."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from nuwa.atomic import atomic_file
from nuwa.paper.claims import README_BEGIN, README_END, readme_section

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        print(f"README.md: markers {README_BEGIN!r} ... {README_END!r} not found", file=sys.stderr)
        return 2
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    section = readme_section(pd.read_csv(ROOT / "results/default/claims.csv"))
    with atomic_file(readme) as f:
        f.write(head + section + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
