"""Linear-probe transfer datasets (seed 002, Table 4.1): the classification suite of the
SimCLR/BYOL linear-transfer evaluation (Kornblith et al. 2019), read from the official
archives in their published layouts; nothing is downloaded.

`load_transfer(name, root, split, image_size, split_seed=0)` -> {'image': uint8 [N, S, S, 3],
'label': int32 [N]} for split "train", "val", "test" or "trainval", in memory, for the
frozen-feature probes (`fdm.metrics.probes`; the evaluation gets these arrays handed in).
`split_items` lists a split (paths or arrays, labels) without decoding it; `split_sizes`
counts; `registry_loader(name)` is the `fdm.data.DATASETS` form; `TRANSFER[name]` holds
the class count and the suite's metric.

Protocol (as the runnable reference of the suite, ssl-transfer, Ericsson et al. 2021,
https://github.com/linusericsson/ssl-transfer, linear.py and datasets/*.py):
  splits   the official train / val / test lists where a dataset has a val list (aircraft,
           dtd, flowers102). Elsewhere "val" is a held-out fraction VAL_FRACTION = 0.2 of
           the official train list: with P = np.random.RandomState(split_seed)
           .permutation(N) (the same permutation as the suite's np.random.seed(0);
           np.random.shuffle(list(range(N)))), the rows P[:floor(0.2 N)] are "val" and
           the rest "train"; both in the dataset's order. split_seed = 0 is the suite's.
           "trainval" = the "train" rows then the "val" rows (the suite refits the chosen
           regularisation on it; as the probes' train split of `fdm.models.pdae` with
           eval.probe_val_examples = the val size, its last rows are exactly "val").
  resize   the suite's evaluation transform: Resize(S) with bicubic filtering (shorter
           side to S, longer side int(S * long / short)), then CenterCrop(S) (offsets
           round((side - S) / 2)); images converted to RGB. An S x S image is unchanged.
  labels   the suite's class indices (below); `TRANSFER[name].metric` is "accuracy" or
           "mean_per_class" (the mean of the per-class recalls: aircraft, caltech101,
           flowers102, pets, as the suite and brief D12).

Datasets, layout under `root` (the folder the archives were extracted into; where a top
folder is named, root may also be that folder itself), and the sizes at split_seed 0 on
the full data (train / val / test, classes):
  aircraft    FGVC-Aircraft 2013b, variant level (torchvision.datasets.FGVCAircraft):
              fgvc-aircraft-2013b/data/{images/<id>.jpg, variants.txt,
              images_variant_{train,val,test}.txt ("<id> <variant>" lines)}; label = index
              of the variant in sorted(variants.txt). 3334 / 3333 / 3333, 100.
  caltech101  Caltech-101 (torchvision.datasets.Caltech101): [caltech101/]
              101_ObjectCategories/<class>/image_<nnnn>.jpg; classes = the sorted folders,
              BACKGROUND_Google included (the suite's 102 classes, as Kornblith et al.'s);
              images sorted by name. No official split: the suite's draw, per class in
              label order, np.random.RandomState(0).choice(class rows, 30) with
              replacement; the distinct drawn rows are train, the rest test
              (CALTECH_TRAIN_PER_CLASS, CALTECH_SPLIT_SEED; it reproduces ssl-transfer's
              caltech101-splits/train.txt, checked in the tests). 1933 / 483 / 6728, 102.
  cars        Stanford Cars (torchvision.datasets.StanfordCars): [stanford_cars/]
              {devkit/cars_train_annos.mat, cars_train/, cars_test/,
              cars_test_annos_withlabels.mat (or devkit/...; the labelled test
              annotations are a separate file, cars_test_annos.mat has no labels)}; the
              .mat 'annotations' struct's 'fname' and 'class'; label = class - 1.
              6516 / 1628 / 8041, 196.
  cifar10     CIFAR-10, python version: cifar-10-batches-py/{data_batch_1..5, test_batch}
              pickles ('data' [N, 3072] uint8, 'labels'). 40000 / 10000 / 10000, 10.
  cifar100    CIFAR-100, python version: cifar-100-python/{train, test} pickles ('data',
              'fine_labels'; the fine labels; 'meta' holds the names and is not read).
              40000 / 10000 / 10000, 100.
  dtd         DTD r1.0.1 (torchvision.datasets.DTD), partition 1: dtd/{images/<class>/,
              labels/{train,val,test}1.txt ("<class>/<image>.jpg" lines)}; label = index
              in the sorted folders of images/. 1880 / 1880 / 1880, 47.
  flowers102  Oxford Flowers-102 (torchvision.datasets.Flowers102): [flowers-102/]{jpg/,
              imagelabels.mat, setid.mat}; the official lists train = trnid, val = valid,
              test = tstid (read by `fdm.data.flowers.split_ids`, in increasing id
              order; not the IEM remapping of `fdm.data.flowers`); label = labels - 1.
              1020 / 1020 / 6149, 102.
  food101     Food-101 (torchvision.datasets.Food101): food-101/{images/<class>/<id>.jpg,
              meta/classes.txt, meta/{train,test}.txt ("<class>/<id>" lines, the lists of
              the meta/*.json the suite reads)}; label = index in classes.txt.
              60600 / 15150 / 25250, 101.
  pets        Oxford-IIIT Pets (torchvision.datasets.OxfordIIITPet): [oxford-iiit-pet/]
              {images/<id>.jpg, annotations/{trainval,test}.txt ("<id> <class id>
              <species> <breed id>" lines)}; official train = trainval.txt; label =
              class id - 1. 2944 / 736 / 3669, 37.
  sun397      SUN397, partition 01 (the suite's): [SUN397/]{ClassName.txt ("/a/abbey"
              lines), <letter>/<class>/<image>.jpg} from SUN397.tar.gz, and
              Training_01.txt / Testing_01.txt ("/<letter>/<class>/<image>.jpg" lines) of
              Partitions.zip, found in root, root/Partitions or root/SUN397; label = index
              of the class in sorted ClassName.txt. 15880 / 3970 / 19850, 397.

Errors: a missing root, folder or list file is a one-line `UserError` naming the path,
where to get it and the config key (`folder.DataDir.require`); a list line, .mat,
pickle or class that does not parse is a one-line UserError naming the file and line.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import re
from typing import Callable, Sequence

import numpy as np
import scipy.io
from PIL import Image

from fdm.data import flowers, folder
from fdm.errors import UserError

SPLITS = ("train", "val", "test", "trainval")
VAL_FRACTION = 0.2
CALTECH_TRAIN_PER_CLASS = 30
CALTECH_SPLIT_SEED = 0
DTD_PARTITION = 1
SUN397_PARTITION = "01"
FLOWERS_SETID = {"train": "trnid", "val": "valid", "test": "tstid"}
REGISTRY_OPTIONS = {"train_split": "train", "eval_split": "test", "split_seed": 0}

Items = list  # per example: an image path (str) or an image uint8 [H, W, 3]


@dataclasses.dataclass(frozen=True)
class Transfer:
    """One dataset: read(root, official split) -> (items, labels int [N]); its official
    splits (with "val" or without); class count; the suite's metric; where to get it."""
    read: Callable[[folder.DataDir, str], tuple[Items, np.ndarray]]
    official: tuple[str, ...]
    num_classes: int
    metric: str
    source: str


