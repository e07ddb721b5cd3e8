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


# --- Posed videos (Co3D v2, RealEstate10K) in their published layouts --------------------
# Each frame shows one red disc on the background, centred where the dataset's own camera
# convention (written out here, independently of fdm.data) projects the world point
# VIDEO_POINT; a loader's cameras must project VIDEO_POINT onto the disc of its frames.

VIDEO_POINT = np.array([0.12, -0.08, 0.15])


def _unit(v):
    return np.asarray(v, np.float64) / np.linalg.norm(v)


def orbit_eyes(n: int, radius: float = 3.0, height: float = 1.0, phase: float = 0.0):
    """n camera centres [n, 3] on a circle of `radius` at z = height (a z-up orbit)."""
    a = phase + np.linspace(0.0, 1.5 * np.pi, n)
    return np.stack([radius * np.cos(a), radius * np.sin(a), np.full(n, height)], -1)


def look_targets(n: int, radius: float = 0.5) -> np.ndarray:
    """n look-at points [n, 3] around the origin, so that VIDEO_POINT lands at varied
    places of the frames (up to ~radius / distance * focal pixels off the centre)."""
    a = 2.4 * np.arange(n)
    return np.stack([radius * np.cos(a), radius * np.sin(a), 0.2 * np.sin(a)], -1)


def pytorch3d_look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)):
    """(R [3, 3], T [3]) of a PyTorch3D camera at eye looking at target: X_view = X @ R + T,
    view axes +X left, +Y up, +Z forward (pytorch3d.org/docs/cameras)."""
    forward = _unit(np.subtract(target, eye))
    left = _unit(np.cross(up, forward))
    rot = np.stack([left, np.cross(forward, left), forward], -1)    # columns: view axes
    return rot, -np.asarray(eye, np.float64) @ rot


def pytorch3d_project(points, rot, trans, focal_ndc, principal_ndc, size_hw, fmt):
    """Pixel (u, v) of world points [..., 3] under a Co3D viewpoint, in PyTorch3D's screen
    space ((0, 0) the top-left image corner): X_view = X @ R + T, x_ndc = f X/Z + p, and
    NDC -> screen with +x_ndc left, +y_ndc up and scale min(H, W)/2 ('ndc_isotropic') or
    (W/2, H/2) ('ndc_norm_image_bounds')."""
    h, w = size_hw
    view = np.asarray(points, np.float64) @ rot + trans
    ndc = np.asarray(focal_ndc) * view[..., :2] / view[..., 2:3] + np.asarray(principal_ndc)
    scale = np.array([min(h, w) / 2.0] * 2) if fmt == "ndc_isotropic" else np.array([w, h]) / 2
    return np.array([w, h]) / 2.0 - ndc * scale


def opencv_look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)):
    """World-to-camera [R | t] [3, 4] of an OpenCV camera (x right, y down, z forward)."""
    forward = _unit(np.subtract(target, eye))
    right = _unit(np.cross(forward, up))
    rot = np.stack([right, np.cross(forward, right), forward])          # rows: camera axes
    return np.concatenate([rot, -(rot @ np.asarray(eye, np.float64))[:, None]], -1)


def opencv_project(points, w2c, intrinsics, size_hw):
    """Pixel (u, v) of world points [..., 3] under a RealEstate10K camera line: w2c [3, 4],
    intrinsics (fx, fy, cx, cy) normalised by the image width and height."""
    h, w = size_hw
    cam = np.asarray(points, np.float64) @ w2c[:, :3].T + w2c[:, 3]
    fx, fy, cx, cy = intrinsics
    return np.stack([(fx * cam[..., 0] / cam[..., 2] + cx) * w,
                     (fy * cam[..., 1] / cam[..., 2] + cy) * h], -1)


def disc_image(height: int, width: int, centre_uv, radius: float = 4.0) -> np.ndarray:
    """uint8 [h, w, 3]: BACKGROUND with a RED disc at continuous pixel centre_uv (pixel (i, j)
    covers [j, j+1] x [i, i+1]), antialiased by 8x8 supersampling."""
    sub = (np.arange(8) + 0.5) / 8
    ys = (np.arange(height)[:, None] + sub[None]).reshape(-1)
    xs = (np.arange(width)[:, None] + sub[None]).reshape(-1)
    inside = ((xs[None] - centre_uv[0]) ** 2 + (ys[:, None] - centre_uv[1]) ** 2) <= radius ** 2
    cover = inside.reshape(height, 8, width, 8).mean((1, 3))[..., None]
    rgb = cover * np.array(RED, np.float64) + (1 - cover) * np.array(BACKGROUND, np.float64)
    return np.round(rgb).astype(np.uint8)


