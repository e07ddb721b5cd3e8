"""fdm.data.factors (seed 002 brief, sec. 4): determinism, labels read back from the pixels
with independent code (stdlib colorsys hues, bounding-box fill ratios, stripe parities),
disjoint splits, every factor value present, and the 'factors' registry entry."""
import colorsys

import numpy as np
import pytest

from fdm import data
from fdm.data import factors
from fdm.errors import UserError
from tests import data_fakes as fakes

N = 160


@pytest.fixture(scope="module")
def big():
    """N examples at 64 px: shapes and stripes resolved well enough to read back."""
    return factors.generate(N, 64, seed=0, split="train")


def test_deterministic_per_example_and_seed():
    a = factors.generate(40, 16, seed=3, split="val")
    b = factors.generate(40, 16, seed=3, split="val")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    tail = factors.generate(5, 16, seed=3, split="val", start=30)        # example i is fixed
    for k in a:
        np.testing.assert_array_equal(tail[k], a[k][30:35])
    other = factors.generate(40, 16, seed=4, split="val")
    assert np.abs(other["image"].astype(int) - a["image"]).mean() > 10


def test_types_shapes_and_scene_independent_of_size(big):
    small = factors.generate(N, 16, seed=0, split="train")
    assert small["image"].shape == (N, 16, 16, 3) and small["image"].dtype == np.uint8
    assert small["mask"].shape == (N, 16, 16) and small["mask"].dtype == np.int32
    for name, card in factors.FACTORS.items():
        assert small[name].shape == (N,) and small[name].dtype == np.int32
        assert 0 <= small[name].min() and small[name].max() < card
        np.testing.assert_array_equal(small[name], big[name])            # same scene
    assert set(small) == {"image", "mask", *factors.FACTORS}
    assert (small["mask"].sum(axis=(1, 2)) >= 9).all()                   # object visible


