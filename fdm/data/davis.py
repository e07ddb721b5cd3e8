"""DAVIS-2017 video frames with their object masks (zero-shot segmentation figures).

On-disk layout (`data.data_dir`, or `data.eval_data_dir` when it is an eval set;
= DAVIS/ of DAVIS-2017-trainval-480p.zip, https://davischallenge.org/davis2017/code.html):
  JPEGImages/480p/<sequence>/<frame:05d>.jpg
  Annotations/480p/<sequence>/<frame:05d>.png   palette PNG: 0 background, k = object k
  ImageSets/2017/{train,val}.txt                one sequence name per line

"train" = the sequences of train.txt, "eval" = those of val.txt, restricted to
`data.sequences` (comma-separated names) when that is non-empty. Every
annotated frame is one example, ordered by sequence then frame. `data.davis_label` >= 0 adds a constant
'label' (an ImageNet class for the class-conditional model; -1 = none).
Output: 'image' uint8 [N, S, S, 3], 'mask' int32 [N, S, S] (object ids; > 0 is
foreground), 'sequence' int32 [N] (index into the sorted sequence list of the
split), 'frame' int32 [N].
"""
from __future__ import annotations

import os

import numpy as np

from fdm.data import folder
from fdm.errors import UserError

SOURCE = "https://davischallenge.org/davis2017/code.html (DAVIS-2017-trainval-480p.zip)"


def load(root: folder.DataDir, image_size: int, split: str, sequences: str = "",
         davis_label: int = -1) -> dict:
    """Frames of the split's sequences (module doc)."""
    only = tuple(s.strip() for s in sequences.split(",") if s.strip())
    names = sequence_names(root, "train" if split == "train" else "val", only)
    items = [(s, name, frame) for s, name in enumerate(names)
             for frame in frames(root, name)]
    out = folder.load_examples(lambda item: _example(root, item, image_size), items)
    if davis_label >= 0:
        out["label"] = np.full(len(items), davis_label, np.int32)
    return out


def sequence_names(root: folder.DataDir, name: str, only: tuple) -> list[str]:
    """Sorted sequences of ImageSets/2017/<name>.txt, restricted to `only` if given."""
    path = root.require("ImageSets", "2017", f"{name}.txt",
                        what=f"DAVIS-2017 sequence list ({name}.txt)", source=SOURCE)
    names = sorted(folder.read_lines(path))
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise UserError(f"data.sequences {unknown} are not in {path}; use names listed there")
    return [n for n in names if not only or n in only]


def frames(root: folder.DataDir, sequence: str) -> list[int]:
    """Annotated frame numbers of a sequence, increasing."""
    ann = root.require("Annotations", "480p", sequence,
                       what=f"DAVIS-2017 annotations of {sequence}", source=SOURCE)
    return sorted(int(os.path.splitext(n)[0]) for n in os.listdir(ann) if n.endswith(".png"))


def _example(root: folder.DataDir, item: tuple[int, str, int], image_size: int) -> dict:
    index, sequence, frame = item
    image = folder.load_image(root.join("JPEGImages", "480p", sequence, f"{frame:05d}.jpg"),
                              image_size)
    objects = np.asarray(folder.open_image(root.join("Annotations", "480p", sequence,
                                                     f"{frame:05d}.png")))
    return {"image": image, "mask": folder.resize_label_map(objects, image_size),
            "sequence": np.int32(index), "frame": np.int32(frame)}
