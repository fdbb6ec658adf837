"""Every derive option is defined once, in nuwa.options: the CLI flags are generated from its
fields, the workflow's schema and stage keys agree with it, and a bad argument is refused
before torch is imported."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import jsonschema
import pytest
import yaml

from nuwa import cli
from nuwa.commands import options_from_args
from nuwa.errors import NuwaError
from nuwa.options import (ADAPTIVE_DIMS, CACHE_KEYS, DEFAULT_GAMMA_RATIO, DEPTH_POLICIES, EMBED_SCORE_KEY,
                          LATENCY_RUNTIMES,
                          LAYER_HEAD_KEY, METHOD_NAMES, METRICS, PROXY_SELECTS, RECOVERY_NAMES, SPLIT_KEYS,
                          SVD_CHOICES, WORKFLOW_ELSEWHERE, AdaptiveOptions, DeriveOptions)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/params.schema.yaml").read_text())
HEAVY = ("torch", "timm", "numpy", "pandas")


def _subparser(name: str):
    return cli.build_parser()._subparsers._group_actions[0].choices[name]


def _flags(name: str) -> dict[str, object]:
    """A subcommand's option flags: dest -> argparse action."""
    return {a.dest: a for a in _subparser(name)._actions if a.option_strings}


def _names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


# ---- CLI flags come from the dataclass ------------------------------------------------------------
def test_every_flagged_option_is_a_derive_flag_with_the_help_and_choices_of_its_field():
    flags = _flags("derive")
    for name, f in cli.option_fields().items():
        action = flags[name]
        assert action.option_strings == [f"--{name.replace('_', '-')}"]
        assert action.help == f.metadata["help"] and action.choices == f.metadata["choices"], name
        assert action.default is None, name  # not given: the --options file's value or the default


STANDARD_RECIPE = {"recovery_lrs", "recovery_distill_alphas", "layer_decay", "warmup_fraction", "recovery_round",
                   "recovery_max_samples", "recovery_patience", "recovery_search_samples"}


def test_every_option_of_every_command_prints_a_help_line():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    silent = {f"nuwa {name} {(a.option_strings or [a.dest])[0]}" for name, sub in commands.items()
              for a in sub._actions if not isinstance(a, argparse._HelpAction) and not a.help}
    assert silent == set()


def test_which_options_each_command_takes_as_flags():
    assert set(cli.option_fields()) == {
        "rho_depth", "depth_policy", "rho_head", "svd", "taylor_microbatch", "score_samples", "batch_size", "split_seed", "val_fraction",
        "latency_batch", "latency_runtime", "ridge", "calib_samples", "distill_tau", "distill_alpha",
        "distill_feature_weight", "proxy_samples", "proxy_quantile", "proxy_select",
        "gamma_qkv", "round_to", "exclude", "embed_score_samples", "layer_head_samples", *STANDARD_RECIPE}
    options = _names(DeriveOptions) | _names(AdaptiveOptions)
    assert set(_flags("finetune")) & options == {"ridge", "calib_samples", "distill_tau", "distill_alpha",
                                                 "distill_feature_weight", *STANDARD_RECIPE}
    # prepare: the flagged options its caches are keyed by (nuwa.options.CACHE_KEYS)
    assert set(_flags("prepare")) & options == {"layer_head_samples", "embed_score_samples", "taylor_microbatch",
                                                "split_seed", "val_fraction", "batch_size"}


def _value(f) -> tuple[str, object]:
    """A valid command-line value for an option flag and the value it parses to."""
    if f.metadata["choices"]:
        return f.metadata["choices"][-1], f.metadata["choices"][-1]
    if f.type.startswith("tuple[float"):
        return "0.5,0.25", (0.5, 0.25)
    if f.type.startswith("tuple"):
        return "qk,v", ("qk", "v")
    return ("3", 3) if f.type.startswith("int") else ("0.5", 0.5)


@pytest.mark.parametrize("name", sorted(cli.option_fields()))
def test_a_flag_sets_its_field(name):
    f = cli.option_fields()[name]
    text, value = _value(f)
    args = cli.build_parser().parse_args(["derive", "--model", "m", "--data", "d", "--classes", "1", "--rate", "0.5",
                                          "--out", "o", f"--{name.replace('_', '-')}", text])
    opts = options_from_args(args)
    owner = opts.adaptive if name in _names(AdaptiveOptions) else opts
    assert getattr(owner, name) == value
    assert asdict(opts) == asdict(_replaced(DeriveOptions(), name, value)), "only that field changes"


def _replaced(opts: DeriveOptions, name: str, value) -> DeriveOptions:
    setattr(opts.adaptive if name in _names(AdaptiveOptions) else opts, name, value)
    return opts


