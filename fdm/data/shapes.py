"""Procedural "shapes" dataset: objects near the centre on a background, with masks.

Every image has exactly R = `num_regions` regions (2 or 3): the background
(label 0) and R-1 objects (labels 1..R-1) drawn back to front, so label k
occludes labels < k and the mask holds the *visible* region of each pixel.
Objects are discs, ellipses, squares, rectangles or regular triangles with
random size, position and rotation. Two styles (`style`, config `data.style`):

  "object"    object-centric, built like the paper's datasets (Flowers, CUB,
              faces; SPEC "Embedded defaults"): object centres uniform within
              +-OBJECT_CENTRE_RANGE of the image centre in normalised units (the
              image spans [-1, 1], so +-1/8 of the width; centroid std ~2.4 px at
              32 px), radii in OBJECT_RADIUS_RANGE; each object is saturated and
              patterned (hard stripes or a checkerboard of a vivid colour and a
              second, paler and darker colour of the same hue), the background
              smooth, low-frequency (value noise on a 3x3 lattice or a linear
              gradient) and desaturated. Object and background hues are drawn
              independently, so no colour names the object: a colour-histogram
              classifier fitted with the labels reaches object IoU 0.63 on the
              eval split (README); figure/ground is saturation, pattern and place
              together.
  "textured"  the harder previous style: every region (background included)
              drawn from the same colour and texture distributions (stripes at a
              random angle/frequency, a rotated checkerboard, smooth value noise,
              or a linear gradient); hues spread around the colour circle (at
              least 0.5/R apart) so that regions are separable within an image,
              but which region is the object is not identifiable across images
              (score it per image: `seg_iou_per_image`, `seg_ari`).

A little per-pixel noise is added in both styles.

Determinism: example `i` of split s is a pure function of (seed, s, i, style): its
parameters come from `np.random.default_rng([seed, split_id, i, attempt])`,
where `attempt` counts redraws of scenes in which a region covers less than
`MIN_REGION_FRACTION` of the pixels (checked at the requested resolution).
Geometry and textures live in normalised coordinates (x, y) in [-1, 1]^2
(pixel centres), so the same scene is rendered at any `image_size`.

Output: dict with 'image' float32 [N, S, S, 3] in [-1, 1] and
'mask' int32 [N, S, S] in [0, R).
"""
from __future__ import annotations

import numpy as np

from fdm.errors import UserError

SPLIT_IDS = {"train": 0, "eval": 1}
STYLES = ("object", "textured")
SHAPE_KINDS = ("disc", "ellipse", "square", "rectangle", "triangle")
TEXTURE_KINDS = ("stripes", "checker", "noise", "gradient")
MIN_REGION_FRACTION = 0.04
PIXEL_NOISE_STD = 0.03        # in [0, 1] intensity units
_NOISE_LATTICE = 5            # value-noise lattice points per side
_REGION_PARAMS = 9            # uniforms per region (colour + texture)
_OBJECT_PARAMS = 6            # uniforms per object (geometry)
_CHUNK = 512                  # images rendered per vectorised chunk
_MAX_ATTEMPTS = 64


def generate(num_examples: int, image_size: int, num_regions: int = 3, seed: int = 0,
             split: str = "train", start: int = 0,
             style: str = "object") -> dict[str, np.ndarray]:
    """Examples start..start+num_examples-1 of `split` in `style` (module doc).

    Returns {'image': float32 [N, S, S, 3] in [-1, 1], 'mask': int32 [N, S, S]}.
    """
    _check_args(image_size, num_regions, split, style)
    indices = np.arange(start, start + num_examples)
    render = _RENDERERS[style]
    chunks = [_generate_chunk(indices[i:i + _CHUNK], image_size, num_regions, seed,
                              SPLIT_IDS[split], render) for i in range(0, num_examples, _CHUNK)]
    if not chunks:
        return {"image": np.zeros((0, image_size, image_size, 3), np.float32),
                "mask": np.zeros((0, image_size, image_size), np.int32)}
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _check_args(image_size: int, num_regions: int, split: str, style: str) -> None:
    if style not in STYLES:
        raise UserError(f"data.style={style!r} is unknown for the shapes dataset; use one "
                        f"of {list(STYLES)}")
    if num_regions not in (2, 3):
        raise UserError(f"data.num_regions={num_regions} is not supported by the shapes "
                        "dataset; use 2 (one object) or 3 (two objects)")
    if image_size < 8:
        raise UserError(f"data.image_size={image_size} is too small for the shapes "
                        "dataset; use at least 8")
    if split not in SPLIT_IDS:
        raise UserError(f"unknown split {split!r}; use one of {sorted(SPLIT_IDS)}")


