"""Times one U-Net training step: fdm (JAX/Flax) vs diffusers UNet2DModel (PyTorch).

A step is forward + backward + Adam update of the eps-MSE loss
mean((net(x_t, t) - eps)^2) with dropout active, on fixed random inputs.
Both networks hold the same weights (diffusers init converted to fdm).
Reported: median / min wall time over --iters steps after --warmup steps
(frameworks timed round-robin, one step each per round), process CPU time,
achieved FLOP/s (XLA cost analysis FLOPs of the JAX step / time, the same
FLOP count for every row) and an XLA f32 matmul peak measured here.

  python benchmarks/unet_step.py --config=cifar10 --batch=8 --iters=10
  python benchmarks/unet_step.py --config=small --batch=16 --breakdown
  python benchmarks/unet_step.py --cores=1 --no_workaround   # XLA's default CPU convs

--breakdown also times forward+backward of single layers (conv3x3, GroupNorm+
swish, attention, ResBlock) at the config's shapes in both frameworks.
"""
import argparse
import os
import statistics
import sys
import time

CONFIGS = {
    "cifar10": dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                    dropout=0.1, num_groups=32, size=32),
    "small": dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                  dropout=0.1, num_groups=32, size=32),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="cifar10")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--frameworks", default="jax,torch,torch_compile",
                   help="comma list of jax, torch, torch_compile, torch_cl (channels_last)")
    p.add_argument("--xla_flags", default="", help="appended to XLA_FLAGS before importing jax")
    p.add_argument("--no_workaround", action="store_true",
                   help="FDM_XLA_CPU_WORKAROUND=0: keep XLA's default (YNNPACK) CPU convolutions")
    p.add_argument("--peak_n", type=int, default=4096, help="matmul size for the peak FLOP/s")
    p.add_argument("--breakdown", action="store_true", help="also time single layers")
    p.add_argument("--dropout", type=float, default=None, help="override the config's dropout")
    p.add_argument("--cores", type=int, default=0,
                   help="pin the process to the first N cores (0: all); both frameworks follow")
    return p.parse_args(argv)


def timeit(fn, iters, warmup):
    """(median wall s, min wall s, median process-CPU s) of fn() (fn blocks until done).

    CPU time (all threads of this process) is robust to other users of the
    machine; wall time is what a user waits for.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), min(wall), statistics.median(cpu)


# ------------------------------------------------------------------ JAX
def jax_peak(n, iters):
    import jax
    import jax.numpy as jnp
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    best = timeit(lambda: f(a, a).block_until_ready(), iters, 2)[1]
    return 2 * n ** 3 / best


def jax_step(kwargs, params, batch, size):
    """Returns (run, flops) for the fdm U-Net built from `kwargs` (see jax_train_step)."""
    from fdm.nn import UNet
    return jax_train_step(UNet(**kwargs), params, batch, size)


def jax_train_step(model, params, batch, size):
    """Returns (run, flops): run() does one jitted, donated train step of `model`.

    model.apply(vars, x, t, train=True, rngs=...) returns ε̂ [B,S,S,3] or an
    object with an `eps` field (the factorized U-Net); flops from XLA's
    cost analysis of the compiled step.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    opt = optax.adam(2e-4)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, 3)), jnp.float32)
    eps = jnp.asarray(rng.standard_normal((batch, size, size, 3)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)

    def step(params, opt_state, key, x, t, eps):
        def loss_fn(p):
            out = model.apply({"params": p}, x, t, train=True, rngs={"dropout": key})
            return jnp.mean(jnp.square(getattr(out, "eps", out) - eps))
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = [params, opt.init(params)]
    fn = jax.jit(step, donate_argnums=(0, 1))
    compiled = fn.lower(*state, jax.random.PRNGKey(0), x, t, eps).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    counter = [0]

    def run():
        counter[0] += 1
        key = jax.random.fold_in(jax.random.PRNGKey(0), counter[0])
        state[0], state[1], loss = compiled(*state, key, x, t, eps)
        loss.block_until_ready()
    run.compiled = compiled
    return run, float(cost.get("flops", 0.0))


# ------------------------------------------------------------------ torch
def torch_step(model, batch, size, compile_model=False, channels_last=False):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(0)
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size).to(memory_format=fmt)
    eps = torch.randn(batch, 3, size, size).to(memory_format=fmt)
    t = torch.randint(0, 1000, (batch,))
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    net = torch.compile(model) if compile_model else model

    def run():
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(net(x, t).sample, eps)
        loss.backward()
        opt.step()
    return run


