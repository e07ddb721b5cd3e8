"""The procedural DietNeRF encoder (`fdm.nn.scene_encoder`): unit embeddings, the InfoNCE
loss against a slow reference, the scene family's renders, the trainer's file, and the
DietNeRF smoke run with model.semantic_encoder_kind=procedural."""
import json
import os
import re
import shlex

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dietnerf as dietnerf_config
from experiments import train_scene_encoder
from fdm import run as run_lib
from fdm.data import scene_family, toy_scene
from fdm.errors import UserError
from fdm.models import check_config, lifting_semantic
from fdm.nn import scene_encoder
from fdm.nn.clip_preprocess import resize
from fdm.nn.clip_vision import ClipVisionConfig, ClipVisionTransformer
from fdm.nn.convert_clip import ClipVisionCheckpoint, save_clip_npz

TINY = scene_encoder.ConvEncoderConfig(image_size=16, channels=(8, 8), embed_dim=8)
TRAIN_ARGS = ["--steps", "2", "--batch", "4", "--eval_scenes", "4", "--image_size", "16",
              "--grid_size", "6", "--channels", "8,8", "--embed_dim", "8"]
README = os.path.join(os.path.dirname(__file__), "..", "README.md")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(path, metrics) of a 2-update run of the trainer at the smoke sizes."""
    path = str(tmp_path_factory.mktemp("encoder") / "scene_encoder.npz")
    args = train_scene_encoder.parser().parse_args([path] + TRAIN_ARGS)
    return path, train_scene_encoder.train(args)


def test_encoder_gives_unit_vectors_for_any_input_size():
    params = scene_encoder.init_params(TINY, jax.random.PRNGKey(0))
    encode = jax.jit(scene_encoder.make_conv_encoder(TINY))
    for size in (16, 13):
        images = jax.random.uniform(jax.random.PRNGKey(size), (3, size, size, 3))
        out = encode(params, images)
        assert out.shape == (3, TINY.embed_dim)
        np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of"):
        scene_encoder.ConvEncoderConfig(image_size=18, channels=(8, 8)).check()


def info_nce_reference(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    """Symmetric InfoNCE with explicit loops (float64)."""
    n = len(a)
    total = 0.0
    for i in range(n):
        row = [float(np.dot(a[i], b[j])) / tau for j in range(n)]
        col = [float(np.dot(a[j], b[i])) / tau for j in range(n)]
        total += -row[i] + np.log(sum(np.exp(r) for r in row))
        total += -col[i] + np.log(sum(np.exp(c) for c in col))
    return total / (2 * n)


def test_info_nce_matches_a_slow_reference_and_counts_matches():
    rng = np.random.default_rng(0)
    a, b = (x / np.linalg.norm(x, axis=-1, keepdims=True)
            for x in rng.normal(size=(2, 6, 5)))
    for tau in (0.07, 0.5, 1.0):
        loss, _ = scene_encoder.info_nce_loss(jnp.asarray(a, jnp.float32),
                                              jnp.asarray(b, jnp.float32), tau)
        np.testing.assert_allclose(float(loss), info_nce_reference(a, b, tau), rtol=1e-5)
    _, accuracy = scene_encoder.info_nce_loss(jnp.asarray(a), jnp.asarray(a), 0.1)
    assert float(accuracy) == 1.0
    perfect, _ = scene_encoder.info_nce_loss(jnp.eye(4), jnp.eye(4), 0.01)
    assert float(perfect) < 1e-6


def test_family_renders_the_toy_scene_as_one_member_and_varies():
    c2w = jnp.asarray(toy_scene.sample_cameras(2, 0, "train"))
    toys = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (2,) + x.shape),
                                  scene_family.toy_scene_params())
    render = jax.jit(scene_family.render_scenes, static_argnums=2)
    theirs = toy_scene.render_toy_scene(c2w, 16, 16, scene_family.focal_length(16))
    np.testing.assert_allclose(render(toys, c2w, 16), theirs, atol=1e-5)
    scenes = jax.jit(scene_family.sample_scenes, static_argnums=1)(jax.random.PRNGKey(0), 2)
    assert scenes.sphere_centers.shape == (2, 3, 3) and scenes.box_colors.shape == (2, 2, 3)
    renders = np.asarray(render(scenes, c2w, 16))
    assert renders.min() >= 0.0 and renders.max() <= 1.0
    assert np.abs(renders[0] - renders[1]).mean() > 0.02        # different scenes


def test_grid_views_take_dietnerfs_strided_grid():
    images = jnp.arange(32 * 32 * 3, dtype=jnp.float32).reshape(1, 32, 32, 3)
    u = jnp.asarray([[0.99, 0.0]])                 # offsets (5, 0): stride 2, span 6
    low = train_scene_encoder.grid_views(u, images, 13)
    grid = images[:, 5:30:2, 0:25:2]
    np.testing.assert_allclose(low, resize(grid, (32, 32)), rtol=1e-6)


def test_trainer_writes_a_file_the_dietnerf_loader_reads(trained):
    path, metrics = trained
    checkpoint = lifting_semantic.load_encoder(path, "procedural")
    assert checkpoint.config == TINY
    assert set(metrics) == {"retrieval_top1", "cos_same_scene", "cos_other_scenes",
                            "toy_cos_same", "toy_cos_other", "steps_per_s"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert train_scene_encoder.main(["/tmp/never.npz", "--grid_size", "40"]) == 2


def test_dietnerf_prior_reads_the_procedural_encoder(trained):
    c = dietnerf_config.get_config("smoke")
    c.model.semantic_encoder_kind = "procedural"
    c.model.semantic_encoder = trained[0]
    settings = lifting_semantic.SemanticSettings.from_config(c)
    images = np.full((3, 16, 16, 3), 255, np.uint8)
    prior = lifting_semantic.build_prior(settings, images)
    assert prior.tower == TINY and prior.targets.shape == (3, TINY.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(prior.targets, axis=-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_dietnerf_smoke_runs_with_the_procedural_encoder(trained, tmp_path):
    c = dietnerf_config.get_config("smoke")
    c.model.semantic_encoder_kind = "procedural"
    c.model.semantic_encoder = trained[0]
    workdir = str(tmp_path / "run")
    state = run_lib.run(c, workdir, "train")
    assert int(state.step) == 2
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [row for row in map(json.loads, f) if "sc_loss" in row]
    assert rows[0]["sc_loss"] < 0.0 and 0.0 < rows[0]["sc_cos"] <= 1.0


def test_wrong_or_missing_encoder_files_are_one_line_errors(trained, tmp_path):
    with pytest.raises(UserError) as info:
        lifting_semantic.load_encoder(str(tmp_path / "missing.npz"), "procedural")
    assert "train_scene_encoder" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="semantic_encoder_kind=procedural"):
        lifting_semantic.load_encoder(trained[0], "clip")
    tower = ClipVisionConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2,
                             mlp_dim=32, embed_dim=8)
    params = jax.jit(ClipVisionTransformer(tower).init)(jax.random.PRNGKey(0),
                                                        jnp.zeros((1, 16, 16, 3)))
    clip_path = str(tmp_path / "clip.npz")
    save_clip_npz(clip_path, ClipVisionCheckpoint(tower, jax.device_get(params["params"])))
    with pytest.raises(UserError, match="not a procedural encoder"):
        lifting_semantic.load_encoder(clip_path, "procedural")
    c = dietnerf_config.get_config("smoke")
    c.model.semantic_encoder_kind = "procedural"
    c.model.semantic_feature = "final_cls"
    with pytest.raises(UserError, match="semantic_feature='final_cls' is invalid"):
        check_config(c)


def test_readme_trains_the_encoder_with_valid_flags():
    with open(README) as f:
        text = re.sub(r"\\\n\s*", " ", f.read())
    lines = [line.split("  #")[0].strip() for line in text.splitlines()
             if line.strip().startswith("python -m experiments.train_scene_encoder ")]
    assert lines
    for line in lines:
        args = train_scene_encoder.parser().parse_args(shlex.split(line)[3:])
        train_scene_encoder.check_args(args)
