"""Sampling throughput: images/s of DDIM and ancestral sampling, fdm (JAX) vs diffusers.

For each case (a paper configuration's network at an image size, CASES below) and each
sampler (ddimN: N DDIM steps, eta = 0; ancestral: all T steps), one batch of --batch
images is sampled from the same x_T:

  fdm         the family's own sampler (`DDPMFamily.sample_batch`: the whole loop jitted,
              chunks of 100 steps on device), the first call (compilation) timed apart
  diffusers   `DDIMPipeline` / `DDPMPipeline` with a `UNet2DModel` holding the same weights
              (converted with `fdm.nn.convert_diffusers`), torch eager under no_grad,
              DDPM cases only (the factorized U-Net has no diffusers counterpart)

Reported per row: seconds per batch (median of --iters after the first call; wall and
process CPU), images/s, the ratio to diffusers, the largest pixel difference of the two
frameworks' DDIM images from the same x_T next to that of fdm's own images from x_T and
x_T + 1e-6 z (a parity check: an untrained network's trajectory is chaotic, `ddim_parity`),
and the time the FID sample (--fid_samples, 50K as in the papers) takes at that rate.

  python benchmarks/sampling.py --cases=tiny32 --samplers=ddim50,ddim100,ancestral --batch=16
  python benchmarks/sampling.py --cases=ddpm32 --samplers=ddim50 --batch=8 --cores=1
  python benchmarks/sampling.py --cases=ddpm32,fdm32,ddpm64,fdm64 --batch=256   # an accelerator
"""
import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import unet_step  # noqa: E402  (machine_line, pin_cores)

