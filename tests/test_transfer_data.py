"""fdm.data.transfer on fakes of the published layouts (tests/data_fakes.py: every image is
one flat colour of its label, so images and labels can be checked against each other)."""
import hashlib
import inspect
import os
import pickle

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fdm.data import folder, transfer
from fdm.errors import UserError
from tests import data_fakes as fakes

NAMES = sorted(transfer.TRANSFER)
OFFICIAL_VAL = ("aircraft", "dtd", "flowers102")
HELD_OUT = tuple(n for n in NAMES if n not in OFFICIAL_VAL)
# train / val / test of each fake (caltech101: the suite's draw from 33 + 31 + 32 images).
FAKE_SIZES = {"aircraft": (12, 4, 5), "caltech101": (51, 12, 33), "cars": (10, 2, 5),
              "cifar10": (12, 3, 5), "cifar100": (10, 2, 5), "dtd": (12, 4, 5),
              "flowers102": (12, 4, 5), "food101": (10, 2, 5), "pets": (10, 2, 5),
              "sun397": (10, 2, 5)}
# Caltech-101's images per class, in the sorted class order (BACKGROUND_Google first): 9144.
CALTECH101_COUNTS = (
    467, 435, 435, 200, 798, 55, 800, 42, 42, 47, 54, 46, 33, 128, 98, 43, 85, 91, 50, 43, 123,
    47, 59, 62, 107, 47, 69, 73, 70, 50, 51, 57, 67, 52, 65, 68, 75, 64, 53, 64, 85, 67, 67, 45,
    34, 34, 51, 99, 100, 42, 54, 88, 80, 31, 64, 86, 114, 61, 81, 78, 41, 66, 43, 40, 87, 32, 76,
    55, 35, 39, 47, 38, 45, 53, 34, 57, 82, 59, 49, 40, 63, 39, 84, 57, 35, 64, 45, 86, 59, 64,
    35, 85, 49, 86, 75, 239, 37, 59, 34, 56, 39, 60)
# sha1 of " ".join("<label>:<image number>") over ssl-transfer's caltech101-splits/train.txt
# (github.com/linusericsson/ssl-transfer @ 416913f6ab567ac13e974cacc794e20c8be1c607).
SUITE_CALTECH_TRAIN_SHA1 = "4782a866260ef18403ddd799f041638fcb149d22"


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """{name: (root, {official split: labels})}, written once for the read-only tests."""
    out = {}
    for name, write in fakes.TRANSFER_FAKES.items():
        root = tmp_path_factory.mktemp(name)
        out[name] = (root, write(root))
    return out


def _suite_held_out(num, seed):
    """ssl-transfer linear.py get_train_valid_loader, verbatim in numpy: (train, val) rows."""
    state = np.random.get_state()
    indices = list(range(num))
    np.random.seed(seed)
    np.random.shuffle(indices)
    np.random.set_state(state)
    cut = int(np.floor(0.2 * num))
    return sorted(indices[cut:]), sorted(indices[:cut])


def _suite_caltech_train(labels):
    """ssl-transfer datasets/caltech101.py create_caltech101_splits: the drawn rows."""
    state = np.random.get_state()
    np.random.seed(0)
    rows = {label: [] for label in range(max(labels) + 1)}
    for i, label in enumerate(labels):
        rows[label].append(i)
    train = set()
    for label in rows:
        train.update(int(i) for i in np.random.choice(rows[label], 30))
    np.random.set_state(state)
    return sorted(train)


def _official_train(name, root, expected):
    """Labels of the official train list of a fake (caltech101: the suite's draw)."""
    if name == "caltech101":
        return [expected["all"][i] for i in _suite_caltech_train(expected["all"])]
    return expected["train"]


def _expected(name, root, expected, split):
    if name in OFFICIAL_VAL:
        return expected[split] if split != "trainval" else expected["train"] + expected["val"]
    if split == "test":
        if name == "caltech101":
            drawn = set(_suite_caltech_train(expected["all"]))
            return [y for i, y in enumerate(expected["all"]) if i not in drawn]
        return expected["test"]
    labels = _official_train(name, root, expected)
    train, val = _suite_held_out(len(labels), 0)
    rows = {"train": train, "val": val, "trainval": train + val}[split]
    return [labels[i] for i in rows]


