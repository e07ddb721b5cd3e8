"""Sparse linear attribute classifiers for attribute manipulation (seed 002, thesis
sec. 4.2.2 and Alg. 3; brief D13): a binary logistic classifier on z whose weight has
exactly d' non-zero dimensions, chosen by probabilistic masking (ProbMask, Zhou et al.
2021, the thesis's [102]), and the manipulation direction sigma * w / ||w||.

Notation: z [N, D] features (an encoder's codes), y [N] in {0, 1} (1: the attribute,
e.g. `label == class`), mean, sigma [D] the per-dimension mean and standard deviation
of z on the training set (`fdm.metrics.probes.standardizer`), u = (z - mean) / sigma.

Classifier: p(y = 1 | z) = sigmoid(u . w + b), w [D] with d' non-zeros, b a scalar.

ProbMask, as here (the thesis gives no details; a small, documented version):
  1. Search. Every dimension i keeps its weight with probability s_i (the scores
     s in [0, 1]^D, sum s = d': d' non-zeros in expectation; start s_i = d'/D).
     A mask sample is the binary Concrete (Gumbel-sigmoid) relaxation of Bernoulli(s):
         m_i = sigmoid((logit(s_i) + logit(U_i)) / tau),   U_i ~ U(0, 1),
     tau annealed geometrically from TAU_START to TAU_END over SEARCH_STEPS
     full-batch steps (one mask sample each) on the class-balanced logistic loss of
     u . (w * m) + b (positives and negatives weigh half each; the attribute is often
     rare) plus WEIGHT_DECAY ||w||^2 / 2: Adam (rate SEARCH_LR) on w, b, started at
     step 2's L-BFGS fit on all dimensions (so the scores' gradients are informative
     from the first step), plain SGD (rate SCORE_LR) on s. After every step s is projected back onto
     {0 <= s <= 1, sum s = d'}: s <- clip(s - v, 0, 1) with the shift v found by
     bisection (ProbMask's projection).
  2. Fix. The support is the d' dimensions of largest s (ties: the lower index); w, b
     are refitted on u restricted to it by L-BFGS logistic regression
     (`fdm.metrics.probes.fit_logistic` with two classes, C = REFIT_C, unweighted;
     w = w_1 - w_0, b = b_1 - b_0), and w is 0 elsewhere.
d' = 0 (or d' = D) skips the search: the dense classifier on all dimensions (the
thesis's "full-dim" manipulation, Fig. 4.7).

Manipulation (Alg. 3): z' = z + lambda sigma * w / ||w|| (`SparseClassifier.direction`);
with the classifier on standardised z this is a step of lambda along the unit normal
of the decision boundary in u space, mapped back to z.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdm.errors import UserError
from fdm.metrics.probes import fit_logistic, standardizer

SEARCH_STEPS = 400
SEARCH_LR = 0.01
SCORE_LR = 0.1
TAU_START, TAU_END = 1.0, 0.05
WEIGHT_DECAY = 1e-4
REFIT_C = 1.0
_BISECTION_STEPS = 40
_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class SparseClassifier:
    """A fitted classifier (module docstring): weights [D] (on standardised z; d'
    non-zeros), bias, mean and sigma [D] (the standardisation), support int [d'] (the
    non-zero dimensions, ascending), scores [D] (ProbMask's final s; 1 on the support
    for the dense classifier)."""
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    sigma: np.ndarray
    support: np.ndarray
    scores: np.ndarray

    def logits(self, z: np.ndarray) -> np.ndarray:
        """float [N]: u . w + b of raw features z [N, D]."""
        return ((np.asarray(z, np.float64) - self.mean) / self.sigma) @ self.weights + self.bias

    def accuracy(self, z: np.ndarray, y: np.ndarray) -> float:
        """The fraction of z [N, D] whose predicted class (logit > 0) is y [N]."""
        return float(np.mean((self.logits(z) > 0) == np.asarray(y, bool)))

    def direction(self) -> np.ndarray:
        """float32 [D]: Alg. 3's sigma * w / ||w|| (z' = z + lambda direction)."""
        return (self.sigma * self.weights / np.linalg.norm(self.weights)).astype(np.float32)


def fit_sparse_classifier(z: np.ndarray, y: np.ndarray, num_nonzero: int,
                          seed: int = 0) -> SparseClassifier:
    """The ProbMask classifier of the module docstring: z [N, D], y [N] (bool or
    {0, 1}), num_nonzero = d' in [0, D] (0: dense); `seed` draws the Concrete noise."""
    z, y = _check(z, y, num_nonzero)
    mean, sigma = standardizer(z)
    u = ((z - mean) / sigma).astype(np.float32)
    d = u.shape[1]
    if num_nonzero in (0, d):
        support, scores = np.arange(d), np.ones(d)
    else:
        w2, b2 = fit_logistic(u, y.astype(np.int64), 2, REFIT_C)
        scores = np.asarray(_search(jnp.asarray(u), jnp.asarray(y, jnp.float32),
                                    jnp.float32(num_nonzero), jax.random.PRNGKey(seed),
                                    jnp.asarray(w2[:, 1] - w2[:, 0], jnp.float32),
                                    jnp.float32(b2[1] - b2[0])), np.float64)
        support = np.sort(np.argsort(-scores, kind="stable")[:num_nonzero])
    w2, b2 = fit_logistic(u[:, support], y.astype(np.int64), 2, REFIT_C)
    weights = np.zeros(d)
    weights[support] = w2[:, 1] - w2[:, 0]
    return SparseClassifier(weights=weights, bias=float(b2[1] - b2[0]), mean=mean,
                            sigma=sigma, support=support, scores=scores)


