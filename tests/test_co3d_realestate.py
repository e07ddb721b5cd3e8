"""fdm.data.co3d and fdm.data.realestate10k on fakes in the published layouts, and the frame
triples of fdm.data.posed_sequences.

Camera checks are against independent constructions (tests/data_fakes.py): a world point is
projected with each dataset's own convention (PyTorch3D NDC cameras for Co3D, normalised
OpenCV intrinsics + world-to-camera matrices for RealEstate10K) and with the converted OpenGL
c2w + pixel intrinsics through fdm.nerf.rays (the ray of the projected pixel must pass
through the point), and end to end: every fake frame shows a disc where the dataset's
convention projects the point, so after the loader's crop and resize the disc must lie where
the loaded cameras project it.
"""
import gzip
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from fdm.data import co3d, posed_sequences as ps, realestate10k as re10k
from fdm.data.folder import DataDir
from fdm.errors import UserError
from fdm.nerf import rays as rays_lib
from tests import data_fakes as fakes

SIZE = 24


def _ray_distance(c2w, focal, centre, uv, points):
    """Distance of points [N, 3] to the library's rays through pixels uv [N, 2] (fx = fy)."""
    r = rays_lib.rays_from_pixels(jnp.asarray(c2w, jnp.float32),
                                  jnp.asarray(uv, jnp.float32)[:, None],
                                  jnp.asarray(focal[:, 0:1], jnp.float32),
                                  jnp.asarray(centre[:, 0:1], jnp.float32),
                                  jnp.asarray(centre[:, 1:2], jnp.float32))
    d = np.asarray(r.viewdirs[:, 0], np.float64)
    rel = points - np.asarray(r.origins[:, 0], np.float64)
    along = (rel * d).sum(-1)
    assert (along > 0).all()                         # in front of the camera
    return np.linalg.norm(rel - along[:, None] * d, axis=-1)


def _random_points(rng, n):
    return rng.normal(0.0, 0.4, (n, 3))


@pytest.mark.parametrize("fmt", ["ndc_isotropic", "ndc_norm_image_bounds"])
def test_co3d_camera_conversion_matches_pytorch3d_projection(fmt):
    rng = np.random.default_rng(0)
    n, size_hw = 12, np.array([90, 60])
    eyes = fakes.orbit_eyes(n, 3.0, 1.2)
    cams = [fakes.pytorch3d_look_at(e, rng.normal(0, 0.1, 3), fakes._unit([0.2, 0.1, 1.0]))
            for e in eyes]
    rot, trans = np.stack([c[0] for c in cams]), np.stack([c[1] for c in cams])
    focal_ndc = np.tile([2.1, 2.1] if fmt == "ndc_isotropic" else [3.1, 2.1], (n, 1))
    principal_ndc = rng.uniform(-0.1, 0.1, (n, 2))
    points = _random_points(rng, n)
    uv = np.stack([fakes.pytorch3d_project(points[i], rot[i], trans[i], focal_ndc[i],
                                           principal_ndc[i], size_hw, fmt) for i in range(n)])
    c2w, focal, centre = co3d.pytorch3d_to_opengl(rot, trans, focal_ndc, principal_ndc,
                                                  np.tile(size_hw, (n, 1)), fmt)
    np.testing.assert_allclose(ps.project(c2w, focal, centre, points), uv, atol=1e-9)
    np.testing.assert_allclose(c2w[:, :3, 3], eyes, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(c2w[:, :3, :3]), 1.0, atol=1e-9)
    if fmt == "ndc_isotropic":                       # square pixels: the library's own rays
        assert np.abs(_ray_distance(c2w, focal, centre, uv, points)).max() < 1e-5


def test_realestate10k_camera_conversion_matches_opencv_projection():
    rng = np.random.default_rng(1)
    n, size_hw = 10, np.array([360, 640])
    w2c = np.stack([fakes.opencv_look_at(e, rng.normal(0, 0.1, 3)) for e in
                    fakes.orbit_eyes(n, 2.0, 0.4)])
    intrinsics = np.tile([0.5, 0.5 * 640 / 360, 0.5, 0.5], (n, 1)) + \
        np.concatenate([np.zeros((n, 2)), rng.uniform(-0.03, 0.03, (n, 2))], 1)
    points = _random_points(rng, n)
    uv = np.stack([fakes.opencv_project(points[i], w2c[i], intrinsics[i], size_hw)
                   for i in range(n)])
    c2w = re10k.opencv_w2c_to_opengl(w2c)
    focal, centre = re10k.pixel_intrinsics(intrinsics, np.tile(size_hw, (n, 1)))
    np.testing.assert_allclose(ps.project(c2w, focal, centre, points), uv, atol=1e-9)
    assert np.abs(_ray_distance(c2w, focal, centre, uv, points)).max() < 1e-5
    # the optical axis (OpenCV +z) is the OpenGL camera's -z
    np.testing.assert_allclose(-c2w[:, :3, 2], w2c[:, 2, :3], atol=1e-12)


