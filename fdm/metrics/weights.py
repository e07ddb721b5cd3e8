"""Weights of the metric networks: one local .npz, converted once from the public files.

Nothing here downloads: the path of the .npz comes from the config
(`eval.metric_weights`) or a flag, and a missing file is a `UserError` that
says how to make it (docs/METRICS.md, `scripts/convert_metric_weights.py`).

File layout: one array per variable, keyed "<network>/<collection>/<module path>/<name>",
  network    "inception" (FID Inception-v3), "lpips_alex", "lpips_vgg"
  collection "params" or "batch_stats"
e.g. "inception/params/Mixed_5b/branch1x1/conv/kernel". One file may hold any
subset of the networks.

PyTorch -> Flax conventions: conv weight [O, I, kh, kw] -> kernel [kh, kw, I, O];
linear weight [O, I] -> kernel [I, O]; BatchNorm weight/bias -> params scale/bias,
running_mean/var -> batch_stats mean/var.
"""
from __future__ import annotations

import os
import re
import zipfile
from typing import Callable, Mapping, Optional

import numpy as np

from fdm.errors import UserError
from fdm.trees import flatten, key_mismatch, unflatten
from fdm.metrics import inception, lpips

CONVERT_ARGS = {
    "inception": "--inception pt_inception-2015-12-05-6726825d.pth",
    "lpips_alex": "--alexnet alexnet-owt-7be5be79.pth --alex-lin alex.pth",
    "lpips_vgg": "--vgg16 vgg16-397923af.pth --vgg-lin vgg.pth",
}
NETWORKS = tuple(CONVERT_ARGS)


def _hint(network: str, path: str) -> str:
    return (f"create it with `python scripts/convert_metric_weights.py "
            f"--out {path or 'FILE.npz'} {CONVERT_ARGS[network]}` (see docs/METRICS.md) "
            f"and set eval.metric_weights to its path")


def variable_shapes(network: str) -> Mapping:
    """Shape tree of the Flax variables the network's module expects."""
    if network == "inception":
        return inception.variable_shapes()
    return lpips.variable_shapes(network.removeprefix("lpips_"))


def check_variables(flat: Mapping[str, np.ndarray], network: str, source: str) -> None:
    """UserError unless `flat` has exactly the network's variables with the right shapes."""
    want = {k: tuple(v.shape) for k, v in flatten(variable_shapes(network)).items()}
    mismatch = key_mismatch(want, flat)
    if mismatch:
        raise UserError(f"{source} does not hold the {network} network: variables "
                        f"{mismatch}; check that the input file is the one docs/METRICS.md "
                        f"names")
    for key, shape in want.items():
        if tuple(flat[key].shape) != shape:
            raise UserError(f"{source}: {network} variable {key} has shape "
                            f"{tuple(flat[key].shape)}, expected {shape}; check that the input "
                            f"file is the one docs/METRICS.md names")


def save_metric_weights(path: str, networks: Mapping[str, Mapping]) -> None:
    """Writes {network: variables} into one .npz at `path` (float32)."""
    arrays = {f"{network}/{k}": np.asarray(v, np.float32)
              for network, variables in networks.items() for k, v in flatten(variables).items()}
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to the name
        np.savez(f, **arrays)


def _read_npz(path: str, network: str) -> dict[str, np.ndarray]:
    if not path or not os.path.isfile(path):
        raise UserError(f"{network} weights file {path!r} not found; {_hint(network, path)}")
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read metric weights {path!r} ({e}); {_hint(network, path)}")


def load_metric_variables(path: Optional[str], network: str) -> dict:
    """Flax variables of `network` ("inception" | "lpips_alex" | "lpips_vgg") from the .npz."""
    if network not in NETWORKS:
        raise UserError(f"unknown metric network {network!r}; use one of {list(NETWORKS)}")
    arrays = _read_npz(path, network)
    prefix = network + "/"
    flat = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    if not flat:
        held = sorted({k.split("/", 1)[0] for k in arrays})
        raise UserError(f"{path} holds no {network} weights (it has {held}); "
                        f"{_hint(network, path)}")
    check_variables(flat, network, path)
    return unflatten(flat)


# --- PyTorch state dicts -> Flax variables ------------------------------------------------

_BN_LEAVES = {"running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _torch_leaf(module: str, leaf: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """(flax key "collection/module/name", array) of one torch tensor of `module`."""
    if leaf in _BN_LEAVES:
        collection, name = _BN_LEAVES[leaf]
        return f"{collection}/{module}/{name}", value
    if leaf == "bias":
        return f"params/{module}/bias", value
    if leaf == "weight" and value.ndim == 4:
        return f"params/{module}/kernel", value.transpose(2, 3, 1, 0)
    if leaf == "weight" and value.ndim == 2:
        return f"params/{module}/kernel", value.T
    if leaf == "weight" and value.ndim == 1:
        return f"params/{module}/scale", value
    raise UserError(f"unexpected tensor {module}.{leaf} of shape {value.shape} in the weights file")


def _convert(state_dict: Mapping[str, np.ndarray], rename: Callable[[str], Optional[str]],
             network: str) -> dict:
    """Renames modules (`rename` -> flax module path, None = not used) and converts leaves."""
    flat = {}
    for key, value in state_dict.items():
        module, leaf = key.rsplit(".", 1)
        target = rename(module)
        if target is not None and leaf != "num_batches_tracked":
            name, array = _torch_leaf(target, leaf, np.asarray(value, np.float32))
            flat[name] = array
    check_variables(flat, network, f"the {network} state dict")
    return unflatten(flat)


def _inception_module(module: str) -> Optional[str]:
    """pytorch-fid / torchvision Inception3 module names equal ours ('.' -> '/')."""
    return None if module.startswith("AuxLogits") else module.replace(".", "/")


def _lpips_module(module: str) -> Optional[str]:
    """torchvision `features.i`, lpips `net.sliceK.i` -> features_i; `linK.model.j` -> linK."""
    trunk = re.fullmatch(r"(?:features|net\.slice\d+)\.(\d+)", module)
    if trunk:
        return f"features_{trunk.group(1)}"
    head = re.fullmatch(r"(lin\d+)\.model\.\d+", module)
    return head.group(1) if head else None


def inception_from_torch(state_dict: Mapping[str, np.ndarray]) -> dict:
    """Variables of `InceptionV3` from the pytorch-fid state dict (tensors as numpy)."""
    return _convert(state_dict, _inception_module, "inception")


def lpips_from_torch(net: str, state_dict: Mapping[str, np.ndarray]) -> dict:
    """Variables of `LPIPS(net)` from the torchvision trunk state dict merged with the
    lpips heads (`alex.pth`/`vgg.pth`); a full `lpips.LPIPS` state dict works too.
    Unused tensors (classifier, scaling_layer) are skipped."""
    return _convert(state_dict, _lpips_module, f"lpips_{net}")
