"""The `nuwa` command (contract: "The CLI contract" in docs/architecture.md).

Errors that are the user's (bad value, missing or corrupt file) print one line on stderr
and exit with status 2; results that other tools read are one JSON object on the last line
of stdout.

This module is the parser: the derive option flags are generated from the fields of
nuwa.options.DeriveOptions. nuwa.commands runs the commands.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import Field, fields
from typing import Callable, Sequence

from . import commands
from .device import DEVICE_HELP
from .errors import NuwaError
from .options import CACHE_KEYS, AdaptiveOptions, DeriveOptions


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return v


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _comma_list(text: str) -> tuple[str, ...] | None:
    return tuple(text.split(",")) if text else None  # empty: not given


def _number_list(text: str) -> tuple[float, ...] | None:
    return tuple(_number(t) for t in text.split(",")) if text else None


# An option flag's value, by its field's annotation (before any " |": `int | None` is a count).
_FLAG_TYPES = {"int": _positive_int, "float": _number, "str": str, "tuple[str, ...]": _comma_list,
               "tuple[float, ...]": _number_list}
# The options `nuwa finetune` takes as flags (the rest only from --options).
_RECOVERY_OPTIONS = ("recovery_lrs", "recovery_distill_alphas", "layer_decay", "warmup_fraction", "recovery_round",
                     "recovery_max_samples", "recovery_patience", "recovery_search_samples", "ridge", "calib_samples",
                     "distill_tau", "distill_alpha", "distill_feature_weight")
_RECOVERY_HELP = ("standard (the default for a ViT: warm-up, cosine, layer-wise lr decay, distillation from the "
                  "base, lr and budget chosen on validation), paper (AdamW 1e-4, 5 epochs), finetune, distill, "
                  "closed-form or none")


def option_fields() -> dict[str, Field]:
    """The fields of DeriveOptions and AdaptiveOptions that have a CLI flag (`flag` metadata), by name."""
    return {f.name: f for cls in (DeriveOptions, AdaptiveOptions) for f in fields(cls) if f.metadata.get("flag")}


def add_option_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """A flag --NAME-WITH-DASHES for each named option, typed by its field's annotation, with the
    help and choices of its metadata. Not given, it is None: the --options file's value or the
    default stands (nuwa.commands.options_from_args)."""
    flagged = option_fields()
    group = parser.add_argument_group("derive options (nuwa.options.DeriveOptions)")
    for name in names:
        f = flagged[name]
        kind = f.type.split(" |")[0]
        group.add_argument(f"--{name.replace('_', '-')}", type=_nonneg_int if f.metadata["seed"] else _FLAG_TYPES[kind],
                           choices=f.metadata["choices"], help=f.metadata["help"])
    parser.set_defaults(option_flags=tuple(names))


def add_runtime_flags(parser: argparse.ArgumentParser, *, compute: bool = True) -> None:
    """--device, and unless the command only times a model (`compute` False: bench): --amp/--no-amp,
    --deterministic and --workers (nuwa.device.Runtime)."""
    group = parser.add_argument_group("where to compute (nuwa.device)")
    group.add_argument("--device", default="auto", help=DEVICE_HELP)
    if not compute:
        return
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                       help="bf16 autocast for training, scoring and evaluation on CUDA (default on; "
                            "no effect on the CPU)")
    group.add_argument("--deterministic", action="store_true",
                       help="on CUDA, torch's deterministic algorithms (slower; the CPU always is)")
    group.add_argument("--workers", type=_nonneg_int,
                       help="data-loader worker processes for image folders (default min(2, cpus))")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nuwa", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("pretrain", help="train a base ViT or MobileViT (timm architecture) on a data set")
    s.add_argument("--model", required=True, help="timm model name, e.g. deit_tiny_patch16_224 or mobilevit_xxs")
    s.add_argument("--data", required=True,
                   help="data spec, e.g. fashion-mnist or npz:FILE; scenes:FILE trains a MobileViT segmenter")
    s.add_argument("--epochs", type=_nonneg_int, default=4, help="training epochs (4; 0: weights and probe only)")
    s.add_argument("--img-size", type=_positive_int, help="input size in pixels (default: the data's)")
    s.add_argument("--in-chans", type=_positive_int, help="input channels (default: the data's)")
    s.add_argument("--embed-dim", type=_positive_int, help="width (default: the timm model's)")
    s.add_argument("--depth", type=_positive_int, help="transformer blocks (default: the timm model's)")
    s.add_argument("--num-heads", type=_positive_int, help="attention heads (default: the timm model's)")
    s.add_argument("--patch-size", type=_positive_int, help="patch size in pixels (default: the timm model's)")
    s.add_argument("--lr", type=_number, default=1e-3, help="AdamW peak learning rate (1e-3)")
    s.add_argument("--weight-decay", type=_number, default=0.05, help="AdamW weight decay (0.05)")
    s.add_argument("--batch-size", type=_positive_int, default=128, help="training batch (128)")
    s.add_argument("--seed", type=int, default=0, help="seed of weights, data order and augmentation (0)")
    s.add_argument("--limit", type=_positive_int, help="train on at most this many samples per epoch")
    s.add_argument("--no-augment", action="store_true",
                   help="no random shifts and horizontal flips (for data where a flip changes the class)")
    s.add_argument("--probe-epochs", type=_nonneg_int, default=0,
                   help="before any training epoch, fit only the classifier on the frozen model's features "
                        "(a linear probe) for this many epochs")
    s.add_argument("--probe-limit", type=_positive_int, help="samples whose features the probe is fitted on (default all)")
    s.add_argument("--probe-lr", type=_number, default=1e-3, help="the linear probe's learning rate (1e-3)")
    s.add_argument("--checkpoint", help="start from timm weights in this local file")
    s.add_argument("--pretrained", action="store_true", help="start from timm hub weights (needs a network)")
    g = s.add_argument_group("MobileViT only")
    g.add_argument("--teacher", help="distil from this model directory while training (the recipe of the MobileViT "
                                     "compression study, docs/models.md)")
    g.add_argument("--kd-alpha", type=_number, default=0.5, help="weight of the teacher's logit term")
    g.add_argument("--kd-tau", type=_number, default=1.0, help="distillation temperature")
    g.add_argument("--feature-weight", type=_number, default=0.0,
                   help="weight of early-feature mimicking (stage-1 output, through a 1x1 adapter)")
    g.add_argument("--decoder-dim", type=_positive_int, default=32, help="segmenter: FPN decoder channels")
    s.add_argument("--out", required=True, help="the model directory to write")
    add_runtime_flags(s)
    s.set_defaults(func=commands.run_pretrain)

    s = sub.add_parser("derive", help="derive an edge ViT for a class subset and a budget")
    s.add_argument("--model", required=True, help="base model directory or timm model name")
    s.add_argument("--checkpoint", help="local timm weights when --model is a timm name")
    s.add_argument("--data", help="training data (required unless --public-data)")
    s.add_argument("--proxy-gmm", help="derive without device data: the device's gmm.json (nuwa fit-gmm)")
    s.add_argument("--public-data", help="with --proxy-gmm: the public pool to select from (same as --data)")
    g = s.add_mutually_exclusive_group()  # one required, except with --proxy-gmm (derive checks)
    g.add_argument("--classes", help="comma-separated class names or indices of the base model")
    g.add_argument("--subtask", help="named sub-task, e.g. H1 or fashion-mnist/H1")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--rate", type=_number, help="pruning rate alpha in (0, 1)")
    g.add_argument("--latency-ms", type=_number, help="latency budget in ms on this machine")
    s.add_argument("--metric", default="flops", help="params or flops (with --rate)")
    s.add_argument("--method", default="nuwa",
                   help="nuwa, random, nvit, xpruner; MobileViT: nuwa, norm (weight norms, the MobileViT compression "
                        "study's recipe) or nuwa-norm")
    s.add_argument("--recovery", help=_RECOVERY_HELP + "; a MobileViT's default is finetune")
    s.add_argument("--finetune-epochs", type=int, default=5, help="epochs of --recovery finetune or distill (5)")
    s.add_argument("--seed", type=int, default=0, help="seed of weights, data order and the fit/validation split (0)")
    s.add_argument("--options", help="YAML file of derive options (see nuwa.options.DeriveOptions)")
    s.add_argument("--teacher", help="MobileViT, --recovery distill: the teacher, a model directory or a timm name")
    s.add_argument("--teacher-checkpoint", help="local weights of a --teacher given as a timm name")
    s.add_argument("--out", required=True, help="the model directory to write")
    add_option_flags(s, tuple(option_fields()))
    add_runtime_flags(s)
    s.set_defaults(func=commands.run_derive)

    s = sub.add_parser("fit-gmm", help="on the device: fit the Gaussian mixture a proxy derivation needs")
    s.add_argument("--model", required=True, help="base model directory (the same base the server has)")
    s.add_argument("--data", required=True, help="the device's own data (its training split is used)")
    s.add_argument("--classes", required=True, help="comma-separated class names the device wants")
    s.add_argument("--components", type=_positive_int, default=8, help="mixture components K")
    s.add_argument("--samples", type=_positive_int, default=2048, help="at most this many device samples")
    s.add_argument("--dims", type=_positive_int, default=16, help="feature dims (head-svd: at most #classes)")
    s.add_argument("--projection", default="head-svd", choices=["head-svd", "random", "none"],
                   help="feature projection: the classifier's top singular vectors (default), random, none")
    s.add_argument("--batch-size", type=_positive_int, default=256, help="feature batch (256)")
    s.add_argument("--seed", type=int, default=0, help="seed of the sample draw and of EM (0)")
    s.add_argument("--out", required=True, help="gmm.json to write (the only thing that leaves the device)")
    add_runtime_flags(s)
    s.set_defaults(func=commands.run_fit_gmm)

    s = sub.add_parser("prepare", help="build the per-base caches (per-layer classifiers, embedding scores)")
    s.add_argument("--model", required=True, help="base model directory")
    s.add_argument("--data", required=True, help="data spec, e.g. fashion-mnist or folder:DIR")
    s.add_argument("--options", help="YAML file of derive options")
    s.add_argument("--seed", type=int, default=0,
                   help="the --seed of the derivations these caches serve (their fit/validation split)")
    add_option_flags(s, tuple(n for n in CACHE_KEYS if n in option_fields()))
    add_runtime_flags(s)
    s.set_defaults(func=commands.run_prepare)

    s = sub.add_parser("finetune", help="recovery as its own step: fine-tune (or distill, refit) a derived model")
    s.add_argument("--model", required=True, help="derived (edge) model directory")
    s.add_argument("--data", required=True, help="data spec, e.g. fashion-mnist or folder:DIR")
    s.add_argument("--recovery", default="standard", help=_RECOVERY_HELP)
    s.add_argument("--base", help="standard/distill/closed-form: the base model directory (default: the one the "
                                  "report names)")
    s.add_argument("--epochs", type=_nonneg_int, default=5, help="epochs of --recovery finetune or distill (5)")
    s.add_argument("--limit", type=_nonneg_int, default=None,
                   help="finetune/distill: training samples per epoch (default all)")
    s.add_argument("--seed", type=int, default=0, help="seed of weights, data order and the fit/validation split (0)")
    s.add_argument("--options", help="YAML file of derive options (fine-tuning lr, batch size, split)")
    s.add_argument("--out", required=True, help="the model directory to write")
    add_option_flags(s, _RECOVERY_OPTIONS)
    add_runtime_flags(s)
    s.set_defaults(func=commands.run_finetune)

    s = sub.add_parser("eval", help="top-1 (segmenters: mean IoU) of a model directory on a test split")
    s.add_argument("--model", help="model directory (with --onnx: where preprocessing and classes come from)")
    s.add_argument("--onnx", help="evaluate this exported ONNX file (any precision) instead of the PyTorch model")
    s.add_argument("--data", required=True, help="data spec, e.g. fashion-mnist or folder:DIR")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--classes", help="comma-separated class names or indices: a base model's accuracy on them")
    g.add_argument("--subtask", help="named sub-task, e.g. H1: its classes")
    s.add_argument("--split", default="test", choices=["test", "train"], help="the split evaluated (test)")
    s.add_argument("--batch-size", type=_positive_int, default=256, help="evaluation batch (256)")
    s.add_argument("--limit", type=_positive_int, help="evaluate the first N images only (default all)")
    s.add_argument("--per-image", action="store_true",
                   help="add each test image's 0/1 correctness (packed bits), for paired comparisons")
    add_runtime_flags(s)
    s.set_defaults(func=commands.run_eval)

    s = sub.add_parser("bench", help="latency and throughput of a model directory")
    s.add_argument("--model", required=True, help="model directory")
    s.add_argument("--batch-size", default="1", help="batch size, or several comma-separated (1,64)")
    s.add_argument("--runtime", default="torch", help="torch, onnx or compile; several comma-separated")
    s.add_argument("--threads", type=_positive_int, help="CPU threads (default: torch's)")
    s.add_argument("--warmup", type=_nonneg_int, default=5, help="untimed runs first (5)")
    s.add_argument("--repeats", type=_positive_int, default=30, help="timed runs; the median is reported (30)")
    add_runtime_flags(s, compute=False)  # CUDA events time the GPU
    s.set_defaults(func=commands.run_bench)

    s = sub.add_parser("info", help="per-layer sizes, params and FLOPs of a model directory")
    s.add_argument("dir", help="model directory")
    s.add_argument("--json", action="store_true", help="print only the JSON line")
    s.set_defaults(func=commands.run_info)

    s = sub.add_parser("export", help="export a model directory to ONNX (fp32, fp16 or int8)")
    s.add_argument("--model", required=True, help="model directory")
    s.add_argument("--onnx", required=True, help="the .onnx file to write")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--fp16", action="store_true", help="float16 weights and compute, float32 input/output")
    g.add_argument("--int8", action="store_true", help="ONNX Runtime int8 quantisation (see --int8-mode)")
    s.add_argument("--int8-mode", help="dynamic (default: faster here, no data) or static (QDQ, calibrated)")
    s.add_argument("--calib-data", help="static int8: data spec whose training split calibrates (model's classes)")
    s.add_argument("--calib-samples", type=int, help="static int8: calibration images (default 256)")
    s.set_defaults(func=commands.run_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except NuwaError as e:
        print(f"nuwa {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nuwa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
