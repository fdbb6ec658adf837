"""Tidy result tables: one DataFrame written as csv + markdown + parquet, atomically."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..atomic import atomic_file, atomic_path


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub markdown table without the optional `tabulate` dependency."""
    def fmt(v) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


# Machine-read columns (packed per-image correctness, per-unit lists for the ledger's bootstraps):
# kept in the parquet, left out of the csv and markdown that people read.
MACHINE_COLUMNS = ("correct", "correct_before_finetune", "correct_pruned", "distinct_classes_per_neuron")


def readable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in MACHINE_COLUMNS if c in df.columns])


def write_table(df: pd.DataFrame, csv: str | Path, md: str | Path | None = None,
                parquet: str | Path | None = None, *, title: str | None = None) -> None:
    with atomic_file(csv) as f:
        readable(df).to_csv(f, index=False)
    if md is not None:
        with atomic_file(md) as f:
            if title:
                f.write(f"# {title}\n\n")
            f.write(to_markdown(readable(df)))
    if parquet is not None:
        with atomic_path(parquet) as tmp:
            df.to_parquet(tmp, index=False)
