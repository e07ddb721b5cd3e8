"""Import CLIP ViT image-tower weights into `fdm.nn.clip_vision.ClipVisionTransformer`.

Nothing here downloads: every input is a local file, and a missing, unreadable or
wrong file is a one-line `UserError` naming the file, the problem and the fix.

Inputs (the layout is recognised from the tensor names, not the file suffix):
  * OpenAI: the TorchScript archive `ViT-B-32.pt` that `clip.load` downloads (float16
    weights), or a torch state dict with OpenAI's names (`clip.model.CLIP`,
    open_clip's `CLIP`):
      visual.conv1.weight [D, 3, P, P], visual.class_embedding [D],
      visual.positional_embedding [N, D], visual.ln_pre.{weight, bias},
      visual.transformer.resblocks.{i}.{ln_1, attn.out_proj, ln_2, mlp.c_fc,
        mlp.c_proj}.{weight, bias} and attn.in_proj_{weight [3D, D], bias [3D]} (q; k; v),
      visual.ln_post.{weight, bias}, visual.proj [D, E].
  * Hugging Face (transformers CLIPModel / CLIPVisionModelWithProjection):
    `model.safetensors` (or `pytorch_model.bin`, or the directory holding it):
      vision_model.embeddings.{patch_embedding.weight, class_embedding,
        position_embedding.weight}, vision_model.pre_layrnorm,
      vision_model.encoder.layers.{i}.{layer_norm1, self_attn.{q, k, v, out}_proj,
        layer_norm2, mlp.fc1, mlp.fc2}, vision_model.post_layernorm,
      visual_projection.weight [E, D].
  Other tensors (the text tower, logit_scale, position_ids) are ignored.

Architecture from the weights (as OpenAI's `build_model`): D = conv1 output channels,
P = its kernel size, S = P * sqrt(N - 1) from the positional embedding, L = number of
blocks, M = c_fc / fc1 outputs, E = projection outputs. The number of heads is not in
the weights: it is the `heads` argument, else `num_attention_heads` of a config.json
beside a Hugging Face file, else D // 64 (OpenAI's rule, right for all its ViTs).

Conventions: conv OIHW -> HWIO; Linear weight [out, in] -> kernel [in, out];
LayerNorm weight -> scale; OpenAI's proj is already [D, E]; float16 -> float32.

The .npz written here holds "config/<field>" (0-d arrays of `ClipVisionConfig`) and
"params/<module path>/<leaf>" (float32). CLI:
  python -m fdm.nn.convert_clip ViT-B-32.pt clip_vit_b32.npz [--heads H]
"""
import argparse
import dataclasses
import json
import os
import re
import sys
import zipfile
from typing import Any, Dict, Iterator, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import numpy as np

from fdm.errors import UserError
from fdm.trees import flatten, key_mismatch, unflatten
from fdm.nn.clip_vision import ClipVisionConfig, ClipVisionTransformer

HINT = ("pass a local OpenAI ViT-B-32.pt, a Hugging Face CLIP model.safetensors, or an .npz "
        "written by `python -m fdm.nn.convert_clip IN OUT.npz` (nothing is downloaded)")
OPENAI_HEAD_DIM = 64  # OpenAI's CLIP: heads = width // 64


class ClipVisionCheckpoint(NamedTuple):
    """Converted weights: `ClipVisionTransformer(config).apply({'params': params}, x)`."""
    config: ClipVisionConfig
    params: Dict


# ---------------------------------------------------------------- names
_OPENAI_TOP = {
    "visual.conv1.weight": "conv1/kernel", "visual.class_embedding": "class_embedding",
    "visual.positional_embedding": "positional_embedding",
    "visual.ln_pre.weight": "ln_pre/scale", "visual.ln_pre.bias": "ln_pre/bias",
    "visual.ln_post.weight": "ln_post/scale", "visual.ln_post.bias": "ln_post/bias",
    "visual.proj": "proj"}