def red_centroid(images: np.ndarray) -> np.ndarray:
    """(u, v) [N, 2] centroid of the red disc of uint8 images [N, S, S, 3] (weights: the red
    channel's excess over BACKGROUND, ~ the disc's coverage of each pixel)."""
    weight = np.clip(images[..., 0].astype(np.float64) - BACKGROUND[0] - 8, 0, None)
    s = images.shape[1]
    centres = np.arange(s) + 0.5
    total = weight.sum((1, 2))
    return np.stack([(weight * centres[None, None, :]).sum((1, 2)) / total,
                     (weight * centres[None, :, None]).sum((1, 2)) / total], -1)


def co3d_v2(root, category: str = "hydrant", sequences=None, size_hw=(48, 36),
            subset: str = "fewview_dev", intrinsics_format: str = "ndc_isotropic",
            point=VIDEO_POINT) -> dict:
    """A Co3D v2 category under root in the published layout (frame_annotations.jgz,
    sequence_annotations.jgz, set_lists/set_lists_<subset>.json, <seq>/images/*.jpg).

    sequences: {name: (num_frames, split)}; default two 'train' sequences and one 'val'.
    Frame numbers are 3 * (file index) + 2 (they need not match file names) and the
    annotation list is shuffled. Returns {name: {'frame_numbers', 'R', 'T', 'focal',
    'principal', 'uv' (the disc centres in the original frames)}}.
    """
    import gzip
    import json
    import os

    sequences = sequences or {"101_a": (7, "train"), "102_b": (9, "train"),
                              "201_c": (6, "val")}
    h, w = size_hw
    rng = np.random.default_rng(3)
    entries, sets, info = [], {"train": [], "val": [], "test": []}, {}
    for k, (name, (n, split)) in enumerate(sequences.items()):
        os.makedirs(os.path.join(root, category, name, "images"))
        focal = np.array([1.9, 1.9]) if intrinsics_format == "ndc_isotropic" else \
            np.array([2.6, 1.9])
        principal = np.array([0.06, -0.05])
        rec = {"frame_numbers": 3 * np.arange(n) + 2, "R": [], "T": [], "uv": [],
               "focal": focal, "principal": principal}
        targets = look_targets(n)
        for i, eye in enumerate(orbit_eyes(n, 3.0 + 0.2 * k, 0.8, phase=k)):
            rot, trans = pytorch3d_look_at(eye, targets[i], _unit([0.1 * k, 0.05, 1.0]))
            uv = pytorch3d_project(point, rot, trans, focal, principal, size_hw,
                                   intrinsics_format)
            rel = f"{category}/{name}/images/frame{i + 1:06d}.jpg"
            save(disc_image(h, w, uv), os.path.join(root, rel))
            number = int(rec["frame_numbers"][i])
            entries.append({"sequence_name": name, "frame_number": number,
                            "frame_timestamp": 0.1 * i,
                            "image": {"path": rel, "size": [h, w]},
                            "viewpoint": {"R": rot.tolist(), "T": trans.tolist(),
                                          "focal_length": focal.tolist(),
                                          "principal_point": principal.tolist(),
                                          "intrinsics_format": intrinsics_format},
                            "meta": {"frame_type": f"{split}_known"}})
            sets[split].append([name, number, rel])
            for key, value in (("R", rot), ("T", trans), ("uv", uv)):
                rec[key].append(value)
        info[name] = {k: np.asarray(v) for k, v in rec.items()}
    order = rng.permutation(len(entries))
    category_dir = os.path.join(root, category)
    with gzip.open(os.path.join(category_dir, "frame_annotations.jgz"), "wt") as f:
        json.dump([entries[i] for i in order], f)
    with gzip.open(os.path.join(category_dir, "sequence_annotations.jgz"), "wt") as f:
        json.dump([{"sequence_name": s, "category": category, "video": None,
                    "point_cloud": None, "viewpoint_quality_score": 1.0}
                   for s in sequences], f)
    os.makedirs(os.path.join(category_dir, "set_lists"))
    with open(os.path.join(category_dir, "set_lists", f"set_lists_{subset}.json"), "w") as f:
        json.dump(sets, f)
    return info