def _generate_chunk(indices, size, num_regions, seed, split_id, render):
    """Renders `indices`, redrawing scenes whose regions are too small."""
    n = len(indices)
    images = np.zeros((n, size, size, 3), np.float32)
    masks = np.zeros((n, size, size), np.int32)
    todo = np.arange(n)
    for attempt in range(_MAX_ATTEMPTS):
        rngs = [np.random.default_rng([seed, split_id, int(indices[j]), attempt]) for j in todo]
        img, mask = render(rngs, size, num_regions)
        ok = _regions_visible(mask, num_regions)
        images[todo[ok]], masks[todo[ok]] = img[ok], mask[ok]
        todo = todo[~ok]
        if not len(todo):
            return {"image": images, "mask": masks}
    raise RuntimeError(f"shapes: could not place visible regions for {len(todo)} images")


def _regions_visible(mask, num_regions):
    """[n] bool: every label in [0, R) covers >= MIN_REGION_FRACTION of the image."""
    frac = np.stack([(mask == k).mean(axis=(1, 2)) for k in range(num_regions)], axis=1)
    return (frac >= MIN_REGION_FRACTION).all(axis=1)


def _render_textured(rngs, size, num_regions):
    """Style "textured": draws parameters from each generator and renders
    ([n,S,S,3] in [-1,1], [n,S,S])."""
    num_obj = num_regions - 1
    lattice = _NOISE_LATTICE ** 2
    per_image = 1 + num_regions * (_REGION_PARAMS + lattice) + num_obj * _OBJECT_PARAMS
    u = np.stack([r.random(per_image, np.float32) for r in rngs])         # [n, P]
    pixel_noise = np.stack([r.standard_normal((size, size, 3), np.float32) for r in rngs])
    base_hue, u = u[:, 0], u[:, 1:]
    region_u = u[:, :num_regions * _REGION_PARAMS].reshape(-1, num_regions, _REGION_PARAMS)
    u = u[:, num_regions * _REGION_PARAMS:]
    noise_u = u[:, :num_regions * lattice].reshape(-1, num_regions, _NOISE_LATTICE,
                                                  _NOISE_LATTICE)
    object_u = u[:, num_regions * lattice:].reshape(-1, num_obj, _OBJECT_PARAMS)

    x, y = _pixel_grid(size)
    image = _region_texture(region_u[:, 0], noise_u[:, 0], base_hue, 0, num_regions, x, y)
    mask = np.zeros(image.shape[:3], np.int32)
    for k in range(1, num_regions):
        inside = _object_inside(object_u[:, k - 1], x, y)
        tex = _region_texture(region_u[:, k], noise_u[:, k], base_hue, k, num_regions, x, y)
        image = np.where(inside[..., None], tex, image)
        mask = np.where(inside, k, mask)
    return _finish(image, pixel_noise), mask


def _finish(image, pixel_noise):
    """[n,S,S,3] in [0, 1] plus pixel noise, clipped, as float32 in [-1, 1]."""
    image = np.clip(image + PIXEL_NOISE_STD * pixel_noise, 0.0, 1.0)
    return (image * 2.0 - 1.0).astype(np.float32)


def _pixel_grid(size):
    """Pixel-centre coordinates x (columns), y (rows), each [S, S] in (-1, 1)."""
    c = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    y, x = np.meshgrid(c, c, indexing="ij")
    return x, y


def _kind(u, num_kinds):
    """Uniforms [n] -> integer kind [n] in [0, num_kinds)."""
    return np.minimum((u * num_kinds).astype(np.int64), num_kinds - 1)


def _object_inside(p, x, y, centre_range=0.5, radius_range=(0.4, 0.75)):
    """Object geometry uniforms p [n, 6] -> inside mask [n, S, S] bool.

    Centre uniform in [-centre_range, centre_range]^2, radius in radius_range
    (normalised units, the image spans [-1, 1]).
    """
    kind = _kind(p[:, 0], len(SHAPE_KINDS))
    cx, cy = (2 * p[:, 1] - 1) * centre_range, (2 * p[:, 2] - 1) * centre_range
    radius = radius_range[0] + (radius_range[1] - radius_range[0]) * p[:, 3]
    aspect = np.where(np.isin(kind, (0, 2)), 1.0, 0.45 + 0.4 * p[:, 4])
    theta = 2 * np.pi * p[:, 5]
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u, v = c * dx + s * dy, c * dy - s * dx
    r, a = radius[:, None, None], aspect[:, None, None]
    ellipse = (u / r) ** 2 + (v / (r * a)) ** 2 <= 1.0
    box = np.maximum(np.abs(u), np.abs(v) / a) <= 0.85 * r
    tri = _triangle_inside(u, v, 1.25 * r)
    return np.where(kind[:, None, None] <= 1, ellipse,
                    np.where(kind[:, None, None] <= 3, box, tri))


