"""Parameter and FLOP counts of an `EdgeMobileViT`, from its config alone.

Conventions as `nuwa.cost`: FLOPs are multiply-accumulates of convolutions, linears and the two
attention products, which is what `nuwa.cost.measure_flops` counts (and halves); BatchNorm,
LayerNorm, activations, interpolation, pooling and residual adds are not counted. Params are
every trainable tensor (BatchNorm running statistics are buffers, not parameters).
"""
from __future__ import annotations

import math

from .arch import MobileViTConfig


def _out(h: int, k: int, s: int) -> int:
    return (h + 2 * (k // 2) - k) // s + 1


def _conv_bn(cin: int, cout: int, k: int = 1, groups: int = 1) -> int:
    return cout * (cin // groups) * k * k + 2 * cout


def _layer_params(d: int, l) -> int:
    q, v, e = l.num_heads * l.qk_dim, l.num_heads * l.v_dim, l.mlp_dim
    return 4 * d + (d + 1) * (2 * q + v) + (v + 1) * d + (d + 1) * e + (e + 1) * d


def count_params(cfg: MobileViTConfig) -> int:
    total = _conv_bn(cfg.in_chans, cfg.stem_chs, 3)
    chs = cfg.stem_chs
    for _, _, b in cfg.blocks:
        if b.kind == "ir":
            total += _conv_bn(chs, b.mid_chs) + _conv_bn(b.mid_chs, b.mid_chs, 3, b.mid_chs) + _conv_bn(b.mid_chs, b.out_chs)
        else:
            total += _conv_bn(chs, chs, 3) + chs * b.width + sum(_layer_params(b.width, l) for l in b.layers)
            total += 2 * b.width + _conv_bn(b.width, b.out_chs) + _conv_bn(chs + b.out_chs, b.out_chs, 3)
        chs = b.out_chs
    total += _conv_bn(chs, cfg.final_chs)
    if cfg.task == "classify":
        return total + (cfg.final_chs + 1) * cfg.num_classes
    dim = cfg.decoder_dim
    total += sum(_conv_bn(c, dim) for c in cfg.pyramid_chs) + _conv_bn(dim * len(cfg.pyramid_chs), dim, 3)
    return total + (dim + 1) * cfg.num_classes


def count_flops(cfg: MobileViTConfig) -> int:
    """MACs of one forward pass at batch 1; equals `nuwa.cost.measure_flops` on the model."""
    h, w = _out(cfg.img_size[0], 3, 2), _out(cfg.img_size[1], 3, 2)
    total = h * w * cfg.stem_chs * cfg.in_chans * 9
    chs = cfg.stem_chs
    sizes = []  # (h, w) after each stage
    for stage in cfg.stages:
        for b in stage:
            if b.kind == "ir":
                total += h * w * chs * b.mid_chs
                h, w = _out(h, 3, b.stride), _out(w, 3, b.stride)
                total += h * w * b.mid_chs * 9 + h * w * b.mid_chs * b.out_chs
            else:
                h2, w2 = _out(h, 3, b.stride), _out(w, 3, b.stride)
                total += h2 * w2 * chs * chs * 9 + h2 * w2 * chs * b.width
                p = b.patch_size
                hp, wp = math.ceil(h2 / p) * p, math.ceil(w2 / p) * p
                tokens, n = hp * wp, (hp // p) * (wp // p)  # p*p sequences of n patches
                for l in b.layers:
                    q, v, e = l.num_heads * l.qk_dim, l.num_heads * l.v_dim, l.mlp_dim
                    total += tokens * (b.width * (2 * q + v) + v * b.width + 2 * b.width * e) + tokens * n * (q + v)
                total += h2 * w2 * (b.width * b.out_chs + (chs + b.out_chs) * b.out_chs * 9)
                h, w = h2, w2
            chs = b.out_chs
        sizes.append((h, w))
    total += h * w * chs * cfg.final_chs
    if cfg.task == "classify":
        return total + cfg.final_chs * cfg.num_classes
    dim = cfg.decoder_dim
    levels = [*sizes[1:4], sizes[4]]
    total += sum(hh * ww * c * dim for (hh, ww), c in zip(levels, cfg.pyramid_chs))
    h0, w0 = levels[0]
    return total + h0 * w0 * (dim * len(levels) * dim * 9 + dim * cfg.num_classes)


def cost(cfg: MobileViTConfig, metric: str) -> int:
    if metric == "params":
        return count_params(cfg)
    if metric == "flops":
        return count_flops(cfg)
    raise ValueError(f"unknown cost metric {metric!r}; expected 'params' or 'flops'")
