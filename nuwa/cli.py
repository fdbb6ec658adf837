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
    from . import io

    model = io.load(args.model)
    io.export_onnx(model, args.onnx)
    print(json.dumps(dict(onnx=str(args.onnx))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nuwa", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("info", help="per-layer sizes, params and FLOPs of a model directory")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true", help="print only the JSON line")
    s.set_defaults(func=_info)

    s = sub.add_parser("export", help="export a model directory to ONNX")
    s.add_argument("--model", required=True)
    s.add_argument("--onnx", required=True)
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
