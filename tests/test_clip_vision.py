"""fdm.nn.clip_vision == CLIP's image tower (transformers, OpenAI's code), the converters of
fdm.nn.convert_clip, and the preprocessing of fdm.nn.clip_preprocess == torch F.interpolate.

References (random weights; no pretrained weights exist on this machine):
  * transformers' CLIPVisionModelWithProjection (torch): `image_embeds` and
    `last_hidden_state` (= our tokens), Hugging Face names.
  * OpenAI's own `clip/model.py` (PyPI `openai-clip`), saved as a TorchScript archive
    like the released ViT-B-32.pt: OpenAI names, in_proj split, text-tower keys ignored.
    The module is loaded from its file: the package's __init__ imports torchvision
    (for its PIL transforms only), and PyPI's torchvision wheels are CUDA builds that
    cannot be imported next to the CPU torch this project installs.
  * open_clip's create_model('ViT-B-32') (slow; skipped where open_clip cannot be
    imported, for the same torchvision reason).

Tolerance 1e-5 (absolute, outputs of size ~3): both sides compute in float32 (unit
roundoff 6e-8) with different summation orders (XLA vs ATen matmuls, fused vs separate
q/k/v, different softmax / LayerNorm kernels). Errors of a few ulps per op, growing
with dot length (<= 3072) and depth, give measured max differences of 1.3e-6
(embeddings) and 4.3e-6 (tokens, entries up to 7) at the small config, 3.3e-6 for the
OpenAI model and 4.5e-6 at full B/32, with every parameter randomised; 1e-5 keeps a
2x margin. Real mistakes are far above it (measured at the small config: 2 heads
instead of 4: 0.96; exact GELU for QuickGELU: 0.019; one transposed kernel: 1.25).
The LayerNorm eps is below this resolution (1e-6 for 1e-5 moves outputs by 1e-5), so
it is pinned by the config, not by these comparisons.
"""
import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
F = torch.nn.functional

from fdm.errors import UserError  # noqa: E402
from fdm.nn import clip_preprocess as cp  # noqa: E402
from fdm.nn.clip_vision import (FEATURES, ClipVisionConfig, ClipVisionTransformer,  # noqa: E402
                                make_image_encoder, unit_vectors)
from fdm.nn.convert_clip import (ClipVisionCheckpoint, clip_vision_from_state_dict,  # noqa: E402
                                 load_clip_vision, main, save_clip_npz)

TOL = 1e-5
SMALL_HF = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, image_size=64, patch_size=16, projection_dim=32)
SMALL_CONFIG = ClipVisionConfig(image_size=64, patch_size=16, width=64, layers=2, heads=4,
                                mlp_dim=128, embed_dim=32)
# OpenAI's rule heads = width // 64 needs width 128 for 2 heads.
OPENAI_SMALL = dict(embed_dim=32, image_resolution=64, vision_layers=2, vision_width=128,
                    vision_patch_size=16, context_length=77, vocab_size=49408,
                    transformer_width=64, transformer_heads=1, transformer_layers=1)