_OPENAI_BLOCK = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.(.+)$")
_OPENAI_INNER = {
    "ln_1.weight": "ln_1/scale", "ln_1.bias": "ln_1/bias",
    "attn.out_proj.weight": "attn/out/kernel", "attn.out_proj.bias": "attn/out/bias",
    "ln_2.weight": "ln_2/scale", "ln_2.bias": "ln_2/bias",
    "mlp.c_fc.weight": "c_fc/kernel", "mlp.c_fc.bias": "c_fc/bias",
    "mlp.c_proj.weight": "c_proj/kernel", "mlp.c_proj.bias": "c_proj/bias"}
_QKV = ("query", "key", "value")

_HF_TOP = {
    "vision_model.embeddings.patch_embedding.weight": "conv1/kernel",
    "vision_model.embeddings.class_embedding": "class_embedding",
    "vision_model.embeddings.position_embedding.weight": "positional_embedding",
    "vision_model.pre_layrnorm.weight": "ln_pre/scale",
    "vision_model.pre_layrnorm.bias": "ln_pre/bias",
    "vision_model.post_layernorm.weight": "ln_post/scale",
    "vision_model.post_layernorm.bias": "ln_post/bias"}
_HF_BLOCK = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.(.+)$")
_HF_INNER = {
    "layer_norm1.weight": "ln_1/scale", "layer_norm1.bias": "ln_1/bias",
    "layer_norm2.weight": "ln_2/scale", "layer_norm2.bias": "ln_2/bias",
    "mlp.fc1.weight": "c_fc/kernel", "mlp.fc1.bias": "c_fc/bias",
    "mlp.fc2.weight": "c_proj/kernel", "mlp.fc2.bias": "c_proj/bias",
    **{f"self_attn.{p}_proj.{leaf}": f"attn/{name}/{flax}"
       for p, name in (("q", "query"), ("k", "key"), ("v", "value"), ("out", "out"))
       for leaf, flax in (("weight", "kernel"), ("bias", "bias"))}}
_HF_IGNORED = ("vision_model.embeddings.position_ids",)
# Defaults of transformers' CLIPVisionConfig for the keys a config.json may omit.
_HF_VISION_DEFAULTS = dict(hidden_act="quick_gelu", num_attention_heads=12, layer_norm_eps=1e-5)


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):                     # torch.Tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def _layout(state_dict: Mapping[str, Any], source: str) -> str:
    """"openai" or "hf" from the tensor names; UserError if neither."""
    if "visual.proj" in state_dict:
        return "openai"
    if "visual_projection.weight" in state_dict:
        return "hf"
    if any(k.startswith("visual.") for k in state_dict):
        raise UserError(f"{source} has a CLIP image tower without visual.proj (a ResNet CLIP "
                        f"or a tower without projection); only CLIP ViTs are supported; {HINT}")
    if any(k.startswith("vision_model.") for k in state_dict):
        raise UserError(f"{source} has no visual_projection.weight (a CLIPVisionModel without "
                        f"projection); use the weights of CLIPModel or "
                        f"CLIPVisionModelWithProjection")
    raise UserError(f"{source} holds no CLIP image tower (no visual.* or vision_model.* "
                    f"tensors); {HINT}")


def _openai_targets(key: str, value: np.ndarray) -> Iterator[Tuple[str, np.ndarray]]:
    """(flax path, tensor in torch layout) pairs of one OpenAI tensor; nothing if unknown."""
    if key in _OPENAI_TOP:
        yield _OPENAI_TOP[key], value
        return
    m = _OPENAI_BLOCK.match(key)
    if not m:
        return
    block, inner = f"resblocks_{m.group(1)}", m.group(2)
    if inner in ("attn.in_proj_weight", "attn.in_proj_bias"):
        leaf = "kernel" if inner.endswith("weight") else "bias"
        for name, part in zip(_QKV, np.split(value, 3, axis=0)):
            yield f"{block}/attn/{name}/{leaf}", part
    elif inner in _OPENAI_INNER:
        yield f"{block}/{_OPENAI_INNER[inner]}", value