def make_models(name, dropout=None):
    import diffusers
    import torch
    from fdm.nn.convert_diffusers import (diffusers_config_from_unet_kwargs,
                                          unet_params_from_diffusers)
    cfg = dict(CONFIGS[name])
    size = cfg.pop("size")
    if dropout is not None:
        cfg["dropout"] = dropout
    torch.manual_seed(0)
    tmodel = diffusers.UNet2DModel(**diffusers_config_from_unet_kwargs(cfg, size))
    params = unet_params_from_diffusers(tmodel.state_dict(), cfg, size)
    return cfg, size, tmodel, params


def machine_line():
    import platform
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":")[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cores = len(os.sched_getaffinity(0))
    return (f"{cpu}, {cores} of {os.cpu_count()} cores used, Python {platform.python_version()}, "
            f"load(1m) {load:.2f}")


def pin_cores(num_cores: int) -> None:
    """Pins this process (and the threads it starts later) to the first N cores; 0: all."""
    if num_cores:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:num_cores]))


def main(argv=None):
    args = parse_args(argv)
    pin_cores(args.cores)
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    if args.no_workaround:
        os.environ["FDM_XLA_CPU_WORKAROUND"] = "0"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fdm.nn  # noqa: F401  (first: may add the XLA:CPU conv flag before jax starts)
    import jax
    import torch
    torch.set_num_threads(len(os.sched_getaffinity(0)))

    cfg, size, tmodel, params = make_models(args.config, args.dropout)
    print(f"# machine: {machine_line()}")
    print(f"# jax {jax.__version__}, torch {torch.__version__}, XLA_FLAGS="
          f"{os.environ.get('XLA_FLAGS', '')!r}")
    print(f"# config {args.config} {cfg} size {size} batch {args.batch}; "
          f"median/min of {args.iters} after {args.warmup} warm-up steps")
    peak = jax_peak(args.peak_n, 5)
    print(f"# XLA f32 matmul peak ({args.peak_n}^3): {peak / 1e9:.0f} GFLOP/s")

    runners, flops = build_runners(args, cfg, size, params)
    rows = time_interleaved(runners, args.iters, args.warmup)
    print_table(rows, flops, peak)
    if args.breakdown:
        run_breakdown(cfg, size, args.batch, args.iters, args.warmup)
    return rows


def build_runners(args, cfg, size, params):
    """[(label, run)] for the requested frameworks (compiled, first step done), flops."""
    runners, flops = [], 0.0
    frameworks = args.frameworks.split(",")
    if "jax" in frameworks:
        t0 = time.perf_counter()
        run, flops = jax_step(cfg, params, args.batch, size)
        print(f"# jax compile {time.perf_counter() - t0:.1f}s, step GFLOP {flops / 1e9:.1f}")
        runners.append(("jax (jit, donated)", run))
    torch_rows = {"torch": ("torch eager", {}),
                  "torch_cl": ("torch eager channels_last", dict(channels_last=True)),
                  "torch_compile": ("torch.compile", dict(compile_model=True))}
    for key in ("torch", "torch_cl", "torch_compile"):
        if key in frameworks:
            label, kw = torch_rows[key]
            run = torch_step(make_models(args.config, args.dropout)[2], args.batch, size, **kw)
            t0 = time.perf_counter()
            run()
            print(f"# {label}: first step {time.perf_counter() - t0:.1f}s")
            runners.append((label, run))
    return runners, flops


def time_interleaved(runners, iters, warmup):
    """Times the runners round-robin (one step each per round), so that a busy
    machine disturbs all of them alike. Returns [(label, median, min, cpu median)]."""
    for _, run in runners:
        for _ in range(warmup):
            run()
    wall = {label: [] for label, _ in runners}
    cpu = {label: [] for label, _ in runners}
    for _ in range(iters):
        for label, run in runners:
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            wall[label].append(time.perf_counter() - t0)
            cpu[label].append(time.process_time() - c0)
    return [(label, statistics.median(wall[label]), min(wall[label]),
             statistics.median(cpu[label])) for label, _ in runners]


