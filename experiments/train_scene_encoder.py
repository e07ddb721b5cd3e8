"""Train the procedural DietNeRF encoder (`fdm.nn.scene_encoder`) contrastively.

  python -m experiments.train_scene_encoder workdirs/scene_encoder.npz
  python -m experiments.main --config=configs/dietnerf.py:toy --workdir=workdirs/dietnerf_toy_proc \
      --config.model.semantic_encoder_kind=procedural \
      --config.model.semantic_encoder=workdirs/scene_encoder.npz

Every update draws `--batch` fresh scenes of `fdm.data.scene_family` (never the toy
scene itself) and renders each twice, from two independent poses of DietNeRF's
sampler pi (`fdm.nerf.dietnerf.sample_poses`: azimuth U[-180, 180), elevation
U[0, 90] deg, radius U[3.5, 4.5], which covers the toy scene's training cameras at
elevation 10..80, radius 4) at `--image_size`^2. Each view is, with probability
`--lowres_prob`, replaced by its `--grid_size`^2 strided grid (the ray grid of DietNeRF's
renders, configs/dietnerf.py:toy n = 13 at 32^2: stride 2, offset 0..5) resized
bilinearly back to `--image_size`, then colour-jittered (brightness
+-0.1, contrast x[0.8, 1.2], per-channel gain x[0.93, 1.07]) and given N(0, 0.02)
pixel noise. The loss is the symmetric InfoNCE of the two views' unit embeddings
(positives: the same scene; negatives: the other scenes of the batch) at temperature
`--temperature`; Adam with a cosine decay of the learning rate to 0.1 of `--lr`.

Why this embedding is the one DietNeRF's loss needs: L_SC = -lambda cos(phi(I),
phi(I_hat)) pulls a render from an unobserved pose towards a training view's embedding.
A correct reconstruction is then a minimiser only if phi maps views of one object from
any pose close together (pose invariance, the positives), and the loss carries
information only if phi moves when the object changes (the negatives: other layouts,
sizes and colours). That is what CLIP learnt from captions of photos of objects; here
it is learnt from the scene family directly.

After training, held-out scenes (a separate key) measure it: retrieval top-1 of a
view's partner among `--eval_scenes` scenes, the mean cos of same-scene and of
different-scene pairs, and the same for the toy scene (unseen in training): cos
between its training views (32^2, `fdm.data.toy_scene`) and its own low-resolution
renders from pi, against renders of other scenes. The file loads as the DietNeRF
encoder with model.semantic_encoder_kind=procedural.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdm.data import scene_family, toy_scene
from fdm.errors import UserError
from fdm.nerf import dietnerf
from fdm.nn import scene_encoder
from fdm.nn.clip_preprocess import resize

ELEVATION_DEG = (0.0, 90.0)     # pi of configs/dietnerf.py (all variants)
RADIUS = (3.5, 4.5)
FINAL_LR_FACTOR = 0.1
TOY_VIEWS = 8


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.train_scene_encoder",
                                description=__doc__.split("\n")[0])
    p.add_argument("out", help="the .npz to write (model.semantic_encoder)")
    p.add_argument("--steps", type=int, default=3000, help="updates")
    p.add_argument("--batch", type=int, default=64, help="scenes per update (2 views each)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate at the start")
    p.add_argument("--temperature", type=float, default=0.1, help="InfoNCE temperature tau")
    p.add_argument("--image_size", type=int, default=32,
                   help="render size and encoder input S (a multiple of 2^stages)")
    p.add_argument("--grid_size", type=int, default=13,
                   help="side of the low-resolution renders (DietNeRF's ray grid)")
    p.add_argument("--lowres_prob", type=float, default=0.5,
                   help="probability that a view is a low-resolution render")
    p.add_argument("--channels", type=str, default="32,64,128",
                   help="channels of the stride-2 stages, comma-separated")
    p.add_argument("--embed_dim", type=int, default=64, help="embedding size E")
    p.add_argument("--eval_scenes", type=int, default=256, help="held-out scenes at the end")
    p.add_argument("--log_every", type=int, default=100, help="updates between log lines")
    p.add_argument("--seed", type=int, default=0)
    return p


def check_args(args: argparse.Namespace) -> scene_encoder.ConvEncoderConfig:
    """The encoder config of args; UserError on a bad value."""
    try:
        channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        raise UserError(f"--channels={args.channels!r} is not comma-separated integers")
    config = scene_encoder.ConvEncoderConfig(args.image_size, channels, args.embed_dim)
    try:
        config.check()
    except ValueError as e:
        raise UserError(f"bad encoder size: {e}")
    if not 1 <= args.grid_size <= args.image_size:
        raise UserError(f"--grid_size={args.grid_size} must be in [1, {args.image_size}]")
    if args.steps < 1 or args.batch < 2 or args.eval_scenes < 2 or args.log_every < 1:
        raise UserError("--steps and --log_every must be >= 1, --batch and --eval_scenes >= 2 "
                        "(InfoNCE needs negatives)")
    if not (0.0 <= args.lowres_prob <= 1.0 and args.temperature > 0 and args.lr > 0):
        raise UserError("--lowres_prob must be in [0, 1], --temperature and --lr > 0")
    return config


def grid_views(u: jax.Array, images: jax.Array, grid_size: int) -> jax.Array:
    """The n x n strided ray grid of DietNeRF's renders (`fdm.nerf.dietnerf.jittered_grid`,
    n = grid_size) taken from images [B, S, S, 3] at integer offsets floor(u span) (u [B, 2]
    uniforms; the grid's rays through pixel centres), resized back to [B, S, S, 3]."""
    size = images.shape[1]
    stride, span = dietnerf.grid_stride(size, grid_size)
    offsets = jnp.floor(u * max(span, 1)).astype(jnp.int32)
    extent = stride * (grid_size - 1) + 1

    def one(image, offset):
        window = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (extent, extent, 3))
        return window[::stride, ::stride]

    return resize(jax.vmap(one)(images, offsets), (size, size))


