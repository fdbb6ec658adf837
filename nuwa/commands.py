"""What each `nuwa` command does, given its parsed arguments (the parser is nuwa.cli).

derive, finetune and prepare check their arguments and options before they import the heavy
modules (torch, timm), so a bad value is refused in a fraction of a second.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from .device import Runtime, use
from .errors import NuwaError
from .options import AdaptiveOptions, DeriveOptions, check_recovery, check_request

_ADAPTIVE = frozenset(f.name for f in fields(AdaptiveOptions))


def options_from_args(args: argparse.Namespace) -> DeriveOptions:
    """The derive options of a command: its --options YAML file, then the option flags it was
    given (nuwa.cli.add_option_flags; None: not given), validated."""
    opts = DeriveOptions()
    if args.options:
        import yaml

        try:
            opts = DeriveOptions.from_dict(yaml.safe_load(open(args.options)) or {})
        except (OSError, yaml.YAMLError, TypeError) as e:
            raise NuwaError(f"--options {args.options}: {e}") from None
    for name in getattr(args, "option_flags", ()):
        value = getattr(args, name)
        if value is not None:
            setattr(opts.adaptive if name in _ADAPTIVE else opts, name, value)
    return opts.validate()


def runtime_of(args: argparse.Namespace) -> Runtime:
    """The command's `Runtime` from its --device, --amp, --deterministic and --workers flags; a
    malformed device is refused here, before torch loads (whether it exists is checked by `use`)."""
    return Runtime(device=args.device, amp=getattr(args, "amp", True),
                   deterministic=getattr(args, "deterministic", False), workers=getattr(args, "workers", None))


def run_info(args: argparse.Namespace) -> int:
    from . import cost, io

    model = io.load(args.dir)
    cfg = model.config
    if not hasattr(cfg, "layers"):  # a MobileViT: blocks, not a stack of uniform layers
        return _mobilevit_info(args, cfg)
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


def _mobilevit_info(args: argparse.Namespace, cfg) -> int:
    from .mobilevit import cost

    info = dict(family="mobilevit", task=cfg.task, num_classes=cfg.num_classes, img_size=list(cfg.img_size),
                in_chans=cfg.in_chans, transformer_layers=cfg.depth, params=cost.count_params(cfg),
                flops=cost.count_flops(cfg), blocks=cfg.block_table(), classes=cfg.classes,
                class_names=cfg.class_names)
    if not args.json:
        print(f"{args.dir}: MobileViT ({cfg.task}), {cfg.depth} transformer layers, {cfg.num_classes} classes, "
              f"{cfg.in_chans}x{cfg.img_size[0]}x{cfg.img_size[1]} input")
        print(f"params {info['params']:,} ({info['params'] / 1e6:.2f} M)")
        print(f"FLOPs  {info['flops']:,} ({info['flops'] / 1e9:.3f} G MACs)")
        for r in info["blocks"]:
            sizes = (f"mid {r['mid']}" if r["kind"] == "ir" else f"width {r['width']}, layers " + "; ".join(
                f"{l['heads']}h qk{l['qk']} v{l['v']} mlp{l['mlp']}" for l in r["layers"]))
            print(f"{r['block']:>5} {r['kind']:>4} out {r['out']:>4} stride {r['stride']}  {sizes}")
    print(json.dumps(info))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .export import DEFAULT_CALIB_SAMPLES, INT8_KERNELS, export, parse_precision

    precision, mode = parse_precision("fp16" if args.fp16 else "int8" if args.int8 else "fp32", args.int8_mode)
    samples = DEFAULT_CALIB_SAMPLES if args.calib_samples is None else args.calib_samples
    path = export(args.model, args.onnx, precision=precision, int8_mode=mode, calib=args.calib_data,
                  calib_samples=samples)
    out = dict(onnx=str(path), precision=precision if mode is None else f"int8-{mode}", bytes=path.stat().st_size)
    if mode is not None:
        out["int8_weights"] = INT8_KERNELS  # which integer kernels the file was quantised for
    print(json.dumps(out))
    return 0


def _is_mobilevit(name: str) -> bool:
    return name.split(".")[0].startswith(("mobilevit", "semobilevit"))


def run_pretrain(args: argparse.Namespace) -> int:
    runtime = runtime_of(args)
    if _is_mobilevit(args.model):
        return _pretrain_mobilevit(args, runtime)
    if args.teacher is not None:
        raise NuwaError(f"--teacher is for MobileViT bases; {args.model} trains without one")
    from .pretrain import pretrain

    with use(runtime):
        _, report = pretrain(
            args.model, args.data, out=args.out, epochs=args.epochs, img_size=args.img_size,
            in_chans=args.in_chans, embed_dim=args.embed_dim, depth=args.depth, num_heads=args.num_heads,
            patch_size=args.patch_size, lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
            seed=args.seed, checkpoint=args.checkpoint, pretrained=args.pretrained, limit=args.limit,
            augment=not args.no_augment, probe_epochs=args.probe_epochs, probe_limit=args.probe_limit,
            probe_lr=args.probe_lr,
        )
    print(json.dumps(dict(out=str(args.out), test_top1=report["test_top1"], params=report["params"])))
    return 0


def _pretrain_mobilevit(args: argparse.Namespace, runtime: Runtime) -> int:
    for flag in ("embed_dim", "depth", "num_heads", "patch_size", "in_chans", "limit", "probe_limit"):
        if getattr(args, flag) is not None:
            raise NuwaError(f"--{flag.replace('_', '-')} does not apply to MobileViT {args.model}")
    if args.pretrained or args.probe_epochs:
        raise NuwaError(f"--{'pretrained' if args.pretrained else 'probe-epochs'} does not apply to MobileViT "
                        f"{args.model} (its weights come from --checkpoint FILE or timm's initialisation)")
    from .mobilevit.base import pretrain

    with use(runtime):
        _, report = pretrain(args.model, args.data, out=args.out, epochs=args.epochs, img_size=args.img_size,
                             lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed,
                             checkpoint=args.checkpoint, teacher=args.teacher, kd_alpha=args.kd_alpha,
                             kd_tau=args.kd_tau, feature_weight=args.feature_weight, decoder_dim=args.decoder_dim)
    keys = ("task", "test_top1", "test_miou", "params", "flops")
    print(json.dumps(dict(out=str(args.out), **{k: report[k] for k in keys if k in report})))
    return 0


def run_derive(args: argparse.Namespace) -> int:
    # --public-data names the public pool of a proxy derivation; it is --data under another name.
    if args.public_data is not None and args.proxy_gmm is None:
        raise NuwaError(f"--public-data {args.public_data} needs --proxy-gmm (else use --data)")
    if args.public_data is not None and args.data is not None and args.public_data != args.data:
        raise NuwaError(f"--data {args.data} and --public-data {args.public_data} differ; give one")
    data = args.public_data if args.public_data is not None else args.data
    if data is None:
        raise NuwaError("give --data (or --public-data with --proxy-gmm)")
    opts = options_from_args(args)
    request = dict(classes=args.classes, subtask=args.subtask, rate=args.rate, metric=args.metric,
                   latency_ms=args.latency_ms, method=args.method, recovery=args.recovery)
    # The checks `derive` starts with, before torch is imported (seconds): a bad value fails at once.
    check_request(finetune_epochs=args.finetune_epochs, proxy_gmm=args.proxy_gmm, **request)
    runtime = runtime_of(args)
    from .derivation import derive

    with use(runtime):
        _, report = derive(args.model, data, finetune_epochs=args.finetune_epochs, seed=args.seed,
                           checkpoint=args.checkpoint, out=args.out, options=opts, proxy_gmm=args.proxy_gmm,
                           teacher=args.teacher, teacher_checkpoint=args.teacher_checkpoint, **request)
    keys = ("method", "rate_target", "metric", "rate_achieved", "params", "flops", "base_params", "base_flops",
            "depth", "embed_dim", "val_top1_before_recovery", "val_top1", "derive_seconds", "data_regime")
    if report.get("family") == "mobilevit":
        keys = keys[:8] + ("task", "val_top1_before_recovery", "val_top1", "val_miou_before_recovery", "val_miou",
                           "derive_seconds")
    summary = {k: report.get(k) for k in keys if k in report or report.get("family") != "mobilevit"}
    if report.get("rate_note"):  # the achieved rate is off the request: say why, on stderr too
        summary["rate_note"] = report["rate_note"]
        print(f"note: rate {report['rate_achieved']:.3f} for --rate {report['rate_target']}: {report['rate_note']}",
              file=sys.stderr)
    if report.get("proxy"):
        summary.update(proxy_precision=report["proxy"]["precision"], proxy_selected=report["proxy"]["selected"])
    print(json.dumps(dict(out=str(args.out), **summary)))
    return 0


def run_fit_gmm(args: argparse.Namespace) -> int:
    runtime = runtime_of(args)
    from .proxy import fit_device_gmm

    with use(runtime):
        doc = fit_device_gmm(args.model, args.data, classes=args.classes, out=args.out,
                             components=args.components, samples=args.samples, seed=args.seed, dims=args.dims,
                             projection=args.projection, batch_size=args.batch_size)
    print(json.dumps(dict(out=str(args.out), components=doc["components"], samples=doc["samples"],
                          dims=doc["feature"]["dims"], class_names=doc["class_names"])))
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    check_recovery(args.recovery, args.epochs)  # before torch is imported, as in run_derive
    runtime = runtime_of(args)
    from .derivation import finetune_dir

    with use(runtime):
        _, report = finetune_dir(args.model, args.data, epochs=args.epochs, seed=args.seed, out=args.out,
                                 options=opts, limit=args.limit, recovery=args.recovery, base=args.base)
    print(json.dumps(dict(out=str(args.out), recovery=args.recovery, val_top1_before=report["val_top1_before_recovery"],
                          val_top1=report["val_top1"], epochs=report["finetune_epochs"],
                          recovery_seconds=report["seconds"]["recovery"])))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise NuwaError(f"--seed {args.seed} must be >= 0")
    opts = options_from_args(args).for_seed(args.seed)
    runtime = runtime_of(args)
    from .base import prepare_base

    with use(runtime):
        print(json.dumps(prepare_base(args.model, args.data, options=opts)))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    runtime = runtime_of(args)
    from .evaluate import evaluate_dir

    if args.onnx is not None:
        from .onnx_eval import evaluate_file

        if args.per_image:
            raise NuwaError("--per-image is not available with --onnx")

        print(json.dumps(evaluate_file(args.onnx, args.data, model_dir=args.model, classes=args.classes,
                                       subtask=args.subtask, split=args.split, batch_size=args.batch_size,
                                       limit=args.limit)))
        return 0
    if args.model is None:
        raise NuwaError("one of --model DIR or --onnx FILE is required")
    from .io import read_config

    if getattr(read_config(args.model), "task", None) == "segment":
        from .mobilevit.evaluate import evaluate_dir as evaluate_segmenter_dir

        if args.per_image or args.subtask:
            raise NuwaError("--per-image and --subtask are for classifiers; a segmenter takes --classes")
        with use(runtime):
            print(json.dumps(evaluate_segmenter_dir(args.model, args.data, classes=args.classes, split=args.split,
                                                    batch_size=args.batch_size, limit=args.limit)))
        return 0
    with use(runtime):
        print(json.dumps(evaluate_dir(args.model, args.data, classes=args.classes, subtask=args.subtask,
                                      split=args.split, batch_size=args.batch_size, limit=args.limit,
                                      per_image=args.per_image)))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    runtime = runtime_of(args)
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
    device = runtime.resolve()  # a missing device fails before any loading
    model = io.load(args.model)
    rows = bench_suite(model, batch_sizes=batches, runtimes=runtimes, threads=args.threads, warmup=args.warmup,
                       repeats=args.repeats, device=device, on_error="record")
    model_info = dict(model=str(args.model), params=count_params(model.config), flops=count_flops(model.config))
    # One combination: a flat object (the design's contract); several: one row each under "results".
    print(json.dumps(dict(model_info, **rows[0]) if len(rows) == 1 else dict(model_info, results=rows)))
    return 0