def load_transfer(name: str, root: str | folder.DataDir, split: str, image_size: int,
                  split_seed: int = 0) -> dict[str, np.ndarray]:
    """Split `split` of transfer dataset `name` under `root` (module doc): {'image': uint8
    [N, S, S, 3] resized as the suite, 'label': int32 [N]}. A str root is named
    data.data_dir in the error messages."""
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise UserError(f"data.image_size={image_size!r} is invalid for the transfer dataset "
                        f"{name}; use one positive int (square images)")
    items, labels = split_items(name, root, split, split_seed)
    if not items:
        raise UserError(f"split {split!r} of {name} under {_as_dir(root).path} is empty; the "
                        f"files do not match the dataset of {_spec(name).source}")
    source = _spec(name).source

    def example(item):
        if isinstance(item, str) and not os.path.exists(item):
            raise UserError(f"{item} is listed but missing; re-extract the images of {source}")
        return {"image": suite_resize(item, int(image_size))}

    return {"image": folder.load_examples(example, items)["image"],
            "label": labels.astype(np.int32)}


def split_items(name: str, root: str | folder.DataDir, split: str,
                split_seed: int = 0) -> tuple[Items, np.ndarray]:
    """(items, labels int32 [N]) of split `split` (module doc), nothing decoded."""
    spec, root = _spec(name), _as_dir(root)
    folder.check_choice("transfer split", split, SPLITS)
    if split == "trainval":
        (train, y_train), (val, y_val) = (split_items(name, root, s, split_seed)
                                          for s in ("train", "val"))
        return train + val, np.concatenate([y_train, y_val])
    if "val" in spec.official or split == "test":
        items, labels = spec.read(root, split)
    else:                                   # train / val: held out of the official train
        items, labels = spec.read(root, "train")
        rows = held_out(len(items), split_seed)[split == "val"]
        if not len(rows):
            raise UserError(f"{name} under {root.path} has {len(items)} train images, too "
                            f"few to hold out a val fraction of {VAL_FRACTION}")
        items, labels = [items[i] for i in rows], np.asarray(labels)[rows]
    labels = np.asarray(labels, np.int64)
    bad = labels[(labels < 0) | (labels >= spec.num_classes)]
    if bad.size:
        raise UserError(f"{name} under {root.path}: class index {int(bad[0])} is outside [0, "
                        f"{spec.num_classes}); the lists do not match the dataset of "
                        f"{spec.source}")
    return items, labels.astype(np.int32)