def render_views(rng: jax.Array, scenes: scene_family.SceneParams, size: int,
                 grid_size: int, lowres_prob: float) -> jax.Array:
    """One view [B, size, size, 3] of each scene from a pose ~ pi, with probability
    lowres_prob its `grid_views` (module doc)."""
    num = scenes.sphere_radii.shape[0]
    c2w = dietnerf.sample_poses(jax.random.fold_in(rng, 0), num, ELEVATION_DEG, RADIUS)
    full = scene_family.render_scenes(scenes, c2w, size)
    u = jax.random.uniform(jax.random.fold_in(rng, 1), (num, 3))
    low = grid_views(u[:, :2], full, grid_size)
    return jnp.where((u[:, 2] < lowres_prob)[:, None, None, None], low, full)


def augment(rng: jax.Array, images: jax.Array) -> jax.Array:
    """Colour jitter and pixel noise of images [B, H, W, 3] in [0, 1] (module doc)."""
    u = jax.random.uniform(jax.random.fold_in(rng, 0), (images.shape[0], 1, 1, 5))
    brightness = 0.2 * u[..., :1] - 0.1
    contrast = 0.8 + 0.4 * u[..., 1:2]
    gain = 0.93 + 0.14 * u[..., 2:]
    mean = jnp.mean(images, axis=(1, 2, 3), keepdims=True)
    x = ((images - mean) * contrast + mean) * gain + brightness
    noise = 0.02 * jax.random.normal(jax.random.fold_in(rng, 1), images.shape)
    return jnp.clip(x + noise, 0.0, 1.0)


