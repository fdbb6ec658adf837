"""`EdgeViTConfig`: the seven structural dimensions of a (possibly pruned) ViT.

A base ViT is the special case where every layer has the same sizes. After pruning, depth,
classifier size and embedding size are global; heads, query-key size, value size and MLP
width are per layer. Query-key and value sizes are *per head*, and the same for all heads
of a layer (the paper's rule: an MHA is as slow as its widest head).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from .errors import NuwaError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


POOLS = ("token", "avg")


@dataclass
class LayerConfig:
    """Sizes of one transformer block."""

    num_heads: int
    qk_dim: int  # per head
    v_dim: int  # per head
    mlp_dim: int
    # Softmax scale. None means qk_dim ** -0.5. SVD pruning of the query-key size keeps the
    # base model's scale, which is the paper's sqrt(q'/q) factor on W_Q made explicit.
    attn_scale: float | None = None

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else self.qk_dim ** -0.5

    @property
    def q_width(self) -> int:
        """Total query (= key) width q_l of the layer, the paper's q."""
        return self.num_heads * self.qk_dim

    @property
    def v_width(self) -> int:
        """Total value width v_l of the layer, the paper's v."""
        return self.num_heads * self.v_dim


@dataclass
class EdgeViTConfig:
    """Everything needed to build an `EdgeViT` and to feed it images.

    `classes` maps output logits to the base model's class indices (None: identity),
    `class_names` names the outputs, `embed_index` records which base embedding dims were
    kept (provenance only; the forward pass never needs it).

    The token and norm layout follows timm's `VisionTransformer` arguments of the same names;
    the defaults are the original ViT/DeiT (a class token, position embedding on every token,
    no extra norms) and are left out of `to_dict`, so configs written before these fields
    existed read and write the same bytes. Prefix tokens come in the order class, distillation,
    registers, then the patches.
    """

    layers: list[LayerConfig]
    embed_dim: int = 192
    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    qkv_bias: bool = True
    proj_bias: bool = True
    norm_eps: float = 1e-6
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    classes: list[int] | None = None
    class_names: list[str] | None = None
    embed_index: list[int] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    # ---- model family (timm names); defaults: the plain class-token ViT ----
    class_token: bool = True
    dist_token: bool = False  # DeiT's distillation token
    head_dist: bool = False  # its classifier: logits = (head(cls) + head_dist(dist)) / 2
    reg_tokens: int = 0  # registers (DINOv2-reg): attended to, never read out
    no_embed_class: bool = False  # position embedding on the patches only (DeiT-III, FlexiViT)
    patch_bias: bool = True
    patch_norm: bool = False  # LayerNorm on the patch embeddings
    pre_norm: bool = False  # LayerNorm before the first block (CLIP)
    global_pool: str = "token"  # "token" (class token) or "avg" (mean of the patch tokens)

    def __post_init__(self) -> None:
        self.layers = [l if isinstance(l, LayerConfig) else LayerConfig(**l) for l in self.layers]
        size = self.img_size
        self.img_size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)

    # ---- derived sizes -------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    @property
    def num_prefix_tokens(self) -> int:
        """Class, distillation and register tokens, ahead of the patches."""
        return int(self.class_token) + int(self.dist_token) + self.reg_tokens

    @property
    def num_tokens(self) -> int:
        """Tokens the blocks see, patches plus prefix tokens: the paper's N."""
        return self.num_patches + self.num_prefix_tokens

    @property
    def pos_embed_len(self) -> int:
        return self.num_patches if self.no_embed_class else self.num_tokens

    @property
    def num_heads_out(self) -> int:
        """Classifiers whose logits are averaged: 2 with a distillation head."""
        return 1 + int(self.head_dist)

    # ---- constructors ----------------------------------------------------------------
    @classmethod
    def uniform(
        cls,
        *,
        depth: int = 12,
        embed_dim: int = 192,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        **kwargs: Any,
    ) -> "EdgeViTConfig":
        """A base-shaped config: every layer alike, head dim = embed_dim / num_heads."""
        if num_heads <= 0 or embed_dim % num_heads:
            raise NuwaError(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
        hd = embed_dim // num_heads
        layer = dict(num_heads=num_heads, qk_dim=hd, v_dim=hd, mlp_dim=int(embed_dim * mlp_ratio))
        return cls(layers=[LayerConfig(**layer) for _ in range(depth)], embed_dim=embed_dim, **kwargs)

    # ---- validation --------------------------------------------------------------------
    def validate(self) -> "EdgeViTConfig":
        """Raise `NuwaError` naming the first inconsistent size."""
        def positive(name: str, value: Any) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise NuwaError(f"config: {name}={value!r} must be a positive integer")

        positive("embed_dim", self.embed_dim)
        positive("patch_size", self.patch_size)
        positive("in_chans", self.in_chans)
        positive("num_classes", self.num_classes)
        if self.depth < 1:
            raise NuwaError("config: layers is empty; a ViT needs at least one block")
        for h, w in [self.img_size]:
            positive("img_size", h)
            positive("img_size", w)
            if h % self.patch_size or w % self.patch_size:
                raise NuwaError(
                    f"config: img_size={list(self.img_size)} is not divisible by patch_size={self.patch_size}"
                )
        for i, layer in enumerate(self.layers):
            for f in ("num_heads", "qk_dim", "v_dim", "mlp_dim"):
                positive(f"layers[{i}].{f}", getattr(layer, f))
            if layer.attn_scale is not None and not (math.isfinite(layer.attn_scale) and layer.attn_scale > 0):
                raise NuwaError(f"config: layers[{i}].attn_scale={layer.attn_scale!r} must be a positive number")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise NuwaError(
                f"config: mean/std have {len(self.mean)}/{len(self.std)} entries but in_chans={self.in_chans}"
            )
        if any(s <= 0 for s in self.std):
            raise NuwaError(f"config: std={list(self.std)} must be positive")
        if self.classes is not None:
            if len(self.classes) != self.num_classes:
                raise NuwaError(
                    f"config: classes has {len(self.classes)} entries but num_classes={self.num_classes}"
                )
            if len(set(self.classes)) != len(self.classes) or any(c < 0 for c in self.classes):
                raise NuwaError(f"config: classes={self.classes} must be distinct non-negative indices")
        self._validate_family()
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise NuwaError(
                f"config: class_names has {len(self.class_names)} entries but num_classes={self.num_classes}"
            )
        if self.embed_index is not None:
            if len(self.embed_index) != self.embed_dim:
                raise NuwaError(
                    f"config: embed_index has {len(self.embed_index)} entries but embed_dim={self.embed_dim}"
                )
            if len(set(self.embed_index)) != len(self.embed_index) or any(i < 0 for i in self.embed_index):
                raise NuwaError("config: embed_index must hold distinct non-negative indices")
        return self

    def _validate_family(self) -> None:
        for name in FAMILY_FIELDS:
            value, default = getattr(self, name), FAMILY_FIELDS[name]
            if type(value) is not type(default):
                raise NuwaError(f"config: {name}={value!r} must be a {type(default).__name__}")
        if self.reg_tokens < 0:
            raise NuwaError(f"config: reg_tokens={self.reg_tokens} must be >= 0")
        if self.global_pool not in POOLS:
            raise NuwaError(f"config: global_pool={self.global_pool!r} must be one of {list(POOLS)}")
        if self.global_pool == "token" and not self.class_token:
            raise NuwaError("config: global_pool='token' needs class_token")
        if self.dist_token and not self.class_token:
            raise NuwaError("config: dist_token needs class_token")
        if self.head_dist and not (self.dist_token and self.global_pool == "token"):
            raise NuwaError("config: head_dist needs dist_token and global_pool='token'")

    # ---- serialisation -------------------------------------------------------------------
    @property
    def family(self) -> dict[str, Any]:
        """The family fields that differ from the plain class-token ViT (empty for one)."""
        return {n: getattr(self, n) for n, default in FAMILY_FIELDS.items() if getattr(self, n) != default}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        # Defaults left out: a plain ViT's config.json keeps its bytes (and its DVC hash).
        for name, default in FAMILY_FIELDS.items():
            if d[name] == default and type(d[name]) is type(default):
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EdgeViTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise NuwaError(f"config: unknown key(s) {unknown}")
        if "layers" not in d:
            raise NuwaError("config: missing key 'layers'")
        layer_keys = {f.name for f in fields(LayerConfig)}
        for i, layer in enumerate(d["layers"]):
            if not isinstance(layer, dict) or set(layer) - layer_keys or not {"num_heads", "qk_dim", "v_dim", "mlp_dim"} <= set(layer):
                raise NuwaError(f"config: layers[{i}]={layer!r} needs num_heads, qk_dim, v_dim, mlp_dim")
        try:
            cfg = cls(**d)
        except (TypeError, ValueError) as e:
            raise NuwaError(f"config: {e}") from None
        return cfg.validate()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EdgeViTConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise NuwaError(f"config: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise NuwaError("config: JSON top level must be an object")
        return cls.from_dict(d)

    @classmethod
    def read(cls, path: str | Path) -> "EdgeViTConfig":
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise NuwaError(f"{path}: no such file") from None
        except OSError as e:
            raise NuwaError(f"{path}: cannot read ({e.strerror})") from None
        try:
            return cls.from_json(text)
        except NuwaError as e:
            raise NuwaError(f"{path}: {e}") from None

    # ---- per-layer summary -------------------------------------------------------------------
    def layer_table(self) -> list[dict[str, Any]]:
        return [
            dict(layer=i, heads=l.num_heads, qk_per_head=l.qk_dim, v_per_head=l.v_dim,
                 q=l.q_width, v=l.v_width, mlp=l.mlp_dim)
            for i, l in enumerate(self.layers)
        ]

    def with_layers(self, layers: Sequence[LayerConfig], **changes: Any) -> "EdgeViTConfig":
        d = self.to_dict()
        d["layers"] = [asdict(l) for l in layers]
        d.update(changes)
        return EdgeViTConfig(**d)


# The model-family fields and their defaults (the plain class-token ViT).
FAMILY_FIELDS: dict[str, Any] = {
    f.name: f.default for f in fields(EdgeViTConfig)
    if f.name in ("class_token", "dist_token", "head_dist", "reg_tokens", "no_embed_class", "patch_bias",
                  "patch_norm", "pre_norm", "global_pool")
}