def realestate10k(root, split: str = "train", sequences=None, size_hw=(36, 64),
                  frames_root=None, ext: str = ".png", drop=(), point=VIDEO_POINT) -> dict:
    """RealEstate10K under root: <root>/<split>/<seq>.txt camera files as published (URL line,
    then `timestamp fx fy cx cy 0 0 <3x4 w2c row-major>`) and the frames
    <frames_root or root>/<split>/<seq>/<timestamp><ext>.

    sequences: {name: num_frames}; drop: (name, index) frames not written; ext '.npz' packs
    the frames into <seq>/data.npz (keys '<timestamp>.jpg') as generate_realestate.py of
    yilundu/cross_attention_renderer leaves them. Returns {name: {'timestamps', 'w2c'
    [n, 3, 4], 'intrinsics' [n, 4], 'uv'}}.
    """
    import os

    sequences = sequences or {"0a1b": 12, "0c2d": 10}
    h, w = size_hw
    frames_root = frames_root or root
    os.makedirs(os.path.join(root, split), exist_ok=True)
    info = {}
    for k, (name, n) in enumerate(sequences.items()):
        folder = os.path.join(frames_root, split, name)
        os.makedirs(folder)
        stamps = 50_000_000 + 33_367 * np.arange(n) + 1000 * k
        intr = np.array([0.9, 1.6, 0.52, 0.47])             # fx W = fy H: square pixels
        rec = {"timestamps": stamps, "w2c": [], "intrinsics": np.tile(intr, (n, 1)), "uv": []}
        lines, packed = [f"https://www.youtube.com/watch?v=fake{k}"], {}
        targets = look_targets(n, 0.35)
        for i, eye in enumerate(orbit_eyes(n, 2.5 + 0.3 * k, 0.5, phase=0.5 * k)):
            w2c = opencv_look_at(eye, targets[i], _unit([0.05 * k, -0.1, 1.0]))
            uv = opencv_project(point, w2c, intr, size_hw)
            lines.append(" ".join([str(stamps[i])] + [f"{v:.9f}" for v in intr] +
                                  ["0.000000000", "0.000000000"] +
                                  [f"{v:.12f}" for v in w2c.reshape(-1)]))
            if (name, i) in drop:
                pass
            elif ext == ".npz":
                packed[f"{stamps[i]}.jpg"] = disc_image(h, w, uv)
            else:
                save(disc_image(h, w, uv), os.path.join(folder, f"{stamps[i]}{ext}"))
            rec["w2c"].append(w2c)
            rec["uv"].append(uv)
        if packed:
            np.savez(os.path.join(folder, "data.npz"), **packed)
        with open(os.path.join(root, split, f"{name}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        info[name] = {k2: np.asarray(v) for k2, v in rec.items()}
    return info


# ---- Transfer datasets (`fdm.data.transfer`): tiny copies of the published layouts, each
# image one flat colour TRANSFER_PALETTE[label] (so `transfer_labels` reads the label back
# after any resize); every writer returns {official split: expected labels}.

TRANSFER_PALETTE = ((230, 30, 30), (30, 190, 50), (40, 60, 220), (240, 220, 40),
                    (190, 40, 210), (40, 210, 220), (245, 245, 245), (25, 25, 25))
TRANSFER_LABELS = {"train": [0, 1, 2, 3, 1, 0, 3, 2, 2, 1, 3, 0], "val": [3, 0, 1, 2],
                   "test": [2, 3, 0, 1, 1]}


def transfer_image(label: int, width: int = 20, height: int = 14) -> np.ndarray:
    """A flat image of colour TRANSFER_PALETTE[label]: uint8 [height, width, 3]."""
    return np.broadcast_to(np.array(TRANSFER_PALETTE[label], np.uint8), (height, width, 3)).copy()


def transfer_labels(images: np.ndarray) -> np.ndarray:
    """The palette index nearest to each image's mean colour: int [N]."""
    mean = images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1)
    palette = np.array(TRANSFER_PALETTE, np.float64)
    return np.argmin(((mean[:, None] - palette[None]) ** 2).sum(-1), axis=1)


def _transfer_files(base, relpaths, labels) -> None:
    """A flat JPEG of each label at base/relpath (folders made as needed)."""
    import os
    for relpath, label in zip(relpaths, labels):
        path = os.path.join(str(base), relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save(transfer_image(label), path)


def _transfer_text(path, lines) -> None:
    import os
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))


def fake_aircraft(root):
    """fgvc-aircraft-2013b/data/{images/, variants.txt (unsorted), images_variant_*.txt}."""
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["Cessna 172", "Boeing 707-320", "DC-3", "A340-300"]     # sorted: A, B, C, D
    _transfer_text(data / "variants.txt", variants)
    image_id = 1000000
    for split, labels in TRANSFER_LABELS.items():
        ids = [str(image_id + i) for i in range(len(labels))]
        image_id += 100
        _transfer_files(data / "images", [i + ".jpg" for i in ids], labels)
        _transfer_text(data / f"images_variant_{split}.txt",
                       [f"{i} {sorted(variants)[y]}" for i, y in zip(ids, labels)])
    return dict(TRANSFER_LABELS)


