"""Times one Locally Masked PixelCNN training step at the paper's width: fdm (JAX/Flax, both
LMConv implementations) against a PyTorch port built on the authors' layer (Fig. 5.4:
`F.unfold` im2col, mask, matmul; autograd backward).

A step is forward + backward + Adam update of a surrogate loss mean(out²) on the network
output (the same in both frameworks; the mixture likelihood adds < 1 % of the FLOPs) under
one S-curve order, on fixed random inputs. Both networks hold the same weights (the flax
init copied into torch) and the script first checks that their outputs agree. Rows:
  jax shifted   k² per-pixel-masked matmuls (no k²-sized tensor; fdm's default)
  jax im2col    the k² shifted views stacked -> mask -> one matmul (Alg. 1)
  torch unfold  the PyTorch port (eager), single-threaded like the others with --cores=1
Reported: median / min wall time, process CPU time, the step's FLOPs from XLA's cost
analysis (of the first jax row) beside the analytic count 3 x Σ_convs 2 B H W k² C_in
C_out (+ the 1x1 layers), and GFLOP/s. Frameworks are timed round-robin
(`unet_step.time_interleaved`).

  python benchmarks/lmconv_step.py --batch=4 --iters=3 --cores=1
  python benchmarks/lmconv_step.py --features=32 --num_res=1 --size=8 --batch=32   # rectangles8
"""
import argparse
import os
import sys
import time

import unet_step


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", type=int, default=160, help="F (paper: 160)")
    p.add_argument("--num_res", type=int, default=5, help="blocks per stage (paper: 5)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="paper: 32")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--frameworks", default="shifted,im2col,torch",
                   help="comma list of shifted, im2col (jax) and torch")
    p.add_argument("--cores", type=int, default=0, help="pin to the first N cores (0: all)")
    return p.parse_args(argv)


def network(args, method):
    """The Locally Masked PixelCNN of the arguments (10 logistics) with LMConv `method`."""
    from fdm.autoregressive.logistic_mixture import num_params
    from fdm.nn.lmconv_net import LocallyMaskedPixelCNN
    return LocallyMaskedPixelCNN(out_channels=num_params(args.channels, 10),
                                 features=args.features, num_res=args.num_res, method=method)


def build_jax(args, method="im2col"):
    """(flax module, masks of S-curve order 0, params); the params fit either method."""
    import jax
    import jax.numpy as jnp
    from fdm.autoregressive import orders
    from fdm.nn.lmconv import masks_for_order
    net = network(args, method)
    masks = masks_for_order(orders.s_curve(args.size, args.size), args.size, args.size, 3, 2)
    x = jnp.zeros((1, args.size, args.size, args.channels))
    params = jax.jit(net.init)(jax.random.PRNGKey(0), x, masks)["params"]
    return net, masks, params


def inputs(args):
    import numpy as np
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (args.batch, args.size, args.size, args.channels)).astype("f4")


def jax_runner(args, method, params, masks):
    """(run, flops): run() does one jitted, donated train step (on a copy of params)."""
    import jax
    import jax.numpy as jnp
    import optax
    net = network(args, method)
    params = jax.tree_util.tree_map(jnp.copy, params)
    opt = optax.adam(2e-4)
    x = jnp.asarray(inputs(args))

    def step(params, opt_state, x, masks):
        loss, grads = jax.value_and_grad(
            lambda p: jnp.mean(jnp.square(net.apply({"params": p}, x, masks))))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = [params, opt.init(params)]
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*state, x, masks).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost

    def run():
        state[0], state[1], loss = compiled(*state, x, masks)
        loss.block_until_ready()
    return run, float(cost.get("flops", 0.0))


def analytic_flops(args):
    """3 x 2 x the multiply-adds of every LMConv and 1x1 layer (backward = 2 forwards)."""
    from fdm.autoregressive.logistic_mixture import num_params
    b, s, f, r = args.batch, args.size, args.features, args.num_res
    down = r + 2 * (r + 1)
    per_pixel = (9 * (args.channels + 1) * f                      # input layer (mask A)
                 + (3 * r + down) * 9 * (2 * f * f + 2 * f * 2 * f)   # conv_in, conv_out
                 + down * 2 * f * f                               # skip nin (down pass)
                 + 4 * 9 * f * f                                  # dilated LMConvs
                 + f * num_params(args.channels, 10))             # output nin
    return 3 * 2 * b * s * s * per_pixel