def randomize_(model: "torch.nn.Module", seed: int) -> None:
    """Overwrites every parameter (LayerNorms and biases too) with random values of the
    size a trained model has, so that each tensor's conversion matters."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif p.ndim == 1 and "class_embedding" not in name:   # LayerNorm weights
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif p.ndim == 1 or "position" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))


def nhwc(x: "torch.Tensor") -> jax.Array:
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def fdm_outputs(ckpt: ClipVisionCheckpoint, x: "torch.Tensor"):
    """(image_embeds [B, E], tokens [B, N, D]) of the fdm tower on NCHW torch input."""
    model = ClipVisionTransformer(ckpt.config)
    run = jax.jit(lambda p, x: (model.apply({"params": p}, x),
                                model.apply({"params": p}, x, method="tokens")))
    embeds, tokens = run(ckpt.params, nhwc(x))
    return np.asarray(embeds), np.asarray(tokens)


def hf_model(config_kwargs, seed=0):
    cfg = transformers.CLIPVisionConfig(hidden_act="quick_gelu", **config_kwargs)
    torch.manual_seed(seed)
    model = transformers.CLIPVisionModelWithProjection(cfg).eval()
    randomize_(model, seed)
    return model


def pixels(size, batch=2, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_one_line_error(info, *parts):
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message


@pytest.fixture(scope="module")
def small_hf():
    return hf_model(SMALL_HF)


@pytest.fixture(scope="module")
def small_ckpt(small_hf):
    return clip_vision_from_state_dict(small_hf.state_dict(), heads=4)


@pytest.fixture(scope="module")
def hf_dir(small_hf, tmp_path_factory):
    """A Hugging Face model directory: model.safetensors + config.json (save_pretrained)."""
    path = tmp_path_factory.mktemp("hf_clip")
    small_hf.save_pretrained(str(path))
    return path


# ---------------------------------------------------------------- transformers
def test_small_tower_matches_transformers(small_hf, small_ckpt):
    assert small_ckpt.config == SMALL_CONFIG                 # architecture read from the weights
    x = pixels(64)
    with torch.no_grad():
        ref = small_hf(pixel_values=x)
    embeds, tokens = fdm_outputs(small_ckpt, x)
    assert embeds.shape == (2, 32) and tokens.shape == (2, 17, 64)
    assert np.abs(embeds - ref.image_embeds.numpy()).max() <= TOL
    # last_hidden_state is the last block's output before post_layernorm (our tokens)
    hidden = ref.last_hidden_state.numpy()
    assert np.abs(tokens - hidden).max() <= TOL


def test_hf_directory_and_file_use_config_json(small_ckpt, hf_dir, tmp_path):
    """heads come from config.json beside the weights (width // 64 would give 1 head)."""
    for path in (str(hf_dir), str(hf_dir / "model.safetensors")):
        ckpt = load_clip_vision(path)
        assert ckpt.config == SMALL_CONFIG
        jax.tree.map(np.testing.assert_array_equal, ckpt.params, small_ckpt.params)
    alone = tmp_path / "model.safetensors"                   # no config.json: OpenAI's rule
    alone.write_bytes((hf_dir / "model.safetensors").read_bytes())
    assert load_clip_vision(str(alone)).config.heads == 1
    assert load_clip_vision(str(alone), heads=4).config == SMALL_CONFIG


def test_npz_round_trip_and_cli(small_ckpt, hf_dir, tmp_path, capsys):
    out = tmp_path / "clip.npz"
    assert main([str(hf_dir), str(out)]) == 0
    ckpt = load_clip_vision(str(out))
    assert ckpt.config == SMALL_CONFIG
    jax.tree.map(np.testing.assert_array_equal, ckpt.params, small_ckpt.params)
    assert main([str(tmp_path / "absent.pt"), str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "absent.pt" in err and "not found" in err and "\n" not in err
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.slow
def test_full_b32_tower_matches_transformers():
    model = hf_model({})                                     # CLIPVisionConfig defaults = B/32
    ckpt = clip_vision_from_state_dict(model.state_dict())  # heads = 768 // 64 = 12
    assert ckpt.config == ClipVisionConfig()
    x = pixels(224)
    with torch.no_grad():
        ref = model(pixel_values=x).image_embeds.numpy()
    embeds, _ = fdm_outputs(ckpt, x)
    assert np.abs(embeds - ref).max() <= TOL


# ---------------------------------------------------------------- OpenAI naming
def openai_clip_model_module():
    """OpenAI's clip/model.py (PyPI openai-clip), loaded from its file (see module doc)."""
    spec = importlib.util.find_spec("clip")
    locations = spec.submodule_search_locations if spec else None
    path = os.path.join(locations[0], "model.py") if locations else ""
    if not os.path.isfile(path):
        pytest.skip("OpenAI's CLIP code (PyPI openai-clip) is not installed")
    module_spec = importlib.util.spec_from_file_location("_openai_clip_model", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "VisionTransformer"):
        pytest.skip(f"{path} is not OpenAI's CLIP model code")
    return module


@pytest.fixture(scope="module")
def openai_small():
    clip_model = openai_clip_model_module()
    torch.manual_seed(0)
    model = clip_model.CLIP(**OPENAI_SMALL).eval()
    randomize_(model.visual, 0)
    return model


def test_openai_torchscript_file_matches_openai_code(openai_small, tmp_path):
    x = pixels(64)
    traced = torch.jit.trace_module(openai_small, {"encode_image": x})
    path = tmp_path / "ViT-tiny.pt"                          # a TorchScript archive, as ViT-B-32.pt
    torch.jit.save(traced, str(path))
    ckpt = load_clip_vision(str(path))                       # text tower keys are ignored
    assert ckpt.config == ClipVisionConfig(image_size=64, patch_size=16, width=128, layers=2,
                                           heads=2, mlp_dim=512, embed_dim=32)
    with torch.no_grad():
        ref = openai_small.encode_image(x).numpy()
    embeds, _ = fdm_outputs(ckpt, x)
    assert np.abs(embeds - ref).max() <= TOL


def test_openai_float16_state_dict(openai_small, tmp_path):
    """OpenAI's released file stores float16 weights and three int entries."""
    state = {k: v.half() if v.is_floating_point() else v
             for k, v in openai_small.state_dict().items()}
    state.update(input_resolution=torch.tensor(64), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    path = tmp_path / "half.pt"
    torch.save(state, str(path))
    ckpt = load_clip_vision(str(path))
    want = clip_vision_from_state_dict({k: v.float() for k, v in state.items()})
    assert ckpt.config == want.config
    jax.tree.map(np.testing.assert_array_equal, ckpt.params, want.params)
    assert all(a.dtype == np.float32 for a in jax.tree.leaves(ckpt.params))


@pytest.mark.slow
def test_open_clip_b32_matches(tmp_path):
    why = ("open-clip-torch needs torchvision, whose PyPI wheels are CUDA builds that cannot "
           "be imported next to the CPU torch, so it is not in TEST_REQUIRES")
    try:
        import open_clip
    except ModuleNotFoundError as e:
        pytest.skip(f"{e.name} is not installed; {why}")
    except Exception as e:  # torchvision's RuntimeError "operator torchvision::nms does not exist"
        pytest.skip(f"open_clip cannot be imported ({type(e).__name__}: {e}); {why}")
    # OpenAI's ViT-B/32 uses QuickGELU; open_clip's 'ViT-B-32' config without pretrained
    # weights uses nn.GELU unless told otherwise.
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()
    randomize_(model.visual, 0)
    path = tmp_path / "open_clip_b32.pt"
    torch.save(model.state_dict(), str(path))
    ckpt = load_clip_vision(str(path))
    assert ckpt.config == ClipVisionConfig()
    x = pixels(224)
    with torch.no_grad():
        ref = model.encode_image(x).numpy()
    embeds, _ = fdm_outputs(ckpt, x)
    assert np.abs(embeds - ref).max() <= TOL


# ---------------------------------------------------------------- encoder
def test_image_encoder_unit_vectors(small_hf, small_ckpt):
    """image -> unit vector for both features; "final_cls" (DietNeRF's code's choice) is
    the class token of transformers' last_hidden_state."""
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(size=(2, 84, 84, 3)), jnp.float32)   # an 84^2 render
    prepped = np.array(cp.clip_preprocess(images, 64))
    with torch.no_grad():
        ref = small_hf(pixel_values=torch.from_numpy(prepped.transpose(0, 3, 1, 2)))
    encoders = {f: make_image_encoder(small_ckpt.config, f) for f in FEATURES}
    got = jax.jit(lambda p, x: {f: enc(p, x) for f, enc in encoders.items()})(
        small_ckpt.params, images)
    want = {"projected": ref.image_embeds, "final_cls": ref.last_hidden_state[:, 0]}
    for feature in FEATURES:
        np.testing.assert_allclose(np.linalg.norm(got[feature], axis=-1), 1.0, atol=1e-6)
        assert np.abs(got[feature] - F.normalize(want[feature], dim=-1).numpy()).max() <= TOL
    assert got["final_cls"].shape == (2, 64) and got["projected"].shape == (2, 32)
    np.testing.assert_array_equal(unit_vectors(jnp.zeros((1, 3))), 0.0)   # no NaN at 0
    with pytest.raises(ValueError):
        make_image_encoder(small_ckpt.config, "pooled")


# ---------------------------------------------------------------- preprocessing
# (input side, output side): DietNeRF's 400^2 renders and 84^2 / 168^2 ray grids to 224,
# the local 200^2 Lego, identity, and an odd non-square case.
RESIZE_CASES = [((400, 400), (224, 224)), ((84, 84), (224, 224)), ((168, 168), (224, 224)),
                ((200, 200), (224, 224)), ((224, 224), (224, 224)), ((37, 53), (61, 20))]


@pytest.mark.parametrize("method,tol", [("bilinear", 5e-7), ("bicubic", 2e-6)])
def test_resize_matches_torch_interpolate(method, tol):
    """Bilinear taps and weights are bit-identical to ATen's, outputs differ by the
    rounding of the two-tap sums (measured <= 1.8e-7, 1.5 ulp at 1); bicubic weights
    differ by a few ulps in the polynomial's evaluation order (measured <= 1e-6)."""
    rng = np.random.default_rng(0)
    for (h, w), size in RESIZE_CASES:
        x = rng.uniform(size=(2, h, w, 3)).astype(np.float32)
        ref = F.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=size, mode=method,
                            align_corners=False).numpy().transpose(0, 2, 3, 1)
        got = np.asarray(cp.resize(jnp.asarray(x), size, method))
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= tol, ((h, w), size)


def test_resize_gradient_matches_torch():
    """The adjoint (what L_SC backpropagates to the render) equals torch autograd's."""
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(1, 84, 84, 3)).astype(np.float32)
    g = rng.normal(size=(1, 224, 224, 3)).astype(np.float32)
    ours = jax.grad(lambda x: jnp.sum(cp.resize(x, (224, 224)) * g))(jnp.asarray(x))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
    (F.interpolate(xt, size=(224, 224), mode="bilinear", align_corners=False)
     * torch.from_numpy(g.transpose(0, 3, 1, 2))).sum().backward()
    assert np.abs(np.asarray(ours) - xt.grad.numpy().transpose(0, 2, 3, 1)).max() <= 1e-5


def test_clip_preprocess_geometry_and_normalisation():
    """Shorter side to size (torchvision Resize), centre crop (torchvision CenterCrop:
    offsets round((H - size) / 2)), then (x - mean) / std."""
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(1, 30, 50, 3)).astype(np.float32)
    assert cp.shorter_side_size(30, 50, 16) == (16, 26)
    assert cp.shorter_side_size(50, 30, 16) == (26, 16)
    got = np.asarray(cp.clip_preprocess(jnp.asarray(x), 16))
    resized = F.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(16, 26),
                            mode="bilinear", align_corners=False).numpy().transpose(0, 2, 3, 1)
    want = (resized[:, :, 5:21] - np.array(cp.CLIP_MEAN)) / np.array(cp.CLIP_STD)
    assert np.abs(got - want).max() <= 1e-5
    crop = np.asarray(cp.center_crop(jnp.arange(255.0).reshape(1, 255, 1, 1) * jnp.ones(
        (1, 1, 255, 1)), 224))
    assert crop[0, 0, 0, 0] == 16.0                          # round(15.5) = 16, as torchvision
    mean, std = np.array(cp.CLIP_MEAN), np.array(cp.CLIP_STD)
    np.testing.assert_allclose(cp.normalize(jnp.asarray(mean, jnp.float32)), 0.0, atol=1e-6)
    np.testing.assert_allclose(cp.normalize(jnp.asarray(mean + std, jnp.float32)), 1.0,
                               atol=1e-6)