def split_sizes(name: str, root: str | folder.DataDir, split_seed: int = 0) -> dict[str, int]:
    """{split: number of examples} for train, val and test (lists only, nothing decoded)."""
    return {s: len(split_items(name, root, s, split_seed)[0]) for s in ("train", "val", "test")}


def held_out(num: int, seed: int, fraction: float = VAL_FRACTION) -> tuple[np.ndarray, ...]:
    """(train rows, val rows), each increasing: the suite's held-out val (module doc)."""
    order = np.random.RandomState(seed).permutation(num)
    cut = int(np.floor(fraction * num))
    return np.sort(order[cut:]), np.sort(order[:cut])


def suite_resize(item: str | np.ndarray, size: int) -> np.ndarray:
    """One image (path or uint8 [H, W, 3]) as the suite's eval transform: uint8 [S, S, 3]."""
    image = (folder.open_image(item) if isinstance(item, str) else Image.fromarray(item))
    image = image.convert("RGB")
    w, h = image.size
    if (w, h) != (size, size):
        new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        image = image.resize(new, Image.Resampling.BICUBIC)
        left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def registry_loader(name: str) -> Callable[..., dict[str, np.ndarray]]:
    """`fdm.data.Dataset` loader of `name` (options REGISTRY_OPTIONS): the registry's
    "train" is data.train_split ("train" or "trainval"), "eval" is data.eval_split
    ("test" or "val"); data.split_seed seeds the held-out val."""
    _spec(name)
    return functools.partial(_registry_load, name)


def _registry_load(name, root, image_size, split, train_split="train", eval_split="test",
                   split_seed=0):
    if split == "train":
        own = folder.check_choice("data.train_split", train_split, ("train", "trainval"))
    else:
        own = folder.check_choice("data.eval_split", eval_split, ("test", "val"))
    return load_transfer(name, root, own, image_size, split_seed)


def _spec(name: str) -> Transfer:
    if name not in TRANSFER:
        raise UserError(f"unknown transfer dataset {name!r}; use one of {sorted(TRANSFER)}")
    return TRANSFER[name]