# name: (config module, variant, overrides, what it is)
CASES = {
    "tiny32": ("ddpm", "tiny", {"data.image_size": 32}, "the CPU test U-Net (ch 32, 1-2-2)"),
    "ddpm32": ("ddpm", "", {}, "DDPM CIFAR-10 U-Net (35.7M)"),
    "ddpm64": ("ddpm", "", {"data.image_size": 64}, "the CIFAR-10 U-Net at 64x64"),
    "fdm32": ("ffhq", "", {"data.image_size": 32}, "FDM FFHQ network at 32x32"),
    "fdm64": ("ffhq", "", {}, "FDM FFHQ-64 (K = 3 masks)"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="tiny32", help=f"comma list of {list(CASES)}")
    p.add_argument("--samplers", default="ddim50,ddim100,ancestral",
                   help="comma list of ddimN (N DDIM steps) and ancestral (T steps)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=1, help="timed calls after the first")
    p.add_argument("--frameworks", default="fdm,diffusers")
    p.add_argument("--dtype", default="float32", help="model.dtype of the fdm network")
    p.add_argument("--fid_samples", type=int, default=50_000)
    p.add_argument("--cores", type=int, default=0, help="pin to the first N cores (0: all)")
    return p.parse_args(argv)


def case_config(name: str, dtype: str):
    """The ml_collections config of case `name` with its overrides and model.dtype."""
    import importlib
    module, variant, overrides, _ = CASES[name]
    get_config = importlib.import_module(f"configs.{module}").get_config
    c = get_config(variant) if variant else get_config()
    for key, value in overrides.items():
        section, field = key.split(".")
        c[section][field] = value
    c.model.dtype = dtype
    return c


def sampler_spec(name: str) -> tuple[str, int]:
    """'ddim50' -> ('ddim', 50); 'ancestral' -> ('ancestral', 0)."""
    if name == "ancestral":
        return "ancestral", 0
    if name.startswith("ddim") and name[4:].isdigit():
        return "ddim", int(name[4:])
    raise SystemExit(f"unknown sampler {name!r}; use ddimN (e.g. ddim50) or ancestral")


def initial_noise(batch: int, size: int, seed: int = 0):
    """x_T [B, 3, S, S] as diffusers' pipelines draw it (torch.randn, CPU generator)."""
    import torch
    return torch.randn((batch, 3, size, size), generator=torch.Generator().manual_seed(seed))


class FdmRunner:
    """The family's sampler on x_T; `run(sampler, steps)` -> images [B, S, S, 3] in [0, 1].
    params: the network's parameters, or None for the family's own initialisation."""

    def __init__(self, config, x_T_nchw, params=None):
        import jax
        import jax.numpy as jnp
        from fdm.models import get_family
        self.family = get_family(config)
        size = int(config.data.image_size)
        batch = {"image": jnp.zeros((1, size, size, 3), jnp.float32)}
        self.params = (jax.jit(self.family.init_params)(jax.random.PRNGKey(0), batch)
                       if params is None else jax.tree.map(jnp.asarray, params))
        self.x_T = jnp.asarray(x_T_nchw.numpy().transpose(0, 2, 3, 1))
        self.y = self.family.sample_labels(len(self.x_T))

    def run(self, sampler: str, steps: int, x_T=None):
        """Images from self.x_T, or from x_T [B, S, S, 3] when given."""
        import jax
        import numpy as np
        x_T = self.x_T if x_T is None else x_T
        out = self.family.sample_batch(self.params, x_T, jax.random.PRNGKey(1), self.y,
                                       sampler=sampler, num_steps=steps or None,
                                       progress=False)
        return np.clip((np.asarray(jax.device_get(out.x0)) + 1) / 2, 0, 1)


class DiffusersRunner:
    """diffusers' DDIM / DDPM pipeline on a `UNet2DModel` built from the config's U-Net
    keys (torch's initialisation, seed 0); `fdm_params()` are the same weights for fdm."""

    def __init__(self, config, x_T_nchw):
        import diffusers
        import torch
        from fdm.nn.convert_diffusers import diffusers_config_from_unet_kwargs
        from fdm.nn.unet import unet_kwargs_from_config
        self.kwargs = unet_kwargs_from_config(config.model)
        self.size = int(config.data.image_size)
        torch.manual_seed(0)
        self.unet = diffusers.UNet2DModel(
            **diffusers_config_from_unet_kwargs(self.kwargs, self.size)).eval()
        d = config.diffusion
        sched = dict(num_train_timesteps=int(d.num_timesteps), beta_schedule=str(d.beta_schedule),
                     beta_start=float(d.beta_start), beta_end=float(d.beta_end),
                     clip_sample=bool(d.clip_x0))
        self.ddim = diffusers.DDIMScheduler(**sched, set_alpha_to_one=True, steps_offset=0)
        self.ddpm = diffusers.DDPMScheduler(**sched, variance_type=str(d.variance))
        self.x_T = x_T_nchw

    def fdm_params(self):
        from fdm.nn.convert_diffusers import unet_params_from_diffusers
        return unet_params_from_diffusers(self.unet.state_dict(), self.kwargs, self.size)

    def run(self, sampler: str, steps: int):
        import diffusers
        import torch
        pipe = (diffusers.DDIMPipeline(self.unet, self.ddim) if sampler == "ddim"
                else diffusers.DDPMPipeline(self.unet, self.ddpm))
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(0)     # draws x_T = initial_noise(seed 0)
        kw = dict(num_inference_steps=steps, eta=0.0) if sampler == "ddim" else dict(
            num_inference_steps=self.ddpm.config.num_train_timesteps)
        with torch.no_grad():
            return pipe(batch_size=len(self.x_T), generator=generator, output_type="np",
                        **kw).images


def ddim_parity(ours: FdmRunner, sampler: str, steps: int, img, their_img) -> dict:
    """max |fdm - diffusers| of the DDIM images from the same x_T, next to max |fdm(x_T) -
    fdm(x_T + 1e-6 z)|: an untrained network's DDIM trajectory is chaotic over tens of
    steps (float32 round-off alone moves the images by up to 1), so the frameworks agree
    exactly when their gap is that of a 1e-6 perturbation (NaN for ancestral sampling,
    whose noise the frameworks draw differently)."""
    import jax
    import numpy as np
    if sampler != "ddim":
        return dict(max_diff=float("nan"), max_diff_perturbed=float("nan"))
    z = jax.random.normal(jax.random.PRNGKey(5), ours.x_T.shape, ours.x_T.dtype)
    perturbed = ours.run(sampler, steps, ours.x_T + 1e-6 * z)
    return dict(max_diff=float(np.abs(img - their_img).max()),
                max_diff_perturbed=float(np.abs(img - perturbed).max()))


def has_diffusers_counterpart(config) -> bool:
    """A plain DDPM U-Net (not FDM) with an eps-prediction, a linear schedule and a fixed
    variance: what `DDIMPipeline` / `DDPMPipeline` run."""
    d = config.diffusion
    return (config.model.family == "ddpm" and d.prediction == "eps"
            and d.beta_schedule == "linear" and d.variance in ("fixed_small", "fixed_large"))


def time_calls(fn, iters: int) -> tuple[float, float, float, object]:
    """(wall seconds of the first call, median wall and process-CPU seconds of `iters`
    later calls, the last output). CPU time is what to compare on a shared machine: a
    descheduled thread accrues none."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    wall, cpu = [first], [float("nan")]
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    later = slice(1, None) if iters else slice(0, 1)
    return first, statistics.median(wall[later]), statistics.median(cpu[later]), out


def main(argv=None):
    args = parse_args(argv)
    unet_step.pin_cores(args.cores)
    os.chdir(REPO)
    sys.path.insert(0, REPO)
    import fdm.nn  # noqa: F401  (first: may add the XLA:CPU conv flag before jax starts)
    import jax
    import numpy as np
    import torch
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    print(f"# machine: {unet_step.machine_line()}")
    print(f"# backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax "
          f"{jax.__version__}, torch {torch.__version__}; batch {args.batch}, median of "
          f"{args.iters} after the first call", flush=True)
    frameworks = args.frameworks.split(",")
    rows = []
    for case in [c for c in args.cases.split(",") if c]:
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; use some of {list(CASES)}")
        config = case_config(case, args.dtype)
        x_T = initial_noise(args.batch, int(config.data.image_size))
        theirs = (DiffusersRunner(config, x_T) if "diffusers" in frameworks
                  and has_diffusers_counterpart(config) else None)
        ours = FdmRunner(config, x_T, theirs.fdm_params() if theirs else None)
        for name in [s for s in args.samplers.split(",") if s]:
            sampler, steps = sampler_spec(name)
            first, sec, cpu, img = time_calls(lambda: ours.run(sampler, steps), args.iters)
            row = dict(case=case, sampler=name, first_s=first, fdm_s=sec, fdm_cpu=cpu)
            print(f"# {case} {name} fdm: first call {first:.1f}s, then {sec:.2f}s "
                  f"(CPU {cpu:.2f}s)", flush=True)
            if theirs is not None:
                _, their_sec, their_cpu, their_img = time_calls(
                    lambda: theirs.run(sampler, steps), args.iters)
                row.update(diffusers_s=their_sec, diffusers_cpu=their_cpu,
                           **ddim_parity(ours, sampler, steps, img, their_img))
                print(f"# {case} {name} diffusers: {their_sec:.2f}s (CPU {their_cpu:.2f}s)",
                      flush=True)
            rows.append(row)
    print_table(rows, args.batch, args.fid_samples)
    return rows


def print_table(rows, batch: int, fid_samples: int) -> None:
    print(f"| case | sampler | fdm s/batch (CPU s) | fdm images/s | diffusers s/batch (CPU s) "
          f"| diffusers images/s | diffusers / fdm, wall (CPU) | max pixel diff (fdm at x_T + "
          f"1e-6) | "
          f"{fid_samples // 1000}K samples (fdm) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rate = batch / r["fdm_s"]
        hours = fid_samples / rate / 3600
        their = r.get("diffusers_s")
        cols = (f"{their:.2f} ({r['diffusers_cpu']:.2f}) | {batch / their:.2f} | "
                f"{their / r['fdm_s']:.2f} ({r['diffusers_cpu'] / r['fdm_cpu']:.2f}) | "
                f"{r['max_diff']:.1e} ({r['max_diff_perturbed']:.1e})" if their
                else "– | – | – | –")
        print(f"| {r['case']} | {r['sampler']} | {r['fdm_s']:.2f} ({r['fdm_cpu']:.2f}) | "
              f"{rate:.2f} | {cols} | {hours:.1f} h |")


if __name__ == "__main__":
    main()
