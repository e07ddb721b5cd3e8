"""fdm.nn.pdae and the z-modulated ResBlock (seed 002 brief, sec. 5): torch ports of
PDAE's ResBlockShift modulation and of torchvision's BasicBlock ResNet with copied
weights, g = 0 at initialisation, z reaching g once trained, and SimSiam's
stop-gradient cutting the target branch off the encoder's gradient."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdm.diffusion.pdae import negative_cosine
from fdm.nn import ResBlock, UNet, UNetEncoder
from fdm.nn.pdae import ResNetEncoder, ShiftDecoder

UNET = dict(ch=4, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
            num_groups=2)


def random_params(model, *args, seed=0, scale=0.3, **kwargs):
    """Random parameters of the right shapes, none zero (no RNG-init compile)."""
    shapes = jax.eval_shape(lambda *a: model.init(jax.random.PRNGKey(0), *a, **kwargs),
                            *args)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(
        (1.0 if s.ndim == 1 else 0.0) + scale * rng.standard_normal(s.shape), jnp.float32), shapes)


def conv_weight(kernel):
    """flax conv kernel [kh, kw, in, out] -> torch weight [out, in, kh, kw]."""
    import torch
    return torch.tensor(np.asarray(kernel).transpose(3, 2, 0, 1))


def set_params(module, **tensors):
    """Copies numpy/jax arrays into a torch module's parameters by name."""
    import torch
    with torch.no_grad():
        for name, value in tensors.items():
            getattr(module, name).copy_(torch.tensor(np.array(value)))


def load_norm(norm, p):
    set_params(norm, weight=p["scale"], bias=p["bias"])


def load_dense(lin, p):
    set_params(lin, weight=np.asarray(p["kernel"]).T, bias=p["bias"])


