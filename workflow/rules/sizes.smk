# Architecture sizes: params and FLOPs of converted timm ViTs against the published figures.


rule model_sizes:
    output:
        csv=report(f"{TABLES}/model_sizes.csv", caption="../report/model_sizes.rst", category="Tables"),
        md=f"{TABLES}/model_sizes.md",
        parquet=f"{TABLES}/model_sizes.parquet",
    params:
        models=config["sizes"]["models"],
    log:
        f"{LOGS}/model_sizes.log",
    benchmark:
        f"{BENCH}/model_sizes.tsv"
    threads: res("model_sizes", "threads")
    resources:
        mem_mb=res("model_sizes", "mem_mb"),
        runtime=res("model_sizes", "runtime"),
        gpu=res("model_sizes", "gpu"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/model_sizes.py"