def test_object_lies_in_its_labelled_quadrant(big):
    s = 64
    for i in range(N):
        rows, cols = np.nonzero(big["mask"][i])
        q = big["quadrant"][i]
        top, left = q < 2, q % 2 == 0
        assert ((rows < s // 2) if top else (rows >= s // 2)).all(), i
        assert ((cols < s // 2) if left else (cols >= s // 2)).all(), i
    small = factors.generate(N, 16, seed=0, split="train")             # at 16 px as well
    quadrant_of_pixels = [(np.nonzero(m)[0] >= 8) * 2 + (np.nonzero(m)[1] >= 8)
                          for m in small["mask"]]
    for q, pix in zip(small["quadrant"], quadrant_of_pixels):
        assert (pix == q).all()


def test_centre_placement_moves_the_object_across_its_quadrant():
    """data.placement='centre': same labels and colours, the object's centre in its
    quadrant, the object inside the image (may straddle the midlines), and it moves by
    more than twice the default's range."""
    default = factors.generate(N, 64, seed=0, split="train")
    centre = factors.generate(N, 64, seed=0, split="train", placement="centre")
    for name in factors.FACTORS:
        np.testing.assert_array_equal(centre[name], default[name])
    spans = {}
    for key, d in (("default", default), ("centre", centre)):
        rows, cols = np.mgrid[:64, :64]
        area = d["mask"].sum(axis=(1, 2))
        cy, cx = [(d["mask"] * g).sum(axis=(1, 2)) / area for g in (rows, cols)]
        right, bottom = d["quadrant"] % 2 == 1, d["quadrant"] >= 2
        x_in_half = np.where(right, cx - 32, cx)
        spans[key] = np.ptp(x_in_half)
        if key == "centre":     # the bounding box's centre lies in the labelled quadrant
            for i in range(N):
                r, c = np.nonzero(d["mask"][i])
                mid_r, mid_c = (r.min() + r.max()) / 2, (c.min() + c.max()) / 2
                assert (mid_c >= 31.5) == right[i] and (mid_r >= 31.5) == bottom[i], i
            straddles = [(np.nonzero(m)[1] < 32).any() and (np.nonzero(m)[1] >= 32).any()
                         for m in d["mask"]]
            assert np.mean(straddles) > 0.2
    assert spans["centre"] > 2 * spans["default"], spans


def test_unknown_placement_is_a_one_line_error():
    with pytest.raises(UserError, match="data.placement='middle'"):
        factors.generate(4, 16, placement="middle")


def _hue_of(rgb_uint8) -> float:
    """Hue in [0, 1) of the mean colour of pixels [M, 3] (stdlib colorsys)."""
    r, g, b = np.median(rgb_uint8, axis=0) / 255.0
    return colorsys.rgb_to_hsv(r, g, b)[0]


def _nearest_hue(h: float, hues) -> int:
    d = np.abs((np.asarray(hues) - h + 0.5) % 1.0 - 0.5)                 # circular distance
    return int(np.argmin(d))


def test_hues_match_the_labels(big):
    for i in range(N):
        img, mask = big["image"][i].reshape(-1, 3), big["mask"][i].ravel().astype(bool)
        assert _nearest_hue(_hue_of(img[~mask]), factors.BG_HUES) == big["bg_hue"][i], i
        obj = img[mask]
        light = obj[obj.max(axis=1) >= np.median(obj.max(axis=1))]        # the light stripes
        assert _nearest_hue(_hue_of(light), factors.OBJ_HUES) == big["obj_hue"][i], i


def test_stripes_are_one_pixel_and_oriented_as_labelled(big):
    for i in range(N):
        value = big["image"][i].max(axis=2).astype(float)
        rows, cols = np.nonzero(big["mask"][i])
        dark = value[rows, cols] < value[rows, cols].mean()
        along = rows if big["stripe"][i] == 0 else cols                  # 0: horizontal
        across = cols if big["stripe"][i] == 0 else rows
        # dark exactly on one parity of the labelled axis, independent of the other axis
        assert len(np.unique(dark ^ (along % 2 == 0))) == 1, i
        assert len(np.unique(dark ^ (across % 2 == 0))) == 2, i


FILL = {"disc": np.pi / 4, "square": 1.0, "triangle": 0.5, "cross": 0.64}


def test_shapes_match_their_bounding_box_fill(big):
    """Object area over its bounding box: disc pi/4, square 1, triangle 1/2, cross 0.64."""
    names = list(FILL)
    assert tuple(names) == factors.SHAPES
    for i in range(N):
        rows, cols = np.nonzero(big["mask"][i])
        fill = len(rows) / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
        nearest = names[int(np.argmin([abs(fill - FILL[n]) for n in names]))]
        assert nearest == factors.SHAPES[big["shape"][i]], (i, fill)


def test_splits_are_disjoint_and_every_value_occurs():
    splits = {s: factors.generate(2000, 16, seed=0, split=s) for s in factors.SPLIT_IDS}
    rows = {s: {img.tobytes() for img in d["image"]} for s, d in splits.items()}
    assert all(len(r) == 2000 for r in rows.values())
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]
    for d in splits.values():
        for name, card in factors.FACTORS.items():
            counts = np.bincount(d[name], minlength=card)
            expected = 2000 / card
            assert len(counts) == card
            assert np.abs(counts - expected).max() < 5 * np.sqrt(expected), (name, counts)
    joint = factors.joint_label(splits["test"])
    assert np.bincount(joint).size == 24 and (np.bincount(joint) > 40).all()


def test_joint_label_is_mixed_radix():
    labels = {"shape": np.array([0, 3, 2]), "obj_hue": np.array([5, 0, 1]),
              "stripe": np.array([1, 0, 1])}
    np.testing.assert_array_equal(factors.joint_label(labels), [5, 18, 13])
    np.testing.assert_array_equal(factors.joint_label(labels, ("stripe", "shape")),
                                  [4, 3, 6])
    with pytest.raises(UserError, match="unknown factors"):
        factors.joint_label(labels, ("colour",))


def _config(**keys):
    c = fakes.config("factors", "", image_size=16, batch_size=8)
    c.data.update(keys)
    return c


def test_registry_pipeline_carries_image_and_labels():
    c = _config(num_train=48, num_val=24, num_test=32)
    train = fakes.load(c, "train")
    assert len(train["image"]) == 48 and set(train) == {"image", "mask", *factors.FACTORS}
    direct = factors.generate(48, 16, seed=0, split="train")
    for k in train:
        np.testing.assert_array_equal(train[k], direct[k])
    batch = next(data.make_iterator(c, "train"))
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (8, 16, 16, 3)
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    for name in factors.FACTORS:
        assert batch[name].shape == (8,) and batch[name].dtype == np.int32
    assert len(fakes.load(c, "eval")["image"]) == 32                     # test by default
    val = fakes.load(_config(num_val=24, eval_split="val"), "eval")
    np.testing.assert_array_equal(val["image"], factors.generate(24, 16, 0, "val")["image"])
    evals = list(data.make_iterator(c, "eval"))
    assert sum(int(b["valid"].sum()) for b in evals) == 32


def test_registry_defaults_are_the_briefs_sizes():
    options = data.DATASETS["factors"].options
    assert (options["num_train"], options["num_test"]) == (8000, 2000)


@pytest.mark.parametrize("keys, message", [
    (dict(eval_split="train"), "data.eval_split"),
    (dict(num_test=0), "data.num_test"),
    (dict(image_size=4), "data.image_size=4"),
])
def test_bad_options_give_one_line_errors(keys, message):
    c = _config(**keys)
    with pytest.raises(UserError, match=message) as info:
        fakes.load(c, "eval")
    assert "\n" not in str(info.value)


def test_bad_split_names_the_choices():
    with pytest.raises(UserError, match="'train', 'val', 'test'"):
        factors.generate(4, 16, split="eval")

