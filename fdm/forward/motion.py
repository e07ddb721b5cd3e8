"""Single-image motion through a warp (seed 003 Sec. 4.2, supp. §2.2; brief S3 and T3):
random textures moved by one of four global flows drawn independently of the texture, so
the posterior of the motion given the context image is known: uniform over the flows.

Notation:
  C        CHANNELS = 3 colour channels; images are SIDE x SIDE = 16 x 16 in [-1, 1].
  S        [SIDE, SIDE, C + 2] (`SIGNAL_SHAPE`): S_c = S[..., :C] the appearance and
           S_m = S[..., C:] the motion field in pixels, (x, y) order (right and down are
           +; `fdm.forward.splatting`).
  phi      float32 [] per example, the fraction of the motion a view shows:
               forward(S, phi) = splat(S_c, phi S_m)                   (`MotionOperator`)
           Sec. 4.2's warp(S, phi)(u + phi S_m(u)) = S_c(u), by average splatting (Z = 0,
           brief D7). PHI_CTXT = 0 (the context is S_c itself), PHI_TRGT = 1, and the novel
           view of Eq. 9 PHI_NOVEL = 0.5: the frame half-way, like the paper's novel frame
           that lies between context and target (brief S2); with the flows below it is a
           1-pixel shift, exact like the target's 2 pixels. phi = 1 would only repeat
           the target; 0.5 checks S_m at a second phi, as Eq. 9 intends.
  denoise  outputs S_m alone, [SIDE, SIDE, 2] (`NETWORK_SHAPE`); the signal is
           S = (O^ctxt, S_m) (`assemble`; Sec. 4.2: "the signal is then reconstructed as
           S = (O^ctxt, S_m)").
  prior    S_c a texture (`textures`: Gaussian noise blurred by a 3 x 3 binomial kernel,
           scaled to std TEXTURE_STD, clipped to [-1, 1]); S_m the uniform field of one of
           FLOWS [4, 2]: right (2, 0), left (-2, 0), down (0, 2), up (0, -2), each with
           probability 1/4, independent of S_c (brief T3).
  views    forward(S, phi) for an integer phi * flow is an exact shift (`shift`) with 0
           on the uncovered strip; the data (`fdm.data.inverse_toys.motion`) are made so.

Exact posterior: p(S_m | O^ctxt) is uniform over the 4 flow fields (the flow is independent
of the texture, and the context is S_c). A deterministic model regresses to one motion for
all four targets; the paper reports it collapses to about zero motion.

Scores of samples [N, M, SIDE, SIDE, C + 2] of N contexts (`score`): each sample's motion
is summarised by its mean flow over the interior (`interior`: the pixels at least
MAGNITUDE from every border; border pixels may leave the frame, so the target does not fix
their S_m) and binned (`flow_bins`) to the nearest of the FLOWS, or to the bin STILL when
the mean flow is shorter than MAGNITUDE / 2:
  flow_tv          TV between the bins' empirical distribution and the exact one (1/4 on
                   each flow, 0 on STILL), averaged over the contexts: 0.75 for samples
                   collapsed on one flow, 1 for samples collapsed on no motion
  flow_tv_max      its largest value over the contexts
  flow_tv_floor    E[flow_tv] of M exact samples (seeded Monte Carlo; ~0.04 at M = 256)
  still_fraction   P(bin = STILL): ~1 for the collapsed deterministic baseline
  mean_flow_norm   E |mean flow|: MAGNITUDE for exact samples, ~0 when collapsed
  flow_rmse        sqrt(mean over samples and interior pixels of |S_m - the flow nearest
                   the sample's mean|^2): how far a sample is from a rigid motion
Given the target (`score_given_target`: the S the model predicts from the context and the
clean target, against the true signals), over the eval examples:
  given_target_flow_rmse  sqrt(mean over examples and interior pixels of |S_m - true|^2)
  given_target_accuracy   P(the bin of the mean flow is the true flow)
Expected (brief T3): flow_tv near flow_tv_floor and still_fraction ~0 for the diffusion
model; still_fraction ~1 (flow_tv ~1) for the deterministic baseline.

Figures (`render`, `canvas_image`): a signal is shown as [forward(S, PHI_TRGT) | S_m as
colour] (`flow_colour`: hue the direction, white no motion), a context as [O^ctxt | white].
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from fdm.forward.base import View
from fdm.forward.glyph_mosaic import total_variation, uniform_tv_floor
from fdm.forward.splatting import softmax_splat

SIDE = 16
CHANNELS = 3
MAGNITUDE = 2
FLOWS = np.array([[MAGNITUDE, 0], [-MAGNITUDE, 0], [0, MAGNITUDE], [0, -MAGNITUDE]],
                 np.int32)
NUM_FLOWS = len(FLOWS)
STILL = NUM_FLOWS
EXACT_BINS = np.append(np.full(NUM_FLOWS, 1.0 / NUM_FLOWS), 0.0)
PHI_CTXT, PHI_TRGT, PHI_NOVEL = 0.0, 1.0, 0.5
TEXTURE_STD = 0.5
SIGNAL_SHAPE = (SIDE, SIDE, CHANNELS + 2)
NETWORK_SHAPE = (SIDE, SIDE, 2)
_BINOMIAL = np.array([1.0, 2.0, 1.0], np.float32) / 4.0


@flax.struct.dataclass
class MotionOperator:
    """forward(S, phi) = splat(S_c, phi S_m) (module doc) for S [B, H, W, channels + 2]."""
    channels: int = flax.struct.field(pytree_node=False, default=CHANNELS)

    def apply(self, signal: jax.Array, phi: jax.Array) -> jax.Array:
        """O [B, H, W, channels] of S [B, H, W, channels + 2] at phi float [B]."""
        image, flow = signal[..., :self.channels], signal[..., self.channels:]
        scale = jnp.asarray(phi, flow.dtype).reshape(-1, 1, 1, 1)
        return softmax_splat(image, scale * flow)

    def paste(self, obs: jax.Array, phi: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(canvas, mask [B, H, W, 1]) of O [B, H, W, channels]: every view is a whole
        frame, its own canvas, mask 1."""
        return obs, jnp.ones(obs.shape[:-1] + (1,), obs.dtype)


