"""Import `diffusers.UNet2DModel` (DDPM layout) weights into `fdm.nn.UNet`.

Supported layout (public DDPM checkpoints such as google/ddpm-cifar10-32):
down blocks DownBlock2D / AttnDownBlock2D, up blocks UpBlock2D / AttnUpBlock2D
(mirroring the down blocks), UNetMidBlock2D, positional time embedding with
flip_sin_to_cos=False and freq_shift=1, downsample_padding=0, norm_eps=1e-6,
single-head attention (attention_head_dim None or equal to the channels),
optional class embedding (num_class_embeds).

Notation: L levels; diffusers `down_blocks.{l}` is level l, `up_blocks.{i}`
is level L-1-i. Conv kernels OIHW -> HWIO, Linear weights [out, in] -> [in, out],
GroupNorm weight -> scale. Both attention key styles are accepted
(to_q/to_k/to_v/to_out.0 and the older query/key/value/proj_attn).
Nothing here touches the network: checkpoints are read from local paths only.
"""
import json
import os
import re
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import jax
import numpy as np

from fdm.errors import UserError
from fdm.trees import flatten

# Defaults of diffusers UNet2DModel.__init__ for keys a config.json may omit.
_DIFFUSERS_DEFAULTS = dict(
    sample_size=None, in_channels=3, out_channels=3, center_input_sample=False,
    time_embedding_type="positional", time_embedding_dim=None, freq_shift=0,
    flip_sin_to_cos=True, mid_block_type="UNetMidBlock2D",
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(224, 448, 672, 896), layers_per_block=2, mid_block_scale_factor=1,
    downsample_padding=1, downsample_type="conv", upsample_type="conv", dropout=0.0,
    act_fn="silu", attention_head_dim=8, norm_num_groups=32, attn_norm_num_groups=None,
    norm_eps=1e-5, resnet_time_scale_shift="default", add_attention=True,
    class_embed_type=None, num_class_embeds=None)

# Settings the fdm U-Net hard-codes: (key, required value).
_FIXED = (("time_embedding_type", "positional"), ("flip_sin_to_cos", False),
          ("freq_shift", 1), ("downsample_padding", 0), ("norm_eps", 1e-6),
          ("act_fn", "silu"), ("center_input_sample", False),
          ("mid_block_type", "UNetMidBlock2D"), ("mid_block_scale_factor", 1),
          ("downsample_type", "conv"), ("upsample_type", "conv"),
          ("resnet_time_scale_shift", "default"), ("add_attention", True),
          ("class_embed_type", None), ("attn_norm_num_groups", None))


def _check_fixed(cfg: Mapping[str, Any]) -> None:
    for key, want in _FIXED:
        if cfg[key] != want:
            raise UserError(f"diffusers config {key}={cfg[key]!r} is not supported "
                            f"(fdm's DDPM U-Net needs {want!r})")


def _attention_levels(cfg: Mapping[str, Any]) -> Tuple[int, ...]:
    """Levels with attention; checks the up blocks mirror the down blocks."""
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    ok_down, ok_up = {"DownBlock2D", "AttnDownBlock2D"}, {"UpBlock2D", "AttnUpBlock2D"}
    if len(down) != len(up) or not set(down) <= ok_down or not set(up) <= ok_up:
        raise UserError(f"diffusers block types {down} / {up} are not supported; "
                        f"use {sorted(ok_down)} down and {sorted(ok_up)} up")
    levels = tuple(lvl for lvl, b in enumerate(down) if b.startswith("Attn"))
    mirrored = tuple(lvl for lvl, b in enumerate(reversed(up)) if b.startswith("Attn"))
    if levels != mirrored:
        raise UserError(f"diffusers up_block_types {up} do not mirror down_block_types "
                        f"{down}; fdm puts attention at the same resolutions both ways")
    return levels


