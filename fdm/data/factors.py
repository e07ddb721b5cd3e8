"""Procedural "factors" dataset (seed 002 brief, sec. 4): one striped object on a plain
background, every image labelled with five independent factors at three granularities.

Factors (`FACTORS`: name -> cardinality, each drawn uniformly and independently):
  coarse  'bg_hue'    4  background hue BG_HUES[k] = k/4 (red, yellow-green, cyan, violet)
          'quadrant'  4  QUADRANTS: the object lies wholly inside the top-left (0),
                         top-right (1), bottom-left (2) or bottom-right (3) quarter
  mid     'shape'     4  SHAPES: disc, square, triangle (apex up), cross (a plus sign)
          'obj_hue'   6  object hue OBJ_HUES[k] = k/6 (red, yellow, green, cyan, blue,
                         magenta)
  fine    'stripe'    2  STRIPES: 1-px stripes inside the object, horizontal (0: rows
                         alternate) or vertical (1: columns alternate)
Chance accuracies: 25 / 25 / 25 / 16.7 / 50 %.

Rendering (normalised coordinates: the image spans [-1, 1]^2, pixel centres, y down; a
pixel belongs to the object when its centre is inside the shape):
  background  flat colour: hue BG_HUES[k] + U(-0.04, 0.04), saturation U(0.25, 0.45),
              value U(0.55, 0.8) (pale);
  object      half-extent r ~ U(0.36, 0.46); every shape fits the box [-r, r]^2 around
              its centre (disc of radius r, square of half-side 0.85 r, equilateral
              triangle of circumradius 1.15 r with its bounding box centred, cross with
              arms of half-length r and half-width 0.4 r); where the centre lies is
              data.placement (`PLACEMENTS`):
                'quadrant' (default) the quadrant's centre (+-0.5, +-0.5) plus
                  U(-(0.48 - r), 0.48 - r) on each axis: the box stays inside its
                  quadrant with a margin of 0.02, so the object moves by at most
                  0.24 (2 px at 16 x 16) within its quadrant;
                'centre' U(0.02, 0.98 - r) on each axis, signed by the quadrant: the
                  centre lies in the quadrant and the box inside the image (margins
                  0.02), the object may straddle the midlines; it moves by up to 0.6
                  (5 px at 16 x 16), so a probe cannot read shape by template;
  object colour  hue OBJ_HUES[k] + U(-0.03, 0.03), saturation U(0.8, 1), value U(0.85, 1)
              on the light stripes, 0.45x that value on the dark ones; stripe phase 0
              or 1 (which parity of rows/columns is dark) uniform;
  noise       per-pixel Gaussian noise of std PIXEL_NOISE_STD (in [0, 1] units), clipped.
Stripes are 1 pixel wide at every image size; the rest scales with the image.
Helpers shared with `fdm.data.shapes`: the pixel grid, HSV -> RGB, the triangle test and
uniform -> category.

Determinism: example i of split s is a pure function of (seed, s, i): its parameters
come from `np.random.default_rng([seed, SPLIT_IDS[s], i])` (scene uniforms first, then
the pixel noise, so a scene is the same at every image size). The three splits "train",
"val", "test" use different streams, so they are disjoint draws.

Registry (`fdm.data.DATASETS["factors"]`, `load`): "train" is the train split, "eval"
is `data.eval_split` ("test", the default, or "val"); options data.num_train (8000),
data.num_val (2000), data.num_test (2000), data.seed (0), data.eval_split,
data.placement ('quadrant'). Arrays:
'image' uint8 [N, S, S, 3], 'mask' int32 [N, S, S] (1 = object), and one int32 [N]
column per factor, which the pipeline carries into every batch next to 'image'.
"""
from __future__ import annotations

import numpy as np

from fdm.data import folder
from fdm.data.shapes import _hsv_to_rgb, _kind, _pixel_grid, _triangle_inside
from fdm.errors import UserError

