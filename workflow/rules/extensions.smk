# Beyond the paper (params.yaml `extensions:`): recovery without training (closed-form
# ridge refit) or with distillation from the base, started from the main run's NuWa models with
# no recovery; derivation when the device's images may not leave it (the device fits a Gaussian
# mixture, `nuwa fit-gmm`; the server selects public samples with it, `nuwa derive --proxy-gmm`);
# fp16 / int8 ONNX export. Three tables compare them: recovery_methods, data_regimes, edge_export.
include: "extensions_common.smk"


wildcard_constraints:
    recovery="closed-form|distill",
    regime="own|proxy",


rule extensions:
    """The three extension tables (recovery methods, data regimes, edge export)."""
    input:
        extension_targets(),
    localrule: True


rule ext_recover:
    """Recover a NuWa model of the main run (`--recovery none`) with closed-form or distill
    (`nuwa finetune --recovery R`; epochs and samples per epoch as the main run's fine-tuning),
    then its test top-1."""
    input:
        pruned=lambda w: x_main_run(w, "pruned"),
        base=model_files(BASE_DIR),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        model=model_files(f"{XMODELS}/recovery/{X_RUN}"),
        json=f"{XRESULTS}/recovery/{X_RUN}.json",
    params:
        spec=data_spec,
        finetune=P["finetune"],
        options=X_RECOVERY_OPTIONS,
        eval=P["eval"],
    log:
        f"{LOGS}/extensions/recover/{X_RUN}.log",
    benchmark:
        f"{BENCH}/extensions/recover/{X_RUN}.tsv"
    threads: res("ext_recover", "threads")
    resources:
        **rule_resources("ext_recover"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/ext_recover.py"


rule ext_split:
    """The data regimes' two data sets, disjoint: the device's images (`device_samples` training
    images of the sub-task's classes) and the public pool (`public_samples` other training images
    of every class), as npz files with the test split attached; split.json says which indices."""
    input:
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        device=f"{XMODELS}/proxy/{X_PROXY_DIR}/device.npz",
        public=f"{XMODELS}/proxy/{X_PROXY_DIR}/public.npz",
        json=f"{XRESULTS}/proxy/{X_PROXY_DIR}/split.json",
    params:
        spec=data_spec,
        classes=lambda w: subtask_def(w)["indices"],
        proxy=X_PROXY,
    log:
        f"{LOGS}/extensions/split/{X_PROXY_DIR}.log",
    threads: res("ext_split", "threads")
    resources:
        **rule_resources("ext_split"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/ext_split.py"


rule ext_fit_gmm:
    """On the device: the Gaussian mixture of its images' features (`nuwa fit-gmm`), the only thing
    that leaves it."""
    input:
        base=model_files(BASE_DIR),
        device=f"{XMODELS}/proxy/{X_PROXY_DIR}/device.npz",
    output:
        gmm=f"{XRESULTS}/proxy/{X_PROXY_DIR}/gmm.json",
    params:
        args=lambda w, input, output: ["fit-gmm", "--model", BASE_DIR.format(**w), "--data", f"npz:{input.device}",
                                       "--classes", ",".join(map(str, subtask_def(w)["indices"])),
                                       "--components", X_PROXY["components"], "--samples", X_PROXY["gmm_samples"],
                                       "--seed", w.seed, "--out", output.gmm],
    log:
        f"{LOGS}/extensions/fit_gmm/{X_PROXY_DIR}.log",
    benchmark:
        f"{BENCH}/extensions/fit_gmm/{X_PROXY_DIR}.tsv"
    threads: res("ext_fit_gmm", "threads")
    resources:
        **rule_resources("ext_fit_gmm"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/nuwa_run.py"


rule ext_regime:
    """NuWa at the proxy alpha from the device's own images (`own`) or from the public samples the
    device's mixture selects (`proxy`: device.npz is not even an input of its job), fine-tuned on
    the same data, then top-1 on the data set's real test split."""
    input:
        unpack(regime_inputs),
        base=model_files(BASE_DIR),
        caches=prepared_files("{base}"),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        model=model_files(f"{XMODELS}/proxy/{X_PROXY_DIR}/{{regime}}-a{{alpha}}"),
        json=f"{XRESULTS}/proxy/{X_PROXY_DIR}/{{regime}}-a{{alpha}}.json",
    params:
        base_dir=lambda w: BASE_DIR.format(**w),
        spec=data_spec,
        classes=lambda w: subtask_def(w)["indices"],
        metric=P["metric"],
        finetune=P["finetune"],
        options=lambda w: dict(DERIVE_OPTIONS, **pick(FINETUNE_OPTIONS, ("finetune_lr", "weight_decay"))),
        proxy=X_PROXY,
        eval=P["eval"],
    log:
        f"{LOGS}/extensions/regime/{X_PROXY_DIR}/{{regime}}-a{{alpha}}.log",
    benchmark:
        f"{BENCH}/extensions/regime/{X_PROXY_DIR}/{{regime}}-a{{alpha}}.tsv"
    threads: res("ext_regime", "threads")
    resources:
        **rule_resources("ext_regime"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/ext_regime.py"


rule ext_export_base:
    """The base as fp32 / fp16 / int8 ONNX: bytes, test top-1 (all classes), ONNX Runtime latency."""
    input:
        model=model_files(BASE_DIR),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        json=f"{XRESULTS}/export/{{base}}/base.json",
    params:
        spec=data_spec,
        export=X_EXPORT,
    log:
        f"{LOGS}/extensions/export/{{base}}/base.log",
    benchmark:
        f"{BENCH}/extensions/export/{{base}}/base.tsv"
    threads: res("ext_export", "threads")
    resources:
        **rule_resources("ext_export"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/ext_export.py"


rule ext_export:
    """A fine-tuned NuWa model of the main run as fp32 / fp16 / int8 ONNX: bytes, test top-1 on its
    classes, ONNX Runtime latency, agreement with fp32."""
    input:
        model=lambda w: x_main_run(w, "finetuned"),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        json=f"{XRESULTS}/export/{{base}}/{{subtask}}/a{{alpha}}-s{{seed}}.json",
    params:
        spec=data_spec,
        export=X_EXPORT,
    log:
        f"{LOGS}/extensions/export/{{base}}/{{subtask}}/a{{alpha}}-s{{seed}}.log",
    benchmark:
        f"{BENCH}/extensions/export/{{base}}/{{subtask}}/a{{alpha}}-s{{seed}}.tsv"
    threads: res("ext_export", "threads")
    resources:
        **rule_resources("ext_export"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/ext_export.py"


rule ext_tables:
    """recovery_methods (top-1 and seconds of none / finetune / closed-form / distill), data_regimes
    (own images vs GMM proxy vs the main run's full training split) and edge_export (fp32 / fp16 /
    int8 bytes, top-1, latency)."""
    input:
        **x_tables_inputs(),
    output:
        **{f"{t}_{ext}": (report(f"{TABLES}/{t}.{ext}", caption=f"../report/{t}.rst", category="Extensions")
                          if ext == "csv" else f"{TABLES}/{t}.{ext}")
           for t in X_TABLES for ext in ("csv", "md", "parquet")},
    log:
        f"{LOGS}/extensions/tables.log",
    threads: res("ext_tables", "threads")
    resources:
        **rule_resources("ext_tables"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/ext_tables.py"
