"""Tiny fake datasets for the loader tests, and the checks every loader shares.

A fake scene is a flat blue-grey background with one red rectangle; its mask
is 1 exactly on the rectangle. After any crop/resize/flip the mask must still
coincide with the red pixels (`assert_aligned`).
"""
from __future__ import annotations

import hashlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs.fdm_common import data_config
from fdm import data
from fdm.data import pipeline
from fdm.errors import UserError

BACKGROUND = (40, 90, 160)
RED = (230, 30, 30)


def scene(width: int, height: int, box: tuple[int, int, int, int]):
    """(rgb uint8 [h, w, 3], mask bool [h, w]): red rectangle box=(left, top, right, bottom)."""
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = BACKGROUND
    mask = np.zeros((height, width), bool)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = True
    rgb[mask] = RED
    return rgb, mask


def boxes(n: int, width: int, height: int, seed: int = 0) -> list[tuple[int, int, int, int]]:
    """n off-centre rectangles that stay inside the central square crop."""
    rng = np.random.default_rng(seed)
    side, x0, y0 = min(width, height), (width - min(width, height)) // 2, \
        (height - min(width, height)) // 2
    out = []
    for _ in range(n):
        w, h = rng.integers(side // 4, side // 2, size=2)
        left, top = x0 + rng.integers(0, side // 3), y0 + rng.integers(0, side - h)
        out.append((int(left), int(top), int(left + w), int(top + h)))
    return out


def save(array: np.ndarray, path) -> None:
    """Saves uint8 [h, w(, 3)] losslessly enough for colour tests (JPEG at quality 100)."""
    Image.fromarray(array).save(path, quality=100, subsampling=0)


def _uint8_scale(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) if image.dtype == np.uint8 else (image + 1.0) * 127.5


def assert_aligned(images: np.ndarray, masks: np.ndarray):
    """Mask foreground (> 0) is exactly the red rectangle in every example, on the pixels
    whose colour is unambiguous (edge pixels that mix both colours are left out)."""
    red = _uint8_scale(images)[..., 0]
    clear = (red > 185) | (red < 85)
    agree = np.where(clear, (red > 135) == (masks > 0), True)
    assert agree.all(), np.argwhere(~agree)[:5]
    assert (clear.mean(axis=(-2, -1)) > 0.8).all()
    assert ((masks > 0).sum(axis=(-2, -1)) > 0).all()


def config(dataset: str, data_dir, image_size: int = 16, batch_size: int = 4, **data_keys):
    c = ml_collections.ConfigDict()
    c.data = data_config(dataset, str(data_dir), image_size, random_flip=True)
    c.data.update(data_keys)
    c.train = dict(batch_size=batch_size)
    c.eval = dict(batch_size=batch_size)
    return c


def load(cfg, split: str) -> dict[str, np.ndarray]:
    """load_split_arrays without the cache (each test writes its own files)."""
    data._load.cache_clear()
    return data.load_split_arrays(cfg, split)


def check_arrays(arrays, n: int, size: int, mask_values=None, extra_keys=()):
    """Shapes, dtypes and value ranges of a stored split."""
    assert arrays["image"].shape == (n, size, size, 3) and arrays["image"].dtype == np.uint8
    assert arrays["image"].std() > 10
    if mask_values is not None:
        assert arrays["mask"].shape == (n, size, size) and arrays["mask"].dtype == np.int32
        assert set(np.unique(arrays["mask"])) <= set(mask_values)
    for key in extra_keys:
        assert arrays[key].shape == (n,) and arrays[key].dtype == np.int32


def _row_ids(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest() for x in images]


def check_deterministic(cfg, split: str) -> dict[str, np.ndarray]:
    """Reading the files twice gives identical arrays; returns them."""
    arrays, again = load(cfg, split), load(cfg, split)
    assert arrays.keys() == again.keys()
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], again[k])
    return arrays


def check_eval_sharding(cfg):
    """Over 2 hosts, the valid eval rows are each stored example exactly once."""
    arrays = load(cfg, "eval")
    seen = []
    for p in range(2):
        for b in data.make_iterator(cfg, "eval", p, 2):
            seen += _row_ids(np.rint((b["image"][b["valid"]] + 1) * 127.5).astype(np.uint8))
    assert sorted(seen) == sorted(_row_ids(arrays["image"]))


def check_train_batch(cfg, red_id: int | None = None) -> dict[str, np.ndarray]:
    """One global train batch of B >= 2N rows over 2 hosts: the halves are disjoint row ranges
    of the single-host batch, values in [-1, 1], flips applied to image and mask alike
    (mask > 0, or mask == red_id if given, still on the red rectangle)."""
    arrays = load(cfg, "train")
    n = len(arrays["image"])
    b = cfg.train.batch_size = 2 * max(n, 8)
    halves = [next(data.make_iterator(cfg, "train", p, 2)) for p in range(2)]
    full = next(data.make_iterator(cfg, "train"))
    for k in full:
        np.testing.assert_array_equal(full[k], np.concatenate([h[k] for h in halves]))
    assert full["image"].dtype == np.float32
    assert -1.0 <= full["image"].min() and full["image"].max() <= 1.0
    idx = pipeline.train_indices(n, b, cfg.data.seed, 0)
    flip = pipeline.flip_flags(b, cfg.data.seed, 0)
    assert 0 < flip.sum() < b
    stored = arrays["image"][idx].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(full["image"], np.where(flip[:, None, None, None],
                                                       stored[:, :, ::-1], stored), atol=1e-6)
    if "mask" in full:
        mask = arrays["mask"][idx]
        np.testing.assert_array_equal(full["mask"], np.where(flip[:, None, None],
                                                             mask[:, :, ::-1], mask))
        assert_aligned(full["image"], full["mask"] if red_id is None else full["mask"] == red_id)
    return full


def check_missing(cfg, split: str, path_fragment: str, also: str = ""):
    """A one-line UserError naming the missing path (and `also`, e.g. the config key)."""
    with pytest.raises(UserError) as err:
        load(cfg, split)
    message = str(err.value)
    assert "\n" not in message and path_fragment in message, message
    assert also in message and "; " in message, message
    return message


def tfds_cifar10(data_dir, num_train: int, num_test: int) -> None:
    """A prepared TFDS `cifar10` (version and features of the real one) of random images
    under data_dir, as `tfds build cifar10 --data_dir=DIR` would leave it (no download)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import cifar

    class FakeCifar10(cifar.Cifar10, skip_registration=True):
        name = "cifar10"
        __module__ = "fake_tfds"    # one-part module: TFDS looks for no checksums file

        def _split_generators(self, dl_manager):
            return {"train": self._examples(num_train, 0), "test": self._examples(num_test, 1)}

        def _examples(self, n, seed):
            rng = np.random.default_rng(seed)
            for i in range(n):
                yield f"{seed}_{i}", {"id": f"{seed}_{i}", "label": int(rng.integers(10)),
                                      "image": rng.integers(0, 256, (32, 32, 3), np.uint8)}

    FakeCifar10(data_dir=str(data_dir)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