def _as_dir(root: str | folder.DataDir) -> folder.DataDir:
    return root if isinstance(root, folder.DataDir) else folder.DataDir(str(root))


# ---- shared readers ------------------------------------------------------------------

def _base(root: folder.DataDir, tops: Sequence[str], probe: str, what: str,
          source: str) -> folder.DataDir:
    """The dataset folder: root/top for the first top ("" = root) that holds `probe`;
    else the one-line UserError for root/tops[0]/probe."""
    if root.path and os.path.isdir(root.path):
        for top in tops:
            if os.path.exists(os.path.join(root.path, top, probe)):
                return folder.DataDir(os.path.join(root.path, top) if top else root.path,
                                      root.key)
    root.require(*[p for p in (tops[0], probe) if p], what=what, source=source)
    raise AssertionError("unreachable: require raised")


def _first(root: folder.DataDir, candidates: Sequence[str], what: str, source: str) -> str:
    """root/c for the first existing candidate c; else the UserError for the first one."""
    for c in candidates:
        if os.path.exists(root.join(c)):
            return root.join(c)
    return root.require(candidates[0], what=what, source=source)


def _parse_list(path: str, pattern: str, expected: str, source: str) -> list[tuple[str, ...]]:
    """The regex groups of every line of a list file (blank and '#' lines skipped); a
    one-line UserError naming the file and line when one does not match."""
    regex, rows = re.compile(pattern), []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}); replace it with the file "
                        f"of {source}") from e
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = regex.fullmatch(line)
        if match is None:
            raise UserError(f"{path} line {number}: {line[:80]!r} is not '{expected}'; replace "
                            f"the file with the one of {source}")
        rows.append(match.groups())
    if not rows:
        raise UserError(f"{path} lists nothing; replace it with the file of {source}")
    return rows


def _class_index(names: Sequence[str], classes: Sequence[str], path: str,
                 source: str) -> np.ndarray:
    """Index of every class name in `classes`; a UserError for a name not there."""
    index = {c: i for i, c in enumerate(classes)}
    for name in names:
        if name not in index:
            raise UserError(f"{path}: class {name!r} is not one of the {len(classes)} classes "
                            f"of the dataset; replace the file with the one of {source}")
    return np.array([index[n] for n in names], np.int64)


def _subfolders(path: str) -> list[str]:
    """Sorted names of the folders in `path` (torchvision's ImageFolder classes)."""
    return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))


def _loadmat(path: str, keys: Sequence[str], source: str) -> dict:
    """scipy.io.loadmat (squeezed) with `keys` present; a one-line UserError otherwise."""
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True)
    except Exception as e:  # noqa: BLE001 - scipy raises many types for a bad file
        raise UserError(f"cannot read {path} as a MATLAB file ({type(e).__name__}); replace it "
                        f"with the file of {source}") from e
    missing = [k for k in keys if k not in mat]
    if missing:
        raise UserError(f"{path} has no {missing}; replace it with the file of {source}")
    return mat


# ---- the datasets --------------------------------------------------------------------

AIRCRAFT_SOURCE = ("https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ "
                   "(fgvc-aircraft-2013b.tar.gz)")


def _aircraft(root, split):
    base = _base(root, ("fgvc-aircraft-2013b", ""), "data", "FGVC-Aircraft (data/ of "
                 "fgvc-aircraft-2013b.tar.gz)", AIRCRAFT_SOURCE)
    what = "FGVC-Aircraft {} of fgvc-aircraft-2013b.tar.gz"
    variants = base.require("data", "variants.txt", what=what.format("variants.txt"),
                            source=AIRCRAFT_SOURCE)
    classes = sorted(r[0] for r in _parse_list(variants, r"(.+)", "<variant>", AIRCRAFT_SOURCE))
    name = f"images_variant_{split}.txt"
    path = base.require("data", name, what=what.format(name), source=AIRCRAFT_SOURCE)
    rows = _parse_list(path, r"(\S+) (.+)", "<image id> <variant>", AIRCRAFT_SOURCE)
    images = base.require("data", "images", what=what.format("data/images/"),
                          source=AIRCRAFT_SOURCE)
    return ([os.path.join(images, i + ".jpg") for i, _ in rows],
            _class_index([v for _, v in rows], classes, path, AIRCRAFT_SOURCE))


