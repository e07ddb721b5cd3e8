"""Pixel-ImageNet (Zhang et al. 2020) foreground masks, for evaluating ImageNet models.

On-disk layout (`data.data_dir`, or `data.eval_data_dir` when it is the eval
set of imagenet64; https://github.com/Pixel-ImageNet/Pixel-ImageNet):
  masks/<wnid>/<stem>.png    the human-labelled masks (grey levels, > 127 = object)
  images/<wnid>/<stem>.JPEG  the ImageNet (ILSVRC2012 train) images they annotate;
                             may be a symlink to the extracted ILSVRC2012_img_train/
plus the class list `data.synsets_file` (a map_clsloc.txt, see
`fdm.data.imagenet64`) that turns a wnid into the standard class index.

Subset (seed 000 §2.4: "a randomly sampled subset, each class containing at
most 20 images"): for each class (sorted wnids) its mask stems are sorted and
permuted with `numpy.random.default_rng([data.seed, standard index])`; the
first `data.max_per_class` (default 20) are kept. Both splits are this subset
(it only evaluates). Output: 'image' uint8 [N, S, S, 3], 'mask' int32
[N, S, S] in {0, 1}, 'label' int32 [N] (standard ImageNet index), ordered by
class then sampled order.
"""
from __future__ import annotations

import os

import numpy as np

from fdm.data import folder, imagenet64

SOURCE = "https://github.com/Pixel-ImageNet/Pixel-ImageNet"
IMAGE_SOURCE = "https://image-net.org/download-images.php (ILSVRC2012 train images)"


def load(root: folder.DataDir, image_size: int, split: str, synsets_file: str = "",
         max_per_class: int = 20, seed: int = 0) -> dict:
    """The sampled subset (module doc), for either split."""
    index = imagenet64.standard_index(imagenet64.read_synsets(synsets_file))
    root.require("images", what="ImageNet images for Pixel-ImageNet (images/)",
                 source=IMAGE_SOURCE)
    items = sample(root, index, max_per_class, seed)
    return folder.load_examples(lambda item: _example(root, item, image_size), items)


def sample(root: folder.DataDir, index: dict[str, int], max_per_class: int,
           seed: int) -> list[tuple[str, str, int]]:
    """(wnid, stem, standard label) of the sampled masks, by class then sampled order."""
    mask_dir = root.require("masks", what="Pixel-ImageNet masks (masks/)", source=SOURCE)
    items = []
    for wnid in sorted(os.listdir(mask_dir)):
        if wnid not in index:
            continue
        stems = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(mask_dir, wnid))
                       if n.endswith(".png"))
        order = np.random.default_rng([seed, index[wnid]]).permutation(len(stems))
        items += [(wnid, stems[i], index[wnid]) for i in order[:max_per_class]]
    return items


def _example(root: folder.DataDir, item: tuple[str, str, int], image_size: int) -> dict:
    wnid, stem, label = item
    return {"image": folder.load_image(root.join("images", wnid, stem + ".JPEG"), image_size),
            "mask": folder.load_mask(root.join("masks", wnid, stem + ".png"), image_size),
            "label": np.int32(label)}