def _hf_targets(key: str, value: np.ndarray) -> Iterator[Tuple[str, np.ndarray]]:
    """(flax path, tensor in torch layout) pairs of one Hugging Face tensor."""
    if key in _HF_TOP:
        yield _HF_TOP[key], value
    elif key == "visual_projection.weight":
        yield "proj", value.T                        # [E, D] -> OpenAI's [D, E]
    else:
        m = _HF_BLOCK.match(key)
        if m and m.group(2) in _HF_INNER:
            yield f"resblocks_{m.group(1)}/{_HF_INNER[m.group(2)]}", value


def _flax_leaf(path: str, value: np.ndarray) -> np.ndarray:
    """torch layout -> flax layout: conv OIHW -> HWIO, Linear [out, in] -> [in, out]."""
    if path.endswith("/kernel") and value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))
    if path.endswith("/kernel") and value.ndim == 2:
        return value.T
    return value


def _in_tower(key: str, layout: str) -> bool:
    if layout == "openai":
        return key.startswith("visual.")
    return key.startswith(("vision_model.", "visual_projection.")) and key not in _HF_IGNORED


def _map_tensors(state_dict: Mapping[str, Any], layout: str,
                 source: str) -> Dict[str, Tuple[np.ndarray, str, Tuple[int, ...]]]:
    """{flax path: (flax-layout array, source tensor name, source shape)}."""
    targets = _openai_targets if layout == "openai" else _hf_targets
    flat, unused = {}, []
    for key, tensor in state_dict.items():
        if not _in_tower(key, layout):
            continue
        value = _to_numpy(tensor)
        pairs = list(targets(key, value))
        if not pairs:
            unused.append(key)
        for path, part in pairs:
            flat[path] = (_flax_leaf(path, part), key, tuple(value.shape))
    if unused:
        raise UserError(f"{source} has {len(unused)} image-tower tensors fdm cannot map "
                        f"(e.g. {unused[:3]}); only OpenAI-style CLIP ViT towers are supported")
    return flat


def _infer_config(flat: Mapping[str, Tuple[np.ndarray, str, Tuple[int, ...]]],
                  heads: Optional[int], layer_norm_eps: float, source: str) -> ClipVisionConfig:
    """Architecture from the tensor shapes (OpenAI's build_model rules)."""
    needed = ("conv1/kernel", "positional_embedding", "proj", "resblocks_0/c_fc/kernel")
    missing = [p for p in needed if p not in flat]
    if missing:
        raise UserError(f"{source} lacks the CLIP image-tower tensors for {missing}; "
                        f"the file is incomplete; {HINT}")
    conv = flat["conv1/kernel"][0]                   # [P, P, 3, D]
    num_tokens = flat["positional_embedding"][0].shape[0]
    grid = int(round((num_tokens - 1) ** 0.5))
    if conv.ndim != 4 or conv.shape[0] != conv.shape[1] or grid * grid + 1 != num_tokens:
        raise UserError(f"{source}: patch embedding {flat['conv1/kernel'][1]} "
                        f"{flat['conv1/kernel'][2]} or positional embedding of {num_tokens} "
                        f"tokens is not that of a square CLIP ViT; {HINT}")
    width = conv.shape[3]
    heads = heads or max(width // OPENAI_HEAD_DIM, 1)
    if width % heads:
        raise UserError(f"{source}: width {width} is not divisible by {heads} heads; "
                        f"pass the model's number of attention heads (--heads)")
    layers = 1 + max(int(p.split("/")[0].split("_")[1]) for p in flat
                     if p.startswith("resblocks_"))
    return ClipVisionConfig(
        image_size=conv.shape[0] * grid, patch_size=conv.shape[0], width=width, layers=layers,
        heads=heads, mlp_dim=flat["resblocks_0/c_fc/kernel"][0].shape[-1],
        embed_dim=flat["proj"][0].shape[-1], layer_norm_eps=layer_norm_eps)


def _expected_shapes(config: ClipVisionConfig) -> Dict[str, Tuple[int, ...]]:
    x = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), np.float32)
    init = lambda x: ClipVisionTransformer(config).init(jax.random.PRNGKey(0), x)  # noqa: E731
    return {k: tuple(v.shape) for k, v in flatten(jax.eval_shape(init, x)["params"]).items()}


