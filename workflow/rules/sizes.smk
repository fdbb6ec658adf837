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
        **rule_resources("model_sizes"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/model_sizes.py"