def test_flags_override_the_options_file_and_leave_its_other_values(tmp_path):
    path = tmp_path / "options.yaml"
    path.write_text("rho_depth: 0.8\nrho_head: 0.7\nadaptive: {round_to: 4, exclude: [mlp]}\n")
    args = cli.build_parser().parse_args(["derive", "--model", "m", "--data", "d", "--classes", "1", "--rate", "0.5",
                                          "--out", "o", "--options", str(path), "--rho-head", "0.6", "--round-to", "2"])
    opts = options_from_args(args)
    a = opts.adaptive
    assert (opts.rho_depth, opts.rho_head, a.round_to, list(a.exclude)) == (0.8, 0.6, 2, ["mlp"])


def test_a_bad_flag_value_is_named_by_validate():
    args = cli.build_parser().parse_args(["finetune", "--model", "m", "--data", "d", "--out", "o",
                                          "--distill-alpha", "2"])
    with pytest.raises(NuwaError, match=r"distill_alpha=2\.0"):
        options_from_args(args)


# ---- bad arguments fail fast ----------------------------------------------------------------------
def _run(argv: list[str]) -> tuple[int, str, list[str]]:
    """`nuwa ARGV` in a fresh interpreter: exit status, stderr, and which heavy modules it imported."""
    code = ("import json, sys; from nuwa.cli import main; rc = main(sys.argv[1:]); "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules))); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stderr, json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("extra, needle", [
    (["--rate", "2"], "rate 2.0"),
    (["--rate", "0.5", "--method", "magic"], "magic"),
    (["--rate", "0.5", "--recovery", "prayer"], "prayer"),
    (["--rate", "0.5", "--metric", "macs"], "macs"),
    (["--latency-ms", "0"], "latency budget 0.0"),
    (["--rate", "0.5", "--finetune-epochs", "-1"], "-1"),
    (["--rate", "0.5", "--rho-depth", "1.5"], "rho_depth=1.5"),
    (["--rate", "0.5", "--exclude", "qk,depth"], "depth"),
])
def test_a_bad_derive_argument_is_refused_before_torch_is_imported(tmp_path, extra, needle):
    rc, err, heavy = _run(["derive", "--model", "x", "--data", "y", "--classes", "1", *extra,
                           "--out", str(tmp_path / "o")])
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and needle in lines[0], err
    assert heavy == [], f"imported {heavy} before refusing the argument"
    assert list(tmp_path.iterdir()) == []


