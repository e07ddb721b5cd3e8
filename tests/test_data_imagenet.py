"""fdm.data.imagenet64 (npz batches, label order) and fdm.data.pixel_imagenet (<= k per class)."""
import os

import numpy as np
import pytest

from fdm.data import imagenet64
from tests import data_fakes as fakes

# A 5-class stand-in for map_clsloc.txt: devkit order is not the sorted-wnid order.
DEVKIT = ["n02119789", "n01440764", "n04552348", "n02085936", "n01833805"]


def write_synsets(path):
    path.write_text("".join(f"{w} {k} name_{k}\n" for k, w in enumerate(DEVKIT, start=1)))
    return str(path)


def write_batch(path, labels, side=64):
    """Images whose red channel is the file label, rows in the channel-major format."""
    images = np.zeros((len(labels), side, side, 3), np.uint8)
    images[..., 0] = np.asarray(labels)[:, None, None]
    images[:, : side // 2, :, 1] = 200                          # top half green
    np.savez(path, data=images.transpose(0, 3, 1, 2).reshape(len(labels), -1),
             labels=np.asarray(labels))


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "imagenet64"
    os.makedirs(root)
    for i in range(1, 11):
        write_batch(root / f"train_data_batch_{i}.npz", [1 + i % 5, 1 + (i + 2) % 5])
    write_batch(root / "val_data.npz", [1, 2, 3, 4, 5])
    return root


def test_npz_layout_labels_zero_based_and_standard_order(root, tmp_path):
    cfg = fakes.config("imagenet64", root, image_size=64)
    train = fakes.check_deterministic(cfg, "train")
    fakes.check_arrays(train, 20, 64, extra_keys=("label",))
    np.testing.assert_array_equal(train["label"], train["image"][:, 0, 0, 0] - 1)
    assert (train["image"][:, :32, :, 1] == 200).all() and (train["image"][:, 32:, :, 1] == 0).all()
    cfg.data.synsets_file = write_synsets(tmp_path / "map_clsloc.txt")
    val = fakes.load(cfg, "eval")
    rank = {w: i for i, w in enumerate(sorted(DEVKIT))}
    np.testing.assert_array_equal(val["label"], [rank[w] for w in DEVKIT])
    assert imagenet64.devkit_to_standard(DEVKIT).tolist() == [3, 0, 4, 2, 1]


def test_resize_sharding_flips(root):
    cfg = fakes.config("imagenet64", root, image_size=16, batch_size=2)
    assert fakes.load(cfg, "eval")["image"].shape == (5, 16, 16, 3)
    fakes.check_eval_sharding(cfg)
    full = fakes.check_train_batch(cfg)
    assert full["label"].dtype == np.int32


def test_missing_batch_and_synsets(root, tmp_path):
    os.remove(root / "train_data_batch_7.npz")
    fakes.check_missing(fakes.config("imagenet64", root), "train",
                        str(root / "train_data_batch_7.npz"), also="image-net.org")
    fakes.check_missing(fakes.config("imagenet64", root, synsets_file=str(tmp_path / "m.txt")),
                        "eval", str(tmp_path / "m.txt"), also="--config.data.synsets_file")


def write_pixel_imagenet(root, per_class=(3, 1, 25), side=20):
    """Classes DEVKIT[:3] with per_class masks each; red rectangle = object."""
    for wnid, n in zip(DEVKIT, per_class):
        os.makedirs(root / "images" / wnid)
        os.makedirs(root / "masks" / wnid)
        for j, box in enumerate(fakes.boxes(n, side + 6, side, seed=n)):
            rgb, mask = fakes.scene(side + 6, side, box)
            fakes.save(rgb, root / "images" / wnid / f"{wnid}_{j}.JPEG")
            fakes.save(np.where(mask, 255, 0).astype(np.uint8),
                       root / "masks" / wnid / f"{wnid}_{j}.png")
    return root


def test_pixel_imagenet_at_most_k_per_class_labels_alignment(tmp_path):
    root = write_pixel_imagenet(tmp_path / "pixel_imagenet")
    synsets = write_synsets(tmp_path / "map_clsloc.txt")
    cfg = fakes.config("pixel_imagenet", root, synsets_file=synsets, max_per_class=20)
    out = fakes.check_deterministic(cfg, "eval")
    fakes.check_arrays(out, 3 + 1 + 20, 16, mask_values=(0, 1), extra_keys=("label",))
    fakes.assert_aligned(out["image"], out["mask"])
    rank = {w: i for i, w in enumerate(sorted(DEVKIT))}
    counts = {rank[w]: n for w, n in zip(DEVKIT, (3, 1, 20))}
    assert dict(zip(*np.unique(out["label"], return_counts=True))) == counts
    other_seed = fakes.load(fakes.config("pixel_imagenet", root, synsets_file=synsets, seed=1),
                            "eval")
    assert not np.array_equal(other_seed["image"], out["image"])   # a different sample
    fakes.check_eval_sharding(fakes.config("pixel_imagenet", root, synsets_file=synsets,
                                           batch_size=6))


def test_pixel_imagenet_needs_synsets_and_masks(tmp_path):
    fakes.check_missing(fakes.config("pixel_imagenet", tmp_path), "eval",
                        "data.synsets_file is not set")
    synsets = write_synsets(tmp_path / "map_clsloc.txt")
    os.makedirs(tmp_path / "px" / "images")
    fakes.check_missing(fakes.config("pixel_imagenet", tmp_path / "px", synsets_file=synsets),
                        "eval", str(tmp_path / "px" / "masks"), also="Pixel-ImageNet")