def _architecture(config: ClipVisionConfig) -> str:
    return (f"a CLIP ViT with width {config.width}, {config.layers} layers, patch "
            f"{config.patch_size}, image {config.image_size}")


def _check_shapes(params_flat: Mapping[str, np.ndarray], config: ClipVisionConfig,
                  source: str, names: Mapping[str, str]) -> None:
    """UserError unless params_flat has exactly the tower's parameters and shapes."""
    want = _expected_shapes(config)
    mismatch = key_mismatch(want, params_flat)
    if mismatch:
        raise UserError(f"{source} does not fit {_architecture(config)}: parameters "
                        f"{mismatch}; the file is incomplete or not a CLIP ViT; {HINT}")
    for path, shape in want.items():
        got = tuple(params_flat[path].shape)
        if got != shape:
            raise UserError(f"{source}: tensor {names[path]} gives {path} of shape {got}, "
                            f"but {_architecture(config)} needs {shape}; the file is damaged or "
                            f"mixes models; {HINT}")


def clip_vision_from_state_dict(state_dict: Mapping[str, Any], heads: Optional[int] = None,
                                layer_norm_eps: float = 1e-5,
                                source: str = "the CLIP state dict") -> ClipVisionCheckpoint:
    """Converts an OpenAI or Hugging Face CLIP state dict (names -> numpy arrays or torch
    tensors) to the fdm tower; the architecture is inferred and every shape checked.

    Args:
      heads: attention heads; None = width // 64 (OpenAI's rule).
      source: how error messages name the input (the file path).
    Raises:
      UserError naming `source`, the problem and the fix.
    """
    layout = _layout(state_dict, source)
    flat = _map_tensors(state_dict, layout, source)
    config = _infer_config(flat, heads, layer_norm_eps, source)
    params_flat = {path: entry[0] for path, entry in flat.items()}
    _check_shapes(params_flat, config, source, {p: f"{e[1]} {e[2]}" for p, e in flat.items()})
    return ClipVisionCheckpoint(config, unflatten(params_flat))


