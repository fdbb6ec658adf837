"""Named sub-tasks (class lists) per dataset, from `subtasks.yaml` or a user file."""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import NuwaError

BUILTIN = Path(__file__).with_name("subtasks.yaml")


def load_table(path: str | Path | None = None) -> dict:
    path = Path(path) if path else BUILTIN
    try:
        table = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise NuwaError(f"{path}: cannot read sub-task definitions ({e})") from None
    if not isinstance(table, dict):
        raise NuwaError(f"{path}: expected a mapping dataset -> sub-task -> classes")
    return table


def lookup(name: str, data: str, path: str | Path | None = None) -> list:
    """Class list of sub-task `name` ("H1" or "fashion-mnist/H1") for the dataset of spec `data`."""
    table = load_table(path)
    dataset, _, sub = name.rpartition("/")
    dataset = dataset or data.split(":", 1)[0]
    if dataset not in table:
        raise NuwaError(f"unknown sub-task {name!r}: none defined for dataset {dataset!r} "
                        f"(datasets with sub-tasks: {', '.join(sorted(table))})")
    if sub not in table[dataset]:
        raise NuwaError(f"unknown sub-task {name!r} for {dataset}; known: {', '.join(sorted(table[dataset]))}")
    entry = table[dataset][sub]
    return list(entry["classes"] if isinstance(entry, dict) else entry)
