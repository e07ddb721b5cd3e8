"""fdm.nn.UNet == diffusers.UNet2DModel (DDPM layout) after weight conversion."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from fdm.errors import UserError  # noqa: E402
from fdm.nn import UNet, timestep_embedding  # noqa: E402
from fdm.nn.convert_diffusers import (diffusers_config_from_unet_kwargs,  # noqa: E402
                                      load_diffusers_checkpoint, unet_kwargs_from_diffusers_config,
                                      unet_params_from_diffusers)

# config.json of google/ddpm-cifar10-32 (the public DDPM CIFAR-10 checkpoint).
DDPM_CIFAR10_CONFIG = {
    "_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
CIFAR10_KWARGS = dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                      dropout=0.0, num_classes=0, out_ch=3, num_groups=32)
# (fdm kwargs, image size, batch): the paper's CIFAR-10 net and two differently shaped ones.
CASES = {
    "cifar10": (CIFAR10_KWARGS, 32, 2),
    "64px_mult1234_3blocks": (dict(ch=32, ch_mult=(1, 2, 3, 4), num_res_blocks=3,
                                   attn_resolutions=(16,), dropout=0.0, num_groups=8), 64, 1),
    "cond_1block_attn32and16": (dict(ch=32, ch_mult=(1, 2), num_res_blocks=1,
                                     attn_resolutions=(32, 16), dropout=0.0, num_classes=5,
                                     out_ch=6, num_groups=16), 32, 2),
}


def randomize_(model: "torch.nn.Module", seed: int) -> None:
    """Overwrites every parameter (zero-init ones and norms too) with random values."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif "class_embedding" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))


def make_diffusers(kwargs, size, seed=0):
    torch.manual_seed(seed)
    model = diffusers.UNet2DModel(**diffusers_config_from_unet_kwargs(kwargs, size)).eval()
    randomize_(model, seed)
    return model


def torch_and_fdm_outputs(model, kwargs, size, batch, seed=0):
    torch.manual_seed(seed + 1)
    x = torch.randn(batch, model.config.in_channels, size, size)
    t = torch.randint(0, 1000, (batch,))
    y = torch.randint(0, kwargs["num_classes"], (batch,)) if kwargs.get("num_classes") else None
    with torch.no_grad():
        ref = model(x, t, class_labels=y).sample.numpy().transpose(0, 2, 3, 1)
    params = unet_params_from_diffusers(model.state_dict(), kwargs, size)
    ours = jax.jit(lambda p, x, t, y: UNet(**kwargs).apply({"params": p}, x, t, y))(
        params, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)), jnp.asarray(t.numpy()),
        None if y is None else jnp.asarray(y.numpy()))
    return ref, np.asarray(ours)


@pytest.fixture(scope="module")
def cifar10_torch():
    return make_diffusers(CIFAR10_KWARGS, 32)


def test_param_count_matches_diffusers_ddpm_cifar10(cifar10_torch):
    x, t = jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,), jnp.int32)
    shapes = jax.eval_shape(lambda: UNet(**CIFAR10_KWARGS).init(jax.random.PRNGKey(0), x, t))
    ours = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))
    theirs = sum(p.numel() for p in cifar10_torch.parameters())
    assert ours == theirs == 35_746_307


def test_kwargs_from_public_ddpm_cifar10_config():
    kwargs = unet_kwargs_from_diffusers_config(DDPM_CIFAR10_CONFIG)
    assert kwargs == CIFAR10_KWARGS
    config = diffusers_config_from_unet_kwargs(kwargs, 32)
    for key, value in DDPM_CIFAR10_CONFIG.items():
        if key in config:
            assert tuple(config[key]) == tuple(value) if isinstance(value, list) \
                else config[key] == value, key


def test_timestep_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding
    t = np.array([0, 1, 17, 999])
    ref = get_timestep_embedding(torch.tensor(t), 128, flip_sin_to_cos=False,
                                 downscale_freq_shift=1).numpy()
    # float32 sin/cos of arguments up to ~1000 rad: ~1 ulp differences in the frequencies.
    np.testing.assert_allclose(timestep_embedding(jnp.asarray(t), 128), ref, atol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_match_diffusers(case, cifar10_torch):
    kwargs, size, batch = CASES[case]
    model = cifar10_torch if case == "cifar10" else make_diffusers(kwargs, size)
    ref, ours = torch_and_fdm_outputs(model, kwargs, size, batch)
    assert np.abs(ref).max() > 0.1                    # random weights: not a trivial zero net
    assert np.abs(ours - ref).max() <= 1e-4


def test_old_attention_key_names():
    kwargs, size, _ = CASES["cond_1block_attn32and16"]
    sd = make_diffusers(kwargs, size).state_dict()
    old = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}
    renamed = {}
    for k, v in sd.items():
        for new, legacy in old.items():
            k = k.replace("." + new, "." + legacy)
        renamed[k] = v
    assert renamed.keys() != sd.keys()
    a = unet_params_from_diffusers(sd, kwargs, size)
    b = unet_params_from_diffusers(renamed, kwargs, size)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_bad_state_dicts_raise():
    kwargs, size, _ = CASES["cond_1block_attn32and16"]
    sd = {k: v.numpy() for k, v in make_diffusers(kwargs, size).state_dict().items()}
    with pytest.raises(UserError, match="cannot map"):
        unet_params_from_diffusers({**sd, "down_blocks.0.foo.weight": np.zeros(3)})
    missing = {k: v for k, v in sd.items() if not k.startswith("mid_block.attentions")}
    with pytest.raises(UserError, match="missing"):
        unet_params_from_diffusers(missing, kwargs, size)
    with pytest.raises(UserError, match="shape"):
        unet_params_from_diffusers(sd, {**kwargs, "ch": 16}, size)


@pytest.mark.parametrize("change", [{"flip_sin_to_cos": True}, {"freq_shift": 0},
                                    {"downsample_padding": 1}, {"attention_head_dim": 8},
                                    {"up_block_types": ["UpBlock2D"] * 4}])
def test_unsupported_configs_raise(change):
    with pytest.raises(UserError):
        unet_kwargs_from_diffusers_config({**DDPM_CIFAR10_CONFIG, **change})


def test_load_local_checkpoint(tmp_path):
    kwargs, size, batch = CASES["cond_1block_attn32and16"]
    model = make_diffusers(kwargs, size)
    model.save_pretrained(str(tmp_path / "unet"))            # pipeline layout: DIR/unet/
    ckpt = load_diffusers_checkpoint(str(tmp_path))
    assert ckpt.unet_kwargs == {**kwargs, "num_classes": 5} and ckpt.image_size == size
    direct = unet_params_from_diffusers(model.state_dict(), kwargs, size)
    jax.tree.map(np.testing.assert_array_equal, ckpt.params, direct)
    with pytest.raises(UserError, match="config.json"):
        load_diffusers_checkpoint(str(tmp_path / "nowhere"))