CALTECH_SOURCE = ("https://data.caltech.edu/records/mzrjq-6wc02 (caltech-101.zip: "
                  "101_ObjectCategories.tar.gz)")


def _caltech101(root, split):
    base = _base(root, ("", "caltech101"), "101_ObjectCategories",
                 "Caltech-101 images (101_ObjectCategories/)", CALTECH_SOURCE)
    categories = base.join("101_ObjectCategories")
    paths, labels = [], []
    for label, name in enumerate(_subfolders(categories)):
        files = folder._files_with_extensions(os.path.join(categories, name))
        if not files:
            raise UserError(f"no images in {os.path.join(categories, name)}; re-extract "
                            f"101_ObjectCategories from {CALTECH_SOURCE}")
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise UserError(f"no class folders in {categories}; extract 101_ObjectCategories of "
                        f"{CALTECH_SOURCE} there")
    labels = np.array(labels)
    train = np.zeros(len(paths), bool)
    rng = np.random.RandomState(CALTECH_SPLIT_SEED)      # the suite's draw (module doc)
    for label in range(labels.max() + 1):
        train[rng.choice(np.flatnonzero(labels == label), CALTECH_TRAIN_PER_CLASS)] = True
    rows = np.flatnonzero(train if split == "train" else ~train)
    return [paths[i] for i in rows], labels[rows]


CARS_SOURCE = ("https://ai.stanford.edu/~jkrause/cars/car_dataset.html (cars_train.tgz, "
               "cars_test.tgz, car_devkit.tgz, cars_test_annos_withlabels.mat; mirrors: "
               "https://github.com/pytorch/vision/issues/7545)")


def _cars(root, split):
    base = _base(root, ("", "stanford_cars"), "devkit", "Stanford Cars devkit (devkit/ of "
                 "car_devkit.tgz)", CARS_SOURCE)
    if split == "train":
        mat = base.require("devkit", "cars_train_annos.mat", what="Stanford Cars train "
                           "annotations (devkit/cars_train_annos.mat)", source=CARS_SOURCE)
    else:
        mat = _first(base, ("cars_test_annos_withlabels.mat",
                            "devkit/cars_test_annos_withlabels.mat"),
                     "Stanford Cars test labels (cars_test_annos_withlabels.mat)", CARS_SOURCE)
    images = base.require(f"cars_{split}", what=f"Stanford Cars images (cars_{split}/ of "
                          f"cars_{split}.tgz)", source=CARS_SOURCE)
    annotations = np.atleast_1d(_loadmat(mat, ["annotations"], CARS_SOURCE)["annotations"])
    fields = annotations.dtype.names or ()
    if not {"fname", "class"} <= set(fields):
        raise UserError(f"{mat} annotations lack the 'fname' and 'class' fields (fields: "
                        f"{list(fields)}); for the test split use cars_test_annos_withlabels.mat "
                        f"of {CARS_SOURCE}")
    return ([os.path.join(images, str(f)) for f in annotations["fname"]],
            np.array([int(c) for c in annotations["class"]]) - 1)


CIFAR_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html ({}, python version)"


