"""FLOPs and memory of one training step of each paper configuration, compiled, not run.

For each paper configuration at the paper's per-device batch (PAPER below) the family and
the trainer's step (`fdm.train.trainer.make_train_step`: loss, gradients, Adam, EMA, the
state donated) are built on abstract inputs (`jax.ShapeDtypeStruct`: no parameter or
optimizer state is allocated), compiled for one device of the default backend, and reported:

  GFLOP/step  XLA's cost analysis of the compiled step (`compiled.cost_analysis()`)
  state GiB   the train state (params, EMA, Adam moments; all float32): the step's arguments
  act. GiB    the activations autodiff keeps for the backward pass: the residuals of the
              training loss's VJP (`jax.ad_checkpoint` saved residuals; the parameters
              are not counted again); backend-independent, what model.dtype and
              model.remat change
  recomp. GiB the activations of the largest rematerialised segment (`jax.checkpoint`:
              a ResBlock, a decoder branch, a NeRF field chunk, bfloat16 GroupNorm
              internals), held while the backward pass recomputes it
  est. GiB    state + gradients (float32, one parameter-sized tree) + act. + recomp.:
              what an accelerator needs at the peak, less XLA's transient workspace
  fits        the smallest accelerator memory (HBM_GB) holding 1.1 x est. GiB
  CPU GiB     `compiled.memory_analysis()` of the compiling backend: arguments + outputs
              - aliased (the donated state is updated in place) + temporaries

for model.dtype in --dtypes x model.remat in --remats (the values the family accepts:
"branch" is FDM's only, "chunk" NeRF lifting's, its field rematerialised per model.remat_chunk
rays). A configuration whose step is the same program as an earlier
one (equal model, diffusion and train sections, image size; the batch is in the train
section: cub128 and flowers128) reuses its numbers.

The CPU column is XLA:CPU's buffer assignment: it approximates but does not equal a GPU's
or TPU's, and on this jaxlib it does not follow remat or bfloat16 (BENCHMARKS.md "Memory
and FLOPs of the paper configurations"); est. GiB is the number to plan an accelerator with.

  python benchmarks/memory_flops.py                                  # every config
  python benchmarks/memory_flops.py --configs=ffhq,lego --remats=none,resblock
  python benchmarks/memory_flops.py --compile=0     # minutes, not hours: no CPU GiB column,
                                                     # FLOPs of the uncompiled program

--fast_compile (default on) sets XLA:CPU's LLVM optimisation level to 0 (as the test suite
does): it does not change the HLO passes, buffer assignment or cost analysis (checked on
the shapes step: the same numbers to the byte, BENCHMARKS.md).
"""
import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (config module, variant, per-device batch, where that batch comes from)
PAPER = {
    "ffhq": ("ffhq", "", 16, "batch 128 on 8 V100 32GB (seed 000 sec. 2.4)"),
    "ffhq128": ("ffhq", "128", 4, "batch 128 on 32 V100 32GB"),
    "imagenet64": ("imagenet64", "", 16, "batch 512 on 32 V100 32GB"),
    "flowers128": ("flowers", "128", 4, "batch 128 on 32 V100 32GB"),
    "cub128": ("cub", "128", 4, "batch 128 on 32 V100 32GB"),
    "lego": ("lego", "", 4, "4 views x 1024 rays = NeRF's 4096 rays, one GPU (sec. 3.4)"),
}
GIB = 2.0 ** 30
# Accelerator memory sizes (GB as sold) for the "fits" column, and the headroom it leaves
# above est. GiB for XLA's workspace and fragmentation.
HBM_GB = (16, 24, 32, 40, 80, 141)
HEADROOM = 1.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=",".join(PAPER), help=f"comma list of {list(PAPER)}")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--remats", default="none,resblock,branch,chunk",
                   help="model.remat values; each config gets those its family accepts")
    p.add_argument("--compile", type=int, default=1,
                   help="1: compile (FLOPs of the compiled step, CPU GiB); 0: lower only")
    p.add_argument("--fast_compile", type=int, default=1,
                   help="1: XLA:CPU LLVM optimisation level 0 (faster compile, same analysis)")
    return p.parse_args(argv)


