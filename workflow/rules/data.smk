# Data: the frozen input data sets and the sub-task extraction (class lists and sample indices).


rule dataset:
    """Copy a data set's files from its `source` (Fashion-MNIST: Debian's dataset-fashion-mnist)
    into data/. DVC records the same folder as an import (data/fashion-mnist.dvc); consumers take
    it as ancient(), so a `dvc checkout` that restores it does not rerun anything."""
    output:
        directory("data/{dataset}"),
    params:
        source=lambda w: DATASETS[w.dataset]["source"],
        files=lambda w: DATASETS[w.dataset]["files"],
    wildcard_constraints:
        dataset="|".join(re.escape(d) for d, v in DATASETS.items() if "source" in v),
    log:
        f"{LOGS}/dataset/{{dataset}}.log",
    localrule: True
    threads: res("dataset", "threads")
    resources:
        **rule_resources("dataset"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/dataset.py"


rule subtask:
    """One sub-task of a data set: its classes (index, name, new label) and the indices of its
    samples in the fit / validation / test splits that `nuwa derive` and `nuwa eval` use."""
    input:
        data=lambda w: dataset_inputs(w.dataset),
    output:
        classes=f"{RESULTS}/subtasks/{{dataset}}/{{subtask}}/classes.parquet",
        samples=f"{RESULTS}/subtasks/{{dataset}}/{{subtask}}/samples.parquet",
    params:
        spec=lambda w: DATASETS[w.dataset]["spec"],
        definition=lambda w: SUBTASKS[w.dataset][w.subtask],
        options=pick(DERIVE, SPLIT_KEYS),
    log:
        f"{LOGS}/subtask/{{dataset}}/{{subtask}}.log",
    benchmark:
        f"{BENCH}/subtask/{{dataset}}/{{subtask}}.tsv"
    threads: res("subtasks", "threads")
    resources:
        **rule_resources("subtasks"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/subtask.py"