def test_crop_resize_intrinsics():
    # portrait 48x36 -> crop rows 6..42, scale 24/36; landscape 36x64 -> crop cols 14..50
    focal, centre = ps.crop_resize_intrinsics(np.array([[30.0, 31.0], [57.6, 57.6]]),
                                              np.array([[18.0, 24.0], [33.28, 16.92]]),
                                              np.array([48, 36]), np.array([36, 64]), 24)
    np.testing.assert_allclose(focal, [[20.0, 62 / 3], [38.4, 38.4]])
    np.testing.assert_allclose(centre, [[12.0, 12.0], [(33.28 - 14) * 2 / 3, 16.92 * 2 / 3]])
    assert ps.crop_box(48, 36) == (0, 6, 36) and ps.crop_box(37, 64) == (13, 0, 37)


def _check_sequence(seq, uv_original, size_hw, point=fakes.VIDEO_POINT, tol=0.1):
    """Shapes, and the loaded cameras project `point` onto each loaded frame's disc, which
    sits where the crop/resize maps the disc of the original frame."""
    n = len(uv_original)
    assert seq.image.shape == (n, SIZE, SIZE, 3) and seq.image.dtype == np.uint8
    assert seq.c2w.shape == (n, 4, 4) and seq.c2w.dtype == np.float32
    assert seq.focal.shape == seq.principal_point.shape == (n, 2)
    projected = ps.project(seq.c2w, seq.focal, seq.principal_point, point)
    left, top, side = ps.crop_box(*size_hw)
    expected = (uv_original - [left, top]) * SIZE / side
    np.testing.assert_allclose(projected, expected, atol=1e-3)
    np.testing.assert_allclose(fakes.red_centroid(seq.image), projected, atol=tol)


@pytest.mark.parametrize("fmt", ["ndc_isotropic", "ndc_norm_image_bounds"])
def test_co3d_loader_on_fake(tmp_path, fmt):
    info = fakes.co3d_v2(tmp_path, intrinsics_format=fmt)
    train = co3d.load_co3d_sequences(str(tmp_path), "hydrant", SIZE)
    assert [s.name for s in train] == ["101_a", "102_b"]
    for seq in train:
        np.testing.assert_array_equal(seq.frame_ids, info[seq.name]["frame_numbers"])
        _check_sequence(seq, info[seq.name]["uv"], (48, 36))
    val = co3d.load_co3d_sequence(str(tmp_path), "hydrant", "201_c", SIZE, split="val")
    _check_sequence(val, info["201_c"]["uv"], (48, 36))
    normalized = co3d.load_co3d_sequences(str(tmp_path), "hydrant", SIZE, normalize_radius=1.5,
                                          max_sequences=1)[0]
    np.testing.assert_allclose(np.median(np.linalg.norm(normalized.c2w[:, :3, 3], axis=-1)),
                               1.5, rtol=1e-5)
    np.testing.assert_allclose(normalized.c2w[:, :3, :3], train[0].c2w[:, :3, :3], atol=1e-6)


def test_object_centric_normalization_finds_the_look_at_point():
    target = np.array([0.3, -0.2, 0.5])
    eyes = target + fakes.orbit_eyes(8, 2.0, 0.7)
    c2w = re10k.opencv_w2c_to_opengl(np.stack([fakes.opencv_look_at(e, target) for e in eyes]))
    np.testing.assert_allclose(ps.focus_point(c2w), target, atol=1e-9)
    out = ps.normalize_object_centric(c2w, 1.0)
    np.testing.assert_allclose(out[:, :3, 3], (eyes - target) / np.linalg.norm(
        eyes[0] - target), atol=1e-6)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".npz"])
