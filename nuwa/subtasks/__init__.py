"""Named sub-tasks (class lists) per data set, defined once for the library (`nuwa derive
--subtask H1`, or DATASET/H1) and the workflow (params.yaml `datasets.*.subtasks` names these
files): one YAML file per data set in this folder, written by scripts/generate_subtasks.py.
Each sub-task has a kind (hard: similar classes; simple: dissimilar ones), a description, its
classes as label indices of the data set and their names (and WordNet ids for ImageNet)."""
from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import NuwaError

DIR = Path(__file__).resolve().parent


def datasets() -> list[str]:
    """The data sets with named sub-tasks (their kind in a data spec, e.g. fashion-mnist:ROOT)."""
    return sorted(p.stem for p in DIR.glob("*.yaml"))


def load_table(dataset: str) -> dict:
    """Sub-task name -> definition for `dataset`."""
    path = DIR / f"{dataset}.yaml"
    try:
        table = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise NuwaError(f"{path}: cannot read sub-task definitions ({e})") from None
    if not isinstance(table, dict):
        raise NuwaError(f"{path}: expected a mapping sub-task -> definition")
    return table


def lookup(name: str, data: str) -> list[int]:
    """Classes of sub-task `name` ("H1" or "fashion-mnist/H1"), as label indices, for the data set
    of spec `data` (its kind, the part before the colon)."""
    dataset, _, sub = name.rpartition("/")
    dataset = dataset or data.split(":", 1)[0]
    if dataset not in datasets():
        raise NuwaError(f"unknown sub-task {name!r}: none defined for dataset {dataset!r} "
                        f"(datasets with sub-tasks: {', '.join(datasets())})")
    table = load_table(dataset)
    if sub not in table:
        raise NuwaError(f"unknown sub-task {name!r} for {dataset}; known: {', '.join(sorted(table))}")
    return [int(i) for i in table[sub]["indices"]]