def resblock_inputs(cin=8, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (jax.random.normal(keys[0], (2, 6, 6, cin)), jax.random.normal(keys[1], (2, 12)),
            jax.random.normal(keys[2], (2, 20)))


def test_resblock_with_zero_z_layers_is_the_plain_resblock():
    block = ResBlock(16, num_groups=4)
    x, temb, zemb = resblock_inputs()
    params = random_params(block, x, temb, zemb=zemb)
    plain_params = {k: v for k, v in params.items() if k != "z_proj"}
    assert set(random_params(block, x, temb)) == set(plain_params)     # no z_proj without z
    zeroed = {**params, "z_proj": jax.tree.map(jnp.zeros_like, params["z_proj"])}
    plain, modulated, live = jax.jit(lambda: (
        block.apply({"params": plain_params}, x, temb),
        block.apply({"params": zeroed}, x, temb, zemb=zemb),
        block.apply({"params": params}, x, temb, zemb=zemb)))()
    np.testing.assert_array_equal(np.asarray(modulated), np.asarray(plain))
    assert not np.allclose(live, plain)


def test_z_modulated_resblock_matches_a_torch_port_of_pdae_resblockshift():
    """PDAE's ResBlockShift applies h <- (1 + z_scale) norm2(h)' + z_shift with
    [z_scale, z_shift] = Linear(SiLU(zemb)); on DDPM's block (additive temb) that is:"""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    class TorchZResBlock(torch.nn.Module):
        def __init__(self, cin, cout, e, ez, groups):
            super().__init__()
            self.norm1 = torch.nn.GroupNorm(groups, cin, eps=1e-6)
            self.conv1 = torch.nn.Conv2d(cin, cout, 3, padding=1)
            self.temb_proj = torch.nn.Linear(e, cout)
            self.emb_z_layers = torch.nn.Linear(ez, 2 * cout)
            self.norm2 = torch.nn.GroupNorm(groups, cout, eps=1e-6)
            self.conv2 = torch.nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = torch.nn.Conv2d(cin, cout, 1)

        def forward(self, x, temb, zemb):
            h = self.conv1(F.silu(self.norm1(x))) + self.temb_proj(F.silu(temb))[:, :, None, None]
            z_scale, z_shift = torch.chunk(self.emb_z_layers(F.silu(zemb)), 2, dim=1)
            h = (1.0 + z_scale[:, :, None, None]) * self.norm2(h) + z_shift[:, :, None, None]
            return self.skip(x) + self.conv2(F.silu(h))

    block = ResBlock(16, num_groups=4)
    x, temb, zemb = resblock_inputs()
    p = random_params(block, x, temb, zemb=zemb, seed=1)
    ref = TorchZResBlock(8, 16, 12, 20, 4)
    load_norm(ref.norm1, p["norm1"])
    load_norm(ref.norm2, p["norm2"])
    load_dense(ref.temb_proj, p["temb_proj"])
    load_dense(ref.emb_z_layers, p["z_proj"])
    for name in ("conv1", "conv2", "shortcut"):
        conv = ref.skip if name == "shortcut" else getattr(ref, name)
        set_params(conv, weight=conv_weight(p[name]["kernel"]), bias=p[name]["bias"])
    with torch.no_grad():
        expected = ref(torch.tensor(np.asarray(x).transpose(0, 3, 1, 2)),
                       torch.tensor(np.asarray(temb)), torch.tensor(np.asarray(zemb)))
    ours = jax.jit(lambda: block.apply({"params": p}, x, temb, zemb=zemb))()
    np.testing.assert_allclose(ours, expected.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


def test_resnet_encoder_matches_torchvision_style_basicblock_resnet():
    """torchvision's ResNet(BasicBlock, [1, 1, 1, 1]) with a 3x3 stem, no max-pool, no
    fc and GroupNorm for BatchNorm, rebuilt in torch (torchvision is not installed)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    widths, groups = (8, 16, 16, 32), 4

    def norm(c):
        return torch.nn.GroupNorm(groups, c, eps=1e-6)

    class Block(torch.nn.Module):                   # torchvision.models.resnet.BasicBlock
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = norm(cout)
            self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = norm(cout)
            self.downsample = (torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride,
                                                                   bias=False), norm(cout))
                               if stride != 1 or cin != cout else None)

        def forward(self, x):
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(out + (x if self.downsample is None else self.downsample(x)))

    encoder = ResNetEncoder(widths=widths, num_groups=groups)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    p = random_params(encoder, x, seed=2)
    stem = torch.nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    stem_norm = norm(widths[0])
    set_params(stem, weight=conv_weight(p["stem_conv"]["kernel"]))
    load_norm(stem_norm, p["stem_norm"])
    blocks, cin = [], widths[0]
    for stage, width in enumerate(widths):
        b, q = Block(cin, width, 1 if stage == 0 else 2), p[f"stage_{stage}_block_0"]
        set_params(b.conv1, weight=conv_weight(q["conv1"]["kernel"]))
        set_params(b.conv2, weight=conv_weight(q["conv2"]["kernel"]))
        load_norm(b.bn1, q["norm1"])
        load_norm(b.bn2, q["norm2"])
        assert (b.downsample is None) == ("shortcut_conv" not in q)
        if b.downsample is not None:
            set_params(b.downsample[0], weight=conv_weight(q["shortcut_conv"]["kernel"]))
            load_norm(b.downsample[1], q["shortcut_norm"])
        blocks.append(b)
        cin = width
    with torch.no_grad():
        h = F.relu(stem_norm(stem(torch.tensor(np.asarray(x).transpose(0, 3, 1, 2)))))
        for b in blocks:
            h = b(h)
        expected = h.mean(dim=(2, 3)).numpy()
    ours = jax.jit(lambda: encoder.apply({"params": p}, x))()
    assert ours.shape == (2, widths[-1])
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    projected = ResNetEncoder(widths=widths, num_groups=groups, z_dim=10)
    assert jax.eval_shape(lambda: projected.init_with_output(jax.random.PRNGKey(0), x)[0]
                          ).shape == (2, 10)


def test_shift_decoder_starts_at_zero_and_z_reaches_it_after_training():
    """g on random stand-ins for a tiny frozen U-Net encoder's (h, skips, temb) on 4x4
    images. Its parameters are UNet's middle and decoder plus the z layers; g = 0 at
    initialisation for every z. Two SGD steps make g depend on z: the first moves only
    the zero output conv (every other gradient passes through it), the second the
    zero-initialised conv2 of the ResBlocks, behind which the z-modulation sits."""
    x = jnp.zeros((2, 4, 4, 3))
    temb = jax.random.normal(jax.random.PRNGKey(0), (2, 4 * UNET["ch"]))
    shapes = jax.eval_shape(lambda: UNetEncoder(**UNET).init_with_output(
        jax.random.PRNGKey(0), x, temb)[0])
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 64))
    h, skips = jax.tree.map(lambda s: jax.random.normal(next(keys), s.shape), shapes)
    # one batch of 4: two examples with z, then the same two with another z
    double = lambda a: jnp.concatenate([a, a])  # noqa: E731
    h, skips, temb = double(h), [double(s) for s in skips], double(temb)
    z = jax.random.normal(jax.random.PRNGKey(2), (4, 6))
    g = ShiftDecoder(**UNET, out_ch=3)
    out, variables = jax.jit(g.init_with_output)(jax.random.PRNGKey(3), h, skips, temb, z)
    params = variables["params"]

    unet_shapes = jax.eval_shape(lambda: UNet(**UNET).init(
        jax.random.PRNGKey(0), x, jnp.zeros((2,), jnp.int32)))["params"]
    flat = lambda tree: {jax.tree_util.keystr(k): v.shape  # noqa: E731
                         for k, v in jax.tree_util.tree_leaves_with_path(tree)}
    ours = flat(params)
    theirs = flat({"middle": unet_shapes["middle"], "decoder": unet_shapes["decoder"]})
    assert all(ours[k] == s for k, s in theirs.items())          # UNet's middle + decoder
    extra = set(ours) - set(theirs)
    assert extra and all("z_proj" in k or "z_embed" in k for k in extra)

    assert out.shape == (4, 4, 4, 3)
    np.testing.assert_array_equal(out, 0.0)                      # zero output conv: g = 0
    target = double(jax.random.normal(jax.random.PRNGKey(5), x.shape))

    @jax.jit
    def step(p):
        """(p after an SGD step on the squared error to `target`, g under p)."""
        def loss(p):
            out = g.apply({"params": p}, h, skips, temb, z)
            return jnp.mean(jnp.square(out - target)), out
        (_, out), grads = jax.value_and_grad(loss, has_aux=True)(p)
        return jax.tree.map(lambda a, b: a - 0.5 * b, p, grads), out

    for _ in range(3):
        params, out = step(params)                               # out: g after 0, 1, 2 steps
    assert np.max(np.abs(out[:2] - out[2:])) > 1e-4


def test_stop_gradient_cuts_the_target_branch():
    """D(p(f(x1)), f(x2)): through the target branch f(x2) alone the encoder's gradient
    is exactly 0, through the online branch p(f(x1)) it is not."""
    encoder = ResNetEncoder(widths=(4, 4), blocks=(1, 1), num_groups=2)
    predictor = nn.Dense(4)
    x1, x2 = (jax.random.normal(k, (3, 4, 4, 3)) for k in jax.random.split(jax.random.PRNGKey(5)))
    params = {"f": random_params(encoder, x1, seed=3),
              "p": random_params(predictor, jnp.zeros((1, 4)), seed=4)}
    f = lambda p, x: encoder.apply({"params": p["f"]}, x)  # noqa: E731
    pred = lambda p, z: predictor.apply({"params": p["p"]}, z)  # noqa: E731

    @jax.jit
    def grads(params):
        target, online = f(params, x2), pred(params, f(params, x1))
        online_only = lambda p: jnp.mean(negative_cosine(pred(p, f(p, x1)), target))  # noqa: E731
        target_only = lambda p: jnp.mean(negative_cosine(online, f(p, x2)))  # noqa: E731
        return jax.grad(online_only)(params), jax.grad(target_only)(params)

    # the full loss's gradient is the sum of the two branches' (chain rule)
    g_online, g_target = grads(params)
    assert all(np.all(np.asarray(a) == 0.0) for a in jax.tree.leaves(g_target))
    assert any(np.any(np.asarray(a) != 0.0) for a in jax.tree.leaves(g_online["f"]))