# ------------------------------------------------------------------ torch port
def torch_network(args, params, masks):
    """The same network in PyTorch (NCHW) with the flax weights; returns (module, masks)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    def tensor(a, perm=None):
        a = np.asarray(a)
        return torch.tensor(np.ascontiguousarray(a if perm is None else np.transpose(a, perm)))

    class LMConv(torch.nn.Module):
        def __init__(self, p, dilation=1):
            super().__init__()
            self.weight = torch.nn.Parameter(tensor(p["kernel"], (3, 2, 0, 1)))   # OIHW
            self.bias, self.dilation = torch.nn.Parameter(tensor(p["bias"])), dilation

        def forward(self, x, mask):
            c_out, c_in, k, _ = self.weight.shape
            n, _, h, w = x.shape
            unf = F.unfold(x, (k, k), dilation=self.dilation, padding=self.dilation * (k // 2))
            unf = (unf.view(n * c_in, k * k, h * w) * mask).view(unf.shape)
            y = self.weight.view(c_out, -1).matmul(unf) + self.bias[None, :, None]
            return y.view(n, c_out, h, w)

    def dense(p):
        layer = torch.nn.Linear(*np.asarray(p["kernel"]).shape)
        layer.weight.data, layer.bias.data = tensor(p["kernel"], (1, 0)), tensor(p["bias"])
        return layer

    def pono(x):
        return (x - x.mean(1, keepdim=True)) / (x.var(1, keepdim=True) + 1e-5).sqrt()

    def concat_elu(x):
        return F.elu(torch.cat([x, -x], 1))

    def nin(layer, x):
        return layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class Block(torch.nn.Module):
        def __init__(self, p):
            super().__init__()
            self.conv_in, self.conv_out = LMConv(p["conv_in"]), LMConv(p["conv_out"])
            self.nin_skip = dense(p["nin_skip"]) if "nin_skip" in p else None

        def forward(self, x, mask, skip=None):
            h = pono(self.conv_in(concat_elu(x), mask))
            if skip is not None:
                h = h + nin(self.nin_skip, concat_elu(skip))
            a, b = torch.chunk(self.conv_out(concat_elu(h), mask), 2, dim=1)
            return x + pono(a) * torch.sigmoid(b)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.init = LMConv(params["conv_init"])
            self.blocks = torch.nn.ModuleDict({k: Block(v) for k, v in params.items()
                                               if k.startswith(("up", "down"))
                                               and not k.endswith("dilated")})
            self.dilated = torch.nn.ModuleDict({k: LMConv(v, 2) for k, v in params.items()
                                                if k.endswith("dilated")})
            self.out = dense(params["nin_out"])

        def forward(self, x, m):
            x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
            us = [pono(self.init(x, m[0]))]
            for stage in range(3):
                for i in range(args.num_res):
                    us.append(self.blocks[f"up{stage}_{i}"](us[-1], m[1]))
                if stage < 2:
                    us.append(pono(self.dilated[f"up{stage}_dilated"](us[-1], m[2])))
            u = us.pop()
            for stage, depth in enumerate((args.num_res, args.num_res + 1, args.num_res + 1)):
                for i in range(depth):
                    u = self.blocks[f"down{stage}_{i}"](u, m[1], us.pop())
                if stage < 2:
                    u = pono(self.dilated[f"down{stage}_dilated"](u, m[2]))
            return nin(self.out, F.elu(u))

    tmasks = [torch.tensor(np.asarray(getattr(masks, k)).reshape(9, -1))
              for k in ("first", "later", "dilated")]
    return Net(), tmasks


def torch_runner(args, params, masks):
    import numpy as np
    import torch
    net, tmasks = torch_network(args, params, masks)
    x = torch.tensor(np.transpose(inputs(args), (0, 3, 1, 2)).copy())
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = net(x, tmasks).pow(2).mean()
        loss.backward()
        opt.step()
    return run, net, tmasks


def check_port(args, net_jax, params, masks, net_torch, tmasks):
    """Max |difference| of the two networks' outputs on one random image."""
    import numpy as np
    import torch
    x = inputs(args)[:1]
    ours = np.asarray(net_jax.apply({"params": params}, x, masks))
    with torch.no_grad():
        theirs = net_torch(torch.tensor(np.transpose(x, (0, 3, 1, 2)).copy()), tmasks)
    return float(np.abs(ours - np.transpose(theirs.numpy(), (0, 2, 3, 1))).max())


def main(argv=None):
    args = parse_args(argv)
    unet_step.pin_cores(args.cores)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fdm.nn  # noqa: F401  (first: may add the XLA:CPU conv flag before jax starts)
    import jax
    import torch
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    print(f"# machine: {unet_step.machine_line()}")
    print(f"# jax {jax.__version__}, torch {torch.__version__}; F={args.features} "
          f"R={args.num_res} {args.size}x{args.size}x{args.channels} batch {args.batch}; "
          f"median/min of {args.iters} after {args.warmup} warm-up steps")
    frameworks = args.frameworks.split(",")
    net_jax, masks, params = build_jax(args)
    runners, flops = [], 0.0
    for method in ("shifted", "im2col"):
        if method in frameworks:
            t0 = time.perf_counter()
            run, cost = jax_runner(args, method, params, masks)
            flops = flops or cost
            print(f"# jax {method}: compile {time.perf_counter() - t0:.1f}s, XLA GFLOP "
                  f"{cost / 1e9:.1f}")
            runners.append((f"jax {method}", run))
    if "torch" in frameworks:
        run, net_torch, tmasks = torch_runner(args, params, masks)
        print(f"# torch port max |out - jax out|: "
              f"{check_port(args, net_jax, params, masks, net_torch, tmasks):.2e}")
        runners.append(("torch unfold (eager)", run))
    print(f"# analytic GFLOP per step {analytic_flops(args) / 1e9:.1f}; params "
          f"{sum(p.size for p in jax.tree_util.tree_leaves(params)):,}")
    rows = unet_step.time_interleaved(runners, args.iters, args.warmup)
    flops = flops or analytic_flops(args)
    print("| implementation | median ms | min ms | CPU ms (median) | GFLOP/s (median wall) |")
    print("|---|---:|---:|---:|---:|")
    for name, med, best, cpu in rows:
        print(f"| {name} | {med * 1e3:.0f} | {best * 1e3:.0f} | {cpu * 1e3:.0f} | "
              f"{flops / med / 1e9:.1f} |")
    return rows


if __name__ == "__main__":
    main()