def print_table(rows, flops, peak):
    print("| framework | median ms | min ms | CPU ms (median) | GFLOP/s (median) | % of peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, med, best, cpu in rows:
        gf = flops / med / 1e9 if flops else float("nan")
        print(f"| {name} | {med * 1e3:.0f} | {best * 1e3:.0f} | {cpu * 1e3:.0f} | {gf:.1f} | "
              f"{100 * gf * 1e9 / peak:.0f} |")
    by = {r[0]: r[1] for r in rows}
    if "jax (jit, donated)" in by and "torch eager" in by:
        print(f"# JAX / torch eager time ratio: {by['jax (jit, donated)'] / by['torch eager']:.2f}")
    if "jax (jit, donated)" in by and "torch.compile" in by:
        print(f"# JAX / torch.compile time ratio: "
              f"{by['jax (jit, donated)'] / by['torch.compile']:.2f}")


# ------------------------------------------------------------------ breakdown
def _layer_cases(cfg, size, batch):
    """(name, fdm module, torch module, NHWC input shape) at the config's shapes."""
    import torch
    from diffusers.models.attention_processor import Attention as TAttention
    from diffusers.models.resnet import ResnetBlock2D
    from fdm.nn import layers
    g, cases = cfg["num_groups"], []
    for lvl, mult in enumerate(cfg["ch_mult"]):
        c, s = cfg["ch"] * mult, size // 2 ** lvl
        shape = (batch, s, s, c)
        cases.append((f"conv3x3 {s}x{s}x{c}", layers.conv3x3(c, "conv", None),
                      torch.nn.Conv2d(c, c, 3, padding=1), shape))
        cases.append((f"groupnorm+swish {s}x{s}x{c}", _GNSwish(g),
                      torch.nn.Sequential(torch.nn.GroupNorm(g, c, eps=1e-6), torch.nn.SiLU()),
                      shape))
        if s in cfg["attn_resolutions"]:
            cases.append((f"attention {s}x{s}x{c}", layers.Attention(g),
                          TAttention(c, heads=1, dim_head=c, eps=1e-6, norm_num_groups=g,
                                     residual_connection=True, bias=True, upcast_softmax=True),
                          shape))
        cases.append((f"resblock {s}x{s}x{c}", _ResNoT(c, g),
                      _TorchResNoT(ResnetBlock2D(in_channels=c, out_channels=c, temb_channels=None,
                                                 eps=1e-6, groups=g)), shape))
    return cases


def _GNSwish(g):
    import flax.linen as nn
    from fdm.nn import layers

    class GNSwish(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.swish(layers.GroupNorm(g, 1e-6)(x))
    return GNSwish()


def _ResNoT(c, g):
    import flax.linen as nn
    import jax.numpy as jnp
    from fdm.nn import layers

    class ResNoT(nn.Module):
        @nn.compact
        def __call__(self, x):
            return layers.ResBlock(c, num_groups=g)(x, jnp.zeros((x.shape[0], 4 * c)))
    return ResNoT()


class _TorchResNoT:
    def __init__(self, block):
        self.block = block

    def __call__(self, x):
        return self.block(x, None)

    def parameters(self):
        return self.block.parameters()


def _time_jax_layer(module, shape, iters, warmup):
    import jax
    import jax.numpy as jnp
    import numpy as np
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    shapes = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x), x)
    params = jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), shapes)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(module.apply(p, x) ** 2), argnums=(0, 1)))
    return timeit(lambda: jax.block_until_ready(grad(params, x)), iters, warmup)


def _time_torch_layer(module, shape, iters, warmup):
    import torch
    b, h, w, c = shape
    x = torch.randn(b, c, h, w, requires_grad=True)

    def run():
        for p in module.parameters():
            p.grad = None
        x.grad = None
        (module(x) ** 2).sum().backward()
    return timeit(run, iters, warmup)


def run_breakdown(cfg, size, batch, iters, warmup):
    """Prints forward+backward median ms of single layers in both frameworks."""
    print(f"\n| layer (fwd+bwd, batch {batch}) | jax ms | torch ms | jax CPU ms | torch CPU ms "
          "| jax/torch (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, fmod, tmod, shape in _layer_cases(cfg, size, batch):
        tj = _time_jax_layer(fmod, shape, iters, warmup)
        tt = _time_torch_layer(tmod, shape, iters, warmup)
        print(f"| {name} | {tj[0] * 1e3:.1f} | {tt[0] * 1e3:.1f} | {tj[2] * 1e3:.1f} | "
              f"{tt[2] * 1e3:.1f} | {tj[2] / tt[2]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
