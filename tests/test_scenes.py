"""The Fashion-MNIST scene-parsing task (`nuwa.data.scenes`) and the segmentation metric and loops
(`nuwa.segmentation`), as specifications: what a scene holds, what a scenes file must hold, what
IoU counts, and that a tiny conv net trains and evaluates (with and without a teacher)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nuwa.data.scenes import (
    FOREGROUND, SCENE_CLASSES, SceneDataset, make_scenes, plan_scenes, read_scenes, subset_masks, write_scenes,
)
from nuwa.data.sources import read_fashion_mnist
from nuwa.data.spec import FASHION_MNIST_ROOT
from nuwa.errors import NuwaError
from nuwa.segmentation import (
    confusion, evaluate_segmenter, hook_pairs, iou_per_class, mean_iou, miou_diff_interval, miou_interval,
    per_image_confusions, subset_logits, train_segmenter,
)

# The pipeline's copy if it has been made, else Debian's package (scripts/setup.sh installs it).
FMNIST = next((p for p in (Path(__file__).resolve().parents[1] / "data" / "fashion-mnist", FASHION_MNIST_ROOT)
               if (p / "t10k-images-idx3-ubyte.gz").is_file()), FASHION_MNIST_ROOT)
needs_fmnist = pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="Fashion-MNIST is not installed")


@pytest.fixture(scope="module")
def source():
    """Fashion-MNIST's test split when it is there, else random items with bright squares."""
    if (FMNIST / "t10k-images-idx3-ubyte.gz").is_file():
        ds = read_fashion_mnist(FMNIST, "test")
        return ds.images[:500], ds.targets[:500]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, size=(200, 1, 28, 28)).astype(np.uint8)
    x[:, :, 6:22, 6:22] = 200
    return torch.from_numpy(x), rng.integers(0, 10, 200)


def _save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _valid_arrays(n: int = 4, size: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 255, (n, 1, size, size), dtype=np.uint8),
            "m_train": rng.integers(0, 11, (n, size, size), dtype=np.uint8),
            "x_test": rng.integers(0, 255, (n, 1, size, size), dtype=np.uint8),
            "m_test": rng.integers(0, 11, (n, size, size), dtype=np.uint8),
            "class_names": np.array(SCENE_CLASSES)}


# ---- scene generation -------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_scenes(source):
    a = make_scenes(*source, n=20, canvas=48, seed=3)
    b = make_scenes(*source, n=20, canvas=48, seed=3)
    c = make_scenes(*source, n=20, canvas=48, seed=4)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (20, 1, 48, 48) and a[0].dtype == np.uint8
    assert a[1].shape == (20, 48, 48) and a[1].dtype == np.uint8


def test_masks_label_exactly_the_bright_pixels(source):
    images, masks = make_scenes(*source, n=30, canvas=64, seed=0)
    assert masks.max() <= 10 and set(np.unique(masks)) <= set(range(11))
    # An item occludes another with its silhouette only, so labels and brightness agree everywhere.
    np.testing.assert_array_equal(masks > 0, images[:, 0] > FOREGROUND)
    assert (masks > 0).any(axis=(1, 2)).all()  # every scene shows at least one item


def test_items_stay_inside_the_canvas_and_nothing_is_drawn_elsewhere(source):
    x, y = source
    images, masks = make_scenes(x, y, n=30, canvas=40, items=(1, 3), seed=1)
    plans = plan_scenes(len(x), n=30, canvas=40, items=(1, 3), seed=1)
    for i, scene in enumerate(plans):
        assert 1 <= len(scene) <= 3
        covered = np.zeros((40, 40), bool)
        for p in scene:
            assert 20 <= p.size <= 36 and p.top >= 0 and p.left >= 0
            assert p.top + p.size <= 40 and p.left + p.size <= 40
            covered[p.top:p.top + p.size, p.left:p.left + p.size] = True
        assert (images[i, 0][~covered] == 0).all() and (masks[i][~covered] == 0).all()
        # The labels drawn are those of the items placed.
        placed = {int(y[p.index]) + 1 for p in scene}
        assert set(np.unique(masks[i])) - {0} <= placed


