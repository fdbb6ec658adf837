"""Rewrite the README's claims sections from the committed ledgers, so they are never edited by
hand: the default profile's claims (results/default/claims.csv) and, side by side, the verdicts of
every profile with committed results (COMPARED). `.venv/bin/python scripts/readme_claims.py` after
a rebuild; tests/test_docs.py checks that README and ledgers agree."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from nuwa.atomic import atomic_file
from nuwa.paper.claims import COMPARE_BEGIN, COMPARE_END, README_BEGIN, README_END, comparison_section, readme_section

ROOT = Path(__file__).resolve().parents[1]
# Profiles whose ledgers the README sets side by side, with their column titles.
COMPARED = {"default": "default (miniature, own base)", "dinov2": "dinov2 (pretrained ViT-S)"}


def compared_frames() -> dict[str, pd.DataFrame]:
    return {p: pd.read_csv(ROOT / f"results/{p}/claims.csv") for p in COMPARED
            if (ROOT / f"results/{p}/claims.csv").is_file()}


def replace_between(text: str, begin: str, end: str, section: str) -> str:
    head, rest = text.split(begin, 1)
    return head + section + rest.split(end, 1)[1]


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        print(f"README.md: markers {README_BEGIN!r} ... {README_END!r} not found", file=sys.stderr)
        return 2
    text = replace_between(text, README_BEGIN, README_END, readme_section(pd.read_csv(ROOT / "results/default/claims.csv")))
    frames = compared_frames()
    if len(frames) > 1:
        if COMPARE_BEGIN not in text or COMPARE_END not in text:
            print(f"README.md: markers {COMPARE_BEGIN!r} ... {COMPARE_END!r} not found", file=sys.stderr)
            return 2
        text = replace_between(text, COMPARE_BEGIN, COMPARE_END, comparison_section(frames, COMPARED))
    with atomic_file(readme) as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