def test_derive_without_classes_or_subtask_is_refused_before_torch_is_imported(tmp_path):
    rc, err, heavy = _run(["derive", "--model", "x", "--data", "y", "--rate", "0.5", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--classes or --subtask" in err and heavy == [], err


@pytest.mark.parametrize("extra, needle", [(["--recovery", "prayer"], "prayer"),
                                           (["--distill-alpha", "2"], "distill_alpha=2.0")])
def test_a_bad_finetune_argument_is_refused_before_torch_is_imported(tmp_path, extra, needle):
    rc, err, heavy = _run(["finetune", "--model", "x", "--data", "y", *extra, "--out", str(tmp_path / "o")])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err and heavy == [], err


def test_building_the_parser_imports_no_heavy_module():
    code = (f"import sys, nuwa.cli; nuwa.cli.build_parser(); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)


def test_the_names_the_cli_checks_are_the_registries():
    from nuwa.methods import METHODS
    from nuwa.recovery import RECOVERIES

    assert tuple(METHODS) == METHOD_NAMES and tuple(RECOVERIES) == RECOVERY_NAMES


# ---- the workflow's schema agrees with the dataclass ----------------------------------------------
DERIVE_SCHEMA = SCHEMA["$defs"]["derive_options"]


def test_the_schema_lists_every_option_the_workflow_may_set_under_derive():
    assert set(WORKFLOW_ELSEWHERE) <= _names(DeriveOptions)
    assert set(DERIVE_SCHEMA["properties"]) == _names(DeriveOptions) - set(WORKFLOW_ELSEWHERE)
    assert set(DERIVE_SCHEMA["properties"]["adaptive"]["properties"]) == _names(AdaptiveOptions)
    from nuwa.methods.xpruner import MaskOptions

    assert set(DERIVE_SCHEMA["properties"]["xpruner"]["properties"]) == _names(MaskOptions)
    assert "nuwa.options.DeriveOptions" in DERIVE_SCHEMA["description"]


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rpartition("/")[2]]
    return node


def test_the_options_left_out_of_derive_are_set_elsewhere_in_the_profile():
    for name, where in WORKFLOW_ELSEWHERE.items():
        if where is None:
            continue
        node = SCHEMA["$defs"]["profile"]
        for key in where.split("."):
            node = _resolve(node)["properties"][key]
        assert node, f"{name}: {where} is not in params.schema.yaml"


def test_the_schema_choices_are_the_options_choices():
    props, adaptive = DERIVE_SCHEMA["properties"], DERIVE_SCHEMA["properties"]["adaptive"]["properties"]
    assert tuple(props["svd"]["enum"]) == SVD_CHOICES
    assert tuple(props["latency_runtime"]["enum"]) == LATENCY_RUNTIMES
    assert tuple(props["proxy_select"]["enum"]) == PROXY_SELECTS
    assert tuple(props["depth_policy"]["enum"]) == DEPTH_POLICIES
    assert tuple(adaptive["exclude"]["items"]["enum"]) == ADAPTIVE_DIMS
    profile = SCHEMA["$defs"]["profile"]["properties"]
    variant = SCHEMA["properties"]["method_variants"]["additionalProperties"]["properties"]
    assert tuple(variant["method"]["enum"]) == METHOD_NAMES
    assert tuple(profile["metric"]["enum"]) == METRICS
    recoveries = SCHEMA["$defs"]["extensions"]["properties"]["recovery"]["properties"]["methods"]["items"]["enum"]
    assert set(recoveries) <= set(RECOVERY_NAMES)


def _schema_errors(options: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": "#/$defs/derive_options"})
    return [e.message for e in validator.iter_errors(options)]


def test_the_defaults_satisfy_the_schema():
    defaults = json.loads(json.dumps(asdict(DeriveOptions())))  # tuples as lists, as YAML has them
    settable = {k: v for k, v in defaults.items() if k not in WORKFLOW_ELSEWHERE and v is not None}
    assert _schema_errors(settable) == []


@pytest.mark.parametrize("options", [
    dict(rho_depth=0), dict(rho_head=1.5), dict(svd="full"), dict(val_fraction=1), dict(batch_size=0),
    dict(score_samples=0), dict(layer_head_epochs=0), dict(latency_batch=0), dict(latency_runtime="tf"),
    dict(latency_margin=1), dict(proxy_select="best"), dict(adaptive=dict(gamma_qkv=1)),
    dict(adaptive=dict(gamma_ratio=[0, 0, 0])), dict(adaptive=dict(round_to=0)),
    dict(adaptive=dict(exclude=["depth"])),
], ids=lambda o: json.dumps(o))
def test_what_validate_refuses_the_schema_refuses(options):
    with pytest.raises(NuwaError):
        DeriveOptions.from_dict(options)
    assert _schema_errors(options), options


# ---- stage keys and the gamma ratio ---------------------------------------------------------------
def test_the_cache_keys_are_the_strings_already_written():
    from nuwa.base import cache_key

    # The committed caches' options: their keys must read as they were written.
    opts = DeriveOptions(layer_head_samples=10_000, embed_score_samples=2048)
    assert cache_key("abc", opts, LAYER_HEAD_KEY) == "abc:10000:30:0:0.1"
    assert cache_key("abc", opts, EMBED_SCORE_KEY) == "abc:2048:1:0:0.1"
    assert set(LAYER_HEAD_KEY) | set(EMBED_SCORE_KEY) <= set(CACHE_KEYS) <= _names(DeriveOptions)
    assert set(SPLIT_KEYS) <= set(LAYER_HEAD_KEY) & set(EMBED_SCORE_KEY)


def test_the_workflow_takes_its_stage_keys_from_nuwa_options():
    common = (ROOT / "workflow/rules/common.smk").read_text()
    assert "from nuwa.options import CACHE_FILES, CACHE_KEYS, METHOD_NAMES, SPLIT_KEYS, cache_file" in common
    assert not re.search(r"^(CACHE_KEYS|SPLIT_KEYS)\s*=", common, re.M)


def test_the_gamma_ratio_default_is_defined_once():
    from nuwa.paper import ablations

    assert AdaptiveOptions().gamma_ratio == DEFAULT_GAMMA_RATIO
    assert ablations.DEFAULT_GAMMA_RATIO is DEFAULT_GAMMA_RATIO
    assert "from nuwa.options import DEFAULT_GAMMA_RATIO" in (ROOT / "workflow/rules/ablation_common.smk").read_text()
    literal = re.compile(r"1\.0,\s*5\.0,\s*2\.5")
    copies = [str(p.relative_to(ROOT)) for d in ("nuwa", "workflow") for p in (ROOT / d).rglob("*")
              if p.suffix in (".py", ".smk") and literal.search(p.read_text())]
    assert copies == ["nuwa/options.py"]
