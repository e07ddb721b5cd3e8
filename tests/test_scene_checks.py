"""Scene files are checked before training (`fdm.data.scene_checks` via `fdm.data.nerf`).

Tiny fake scenes in tmp_path (a Blender folder with 3 PNGs, an LLFF folder with
3 images in images_8/) are broken one way at a time; each reader must raise a
`UserError` whose message is one line naming the file (and the frame).
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

from fdm.data import nerf, scene_checks
from fdm.errors import UserError
from tests import helpers
from tests.test_nerf_data import FERN, LEGO, needs_fern, needs_lego

SIZE = 8


def _rotation(angle: float) -> np.ndarray:
    """Rotation [3, 3] about z by `angle` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _write_image(path, colour, size=(SIZE, SIZE), mode="RGBA"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, colour).save(path)


def _blender_meta(num: int = 3) -> dict:
    """transforms_train.json contents for frames ./train/r_i with rigid 4x4 matrices."""
    frames = []
    for i in range(num):
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = _rotation(0.5 * i), [0.0, 0.0, 4.0]
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": m.tolist()})
    return {"camera_angle_x": 0.69, "frames": frames}


def _blender_scene(root, meta=None):
    """A Blender scene folder: transforms_train.json (`meta`) and 3 RGBA PNGs."""
    for i in range(3):
        _write_image(os.path.join(root, "train", f"r_{i}.png"), (40 * i, 80, 120, 255))
    _write_json(root, meta or _blender_meta())
    return str(root)


def _write_json(root, meta) -> str:
    path = os.path.join(root, "transforms_train.json")
    with open(path, "w") as f:
        json.dump(meta, f, indent=2)
    return path


def _llff_array(num: int = 3) -> np.ndarray:
    """poses_bounds [num, 17]: [down, right, back] rotations, hwf (8, 8, 10), bounds (1, 5)."""
    rows = []
    for i in range(num):
        pose = np.zeros((3, 5))
        pose[:, :3], pose[:, 3], pose[:, 4] = _rotation(0.1 * i), [0.1 * i, 0.0, 0.0], \
            [SIZE, SIZE, 10.0]
        rows.append(np.concatenate([pose.ravel(), [1.0, 5.0]]))
    return np.array(rows)


def _llff_scene(root, arr=None, num_images: int = 3):
    """An LLFF scene folder: poses_bounds.npy (`arr`) and images_8/image00i.{png,jpg}."""
    for i in range(num_images):
        ext = "jpg" if i == 1 else "png"
        _write_image(os.path.join(root, "images_8", f"image00{i}.{ext}"), (30 * i, 60, 90),
                     mode="RGB")
    np.save(os.path.join(root, "poses_bounds.npy"), _llff_array() if arr is None else arr)
    return str(root)


def _error(fn, *args, **kwargs) -> str:
    """The one-line message of the UserError that fn(*args) raises."""
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "; " in message, message   # one line: problem; fix
    return message


def test_fake_scenes_load(tmp_path):
    meta = _blender_meta()
    meta["frames"][2]["transform_matrix"] = meta["frames"][2]["transform_matrix"][:3]  # 3x4
    d = nerf.load_nerf_synthetic(_blender_scene(tmp_path / "blender", meta), "train")
    assert d.images.shape == (3, SIZE, SIZE, 3) and d.c2w.shape == (3, 4, 4)
    np.testing.assert_allclose(d.c2w[2, 3], [0, 0, 0, 1])
    llff = nerf.load_llff(_llff_scene(tmp_path / "llff"), "all")
    assert llff.images.shape == (3, SIZE, SIZE, 3) and 0 < llff.geometry.near < llff.geometry.far


def _nan(meta):
    meta["frames"][1]["transform_matrix"][0][2] = float("nan")


def _frames(value):
    return lambda meta: meta.update(frames=value)


def _set_matrix(index, fn):
    def mutate(meta):
        m = np.array(meta["frames"][index]["transform_matrix"])
        meta["frames"][index]["transform_matrix"] = fn(m).tolist()
    return mutate


def _scale(m):
    m[:3, :3] *= 1.1
    return m


