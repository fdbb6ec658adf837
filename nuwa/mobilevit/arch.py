"""`MobileViTConfig`: the sizes of a (possibly pruned) MobileViT, block by block.

MobileViT (timm's `mobilevit_xxs/xs/s`) is a MobileNetV2 backbone in which the last three
stages each end in a MobileViT block: a local 3x3 convolution, a 1x1 projection to the
block's transformer width, transformer layers over unfolded 2x2 patches, a 1x1 projection
back and a 3x3 fusion with the block's input. What pruning can cut:

* per transformer layer: heads, query-key and value size per head, MLP width (`LayerConfig`,
  shared with `EdgeViTConfig`);
* per MobileViT block: the transformer width (`width`), the block's own "embedding";
* per inverted residual: the expanded channels (`mid_chs`), which no residual path reads.

Stage output channels stay: they feed residual adds, the fusion concat and the decoder.
Depth in NuWa's sense (an early exit after layer l on a class token) does not exist here;
transformer layers inside a block can still be removed (`layers` may shrink).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..arch import LayerConfig
from ..errors import NuwaError

FAMILY = "mobilevit"
TASKS = ("classify", "segment")


@dataclass
class BlockConfig:
    """One block: an inverted residual (`kind="ir"`) or a MobileViT block (`kind="mvit"`)."""

    kind: str
    out_chs: int
    stride: int = 1
    mid_chs: int = 0  # ir: expanded channels
    width: int = 0  # mvit: transformer width
    layers: list[LayerConfig] = field(default_factory=list)  # mvit: transformer layers
    patch_size: int = 2  # mvit: unfolding patch (ph = pw)

    def __post_init__(self) -> None:
        self.layers = [l if isinstance(l, LayerConfig) else LayerConfig(**l) for l in self.layers]

    def to_dict(self) -> dict[str, Any]:
        d = dict(kind=self.kind, out_chs=self.out_chs, stride=self.stride)
        if self.kind == "ir":
            d["mid_chs"] = self.mid_chs
        else:
            d.update(width=self.width, patch_size=self.patch_size,
                     layers=[{k: v for k, v in asdict(l).items() if v is not None} for l in self.layers])
        return d


@dataclass
class MobileViTConfig:
    """Everything needed to build an `EdgeMobileViT` and to feed it images.

    `task` is "classify" (global pool + linear classifier, timm's head) or "segment" (a
    light FPN decoder over the stage outputs at strides 4, 8, 16 and 32; `decoder_dim`
    channels; per-pixel logits at the input size). For segmentation, output 0 is the
    background. `classes` maps outputs to the base model's outputs (None: identity).
    """

    stages: list[list[BlockConfig]]
    stem_chs: int = 16
    final_chs: int = 320
    img_size: tuple[int, int] = (256, 256)
    in_chans: int = 3
    num_classes: int = 1000
    norm_eps: float = 1e-5  # LayerNorm and BatchNorm, as timm's MobileViT
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    task: str = "classify"
    decoder_dim: int = 64
    classes: list[int] | None = None
    class_names: list[str] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stages = [[b if isinstance(b, BlockConfig) else BlockConfig(**b) for b in s] for s in self.stages]
        size = self.img_size
        self.img_size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)

    # ---- derived -----------------------------------------------------------------------
    @property
    def blocks(self) -> list[tuple[int, int, BlockConfig]]:
        """(stage, index, block) for every block, in order."""
        return [(s, i, b) for s, stage in enumerate(self.stages) for i, b in enumerate(stage)]

    @property
    def mvit_blocks(self) -> list[tuple[int, int, BlockConfig]]:
        return [t for t in self.blocks if t[2].kind == "mvit"]

    @property
    def stage_chs(self) -> list[int]:
        return [stage[-1].out_chs for stage in self.stages]

    @property
    def pyramid_chs(self) -> list[int]:
        """Channels of the decoder's inputs: stages 1-3 (strides 4, 8, 16) and the final conv (32)."""
        return [*self.stage_chs[1:4], self.final_chs]

    @property
    def depth(self) -> int:
        """Transformer layers in all MobileViT blocks."""
        return sum(len(b.layers) for _, _, b in self.mvit_blocks)

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> "MobileViTConfig":
        def positive(name: str, value: Any) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise NuwaError(f"config: {name}={value!r} must be a positive integer")

        for name in ("stem_chs", "final_chs", "in_chans", "num_classes", "decoder_dim"):
            positive(name, getattr(self, name))
        for v in self.img_size:
            positive("img_size", v)
        if self.task not in TASKS:
            raise NuwaError(f"config: task={self.task!r} must be one of {list(TASKS)}")
        if len(self.stages) != 5:
            raise NuwaError(f"config: stages has {len(self.stages)} entries; MobileViT has 5")
        for s, i, b in self.blocks:
            where = f"stages[{s}][{i}]"
            if b.kind not in ("ir", "mvit"):
                raise NuwaError(f"config: {where}.kind={b.kind!r} must be 'ir' or 'mvit'")
            positive(f"{where}.out_chs", b.out_chs)
            positive(f"{where}.stride", b.stride)
            if b.kind == "ir":
                positive(f"{where}.mid_chs", b.mid_chs)
            else:
                positive(f"{where}.width", b.width)
                positive(f"{where}.patch_size", b.patch_size)
                for j, l in enumerate(b.layers):
                    for f in ("num_heads", "qk_dim", "v_dim", "mlp_dim"):
                        positive(f"{where}.layers[{j}].{f}", getattr(l, f))
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise NuwaError(f"config: mean/std have {len(self.mean)}/{len(self.std)} entries but in_chans={self.in_chans}")
        for name in ("classes", "class_names"):
            v = getattr(self, name)
            if v is not None and len(v) != self.num_classes:
                raise NuwaError(f"config: {name} has {len(v)} entries but num_classes={self.num_classes}")
        return self

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stages"}
        d.update(family=FAMILY, img_size=list(self.img_size), mean=list(self.mean), std=list(self.std),
                 stages=[[b.to_dict() for b in s] for s in self.stages])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MobileViTConfig":
        d = dict(d)
        if d.pop("family", None) != FAMILY:
            raise NuwaError(f"config: family must be {FAMILY!r}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise NuwaError(f"config: unknown key(s) {unknown}")
        try:
            return cls(**d).validate()
        except (TypeError, ValueError) as e:
            raise NuwaError(f"config: {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def read(cls, path: str | Path) -> "MobileViTConfig":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise NuwaError(f"{path}: cannot read ({e})") from None
        except NuwaError as e:
            raise NuwaError(f"{path}: {e}") from None

    def block_table(self) -> list[dict[str, Any]]:
        """One row per block: its kind, channels and, for MobileViT blocks, per-layer sizes."""
        rows = []
        for s, i, b in self.blocks:
            row: dict[str, Any] = dict(block=f"{s}.{i}", kind=b.kind, out=b.out_chs, stride=b.stride)
            if b.kind == "ir":
                row["mid"] = b.mid_chs
            else:
                row["width"] = b.width
                row["layers"] = [dict(heads=l.num_heads, qk=l.qk_dim, v=l.v_dim, mlp=l.mlp_dim) for l in b.layers]
            rows.append(row)
        return rows
