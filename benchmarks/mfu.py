"""Model FLOP utilisation of one training step on the default device.

For each configuration (a paper configuration of `memory_flops.PAPER` at its per-device
batch, or any `module:variant` of configs/ with --batch) the trainer's step
(`fdm.train.trainer.make_train_step`: loss, gradients, Adam, EMA, the state donated) runs
on real, device-resident state for --steps timed steps after --warmup. Reported: the
step's FLOPs (XLA's cost analysis of the compiled step), the median step time, achieved
FLOP/s and MFU = achieved / the device's dense peak for model.dtype (PEAK_TFLOPS below;
none on a CPU or an unknown device, where only FLOP/s is printed).

  python benchmarks/mfu.py --configs=ffhq --dtype=bfloat16            # FDM 64^2 (the issue's)
  python benchmarks/mfu.py --configs=ffhq,lego --dtype=bfloat16 --remat=resblock
  python benchmarks/mfu.py --configs=ddpm:tiny --batch=8 --steps=3     # seconds on a CPU

Loops (the samplers' chunks, lifting's remat chunks) are counted once by the cost
analysis (BENCHMARKS.md), so MFU there is a lower bound; the training steps of the
U-Net families contain none.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import memory_flops  # noqa: E402  (PAPER, paper_config, abstract_batch, REPO)

# device_kind substring -> dense peak TFLOP/s per chip (vendor data sheets) by dtype.
PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.0, "float32": 67.0},
    "H100": {"bfloat16": 989.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "float32": 19.5},
    "V100": {"bfloat16": 125.0, "float32": 15.7},
    "TPU v5e": {"bfloat16": 197.0, "float32": 197.0},
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="ffhq",
                   help=f"comma list of {list(memory_flops.PAPER)} or module:variant")
    p.add_argument("--batch", type=int, default=0, help="per-device batch (0: the paper's)")
    p.add_argument("--dtype", default="bfloat16", help="model.dtype")
    p.add_argument("--remat", default="none", help="model.remat")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    return p.parse_args(argv)


def load_config(name: str, batch: int, dtype: str, remat: str):
    """(config, per-device batch) of a PAPER name or configs/<module>.py:<variant>."""
    import importlib
    if name in memory_flops.PAPER:
        c, paper_batch = memory_flops.paper_config(name)
    else:
        module, _, variant = name.partition(":")
        if not os.path.exists(os.path.join(memory_flops.REPO, "configs", f"{module}.py")):
            raise SystemExit(f"unknown config {name!r}; use one of "
                             f"{list(memory_flops.PAPER)} or module:variant of configs/")
        get_config = importlib.import_module(f"configs.{module}").get_config
        c = get_config(variant) if variant else get_config()
        paper_batch = int(c.train.batch_size)
    if "dtype" in c.model:
        c.model.dtype, c.model.remat = dtype, remat
    batch = batch or paper_batch
    c.train.batch_size = batch
    return c, batch


def concrete_batch(spec: dict) -> dict:
    """Arrays for the ShapeDtypeStructs of `memory_flops.abstract_batch` (cameras at the
    identity, images zero)."""
    import jax.numpy as jnp
    out = {k: jnp.zeros(v.shape, v.dtype) for k, v in spec.items()}
    if "c2w" in out:
        out["c2w"] = jnp.broadcast_to(jnp.eye(4, dtype=jnp.float32), spec["c2w"].shape)
    return out


def measure(config, batch_size: int, steps: int, warmup: int) -> dict:
    """FLOPs, median step seconds and FLOP/s of the trainer's step for `config`."""
    import jax
    from fdm.models import get_family
    from fdm.train import mesh as mesh_lib
    from fdm.train.trainer import abstract_state, make_train_step
    family = get_family(config)
    tx = family.optimizer()
    mesh = mesh_lib.make_mesh(jax.devices()[:1])
    spec = memory_flops.abstract_batch(config, batch_size)
    batch = concrete_batch(spec)
    init_fn, target = abstract_state(family, tx, int(config.train.seed), spec, mesh)
    shardings = jax.tree.map(lambda t: t.sharding, target)
    state = jax.jit(init_fn, out_shardings=shardings)(batch)
    step = make_train_step(family, tx, float(config.train.ema_decay), mesh, shardings,
                           family.frozen_params())
    flops = memory_flops._flops(jax.jit(step).lower(state, batch).compile().cost_analysis())
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return dict(gflop=flops / 1e9, step_s=seconds, tflops=flops / seconds / 1e12)


def peak_tflops(device_kind: str, dtype: str):
    """The dense peak of PEAK_TFLOPS for this device and dtype, or None."""
    return next((peaks.get(dtype) for kind, peaks in PEAK_TFLOPS.items()
                 if kind.lower() in device_kind.lower()), None)


def main(argv=None):
    args = parse_args(argv)
    os.chdir(memory_flops.REPO)
    sys.path.insert(0, memory_flops.REPO)
    import fdm.nn  # noqa: F401  (first: may add the XLA:CPU conv flag before jax starts)
    import jax
    kind = jax.devices()[0].device_kind
    peak = peak_tflops(kind, args.dtype)
    print(f"# {jax.default_backend()} {kind}: peak {peak or 'unknown'} TFLOP/s ({args.dtype})")
    print("| config | batch/device | model.dtype | model.remat | GFLOP/step | step ms | "
          "TFLOP/s | MFU |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    rows = []
    for name in [n for n in args.configs.split(",") if n]:
        config, batch = load_config(name, args.batch, args.dtype, args.remat)
        row = dict(config=name, batch=batch, **measure(config, batch, args.steps, args.warmup))
        row["mfu"] = row["tflops"] / peak if peak else float("nan")
        rows.append(row)
        print(f"| {name} | {batch} | {args.dtype} | {args.remat} | {row['gflop']:.0f} | "
              f"{row['step_s'] * 1e3:.1f} | {row['tflops']:.3f} | "
              f"{'%.1f %%' % (100 * row['mfu']) if peak else '-'} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