def _mirror(m):
    m[:3, 0] *= -1.0
    return m


def _last_row(m):
    m[3] = [0.0, 0.0, 1.0, 1.0]
    return m


BLENDER_CASES = {
    "nan_matrix": (_nan, ["frame 1", "'./train/r_1'", "non-finite"]),
    "no_camera_angle": (lambda meta: meta.pop("camera_angle_x"), ["'camera_angle_x'"]),
    "bad_camera_angle": (lambda meta: meta.update(camera_angle_x=-1.0), ["camera_angle_x"]),
    "no_frames": (lambda meta: meta.pop("frames"), ["'frames'"]),
    "empty_frames": (_frames([]), ["empty list"]),
    "frame_not_object": (lambda meta: meta["frames"].__setitem__(2, [1, 2]), ["frame 2"]),
    "no_matrix": (lambda meta: meta["frames"][2].pop("transform_matrix"),
                  ["frame 2", "'./train/r_2'", "'transform_matrix'"]),
    "no_file_path": (lambda meta: meta["frames"][0].pop("file_path"),
                     ["frame 0", "'file_path'"]),
    "ragged_matrix": (lambda meta: meta["frames"][1]["transform_matrix"][0].pop(),
                      ["frame 1", "not a matrix of numbers"]),
    "matrix_3x3": (_set_matrix(1, lambda m: m[:3, :3]), ["frame 1", "shape [3, 3]"]),
    "not_orthonormal": (_set_matrix(2, _scale), ["frame 2", "'./train/r_2'", "orthonormal"]),
    "reflection": (_set_matrix(0, _mirror), ["frame 0", "reflection"]),
    "bad_last_row": (_set_matrix(1, _last_row), ["frame 1", "last row"]),
}


@pytest.mark.parametrize("case", sorted(BLENDER_CASES))
def test_bad_blender_metadata(tmp_path, case):
    mutate, named = BLENDER_CASES[case]
    meta = _blender_meta()
    mutate(meta)
    scene = _blender_scene(tmp_path, meta)
    message = _error(nerf.load_nerf_synthetic, scene, "train")
    for text in [os.path.join(scene, "transforms_train.json"), *named]:
        assert text in message, message