def _cifar(top: str, files: dict[str, tuple[str, ...]], label_key: str, archive: str):
    """Reader of a CIFAR python-version folder `top`: files per split, the label key."""
    source = CIFAR_SOURCE.format(archive)

    def read(root, split):
        base = _base(root, (top, ""), files["train"][0], f"CIFAR ({top}/ of {archive})",
                     source)
        images, labels = [], []
        for name in files[split]:
            path = base.require(name, what=f"CIFAR {name} of {archive}", source=source)
            try:
                with open(path, "rb") as f:
                    batch = pickle.load(f, encoding="latin1")
                batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
                data = np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(batch[label_key], np.int64).reshape(-1)
                if len(y) != len(data):
                    raise ValueError("label count")
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, KeyError,
                    ValueError, TypeError) as e:
                raise UserError(f"{path} is not a CIFAR batch with 'data' [N, 3072] and "
                                f"{label_key!r} ({type(e).__name__}: {e}); replace it with the "
                                f"file of {source}") from e
            images += list(np.ascontiguousarray(data.transpose(0, 2, 3, 1)))
            labels.append(y)
        return images, np.concatenate(labels)

    return read


DTD_SOURCE = "https://www.robots.ox.ac.uk/~vgg/data/dtd/ (dtd-r1.0.1.tar.gz)"


def _dtd(root, split):
    base = _base(root, ("dtd", ""), "labels", "DTD (dtd/ of dtd-r1.0.1.tar.gz)", DTD_SOURCE)
    images = base.require("images", what="DTD images (dtd/images/)", source=DTD_SOURCE)
    name = f"{split}{DTD_PARTITION}.txt"
    path = base.require("labels", name, what=f"DTD split list labels/{name}", source=DTD_SOURCE)
    rows = _parse_list(path, r"(([^/\s]+)/[^/]+)", "<class>/<image>.jpg", DTD_SOURCE)
    return ([os.path.join(images, p) for p, _ in rows],
            _class_index([c for _, c in rows], _subfolders(images), path, DTD_SOURCE))


def _flowers102(root, split):
    source = flowers.SOURCE + " (102flowers.tgz, imagelabels.mat, setid.mat)"
    base = _base(root, ("", "flowers-102"), "setid.mat", "Flowers-102 splits (setid.mat)",
                 source)
    iem_name = {v: k for k, v in flowers.SETID_KEYS.items()}[FLOWERS_SETID[split]]
    try:
        ids = np.array(flowers.split_ids(base, iem_name), np.int64)
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"{base.join('setid.mat')} has no integer {FLOWERS_SETID[split]!r} "
                        f"list; replace it with the file of {source}") from e
    mat = base.require("imagelabels.mat", what="Flowers-102 labels (imagelabels.mat)",
                       source=source)
    all_labels = np.ravel(_loadmat(mat, ["labels"], source)["labels"]).astype(np.int64)
    if not ids.size or ids.min() < 1 or ids.max() > len(all_labels):
        raise UserError(f"{base.join('setid.mat')} {FLOWERS_SETID[split]!r} lists image ids "
                        f"outside 1..{len(all_labels)}, the images {mat} labels; replace them "
                        f"with the files of {source}")
    jpg = base.require("jpg", what="Flowers-102 images (jpg/ of 102flowers.tgz)", source=source)
    return [os.path.join(jpg, f"image_{i:05d}.jpg") for i in ids], all_labels[ids - 1] - 1


FOOD_SOURCE = "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ (food-101.tar.gz)"


def _food101(root, split):
    base = _base(root, ("food-101", ""), "meta", "Food-101 (food-101/ of food-101.tar.gz)",
                 FOOD_SOURCE)
    classes_txt = base.require("meta", "classes.txt", what="Food-101 meta/classes.txt",
                               source=FOOD_SOURCE)
    classes = [r[0] for r in _parse_list(classes_txt, r"(\S+)", "<class>", FOOD_SOURCE)]
    path = base.require("meta", f"{split}.txt", what=f"Food-101 meta/{split}.txt",
                        source=FOOD_SOURCE)
    rows = _parse_list(path, r"(([^/\s]+)/[^/\s]+)", "<class>/<image id>", FOOD_SOURCE)
    images = base.require("images", what="Food-101 images (food-101/images/)",
                          source=FOOD_SOURCE)
    return ([os.path.join(images, p + ".jpg") for p, _ in rows],
            _class_index([c for _, c in rows], classes, path, FOOD_SOURCE))


PETS_SOURCE = ("https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz, "
               "annotations.tar.gz)")