def test_realestate10k_loader_on_fake(tmp_path, ext):
    frames = tmp_path / "frames"
    info = fakes.realestate10k(tmp_path / "re10k", frames_root=frames, ext=ext,
                               drop=[("0a1b", 3)])
    seqs = re10k.load_realestate10k_sequences(str(tmp_path / "re10k"), "train", SIZE,
                                              frames_root=str(frames))
    assert [s.name for s in seqs] == ["0a1b", "0c2d"]
    keep = np.arange(12) != 3                        # the dropped frame is left out
    np.testing.assert_array_equal(seqs[0].frame_ids, info["0a1b"]["timestamps"][keep])
    _check_sequence(seqs[0], info["0a1b"]["uv"][keep], (36, 64))
    _check_sequence(seqs[1], info["0c2d"]["uv"], (36, 64))


def test_triple_sampler_deterministic_gaps_and_novel_between():
    lengths = [30, 4, 60]
    a = ps.sample_triple_indices(lengths, 400, [7, 0], 4, 9)
    b = ps.sample_triple_indices(lengths, 400, [7, 0], 4, 9)
    c = ps.sample_triple_indices(lengths, 400, [7, 1], 4, 9)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert any((a[k] != c[k]).any() for k in a)
    seq, ctxt, trgt, novel = (a[k] for k in ("sequence", "ctxt", "trgt", "novel"))
    gap = np.abs(trgt - ctxt)
    assert (gap >= 4).all() and (gap < 9).all() and set(gap) == set(range(4, 9))
    assert (np.minimum(ctxt, trgt) < novel).all() and (novel < np.maximum(ctxt, trgt)).all()
    assert (np.maximum(ctxt, trgt) < np.take(lengths, seq)).all()
    assert set(seq) == {0, 2}                       # sequence 1 (4 frames) has no gap of 4
    reversed_ = (trgt < ctxt).mean()
    assert 0.4 < reversed_ < 0.6
    forward = ps.sample_triple_indices(lengths, 100, 0, 4, 9, reverse=False)
    assert (forward["trgt"] > forward["ctxt"]).all()


