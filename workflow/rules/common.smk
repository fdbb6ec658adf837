# Validation of params.yaml and target helpers shared by all rule files.
import sys

from snakemake.utils import validate

validate(config, schema="../schemas/params.schema.yaml")

PROFILE = config["profile"]
P = config["profiles"][PROFILE]
LOGS = f"logs/{PROFILE}"
BENCH = f"benchmarks/{PROFILE}"
TABLES = "results/tables"
FIGURES = "results/figures"


def all_targets():
    return [f"{TABLES}/model_sizes.csv", f"{TABLES}/model_sizes.md", f"{TABLES}/model_sizes.parquet"]