# ---------------------------------------------------------------- files
def _read_torch(path: str) -> Mapping[str, Any]:
    """TorchScript archive (OpenAI's .pt) or a pickled state dict, tensors only."""
    import torch  # only reading torch files needs torch
    try:
        return torch.jit.load(path, map_location="cpu").state_dict()
    except (RuntimeError, ValueError):
        pass                                         # not TorchScript: a plain state dict?
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged / foreign file
        raise UserError(f"cannot read CLIP weights {path!r} as TorchScript or a torch state "
                        f"dict ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        f"{HINT}")
    if not isinstance(state, Mapping):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict; {HINT}")
    return state


def _read_safetensors(path: str) -> Mapping[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise UserError(f"cannot read CLIP weights {path!r} as safetensors ({e}); {HINT}")


def _weights_file(path: str) -> str:
    """The weights file of `path` (a Hugging Face model directory -> its weights file)."""
    if not os.path.exists(path):
        raise UserError(f"CLIP weights file {path!r} not found; {HINT}")
    if os.path.isdir(path):
        for name in ("model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise UserError(f"{path} has no model.safetensors or pytorch_model.bin; {HINT}")
    return path


def read_state_dict(path: str) -> Mapping[str, Any]:
    """Tensors of a local .safetensors, TorchScript .pt or torch state-dict file."""
    path = _weights_file(path)
    return _read_safetensors(path) if path.endswith(".safetensors") else _read_torch(path)


def _hf_vision_config(weights_path: str) -> Optional[Dict[str, Any]]:
    """The vision settings of a config.json beside a Hugging Face weights file, if any."""
    cfg_file = os.path.join(os.path.dirname(os.path.abspath(weights_path)), "config.json")
    if not os.path.isfile(cfg_file):
        return None
    try:
        with open(cfg_file) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {cfg_file} ({e}); fix or remove it (then heads = "
                        f"width // 64)")
    vision = cfg["vision_config"] if "vision_config" in cfg else cfg
    vision = {**_HF_VISION_DEFAULTS, **vision}
    if vision["hidden_act"] != "quick_gelu":
        raise UserError(f"{cfg_file}: hidden_act {vision['hidden_act']!r} is not supported; "
                        f"fdm's CLIP tower uses quick_gelu (OpenAI's CLIP)")
    return vision


def convert_clip_file(path: str, heads: Optional[int] = None) -> ClipVisionCheckpoint:
    """Converts a local OpenAI / Hugging Face CLIP weights file (or HF model directory).

    For Hugging Face weights with a config.json beside them, its num_attention_heads and
    layer_norm_eps are used (an explicit `heads` wins).
    """
    weights = _weights_file(path)
    state_dict = read_state_dict(weights)
    eps = 1e-5
    if _layout(state_dict, weights) == "hf":
        vision = _hf_vision_config(weights)
        if vision is not None:
            heads = heads or int(vision["num_attention_heads"])
            eps = float(vision["layer_norm_eps"])
    return clip_vision_from_state_dict(state_dict, heads, eps, source=weights)


# ---------------------------------------------------------------- npz


def save_clip_npz(path: str, checkpoint: ClipVisionCheckpoint) -> None:
    """Writes the config and float32 params into one .npz at `path` (layout: module doc)."""
    arrays = {f"config/{f.name}": np.asarray(getattr(checkpoint.config, f.name))
              for f in dataclasses.fields(ClipVisionConfig)}
    arrays.update({f"params/{k}": np.asarray(v, np.float32)
                   for k, v in flatten(checkpoint.params).items()})
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to the name
        np.savez(f, **arrays)


def load_clip_npz(path: str) -> ClipVisionCheckpoint:
    """Reads an .npz written by `save_clip_npz`; shapes are checked against the config."""
    if not os.path.isfile(path):
        raise UserError(f"CLIP weights file {path!r} not found; {HINT}")
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read CLIP weights {path!r} ({e}); {HINT}")
    fields = dataclasses.fields(ClipVisionConfig)
    absent = [f.name for f in fields if f"config/{f.name}" not in arrays]
    if absent:
        raise UserError(f"{path} lacks config entries {absent}; it was not written by "
                        f"fdm.nn.convert_clip: convert the original file again")
    config = ClipVisionConfig(**{f.name: type(f.default)(arrays[f"config/{f.name}"])
                                 for f in fields})
    params_flat = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    _check_shapes(params_flat, config, path, {p: p for p in params_flat})
    return ClipVisionCheckpoint(config, unflatten(params_flat))


def load_clip_vision(path: str, heads: Optional[int] = None) -> ClipVisionCheckpoint:
    """Any supported local file: a converted .npz, or an OpenAI / Hugging Face original."""
    if path.endswith(".npz"):
        return load_clip_npz(path)
    return convert_clip_file(path, heads)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: convert IN (OpenAI .pt / HF .safetensors or directory) to OUT.npz."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="OpenAI ViT-B-32.pt, HF model.safetensors or directory")
    parser.add_argument("output", help="the .npz to write")
    parser.add_argument("--heads", type=int, default=None,
                        help="attention heads (default: HF config.json, else width // 64)")
    args = parser.parse_args(argv)
    try:
        checkpoint = convert_clip_file(args.input, args.heads)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_clip_npz(args.output, checkpoint)
    print(f"wrote {args.output}: {checkpoint.config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