def training_pair(rng: jax.Array, num: int, size: int, grid_size: int,
                  lowres_prob: float) -> tuple[jax.Array, jax.Array]:
    """Two augmented views [num, size, size, 3] of `num` fresh scenes (row i: scene i)."""
    scenes = scene_family.sample_scenes(jax.random.fold_in(rng, 0), num)
    views = [augment(jax.random.fold_in(rng, 10 + i),
                     render_views(jax.random.fold_in(rng, 1 + i), scenes, size, grid_size,
                                  lowres_prob)) for i in range(2)]
    return views[0], views[1]


def evaluate(encode, params, rng: jax.Array, args: argparse.Namespace) -> dict:
    """Held-out metrics of the module doc (no colour jitter): view a of a scene full
    size, its partner b and the toy scene's renders on the ray grid."""
    num = args.eval_scenes
    toy = toy_scene.load_toy_scene("train", 0, args.image_size, num_train=TOY_VIEWS)

    @jax.jit
    def embeddings(params, toy_images):
        scenes = scene_family.sample_scenes(jax.random.fold_in(rng, 0), num)
        toys = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (num,) + x.shape),
                                      scene_family.toy_scene_params())
        both = jax.tree_util.tree_map(lambda x, y: jnp.concatenate([x, y]), scenes, toys)
        a = encode(params, render_views(jax.random.fold_in(rng, 1), scenes, args.image_size,
                                        args.grid_size, 0.0))
        b = encode(params, render_views(jax.random.fold_in(rng, 2), both, args.image_size,
                                        args.grid_size, 1.0))
        return a, b[:num], b[num:], encode(params, toy_images)

    a, b, toy_renders, toy_views = (np.asarray(x) for x in embeddings(
        params, jnp.asarray(toy.images)))
    cos = a @ b.T
    off = ~np.eye(num, dtype=bool)
    return {"retrieval_top1": float(np.mean(np.argmax(cos, 1) == np.arange(num))),
            "cos_same_scene": float(np.mean(np.diag(cos))),
            "cos_other_scenes": float(np.mean(cos[off])),
            "toy_cos_same": float(np.mean(toy_views @ toy_renders.T)),
            "toy_cos_other": float(np.mean(toy_views @ b.T))}


def train(args: argparse.Namespace) -> dict:
    """Trains, writes args.out and returns the held-out metrics plus steps_per_s."""
    config = check_args(args)
    train_key, init_key, eval_key = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    params = scene_encoder.init_params(config, init_key)
    schedule = optax.cosine_decay_schedule(args.lr, args.steps, alpha=FINAL_LR_FACTOR)
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(params)
    encode = scene_encoder.make_conv_encoder(config)

    @jax.jit
    def step(params, opt_state, rng):
        a_img, b_img = training_pair(rng, args.batch, args.image_size, args.grid_size,
                                     args.lowres_prob)

        def loss_fn(p):
            return scene_encoder.info_nce_loss(encode(p, a_img), encode(p, b_img),
                                               args.temperature)

        (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, accuracy

    start, timed_from = time.time(), None
    for s in range(args.steps):
        params, opt_state, loss, accuracy = step(params, opt_state,
                                                 jax.random.fold_in(train_key, s))
        if s == 0:
            jax.block_until_ready(loss)
            timed_from = time.time()          # steps/s without the compilation
        if (s + 1) % args.log_every == 0 or s + 1 == args.steps:
            print(f"step {s + 1}/{args.steps} loss {float(loss):.4f} "
                  f"top1 {float(accuracy):.3f} ({time.time() - start:.0f} s)", flush=True)
    elapsed = time.time() - timed_from
    scene_encoder.save_encoder(args.out, scene_encoder.ConvEncoderCheckpoint(
        config, jax.device_get(params)))
    metrics = evaluate(encode, params, eval_key, args)
    metrics["steps_per_s"] = (args.steps - 1) / elapsed if args.steps > 1 else float("nan")
    print(f"wrote {args.out}: {config}; held out: "
          + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()), flush=True)
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        train(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
