"""PASCAL VOC 2012 segmentation as zero-shot evaluation of the ImageNet FDM (Table 2.7).

On-disk layout (`data.data_dir`, or `data.eval_data_dir` when it is the eval
set of imagenet64; = VOCdevkit/VOC2012 of VOCtrainval_11-May-2012.tar,
http://host.robots.ox.ac.uk/pascal/VOC/voc2012/):
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png                 palette PNG: 0 background, 1..20 the classes
                                             below, 255 void (object borders)
  ImageSets/Segmentation/{train,val}.txt     one <id> per line; "train" -> train.txt,
                                             "eval" -> val.txt (1449 images)

Zero-shot protocol (seed 000 §2.5.4, Table 2.7): the class-conditional ImageNet
model is run with the ImageNet class mapped from each VOC class, and each VOC
class is scored on its own. So every (image, VOC class present in it) pair is
one example: 'mask' = 1 on that class's pixels, 0 elsewhere (void pixels count
as background: the metrics have no ignore label), 'label' = the mapped
ImageNet class (standard sorted-synset index, as `fdm.data.imagenet64` gives
with data.synsets_file), 'voc_class' = 1..20. The per-class example counts on
val are Table 2.7's "Num. of VOC-val Image". Examples are ordered by VOC class,
then image id. Output: 'image' uint8 [N, S, S, 3], 'mask' int32 [N, S, S],
'label' int32 [N], 'voc_class' int32 [N].
"""
from __future__ import annotations

import numpy as np

from fdm.data import folder

SOURCE = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar)"
VOID = 255
# VOC class -> ImageNet class of Table 2.7: (VOC id, VOC name, ImageNet index, wnid, name).
VOC_TO_IMAGENET = (
    (1, "aeroplane", 895, "n04552348", "warplane"),
    (2, "bicycle", 671, "n03792782", "mountain bike"),
    (3, "bird", 94, "n01833805", "hummingbird"),
    (4, "boat", 814, "n04273569", "speedboat"),
    (5, "bottle", 907, "n04591713", "wine bottle"),
    (6, "bus", 779, "n04146614", "school bus"),
    (7, "car", 817, "n04285008", "sports car"),
    (8, "cat", 281, "n02123045", "tabby"),
    (9, "chair", 765, "n04099969", "rocking chair"),
    (10, "cow", 346, "n02408429", "water buffalo"),
    (11, "diningtable", 532, "n03201208", "dining table"),
    (12, "dog", 153, "n02085936", "Maltese dog"),
    (13, "horse", 603, "n03538406", "horse cart"),
    (14, "motorbike", 670, "n03791053", "motor scooter"),
    (15, "person", 981, "n09835506", "ballplayer"),
    (16, "pottedplant", 883, "n04522168", "vase"),
    (17, "sheep", 348, "n02412080", "ram"),
    (18, "sofa", 831, "n04344873", "studio couch"),
    (19, "train", 466, "n02917067", "bullet train"),
    (20, "tvmonitor", 664, "n03782006", "monitor"),
)
NUM_CLASSES = 21
IMAGENET_LABEL = np.array([-1] + [row[2] for row in VOC_TO_IMAGENET], np.int32)  # [21]


def load(root: folder.DataDir, image_size: int, split: str) -> dict:
    """(image, present class) examples of train.txt or val.txt (module doc)."""
    ids = image_ids(root, "train" if split == "train" else "val")
    root.require("JPEGImages", what="VOC 2012 images (JPEGImages/)", source=SOURCE)
    root.require("SegmentationClass", what="VOC 2012 masks (SegmentationClass/)", source=SOURCE)
    return per_class_examples(
        folder.load_examples(lambda i: _example(root, i, image_size), ids))


def image_ids(root: folder.DataDir, name: str) -> list[str]:
    """Image ids listed in ImageSets/Segmentation/<name>.txt."""
    path = root.require("ImageSets", "Segmentation", f"{name}.txt",
                        what=f"VOC 2012 segmentation list ({name}.txt)", source=SOURCE)
    return folder.read_lines(path)


def _example(root: folder.DataDir, image_id: str, image_size: int) -> dict[str, np.ndarray]:
    image = folder.load_image(root.join("JPEGImages", image_id + ".jpg"), image_size)
    classes = np.asarray(folder.open_image(root.join("SegmentationClass", image_id + ".png")))
    classes = np.where(classes == VOID, 0, classes)
    return {"image": image, "classes": folder.resize_label_map(classes, image_size),
            "present": np.bincount(classes.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES] > 0}


def per_class_examples(per_image: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-image 'image' [M,S,S,3], 'classes' [M,S,S], 'present' bool [M,21] -> the
    (image, class) examples of the module doc, ordered by class then image."""
    present = per_image["present"]
    pairs = [(c, i) for c in range(1, NUM_CLASSES) for i in np.flatnonzero(present[:, c])]
    cls = np.array([c for c, _ in pairs], np.int32)
    rows = np.array([i for _, i in pairs], np.int64)
    return {"image": per_image["image"][rows],
            "mask": (per_image["classes"][rows] == cls[:, None, None]).astype(np.int32),
            "label": IMAGENET_LABEL[cls], "voc_class": cls}