def paper_config(name: str):
    """(the config of `name` at its per-device batch, that batch)."""
    import importlib
    module, variant, batch, _ = PAPER[name]
    get_config = importlib.import_module(f"configs.{module}").get_config
    c = get_config(variant) if variant else get_config()
    c.train.batch_size = batch
    return c, batch


def abstract_batch(config, batch: int) -> dict:
    """ShapeDtypeStructs of one training batch (`fdm.models.base` batch keys)."""
    import jax
    import numpy as np
    size = int(config.data.image_size)
    out = {"image": jax.ShapeDtypeStruct((batch, size, size, 3), np.float32)}
    if config.model.family == "nerf_lifting":
        out["c2w"] = jax.ShapeDtypeStruct((batch, 4, 4), np.float32)
        out["index"] = jax.ShapeDtypeStruct((batch,), np.int32)
    elif int(config.model.num_classes):
        out["label"] = jax.ShapeDtypeStruct((batch,), np.int32)
    return out


def residual_bytes(fn, *args) -> int:
    """Bytes of the residuals the VJP of fn(*args) keeps, its arguments not counted."""
    import numpy as np
    from jax._src.ad_checkpoint import saved_residuals  # print_saved_residuals' data
    return sum(int(np.prod(aval.shape)) * aval.dtype.itemsize
               for aval, source in saved_residuals(fn, *args)
               if not source.startswith("from the argument"))


def segment_bytes(jaxpr) -> int:
    """The activations of the largest rematerialised segment (a `jax.checkpoint` call) in
    `jaxpr` or its sub-jaxprs: its own residuals plus its largest nested segment's."""
    import jax
    from jax._src import core
    from jax._src.ad_checkpoint import remat_p
    best = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive is remat_p:
            inner = eqn.params["jaxpr"]
            fn = lambda *a, inner=inner: core.eval_jaxpr(inner, [], *a)
            args = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in inner.invars]
            best = max(best, residual_bytes(fn, *args) + segment_bytes(inner))
        else:
            best = max([best] + [segment_bytes(sub) for sub in core.jaxprs_in_params(eqn.params)])
    return best


def activation_bytes(family, params, batch_spec) -> tuple[int, int]:
    """(residual bytes of the VJP of the family's training loss, the parameters not
    counted; bytes of its largest rematerialised segment), at abstract params and a
    zero batch."""
    import jax
    import jax.numpy as jnp
    from fdm.models.base import with_frozen
    batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in batch_spec.items()}
    stats, frozen = family.init_stats(), family.frozen_params()
    loss = lambda p: family.train_loss(with_frozen(p, frozen), batch, jax.random.PRNGKey(0),
                                       jnp.zeros((), jnp.int32), stats)[0].loss
    return residual_bytes(loss, params), segment_bytes(jax.make_jaxpr(loss)(params).jaxpr)


def measure_step(config, batch: int, compile_step: bool) -> dict:
    """The numbers of the module docstring for `config` on one device."""
    import jax
    import numpy as np
    from fdm.models import get_family
    from fdm.train import mesh as mesh_lib
    from fdm.train.trainer import abstract_state, make_train_step
    family = get_family(config)
    tx = family.optimizer()
    mesh = mesh_lib.make_mesh(jax.devices()[:1])
    batch_spec = abstract_batch(config, batch)
    _, target = abstract_state(family, tx, int(config.train.seed), batch_spec, mesh)
    shardings = jax.tree.map(lambda t: t.sharding, target)
    step = make_train_step(family, tx, float(config.train.ema_decay), mesh, shardings,
                           family.frozen_params())
    nbytes = lambda tree: sum(int(np.prod(x.shape)) * x.dtype.itemsize
                              for x in jax.tree.leaves(tree))
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(target.params))
    state, grads = nbytes(target), nbytes(target.params)
    act, recomp = activation_bytes(family, target.params, batch_spec)
    out = dict(params_m=params / 1e6, state_gib=state / GIB, act_gib=act / GIB,
               recomp_gib=recomp / GIB, est_gib=(state + grads + act + recomp) / GIB)
    lowered = jax.jit(step, donate_argnums=0).lower(target, batch_spec)
    if not compile_step:
        return {**out, "gflop": _flops(lowered.cost_analysis()) / 1e9, "cpu_gib": float("nan")}
    compiled = lowered.compile()
    mem = compiled.memory_analysis()
    cpu = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
           + mem.temp_size_in_bytes)
    return {**out, "gflop": _flops(compiled.cost_analysis()) / 1e9, "cpu_gib": cpu / GIB}


