"""timm weights from an ONNX export of a Hugging Face DINOv2 backbone (`Dinov2Model`).

Some pretrained ViTs are published only inside an ONNX graph. PyTorch's exporter keeps the
names of biases, norms and embeddings (`backbone.encoder.layer.3.attention.attention.query.bias`)
but stores each linear weight as an unnamed, transposed MatMul operand (`onnx::MatMul_1966`).
The named bias that the MatMul's output flows into identifies it. This module rebuilds the
timm `vit_*_dinov2` state dict that way, and checks it against ONNX Runtime's own run of the graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import NuwaError

# Hugging Face Dinov2 layer parts -> timm Block parts.
_LINEARS = {"attention.output.dense": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
_VECTORS = {"norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias", "norm2.weight": "norm2.weight",
            "norm2.bias": "norm2.bias", "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma"}


@dataclass
class ImportedBackbone:
    """A timm-keyed state dict and what the graph says about its shape."""

    state: dict[str, torch.Tensor]
    depth: int
    embed_dim: int
    mlp_dim: int
    patch_size: int
    grid: int                      # side of the square position grid the weights were trained with
    input_size: int                # the graph's fixed input side (0: dynamic)
    prefix: str                    # the backbone's name prefix in the graph, e.g. "backbone."
    mapping: dict[str, str] = field(default_factory=dict)   # timm key -> graph tensor(s)

    def timm_kwargs(self, *, img_size: int | None = None, num_heads: int | None = None) -> dict[str, Any]:
        """Keyword arguments of `timm.create_model` for a ViT of this shape.

        DINOv2 uses 64-dim heads at every size, so `num_heads` defaults to embed_dim / 64.
        """
        return dict(img_size=img_size or self.grid * self.patch_size, patch_size=self.patch_size,
                    embed_dim=self.embed_dim, depth=self.depth, num_heads=num_heads or max(1, self.embed_dim // 64),
                    mlp_ratio=self.mlp_dim / self.embed_dim, init_values=1.0, num_classes=0)


def load_graph(source: str | Path | bytes):
    """The ONNX ModelProto of a file or of its bytes; NuwaError if it is not an ONNX model."""
    import onnx

    what = "ONNX bytes" if isinstance(source, bytes) else f"ONNX file {str(source)!r}"
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise NuwaError(f"{what}: no such file")
    try:
        return onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))
    except Exception as e:  # protobuf raises several types for a truncated or foreign file
        raise NuwaError(f"{what}: not a readable ONNX model ({type(e).__name__})") from None


def dinov2_from_onnx(graph) -> ImportedBackbone:
    """Map the initializers of a Hugging Face `Dinov2Model` export onto timm's ViT keys.

    NuwaError, naming the first missing or misshapen tensor, when the graph is not such an export.
    """
    from onnx import numpy_helper

    g = graph.graph
    inits = {t.name: t for t in g.initializer}
    prefix = _backbone_prefix(inits)

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name]).astype(np.float32, copy=False)

    def named(name: str) -> np.ndarray:
        if prefix + name not in inits:
            raise NuwaError(f"ONNX graph is not a DINOv2 backbone export: no tensor {prefix + name!r}")
        return array(prefix + name)

    consumers: dict[str, list] = {}
    producers = {o: n for n in g.node for o in n.output}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def weight_of(part: str) -> tuple[np.ndarray, str]:
        """(out x in) weight of the linear layer whose bias is `part`.bias, and its graph name."""
        if prefix + part + ".weight" in inits:  # an exporter that kept the name
            return array(prefix + part + ".weight"), prefix + part + ".weight"
        bias = prefix + part + ".bias"
        for add in consumers.get(bias, []):
            if add.op_type != "Add":
                continue
            other = [i for i in add.input if i != bias]
            mm = producers.get(other[0]) if other else None
            if mm is not None and mm.op_type == "MatMul":
                w = [i for i in mm.input if i in inits]
                if w:
                    return array(w[0]).T, w[0] + " (transposed)"
        raise NuwaError(f"ONNX graph is not a DINOv2 backbone export: no MatMul feeds {bias!r}")

    state: dict[str, torch.Tensor] = {}
    mapping: dict[str, str] = {}

    def put(key: str, value: np.ndarray, source: str) -> None:
        state[key] = torch.from_numpy(np.array(value, dtype=np.float32))  # owned, writable
        mapping[key] = source

    put("cls_token", named("embeddings.cls_token"), prefix + "embeddings.cls_token")
    put("patch_embed.proj.weight", named("embeddings.patch_embeddings.projection.weight"),
        prefix + "embeddings.patch_embeddings.projection.weight")
    put("patch_embed.proj.bias", named("embeddings.patch_embeddings.projection.bias"),
        prefix + "embeddings.patch_embeddings.projection.bias")
    dim = state["cls_token"].shape[-1]
    pos, pos_source = _position_embedding(inits, array, prefix, dim)
    put("pos_embed", pos, pos_source)
    depth = 0
    while f"{prefix}encoder.layer.{depth}.norm1.weight" in inits:
        depth += 1
    if depth == 0:
        raise NuwaError(f"ONNX graph is not a DINOv2 backbone export: no {prefix}encoder.layer.0")
    for i in range(depth):
        hf, tm = f"encoder.layer.{i}.", f"blocks.{i}."
        ws, names = zip(*(weight_of(hf + part) for part in _QKV))
        put(tm + "attn.qkv.weight", np.concatenate(ws), " | ".join(names))
        put(tm + "attn.qkv.bias", np.concatenate([named(hf + p + ".bias") for p in _QKV]),
            " | ".join(prefix + hf + p + ".bias" for p in _QKV))
        for hf_part, tm_part in _LINEARS.items():
            w, name = weight_of(hf + hf_part)
            put(tm + tm_part + ".weight", w, name)
            put(tm + tm_part + ".bias", named(hf + hf_part + ".bias"), prefix + hf + hf_part + ".bias")
        for hf_part, tm_part in _VECTORS.items():
            put(tm + tm_part, named(hf + hf_part), prefix + hf + hf_part)
    put("norm.weight", named("layernorm.weight"), prefix + "layernorm.weight")
    put("norm.bias", named("layernorm.bias"), prefix + "layernorm.bias")
    _check_shapes(state, depth, dim)
    patch = state["patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    dims = g.input[0].type.tensor_type.shape.dim if g.input else []
    side = dims[-1].dim_value if len(dims) == 4 else 0
    return ImportedBackbone(state=state, depth=depth, embed_dim=dim, mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0],
                            patch_size=patch, grid=grid, input_size=int(side), prefix=prefix, mapping=mapping)


def _backbone_prefix(inits: dict) -> str:
    hits = [n[: -len("embeddings.cls_token")] for n in inits if n.endswith("embeddings.cls_token")]
    if len(hits) != 1:
        raise NuwaError("ONNX graph is not a DINOv2 backbone export: "
                        f"{'no' if not hits else 'more than one'} tensor named '*embeddings.cls_token'")
    return hits[0]


def _position_embedding(inits: dict, array, prefix: str, dim: int) -> tuple[np.ndarray, str]:
    """[1, 1 + grid^2, dim]: the named parameter, or the class/patch parts the exporter split it into.

    An export that interpolates the position grid for its input size constant-folds the slices
    pos[:, :1] and pos[:, 1:] into two unnamed tensors; they are the only unnamed [1, 1, dim] and
    [1, n, dim] tensors with n a square.
    """
    name = prefix + "embeddings.position_embeddings"
    if name in inits:
        return array(name), name
    cls_part = [n for n, t in inits.items() if n.startswith("onnx::") and list(t.dims) == [1, 1, dim]]
    patch_part = [n for n, t in inits.items() if n.startswith("onnx::") and len(t.dims) == 3 and t.dims[0] == 1
                  and t.dims[2] == dim and t.dims[1] > 1 and math.isqrt(t.dims[1]) ** 2 == t.dims[1]]
    if len(cls_part) != 1 or len(patch_part) != 1:
        raise NuwaError("ONNX graph is not a DINOv2 backbone export: cannot identify its position embedding "
                        f"({len(cls_part)} class-token and {len(patch_part)} patch-grid candidates)")
    return np.concatenate([array(cls_part[0]), array(patch_part[0])], axis=1), f"{cls_part[0]} + {patch_part[0]}"


def _check_shapes(state: dict[str, torch.Tensor], depth: int, dim: int) -> None:
    mlp = state["blocks.0.mlp.fc1.weight"].shape[0]
    want = {"blocks.{i}.attn.qkv.weight": (3 * dim, dim), "blocks.{i}.attn.proj.weight": (dim, dim),
            "blocks.{i}.mlp.fc1.weight": (mlp, dim), "blocks.{i}.mlp.fc2.weight": (dim, mlp),
            "blocks.{i}.ls1.gamma": (dim,), "blocks.{i}.norm1.weight": (dim,)}
    for i in range(depth):
        for pattern, shape in want.items():
            key = pattern.format(i=i)
            if tuple(state[key].shape) != shape:
                raise NuwaError(f"ONNX graph is not a DINOv2 backbone export: {key} has shape "
                                f"{tuple(state[key].shape)}, expected {shape}")


def build_timm(backbone: ImportedBackbone, *, img_size: int, num_heads: int | None = None):
    """The timm ViT (no classifier) at `img_size`, its position grid resampled as Hugging Face does
    (bicubic, no antialiasing), so that it reproduces the graph at the graph's own input size."""
    import timm
    import torch.nn.functional as F

    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False,
                              **backbone.timm_kwargs(img_size=img_size, num_heads=num_heads))
    state = dict(backbone.state)
    grid = img_size // backbone.patch_size
    if grid != backbone.grid:
        pos = state["pos_embed"]
        patch = pos[:, 1:].reshape(1, backbone.grid, backbone.grid, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=(grid, grid), mode="bicubic", align_corners=False, antialias=False)
        state["pos_embed"] = torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise NuwaError(f"imported weights do not fit timm's ViT: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()


@torch.no_grad()
def verify(graph, backbone: ImportedBackbone, images: np.ndarray, *, num_heads: int | None = None) -> float:
    """Largest absolute difference between the timm model's final-norm tokens and the graph's
    last backbone hidden state (the output of its final LayerNorm), on `images` (N, 3, S, S),
    already normalised, at the graph's input size S."""
    import onnx
    import onnxruntime as ort

    bias = backbone.prefix + "layernorm.bias"
    adds = [n for n in graph.graph.node if n.op_type == "Add" and bias in n.input]
    if len(adds) != 1:
        raise NuwaError(f"ONNX graph: cannot find the final LayerNorm's output (the Add of {bias!r})")
    hidden = adds[0].output[0]
    probe = onnx.ModelProto()
    probe.CopyFrom(graph)
    del probe.graph.output[:]
    probe.graph.output.append(onnx.helper.make_tensor_value_info(hidden, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {graph.graph.input[0].name: images.astype(np.float32)}
    want = session.run([hidden], feed)[0]
    model = build_timm(backbone, img_size=images.shape[-1], num_heads=num_heads)
    got = model.forward_features(torch.from_numpy(images.astype(np.float32))).numpy()
    if got.shape != want.shape:
        raise NuwaError(f"timm model gives tokens of shape {got.shape}, the graph {want.shape}")
    return float(np.abs(got - want).max())
