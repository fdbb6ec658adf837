"""Parameter and FLOP counts: exact counters and the paper's closed forms (Appendix A.2).

Conventions. "FLOPs" here follows the ViT literature and the paper: one multiply-accumulate
counts once (DeiT-Tiny "1.3 GFLOPs" is 1.3 G MACs). `measure_flops` runs PyTorch's
`FlopCounterMode` (which counts 2 per MAC) and halves it.

What each function counts:

* `count_params` -- every parameter, biases included (exact: equals `sum(p.numel())`).
* `params_eq7` -- the paper's Eq. 7. It omits all biases: qkv (2q+v), attention output (d),
  MLP (e + d) per layer, the patch projection (d) and the classifier (C).
  ``count_params == params_eq7 + bias_params``.
* `count_flops` -- matrix multiplies only: patch projection, qkv/proj/MLP linears, the two
  attention products (N^2 q and N^2 v) and the classifier on the pooled token. Equals
  `measure_flops` exactly. Biases, LayerNorm, softmax, GELU, pooling and residual adds are not
  counted.
* `flops_eq8` -- the paper's Eq. 8. It adds LayerNorm as 2Nd per block and d for the
  classifier norm: ``flops_eq8 == count_flops + 2*N*d*L + d``. Like `count_flops` it ignores
  softmax, GELU, biases and residual adds.

Other timm families (see `EdgeViTConfig`): N counts every token the blocks see (class,
distillation and register tokens, patches), the patch projection runs on the patches only,
and the extra tensors are counted where the paper's forms count their plain-ViT kin: extra
tokens with the class token, a distillation head with the classifier, the pre-norm and
patch-embedding norms with the other LayerNorms (Eq. 8: Nd for the pre-norm, (N - prefix)d for
the patch norm, d per classifier norm). For a plain ViT every form is the paper's.
"""
from __future__ import annotations

import torch
from torch import nn

from .arch import EdgeViTConfig


def _config(x: EdgeViTConfig | nn.Module) -> EdgeViTConfig:
    if isinstance(x, EdgeViTConfig):
        return x
    cfg = getattr(x, "config", None)
    if not isinstance(cfg, EdgeViTConfig):
        raise TypeError(f"expected an EdgeViTConfig or EdgeViT, got {type(x).__name__}")
    return cfg


def params_eq7(cfg: EdgeViTConfig) -> int:
    """Eq. 7: [c p^2 + N + 2 sum(q_l + v_l + e_l) + 4L + C + 3] d, with N tokens incl. class."""
    d, p, L, C = cfg.embed_dim, cfg.patch_size, cfg.depth, cfg.num_classes
    widths = sum(l.q_width + l.v_width + l.mlp_dim for l in cfg.layers)
    # The plain ViT's "+ 3": the class token and the final norm's weight and bias.
    extra = cfg.num_prefix_tokens + 2 + 2 * int(cfg.pre_norm) + 2 * int(cfg.patch_norm)
    return (cfg.in_chans * p * p + cfg.pos_embed_len + 2 * widths + 4 * L + C * cfg.num_heads_out + extra) * d


def bias_params(cfg: EdgeViTConfig) -> int:
    """The bias parameters Eq. 7 leaves out."""
    d = cfg.embed_dim
    per_layer = sum(
        (2 * l.q_width + l.v_width if cfg.qkv_bias else 0) + ((d + l.mlp_dim + d) if cfg.proj_bias else 0)
        for l in cfg.layers
    )
    # + patch projection bias + classifier bias(es)
    return per_layer + d * int(cfg.patch_bias) + cfg.num_classes * cfg.num_heads_out


def _mobilevit(x):
    """The MobileViT config of `x` (a config or a model), or None: its counts are nuwa.mobilevit.cost's."""
    cfg = getattr(x, "config", x)
    return cfg if hasattr(cfg, "stages") else None


def count_params(x: EdgeViTConfig | nn.Module) -> int:
    """Exact parameter count of a model, or of the model a config describes (EdgeViT or MobileViT)."""
    if isinstance(x, nn.Module):
        return sum(p.numel() for p in x.parameters())
    if _mobilevit(x) is not None:
        from .mobilevit.cost import count_params as mobilevit_params

        return mobilevit_params(x)
    return params_of_sizes(x, x.embed_dim, [(l.num_heads, l.qk_dim, l.v_dim, l.mlp_dim) for l in x.layers])