def operator() -> MotionOperator:
    """forward(S, phi) = splat(S_c, phi S_m) of S [B, SIDE, SIDE, C + 2] at phi [B]."""
    return MotionOperator(channels=CHANNELS)


def assemble(flow: jax.Array, ctxt: View) -> jax.Array:
    """S = (O^ctxt, S_m) [B, SIDE, SIDE, C + 2] of the denoiser's S_m [B, SIDE, SIDE, 2] and
    the context O^ctxt [B, SIDE, SIDE, C] (Sec. 4.2)."""
    return jnp.concatenate([jnp.asarray(ctxt.obs, flow.dtype), flow], axis=-1)


def textures(rng: np.random.Generator, num: int) -> np.ndarray:
    """S_c float32 [num, SIDE, SIDE, C]: Gaussian noise blurred by the 3 x 3 binomial kernel
    (no wrap-around), scaled to std TEXTURE_STD, clipped to [-1, 1]."""
    noise = rng.standard_normal((num, SIDE + 2, SIDE + 2, CHANNELS), dtype=np.float32)
    blurred = sum(_BINOMIAL[i] * _BINOMIAL[j] * noise[:, i:i + SIDE, j:j + SIDE]
                  for i in range(3) for j in range(3))
    unit = blurred / np.sum(_BINOMIAL**2)           # the blur's std is sum(k^2) per axis
    return np.clip(TEXTURE_STD * unit, -1.0, 1.0).astype(np.float32)


def flow_fields(flow_index: np.ndarray) -> np.ndarray:
    """S_m float32 [N, SIDE, SIDE, 2]: the uniform field of FLOWS[flow_index] (int [N])."""
    flows = FLOWS[np.asarray(flow_index)].astype(np.float32)
    return np.broadcast_to(flows[:, None, None, :], (len(flows), SIDE, SIDE, 2)).copy()