def test_truncated_json_names_line_and_column(tmp_path):
    scene = _blender_scene(tmp_path)
    path = os.path.join(scene, "transforms_train.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[:len(text) // 2])
    message = _error(nerf.load_nerf_synthetic, scene, "train")
    assert path in message and "not valid JSON" in message and "line " in message, message
    _write_json(scene, [1, 2])
    assert "not an object" in _error(nerf.load_nerf_synthetic, scene, "train")


def test_bad_blender_images(tmp_path):
    scene = _blender_scene(tmp_path)
    image = os.path.join(scene, "train", "r_1.png")
    os.remove(image)
    message = _error(nerf.load_nerf_synthetic, scene, "train")
    assert "image not found" in message and image in message, message
    assert "frame 1 (file_path './train/r_1')" in message, message
    with open(image, "wb") as f:
        f.write(b"\x89PNG garbage, not an image")
    message = _error(nerf.load_nerf_synthetic, scene, "train")
    assert "cannot read image" in message and image in message and "frame 1" in message
    _write_image(image, (0, 0, 0, 255), size=(SIZE, 2 * SIZE))
    message = _error(nerf.load_nerf_synthetic, scene, "train")
    assert image in message and "one size" in message, message


def _llff_nan(arr):
    arr[1, 4] = np.nan
    return arr


def _llff_scale(arr):
    arr[2, :15] *= 1.5
    return arr


def _llff_bounds(near, far):
    def mutate(arr):
        arr[1, 15:] = near, far
        return arr
    return mutate


def _llff_hwf(arr):
    arr[0, 14] = 0.0
    return arr


LLFF_CASES = {
    "shape": (lambda arr: arr[:, :16], ["shape [3, 16]", "[N, 17]"]),
    "no_rows": (lambda arr: arr[:0], ["shape [0, 17]"]),
    "nan": (_llff_nan, ["row 1", "non-finite"]),
    "near_zero": (_llff_bounds(0.0, 5.0), ["row 1", "0 < near < far"]),
    "near_after_far": (_llff_bounds(6.0, 5.0), ["row 1", "0 < near < far"]),
    "focal_zero": (_llff_hwf, ["row 0", "height/width/focal"]),
    "not_orthonormal": (_llff_scale, ["row 2", "orthonormal"]),
}


@pytest.mark.parametrize("case", sorted(LLFF_CASES))
def test_bad_llff_poses_bounds(tmp_path, case):
    mutate, named = LLFF_CASES[case]
    scene = _llff_scene(tmp_path, mutate(_llff_array()))
    message = _error(nerf.load_llff, scene, "all")
    for text in [os.path.join(scene, "poses_bounds.npy"), *named]:
        assert text in message, message


def test_llff_count_damaged_file_and_bad_image(tmp_path):
    scene = _llff_scene(tmp_path, num_images=2)
    message = _error(nerf.load_llff, scene, "all")
    assert "3 poses" in message and "2 images" in message, message
    assert os.path.join(scene, "poses_bounds.npy") in message, message
    _write_image(os.path.join(scene, "images_8", "image002.png"), (0, 0, 0), mode="RGB")
    with open(os.path.join(scene, "images_8", "image001.jpg"), "wb") as f:
        f.write(b"\xff\xd8 truncated jpeg")
    message = _error(nerf.load_llff, scene, "all")
    assert "cannot read image" in message and "image001.jpg" in message, message
    assert "pose row 1" in message, message
    with open(os.path.join(scene, "poses_bounds.npy"), "wb") as f:
        f.write(b"\x93NUMPY garbage")
    message = _error(nerf.load_llff, scene, "all")
    assert "cannot read" in message and "poses_bounds.npy" in message, message


def test_rotation_problem():
    assert scene_checks.rotation_problem(_rotation(0.3)) == ""
    near = _rotation(0.3) + 1e-4
    assert scene_checks.rotation_problem(near) == ""
    assert "orthonormal" in scene_checks.rotation_problem(_rotation(0.3) * 1.01)
    assert "reflection" in scene_checks.rotation_problem(np.diag([1.0, 1.0, -1.0]))


@needs_lego
def test_real_lego_files_pass_with_a_wide_margin():
    for split in ("train", "val"):
        path = os.path.join(LEGO, f"transforms_{split}.json")
        _, frames = scene_checks.blender_meta(scene_checks.read_json(path), path)
        c2w = np.stack([scene_checks.blender_pose(f, i, path) for i, f in enumerate(frames)])
        r = c2w[:, :3, :3]
        error = np.abs(np.swapaxes(r, 1, 2) @ r - np.eye(3)).max()
        assert error < scene_checks.ROTATION_TOL / 100, error          # measured 1.3e-6
    assert nerf.load_nerf_synthetic(LEGO, "train", 16).images.shape == (100, 16, 16, 3)


@needs_fern
def test_real_fern_files_pass_with_a_wide_margin():
    arr = np.load(os.path.join(FERN, "poses_bounds.npy"))
    scene_checks.check_poses_bounds(arr, "fern")
    r = arr[:, :15].reshape(-1, 3, 5)[:, :, :3]
    assert np.abs(np.swapaxes(r, 1, 2) @ r - np.eye(3)).max() < scene_checks.ROTATION_TOL / 100
    assert nerf.load_llff(FERN, "all", 16).images.shape == (17, 16, 21, 3)


def test_command_line_bad_scene_exits_2_and_writes_nothing(tmp_path):
    meta = _blender_meta()
    _nan(meta)
    scene = _blender_scene(tmp_path / "scene", meta)
    workdir = tmp_path / "wd"
    proc = helpers.run_main(
        "--config=configs/toy_scene.py:tiny", "--config.data.dataset=nerf_synthetic",
        f"--config.data.data_dir={scene}", "--config.data.image_size=16",
        f"--workdir={workdir}", timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert os.path.join(scene, "transforms_train.json") in lines[0] and "frame 1" in lines[0]
    assert not workdir.exists()
