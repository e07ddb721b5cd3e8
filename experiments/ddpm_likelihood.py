"""Bits/dim of a DDPM: `python -m experiments.ddpm_likelihood --config=configs/NAME.py
--workdir=DIR [--diffusers=PATH] [--config.key=value ...]`.

The variational bound (seed 004 §3.4, `fdm.diffusion.likelihood`) of the first
eval.bpd_examples eval images, with the newest checkpoint in DIR or, with --diffusers,
a local diffusers UNet2DModel directory converted by `fdm.nn.convert_diffusers` (e.g.
google/ddpm-cifar10-32 with configs/ddpm.py and CIFAR-10 in TFDS format under
--config.data.data_dir). Writes DIR/likelihood.json (bpd, bpd_prior, bpd_decoder,
bpd_rate, distortion_rmse, ...) and DIR/rate_distortion.json (Table 6.2). Thin over
`fdm.run.likelihood`; bad input ends with one line and exit code 2.
"""
import logging as std_logging

from absl import app, flags

from experiments import cli  # first: defines --config/--workdir, quiets TF's banner
from fdm import run as run_lib
from fdm.errors import UserError

_DIFFUSERS = flags.DEFINE_string(
    "diffusers", "", "Local diffusers UNet2DModel directory (config.json + weights) to "
    "evaluate instead of the workdir's checkpoint.")


def main(argv: list[str]) -> None:
    std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
    cli.reject_positional(argv)
    try:
        results = run_lib.likelihood(cli.load_config(), cli.workdir(), _DIFFUSERS.value)
    except UserError as e:
        cli.fail(str(e), 2)
    print(" ".join(f"{k}={results[k]:.5f}" for k in ("bpd", "bpd_rate", "bpd_decoder",
                                                      "bpd_prior", "distortion_rmse")))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