def _pets(root, split):
    base = _base(root, ("", "oxford-iiit-pet"), "annotations", "Oxford-IIIT Pets annotations "
                 "(annotations/ of annotations.tar.gz)", PETS_SOURCE)
    name = "trainval.txt" if split == "train" else "test.txt"
    path = base.require("annotations", name, what=f"Oxford-IIIT Pets annotations/{name}",
                        source=PETS_SOURCE)
    rows = _parse_list(path, r"(\S+) (\d+) \d+ \d+", "<image id> <class id> <species> "
                       "<breed id>", PETS_SOURCE)
    images = base.require("images", what="Oxford-IIIT Pets images (images/ of images.tar.gz)",
                          source=PETS_SOURCE)
    return ([os.path.join(images, i + ".jpg") for i, _ in rows],
            np.array([int(c) for _, c in rows]) - 1)


SUN397_SOURCE = ("https://vision.princeton.edu/projects/2010/SUN/ (SUN397.tar.gz, "
                 "download/Partitions.zip)")


def _sun397(root, split):
    base = _base(root, ("SUN397", ""), "ClassName.txt", "SUN397 (SUN397/ of SUN397.tar.gz)",
                 SUN397_SOURCE)
    class_txt = base.join("ClassName.txt")
    classes = sorted(r[0] for r in _parse_list(class_txt, r"/[^/]/(.+)", "/<letter>/<class>",
                                               SUN397_SOURCE))
    name = f"{'Training' if split == 'train' else 'Testing'}_{SUN397_PARTITION}.txt"
    path = _first(root, [os.path.join(d, name) for d in ("Partitions", "", "SUN397")],
                  f"SUN397 partition list {name} (Partitions.zip)", SUN397_SOURCE)
    rows = _parse_list(path, r"(/[^/]/(.+)/[^/]+)", "/<letter>/<class>/<image>.jpg",
                       SUN397_SOURCE)
    return ([base.path + p for p, _ in rows],
            _class_index([c for _, c in rows], classes, path, SUN397_SOURCE))


_HELD_OUT, _OFFICIAL_VAL = ("train", "test"), ("train", "val", "test")
TRANSFER: dict[str, Transfer] = {
    "aircraft": Transfer(_aircraft, _OFFICIAL_VAL, 100, "mean_per_class", AIRCRAFT_SOURCE),
    "caltech101": Transfer(_caltech101, _HELD_OUT, 102, "mean_per_class", CALTECH_SOURCE),
    "cars": Transfer(_cars, _HELD_OUT, 196, "accuracy", CARS_SOURCE),
    "cifar10": Transfer(_cifar("cifar-10-batches-py", {
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "labels", "cifar-10-python.tar.gz"), _HELD_OUT, 10, "accuracy",
        CIFAR_SOURCE.format("cifar-10-python.tar.gz")),
    "cifar100": Transfer(_cifar("cifar-100-python", {"train": ("train",), "test": ("test",)},
                                "fine_labels", "cifar-100-python.tar.gz"), _HELD_OUT, 100,
                         "accuracy", CIFAR_SOURCE.format("cifar-100-python.tar.gz")),
    "dtd": Transfer(_dtd, _OFFICIAL_VAL, 47, "accuracy", DTD_SOURCE),
    "flowers102": Transfer(_flowers102, _OFFICIAL_VAL, 102, "mean_per_class", flowers.SOURCE),
    "food101": Transfer(_food101, _HELD_OUT, 101, "accuracy", FOOD_SOURCE),
    "pets": Transfer(_pets, _HELD_OUT, 37, "mean_per_class", PETS_SOURCE),
    "sun397": Transfer(_sun397, _HELD_OUT, 397, "accuracy", SUN397_SOURCE),
}

__all__ = ["REGISTRY_OPTIONS", "SPLITS", "TRANSFER", "Transfer", "VAL_FRACTION", "held_out",
           "load_transfer", "registry_loader", "split_items", "split_sizes", "suite_resize"]
