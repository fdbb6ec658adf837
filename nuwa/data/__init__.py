"""Data sets for nuwa: spec strings -> uint8 image sets, class subsets, batches, preprocessing.

    from nuwa.data import open_split, resolve_classes, class_subset, batches, Preprocess
    ds = open_split("fashion-mnist", "train")
    sub = class_subset(ds, resolve_classes("Sandal,Sneaker,Ankle boot", ds.class_names))
    pre = Preprocess(img_size=(28, 28), in_chans=1, mean=(0.286,), std=(0.353,))
    for x, y in batches(sub, batch_size=256, shuffle=True, seed=0):
        logits = model(pre(x))
"""
from .datasets import MemoryDataset, SubsetDataset, images_of
from .folder import IMAGE_EXTENSIONS, FolderDataset
from .loader import batches, collate_images, sample_order
from .registry import (
    FASHION_MNIST_MEAN, FASHION_MNIST_STD, DataInfo, channel_stats, fashion_mnist_stats, open_split, probe,
)
from .sources import FASHION_MNIST_CLASSES, read_idx
from .spec import KINDS, DataSpec, parse_spec
from .subsets import class_subset, resolve_classes, train_val_split
from .transforms import Preprocess

__all__ = [
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "IMAGE_EXTENSIONS", "KINDS",
    "DataInfo", "DataSpec", "FolderDataset", "MemoryDataset", "Preprocess", "SubsetDataset",
    "batches", "channel_stats", "class_subset", "collate_images", "fashion_mnist_stats", "images_of",
    "open_split", "parse_spec", "probe", "read_idx", "resolve_classes", "sample_order", "train_val_split",
]
