# Architecture sizes: params and FLOPs of converted timm ViTs against the published figures.


rule model_sizes:
    output:
        csv=f"{TABLES}/model_sizes.csv",
        md=f"{TABLES}/model_sizes.md",
        parquet=f"{TABLES}/model_sizes.parquet",
    params:
        models=config["sizes"]["models"],
    log:
        f"{LOGS}/model_sizes.log",
    benchmark:
        f"{BENCH}/model_sizes.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/model_sizes.py"
