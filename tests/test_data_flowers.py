"""fdm.data.flowers on a fake Flowers-102 in the official layout (jpg/, segmim/, setid.mat)."""
import os

import numpy as np
import pytest
import scipy.io

from fdm.data import flowers
from tests import data_fakes as fakes

SPLITS = {"tstid": [1, 2, 3, 4], "valid": [5, 6], "trnid": [7, 8, 9]}   # IEM: train/val/test


def write_flowers(root, width=48, height=36):
    """9 photos with a red flower; segmim = the photo with a pure-blue (0, 0, 254) background."""
    os.makedirs(root / "jpg")
    os.makedirs(root / "segmim")
    for i, box in enumerate(fakes.boxes(9, width, height), start=1):
        rgb, mask = fakes.scene(width, height, box)
        fakes.save(rgb, root / "jpg" / f"image_{i:05d}.jpg")
        segmim = np.where(mask[..., None], rgb, np.array([0, 0, 254], np.uint8))
        fakes.save(segmim.astype(np.uint8), root / "segmim" / f"segmim_{i:05d}.jpg")
    scipy.io.savemat(root / "setid.mat", {k: np.array([v]) for k, v in SPLITS.items()})
    return root


@pytest.fixture
def root(tmp_path):
    return write_flowers(tmp_path / "flowers102")


def test_iem_split_sizes_shapes_and_mask_alignment(root):
    cfg = fakes.config("flowers102", root)
    train = fakes.check_deterministic(cfg, "train")
    fakes.check_arrays(train, 4, 16, mask_values=(0, 1))
    fakes.assert_aligned(train["image"], train["mask"])
    test = fakes.load(cfg, "eval")
    fakes.check_arrays(test, 3, 16, mask_values=(0, 1))
    np.testing.assert_array_equal(test["image"][0], flowers.folder.load_image(
        str(root / "jpg" / "image_00007.jpg"), 16))                 # test = trnid, in id order
    val = fakes.load(fakes.config("flowers102", root, eval_split="val"), "eval")
    assert len(val["image"]) == 2


def test_background_rule_is_iem_redo():
    segmim = np.array([[[0, 0, 254], [0, 7, 9], [5, 0, 3], [9, 9, 254], [200, 30, 40]]],
                      np.uint8)
    np.testing.assert_array_equal(flowers.foreground(segmim), [[0, 0, 0, 0, 1]])


def test_train_batches_sharded_and_flipped_with_masks(root):
    fakes.check_train_batch(fakes.config("flowers102", root))
    fakes.check_eval_sharding(fakes.config("flowers102", root, batch_size=2))


@pytest.mark.parametrize("missing, named", [
    ("setid.mat", "setid.mat"), ("segmim", "segmim"), ("jpg", "jpg")])
def test_missing_files_one_line_error(root, missing, named):
    path = root / missing
    fakes.remove(path)
    message = fakes.check_missing(fakes.config("flowers102", root), "train",
                                  str(root / named), also="--config.data.data_dir")
    assert flowers.SOURCE in message


def test_unknown_eval_split(root):
    fakes.check_missing(fakes.config("flowers102", root, eval_split="trainval"), "eval",
                        "data.eval_split")