FACTORS = {"bg_hue": 4, "quadrant": 4, "shape": 4, "obj_hue": 6, "stripe": 2}
GRANULARITY = {"bg_hue": "coarse", "quadrant": "coarse", "shape": "mid", "obj_hue": "mid",
               "stripe": "fine"}
SHAPES = ("disc", "square", "triangle", "cross")
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
STRIPES = ("horizontal", "vertical")
BG_HUES = tuple(k / 4 for k in range(4))
OBJ_HUES = tuple(k / 6 for k in range(6))
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
EVAL_SPLITS = ("test", "val")
RADIUS_RANGE = (0.36, 0.46)
QUADRANT_MARGIN = 0.02
PLACEMENTS = ("quadrant", "centre")
PIXEL_NOISE_STD = 0.02
DEFAULT_IMAGE_SIZE = 16
_CHUNK = 1024
# Uniforms per example, in order: the five factors, then the nuisances.
_UNIFORMS = ("bg_hue", "quadrant", "shape", "obj_hue", "stripe", "bg_hue_jitter", "bg_sat",
             "bg_val", "radius", "dx", "dy", "obj_hue_jitter", "obj_sat", "obj_val", "phase")


def generate(num_examples: int, image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0,
             split: str = "train", start: int = 0,
             placement: str = "quadrant") -> dict[str, np.ndarray]:
    """Examples start..start+num_examples-1 of `split` ("train", "val" or "test"), the
    object placed as `placement` says (module doc).

    Returns {'image': uint8 [N, S, S, 3], 'mask': int32 [N, S, S] (1 = object), and per
    factor of `FACTORS` an int32 [N] label}.
    """
    _check(num_examples, image_size, split, placement)
    indices = np.arange(start, start + num_examples)
    chunks = [_render(indices[i:i + _CHUNK], image_size, seed, SPLIT_IDS[split], placement)
              for i in range(0, num_examples, _CHUNK)]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _check(num_examples, image_size, split, placement) -> None:
    if placement not in PLACEMENTS:
        raise UserError(f"data.placement={placement!r} is unknown for the factors dataset; "
                        f"use one of {list(PLACEMENTS)}")
    if split not in SPLIT_IDS:
        raise UserError(f"unknown factors split {split!r}; use one of {list(SPLIT_IDS)}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise UserError(f"data.image_size={image_size!r} is invalid for the factors "
                        "dataset; use one integer >= 8 (the brief's images are 16x16)")
    if num_examples <= 0:
        raise UserError(f"{num_examples} factors examples asked for {split!r}; set "
                        f"data.num_{split} to a positive number")


def _render(indices, size, seed, split_id, placement) -> dict[str, np.ndarray]:
    """Renders the examples `indices` (module doc)."""
    rngs = [np.random.default_rng([seed, split_id, int(i)]) for i in indices]
    u = dict(zip(_UNIFORMS, np.stack([r.random(len(_UNIFORMS)) for r in rngs]).T))
    pixel_noise = np.stack([r.standard_normal((size, size, 3)) for r in rngs])
    labels = {name: _kind(u[name], k).astype(np.int32) for name, k in FACTORS.items()}

    bg_hue = np.asarray(BG_HUES)[labels["bg_hue"]] + 0.08 * (u["bg_hue_jitter"] - 0.5)
    background = _hsv_to_rgb(bg_hue, 0.25 + 0.2 * u["bg_sat"], 0.55 + 0.25 * u["bg_val"])
    obj_hue = np.asarray(OBJ_HUES)[labels["obj_hue"]] + 0.06 * (u["obj_hue_jitter"] - 0.5)
    obj_sat, obj_val = 0.8 + 0.2 * u["obj_sat"], 0.85 + 0.15 * u["obj_val"]
    light, dark = _hsv_to_rgb(obj_hue, obj_sat, obj_val), _hsv_to_rgb(obj_hue, obj_sat,
                                                                      0.45 * obj_val)
    inside = object_mask(labels["shape"], labels["quadrant"], u["radius"], u["dx"], u["dy"],
                         size, placement)
    is_dark = _stripe_is_dark(labels["stripe"], u["phase"] < 0.5, size)
    colour = np.where(is_dark[..., None], dark[:, None, None], light[:, None, None])
    image = np.where(inside[..., None], colour, background[:, None, None])
    image = np.clip(image + PIXEL_NOISE_STD * pixel_noise, 0.0, 1.0)
    return {"image": np.round(image * 255.0).astype(np.uint8),
            "mask": inside.astype(np.int32), **labels}