def shift(images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The numpy forward model of integer uniform motion: images [N, H, W, C] moved by
    offsets int [N, 2] ((x, y) pixels), out[n, y + dy, x + dx] = images[n, y, x], 0 where
    nothing lands."""
    images, offsets = np.asarray(images), np.asarray(offsets)
    n, h, w, _ = images.shape
    ys = np.arange(h)[None, :, None] - offsets[:, 1, None, None]
    xs = np.arange(w)[None, None, :] - offsets[:, 0, None, None]
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    moved = images[np.arange(n)[:, None, None], np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)]
    return np.where(inside[..., None], moved, 0.0).astype(images.dtype)


def observe(ctxt: np.ndarray, flow_index: np.ndarray, phi: float) -> np.ndarray:
    """forward(S, phi) [N, SIDE, SIDE, C] of the signals (ctxt [N, SIDE, SIDE, C],
    FLOWS[flow_index]) for a phi with integer phi * FLOWS (the PHI_* constants): a shift."""
    return shift(ctxt, np.rint(phi * FLOWS[np.asarray(flow_index)]).astype(np.int32))


def interior(fields: np.ndarray) -> np.ndarray:
    """fields [..., SIDE, SIDE, K] without the MAGNITUDE-pixel border: [..., SIDE - 4, ., K]."""
    return np.asarray(fields)[..., MAGNITUDE:SIDE - MAGNITUDE, MAGNITUDE:SIDE - MAGNITUDE, :]


def mean_flow(signals: np.ndarray) -> np.ndarray:
    """The mean of S_m over the interior, float64 [..., 2], of signals [..., SIDE, SIDE, C + 2]."""
    return np.mean(interior(np.asarray(signals, np.float64)[..., CHANNELS:]), axis=(-3, -2))


def nearest_flow(flows: np.ndarray) -> np.ndarray:
    """The index int [...] of the FLOWS nearest to flows [..., 2] (ties to the lower index)."""
    d2 = np.sum((np.asarray(flows, np.float64)[..., None, :] - FLOWS) ** 2, axis=-1)
    return np.argmin(d2, axis=-1)


def flow_bins(flows: np.ndarray) -> np.ndarray:
    """The bin int [...] of mean flows [..., 2]: STILL where shorter than MAGNITUDE / 2,
    else `nearest_flow`."""
    still = np.linalg.norm(flows, axis=-1) < MAGNITUDE / 2
    return np.where(still, STILL, nearest_flow(flows))


def score_context(samples: np.ndarray) -> dict[str, float]:
    """flow_tv, still_fraction, mean_flow_norm, flow_rmse (module doc) of the samples
    [M, SIDE, SIDE, C + 2] of one context."""
    means = mean_flow(samples)
    bins = flow_bins(means)
    rigid = FLOWS[nearest_flow(means)][:, None, None, :]
    residual = interior(np.asarray(samples, np.float64)[..., CHANNELS:]) - rigid
    return {"flow_tv": total_variation(np.bincount(bins, minlength=NUM_FLOWS + 1), EXACT_BINS),
            "still_fraction": float(np.mean(bins == STILL)),
            "mean_flow_norm": float(np.mean(np.linalg.norm(means, axis=-1))),
            "flow_rmse": float(np.sqrt(np.mean(np.sum(residual**2, axis=-1))))}


def score(signals: np.ndarray, ctxt: View) -> dict[str, float]:
    """Scores (module doc) averaged over the N contexts of samples [N, M, SIDE, SIDE, C + 2];
    ctxt (the N contexts) is not read: the exact posterior is the same for every context."""
    del ctxt
    per_context = [score_context(s) for s in np.asarray(signals)]
    metrics = {k: float(np.mean([c[k] for c in per_context])) for k in per_context[0]}
    metrics["flow_tv_max"] = float(np.max([c["flow_tv"] for c in per_context]))
    metrics["flow_tv_floor"] = uniform_tv_floor(np.asarray(signals).shape[1])
    return metrics


def score_given_target(signals: np.ndarray, views, truth: np.ndarray) -> dict[str, float]:
    """given_target_flow_rmse and given_target_accuracy (module doc) of the signals
    [N, SIDE, SIDE, C + 2] predicted with the target given, against the true ones (the
    tuples `views` are not needed: the truth is the flow)."""
    del views
    error = (interior(np.asarray(signals, np.float64)[..., CHANNELS:])
             - interior(np.asarray(truth, np.float64)[..., CHANNELS:]))
    correct = flow_bins(mean_flow(signals)) == nearest_flow(mean_flow(truth))
    return {"given_target_flow_rmse": float(np.sqrt(np.mean(np.sum(error**2, axis=-1)))),
            "given_target_accuracy": float(np.mean(correct))}


def flow_colour(flow: np.ndarray) -> np.ndarray:
    """Flows [..., 2] as colours [..., 3] in [-1, 1] (the usual flow wheel): hue the
    direction (right red, down yellow-green, left cyan, up violet), saturation
    |flow| / MAGNITUDE (clipped to 1), value 1; no motion is white (apart from the grey
    padding of the figures)."""
    flow = np.asarray(flow, np.float64)
    hue = (np.arctan2(flow[..., 1], flow[..., 0]) / (2 * np.pi)) % 1.0 * 6.0
    sat = np.clip(np.linalg.norm(flow, axis=-1) / MAGNITUDE, 0.0, 1.0)
    sector, frac = np.floor(hue).astype(int) % 6, hue - np.floor(hue)
    p, q, t = 1.0 - sat, 1.0 - sat * frac, 1.0 - sat * (1.0 - frac)
    one = np.ones_like(sat)
    rgb = np.choose(sector[None], [np.stack(c) for c in ((one, t, p), (q, one, p),
                                                             (p, one, t), (p, q, one),
                                                             (t, p, one), (one, p, q))])
    return (2.0 * np.moveaxis(rgb, 0, -1) - 1.0).astype(np.float32)


def render(signals: np.ndarray) -> np.ndarray:
    """Signals [N, SIDE, SIDE, C + 2] as images [N, SIDE, 2 SIDE, 3]: the warp
    forward(S, PHI_TRGT) beside `flow_colour`(S_m)."""
    signals = np.asarray(signals, np.float32)
    phi = np.full(len(signals), PHI_TRGT, np.float32)
    warp = np.asarray(operator().apply(jnp.asarray(signals), jnp.asarray(phi)))
    return np.concatenate([warp, flow_colour(signals[..., CHANNELS:])], axis=2)


def canvas_image(canvas: np.ndarray) -> np.ndarray:
    """Context canvases [N, SIDE, SIDE, C] as images [N, SIDE, 2 SIDE, 3]: the frame beside
    the white of no motion (phi^ctxt = 0)."""
    canvas = np.asarray(canvas, np.float32)
    still = flow_colour(np.zeros(canvas.shape[:-1] + (2,), np.float32))
    return np.concatenate([canvas, still], axis=2)
