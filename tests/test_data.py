"""nuwa.data: spec parsing, the readers, class selection, splits, batching, preprocessing.

Every fixture is written by the test into tmp_path; nothing touches the network.
"""
from __future__ import annotations

import gzip
import logging
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nuwa
from nuwa import NuwaError
from nuwa.data import (
    FASHION_MNIST_CLASSES, DataSpec, Preprocess, batches, class_subset, fashion_mnist_stats, open_split,
    parse_spec, probe, resolve_classes, train_val_split,
)
from nuwa.data import folder as folder_mod

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


# ---- fixture writers ---------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_fmnist(root: Path, gz: bool = True, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 6, 5), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 6, 5), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        write_idx(root / (name + (".gz" if gz else "")), a, gz)
    return arrays


def make_npz(path: Path, **overrides) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.integers(0, 256, (9, 4, 6), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2, 0, 1, 2]),
        "x_test": rng.integers(0, 256, (4, 4, 6), dtype=np.uint8),
        "y_test": np.array([2, 1, 0, 3]),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def save_png(path: Path, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size[1], size[0]), (value, value // 2, 255 - value)).save(path)


def make_folder(root: Path, corrupt: bool = True) -> Path:
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            for i in range(3):
                save_png(root / split / name / f"{i}.png", (8, 10), 40 * c + 10 * i)
    if corrupt:
        (root / "train" / "dog" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image, ignored")
    return root


def write_cifar_pickle(path: Path, obj) -> None:
    # The real files were written by Python 2: bytes keys.
    with open(path, "wb") as f:
        pickle.dump({k.encode(): v for k, v in obj.items()}, f, protocol=2)


def make_cifar10(root: Path, per_batch: int = 3) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(2)
    write_cifar_pickle(d / "batches.meta", {"label_names": [f"c{i}".encode() for i in range(10)]})
    for i in range(1, 6):
        write_cifar_pickle(d / f"data_batch_{i}", {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, per_batch)],
        })
    write_cifar_pickle(d / "test_batch", {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [1, 2, 3, 9]})
    return d


# ---- specs ------------------------------------------------------------------------------------
def test_parse_spec_kinds_and_defaults(tmp_path):
    assert parse_spec("fashion-mnist") == DataSpec("fashion-mnist", REAL_FMNIST)
    assert parse_spec(f"FMNIST:{tmp_path}") == DataSpec("fashion-mnist", tmp_path)
    assert parse_spec(f"folder:{tmp_path}").kind == "folder"
    assert str(parse_spec(f"cifar10:{tmp_path}")) == f"cifar10:{tmp_path}"


@pytest.mark.parametrize("spec, named", [
    ("mnist:/tmp", "mnist"),
    ("cifar10", "cifar10"),
    ("folder", "folder"),
    ("npz:", "npz"),
    ("imagenet:/no/such/imagenet", "/no/such/imagenet"),
    ("", "''"),
])
def test_bad_specs_name_the_spec(spec, named):
    with pytest.raises(NuwaError, match=named) as e:
        parse_spec(spec)
    assert "\n" not in str(e.value)


def test_spec_kind_must_match_path_type(tmp_path):
    with pytest.raises(NuwaError, match="is not a file"):
        parse_spec(f"npz:{tmp_path}")
    f = tmp_path / "x.npz"
    f.write_bytes(b"")
    with pytest.raises(NuwaError, match="is not a directory"):
        parse_spec(f"folder:{f}")


def test_bad_split_is_named(tmp_path):
    make_fmnist(tmp_path)
    with pytest.raises(NuwaError, match="'validation'"):
        open_split(f"fashion-mnist:{tmp_path}", "validation")


