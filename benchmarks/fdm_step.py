"""Times one FDM training step against the DDPM U-Net step at the same width.

A step is forward + backward + Adam update of the eps-MSE loss (as in
`unet_step.py`). Rows: the DDPM U-Net, then the factorized U-Net with K masks
for each K in --masks (shared decoder, K branches folded into the batch), and
optionally other decodings (--decodings, Table 2.6 ablations). For every row:
median wall and process-CPU time, the step's FLOPs from XLA's cost analysis,
and both ratios to the U-Net row. "CPU/FLOP" = (CPU-time ratio) / (FLOP
ratio): 1.0 means the extra work costs exactly what its FLOPs say; above 1
the batched branches run less efficiently than the plain U-Net.

Expected FLOPs: encoder + middle + mask generator (decoder-shaped) + K
decoder passes, i.e. roughly (1 + 2K)/2 U-Nets for a symmetric U-Net.

  python benchmarks/fdm_step.py --config=small --batch=16 --cores=1
  python benchmarks/fdm_step.py --config=cifar10 --batch=8 --masks=1,3 --decodings=unshared,concat
"""
import argparse
import os
import sys
import time

import unet_step


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(unet_step.CONFIGS), default="small")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--masks", default="1,2,3", help="comma list of K for the shared decoder")
    p.add_argument("--decodings", default="", help="extra K=3 rows: unshared, mask_hmid, concat")
    p.add_argument("--cores", type=int, default=0, help="pin to the first N cores (0: all)")
    return p.parse_args(argv)


def build_models(cfg, masks, decodings):
    """[(label, flax module)]: the U-Net first, then the factorized variants."""
    from fdm.nn import UNet
    from fdm.nn.factorized import FactorizedUNet
    rows = [("DDPM U-Net", UNet(**cfg))]
    rows += [(f"FDM shared, K={k}", FactorizedUNet(**cfg, num_masks=k)) for k in masks]
    rows += [(f"FDM {d}, K=3", FactorizedUNet(**cfg, num_masks=3, decoding=d))
             for d in decodings]
    return rows


def init_params(model, size):
    import jax
    import jax.numpy as jnp
    x = jnp.zeros((1, size, size, 3))
    t = jnp.zeros((1,), jnp.int32)
    with jax.threefry_partitionable(False):
        return jax.jit(model.init)(jax.random.PRNGKey(0), x, t)["params"]


def build_runners(rows, batch, size):
    """[(label, run, flops)] with every step compiled."""
    runners = []
    for label, model in rows:
        t0 = time.perf_counter()
        run, flops = unet_step.jax_train_step(model, init_params(model, size), batch, size)
        print(f"# {label}: compile {time.perf_counter() - t0:.1f}s, {flops / 1e9:.1f} GFLOP",
              flush=True)
        runners.append((label, run, flops))
    return runners


def print_table(runners, timings):
    base_flops, base_cpu = runners[0][2], timings[0][3]
    print("| model | GFLOP/step | median ms | CPU ms | FLOP ratio | CPU-time ratio | CPU/FLOP |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (label, _, flops), (_, med, _, cpu) in zip(runners, timings):
        fr, tr = flops / base_flops, cpu / base_cpu
        print(f"| {label} | {flops / 1e9:.1f} | {med * 1e3:.0f} | {cpu * 1e3:.0f} | "
              f"{fr:.2f} | {tr:.2f} | {tr / fr:.2f} |")


def main(argv=None):
    args = parse_args(argv)
    unet_step.pin_cores(args.cores)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fdm.nn  # noqa: F401  (first: may add the XLA:CPU conv flag before jax starts)
    cfg = dict(unet_step.CONFIGS[args.config])
    size = cfg.pop("size")
    print(f"# machine: {unet_step.machine_line()}")
    print(f"# config {args.config} {cfg} size {size} batch {args.batch}; "
          f"median of {args.iters} after {args.warmup} warm-up steps, round-robin")
    masks = [int(k) for k in args.masks.split(",") if k]
    decodings = [d for d in args.decodings.split(",") if d]
    runners = build_runners(build_models(cfg, masks, decodings), args.batch, size)
    timings = unet_step.time_interleaved([(label, run) for label, run, _ in runners],
                                         args.iters, args.warmup)
    print_table(runners, timings)
    return timings


if __name__ == "__main__":
    main()