@pytest.mark.parametrize("name", NAMES)
def test_labels_images_and_sizes_follow_the_lists(fake, name):
    root, expected = fake[name]
    for split in transfer.SPLITS:
        out = transfer.load_transfer(name, str(root), split, 8)
        n = len(out["label"])
        assert out["image"].shape == (n, 8, 8, 3) and out["image"].dtype == np.uint8
        assert out["label"].dtype == np.int32
        np.testing.assert_array_equal(out["label"], _expected(name, root, expected, split))
        np.testing.assert_array_equal(fakes.transfer_labels(out["image"]), out["label"])
    sizes = transfer.split_sizes(name, str(root))
    assert (sizes["train"], sizes["val"], sizes["test"]) == FAKE_SIZES[name]


@pytest.mark.parametrize("name", HELD_OUT)
def test_held_out_val_is_the_suites_and_deterministic(fake, name):
    root, _ = fake[name]
    items, labels = transfer.TRANSFER[name].read(folder.DataDir(str(root)), "train")
    train_rows, val_rows = _suite_held_out(len(items), 0)
    got = {s: transfer.split_items(name, str(root), s) for s in ("train", "val", "trainval")}
    for split, rows in (("train", train_rows), ("val", val_rows)):
        assert _keys(got[split][0]) == _keys([items[i] for i in rows])
        np.testing.assert_array_equal(got[split][1], np.asarray(labels)[rows])
    assert _keys(got["trainval"][0]) == _keys(got["train"][0] + got["val"][0])
    assert _keys(transfer.split_items(name, str(root), "val")[0]) == _keys(got["val"][0])
    other = transfer.split_items(name, str(root), "val", split_seed=1)[0]
    assert len(other) == len(val_rows) and _keys(other) != _keys(got["val"][0])


def _keys(items):
    return [i if isinstance(i, str) else hashlib.sha1(i.tobytes()).hexdigest() for i in items]


def test_caltech101_split_is_the_suites_published_list(tmp_path):
    """The suite's draw on Caltech-101's real class sizes (empty files, nothing decoded)
    gives ssl-transfer's caltech101-splits lists: 2416 train, 6728 test."""
    fakes.fake_caltech101(tmp_path, CALTECH101_COUNTS, empty=True)
    read = transfer.TRANSFER["caltech101"].read
    train, labels = read(folder.DataDir(str(tmp_path)), "train")
    assert len(train) == 2416 and len(read(folder.DataDir(str(tmp_path)), "test")[0]) == 6728
    pairs = " ".join(f"{y}:{int(p[-8:-4])}" for p, y in zip(train, labels))
    assert hashlib.sha1(pairs.encode()).hexdigest() == SUITE_CALTECH_TRAIN_SHA1
    assert transfer.split_sizes("caltech101", str(tmp_path)) == {"train": 1933, "val": 483,
                                                                 "test": 6728}


def test_resize_is_shorter_side_then_centre_crop(tmp_path):
    rng = np.random.default_rng(0)
    tall = rng.integers(0, 256, (13, 8, 3), np.uint8)           # short side already S = 8
    np.testing.assert_array_equal(transfer.suite_resize(tall, 8), tall[2:10])   # round(2.5)
    np.testing.assert_array_equal(transfer.suite_resize(tall.transpose(1, 0, 2), 8),
                                  tall.transpose(1, 0, 2)[:, 2:10])
    np.testing.assert_array_equal(transfer.suite_resize(tall[:8], 8), tall[:8])
    wide = np.zeros((16, 40, 3), np.uint8)                      # blue sides, red centre square
    wide[:] = (0, 0, 255)
    wide[:, 12:28] = (255, 0, 0)
    fakes.save(wide, tmp_path / "wide.png")
    out = transfer.suite_resize(str(tmp_path / "wide.png"), 8)  # 40x16 -> 20x8, crop 6..14
    assert out.shape == (8, 8, 3)
    assert (out[:, 1:7, 0] > 240).all() and (out[:, 1:7, 2] < 15).all()
    grey = Image.fromarray(wide).convert("L")                   # mode L becomes RGB
    grey.save(tmp_path / "grey.png")
    assert transfer.suite_resize(str(tmp_path / "grey.png"), 8).shape == (8, 8, 3)


@pytest.mark.parametrize("name", NAMES)
def test_missing_root_is_one_line_error(tmp_path, name):
    absent = tmp_path / "absent"
    for root, fragment in ((str(absent), str(absent)), ("", "is not set")):
        with pytest.raises(UserError) as err:
            transfer.load_transfer(name, root, "train", 8)
        message = str(err.value)
        assert "\n" not in message and fragment in message, message
        assert "--config.data.data_dir" in message and "http" in message, message
    with pytest.raises(UserError, match="data.eval_data_dir"):
        transfer.split_items(name, folder.DataDir(str(absent), "data.eval_data_dir"), "test")


