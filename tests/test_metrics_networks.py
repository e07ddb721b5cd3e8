"""Metric networks with random weights == PyTorch references written here from plain
`torch.nn` layers (torchvision is not installed), after a round trip through
`scripts/convert_metric_weights.py` (torch state dict -> .pth -> .npz -> Flax).

The Inception reference follows pytorch-fid's FID network (torchvision Inception3
layout with FIDInceptionA/C/E_1/E_2 patches); the LPIPS reference follows the
`lpips` package (ScalingLayer, torchvision alexnet/vgg16 `features`, NetLinLayer).
"""
import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

from fdm.errors import UserError  # noqa: E402
from fdm.metrics.fid import compute_fid, frechet_distance  # noqa: E402
from fdm.metrics.inception import (InceptionFeatureExtractor, InceptionV3,  # noqa: E402
                                   resize_bilinear)
from fdm.metrics.lpips import compute_lpips  # noqa: E402
from fdm.metrics.weights import load_metric_variables, lpips_from_torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _converter():
    spec = importlib.util.spec_from_file_location(
        "convert_metric_weights", os.path.join(REPO, "scripts", "convert_metric_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- PyTorch reference: FID Inception-v3 ----------------------------------------------------

class TBasicConv2d(nn.Module):
    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_valid(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class TInceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = TBasicConv2d(cin, 64, 1)
        self.branch5x5_1 = TBasicConv2d(cin, 48, 1)
        self.branch5x5_2 = TBasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = TBasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = TBasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = TBasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = TBasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_valid(x))], 1)


class TInceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = TBasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = TBasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = TBasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = TBasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), bd, F.max_pool2d(x, 3, stride=2)], 1)


class TInceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = TBasicConv2d(cin, 192, 1)
        self.branch7x7_1 = TBasicConv2d(cin, c7, 1)
        self.branch7x7_2 = TBasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = TBasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = TBasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = TBasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = TBasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = TBasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = TBasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = TBasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_valid(x))], 1)


class TInceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = TBasicConv2d(cin, 192, 1)
        self.branch3x3_2 = TBasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = TBasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = TBasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = TBasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = TBasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class TInceptionE(nn.Module):
    """FIDInceptionE_1 (pool="avg", valid-pixel average) or FIDInceptionE_2 (pool="max")."""

    def __init__(self, cin, pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = TBasicConv2d(cin, 320, 1)
        self.branch3x3_1 = TBasicConv2d(cin, 384, 1)
        self.branch3x3_2a = TBasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = TBasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = TBasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = TBasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = TBasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = TBasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = TBasicConv2d(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.pool == "max" else _avg_valid(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class TFIDInception(nn.Module):
    """Attribute names = torchvision Inception3 = keys of pt_inception-2015-12-05-6726825d.pth."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = TBasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = TBasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = TBasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = TBasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = TBasicConv2d(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = (
            TInceptionA(192, 32), TInceptionA(256, 64), TInceptionA(288, 64))
        self.Mixed_6a = TInceptionB(288)
        self.Mixed_6b, self.Mixed_6c = TInceptionC(768, 128), TInceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = TInceptionC(768, 160), TInceptionC(768, 192)
        self.Mixed_7a = TInceptionD(768)
        self.Mixed_7b, self.Mixed_7c = TInceptionE(1280, "avg"), TInceptionE(2048, "max")
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x):
        """x [N,3,H,W] in [-1,1] -> (pool3 [N,2048], logits [N,1008])."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool3 = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return pool3, self.fc(pool3)


def randomize_(model, seed):
    """He-scaled conv/linear weights; non-trivial BN affine and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked") or name in ("shift", "scale"):
                continue  # counters and LPIPS's fixed input scaling
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif t.ndim == 1:  # biases, BN weight/bias/running_mean
                centre = 1.0 if name.endswith("bn.weight") else 0.0
                t.copy_(centre + 0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * np.sqrt(2.0 / t[0].numel()))


def _torch_fid_pool3(model, images):
    """pytorch-fid's path: uint8 -> [0,1] -> bilinear 299 (align_corners=False) -> 2x-1 -> net."""
    u8 = np.round((np.clip(images, -1, 1) + 1) * 127.5)
    x = torch.from_numpy(u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    x = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    with torch.no_grad():
        pool3, logits = model(x)
    return x, pool3.numpy(), logits.numpy()


@pytest.fixture(scope="module")
def inception_case(tmp_path_factory):
    """(torch model, variables loaded from the converted .npz, npz path)."""
    tmp = tmp_path_factory.mktemp("inception")
    model = TFIDInception().eval()
    randomize_(model, seed=0)
    torch.save(model.state_dict(), tmp / "pt_inception.pth")
    out = str(tmp / "metric_weights.npz")
    assert _converter().main(["--out", out, "--inception", str(tmp / "pt_inception.pth")]) == 0
    return model, load_metric_variables(out, "inception"), out


def _assert_close(got, want, rtol=2e-4):
    """Elementwise, with absolute tolerance scaled to the array's magnitude."""
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_inception_matches_torch_reference(inception_case):
    """Network + logits at 299x299, and the extractor's quantise/resize/batching path."""
    model, variables, _ = inception_case
    images = np.random.default_rng(0).uniform(-1, 1, (3, 40, 40, 3)).astype(np.float32)
    x299, pool3, logits = _torch_fid_pool3(model, images)
    assert pool3.std() > 1e-2  # random weights still give informative features
    apply = jax.jit(functools.partial(InceptionV3().apply, return_logits=True))
    got_pool3, got_logits = apply(variables, jnp.asarray(x299.numpy().transpose(0, 2, 3, 1)))
    _assert_close(np.asarray(got_pool3), pool3)
    _assert_close(np.asarray(got_logits), logits)
    features = InceptionFeatureExtractor(variables, batch_size=2)(images)  # 2 batches, 1 padded row
    assert features.shape == (3, 2048)
    _assert_close(features, pool3)


def _fid_in_span(x, y):
    """Reference FID of few samples: FD is invariant to an orthonormal change of basis, and
    X, Y vary only inside span{x_i - μ1, y_j - μ2, μ1 - μ2} (dimension <= N1 + N2 - 1), where
    coordinates outside it are equal constants; so compute FD on the projected features."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mu1, mu2 = x.mean(0), y.mean(0)
    basis, _ = np.linalg.qr(np.concatenate([x - mu1, y - mu2, (mu1 - mu2)[None]]).T)
    px, py = x @ basis, y @ basis
    return frechet_distance(px.mean(0), np.cov(px, rowvar=False),
                            py.mean(0), np.cov(py, rowvar=False))


def test_compute_fid_streams_batches(inception_case):
    model, variables, _ = inception_case
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (3, 40, 40, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1).astype(np.float32)
    want = _fid_in_span(_torch_fid_pool3(model, a)[1], _torch_fid_pool3(model, b)[1])
    got = compute_fid(a, [b[:1], b[1:]], variables, batch_size=2)  # array vs stream of batches
    assert got == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (1, 48, 80, 3), (1, 512, 400, 3)])
def test_resize_matches_torch_interpolate(shape):
    """Up- and downsampling: no antialiasing, half-pixel centres (pytorch-fid's resize)."""
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    want = F.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(299, 299),
                         mode="bilinear", align_corners=False).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(resize_bilinear(jnp.asarray(x), 299)), want, atol=1e-5)


# --- PyTorch reference: LPIPS ----------------------------------------------------------------

def _torchvision_features(net):
    """torchvision alexnet/vgg16 `features` Sequential and the indices of LPIPS's 5 taps."""
    if net == "alex":
        layers = [nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                  nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                  nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2)]
        return nn.Sequential(*layers), (1, 4, 7, 9, 11)
    layers, cin = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers), (3, 8, 15, 22, 29)


class NetLinLayer(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(cin, 1, 1, bias=False))


class TLPIPS(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.features, self.taps = _torchvision_features(net)
        # A tap follows a ReLU, whose channels are those of the conv just before it.
        tap_chans = [self.features[t - 1].out_channels for t in self.taps]
        self.lins = nn.ModuleList(NetLinLayer(c) for c in tap_chans)
        self.register_buffer("shift", torch.tensor([-.030, -.088, -.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([.458, .448, .450])[None, :, None, None])

    def _taps(self, x):
        out = []
        for i, layer in enumerate(self.features[:self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, x0, x1):
        """NCHW in [-1,1] -> [N]."""
        total = 0
        for lin, f0, f1 in zip(self.lins, self._taps((x0 - self.shift) / self.scale),
                               self._taps((x1 - self.shift) / self.scale)):
            n0 = f0 / (torch.sqrt(torch.sum(f0 ** 2, 1, keepdim=True)) + 1e-10)
            n1 = f1 / (torch.sqrt(torch.sum(f1 ** 2, 1, keepdim=True)) + 1e-10)
            total = total + lin.model((n0 - n1) ** 2).mean([2, 3], keepdim=True)
        return total.flatten()

    def split_state_dicts(self):
        """(torchvision-style trunk dict with an unused classifier tensor,
        lpips-style heads `linK.model.1.weight`)."""
        trunk = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        trunk["classifier.1.weight"] = torch.zeros(8, 4)  # present in torchvision files, unused
        heads = {f"lin{i}.model.1.weight": m.model[1].weight.detach().abs()
                 for i, m in enumerate(self.lins)}
        return trunk, heads


@pytest.mark.parametrize("net,flags", [("alex", ("--alexnet", "--alex-lin")),
                                       ("vgg", ("--vgg16", "--vgg-lin"))])
def test_lpips_matches_torch_reference(net, flags, tmp_path):
    model = TLPIPS(net).eval()
    randomize_(model, seed=1)
    trunk, heads = model.split_state_dicts()
    with torch.no_grad():  # LPIPS heads are non-negative in the released weights
        for i, lin in enumerate(model.lins):
            lin.model[1].weight.copy_(heads[f"lin{i}.model.1.weight"])
    torch.save(trunk, tmp_path / "trunk.pth")
    torch.save(heads, tmp_path / "heads.pth")
    out = str(tmp_path / "w.npz")
    assert _converter().main(["--out", out, flags[0], str(tmp_path / "trunk.pth"),
                              flags[1], str(tmp_path / "heads.pth")]) == 0
    rng = np.random.default_rng(3)
    x0 = rng.uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
    x1 = np.clip(x0 + rng.normal(0, 0.5, x0.shape), -1, 1).astype(np.float32)
    with torch.no_grad():
        want = model(*(torch.from_numpy(x.transpose(0, 3, 1, 2)) for x in (x0, x1))).numpy()
    variables = load_metric_variables(out, f"lpips_{net}")
    got = compute_lpips(x0, x1, variables, net, batch_size=2)  # 2 batches, 1 padded pair
    assert got.shape == (3,) and np.all(want > 0)
    np.testing.assert_allclose(got, want, rtol=2e-4)
    np.testing.assert_allclose(compute_lpips(x0, x0, variables, net, batch_size=2), 0.0, atol=1e-7)


def test_lpips_full_package_state_dict_converts_the_same():
    """A full `lpips.LPIPS` state dict (trunk under net.sliceK.i) gives the same variables."""
    model = TLPIPS("alex")
    randomize_(model, seed=2)
    trunk, heads = model.split_state_dicts()
    slice_of = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    full = {f"net.slice{slice_of[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v
            for k, v in trunk.items() if k.startswith("features.")}
    full.update(heads, **{"scaling_layer.shift": model.shift, "scaling_layer.scale": model.scale})
    as_numpy = lambda d: {k: v.numpy() for k, v in d.items()}  # noqa: E731
    a = lpips_from_torch("alex", as_numpy({**trunk, **heads}))
    b = lpips_from_torch("alex", as_numpy(full))
    for layer in a["params"]:
        for leaf in a["params"][layer]:
            np.testing.assert_array_equal(a["params"][layer][leaf], b["params"][layer][leaf])


# --- Missing or wrong weights ------------------------------------------------------------------

def _one_line_user_error(fn, *must_contain):
    with pytest.raises(UserError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for text in must_contain:
        assert text in message, message
    return message


def test_missing_or_wrong_weights_file(tmp_path, inception_case, capsys):
    missing = str(tmp_path / "nope.npz")
    _one_line_user_error(lambda: load_metric_variables(missing, "inception"),
                         missing, "scripts/convert_metric_weights.py", "pt_inception-2015-12-05")
    _one_line_user_error(lambda: load_metric_variables("", "lpips_vgg"),
                         "--vgg16", "eval.metric_weights")
    _, _, npz = inception_case
    _one_line_user_error(lambda: load_metric_variables(npz, "lpips_alex"),
                         "holds no lpips_alex", "--alex-lin")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    junk = str(tmp_path / "junk.npz")
    _one_line_user_error(lambda: load_metric_variables(junk, "inception"), junk)
    # torchvision's own Inception (1000 classes) is not the FID network: the converter refuses it.
    state = {k: v.numpy() for k, v in TFIDInception().state_dict().items()}
    state["fc.weight"], state["fc.bias"] = np.zeros((1000, 2048)), np.zeros(1000)
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, tmp_path / "tv.pth")
    out = tmp_path / "o.npz"
    assert _converter().main(["--out", str(out), "--inception", str(tmp_path / "tv.pth")]) == 2
    err = capsys.readouterr().err
    assert "params/fc/" in err and "1008" in err and not out.exists()
