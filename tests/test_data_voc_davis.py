"""fdm.data.voc (zero-shot per-class examples, Table 2.7 mapping) and fdm.data.davis."""
import os

import numpy as np
import pytest
from PIL import Image

from fdm.data import voc
from tests import data_fakes as fakes

W, H = 30, 22
SQUARE = (slice(0, 4), slice(4, 8))          # a blue square above the central crop's centre
BLUE = (20, 20, 200)


def save_palette_png(labels: np.ndarray, path):
    im = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.astype(np.uint8).tobytes())
    im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)


def labelled_scene(box, red_class, square_class, void_border=False):
    """(rgb, labels): red rectangle = red_class, optional blue square = square_class."""
    rgb, mask = fakes.scene(W, H, box)
    labels = np.where(mask, red_class, 0).astype(np.uint8)
    if void_border and box[1] > 0:
        labels[box[1] - 1, box[0]:box[2]] = 255
    if square_class:
        rgb[SQUARE] = BLUE
        labels[SQUARE] = square_class
    return rgb, labels


VAL = [(1, 0), (15, 20), (1, 20)]            # (red class, square class) per val image
TRAIN = [(8, 0), (12, 0)]


def write_voc(root):
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(root / d)
    boxes = fakes.boxes(5, W, H, seed=4)
    for name, rows, offset in (("val", VAL, 0), ("train", TRAIN, 3)):
        ids = []
        for j, (red, square) in enumerate(rows):
            image_id = f"2012_{offset + j:06d}"
            rgb, labels = labelled_scene(boxes[offset + j], red, square, void_border=True)
            fakes.save(rgb, root / "JPEGImages" / f"{image_id}.jpg")
            save_palette_png(labels, root / "SegmentationClass" / f"{image_id}.png")
            ids.append(image_id)
        (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture
def voc_root(tmp_path):
    return write_voc(tmp_path / "VOC2012")


def test_voc_zero_shot_examples_per_class(voc_root):
    cfg = fakes.config("voc2012", voc_root)
    out = fakes.check_deterministic(cfg, "eval")
    fakes.check_arrays(out, 5, 16, mask_values=(0, 1), extra_keys=("label", "voc_class"))
    np.testing.assert_array_equal(out["voc_class"], [1, 1, 15, 20, 20])
    np.testing.assert_array_equal(out["label"], [895, 895, 981, 664, 664])
    red = out["voc_class"] != 20
    fakes.assert_aligned(out["image"][red], out["mask"][red])
    square = out["mask"][~red]
    assert square[:, :4].sum() > 0 and square[:, 8:].sum() == 0
    assert len(fakes.load(cfg, "train")["image"]) == 2
    fakes.check_eval_sharding(fakes.config("voc2012", voc_root, batch_size=2))


def test_voc_mapping_table_is_table_2_7():
    assert [r[0] for r in voc.VOC_TO_IMAGENET] == list(range(1, 21))
    assert len({r[3] for r in voc.VOC_TO_IMAGENET}) == 20
    assert dict((r[1], r[2]) for r in voc.VOC_TO_IMAGENET)["person"] == 981


def test_voc_missing_list(voc_root):
    os.remove(voc_root / "ImageSets" / "Segmentation" / "val.txt")
    fakes.check_missing(fakes.config("voc2012", voc_root), "eval",
                        str(voc_root / "ImageSets" / "Segmentation" / "val.txt"),
                        also="host.robots.ox.ac.uk/pascal/VOC/voc2012")


def write_davis(root, sequences=(("bear", "val", 3), ("dog", "val", 2), ("car", "train", 2))):
    os.makedirs(root / "ImageSets" / "2017")
    lists = {"train": [], "val": []}
    for k, (seq, split, n) in enumerate(sequences):
        os.makedirs(root / "JPEGImages" / "480p" / seq)
        os.makedirs(root / "Annotations" / "480p" / seq)
        for f, box in enumerate(fakes.boxes(n, W, H, seed=k)):
            rgb, labels = labelled_scene(box, 1, 2)
            fakes.save(rgb, root / "JPEGImages" / "480p" / seq / f"{f:05d}.jpg")
            save_palette_png(labels, root / "Annotations" / "480p" / seq / f"{f:05d}.png")
        lists[split].append(seq)
    for split, names in lists.items():
        (root / "ImageSets" / "2017" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def test_davis_frames_masks_and_sequence_filter(tmp_path):
    root = write_davis(tmp_path / "DAVIS")
    cfg = fakes.config("davis2017", root)
    out = fakes.check_deterministic(cfg, "eval")
    fakes.check_arrays(out, 5, 16, mask_values=(0, 1, 2), extra_keys=("sequence", "frame"))
    np.testing.assert_array_equal(out["sequence"], [0, 0, 0, 1, 1])      # bear, dog (sorted)
    np.testing.assert_array_equal(out["frame"], [0, 1, 2, 0, 1])
    fakes.assert_aligned(out["image"], out["mask"] == 1)
    assert "label" not in out
    only = fakes.load(fakes.config("davis2017", root, sequences="dog", davis_label=153), "eval")
    assert len(only["image"]) == 2 and (only["label"] == 153).all()
    fakes.check_train_batch(fakes.config("davis2017", root), red_id=1)
    fakes.check_missing(fakes.config("davis2017", root, sequences="cat"), "eval",
                        "data.sequences ['cat']")


def test_davis_missing(tmp_path):
    fakes.check_missing(fakes.config("davis2017", tmp_path), "eval",
                        str(tmp_path / "ImageSets" / "2017" / "val.txt"), also="davischallenge")