def test_bad_generation_arguments_are_user_errors(source):
    with pytest.raises(NuwaError, match="items"):
        make_scenes(*source, n=2, items=(3, 1), seed=0)
    with pytest.raises(NuwaError, match="canvas"):
        make_scenes(*source, n=2, canvas=4, seed=0)
    with pytest.raises(NuwaError, match="source images"):
        make_scenes(np.zeros((3, 28, 28), np.float32), np.zeros(3), n=2, seed=0)


# ---- the scenes file --------------------------------------------------------------------------
@needs_fmnist
def test_write_then_read_roundtrip_leaves_only_the_complete_file(tmp_path):
    out = tmp_path / "scenes" / "fm.npz"
    write_scenes(FMNIST, out, train=12, test=6, canvas=32, seed=5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["fm.npz"]  # no temporary file left
    train, test = read_scenes(out, "train"), read_scenes(out, "test")
    assert (len(train), len(test)) == (12, 6) and train.num_classes == 11
    assert train.class_names == SCENE_CLASSES and train.class_names[1] == "T-shirt/top"
    x, m = train[0]
    assert x.dtype == torch.float32 and x.shape == (1, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert m.dtype == torch.int64 and m.shape == (32, 32)
    with np.load(out, allow_pickle=False) as z:  # no pickles anywhere
        np.testing.assert_array_equal(z["m_test"], test.masks.numpy())
        assert z["class_names"].dtype.kind == "U"
    again = tmp_path / "again.npz"
    write_scenes(FMNIST, again, train=12, test=6, canvas=32, seed=5)
    assert np.array_equal(read_scenes(again, "test").images, test.images)


def test_a_scenes_file_without_masks_for_a_split_names_the_missing_array(tmp_path):
    arrays = _valid_arrays()
    del arrays["m_train"]
    path = _save(tmp_path / "nomask.npz", **arrays)
    with pytest.raises(NuwaError, match="has x_train but no m_train") as e:
        read_scenes(path, "train")
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert len(read_scenes(path, "test")) == 4  # the other split is whole


def test_bad_scenes_files_are_one_line_user_errors(tmp_path):
    with pytest.raises(NuwaError, match="no such scenes file"):
        read_scenes(tmp_path / "absent.npz", "train")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(NuwaError, match="not an npz"):
        read_scenes(tmp_path / "junk.npz", "train")
    arrays = _valid_arrays()
    arrays["m_train"] = arrays["m_train"][:, :8]
    with pytest.raises(NuwaError, match=r"m_train has shape \(4, 8, 16\).*4 images of 16x16"):
        read_scenes(_save(tmp_path / "shape.npz", **arrays), "train")
    arrays = _valid_arrays()
    arrays["m_test"][0, 0, 0] = 11
    with pytest.raises(NuwaError, match="m_test holds label 11 but class_names has 11 classes"):
        read_scenes(_save(tmp_path / "label.npz", **arrays), "test")
    arrays = _valid_arrays()
    del arrays["x_test"]
    with pytest.raises(NuwaError, match="missing array 'x_test'"):
        read_scenes(_save(tmp_path / "noimages.npz", **arrays), "test")
    with pytest.raises(NuwaError, match="split 'val'"):
        read_scenes(_save(tmp_path / "ok.npz", **_valid_arrays()), "val")


def test_subset_masks_keeps_the_chosen_classes_in_order_and_the_rest_is_background():
    masks = np.array([[0, 1, 2], [6, 8, 10], [8, 6, 3]], np.uint8)  # labels are class + 1
    out = subset_masks(masks, [7, 5])  # Sneaker -> 1, Sandal -> 2
    np.testing.assert_array_equal(out, [[0, 0, 0], [2, 1, 0], [1, 2, 0]])
    assert out.dtype == np.uint8
    t = subset_masks(torch.from_numpy(masks).long(), [0])
    assert t.dtype == torch.int64 and t.tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    ds = SceneDataset(torch.zeros(1, 1, 3, 3, dtype=torch.uint8), torch.from_numpy(masks)[None], SCENE_CLASSES)
    sub = ds.subset([7, 5])
    assert sub.class_names == ["background", "Sneaker", "Sandal"] and sub.masks[0].tolist() == out.tolist()
    with pytest.raises(NuwaError, match="duplicate"):
        subset_masks(masks, [1, 1])


# ---- IoU ----------------------------------------------------------------------------------------
def test_iou_counts_intersection_over_union_per_class():
    target = torch.tensor([[0, 0, 0, 0],
                           [0, 1, 1, 0],
                           [0, 1, 1, 0],
                           [0, 0, 0, 0]])
    pred = torch.tensor([[0, 0, 0, 0],
                         [0, 1, 1, 1],
                         [0, 1, 1, 1],
                         [0, 1, 1, 1]])
    conf = confusion(pred, target, num_classes=3)
    assert conf.dtype == torch.int64 and conf.tolist() == [[7, 5, 0], [0, 4, 0], [0, 0, 0]]
    # class 0: 7 / (12 + 7 - 7); class 1: 4 / (4 + 9 - 4); class 2 is in neither: None, not counted.
    assert iou_per_class(conf) == [7 / 12, 4 / 9, None]
    assert mean_iou(conf) == pytest.approx((7 / 12 + 4 / 9) / 2)
    assert mean_iou(confusion(target, target, 3)) == 1.0


def test_iou_of_a_class_only_predicted_is_zero_and_counts():
    target = torch.tensor([[1, 1], [0, 0]])
    pred = torch.tensor([[1, 2], [0, 0]])  # class 2 predicted, never true: IoU 0
    ious = iou_per_class(confusion(pred, target, 3))
    assert ious == [1.0, 0.5, 0.0]
    assert mean_iou(confusion(pred, target, 3)) == pytest.approx(0.5)
    with pytest.raises(NuwaError, match="target label 3"):
        confusion(pred, torch.tensor([[3, 1], [0, 0]]), 3)


def test_bootstrap_intervals_bracket_the_estimate_and_pairing_cancels_shared_images():
    rng = np.random.default_rng(0)
    confs = rng.integers(0, 50, size=(40, 3, 3))
    confs[:, [0, 1, 2], [0, 1, 2]] += 100
    low, high = miou_interval(confs, samples=300, seed=1)
    assert low <= mean_iou(confs.sum(0)) <= high and low < high
    assert miou_interval(confs, samples=300, seed=1) == (low, high)  # seeded
    assert miou_diff_interval(confs, confs, samples=200) == (0.0, 0.0)
    better = confs.copy()
    better[:, [0, 1, 2], [0, 1, 2]] += 200
    d_low, _ = miou_diff_interval(better, confs, samples=200)
    assert d_low > 0
    with pytest.raises(NuwaError, match="same images"):
        miou_diff_interval(confs, confs[:5])


def test_subset_logits_merge_left_out_classes_into_background():
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))[None, :, None, None]  # background + 3 classes
    out = subset_logits(logits, [2])
    assert torch.allclose(out.softmax(1).flatten(), torch.tensor([0.6, 0.4]))