def test_triples_arrays_relative_to_context(tmp_path):
    fakes.co3d_v2(tmp_path)
    seqs = co3d.load_co3d_sequences(str(tmp_path), "hydrant", SIZE)
    out = ps.sample_triples(seqs, 16, 3, 2, 5)
    again = ps.sample_triples(seqs, 16, 3, 2, 5)
    for key in out:
        np.testing.assert_array_equal(out[key], again[key])
    for view in ps.VIEWS:
        assert out[view].shape == (16, SIZE, SIZE, 3) and out[view].dtype == np.float32
        assert -1.0 <= out[view].min() and out[view].max() <= 1.0
        assert out[f"{view}_phi"].shape == (16, 4, 4)
        assert out[f"{view}_focal"].shape == out[f"{view}_principal_point"].shape == (16, 2)
        world = np.stack([seqs[s].c2w[f] for s, f in zip(out["sequence"],
                                                         out[f"{view}_frame"])])
        np.testing.assert_allclose(out["ctxt_world_c2w"] @ out[f"{view}_phi"], world,
                                   atol=1e-5)
        image = np.stack([seqs[s].image[f] for s, f in zip(out["sequence"],
                                                           out[f"{view}_frame"])])
        np.testing.assert_allclose(out[view], image / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_allclose(out["ctxt_phi"], np.broadcast_to(np.eye(4), (16, 4, 4)),
                               atol=1e-5)
    # relative poses keep the geometry: the point still projects onto every disc
    point = np.einsum("bij,j->bi", np.linalg.inv(out["ctxt_world_c2w"]),
                      np.append(fakes.VIDEO_POINT, 1.0))[:, :3]
    uv = ps.project(out["trgt_phi"], out["trgt_focal"], out["trgt_principal_point"], point)
    np.testing.assert_allclose(fakes.red_centroid(np.round((out["trgt"] + 1) * 127.5)), uv,
                               atol=0.1)


def test_registry_loaders(tmp_path):
    fakes.co3d_v2(tmp_path / "co3d")
    fakes.realestate10k(tmp_path / "re10k")
    fakes.realestate10k(tmp_path / "re10k", split="test", sequences={"0e3f": 8})
    root = DataDir(str(tmp_path / "co3d"))
    options = dict(co3d.REGISTRY_OPTIONS, num_train=6, num_eval=4, min_gap=2, max_gap=5)
    train = co3d.load(root, SIZE, "train", **options)
    assert train["ctxt"].shape == (6, SIZE, SIZE, 3) and train["sequence"].max() <= 1
    assert co3d.load(root, SIZE, "eval", **options)["trgt_phi"].shape == (4, 4, 4)
    root = DataDir(str(tmp_path / "re10k"))
    options = dict(re10k.REGISTRY_OPTIONS, num_train=5, num_eval=3, min_gap=2, max_gap=6)
    assert re10k.load(root, SIZE, "train", **options)["novel_phi"].shape == (5, 4, 4)
    evals = re10k.load(root, SIZE, "eval", **options)
    assert (evals["sequence"] == 0).all() and evals["trgt"].shape == (3, SIZE, SIZE, 3)


def _one_line_error(fn, *fragments):
    with pytest.raises(UserError) as err:
        fn()
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def test_co3d_missing_data_errors(tmp_path):
    missing = tmp_path / "nowhere"
    _one_line_error(lambda: co3d.load_co3d_sequences(str(missing), "hydrant", SIZE),
                    missing, "github.com/facebookresearch/co3d")
    _one_line_error(lambda: co3d.load(DataDir(str(missing)), SIZE, "train",
                                      **co3d.REGISTRY_OPTIONS),
                    missing, "--config.data.data_dir")
    fakes.co3d_v2(tmp_path)
    _one_line_error(lambda: co3d.load_co3d_sequences(str(tmp_path), "teddybear", SIZE),
                    tmp_path / "teddybear" / "frame_annotations.jgz", "teddybear",
                    "download_dataset.py")
    _one_line_error(lambda: co3d.load_co3d_sequences(str(tmp_path), "hydrant", SIZE,
                                                     subset="manyview_dev_0"),
                    "set_lists_manyview_dev_0.json", "fewview_dev")
    _one_line_error(lambda: co3d.load_co3d_sequences(str(tmp_path), "hydrant", SIZE,
                                                     split="validation"),
                    "'validation'", "'train'")
    _one_line_error(lambda: co3d.load_co3d_sequence(str(tmp_path), "hydrant", "201_c", SIZE),
                    "201_c", "'train'")
    os.remove(tmp_path / "hydrant" / "102_b" / "images" / "frame000004.jpg")
    _one_line_error(lambda: co3d.load_co3d_sequences(str(tmp_path), "hydrant", SIZE),
                    tmp_path / "hydrant" / "102_b" / "images" / "frame000004.jpg",
                    "github.com/facebookresearch/co3d")


def _rewrite_annotations(root, edit):
    path = root / "hydrant" / "frame_annotations.jgz"
    with gzip.open(path, "rt") as f:
        entries = json.load(f)
    edit(entries)
    with gzip.open(path, "wt") as f:
        json.dump(entries, f)
    return path


@pytest.mark.parametrize("damage, named", [
    ("not gzip", "frame_annotations.jgz"),
    ("truncated json", "not valid gzipped JSON"),
    ("no viewpoint", "'viewpoint'"),
    ("bad rotation", "viewpoint.R not orthonormal"),
    ("bad T", "viewpoint.T"),
    ("bad format", "intrinsics_format"),
    ("set list", "split 'train' is not a list of [sequence_name"),
])
def test_co3d_malformed_annotations_one_line_error(tmp_path, damage, named):
    fakes.co3d_v2(tmp_path)
    path = tmp_path / "hydrant" / "frame_annotations.jgz"
    if damage == "not gzip":
        path.write_text("[]")
    elif damage == "truncated json":
        with gzip.open(path, "wt") as f:
            f.write('[{"sequence_name": "101_a", ')
    elif damage == "set list":
        path = tmp_path / "hydrant" / "set_lists" / "set_lists_fewview_dev.json"
        path.write_text(json.dumps({"train": [["101_a", "2"]], "val": []}))
    else:
        def edit(entries):
            view = entries[2]["viewpoint"]
            if damage == "no viewpoint":
                del entries[2]["viewpoint"]
            elif damage == "bad rotation":
                view["R"][0][0] *= 2.0
            elif damage == "bad T":
                view["T"] = [1.0, 2.0]
            else:
                view["intrinsics_format"] = "pixels"
        _rewrite_annotations(tmp_path, edit)
    _one_line_error(lambda: co3d.load_co3d_sequences(str(tmp_path), "hydrant", SIZE),
                    path, named, "github.com/facebookresearch/co3d")


def test_realestate10k_missing_data_errors(tmp_path):
    missing = tmp_path / "nowhere"
    _one_line_error(lambda: re10k.load_realestate10k_sequences(str(missing), "train", SIZE),
                    missing, "google.github.io/realestate10k")
    _one_line_error(lambda: re10k.load(DataDir(str(missing)), SIZE, "train",
                                       **re10k.REGISTRY_OPTIONS),
                    missing, "--config.data.data_dir")
    root = tmp_path / "re10k"
    fakes.realestate10k(root)
    _one_line_error(lambda: re10k.load_realestate10k_sequences(str(root), "test", SIZE),
                    root / "test", "google.github.io/realestate10k")
    _one_line_error(lambda: re10k.load_realestate10k_sequences(str(root), "val", SIZE),
                    "'val'", "'train'")
    _one_line_error(lambda: re10k.load_realestate10k_sequences(
        str(root), "train", SIZE, frames_root=str(tmp_path / "frames")),
        tmp_path / "frames" / "train", "cross_attention_renderer")
    _one_line_error(lambda: re10k.load_realestate10k_sequence(str(root), "train", "ffff", SIZE),
                    root / "train" / "ffff.txt")
    (root / "train" / "0c2d.txt").rename(root / "train" / "0e3f.txt")
    _one_line_error(lambda: re10k.load_realestate10k_sequence(str(root), "train", "0e3f", SIZE),
                    root / "train" / "0e3f", "<timestamp>.png")
    assert re10k.sequence_names(str(root), "train") == ["0a1b"]    # 0e3f has no frames
    (root / "train" / "0e3f").mkdir()
    (root / "train" / "0e3f" / "data.npz").write_bytes(b"not a zip")
    _one_line_error(lambda: re10k.load_realestate10k_sequence(str(root), "train", "0e3f", SIZE),
                    root / "train" / "0e3f" / "data.npz", "re-extract")


@pytest.mark.parametrize("damage, named", [
    ("fields", "has 18 fields, expected 19"),
    ("number", "not a number"),
    ("rotation", "a reflection"),
    ("empty", "0 camera lines"),
])
def test_realestate10k_malformed_camera_file_one_line_error(tmp_path, damage, named):
    fakes.realestate10k(tmp_path)
    path = tmp_path / "train" / "0a1b.txt"
    lines = path.read_text().splitlines()
    fields = lines[3].split()
    if damage == "fields":
        lines[3] = " ".join(fields[:-1])
    elif damage == "number":
        lines[3] = " ".join(fields[:5] + ["nope"] + fields[6:])
    elif damage == "rotation":                       # negate the first row of R: det -1
        lines[3] = " ".join(fields[:7] + [str(-float(v)) for v in fields[7:10]] + fields[10:])
    else:
        lines = lines[:1]
    path.write_text("\n".join(lines) + "\n")
    where = "" if damage == "empty" else "line 4"
    _one_line_error(lambda: re10k.load_realestate10k_sequence(str(tmp_path), "train", "0a1b",
                                                              SIZE),
                    path, named, where, "google.github.io/realestate10k")


def test_sampler_errors():
    _one_line_error(lambda: ps.sample_triple_indices([10], 4, 0, 1, 5), "min_gap")
    _one_line_error(lambda: ps.sample_triple_indices([10], 4, 0, 5, 5), "min_gap")
    _one_line_error(lambda: ps.sample_triple_indices([4, 5], 4, 0, 5, 9), "min_gap=5",
                    "longest has 5")


@pytest.mark.parametrize("name", ["co3d", "realestate10k"])
def test_through_fdm_data_once_registered(tmp_path, name):
    from fdm import data
    if name not in data.DATASETS:
        pytest.skip(f"{name} is not registered in fdm.data.DATASETS")
    root = tmp_path / name
    if name == "co3d":
        fakes.co3d_v2(root)
    else:
        fakes.realestate10k(root)
        fakes.realestate10k(root, split="test", sequences={"0e3f": 8})
    cfg = fakes.config(name, root, image_size=SIZE, batch_size=2, num_train=4, num_eval=3,
                       min_gap=2, max_gap=5)
    train = fakes.load(cfg, "train")
    assert train["ctxt"].shape == (4, SIZE, SIZE, 3) and train["trgt_phi"].shape == (4, 4, 4)
    assert len(fakes.load(cfg, "eval")["novel"]) == 3
    batch = next(data.make_iterator(cfg, "train"))
    assert batch["ctxt"].shape == (2, SIZE, SIZE, 3) and batch["ctxt"].dtype == np.float32
    fakes.check_missing(fakes.config(name, tmp_path / "absent"), "train",
                        str(tmp_path / "absent"), "data.data_dir")