CALTECH_FAKE_CLASSES = ("BACKGROUND_Google", "Faces", "accordion")   # sorted order


def fake_caltech101(root, counts=(33, 31, 32), empty: bool = False):
    """caltech101/101_ObjectCategories/<class>/image_<nnnn>.jpg, counts[i] images of class
    i (CALTECH_FAKE_CLASSES, or class_<i> beyond them); empty files when `empty`."""
    import os
    names = [CALTECH_FAKE_CLASSES[i] if i < len(CALTECH_FAKE_CLASSES) else f"class_{i:03d}"
             for i in range(len(counts))]
    base = root / "caltech101" / "101_ObjectCategories"
    for label, (name, count) in enumerate(zip(names, counts)):
        files = [f"{name}/image_{i:04d}.jpg" for i in range(1, count + 1)]
        if empty:
            os.makedirs(base / name, exist_ok=True)
            for f in files:
                open(base / f, "wb").close()
        else:
            _transfer_files(base, files, [label] * count)
    return {"all": [label for label, count in enumerate(counts) for _ in range(count)]}


def _cars_annotations(path, fnames, classes) -> None:
    """A devkit-style 'annotations' struct (bbox_x1..y2, class when given, fname)."""
    import scipy.io
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"] + (["class"] if classes else [])
    array = np.zeros((1, len(fnames)), dtype=[(f, object) for f in fields + ["fname"]])
    for i, fname in enumerate(fnames):
        array[0, i] = (1, 1, 20, 14, *([classes[i]] if classes else []), fname)
    scipy.io.savemat(path, {"annotations": array})


def fake_cars(root):
    """stanford_cars/{devkit/cars_{train,test}_annos.mat, cars_train/, cars_test/,
    cars_test_annos_withlabels.mat}; class ids 1-based."""
    base = root / "stanford_cars"
    for split in ("train", "test"):
        labels = TRANSFER_LABELS[split]
        fnames = [f"{i:05d}.jpg" for i in range(1, len(labels) + 1)]
        _transfer_files(base / f"cars_{split}", fnames, labels)
        (base / "devkit").mkdir(parents=True, exist_ok=True)
        _cars_annotations(base / "devkit" / f"cars_{split}_annos.mat", fnames,
                          None if split == "test" else [y + 1 for y in labels])
        if split == "test":
            _cars_annotations(base / "cars_test_annos_withlabels.mat", fnames,
                              [y + 1 for y in labels])
    return {s: TRANSFER_LABELS[s] for s in ("train", "test")}