@pytest.mark.parametrize("name, relpath, split", [
    ("aircraft", "fgvc-aircraft-2013b/data/images_variant_val.txt", "val"),
    ("aircraft", "fgvc-aircraft-2013b/data/variants.txt", "train"),
    ("cars", "stanford_cars/cars_test_annos_withlabels.mat", "test"),
    ("cars", "stanford_cars/cars_train", "val"),
    ("cifar100", "cifar-100-python/test", "test"),
    ("dtd", "dtd/labels/test1.txt", "test"),
    ("flowers102", "imagelabels.mat", "train"),
    ("food101", "food-101/meta/classes.txt", "train"),
    ("pets", "annotations/test.txt", "test"),
    ("sun397", "Partitions/Testing_01.txt", "test"),
])
def test_missing_file_is_one_line_error(tmp_path, name, relpath, split):
    fakes.TRANSFER_FAKES[name](tmp_path)
    path = tmp_path / relpath
    fakes.remove(path)
    with pytest.raises(UserError) as err:
        transfer.load_transfer(name, str(tmp_path), split, 8)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "http" in message, message


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


# (dataset, file to corrupt, corruption, split to load, fragment of the error)
MALFORMED = [
    ("aircraft", "fgvc-aircraft-2013b/data/images_variant_train.txt",
     lambda p: _write(p, "1000000\n"), "train", "line 1"),
    ("aircraft", "fgvc-aircraft-2013b/data/images_variant_test.txt",
     lambda p: _write(p, "1000200 Concorde\n"), "test", "'Concorde' is not one of"),
    ("caltech101", "caltech101/101_ObjectCategories/Faces/image_0001.jpg",
     lambda p: [os.unlink(f) for f in p.parent.iterdir()], "test", "no images in"),
    ("cars", "stanford_cars/cars_test_annos_withlabels.mat",
     lambda p: fakes._cars_annotations(p, ["00001.jpg"], None), "test", "'class'"),
    ("cars", "stanford_cars/devkit/cars_train_annos.mat",
     lambda p: _write(p, "not a mat file"), "train", "MATLAB"),
    ("cifar10", "cifar-10-batches-py/test_batch",
     lambda p: _pickle(p, {"data": np.zeros((2, 3072), np.uint8)}), "test", "'labels'"),
    ("cifar100", "cifar-100-python/train",
     lambda p: _write(p, "garbage"), "val", "is not a CIFAR batch"),
    ("dtd", "dtd/labels/val1.txt", lambda p: _write(p, "banded_0001.jpg\n"), "val", "line 1"),
    ("flowers102", "setid.mat",
     lambda p: scipy.io.savemat(p, {"trnid": np.array([[1]])}), "test", "'tstid'"),
    ("flowers102", "imagelabels.mat",
     lambda p: scipy.io.savemat(p, {"labels": np.array([[1, 2]])}), "train", "outside 1..2"),
    ("food101", "food-101/meta/test.txt",
     lambda p: _write(p, "apple_pie/1 extra\n"), "test", "line 1"),
    ("food101", "food-101/meta/train.txt", lambda p: _write(p, "\n\n"), "train", "lists nothing"),
    ("pets", "annotations/trainval.txt",
     lambda p: _write(p, "Abyssinian_0 1 1 1\nAbyssinian_1 x 1 1\n"), "train", "line 2"),
    ("pets", "annotations/test.txt",
     lambda p: _write(p, "Abyssinian_100 99 1 1\n"), "test", "outside [0, 37)"),
    ("sun397", "Partitions/Testing_01.txt",
     lambda p: _write(p, "abbey/sun_1.jpg\n"), "test", "line 1"),
    ("sun397", "SUN397/ClassName.txt", lambda p: _write(p, "/a/abbey\n"), "train",
     "is not one of the 1 classes"),
]


@pytest.mark.parametrize("name, relpath, corrupt, split, fragment", MALFORMED,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MALFORMED)])
def test_malformed_list_is_one_line_error(tmp_path, name, relpath, corrupt, split, fragment):
    fakes.TRANSFER_FAKES[name](tmp_path)
    corrupt(tmp_path / relpath)
    with pytest.raises(UserError) as err:
        transfer.load_transfer(name, str(tmp_path), split, 8)
    message = str(err.value)
    assert "\n" not in message and fragment in message, message
    assert str(tmp_path) in message, message