# ---- Fashion-MNIST IDX -----------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_idx_fixture_round_trip(tmp_path, gz):
    arrays = make_fmnist(tmp_path, gz=gz)
    tr = open_split(f"fashion-mnist:{tmp_path}", "train")
    te = open_split(f"fashion-mnist:{tmp_path}", "test")
    assert len(tr) == 12 and len(te) == 5
    assert tr.images.shape == (12, 1, 6, 5) and tr.images.dtype == torch.uint8
    assert np.array_equal(tr.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert tr.targets.dtype == np.int64
    assert np.array_equal(te.targets, arrays["t10k-labels-idx1-ubyte"])
    x, y = tr[3]
    assert x.shape == (1, 6, 5) and y == 3 and isinstance(y, int)
    assert tr.class_names == FASHION_MNIST_CLASSES and len(tr.class_names) == 10


def test_missing_fmnist_files_say_how_to_install(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    root = tmp_path / "nothing-here"
    with pytest.raises(NuwaError, match="apt-get install dataset-fashion-mnist") as e:
        open_split(f"fashion-mnist:{root}", "train")
    assert str(root) in str(e.value)


def test_truncated_idx_names_the_file(tmp_path):
    make_fmnist(tmp_path, gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(NuwaError, match="train-images-idx3-ubyte"):
        open_split(f"fashion-mnist:{tmp_path}", "train")


@pytest.mark.skipif(not REAL_FMNIST.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    tr, te = open_split("fashion-mnist", "train"), open_split("fashion-mnist", "test")
    assert (len(tr), len(te)) == (60000, 10000)
    assert tr.images.shape[1:] == (1, 28, 28)
    assert len(tr.class_names) == 10 and np.bincount(tr.targets).tolist() == [6000] * 10
    x = tr.images.double() / 255
    mean, std = fashion_mnist_stats()
    assert mean[0] == pytest.approx(x.mean().item(), abs=1e-4)
    assert std[0] == pytest.approx(x.std().item(), abs=1e-4)
    info = probe("fashion-mnist")
    assert (info.num_classes, info.in_chans, info.img_size) == (10, 1, (28, 28))
    assert info.mean[0] == pytest.approx(mean[0], abs=3e-3)  # a 10000-image sample


# ---- npz ---------------------------------------------------------------------------------------
def test_npz_round_trip_gray(tmp_path):
    arrays = make_npz(tmp_path / "d.npz")
    tr = open_split(f"npz:{tmp_path / 'd.npz'}", "train")
    te = open_split(f"npz:{tmp_path / 'd.npz'}", "test")
    assert tr.images.shape == (9, 1, 4, 6)
    assert np.array_equal(tr.images[:, 0].numpy(), arrays["x_train"])
    assert np.array_equal(te.targets, arrays["y_test"])
    # No class_names: max label + 1 over both splits (y_test holds a 3).
    assert tr.class_names == ["0", "1", "2", "3"] == te.class_names


def test_npz_round_trip_color_with_names(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    make_npz(tmp_path / "d.npz", x_train=x, x_test=x[:2], y_train=np.array([0, 1, 0, 1, 0]), y_test=np.array([1, 0]),
             class_names=np.array(["ant", "bee", "cow"]))
    tr = open_split(f"npz:{tmp_path / 'd.npz'}", "train")
    assert tr.images.shape == (5, 3, 4, 6)
    assert np.array_equal(tr.images.permute(0, 2, 3, 1).numpy(), x)
    assert tr.class_names == ["ant", "bee", "cow"]
    info = probe(f"npz:{tmp_path / 'd.npz'}")
    assert (info.num_classes, info.in_chans, info.img_size) == (3, 3, (4, 6))
    xf = x.astype(np.float64) / 255
    assert np.allclose(info.mean, xf.mean(axis=(0, 1, 2)))
    assert np.allclose(info.std, xf.std(axis=(0, 1, 2)))


@pytest.mark.parametrize("overrides, named", [
    ({"x_train": None}, "'x_train'"),
    ({"y_test": None}, "'y_test'"),
    ({"y_train": np.zeros(8, np.int64)}, "y_train"),  # 8 labels for 9 images
    ({"x_train": np.zeros((9, 4, 6), np.float32)}, "x_train"),
    ({"x_test": np.zeros((4, 24), np.uint8)}, "x_test"),
    ({"y_test": np.zeros(4, np.float32)}, "y_test"),
    ({"y_train": np.array([0, 1, 2, 0, 1, 2, 0, 1, -1])}, "y_train"),
    ({"x_test": np.zeros((4, 4, 6, 3), np.uint8)}, "x_test"),  # gray train, colour test
    ({"class_names": np.array(["a", "b", "c"])}, "y_test"),  # y_test holds 3
    ({"class_names": np.array([["a", "b"], ["c", "d"]])}, "class_names"),
])
def test_bad_npz_names_the_array(tmp_path, overrides, named):
    make_npz(tmp_path / "d.npz", **overrides)
    with pytest.raises(NuwaError, match=named) as e:
        open_split(f"npz:{tmp_path / 'd.npz'}", "train")
    assert "\n" not in str(e.value)


def test_npz_object_class_names_are_refused(tmp_path):
    make_npz(tmp_path / "d.npz", class_names=np.array(["a", "b", "c", "d"], dtype=object))
    with pytest.raises(NuwaError, match="class_names"):
        open_split(f"npz:{tmp_path / 'd.npz'}", "train")


def test_not_an_npz(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"garbage")
    with pytest.raises(NuwaError, match="d.npz"):
        open_split(f"npz:{tmp_path / 'd.npz'}", "train")


# ---- image folders -------------------------------------------------------------------------------
def test_folder_skips_and_counts_corrupt_images(tmp_path, caplog):
    root = make_folder(tmp_path / "set")
    with caplog.at_level(logging.WARNING, logger="nuwa.data"):
        ds = open_split(f"folder:{root}", "train")
    assert ds.skipped == 1
    assert "skipped 1 unreadable images" in caplog.text
    assert len(ds) == 6 and ds.class_names == ["cat", "dog"]
    assert ds.targets.tolist() == [0, 0, 0, 1, 1, 1]
    x, y = ds[4]
    assert x.dtype == torch.uint8 and x.shape == (3, 8, 10) and y == 1
    assert x[0, 0, 0].item() == 50
    assert getattr(ds, "images", None) is None
    info = probe(f"folder:{root}")
    assert (info.num_classes, info.in_chans, info.img_size) == (2, 3, (8, 10))


def test_folder_test_split_uses_val_or_test(tmp_path):
    root = make_folder(tmp_path / "set", corrupt=False)
    assert len(open_split(f"imagenet:{root}", "test")) == 6
    (root / "val").rename(root / "test")
    te = open_split(f"folder:{root}", "test")
    assert te.class_names == ["cat", "dog"] and te.targets.tolist() == [0, 0, 0, 1, 1, 1]


def test_folder_mixed_sizes_are_resized(tmp_path):
    root = make_folder(tmp_path / "set", corrupt=False)
    save_png(root / "train" / "dog" / "big.png", (16, 12), 200)
    ds = open_split(f"folder:{root}", "train")
    assert ds.img_size == (8, 10)
    assert all(ds[i][0].shape == (3, 8, 10) for i in range(len(ds)))
    ds = open_split(f"folder:{root}", "train", img_size=(5, 7))
    assert ds[0][0].shape == (3, 5, 7)
    xs = [x for x, _ in batches(ds, batch_size=4, num_workers=0)]
    assert [tuple(x.shape) for x in xs] == [(4, 3, 5, 7), (3, 3, 5, 7)]


def test_folder_batches_through_workers_match_items(tmp_path):
    ds = open_split(f"folder:{make_folder(tmp_path / 'set')}", "train")
    got = list(batches(ds, batch_size=4, shuffle=True, seed=3))  # default: DataLoader workers
    x = torch.cat([b[0] for b in got])
    y = torch.cat([b[1] for b in got])
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(3))
    assert torch.equal(x, torch.stack([ds[int(i)][0] for i in order]))
    assert y.tolist() == ds.targets[order.numpy()].tolist()


def test_large_folder_reports_a_bad_file_lazily(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_mod, "VERIFY_LIMIT", 0)  # pretend it is ImageNet-sized
    ds = open_split(f"folder:{make_folder(tmp_path / 'set')}", "train")
    assert ds.skipped == 0 and len(ds) == 7
    with pytest.raises(NuwaError, match="zz_broken.png"):
        ds[6]
    with pytest.raises(NuwaError, match="zz_broken.png") as e:
        list(batches(ds, batch_size=4, num_workers=1))
    assert "\n" not in str(e.value)


def test_empty_folders_are_errors(tmp_path):
    (tmp_path / "a" / "train").mkdir(parents=True)
    with pytest.raises(NuwaError, match="no class folders"):
        open_split(f"folder:{tmp_path / 'a'}", "train")
    (tmp_path / "b" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(NuwaError, match="no images") as e:
        open_split(f"folder:{tmp_path / 'b'}", "train")
    assert str(tmp_path / "b" / "train") in str(e.value)
    (tmp_path / "c").mkdir()
    with pytest.raises(NuwaError, match="train/"):
        open_split(f"folder:{tmp_path / 'c'}", "train")


def test_test_class_unknown_to_train_is_named(tmp_path):
    root = make_folder(tmp_path / "set", corrupt=False)
    save_png(root / "val" / "emu" / "0.png", (8, 10), 1)
    with pytest.raises(NuwaError, match="'emu'"):
        open_split(f"folder:{root}", "test")


# ---- CIFAR ----------------------------------------------------------------------------------------
def test_cifar10_pickles(tmp_path):
    d = make_cifar10(tmp_path)
    tr = open_split(f"cifar10:{tmp_path}", "train")
    assert len(tr) == 15 and tr.images.shape == (15, 3, 32, 32)
    assert tr.class_names == [f"c{i}" for i in range(10)]
    with open(d / "data_batch_2", "rb") as f:
        b2 = pickle.load(f, encoding="bytes")
    row = b2[b"data"][1]
    assert np.array_equal(tr.images[4, 0].numpy(), row[:1024].reshape(32, 32))  # red plane first
    assert np.array_equal(tr.images[4, 2].numpy(), row[2048:].reshape(32, 32))
    assert tr.targets[3:6].tolist() == b2[b"labels"]
    te = open_split(f"cifar10:{d}", "test")  # ROOT may be the batches dir itself
    assert te.targets.tolist() == [1, 2, 3, 9]


def test_cifar100_fine_labels(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    names = [f"f{i}" for i in range(100)]
    write_cifar_pickle(d / "meta", {"fine_label_names": names, "coarse_label_names": ["x"] * 20})
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    for split in ("train", "test"):
        write_cifar_pickle(d / split, {"data": data, "fine_labels": [99, 5], "coarse_labels": [0, 1]})
    ds = open_split(f"cifar100:{tmp_path}", "train")
    assert ds.targets.tolist() == [99, 5] and ds.class_names == names


def test_cifar_refuses_code_in_pickles(tmp_path):
    d = make_cifar10(tmp_path)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": __import__("os").getcwd}, f)
    with pytest.raises(NuwaError, match="test_batch"):
        open_split(f"cifar10:{tmp_path}", "test")


def test_cifar_missing_dir(tmp_path):
    with pytest.raises(NuwaError, match="cifar-100-python"):
        open_split(f"cifar100:{tmp_path}", "train")


# ---- class selection ---------------------------------------------------------------------------------
NAMES = FASHION_MNIST_CLASSES


def test_resolve_classes_by_name_and_index():
    assert resolve_classes("Sandal,Sneaker,9", NAMES) == [5, 7, 9]
    assert resolve_classes(" ankle BOOT , t-shirt/top", NAMES) == [9, 0]
    assert resolve_classes(["Bag", 1, "3"], NAMES) == [8, 1, 3]
    # A class *named* "2" wins over index 2.
    assert resolve_classes("2,0", ["0", "10", "2"]) == [2, 0]


@pytest.mark.parametrize("classes, message", [
    ("Sandal,Snekaer", "unknown class 'Snekaer'; did you mean 'Sneaker'?"),
    ("Sandal,Zebra", "unknown class 'Zebra'"),
    ("Sandal,12", "class index 12 is out of range 0..9"),
    ([3, -1], "class index -1 is out of range"),
    ("Sandal,5", r"'Sandal' \(index 5\) is given twice in 'Sandal,5'"),
    ("Sandal,sandal", r"'Sandal' \(index 5\) is given twice"),
    ("Sandal", "'Sandal' names only 1 class"),
    ("", "class list '' is empty"),
    ([], r"class list \[\] is empty"),
    ("Sandal,,Bag", "empty class name"),
])
def test_resolve_classes_errors(classes, message):
    with pytest.raises(NuwaError, match=message) as e:
        resolve_classes(classes, NAMES)
    assert "\n" not in str(e.value)


def mem_dataset(n_per_class=(5, 7, 3, 9), seed=0):
    from nuwa.data import MemoryDataset

    rng = np.random.default_rng(seed)
    targets = rng.permutation(np.repeat(np.arange(len(n_per_class)), n_per_class))
    images = torch.from_numpy(rng.integers(0, 256, (len(targets), 1, 4, 4), dtype=np.uint8))
    return MemoryDataset(images, targets, [f"k{i}" for i in range(len(n_per_class))])


def test_class_subset_remaps_in_given_order():
    ds = mem_dataset()
    sub = class_subset(ds, [3, 1])
    assert sub.class_names == ["k3", "k1"]
    assert len(sub) == 9 + 7
    assert np.array_equal(sub.indices, np.flatnonzero(np.isin(ds.targets, [3, 1])))
    assert np.array_equal(sub.targets, np.where(ds.targets[sub.indices] == 3, 0, 1))
    assert torch.equal(sub.images, ds.images[torch.from_numpy(sub.indices)])
    x, y = sub[2]
    assert torch.equal(x, ds.images[sub.indices[2]]) and y == int(sub.targets[2])
    with pytest.raises(NuwaError, match="class index 4"):
        class_subset(ds, [0, 4])


def test_train_val_split_is_seeded_stratified_and_disjoint():
    ds = mem_dataset((10, 20, 30, 40))
    tr, va = train_val_split(ds, 0.1, seed=0)
    tr2, va2 = train_val_split(ds, 0.1, seed=0)
    _, va3 = train_val_split(ds, 0.1, seed=1)
    assert np.array_equal(va.indices, va2.indices) and np.array_equal(tr.indices, tr2.indices)
    assert not np.array_equal(va.indices, va3.indices)
    assert np.bincount(va.targets).tolist() == [1, 2, 3, 4]
    assert not set(tr.indices) & set(va.indices)
    assert sorted(np.concatenate([tr.indices, va.indices]).tolist()) == list(range(len(ds)))
    assert np.array_equal(tr.targets, ds.targets[tr.indices])
    assert torch.equal(va.images, ds.images[torch.from_numpy(va.indices)])
    assert va.class_names == ds.class_names
    # Splits compose with class subsets.
    sub_tr, sub_va = train_val_split(class_subset(ds, [2, 0]), 0.5, seed=0)
    assert sub_va.class_names == ["k2", "k0"] and np.bincount(sub_va.targets).tolist() == [15, 5]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_train_val_split_bad_fraction(fraction):
    with pytest.raises(NuwaError, match=f"val_fraction={fraction}"):
        train_val_split(mem_dataset(), fraction)


# ---- batching -----------------------------------------------------------------------------------------
def test_batches_cover_everything_in_order_without_shuffle():
    ds = mem_dataset()
    got = list(batches(ds, batch_size=7))
    assert [len(y) for _, y in got] == [7, 7, 7, 3]
    assert torch.equal(torch.cat([x for x, _ in got]), ds.images)
    assert torch.cat([y for _, y in got]).tolist() == ds.targets.tolist()
    assert got[0][1].dtype == torch.int64
    assert sum(len(y) for _, y in batches(ds, batch_size=7, limit=10)) == 10
    assert list(batches(ds, limit=0)) == []


def test_batches_are_seeded():
    ds = mem_dataset()
    first = [y.tolist() for _, y in batches(ds, 5, shuffle=True, seed=1)]
    again = [y.tolist() for _, y in batches(ds, 5, shuffle=True, seed=1)]
    other = [y.tolist() for _, y in batches(ds, 5, shuffle=True, seed=2)]
    assert first == again and first != other
    xs, ys = zip(*batches(ds, 5, shuffle=True, seed=1))
    order = np.argsort(np.concatenate([np.flatnonzero(np.all(ds.images.numpy() == x.numpy(), axis=(1, 2, 3)))
                                       for x in torch.cat(xs)]))
    assert sorted(order.tolist()) == list(range(len(ds)))  # a permutation: each image once
    # A subset (gathered images) batches the same way.
    sub = class_subset(ds, [1, 0])
    assert torch.equal(torch.cat([x for x, _ in batches(sub, 4)]), sub.images)


def test_batches_progress_bar_goes_to_stderr(capsys):
    list(batches(mem_dataset(), 8, progress="eval"))
    out, err = capsys.readouterr()
    assert out == "" and "eval" in err


@pytest.mark.parametrize("kwargs, named", [({"batch_size": 0}, "batch_size=0"), ({"limit": -1}, "limit=-1")])
def test_batches_bad_arguments(kwargs, named):
    with pytest.raises(NuwaError, match=named):
        list(batches(mem_dataset(), **kwargs))


# ---- preprocessing ----------------------------------------------------------------------------------------
def test_preprocess_normalises_exactly():
    pre = Preprocess(img_size=(2, 3), in_chans=1, mean=(0.25,), std=(0.5,))
    x = torch.tensor([[[[0, 51, 102], [153, 204, 255]]]], dtype=torch.uint8)
    out = pre(x)
    assert out.dtype == torch.float32 and out.shape == (1, 1, 2, 3)
    expected = (x.double() / 255 - 0.25) / 0.5
    assert torch.allclose(out.double(), expected, atol=1e-6)


def test_preprocess_gray_to_rgb_and_resize():
    pre = Preprocess(img_size=(4, 4), in_chans=3, mean=(0.5, 0.0, 0.1), std=(0.5, 1.0, 0.2))
    x = torch.full((2, 1, 2, 2), 51, dtype=torch.uint8)  # constant 0.2: resizing keeps it
    out = pre(x)
    assert out.shape == (2, 3, 4, 4)
    for c, v in enumerate([(0.2 - 0.5) / 0.5, 0.2, (0.2 - 0.1) / 0.2]):
        assert torch.allclose(out[:, c], torch.full((2, 4, 4), v), atol=1e-6)
    # Bilinear (half-pixel centres): a 1x2 ramp [0, 1] becomes [0, .25, .75, 1].
    ramp = Preprocess((1, 4), 1, (0.0,), (1.0,))(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    assert torch.allclose(ramp.flatten(), torch.tensor([0.0, 0.25, 0.75, 1.0]), atol=1e-6)
    # Downsizing is antialiased: a bright corner pixel still shows in a 1x1 thumbnail (plain
    # bilinear would only sample the four centre pixels and give 0).
    dot = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    dot[..., 0, 0] = 255
    small = Preprocess((1, 1), 1, (0.0,), (1.0,))(dot)
    assert 0.01 < small.item() < 0.2


def test_preprocess_rgb_to_gray_uses_luma():
    pre = Preprocess(img_size=(1, 1), in_chans=1, mean=(0.0,), std=(1.0,))
    x = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert pre(x).item() == pytest.approx(0.299, abs=1e-6)
    white = torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)
    assert pre(white).item() == pytest.approx(1.0, abs=1e-6)


def test_preprocess_errors_name_the_values():
    pre = Preprocess(img_size=(4, 4), in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(NuwaError, match="2 channels but the model takes 3"):
        pre(torch.zeros(1, 2, 4, 4, dtype=torch.uint8))
    with pytest.raises(NuwaError, match=r"\(3, 4, 4\)"):
        pre(torch.zeros(3, 4, 4, dtype=torch.uint8))
    with pytest.raises(NuwaError, match="in_chans=3"):
        Preprocess(img_size=(4, 4), in_chans=3, mean=(0.5,), std=(0.5,))
    with pytest.raises(NuwaError, match=r"std=\[0.0\]"):
        Preprocess(img_size=(4, 4), in_chans=1, mean=(0.5,), std=(0.0,))


def test_preprocess_for_config():
    cfg = nuwa.EdgeViTConfig.uniform(depth=1, embed_dim=12, num_heads=2, img_size=(16, 32), patch_size=8,
                                     in_chans=1, mean=(0.3,), std=(0.4,))
    pre = Preprocess.for_config(cfg)
    assert (pre.img_size, pre.in_chans, pre.mean, pre.std) == ((16, 32), 1, (0.3,), (0.4,))
    assert pre(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)).shape == (2, 1, 16, 32)
