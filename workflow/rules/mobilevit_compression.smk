# The MobileViT compression study's MobileViT comparison in miniature: scene parsing on Fashion-MNIST canvases.
# Target `mobilevit_compression` (not part of `all`): the profile's `mobilevit_compression:` section says what to build.
#   scenes -> teacher (seed 0) -> baseline / kd students per seed -> norm (the MobileViT compression study's pruning)
#   -> NuWa variants at norm's achieved rate -> ONNX measurements -> table


include: "mobilevit_compression_common.smk"


rule scenes:
    """Fashion-MNIST scene parsing, generated deterministically: train scenes from the train
    split, test scenes from the test split (nuwa.data.scenes). DVC tracks the file (stage scenes)."""
    input:
        data=dataset_inputs("fashion-mnist"),
    output:
        npz=SCENES,
    params:
        fashion=DATASETS["fashion-mnist"]["spec"],
        **(S4 or {}).get("scenes", {}),
    log:
        f"{LOGS}/scenes.log",
    benchmark:
        f"{BENCH}/scenes.tsv"
    threads: 1
    resources:
        **rule_resources("scenes"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/scenes.py"


rule mobilevit_train:
    """A segmenter trained from timm's initialisation: the teacher, the baseline student, or the
    student distilled from the teacher (logits + stage-1 feature mimicking)."""
    input:
        scenes=SCENES,
        teacher=lambda w: model_files(f"{S4_MODELS}/teacher") if w.role.startswith("kd-") else [],
    output:
        model_files(f"{S4_MODELS}/{{role}}"),
    params:
        spec=f"scenes:{SCENES}",
        model=lambda w: S4["teacher" if w.role == "teacher" else "student"]["model"],
        epochs=lambda w: S4["teacher" if w.role == "teacher" else "student"]["epochs"],
        seed=lambda w: 0 if w.role == "teacher" else int(w.role.rsplit("-s", 1)[1]),
        train=lambda w: S4.get("train", {}),
        distill=lambda w: S4.get("distill", {}) if w.role.startswith("kd-") else None,
    wildcard_constraints:
        role=r"teacher|baseline-s[0-9]+|kd-s[0-9]+",
    log:
        f"{LOGS}/mobilevit_compression/train/{{role}}.log",
    benchmark:
        f"{BENCH}/mobilevit_compression/train/{{role}}.tsv"
    threads: res("mobilevit_train", "threads")
    resources:
        **rule_resources("mobilevit_train"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/mobilevit_train.py"


rule mobilevit_derive:
    """A derivation from the distilled student, recovered by distillation from the teacher:
    the MobileViT compression study's `norm` at the profile's rate, the NuWa variants at norm's achieved rate."""
    input:
        scenes=SCENES,
        kd=model_files(f"{S4_MODELS}/kd-s{{seed}}"),
        teacher=model_files(f"{S4_MODELS}/teacher"),
        norm=lambda w: [] if w.variant == "norm" else f"{S4_MODELS}/norm-s{w.seed}/report.json",
    output:
        model_files(f"{S4_MODELS}/{{variant}}-s{{seed}}"),
    params:
        spec=f"scenes:{SCENES}",
        variant=lambda w: dict(method="norm") if w.variant == "norm" else S4_VARIANTS[w.variant],
        prune=lambda w: S4["prune"],
        distill=lambda w: S4.get("distill", {}),
        subset=lambda w: S4["subset"],
        batch_size=lambda w: S4.get("train", {}).get("batch_size", 64),
    wildcard_constraints:
        variant="|".join(["norm", *S4_VARIANTS]),
    log:
        f"{LOGS}/mobilevit_compression/derive/{{variant}}-s{{seed}}.log",
    benchmark:
        f"{BENCH}/mobilevit_compression/derive/{{variant}}-s{{seed}}.tsv"
    threads: res("mobilevit_derive", "threads")
    resources:
        **rule_resources("mobilevit_derive"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/mobilevit_derive.py"


rule mobilevit_measure:
    """One row of the table for one seed, through ONNX Runtime: per-image confusions on the test
    scenes, latency and FPS at batch 1, peak memory, file size."""
    input:
        scenes=SCENES,
        model=lambda w: model_files(s4_model(dict((r, m) for r, m, _ in s4_rows())[w.row], w.seed)),
    output:
        json=f"{S4_RESULTS}/measure/{{row}}-s{{seed}}.json",
        npz=f"{S4_RESULTS}/measure/{{row}}-s{{seed}}.npz",
    params:
        spec=f"scenes:{SCENES}",
        precision=lambda w: dict((r, p) for r, _, p in s4_rows())[w.row],
        classes=lambda w: S4["subset"] if w.row == "kd@subset" else None,
        bench=lambda w: S4.get("bench", {}),
    log:
        f"{LOGS}/mobilevit_compression/measure/{{row}}-s{{seed}}.log",
    benchmark:
        f"{BENCH}/mobilevit_compression/measure/{{row}}-s{{seed}}.tsv"
    threads: res("mobilevit_measure", "threads")
    resources:
        **rule_resources("mobilevit_measure"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/mobilevit_measure.py"


rule mobilevit_table:
    """The MobileViT compression study's table: every row pooled over seeds, paired comparisons and its findings."""
    input:
        measures=lambda w: s4_measures(),
    output:
        md=report(f"{S4_RESULTS}/table.md", caption="../report/mobilevit_compression.rst", category="MobileViT compression"),
        csv=f"{S4_RESULTS}/table.csv",
        comparisons=f"{S4_RESULTS}/comparisons.csv",
    params:
        subset=lambda w: S4["subset"],
        seeds=lambda w: S4["seeds"],
    log:
        f"{LOGS}/mobilevit_compression/table.log",
    benchmark:
        f"{BENCH}/mobilevit_compression/table.tsv"
    threads: 1
    resources:
        **rule_resources("mobilevit_table"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/mobilevit_table.py"


rule mobilevit_compression:
    """The MobileViT compression study's table (README "MobileViT compression"); `mobilevit_teacher` and per-seed
    `mobilevit_compression_s{seed}` build it in pieces."""
    input:
        f"{S4_RESULTS}/table.md",
    localrule: True


rule mobilevit_teacher:
    input:
        model_files(f"{S4_MODELS}/teacher"),
    localrule: True


# Every measurement of one seed (mobilevit_compression_s0, mobilevit_compression_s1, ...): the study built in pieces.
for _seed in (S4 or {}).get("seeds", []):

    rule:
        name:
            f"mobilevit_compression_s{_seed}"
        input:
            [m for m in s4_measures() if m.endswith(f"-s{_seed}.json")],
        localrule: True