# ---------------------------------------------------------------- converter errors
def test_missing_file_is_one_line_error(tmp_path):
    for name in ("ViT-B-32.pt", "model.safetensors", "clip.npz", "hf_dir"):
        with pytest.raises(UserError) as info:
            load_clip_vision(str(tmp_path / name))
        assert_one_line_error(info, name, "not found", "nothing is downloaded")


def test_wrong_shape_is_one_line_error(small_hf, tmp_path):
    state = {k: v.clone() for k, v in small_hf.state_dict().items()}
    key = "vision_model.encoder.layers.1.layer_norm1.weight"
    state[key] = state[key][:50]
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(state, str(path))
    with pytest.raises(UserError) as info:
        load_clip_vision(str(path), heads=4)
    assert_one_line_error(info, str(path), key, "(50,)", "(64,)", "damaged")


def test_unreadable_and_foreign_files_are_one_line_errors(small_ckpt, tmp_path):
    garbage = tmp_path / "ViT-B-32.pt"
    garbage.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(UserError) as info:
        load_clip_vision(str(garbage))
    assert_one_line_error(info, str(garbage), "cannot read")
    bad_st = tmp_path / "broken.safetensors"
    bad_st.write_bytes(b"\x00" * 8)
    with pytest.raises(UserError) as info:
        load_clip_vision(str(bad_st))
    assert_one_line_error(info, str(bad_st), "cannot read")
    foreign = tmp_path / "unet.safetensors"
    safetensors_torch.save_file({"conv_in.weight": torch.zeros(4, 3, 3, 3)}, str(foreign))
    with pytest.raises(UserError) as info:
        load_clip_vision(str(foreign))
    assert_one_line_error(info, str(foreign), "no CLIP image tower")
    with pytest.raises(UserError) as info:
        clip_vision_from_state_dict({"vision_model.pre_layrnorm.weight": np.ones(4)})
    assert_one_line_error(info, "visual_projection.weight", "CLIPVisionModelWithProjection")
    npz = tmp_path / "partial.npz"
    save_clip_npz(str(npz), small_ckpt)
    with np.load(str(npz)) as data:
        arrays = {k: data[k] for k in data.files if k != "config/heads"}
    np.savez(str(npz), **arrays)
    with pytest.raises(UserError) as info:
        load_clip_vision(str(npz))
    assert_one_line_error(info, str(npz), "heads", "convert the original file again")
