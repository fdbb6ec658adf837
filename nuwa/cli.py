"""The `nuwa` command (contract: DESIGN.md section 7).

Errors that are the user's (bad value, missing or corrupt file) print one line on stderr
and exit with status 2; results that other tools read are one JSON object on the last line
of stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from .errors import NuwaError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _info(args: argparse.Namespace) -> int:
    from . import cost, io

    model = io.load(args.dir)
    cfg = model.config
    info = dict(
        depth=cfg.depth, embed_dim=cfg.embed_dim, num_classes=cfg.num_classes,
        img_size=list(cfg.img_size), patch_size=cfg.patch_size, in_chans=cfg.in_chans,
        params=cost.count_params(model), flops=cost.count_flops(cfg),
        params_eq7=cost.params_eq7(cfg), flops_eq8=cost.flops_eq8(cfg),
        layers=cfg.layer_table(), classes=cfg.classes, class_names=cfg.class_names,
    )
    if not args.json:
        print(f"{args.dir}: depth {cfg.depth}, embed dim {cfg.embed_dim}, {cfg.num_classes} classes, "
              f"{cfg.in_chans}x{cfg.img_size[0]}x{cfg.img_size[1]} input, patch {cfg.patch_size}")
        print(f"params {info['params']:,} ({info['params'] / 1e6:.2f} M; Eq. 7: {info['params_eq7']:,})")
        print(f"FLOPs  {info['flops']:,} ({info['flops'] / 1e9:.3f} G MACs; Eq. 8: {info['flops_eq8']:,})")
        print(f"{'layer':>5} {'heads':>5} {'qk/head':>7} {'v/head':>6} {'q':>5} {'v':>5} {'mlp':>6}")
        for r in info["layers"]:
            print(f"{r['layer']:>5} {r['heads']:>5} {r['qk_per_head']:>7} {r['v_per_head']:>6} "
                  f"{r['q']:>5} {r['v']:>5} {r['mlp']:>6}")
    print(json.dumps(info))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import DEFAULT_CALIB_SAMPLES, export, parse_precision

    precision, mode = parse_precision("fp16" if args.fp16 else "int8" if args.int8 else "fp32", args.int8_mode)
    samples = DEFAULT_CALIB_SAMPLES if args.calib_samples is None else args.calib_samples
    path = export(args.model, args.onnx, precision=precision, int8_mode=mode, calib=args.calib_data,
                  calib_samples=samples)
    print(json.dumps(dict(onnx=str(path), precision=precision if mode is None else f"int8-{mode}",
                          bytes=path.stat().st_size)))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from .pretrain import pretrain

    _, report = pretrain(
        args.model, args.data, out=args.out, epochs=args.epochs, img_size=args.img_size, in_chans=args.in_chans,
        embed_dim=args.embed_dim, depth=args.depth, num_heads=args.num_heads, patch_size=args.patch_size,
        lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed,
        checkpoint=args.checkpoint, pretrained=args.pretrained, limit=args.limit, augment=not args.no_augment,
    )
    print(json.dumps(dict(out=str(args.out), test_top1=report["test_top1"], params=report["params"])))
    return 0


def _derive_options(args: argparse.Namespace):
    from .options import DeriveOptions

    opts = DeriveOptions()
    if args.options:
        import yaml

        try:
            opts = DeriveOptions.from_dict(yaml.safe_load(open(args.options)) or {})
        except (OSError, yaml.YAMLError, TypeError) as e:
            raise NuwaError(f"--options {args.options}: {e}") from None
    for name in ("rho_depth", "rho_head", "svd", "taylor_microbatch", "score_samples", "batch_size",
                 "latency_batch", "latency_runtime", "val_fraction", "proxy_samples", "proxy_quantile", "proxy_select",
                 "ridge", "calib_samples", "distill_tau", "distill_alpha", "distill_feature_weight"):
        v = getattr(args, name, None)
        if v is not None:
            setattr(opts, name, v)
    if args.round_to is not None:
        opts.adaptive.round_to = args.round_to
    if args.gamma_qkv is not None:
        opts.adaptive.gamma_qkv = args.gamma_qkv
    if args.exclude:
        opts.adaptive.exclude = tuple(args.exclude.split(","))
    return opts


def _derive(args: argparse.Namespace) -> int:
    from .derivation import derive

    # --public-data names the public pool of a proxy derivation; it is --data under another name.
    if args.public_data is not None and args.proxy_gmm is None:
        raise NuwaError(f"--public-data {args.public_data} needs --proxy-gmm (else use --data)")
    if args.public_data is not None and args.data is not None and args.public_data != args.data:
        raise NuwaError(f"--data {args.data} and --public-data {args.public_data} differ; give one")
    data = args.public_data if args.public_data is not None else args.data
    if data is None:
        raise NuwaError("give --data (or --public-data with --proxy-gmm)")
    _, report = derive(
        args.model, data, classes=args.classes, subtask=args.subtask, rate=args.rate, metric=args.metric,
        latency_ms=args.latency_ms, method=args.method, recovery=args.recovery,
        finetune_epochs=args.finetune_epochs, seed=args.seed, checkpoint=args.checkpoint, out=args.out,
        options=_derive_options(args), proxy_gmm=args.proxy_gmm,
    )
    keys = ("method", "rate_target", "metric", "rate_achieved", "params", "flops", "base_params", "base_flops",
            "depth", "embed_dim", "val_top1_before_recovery", "val_top1", "derive_seconds", "data_regime")
    summary = {k: report.get(k) for k in keys}
    if report.get("proxy"):
        summary.update(proxy_precision=report["proxy"]["precision"], proxy_selected=report["proxy"]["selected"])
    print(json.dumps(dict(out=str(args.out), **summary)))
    return 0


def _fit_gmm(args: argparse.Namespace) -> int:
    from .proxy import fit_device_gmm

    doc = fit_device_gmm(args.model, args.data, classes=args.classes, out=args.out, components=args.components,
                         samples=args.samples, seed=args.seed, dims=args.dims, projection=args.projection,
                         batch_size=args.batch_size)
    print(json.dumps(dict(out=str(args.out), components=doc["components"], samples=doc["samples"],
                          dims=doc["feature"]["dims"], class_names=doc["class_names"])))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from .derivation import finetune_dir

    _, report = finetune_dir(args.model, args.data, epochs=args.epochs, seed=args.seed, out=args.out,
                             options=_derive_options(args), limit=args.limit, recovery=args.recovery,
                             base=args.base)
    print(json.dumps(dict(out=str(args.out), recovery=args.recovery, val_top1_before=report["val_top1_before_recovery"],
                          val_top1=report["val_top1"], epochs=report["finetune_epochs"],
                          recovery_seconds=report["seconds"]["recovery"])))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from .base import prepare_base

    print(json.dumps(prepare_base(args.model, args.data, options=_derive_options(args))))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_dir

    if args.onnx is not None:
        from .export import evaluate_file

        print(json.dumps(evaluate_file(args.onnx, args.data, model_dir=args.model, classes=args.classes,
                                       subtask=args.subtask, split=args.split, batch_size=args.batch_size,
                                       limit=args.limit)))
        return 0
    if args.model is None:
        raise NuwaError("one of --model DIR or --onnx FILE is required")
    print(json.dumps(evaluate_dir(args.model, args.data, classes=args.classes, subtask=args.subtask,
                                  split=args.split, batch_size=args.batch_size, limit=args.limit)))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import io
    from .bench import RUNTIMES, bench_suite
    from .cost import count_flops, count_params

    runtimes = [r.strip() for r in args.runtime.split(",") if r.strip()]
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad or not runtimes:
        raise NuwaError(f"unknown runtime {','.join(bad) or args.runtime!r}; expected any of {', '.join(RUNTIMES)}")
    batches = []
    for b in args.batch_size.split(","):
        try:
            batches.append(int(b))
        except ValueError:
            raise NuwaError(f"batch size {b!r} is not an integer") from None
        if batches[-1] < 1:
            raise NuwaError(f"batch size {b} must be >= 1")
    model = io.load(args.model)
    rows = bench_suite(model, batch_sizes=batches, runtimes=runtimes, threads=args.threads, warmup=args.warmup,
                       repeats=args.repeats, device=args.device, on_error="record")
    model_info = dict(model=str(args.model), params=count_params(model.config), flops=count_flops(model.config))
    # One combination: a flat object (the design's contract); several: one row each under "results".
    print(json.dumps(dict(model_info, **rows[0]) if len(rows) == 1 else dict(model_info, results=rows)))
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nuwa", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("pretrain", help="train a base ViT (timm architecture) on a data set")
    s.add_argument("--model", required=True, help="timm model name, e.g. deit_tiny_patch16_224")
    s.add_argument("--data", required=True, help="data spec, e.g. fashion-mnist or npz:FILE")
    s.add_argument("--epochs", type=_nonneg_int, default=4)
    s.add_argument("--img-size", type=_positive_int)
    s.add_argument("--in-chans", type=_positive_int)
    s.add_argument("--embed-dim", type=_positive_int)
    s.add_argument("--depth", type=_positive_int)
    s.add_argument("--num-heads", type=_positive_int)
    s.add_argument("--patch-size", type=_positive_int)
    s.add_argument("--lr", type=_number, default=1e-3)
    s.add_argument("--weight-decay", type=_number, default=0.05)
    s.add_argument("--batch-size", type=_positive_int, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--limit", type=_positive_int, help="train on at most this many samples per epoch")
    s.add_argument("--no-augment", action="store_true",
                   help="no random shifts and horizontal flips (for data where a flip changes the class)")
    s.add_argument("--checkpoint", help="start from timm weights in this local file")
    s.add_argument("--pretrained", action="store_true", help="start from timm hub weights (needs a network)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_pretrain)

    s = sub.add_parser("derive", help="derive an edge ViT for a class subset and a budget")
    s.add_argument("--model", required=True, help="base model directory or timm model name")
    s.add_argument("--checkpoint", help="local timm weights when --model is a timm name")
    s.add_argument("--data", help="training data (required unless --public-data)")
    s.add_argument("--proxy-gmm", help="derive without device data: the device's gmm.json (nuwa fit-gmm)")
    s.add_argument("--public-data", help="with --proxy-gmm: the public pool to select from (same as --data)")
    s.add_argument("--proxy-samples", type=_positive_int, help="keep this many top-scoring public samples")
    s.add_argument("--proxy-quantile", type=_number, help="keep this share of the pool (default: class share)")
    s.add_argument("--proxy-select", choices=["stratified", "top"],
                   help="stratified: per-component quotas (default); top: best log-likelihoods overall")
    g = s.add_mutually_exclusive_group()  # one required, except with --proxy-gmm (derive checks)
    g.add_argument("--classes", help="comma-separated class names or indices of the base model")
    g.add_argument("--subtask", help="named sub-task, e.g. H1 or fashion-mnist/H1")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--rate", type=_number, help="pruning rate alpha in (0, 1)")
    g.add_argument("--latency-ms", type=_number, help="latency budget in ms on this machine")
    s.add_argument("--metric", default="flops", help="params or flops (with --rate)")
    s.add_argument("--method", default="nuwa")
    s.add_argument("--recovery", default="finetune", help="finetune, distill, closed-form or none")
    s.add_argument("--finetune-epochs", type=int, default=5)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--options", help="YAML file of derive options (see nuwa.derive.DeriveOptions)")
    s.add_argument("--rho-depth", type=_number)
    s.add_argument("--rho-head", type=_number)
    s.add_argument("--gamma-qkv", type=_number)
    s.add_argument("--round-to", type=_positive_int)
    s.add_argument("--svd", choices=["product", "joint", "off"])
    s.add_argument("--exclude", help="adaptive dims left unpruned: any of qk,v,mlp,embed")
    s.add_argument("--taylor-microbatch", type=_positive_int)
    s.add_argument("--score-samples", type=_positive_int)
    s.add_argument("--batch-size", type=_positive_int)
    s.add_argument("--val-fraction", type=_number)
    s.add_argument("--latency-batch", type=_positive_int)
    s.add_argument("--latency-runtime", choices=["torch", "onnx"])
    s.add_argument("--ridge", type=_number, help="closed-form recovery: ridge, relative to input variance (1e-3)")
    s.add_argument("--calib-samples", type=_positive_int, help="closed-form recovery: calibration images (256)")
    s.add_argument("--distill-tau", type=_number, help="distill recovery: temperature (1.0)")
    s.add_argument("--distill-alpha", type=_number, help="distill recovery: weight of the teacher term (0.5)")
    s.add_argument("--distill-feature-weight", type=_number,
                   help="distill recovery: weight of exit class-token mimicking (0 = off)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_derive)

    s = sub.add_parser("fit-gmm", help="on the device: fit the Gaussian mixture a proxy derivation needs")
    s.add_argument("--model", required=True, help="base model directory (the same base the server has)")
    s.add_argument("--data", required=True, help="the device's own data (its training split is used)")
    s.add_argument("--classes", required=True, help="comma-separated class names the device wants")
    s.add_argument("--components", type=_positive_int, default=8, help="mixture components K")
    s.add_argument("--samples", type=_positive_int, default=2048, help="at most this many device samples")
    s.add_argument("--dims", type=_positive_int, default=16, help="feature dims (head-svd: at most #classes)")
    s.add_argument("--projection", default="head-svd", choices=["head-svd", "random", "none"])
    s.add_argument("--batch-size", type=_positive_int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="gmm.json to write (the only thing that leaves the device)")
    s.set_defaults(func=_fit_gmm)

    s = sub.add_parser("prepare", help="build the per-base caches (per-layer classifiers, embedding scores)")
    s.add_argument("--model", required=True, help="base model directory")
    s.add_argument("--data", required=True)
    s.add_argument("--options", help="YAML file of derive options")
    s.set_defaults(func=_prepare, rho_depth=None, rho_head=None, svd=None, taylor_microbatch=None,
                   score_samples=None, batch_size=None, latency_batch=None, latency_runtime=None,
                   val_fraction=None, round_to=None, gamma_qkv=None, exclude=None)

    s = sub.add_parser("finetune", help="recovery as its own step: fine-tune (or distill, refit) a derived model")
    s.add_argument("--model", required=True, help="derived (edge) model directory")
    s.add_argument("--data", required=True)
    s.add_argument("--recovery", default="finetune", help="finetune (default), distill, closed-form or none")
    s.add_argument("--base", help="distill/closed-form: the base model directory (default: the one the report names)")
    s.add_argument("--ridge", type=_number, help="closed-form: ridge, relative to input variance (1e-3)")
    s.add_argument("--calib-samples", type=_positive_int, help="closed-form: calibration images (256)")
    s.add_argument("--distill-tau", type=_number, help="distill: temperature (1.0)")
    s.add_argument("--distill-alpha", type=_number, help="distill: weight of the teacher term (0.5)")
    s.add_argument("--distill-feature-weight", type=_number, help="distill: exit class-token mimicking weight")
    s.add_argument("--epochs", type=_nonneg_int, default=5)
    s.add_argument("--limit", type=_nonneg_int, default=None, help="training samples per epoch (default all)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--options", help="YAML file of derive options (fine-tuning lr, batch size, split)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_finetune, rho_depth=None, rho_head=None, svd=None, taylor_microbatch=None,
                   score_samples=None, batch_size=None, latency_batch=None, latency_runtime=None,
                   val_fraction=None, round_to=None, gamma_qkv=None, exclude=None)

    s = sub.add_parser("eval", help="top-1 of a model directory on a data set's test split")
    s.add_argument("--model", help="model directory (with --onnx: where preprocessing and classes come from)")
    s.add_argument("--onnx", help="evaluate this exported ONNX file (any precision) instead of the PyTorch model")
    s.add_argument("--data", required=True)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--classes")
    g.add_argument("--subtask")
    s.add_argument("--split", default="test", choices=["test", "train"])
    s.add_argument("--batch-size", type=_positive_int, default=256)
    s.add_argument("--limit", type=_positive_int)
    s.set_defaults(func=_eval)

    s = sub.add_parser("bench", help="latency and throughput of a model directory")
    s.add_argument("--model", required=True)
    s.add_argument("--batch-size", default="1", help="batch size, or several comma-separated (1,64)")
    s.add_argument("--runtime", default="torch", help="torch, onnx or compile; several comma-separated")
    s.add_argument("--device", default="cpu", help="cpu or cuda (CUDA events time the GPU)")
    s.add_argument("--threads", type=_positive_int)
    s.add_argument("--warmup", type=_nonneg_int, default=5)
    s.add_argument("--repeats", type=_positive_int, default=30)
    s.set_defaults(func=_bench)

    s = sub.add_parser("info", help="per-layer sizes, params and FLOPs of a model directory")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true", help="print only the JSON line")
    s.set_defaults(func=_info)

    s = sub.add_parser("export", help="export a model directory to ONNX (fp32, fp16 or int8)")
    s.add_argument("--model", required=True)
    s.add_argument("--onnx", required=True)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--fp16", action="store_true", help="float16 weights and compute, float32 input/output")
    g.add_argument("--int8", action="store_true", help="ONNX Runtime int8 quantisation (see --int8-mode)")
    s.add_argument("--int8-mode", help="dynamic (default: faster here, no data) or static (QDQ, calibrated)")
    s.add_argument("--calib-data", help="static int8: data spec whose training split calibrates (model's classes)")
    s.add_argument("--calib-samples", type=int, help="static int8: calibration images (default 256)")
    s.set_defaults(func=_export)
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
