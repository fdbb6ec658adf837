"""nuwa: derive small, fast, task-specific ViTs from one pretrained ViT (NuWa, arXiv 2504.03118).

The flat public API::

    import nuwa
    base = nuwa.from_timm(nuwa.create_base("deit_tiny_patch16_224", checkpoint="deit.pth"))
    nuwa.save(base, "models/base"); model = nuwa.load("models/base")
    nuwa.count_params(model), nuwa.count_flops(model)
"""
from .arch import EdgeViTConfig, LayerConfig
from .convert import create_base, from_timm
from . import bench, cost
from .cost import bias_params, count_flops, count_params, flops_eq8, measure_flops, params_eq7
from .errors import NuwaError
from .io import export_onnx, load, save
from .model import EdgeAttention, EdgeBlock, EdgeViT


def derive(*args, **kwargs):
    """Derive an edge ViT: see `nuwa.derivation.derive` (imported lazily: it pulls in the data stack)."""
    from .derivation import derive as _derive

    return _derive(*args, **kwargs)

__version__ = "0.1.0"

__all__ = [
    "EdgeAttention", "EdgeBlock", "EdgeViT", "EdgeViTConfig", "LayerConfig", "NuwaError",
    "bench", "bias_params", "cost", "count_flops", "derive", "count_params", "create_base", "export_onnx", "flops_eq8",
    "from_timm", "load", "measure_flops", "params_eq7", "save",
]
