"""fdm.data.celebamask on a fake CelebAMask-HQ: CelebA partition splits, 3-class masks."""
import os

import numpy as np
import pytest

from fdm.data import celebamask, folder
from tests import data_fakes as fakes

ORIG_FILES = ["000004.jpg", "170000.jpg", "190000.jpg", "200000.jpg"]   # train val test test
SIDE, MASK_SIDE = 64, 32


def write_part(root, idx, part, mask):
    d = root / "CelebAMask-HQ-mask-anno" / str(idx // 2000)
    os.makedirs(d, exist_ok=True)
    fakes.save(np.where(mask, 255, 0).astype(np.uint8), d / f"{idx:05d}_{part}.png")


def write_celebamask(root):
    """Image idx: red hair rectangle (the boxes), a skin-coloured face below it (nose, l_eye,
    eye_g on the face), cloth at the bottom. Masks at half the image resolution."""
    os.makedirs(root / "CelebA-HQ-img")
    lines = ["idx orig_idx orig_file"]
    for idx, box in enumerate(fakes.boxes(4, SIDE, SIDE, seed=3)):
        rgb, hair = fakes.scene(SIDE, SIDE, box)
        fakes.save(rgb, root / "CelebA-HQ-img" / f"{idx}.jpg")
        small = hair[::2, ::2]
        face = np.zeros_like(small)
        face[28:31, 4:28] = True
        face &= ~small
        write_part(root, idx, "skin", face)
        write_part(root, idx, "nose", face & (np.arange(MASK_SIDE) < 10))
        write_part(root, idx, "hair", small)
        write_part(root, idx, "cloth", np.zeros_like(small))
        lines.append(f"{idx} {int(ORIG_FILES[idx][:6]) - 1} {ORIG_FILES[idx]}")
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def root(tmp_path):
    return write_celebamask(tmp_path / "CelebAMask-HQ")


def test_celeba_partition_splits_and_hair_alignment(root):
    cfg = fakes.config("celebamask_hq", root)
    test = fakes.check_deterministic(cfg, "eval")
    fakes.check_arrays(test, 2, 16, mask_values=(0, 1, 2))
    fakes.assert_aligned(test["image"], test["mask"] == celebamask.HAIR)
    assert len(fakes.load(cfg, "train")["image"]) == 1
    assert len(fakes.load(fakes.config("celebamask_hq", root, eval_split="val"),
                          "eval")["image"]) == 1
    assert celebamask.split_ids(folder.DataDir(str(root)), "test") == [2, 3]


def test_parts_reduce_to_three_classes_in_official_order(root):
    full = np.ones((MASK_SIDE, MASK_SIDE), bool)
    top = np.zeros_like(full)
    top[:8] = True
    write_part(root, 3, "skin", full)
    write_part(root, 3, "l_eye", full)          # face part -> skin
    write_part(root, 3, "hair", top)
    write_part(root, 3, "neck_l", full)         # necklace -> background ...
    write_part(root, 3, "neck", ~top)           # ... but neck is painted after it -> skin
    write_part(root, 3, "cloth", np.zeros_like(full))
    labels = celebamask.label_map(folder.DataDir(str(root)), 3)
    assert labels.dtype == np.int32 and labels.shape == (MASK_SIDE, MASK_SIDE)
    np.testing.assert_array_equal(labels[:8], celebamask.BACKGROUND)
    np.testing.assert_array_equal(labels[8:], celebamask.SKIN)


def test_eval_sharding(root):
    fakes.check_eval_sharding(fakes.config("celebamask_hq", root, batch_size=2))


def test_missing_mapping_names_it(root):
    os.remove(root / "CelebA-HQ-to-CelebA-mapping.txt")
    fakes.check_missing(fakes.config("celebamask_hq", root), "eval",
                        str(root / "CelebA-HQ-to-CelebA-mapping.txt"),
                        also="switchablenorms/CelebAMask-HQ")


def test_missing_as_eval_set_names_eval_data_dir(tmp_path):
    cfg = fakes.config("ffhq", tmp_path, eval_dataset="celebamask_hq",
                       eval_data_dir=str(tmp_path / "celeba"))
    fakes.check_missing(cfg, "eval", str(tmp_path / "celeba"),
                        also="--config.data.eval_data_dir=DIR")