def _cifar_batch(path, labels, label_key: str) -> None:
    import pickle
    data = np.stack([transfer_image(y, 32, 32).transpose(2, 0, 1).reshape(-1) for y in labels])
    batch = {"batch_label": "fake", label_key: list(labels), "data": data,
             "filenames": [f"{i}.png" for i in range(len(labels))]}
    if label_key == "fine_labels":
        batch["coarse_labels"] = [0] * len(labels)
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def fake_cifar10(root):
    """cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train = TRANSFER_LABELS["train"] + [1, 3, 0]                      # 15 = 5 batches of 3
    for i in range(5):
        _cifar_batch(base / f"data_batch_{i + 1}", train[3 * i:3 * i + 3], "labels")
    _cifar_batch(base / "test_batch", TRANSFER_LABELS["test"], "labels")
    _transfer_text(base / "batches.meta", ["(names)"])
    return {"train": train, "test": TRANSFER_LABELS["test"]}


def fake_cifar100(root):
    """cifar-100-python/{train, test, meta} (fine labels)."""
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    for split in ("train", "test"):
        _cifar_batch(base / split, TRANSFER_LABELS[split], "fine_labels")
    _transfer_text(base / "meta", ["(names)"])
    return {s: TRANSFER_LABELS[s] for s in ("train", "test")}


def fake_dtd(root):
    """dtd/{images/<class>/, labels/{train,val,test}1.txt and a different train2.txt}."""
    base = root / "dtd"
    classes = ["banded", "dotted", "grid", "zigzagged"]
    for split, labels in TRANSFER_LABELS.items():
        files = [f"{classes[y]}/{classes[y]}_{split}_{i:04d}.jpg" for i, y in enumerate(labels)]
        _transfer_files(base / "images", files, labels)
        _transfer_text(base / "labels" / f"{split}1.txt", files)
        _transfer_text(base / "labels" / f"{split}2.txt", files[:2])
    return dict(TRANSFER_LABELS)


def fake_flowers102(root):
    """jpg/image_<nnnnn>.jpg, imagelabels.mat (1-based), setid.mat (unsorted id lists)."""
    import scipy.io
    keys = {"train": "trnid", "val": "valid", "test": "tstid"}
    ids, labels, expected, next_id = {}, [], {}, 1
    for split, split_labels in TRANSFER_LABELS.items():
        ids[split] = list(range(next_id, next_id + len(split_labels)))[::-1]   # unsorted
        next_id += len(split_labels)
        labels += split_labels[::-1]
        expected[split] = list(split_labels)          # loader: increasing id order
    _transfer_files(root / "jpg", [f"image_{i:05d}.jpg" for i in range(1, next_id)],
                    [y for split in TRANSFER_LABELS for y in TRANSFER_LABELS[split]])
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([[y + 1 for y in
                     (y for split in TRANSFER_LABELS for y in TRANSFER_LABELS[split])]])})
    scipy.io.savemat(root / "setid.mat", {keys[s]: np.array([v]) for s, v in ids.items()})
    return expected


def fake_food101(root):
    """food-101/{images/<class>/<id>.jpg, meta/classes.txt, meta/{train,test}.txt}."""
    base = root / "food-101"
    classes = ["apple_pie", "baklava", "ramen", "sushi"]
    _transfer_text(base / "meta" / "classes.txt", classes)
    for split in ("train", "test"):
        labels = TRANSFER_LABELS[split]
        items = [f"{classes[y]}/{100 * (split == 'test') + i}" for i, y in enumerate(labels)]
        _transfer_files(base / "images", [i + ".jpg" for i in items], labels)
        _transfer_text(base / "meta" / f"{split}.txt", items)
    return {s: TRANSFER_LABELS[s] for s in ("train", "test")}


def fake_pets(root):
    """images/<Breed>_<n>.jpg, annotations/{trainval,test}.txt ("<id> <class id> <species>
    <breed id>"), and a list.txt with its '#' header."""
    breeds = ["Abyssinian", "american_bulldog", "Bengal", "beagle"]
    for split, name in (("train", "trainval"), ("test", "test")):
        labels = TRANSFER_LABELS[split]
        ids = [f"{breeds[y]}_{i + 100 * (split == 'test')}" for i, y in enumerate(labels)]
        _transfer_files(root / "images", [i + ".jpg" for i in ids], labels)
        _transfer_text(root / "annotations" / f"{name}.txt",
                       [f"{i} {y + 1} {1 + y % 2} {y // 2 + 1}" for i, y in zip(ids, labels)])
    _transfer_text(root / "annotations" / "list.txt", ["#Image CLASS-ID SPECIES BREED ID"])
    return {s: TRANSFER_LABELS[s] for s in ("train", "test")}


def fake_sun397(root, lists_in: str = "Partitions"):
    """SUN397/{ClassName.txt, <letter>/<class>/sun_*.jpg} and the partition lists
    {ClassName,Training_01,Testing_01,Training_02}.txt in root/`lists_in`."""
    classes = ["/y/yard", "/a/abbey", "/b/balcony/interior", "/b/balcony/exterior"]
    ordered = sorted(classes)                   # /a/abbey, /b/balcony/exterior, ..., /y/yard
    _transfer_text(root / "SUN397" / "ClassName.txt", classes)
    lists = root / lists_in if lists_in else root
    _transfer_text(lists / "ClassName.txt", classes)
    for split, name in (("train", "Training"), ("test", "Testing")):
        labels = TRANSFER_LABELS[split]
        files = [f"{ordered[y]}/sun_{split}{i:03d}.jpg" for i, y in enumerate(labels)]
        _transfer_files(root / "SUN397", [f[1:] for f in files], labels)
        _transfer_text(lists / f"{name}_01.txt", files)
        _transfer_text(lists / f"{name}_02.txt", files[:1])
    return {s: TRANSFER_LABELS[s] for s in ("train", "test")}


TRANSFER_FAKES = {"aircraft": fake_aircraft, "caltech101": fake_caltech101, "cars": fake_cars,
                  "cifar10": fake_cifar10, "cifar100": fake_cifar100, "dtd": fake_dtd,
                  "flowers102": fake_flowers102, "food101": fake_food101, "pets": fake_pets,
                  "sun397": fake_sun397}


def remove(path) -> None:
    """Delete a file, or a folder of files, to fake a missing part of a dataset."""
    if path.is_dir():
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    else:
        path.unlink()