def object_centre_radius(quadrant, u_radius, u_dx, u_dy, placement: str = "quadrant"):
    """Object centre (cx, cy) and half-extent r, each [n], from the quadrant labels [n]
    and three uniforms [n], placed as `placement` says (module doc); normalised units."""
    radius = RADIUS_RANGE[0] + (RADIUS_RANGE[1] - RADIUS_RANGE[0]) * np.asarray(u_radius)
    side_x = np.where(np.asarray(quadrant) % 2 == 1, 1.0, -1.0)
    side_y = np.where(np.asarray(quadrant) >= 2, 1.0, -1.0)
    if placement == "quadrant":
        jitter = 0.5 - QUADRANT_MARGIN - radius
        place = lambda side, u: 0.5 * side + (2 * np.asarray(u) - 1) * jitter
    else:
        span = 1 - 2 * QUADRANT_MARGIN - radius
        place = lambda side, u: side * (QUADRANT_MARGIN + np.asarray(u) * span)
    return place(side_x, u_dx), place(side_y, u_dy), radius


def object_mask(shape, quadrant, u_radius, u_dx, u_dy, size: int,
                placement: str = "quadrant") -> np.ndarray:
    """bool [n, S, S]: pixels whose centre is inside the object of each example, from its
    shape and quadrant labels [n] and three uniforms [n], placed as `placement` says
    (module doc)."""
    cx, cy, r = object_centre_radius(quadrant, u_radius, u_dx, u_dy, placement)
    x, y = _pixel_grid(size)
    u, v = x - cx[:, None, None], y - cy[:, None, None]
    r = r[:, None, None]
    disc = u ** 2 + v ** 2 <= r ** 2
    square = np.maximum(np.abs(u), np.abs(v)) <= 0.85 * r
    triangle = _triangle_inside(u, v - 0.25 * 1.15 * r, 1.15 * r)
    cross = (((np.abs(u) <= 0.4 * r) & (np.abs(v) <= r))
             | ((np.abs(v) <= 0.4 * r) & (np.abs(u) <= r)))
    return np.choose(np.asarray(shape)[:, None, None], [disc, square, triangle, cross])


def _stripe_is_dark(stripe, odd_phase, size: int) -> np.ndarray:
    """bool [n, S, S]: the dark 1-px stripes, along rows (stripe 0) or columns (1)."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    index = np.where(np.asarray(stripe)[:, None, None] == 0, rows, cols)
    return (index + np.asarray(odd_phase)[:, None, None]) % 2 == 0


def joint_label(labels: dict[str, np.ndarray], names=("shape", "obj_hue")) -> np.ndarray:
    """int32 [N]: one class per combination of the factors `names` (mixed radix, the
    first name most significant); the default gives the brief's 24 shape x object-hue
    classes of the few-shot episodes."""
    unknown = [n for n in names if n not in FACTORS]
    if unknown or not names:
        raise UserError(f"unknown factors {unknown or list(names)}; use names from "
                        f"{list(FACTORS)}")
    out = np.zeros(len(labels[names[0]]), np.int64)
    for name in names:
        out = out * FACTORS[name] + labels[name]
    return out.astype(np.int32)


def load(root, image_size, split: str, num_train: int, num_val: int, num_test: int,
         seed: int, eval_split: str = "test", placement: str = "quadrant"
         ) -> dict[str, np.ndarray]:
    """The registry's loader: "train", or `eval_split` for "eval" (module doc)."""
    name = folder.split_name(split, eval_split, EVAL_SPLITS)
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    return generate(int(sizes[name]), image_size, seed, name, placement=placement)