def _triangle_inside(u, v, circumradius):
    """Regular triangle centred at the origin of the rotated frame (u, v)."""
    inside = True
    for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        inside = inside & (u * np.cos(a) + v * np.sin(a) <= 0.5 * circumradius)
    return inside


def _region_texture(p, lattice, base_hue, k, num_regions, x, y):
    """Colour + texture uniforms p [n, 9], lattice [n, G, G] -> RGB [n, S, S, 3] in [0, 1]."""
    hue = base_hue + k / num_regions + (p[:, 0] - 0.5) * 0.5 / num_regions
    sat = 0.35 + 0.55 * p[:, 1]
    val = 0.35 + 0.5 * p[:, 2]
    contrast = 0.3 + 0.4 * p[:, 7]
    hue_shift = (p[:, 8] - 0.5) * 0.16
    low = _hsv_to_rgb(hue - hue_shift / 2, sat, np.clip(val - contrast / 2, 0.05, 1.0))
    high = _hsv_to_rgb(hue + hue_shift / 2, sat, np.clip(val + contrast / 2, 0.05, 1.0))
    pattern = _pattern(p, lattice, x, y)[..., None]                         # [n,S,S,1]
    return low[:, None, None] + (high - low)[:, None, None] * pattern


def _pattern(p, lattice, x, y):
    """Texture intensity [n, S, S] in [0, 1] of the kind chosen by p[:, 3]."""
    kind = _kind(p[:, 3], len(TEXTURE_KINDS))
    out = np.empty((len(p),) + x.shape, np.float32)
    for k, fn in enumerate((_stripes, _checker, _noise, _gradient)):
        sel = kind == k
        if sel.any():
            out[sel] = fn(p[sel], lattice[sel], x, y)
    return out


def _rotated(p, x, y):
    """Coordinates along / across the texture angle pi*p[:, 4]: two [n, S, S]."""
    angle = np.pi * p[:, 4][:, None, None]
    c, s = np.cos(angle), np.sin(angle)
    return x * c + y * s, y * c - x * s


def _freq_phase(p):
    """Frequency in cycles per unit length, phase; each [n, 1, 1]."""
    return (1.0 + 2.0 * p[:, 5])[:, None, None], 2 * np.pi * p[:, 6][:, None, None]


def _stripes(p, lattice, x, y):
    along, _ = _rotated(p, x, y)
    freq, phase = _freq_phase(p)
    return 0.5 + 0.5 * np.sin(2 * np.pi * freq * along + phase)


def _checker(p, lattice, x, y):
    along, across = _rotated(p, x, y)
    freq, phase = _freq_phase(p)
    return np.sin(np.pi * freq * along + phase) * np.sin(np.pi * freq * across) > 0


def _gradient(p, lattice, x, y):
    along, _ = _rotated(p, x, y)
    return np.clip(0.5 + along / (2 * np.sqrt(2)), 0.0, 1.0)