def flops_eq8(cfg: EdgeViTConfig) -> int:
    """Eq. 8: [c(N-1)p^2 + 2LN + C + 1] d + (2Nd + N^2) sum(q_l+v_l) + 2Nd sum(e_l)."""
    d, p, N, P, L, C = cfg.embed_dim, cfg.patch_size, cfg.num_tokens, cfg.num_patches, cfg.depth, cfg.num_classes
    qv = sum(l.q_width + l.v_width for l in cfg.layers)
    e = sum(l.mlp_dim for l in cfg.layers)
    heads = cfg.num_heads_out
    norms = 2 * L * N + heads + N * int(cfg.pre_norm) + P * int(cfg.patch_norm)
    return (cfg.in_chans * P * p * p + norms + C * heads) * d + (2 * N * d + N * N) * qv + 2 * N * d * e


def count_flops(x: EdgeViTConfig | nn.Module) -> int:
    """Multiply-accumulates of one image's forward pass (matrix products only, see module doc)."""
    if _mobilevit(x) is not None:
        from .mobilevit.cost import count_flops as mobilevit_flops

        return mobilevit_flops(_mobilevit(x))
    cfg = _config(x)
    return flops_of_sizes(cfg, cfg.embed_dim, [(l.num_heads, l.qk_dim, l.v_dim, l.mlp_dim) for l in cfg.layers])


def flops_of_sizes(cfg: EdgeViTConfig, d, layers):
    """`count_flops` from sizes that may be tensors (soft sizes of learnable masks, X-Pruner):
    embed dim `d` and per layer (heads, qk per head, v per head, mlp width). Patch size, tokens,
    channels and classes come from `cfg`."""
    p, N = cfg.patch_size, cfg.num_tokens
    total = cfg.in_chans * cfg.num_patches * p * p * d + cfg.num_heads_out * cfg.num_classes * d
    for heads, dq, dv, e in layers:
        q, v = heads * dq, heads * dv
        total = total + N * d * (2 * q + v) + N * v * d  # qkv and output projections
        total = total + N * N * (q + v)  # Q K^T and attn V
        total = total + 2 * N * d * e  # MLP
    return total


def params_of_sizes(cfg: EdgeViTConfig, d, layers):
    """`count_params` from (possibly soft) sizes, biases included as `cfg` says."""
    qb, pb = int(cfg.qkv_bias), int(cfg.proj_bias)
    total = (cfg.in_chans * cfg.patch_size ** 2 + int(cfg.patch_bias)) * d  # patch projection
    total = total + (cfg.num_prefix_tokens + cfg.pos_embed_len) * d  # tokens and position embedding
    total = total + 2 * d * (1 + int(cfg.pre_norm) + int(cfg.patch_norm))  # final, pre- and patch norms
    total = total + (d + 1) * cfg.num_classes * cfg.num_heads_out
    for heads, dq, dv, e in layers:
        q, v = heads * dq, heads * dv
        total = total + (d + qb) * (2 * q + v) + (v + pb) * d + (d + pb) * e + (e + pb) * d + 4 * d
    return total


@torch.no_grad()
def measure_flops(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> int:
    """MACs of one forward pass at batch 1, counted by `torch.utils.flop_counter`.

    The math SDPA backend is forced because the fused CPU kernel is invisible to the counter.
    Works for timm models too (pass `input_shape`).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    if input_shape is None:
        cfg = getattr(model, "config", None)  # EdgeViT or EdgeMobileViT: both know their input
        if cfg is None:
            raise TypeError(f"{type(model).__name__} has no config: pass input_shape")
        input_shape = (1, cfg.in_chans, *cfg.img_size)
    param = next(model.parameters())
    x = torch.zeros(input_shape, dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def cost_of_sizes(cfg: EdgeViTConfig, d, layers, metric: str):
    return params_of_sizes(cfg, d, layers) if metric == "params" else flops_of_sizes(cfg, d, layers)


def cost(x: EdgeViTConfig | nn.Module, metric: str) -> int:
    """The pruning budget's measure: 'params' (exact count) or 'flops' (MACs)."""
    if metric == "params":
        return count_params(_mobilevit(x) or _config(x))
    if metric == "flops":
        return count_flops(x)
    raise ValueError(f"unknown cost metric {metric!r}; expected 'params' or 'flops'")
