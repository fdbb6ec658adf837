"""One structural pruning operator per dimension; each returns a new, smaller, dense EdgeViT."""
from .classifier import prune_classifier, slice_head
from .depth import prune_depth
from .embedding import embed_axis, prune_embedding
from .heads import prune_heads
from .mlp import prune_mlp
from .qk import prune_qk
from .v import prune_v

__all__ = ["embed_axis", "prune_classifier", "prune_depth", "prune_embedding", "prune_heads", "prune_mlp",
           "prune_qk", "prune_v", "slice_head"]
