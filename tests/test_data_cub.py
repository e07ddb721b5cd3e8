"""fdm.data.cub on a fake CUB_200_2011/ (images.txt, images/, segmentations/, ReDO split)."""
import os

import numpy as np
import pytest

from tests import data_fakes as fakes

FLAGS = [0, 0, 2, 0, 1, 2, 0, 2]          # ReDO train_val_test_split.txt: 4 train, 1 val, 3 test


def write_cub(root, width=40, height=52):
    names = [f"{c:03d}.Bird_{c}/Bird_{c}_{i:04d}_1.jpg" for i, c in enumerate([1, 1, 2, 2, 2,
                                                                               3, 3, 3])]
    for i, (name, box) in enumerate(zip(names, fakes.boxes(8, width, height))):
        rgb, mask = fakes.scene(width, height, box)
        os.makedirs((root / "images" / name).parent, exist_ok=True)
        os.makedirs((root / "segmentations" / name).parent, exist_ok=True)
        fakes.save(rgb, root / "images" / name)
        soft = np.where(mask, 230, 20).astype(np.uint8)          # annotator-agreement greys
        fakes.save(soft, root / "segmentations" / name.replace(".jpg", ".png"))
    (root / "images.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    (root / "train_val_test_split.txt").write_text(
        "".join(f"{i + 1} {f}\n" for i, f in enumerate(FLAGS)))
    return root


@pytest.fixture
def root(tmp_path):
    return write_cub(tmp_path / "CUB_200_2011")


def test_redo_split_sizes_shapes_alignment(root):
    cfg = fakes.config("cub", root, image_size=12)
    train = fakes.check_deterministic(cfg, "train")
    fakes.check_arrays(train, 4, 12, mask_values=(0, 1))
    fakes.assert_aligned(train["image"], train["mask"])
    test = fakes.load(cfg, "eval")
    fakes.check_arrays(test, 3, 12, mask_values=(0, 1))
    fakes.assert_aligned(test["image"], test["mask"])
    assert len(fakes.load(fakes.config("cub", root, eval_split="val"), "eval")["image"]) == 1


def test_sharding_and_flips(root):
    fakes.check_train_batch(fakes.config("cub", root, image_size=12))
    fakes.check_eval_sharding(fakes.config("cub", root, image_size=12, batch_size=2))


def test_missing_split_file_names_it_and_redo_url(root):
    os.remove(root / "train_val_test_split.txt")
    message = fakes.check_missing(fakes.config("cub", root), "train",
                                  str(root / "train_val_test_split.txt"),
                                  also="--config.data.data_dir")
    assert "github.com/mickaelChen/ReDO" in message


def test_missing_segmentations(root):
    for d, _, files in os.walk(root / "segmentations", topdown=False):
        for f in files:
            os.remove(os.path.join(d, f))
        os.rmdir(d)
    fakes.check_missing(fakes.config("cub", root), "eval", str(root / "segmentations"),
                        also="segmentations.tgz")


def test_unset_data_dir(tmp_path):
    fakes.check_missing(fakes.config("cub", ""), "train", "data.data_dir is not set")