def project_scores(s: jnp.ndarray, total: float) -> jnp.ndarray:
    """ProbMask's projection of scores s [D] onto {0 <= s <= 1, sum s = total}
    (0 < total < D): clip(s - v, 0, 1) with v solving sum = total, by bisection
    (the sum is non-increasing in v). Returns [D]."""
    lo, hi = jnp.min(s) - 1.0, jnp.max(s)

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        over = jnp.sum(jnp.clip(s - mid, 0.0, 1.0)) > total
        return jnp.where(over, mid, lo), jnp.where(over, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, step, (lo, hi))
    return jnp.clip(s - 0.5 * (lo + hi), 0.0, 1.0)


def _search_loss(params, u, y, noise, tau):
    """The class-balanced logistic loss of the relaxed mask (module docstring, step 1):
    params (w [D], b [], s [D]); u [N, D], y [N] float; noise [D] logistic; tau []."""
    w, b, s = params
    s = jnp.clip(s, _EPS, 1.0 - _EPS)
    mask = jax.nn.sigmoid((jnp.log(s) - jnp.log1p(-s) + noise) / tau)
    logits = u @ (w * mask) + b
    per = optax.sigmoid_binary_cross_entropy(logits, y)
    pos = jnp.sum(per * y) / jnp.maximum(jnp.sum(y), 1.0)
    neg = jnp.sum(per * (1.0 - y)) / jnp.maximum(jnp.sum(1.0 - y), 1.0)
    return 0.5 * (pos + neg) + 0.5 * WEIGHT_DECAY * jnp.sum(jnp.square(w))


@jax.jit
def _search(u, y, total, rng, w0, b0):
    """ProbMask's scores s [D] (module docstring, step 1) after SEARCH_STEPS projected
    steps: u [N, D], y [N] float, total = d' (a float), rng the noise key, w0 [D] and
    b0 [] the start of w, b."""
    d = u.shape[1]
    params = (w0, b0, jnp.full((d,), total / d))
    tx = optax.multi_transform({"w": optax.adam(SEARCH_LR), "s": optax.sgd(SCORE_LR)},
                               ("w", "w", "s"))
    decay = (TAU_END / TAU_START) ** (1.0 / max(SEARCH_STEPS - 1, 1))

    def step(carry, i):
        params, opt_state = carry
        noise = jax.random.logistic(jax.random.fold_in(rng, i), (d,))
        grads = jax.grad(_search_loss)(params, u, y, noise, TAU_START * decay ** i)
        updates, opt_state = tx.update(grads, opt_state)
        w, b, s = optax.apply_updates(params, updates)
        return ((w, b, project_scores(s, total)), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(SEARCH_STEPS))
    return params[2]


def _check(z, y, num_nonzero: int) -> tuple[np.ndarray, np.ndarray]:
    """(z float64 [N, D], y bool [N]); a UserError on bad shapes, a single class or d'
    outside [0, D]."""
    z, y = np.asarray(z, np.float64), np.asarray(y)
    if z.ndim != 2 or y.shape != (len(z),) or not len(z):
        raise UserError(f"features {z.shape} / labels {y.shape} are invalid; pass z [N, D] "
                        "and binary labels [N] with N > 0")
    if not np.all((y == 0) | (y == 1)):
        raise UserError("attribute labels must be 0/1 (or bool)")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise UserError("the attribute labels hold one class only; a classifier needs both")
    if not 0 <= num_nonzero <= z.shape[1]:
        raise UserError(f"num_nonzero={num_nonzero} must be in [0, {z.shape[1]}] (the "
                        "dimensions of z; 0: dense)")
    return z, y