# ---- training and evaluation ------------------------------------------------------------------
class TinySegmenter(nn.Module):
    """Two 3x3 convolutions and a 1x1 classifier, at half resolution (as a real decoder might be)."""

    def __init__(self, num_classes: int = 11, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def scenes(source):
    x, m = make_scenes(*source, n=64, canvas=32, seed=0)
    return SceneDataset(torch.from_numpy(x), torch.from_numpy(m), SCENE_CLASSES)


@needs_fmnist  # random items have no silhouettes to learn
def test_a_tiny_conv_net_trains_and_evaluates(scenes):
    torch.manual_seed(0)
    model = TinySegmenter()
    before = evaluate_segmenter(model, scenes, batch_size=32, samples=100)
    lines: list[str] = []
    report = train_segmenter(model, scenes, epochs=15, batch_size=16, lr=3e-2, seed=0, log=lines.append)
    assert report["steps"] == 60 and len(report["losses"]) == 15 and len(lines) == 15
    assert all(math.isfinite(v) for v in report["losses"]) and report["losses"][-1] < report["losses"][0]
    assert lines[0].startswith("epoch 1/15") and report["seconds"] > 0
    after = evaluate_segmenter(model, scenes, batch_size=32, samples=100)
    assert set(after) == {"miou", "per_class_iou", "pixel_acc", "miou_ci", "images"}
    assert after["images"] == 64 and list(after["per_class_iou"]) == SCENE_CLASSES
    assert 0 <= after["miou"] <= 1 and after["miou"] > before["miou"]
    background = float((scenes.masks == 0).float().mean())
    assert after["pixel_acc"] > max(before["pixel_acc"], background)  # better than "all background"
    assert after["per_class_iou"]["background"] > 0.8  # it has learnt the silhouettes
    low, high = after["miou_ci"]
    assert low <= after["miou"] <= high
    confs = per_image_confusions(model, scenes, batch_size=32)
    assert confs.shape == (64, 11, 11) and int(confs.sum()) == 64 * 32 * 32


def test_training_is_seeded(scenes):
    def run() -> dict:
        torch.manual_seed(1)
        model = TinySegmenter(width=4)
        train_segmenter(model, scenes, epochs=0.5, batch_size=16, lr=1e-2, seed=7, log=None)
        return model.state_dict()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_distillation_from_a_teacher_and_feature_mimicking_run(scenes):
    torch.manual_seed(0)
    teacher, student = TinySegmenter(width=8).eval(), TinySegmenter(width=4)
    report = train_segmenter(student, scenes, epochs=1, batch_size=16, lr=1e-2, seed=0, log=None,
                             teacher=teacher, kd_weight=0.5, kd_temperature=2.0)
    assert report["kd"][0] > 0 and all(math.isfinite(v) for v in report["losses"])
    # A sub-task student (background + Sandal, Sneaker) taught by the full teacher, with features
    # mimicked through an adapter (4 -> 8 channels) that trains with the student.
    sub = scenes.subset([5, 7])
    student = TinySegmenter(num_classes=3, width=4)
    student.adapter = nn.Conv2d(4, 8, 1)
    pairs = hook_pairs([(student.features, teacher.features)], adapters=[student.adapter])
    before = student.adapter.weight.detach().clone()
    report = train_segmenter(student, sub, epochs=1, batch_size=16, lr=1e-2, seed=0, log=None, teacher=teacher,
                             kd_weight=1.0, teacher_classes=[5, 7], feature_pairs=pairs, feature_weight=1.0)
    assert report["kd"][0] > 0 and report["feat"][0] > 0 and math.isfinite(report["losses"][0])
    assert not torch.equal(before, student.adapter.weight)
    with pytest.raises(NuwaError, match="teacher_classes"):
        train_segmenter(TinySegmenter(num_classes=3), sub, epochs=0.1, batch_size=16, lr=1e-2, seed=0, log=None,
                        teacher=teacher, kd_weight=1.0)
    # The full teacher evaluates on the sub-task too: left-out classes count as background.
    result = evaluate_segmenter(teacher, scenes, batch_size=32, classes=[5, 7], samples=50)
    assert list(result["per_class_iou"]) == ["background", "Sandal", "Sneaker"]


def test_any_dataset_of_image_mask_pairs_evaluates_like_the_in_memory_scenes(scenes):
    class Pairs(torch.utils.data.Dataset):  # no `images` / `masks` tensors: collated item by item
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int):
            return scenes[i]

    torch.manual_seed(0)
    model = TinySegmenter()
    first = SceneDataset(scenes.images[:10], scenes.masks[:10], SCENE_CLASSES)
    assert torch.equal(per_image_confusions(model, Pairs(), batch_size=4),
                       per_image_confusions(model, first, batch_size=3))
