"""MobileViT in nuwa: a dense, prunable MobileViT (`EdgeMobileViT`), its conversion from timm,
its cost counts, pruning operators and derivation methods."""
