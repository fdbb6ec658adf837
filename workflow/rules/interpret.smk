# Interpretation figures of the paper on one base of the profile (params.yaml `interpret:`):
# Fig. 8 (attention rollout of two edge ViTs), Fig. 11 (t-SNE of per-layer class tokens),
# Table 2 / Figs. 9-10 (samples that activate MLP neurons most), and Fig. 2 (a small base
# fine-tuned on class subsets vs a larger base, both with sliced classifiers).
include: "interpret_common.smk"


rule interpretation:
    """Figs. 2, 8, 9-10, 11 and Table 2 (the interpretation experiments)."""
    input:
        interpret_targets(),
    localrule: True


rule fig8_attention_rollout:
    """Paper Fig. 8: layer-wise class-token attention and its rollout for edge ViTs derived for
    different sub-tasks, on the same images (one per sub-task and their side-by-side composite)."""
    input:
        models=[f for m in FIG8_MODELS for f in model_files(fig8_model_dir(m))],
        data=dataset_inputs(I_DATASET),
    output:
        png=report(INTERPRET_FIGURES["fig8"], caption="../report/fig8.rst", category="Figures",
                   labels={"figure": "Fig. 8", "base": I_BASE}),
        **table_outputs("fig8_attention_rollout", caption="../report/fig8.rst"),
    params:
        spec=I_SPEC,
        models={m: fig8_model_dir(m) for m in FIG8_MODELS},
        images={s: SUBTASKS[I_DATASET][s]["indices"] for s in FIG8_IMAGES},
        alpha=FIG8_ALPHA,
    log:
        f"{LOGS}/interpret/fig8.log",
    benchmark:
        f"{BENCH}/interpret/fig8.tsv"
    threads: res("interpret", "threads")
    resources:
        **rule_resources("interpret"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/interpret_rollout.py"


rule fig11_tsne_layers:
    """Paper Fig. 11: t-SNE of the base's class token after each chosen layer, coloured by class."""
    input:
        model=model_files(BASE_DIR.format(base=I_BASE)),
        data=dataset_inputs(I_DATASET),
    output:
        png=report(INTERPRET_FIGURES["fig11"], caption="../report/fig11.rst", category="Figures",
                   labels={"figure": "Fig. 11", "base": I_BASE}),
    params:
        spec=I_SPEC,
        base=I_BASE,
        tsne=I["tsne"],
    log:
        f"{LOGS}/interpret/fig11.log",
    benchmark:
        f"{BENCH}/interpret/fig11.tsv"
    threads: res("interpret", "threads")
    resources:
        **rule_resources("interpret"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/interpret_tsne.py"


rule table2_neuron_top_samples:
    """Paper Table 2 and Figs. 9-10: the test samples that activate chosen MLP neurons of a shallow
    and a deep layer of the base most, and how many classes they span."""
    input:
        model=model_files(BASE_DIR.format(base=I_BASE)),
        data=dataset_inputs(I_DATASET),
    output:
        png=report(INTERPRET_FIGURES["fig9_10"], caption="../report/table2.rst", category="Figures",
                   labels={"figure": "Figs. 9-10", "base": I_BASE}),
        **table_outputs("table2_neuron_top_samples", caption="../report/table2.rst"),
        **table_outputs("table2_neuron_class_spread", prefix="spread_"),
    params:
        spec=I_SPEC,
        neurons=I["neurons"],
    log:
        f"{LOGS}/interpret/table2.log",
    benchmark:
        f"{BENCH}/interpret/table2.tsv"
    threads: res("interpret", "threads")
    resources:
        **rule_resources("interpret"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/interpret_neurons.py"


rule small_base:
    """Fig. 2's small base: pretrained like the profile's bases, smaller (params.yaml
    interpret.fig2.small)."""
    input:
        data=dataset_inputs(I_DATASET),
        checkpoint=[FIG2["small"]["checkpoint"]] if FIG2["small"].get("checkpoint") else [],
    output:
        model_files(SMALL_DIR),
    params:
        args=small_base_args,
    log:
        f"{LOGS}/interpret/small_base.log",
    benchmark:
        f"{BENCH}/interpret/small_base.tsv"
    threads: res("small_base", "threads")
    resources:
        **rule_resources("small_base"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/nuwa_run.py"


rule fig2_task_specific_finetuning:
    """Paper Fig. 2: on random class subsets of growing size, the small and the large base with
    sliced classifiers vs the small base fine-tuned on the subset."""
    input:
        small=model_files(SMALL_DIR),
        large=model_files(BASE_DIR.format(base=FIG2_LARGE)),
        data=dataset_inputs(I_DATASET),
    output:
        png=report(INTERPRET_FIGURES["fig2"], caption="../report/fig2.rst", category="Figures",
                   labels={"figure": "Fig. 2"}),
        **table_outputs("fig2_task_specific_finetuning", caption="../report/fig2.rst"),
    params:
        spec=I_SPEC,
        large_name=FIG2_LARGE,
        fig2={k: v for k, v in FIG2.items() if k not in ("small", "large")},
        eval=P["eval"],
    log:
        f"{LOGS}/interpret/fig2.log",
    benchmark:
        f"{BENCH}/interpret/fig2.tsv"
    threads: res("fig2", "threads")
    resources:
        **rule_resources("fig2"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/interpret_fig2.py"
