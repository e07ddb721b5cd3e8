"""DatasetDDPM-unsup (Baranchuk et al. 2022, unsupervised variant; seed 000 Tables 2.3/2.4):
k-means on the per-pixel decoder features of a trained DDPM.

Notation: x0 [B, S, S, 3] images in [-1, 1]; T_f = `baselines.kmeans_timesteps`;
C_l the width of decoder level l (`fdm.nn.unet`).

Pixel features: for each t in T_f, x_t = q_sample(x0, t, ε) with ε fixed by (t, batch
index); one eval-mode pass of the DDPM U-Net (EMA params); the output of every
decoder level (`decoder_features`, [B, S/2^l, S/2^l, C_l]) resized bilinearly to
S x S; concatenated over levels and timesteps: D = |T_f| * Σ_l C_l.

Clustering (scikit-learn): channels standardised, k-means with K =
`baselines.kmeans_clusters` (10 restarts, seeded), fitted on
`baselines.kmeans_fit_pixels` pixels drawn uniformly from the train images; every
pixel of the evaluation set gets its nearest centre. The clusters are mapped to
fg/bg (and classes) once per evaluation set like the FDM's regions
(`common.region_scores`).
"""
from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from fdm.baselines.common import BaselineData, region_scores, split_results
from fdm.diffusion import q_sample
from fdm.errors import UserError
from fdm.host import unit_range_batches
from fdm.nn.unet import decoder_features


def pixel_features(family, params, x0: jax.Array, timesteps: tuple[int, ...],
                   rng: jax.Array) -> jax.Array:
    """x0 [B, S, S, 3] in [-1, 1] -> decoder features [B, S, S, D] (module doc)."""
    b, s = x0.shape[0], x0.shape[1]
    out = []
    for i, t in enumerate(timesteps):
        tt = jnp.full((b,), t, jnp.int32)
        noise = jax.random.normal(jax.random.fold_in(rng, i), x0.shape, x0.dtype)
        feats = decoder_features(family.model, params, q_sample(family.schedule, x0, tt, noise), tt)
        out += [jax.image.resize(f, (b, s, s, f.shape[-1]), "bilinear")
                for _, f in sorted(feats.items())]
    return jnp.concatenate(out, axis=-1)


_pixel_features_jit = jax.jit(pixel_features, static_argnums=(0, 3))


def feature_batches(family, params, images: np.ndarray, timesteps: tuple[int, ...],
                    rng: jax.Array, batch_size: int) -> Iterator[np.ndarray]:
    """Features float32 [b, S, S, D] of uint8 images [N, S, S, 3], `batch_size` at a time
    (the last batch padded for one compile, then cut)."""
    for i, (x0, n) in enumerate(unit_range_batches(images, batch_size)):
        feats = _pixel_features_jit(family, params, jnp.asarray(x0), timesteps,
                                    jax.random.fold_in(rng, i))
        yield np.asarray(feats)[:n]


def fit_kmeans(batches: Iterator[np.ndarray], num_images: int, num_pixels: int,
               num_clusters: int, seed: int):
    """sklearn Pipeline(StandardScaler, KMeans) fitted on `num_pixels` pixels drawn
    uniformly (without replacement) from the feature batches [b, S, S, D] of
    `num_images` images."""
    from sklearn.cluster import KMeans
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    rng = np.random.default_rng(seed)
    chosen, rows, offset = None, [], 0
    for feats in batches:
        flat = feats.reshape(-1, feats.shape[-1])
        if chosen is None:
            total = num_images * len(flat) // len(feats)
            chosen = np.sort(rng.choice(total, min(num_pixels, total), replace=False))
        rows.append(flat[chosen[(chosen >= offset) & (chosen < offset + len(flat))] - offset])
        offset += len(flat)
    model = make_pipeline(StandardScaler(), KMeans(num_clusters, n_init=10, random_state=seed))
    return model.fit(np.concatenate(rows))


def predict_clusters(model, batches: Iterator[np.ndarray]) -> np.ndarray:
    """Cluster index int32 [N, S, S] of every pixel of the feature batches [b, S, S, D]."""
    labels = [model.predict(f.reshape(-1, f.shape[-1])).reshape(f.shape[:3]) for f in batches]
    return np.concatenate(labels).astype(np.int32)


def check_ddpm(family, config) -> None:
    """UserError unless `family` is a DDPM matching the data and the chosen timesteps."""
    dc = family.config
    if dc.model.family != "ddpm":
        raise UserError(f"--ddpm_workdir holds a model.family={dc.model.family!r} run; the "
                        "k-means baseline needs one trained with a ddpm config")
    if dc.data.image_size != config.data.image_size:
        raise UserError(f"the DDPM was trained at data.image_size={dc.data.image_size}, the "
                        f"baseline config uses {config.data.image_size}; make them equal")
    bad = [t for t in config.baselines.kmeans_timesteps
           if not 0 <= t < family.schedule.num_timesteps]
    if bad:
        raise UserError(f"baselines.kmeans_timesteps {bad} outside [0, "
                        f"{family.schedule.num_timesteps}); choose timesteps the DDPM has")


def run_kmeans(config, data: BaselineData, family, params, seed: int = 0) -> dict:
    """Fits k-means on the train images, clusters the evaluation set, scores it."""
    check_ddpm(family, config)
    b = config.baselines
    timesteps = tuple(int(t) for t in b.kmeans_timesteps)
    batch = int(config.eval.batch_size)
    key = jax.random.PRNGKey(seed)
    fit = feature_batches(family, params, data.train.images, timesteps, key, batch)
    model = fit_kmeans(fit, len(data.train.images), b.kmeans_fit_pixels, b.kmeans_clusters, seed)
    pred = predict_clusters(model, feature_batches(family, params, data.evaluation.images,
                                                   timesteps, key, batch))
    k = int(b.kmeans_clusters)
    metrics = split_results(pred, data, lambda p, m: region_scores(p, m, k))
    if config.eval.segmenter_workdir:
        metrics.update(generated_image_scores(config, model, family, params, timesteps, key))
    return metrics


def generated_image_scores(config, model, family, params, timesteps, key) -> dict:
    """Table 2.5 (bottom), the DDPM row: eval.num_gen_seg_samples DDPM samples, masked by
    the fitted k-means (the two-stage baseline), scored against the supervised segmenter
    of eval.segmenter_workdir -> gen_seg_acc, gen_seg_iou, ..."""
    from fdm import viz
    from fdm.models.segmenter import generated_mask_agreement, load_segmenter
    segmenter = load_segmenter(config.eval.segmenter_workdir)
    num = int(config.eval.num_gen_seg_samples)
    images = viz.to_uint8(family.generate(params, num, jax.random.fold_in(key, 1)).x0)
    batch = int(config.eval.batch_size)
    clusters = predict_clusters(model, feature_batches(family, params, images, timesteps, key,
                                                       batch))
    return generated_mask_agreement(segmenter, images, clusters,
                                    int(config.baselines.kmeans_clusters))