@pytest.mark.parametrize("name, top", [("aircraft", "fgvc-aircraft-2013b"),
                                       ("caltech101", "caltech101"), ("cars", "stanford_cars"),
                                       ("cifar100", "cifar-100-python"), ("dtd", "dtd"),
                                       ("food101", "food-101"), ("sun397", "SUN397")])
def test_root_may_be_the_top_folder(tmp_path, name, top):
    if name == "sun397":
        fakes.fake_sun397(tmp_path, lists_in="SUN397")      # ssl-transfer keeps them there
    else:
        fakes.TRANSFER_FAKES[name](tmp_path)
    for split in ("train", "test"):
        a = transfer.split_items(name, str(tmp_path), split)
        b = transfer.split_items(name, str(tmp_path / top), split)
        assert _keys(a[0]) == _keys(b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("lists_in", ["", "SUN397"])
def test_sun397_partition_lists_beside_or_inside(tmp_path, lists_in):
    expected = fakes.fake_sun397(tmp_path, lists_in=lists_in)
    _, labels = transfer.split_items("sun397", str(tmp_path), "test")
    np.testing.assert_array_equal(labels, expected["test"])


def test_pets_paths_follow_trainval_list(fake):
    root, _ = fake["pets"]
    with open(root / "annotations" / "trainval.txt") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    _, val = _suite_held_out(len(ids), 0)
    items, _ = transfer.split_items("pets", str(root), "val")
    assert items == [os.path.join(str(root), "images", ids[i] + ".jpg") for i in val]


def test_registry_loader_maps_train_and_eval_splits(fake):
    root, _ = fake["pets"]
    load = transfer.registry_loader("pets")
    assert set(transfer.REGISTRY_OPTIONS) <= set(inspect.signature(load).parameters)
    data_dir = folder.DataDir(str(root))
    for split, key, own in (("train", "train_split", "trainval"), ("eval", "eval_split", "val"),
                            ("train", "train_split", "train"), ("eval", "eval_split", "test")):
        got = load(data_dir, 8, split, **{key: own})
        want = transfer.load_transfer("pets", str(root), own, 8)
        for k in ("image", "label"):
            np.testing.assert_array_equal(got[k], want[k])
    with pytest.raises(UserError, match="data.eval_split"):
        load(data_dir, 8, "eval", eval_split="trainval")
    with pytest.raises(UserError, match="data.train_split"):
        load(data_dir, 8, "train", train_split="test")


def test_unknown_name_split_and_size(fake):
    root, _ = fake["dtd"]
    with pytest.raises(UserError, match="unknown transfer dataset"):
        transfer.load_transfer("imagenet", str(root), "train", 8)
    with pytest.raises(UserError, match="unknown transfer dataset"):
        transfer.registry_loader("imagenet")
    with pytest.raises(UserError, match="transfer split"):
        transfer.split_items("dtd", str(root), "eval")
    with pytest.raises(UserError, match="data.image_size"):
        transfer.load_transfer("dtd", str(root), "train", (8, 8))
    assert {s.metric for s in transfer.TRANSFER.values()} == {"accuracy", "mean_per_class"}
    assert [n for n in NAMES if transfer.TRANSFER[n].metric == "mean_per_class"] == [
        "aircraft", "caltech101", "flowers102", "pets"]


def test_missing_listed_image_is_one_line_error(tmp_path):
    fakes.fake_food101(tmp_path)
    missing = tmp_path / "food-101" / "images" / "sushi" / "3.jpg"
    missing.unlink()
    with pytest.raises(UserError) as err:
        transfer.load_transfer("food101", str(tmp_path), "trainval", 8)
    assert "\n" not in str(err.value) and f"{missing} is listed but missing" in str(err.value)


def test_pdae_transfer_variants_follow_the_suite():
    """configs/pdae.py:transfer_NAME for every dataset of the suite, each with the suite's
    metric, a refit probe and the trainval / test splits."""
    from configs import pdae
    assert set(pdae.TRANSFER_PROBES) == set(transfer.TRANSFER)
    for name, spec in transfer.TRANSFER.items():
        c = pdae.get_config(f"transfer_{name}")
        assert c.data.dataset == f"transfer_{name}" and c.eval.probe_refit
        assert c.eval.probe_metric == spec.metric
        assert (c.data.train_split, c.data.eval_split) == ("trainval", "test")
        assert c.eval.probe_val_examples == pdae.TRANSFER_PROBES[name][0]
