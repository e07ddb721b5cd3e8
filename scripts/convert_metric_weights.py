"""Convert the public PyTorch weights of the metric networks into one Flax .npz.

Inputs (download them on a machine with network access; nothing here downloads):
  --inception  pytorch-fid's FID Inception-v3 state dict
               pt_inception-2015-12-05-6726825d.pth
               (https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/
               pt_inception-2015-12-05-6726825d.pth)
  --alexnet    torchvision AlexNet state dict alexnet-owt-7be5be79.pth
               (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)
  --alex-lin   LPIPS v0.1 linear heads for AlexNet, lpips/weights/v0.1/alex.pth
               (pip package `lpips`, or github.com/richzhang/PerceptualSimilarity)
  --vgg16      torchvision VGG16 state dict vgg16-397923af.pth
               (https://download.pytorch.org/models/vgg16-397923af.pth)
  --vgg-lin    LPIPS v0.1 linear heads for VGG16, lpips/weights/v0.1/vgg.pth
Any subset of the networks may be converted; --alex-lin / --vgg-lin may also be a
full `lpips.LPIPS(...).state_dict()` (trunk included), then --alexnet / --vgg16
can be left out.

Usage (from the repository root):
  python scripts/convert_metric_weights.py --out metric_weights.npz \
      --inception pt_inception-2015-12-05-6726825d.pth \
      --alexnet alexnet-owt-7be5be79.pth --alex-lin alex.pth \
      --vgg16 vgg16-397923af.pth --vgg-lin vgg.pth
then set `--config.eval.metric_weights=metric_weights.npz`. The file layout is
described in `fdm/metrics/weights.py`; see docs/METRICS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

from fdm.errors import UserError
from fdm.metrics import weights


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A PyTorch state dict file -> {name: float32 numpy array} (tensors only, no pickled code)."""
    import torch  # only the converter needs torch

    if not os.path.isfile(path):
        raise UserError(f"weights file {path!r} not found; download it as docs/METRICS.md says")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}


def _lpips_state(trunk: Optional[str], heads: Optional[str]) -> dict[str, np.ndarray]:
    """Trunk (torchvision) and heads (lpips) tensors in one dict."""
    if heads is None:
        raise UserError("LPIPS needs its linear heads: pass --alex-lin alex.pth / "
                        "--vgg-lin vgg.pth")
    return {**(read_state_dict(trunk) if trunk else {}), **read_state_dict(heads)}


def convert(args: argparse.Namespace) -> dict[str, dict]:
    """{network: Flax variables} for every network whose inputs were given."""
    networks = {}
    if args.inception:
        networks["inception"] = weights.inception_from_torch(read_state_dict(args.inception))
    if args.alexnet or args.alex_lin:
        state = _lpips_state(args.alexnet, args.alex_lin)
        networks["lpips_alex"] = weights.lpips_from_torch("alex", state)
    if args.vgg16 or args.vgg_lin:
        state = _lpips_state(args.vgg16, args.vgg_lin)
        networks["lpips_vgg"] = weights.lpips_from_torch("vgg", state)
    if not networks:
        raise UserError("nothing to convert: pass --inception and/or --alexnet/--alex-lin "
                        "and/or --vgg16/--vgg-lin (see docs/METRICS.md)")
    return networks


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", required=True, help="output .npz path")
    for flag in ("--inception", "--alexnet", "--alex-lin", "--vgg16", "--vgg-lin"):
        parser.add_argument(flag, default=None)
    args = parser.parse_args(argv)
    try:
        networks = convert(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    weights.save_metric_weights(args.out, networks)
    print(f"wrote {', '.join(networks)} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