def _flops(cost) -> float:
    """The 'flops' entry of a cost analysis (a dict, or a list of one in older jax)."""
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


def accepted(config, key: str, value: str) -> bool:
    """Whether the family of `config` reads model.`key` and accepts `value` (its rules)."""
    from fdm.models import family_class
    rule = family_class(config.model.family).config_rules.get(f"model.{key}")
    return key in config.model and rule is not None and rule.ok(value, config)


def step_key(config) -> str:
    """What determines the compiled step: the model, diffusion and train sections and the
    image size."""
    return repr((config.model.to_dict(), config.diffusion.to_dict(), config.train.to_dict(),
                 config.data.image_size))


def measure(name: str, dtype: str, remat: str, compile_step: bool, done: dict) -> dict:
    """The result row of `name` at (dtype, remat); `done` maps step_key -> an earlier
    row of the same step, reused (and is filled)."""
    c, batch = paper_config(name)
    if "dtype" in c.model:
        c.model.dtype, c.model.remat = dtype, remat
    key = step_key(c)
    if key in done:
        print(f"# {name} {dtype} {remat}: the step of {done[key]['config']}", flush=True)
        return {**done[key], "config": name}
    t0 = time.perf_counter()
    row = dict(config=name, batch=batch, dtype=dtype, remat=remat,
               **measure_step(c, batch, compile_step))
    row["seconds"] = time.perf_counter() - t0
    print(f"# {name} {dtype} {remat}: {row}", flush=True)
    done[key] = row
    return row


def rows_of(name: str, dtypes, remats, compile_step: bool, done: dict):
    """Yields a result row per (dtype, remat) the family of `name` accepts (float32
    without remat only when it reads neither key)."""
    probe, _ = paper_config(name)
    if "dtype" not in probe.model:
        print(f"# {name}: its family does not read model.dtype / model.remat; "
              "float32 without remat only", flush=True)
        yield measure(name, "float32", "none", compile_step, done)
        return
    for dtype in dtypes:
        for remat in remats:
            if accepted(probe, "dtype", dtype) and accepted(probe, "remat", remat):
                yield measure(name, dtype, remat, compile_step, done)


def fits(gib: float) -> str:
    """The smallest accelerator memory size of HBM_GB that holds HEADROOM x `gib`."""
    need_gb = HEADROOM * gib * GIB / 1e9
    return next((f"{gb} GB" for gb in HBM_GB if need_gb <= gb), f"> {HBM_GB[-1]} GB")


def print_table(rows) -> None:
    base = {}
    print("| config | batch/device | params | model.dtype | model.remat | GFLOP/step | "
          "state GiB | act. GiB | recomp. GiB | est. GiB | est. vs float32, none | fits | "
          "CPU GiB |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        ref = base.setdefault(r["config"], r["est_gib"])
        print(f"| {r['config']} | {r['batch']} | {r['params_m']:.1f}M | {r['dtype']} | "
              f"{r['remat']} | {r['gflop']:.0f} | {r['state_gib']:.2f} | {r['act_gib']:.2f} | "
              f"{r['recomp_gib']:.2f} | {r['est_gib']:.2f} | {r['est_gib'] / ref:.2f}x | "
              f"{fits(r['est_gib'])} | {r['cpu_gib']:.1f} |")


def main(argv=None):
    args = parse_args(argv)
    if args.fast_compile:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_backend_optimization_level=0").strip()
    os.chdir(REPO)                     # configs name data paths relative to the repo
    sys.path.insert(0, REPO)
    import fdm.nn  # noqa: F401  (first: may add the XLA:CPU conv flag before jax starts)
    import jax
    print(f"# backend {jax.default_backend()}: {jax.devices()[0].device_kind}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    names = [n for n in args.configs.split(",") if n]
    unknown = sorted(set(names) - set(PAPER))
    if unknown:
        raise SystemExit(f"unknown --configs {unknown}; use some of {list(PAPER)}")
    dtypes = [d for d in args.dtypes.split(",") if d]
    remats = [r for r in args.remats.split(",") if r]
    done = {}
    rows = [row for name in names
            for row in rows_of(name, dtypes, remats, bool(args.compile), done)]
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
