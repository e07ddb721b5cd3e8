"""A NeRF lifting run keeps what it needs of its scene (DIR/scene.npz,
`fdm.models.lifting_scene`): `fdm.load` and render work after the training scene folder
is renamed; a workdir without the file gets it from the scene on first use."""
import os

import jax
import numpy as np
import pytest

import fdm
from configs import toy_scene
from fdm import data, run as run_lib
from fdm.data import load_scene, scenes
from fdm.errors import UserError
from fdm.models import get_family, lifting_scene
from tests.test_lifting import _blender_scene
from tests.test_scene_checks import _llff_scene


def _blender_config(data_dir: str, **model):
    """configs/toy_scene.py:tiny shrunk further (2-level encoder, 8 samples, 2 candidates)
    on a fake 16x16 nerf_synthetic scene, 2 training steps."""
    c = toy_scene.get_config("tiny")
    c.data.dataset, c.data.data_dir, c.data.eval_split = "nerf_synthetic", data_dir, "val"
    c.train.num_steps, c.train.checkpoint_every, c.train.log_every = 2, 2, 1
    c.model.encoder.ch_mult, c.model.num_samples, c.model.num_candidates = (1, 2), 8, 2
    c.eval.render_frames, c.eval.at_end = 2, False
    for key, value in model.items():
        c.model[key] = value
    return c


def _move(scene: str, to) -> None:
    """Renames the scene folder and forgets the scenes read so far (`fdm.data` caches)."""
    os.rename(scene, to)
    scenes.read_scene.cache_clear()
    data._load.cache_clear()


def test_load_and_render_after_the_scene_folder_is_renamed(tmp_path):
    """The supervised baseline (fastest to train): its orbit radius is that of the
    training cameras kept in the file."""
    scene = _blender_scene(tmp_path / "scene", ("train", "val"))
    c, workdir = _blender_config(scene, supervised=True), str(tmp_path / "run")
    run_lib.run(c, workdir, "train")
    geometry = load_scene(c, "train").geometry
    assert os.path.isfile(os.path.join(workdir, lifting_scene.SCENE_FILE))
    _move(scene, tmp_path / "moved")
    model = fdm.load(workdir)
    assert model.family.scene.geometry == geometry
    assert model.family.scene.train_images.shape[0] == 0      # supervised: none kept
    model.family.render(model.params, workdir, jax.random.PRNGKey(0))
    frame = os.path.join(workdir, "render", "frame_001.png")
    assert os.path.isfile(frame) and os.path.isfile(os.path.join(workdir, "render", "video.gif"))


def test_a_workdir_without_the_file_gets_it_from_the_scene_once(tmp_path):
    scene = _blender_scene(tmp_path / "scene", ("train",))
    c = _blender_config(scene, supervised=True)
    fam = get_family(c, str(tmp_path))
    path = tmp_path / lifting_scene.SCENE_FILE
    assert path.is_file()
    np.testing.assert_array_equal(fam.scene.train_c2w, load_scene(c, "train").c2w)
    _move(scene, tmp_path / "moved")
    again = get_family(c, str(tmp_path))
    np.testing.assert_array_equal(again.scene.train_c2w, fam.scene.train_c2w)
    os.remove(path)
    with pytest.raises(UserError, match=f"{lifting_scene.SCENE_FILE} is missing") as e:
        get_family(c, str(tmp_path))
    assert "\n" not in str(e.value)


def test_pose_free_forward_facing_render_path_needs_no_scene(tmp_path):
    """The LLFF spiral follows the predicted cameras of the training views kept in the file."""
    scene = _llff_scene(tmp_path / "llff")
    c = _blender_config(scene, camera_head="axis_angle", num_candidates=1, select_stride=0)
    c.data.dataset, c.data.image_size, c.data.eval_split = "llff", 8, "test"
    fam = get_family(c)
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), {"image": np.zeros((1, 8, 8, 3))})
    path = fam.camera_path(params, jax.random.PRNGKey(1))
    fam.save_inputs(str(tmp_path))
    _move(scene, tmp_path / "moved")
    loaded = get_family(c, str(tmp_path))
    assert loaded.scene.train_images.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(loaded.camera_path(params, jax.random.PRNGKey(1)), path)