def unet_kwargs_from_diffusers_config(config_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """fdm `UNet(**kwargs)` arguments for a diffusers UNet2DModel config (DDPM layout).

    Raises UserError for settings the fdm U-Net cannot represent.
    """
    name = config_dict.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise UserError(f"diffusers model class {name!r} is not supported; need UNet2DModel")
    cfg = {**_DIFFUSERS_DEFAULTS, **config_dict}
    _check_fixed(cfg)
    boc = [int(c) for c in cfg["block_out_channels"]]
    ch = boc[0]
    if any(c % ch for c in boc):
        raise UserError(f"diffusers block_out_channels {boc} are not multiples of {ch}")
    if cfg["time_embedding_dim"] not in (None, 4 * ch):
        raise UserError(f"diffusers time_embedding_dim={cfg['time_embedding_dim']} is not "
                        f"supported; fdm uses 4*block_out_channels[0]={4 * ch}")
    levels = _attention_levels(cfg)
    size = cfg["sample_size"]
    size = size[0] if isinstance(size, (list, tuple)) else size
    if levels and not size:
        raise UserError("diffusers config lacks sample_size; set it to the image size")
    _check_single_head(cfg["attention_head_dim"], [boc[lvl] for lvl in levels] + [boc[-1]])
    return dict(ch=ch, ch_mult=tuple(c // ch for c in boc),
                num_res_blocks=int(cfg["layers_per_block"]),
                attn_resolutions=tuple(int(size) // 2 ** lvl for lvl in levels),
                dropout=float(cfg["dropout"]), num_classes=int(cfg["num_class_embeds"] or 0),
                out_ch=int(cfg["out_channels"]), num_groups=int(cfg["norm_num_groups"]))


def _check_single_head(head_dim: Optional[int], channels) -> None:
    if head_dim is not None and any(int(head_dim) != c for c in channels):
        raise UserError(f"diffusers attention_head_dim={head_dim} means multi-head attention; "
                        "fdm's U-Net is single-head (attention_head_dim null)")


def diffusers_config_from_unet_kwargs(kwargs: Mapping[str, Any], sample_size: int,
                                      in_channels: int = 3) -> Dict[str, Any]:
    """The inverse: `diffusers.UNet2DModel(**config)` equal to `fdm.nn.UNet(**kwargs)`."""
    ch, mult = kwargs["ch"], tuple(kwargs["ch_mult"])
    attn = tuple(kwargs.get("attn_resolutions", ()))
    has_attn = [sample_size // 2 ** lvl in attn for lvl in range(len(mult))]
    num_classes = kwargs.get("num_classes", 0)
    return dict(
        sample_size=sample_size, in_channels=in_channels,
        out_channels=kwargs.get("out_ch", 3), block_out_channels=tuple(ch * m for m in mult),
        layers_per_block=kwargs["num_res_blocks"],
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in has_attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in has_attn[::-1]),
        attention_head_dim=None, norm_eps=1e-6, norm_num_groups=kwargs.get("num_groups", 32),
        downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
        dropout=kwargs.get("dropout", 0.0), time_embedding_type="positional",
        act_fn="silu", num_class_embeds=num_classes or None)


# ---------------------------------------------------------------- state dict
_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|"
                    r"upsamplers)\.(\d+)\.(.+)$")
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")
_TOP = {"time_embedding.linear_1": ("time_embed", "dense_0"),
        "time_embedding.linear_2": ("time_embed", "dense_1"),
        "class_embedding": ("time_embed", "class_embed"),
        "conv_in": ("encoder", "conv_in"), "conv_norm_out": ("decoder", "norm_out"),
        "conv_out": ("decoder", "conv_out")}
_INNER = {"norm1": "norm1", "conv1": "conv1", "time_emb_proj": "temb_proj", "norm2": "norm2",
          "conv2": "conv2", "conv_shortcut": "shortcut", "group_norm": "norm",
          "to_q": "q", "query": "q", "to_k": "k", "key": "k", "to_v": "v", "value": "v",
          "to_out.0": "proj_out", "proj_attn": "proj_out", "conv": "conv"}
_NORMS = {"norm1", "norm2", "group_norm", "conv_norm_out"}


def _block_path(m: "re.Match", num_levels: int) -> Optional[Tuple[str, ...]]:
    kind, idx, sub, j, inner = m.groups()
    part, prefix = ("encoder", "down") if kind == "down_blocks" else ("decoder", "up")
    level = int(idx) if kind == "down_blocks" else num_levels - 1 - int(idx)
    if sub in ("downsamplers", "upsamplers"):
        mod = f"{prefix}_{level}_{'downsample' if sub == 'downsamplers' else 'upsample'}"
        return (part, mod, "conv") if j == "0" and inner == "conv" else None
    kind_name = "res" if sub == "resnets" else "attn"
    return (part, f"{prefix}_{level}_{kind_name}_{j}", _INNER.get(inner, None))


def _module_path(prefix: str, num_levels: int) -> Optional[Tuple[str, ...]]:
    """fdm parameter path (without the leaf) of a diffusers module prefix, or None."""
    if prefix in _TOP:
        return _TOP[prefix]
    m = _BLOCK.match(prefix)
    if m:
        path = _block_path(m, num_levels)
        return path if path and None not in path else None
    m = _MID.match(prefix)
    if m:
        sub, j, inner = m.groups()
        mod = f"res_{j}" if sub == "resnets" else ("attn" if j == "0" else None)
        return ("middle", mod, _INNER.get(inner)) if mod and _INNER.get(inner) else None
    return None


def _convert_leaf(prefix: str, leaf: str, value: np.ndarray) -> Tuple[str, np.ndarray]:
    """(fdm leaf name, converted array) for diffusers tensor `prefix.leaf`."""
    last = prefix.split(".")[-1]
    if leaf == "bias":
        return "bias", value
    if last in _NORMS:
        return "scale", value
    if last == "class_embedding":
        return "embedding", value
    if value.ndim == 4:                              # conv OIHW -> HWIO
        return "kernel", np.transpose(value, (2, 3, 1, 0))
    if value.ndim == 2:                              # linear [out, in] -> [in, out]
        return "kernel", value.T
    raise UserError(f"diffusers tensor {prefix}.{leaf} has unexpected shape {value.shape}")


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):                     # torch.Tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def _num_levels(keys) -> int:
    idx = {int(k.split(".")[1]) for k in keys if k.startswith("down_blocks.")}
    return max(idx) + 1 if idx else 0


def unet_params_from_diffusers(state_dict: Mapping[str, Any],
                               unet_kwargs: Optional[Mapping[str, Any]] = None,
                               image_size: Optional[int] = None) -> Dict:
    """Converts a diffusers UNet2DModel (DDPM layout) state dict to fdm UNet params.

    Args:
      state_dict: name -> numpy array or torch tensor (`model.state_dict()`).
      unet_kwargs, image_size: if both given, the result is checked against
        `UNet(**unet_kwargs)` on image_size x image_size inputs (missing / extra
        parameters and shapes); recommended. The image size is needed because
        attention placement depends on feature-map size.
    Returns:
      the `params` collection: use as `UNet(**kw).apply({'params': params}, x, t)`.
    Raises:
      UserError on keys that cannot be mapped or a mismatch with `unet_kwargs`.
    """
    num_levels = _num_levels(state_dict.keys())
    params: Dict = {}
    unused = []
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        path = _module_path(prefix, num_levels) if leaf in ("weight", "bias") else None
        if path is None:
            unused.append(key)
            continue
        name, arr = _convert_leaf(prefix, leaf, _to_numpy(value))
        node = params
        for p in path:
            node = node.setdefault(p, {})
        node[name] = arr
    if unused:
        raise UserError(f"diffusers state dict has {len(unused)} tensors fdm cannot map "
                        f"(e.g. {unused[:3]}); only the DDPM UNet2DModel layout is supported")
    if unet_kwargs is not None and image_size is not None:
        _check_against_model(params, unet_kwargs, image_size)
    return jax.tree.map(lambda a: jax.numpy.asarray(a), params)


def _check_against_model(params: Mapping, unet_kwargs: Mapping[str, Any], size: int) -> None:
    """Raises UserError unless `params` has exactly the shapes of UNet(**unet_kwargs)."""
    from fdm.nn.unet import UNet  # local: keeps this module importable on its own
    model = UNet(**unet_kwargs)
    x = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
    t = jax.ShapeDtypeStruct((1,), np.int32)
    y = jax.ShapeDtypeStruct((1,), np.int32) if unet_kwargs.get("num_classes") else None
    init = lambda x, t, y: model.init(jax.random.PRNGKey(0), x, t, y)  # noqa: E731
    want = flatten(jax.eval_shape(init, x, t, y)["params"])
    got = flatten(params)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise UserError(f"diffusers weights do not fit the U-Net: missing {missing[:4]} "
                        f"({len(missing)}), unexpected {extra[:4]} ({len(extra)})")
    bad = [k for k in want if tuple(want[k].shape) != tuple(got[k].shape)]
    if bad:
        k = bad[0]
        raise UserError(f"diffusers weight {k} has shape {got[k].shape}, U-Net needs "
                        f"{want[k].shape} ({len(bad)} mismatches)")


# ---------------------------------------------------------------- files
def _read_state_dict(directory: str) -> Dict[str, np.ndarray]:
    st = os.path.join(directory, "diffusion_pytorch_model.safetensors")
    if os.path.exists(st):
        from safetensors.numpy import load_file
        return load_file(st)
    pt = os.path.join(directory, "diffusion_pytorch_model.bin")
    if os.path.exists(pt):
        import torch
        return {k: _to_numpy(v) for k, v in
                torch.load(pt, map_location="cpu", weights_only=True).items()}
    raise UserError(f"{directory} has no diffusion_pytorch_model.safetensors or .bin; "
                    "point at a local diffusers UNet2DModel directory")


class DiffusersCheckpoint(NamedTuple):
    """A converted checkpoint: `UNet(**unet_kwargs).apply({'params': params}, x, t)`
    on inputs of spatial size `image_size` (diffusers `sample_size`)."""
    unet_kwargs: Dict[str, Any]
    params: Dict
    image_size: int


def load_diffusers_checkpoint(path: str) -> DiffusersCheckpoint:
    """Loads a local diffusers UNet2DModel directory (never downloads).

    `path` holds config.json and diffusion_pytorch_model.safetensors (or .bin),
    or is a pipeline directory with them under `unet/`.
    Returns DiffusersCheckpoint(unet_kwargs, params, image_size).
    """
    if not os.path.isfile(os.path.join(path, "config.json")) and \
            os.path.isfile(os.path.join(path, "unet", "config.json")):
        path = os.path.join(path, "unet")
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise UserError(f"{cfg_file} not found; point at a local diffusers UNet2DModel directory")
    with open(cfg_file) as f:
        config = json.load(f)
    kwargs = unet_kwargs_from_diffusers_config(config)
    size = config.get("sample_size")
    size = int(size[0] if isinstance(size, (list, tuple)) else size or 0) or None
    params = unet_params_from_diffusers(_read_state_dict(path), kwargs, size)
    return DiffusersCheckpoint(kwargs, params, size)