def _noise(p, lattice, x, y):
    """Smooth value noise: lattice [n, G, G] in [0, 1] upsampled to [n, S, S] (smoothstep)."""
    size, g = x.shape[0], lattice.shape[-1]
    pos = (np.arange(size) + 0.5) / size * (g - 1)
    lo = np.minimum(pos.astype(np.int64), g - 2)
    t = pos - lo
    t = t * t * (3 - 2 * t)
    weights = np.zeros((size, g), np.float32)
    weights[np.arange(size), lo] = 1 - t
    weights[np.arange(size), lo + 1] = t
    return weights @ lattice @ weights.T


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB: h, s, v [n] (h wraps mod 1) -> [n, 3] in [0, 1]."""
    h = np.mod(h, 1.0)[:, None]
    k = np.mod(np.array([5.0, 3.0, 1.0], np.float32) + h * 6.0, 6.0)
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


# ---------------------------------------------------------------- style "object"
OBJECT_CENTRE_RANGE = 0.25             # object centres uniform in [-r, r]^2 (normalised units)
OBJECT_RADIUS_RANGE = (0.45, 0.75)     # of the [-1, 1] image
OBJECT_PATTERN_KINDS = ("stripes", "checker")
BACKGROUND_KINDS = ("noise", "gradient")
_BACKGROUND_LATTICE = 3                # low-frequency background: value noise on 3x3 points
_BACKGROUND_PARAMS = 6                 # hue, saturation, value, contrast, kind, angle
_APPEARANCE_PARAMS = 9                 # per object: see _object_colours / _object_pattern


def _render_object(rngs, size, num_regions):
    """Style "object": saturated patterned objects near the centre on a smooth, paler
    background; hues of every region independent.  ([n,S,S,3] in [-1,1], [n,S,S])."""
    num_obj = num_regions - 1
    lattice = _BACKGROUND_LATTICE ** 2
    per_obj = _OBJECT_PARAMS + _APPEARANCE_PARAMS
    per_image = _BACKGROUND_PARAMS + lattice + num_obj * per_obj
    u = np.stack([r.random(per_image, np.float32) for r in rngs])         # [n, P]
    pixel_noise = np.stack([r.standard_normal((size, size, 3), np.float32) for r in rngs])
    bg_u, u = u[:, :_BACKGROUND_PARAMS], u[:, _BACKGROUND_PARAMS:]
    bg_lattice = u[:, :lattice].reshape(-1, _BACKGROUND_LATTICE, _BACKGROUND_LATTICE)
    obj_u = u[:, lattice:].reshape(-1, num_obj, per_obj)

    x, y = _pixel_grid(size)
    image = _background(bg_u, bg_lattice, x, y)
    mask = np.zeros(image.shape[:3], np.int32)
    for k in range(1, num_regions):
        geometry, look = obj_u[:, k - 1, :_OBJECT_PARAMS], obj_u[:, k - 1, _OBJECT_PARAMS:]
        inside = _object_inside(geometry, x, y, OBJECT_CENTRE_RANGE, OBJECT_RADIUS_RANGE)
        vivid, pale = _object_colours(look)
        pattern = _object_pattern(look, x, y)[..., None]
        tex = pale[:, None, None] + (vivid - pale)[:, None, None] * pattern
        image = np.where(inside[..., None], tex, image)
        mask = np.where(inside, k, mask)
    return _finish(image, pixel_noise), mask


def _background(p, lattice, x, y):
    """Smooth low-frequency, desaturated background: p [n, 6], lattice [n, G, G] ->
    RGB [n, S, S, 3] in [0, 1] (saturation 0-0.35, value noise or a linear gradient)."""
    hue, sat = p[:, 0], 0.35 * p[:, 1]
    val, contrast = 0.3 + 0.55 * p[:, 2], 0.15 + 0.3 * p[:, 3]
    low = _hsv_to_rgb(hue, sat, np.clip(val - contrast / 2, 0.05, 1.0))
    high = _hsv_to_rgb(hue + 0.05, sat, np.clip(val + contrast / 2, 0.05, 1.0))
    angle = np.pi * p[:, 5][:, None, None]
    along = x * np.cos(angle) + y * np.sin(angle)
    gradient = np.clip(0.5 + along / (2 * np.sqrt(2)), 0.0, 1.0)
    pattern = np.where((_kind(p[:, 4], len(BACKGROUND_KINDS)) == 0)[:, None, None],
                       _noise(None, lattice, x, y), gradient)[..., None]
    return low[:, None, None] + (high - low)[:, None, None] * pattern


def _object_colours(p):
    """The two colours of an object's pattern, each [n, 3] in [0, 1]: a vivid one
    (saturation 0.6-1, value 0.6-1) and a paler, darker one of the same hue."""
    hue, sat, val = p[:, 0], 0.6 + 0.4 * p[:, 1], 0.6 + 0.4 * p[:, 2]
    vivid = _hsv_to_rgb(hue, sat, val)
    pale = _hsv_to_rgb(hue, sat * (0.2 + 0.5 * p[:, 3]), val * (0.35 + 0.4 * p[:, 4]))
    return vivid, pale


def _object_pattern(p, x, y):
    """Hard stripes or a checkerboard [n, S, S] in {0, 1}: angle p[:, 6], frequency
    1.5-3 cycles per unit p[:, 7], phase p[:, 8]; kind p[:, 5]."""
    angle = np.pi * p[:, 6][:, None, None]
    c, s = np.cos(angle), np.sin(angle)
    along, across = x * c + y * s, y * c - x * s
    freq = (1.5 + 1.5 * p[:, 7])[:, None, None]
    phase = 2 * np.pi * p[:, 8][:, None, None]
    wave = np.sin(2 * np.pi * freq * along + phase)
    checker = wave * np.sin(2 * np.pi * freq * across)
    is_stripes = (_kind(p[:, 5], len(OBJECT_PATTERN_KINDS)) == 0)[:, None, None]
    return (np.where(is_stripes, wave, checker) > 0).astype(np.float32)


_RENDERERS = {"object": _render_object, "textured": _render_textured}
