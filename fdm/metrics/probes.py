"""Probes of frozen features (seed 002 brief, sec. 1 S3 and sec. 4 D): many-shot linear
probes, per-segment probes, raw-pixel probes and the few-shot episodes of Table 4.2.

Notation: N examples, D feature dimensions, K classes; labels are int [N] in [0, K).

Linear probe (Table 4.1, brief D12, "following [89, 90]"): multinomial logistic
regression fitted by L-BFGS on features standardised with the train split's mean and
standard deviation (a constant dimension keeps scale 1). The objective is
scikit-learn's, scaled by 1/N:
    mean_i CE(x_i W + b, y_i) + ||W||^2 / (2 C N),      W [D, K], b [K] unpenalised,
so C is scikit-learn's inverse regularisation strength; L-BFGS stops at scikit-learn's
default tolerance (largest gradient entry 1e-4) or after LBFGS_MAX_ITER iterations, and
float32 features are multiplied in float32 (`fit_logistic`). Every C of the grid (ascending,
each fit warm-started from the previous one) is fitted on train and scored on val; the
best val score picks C (ties: the smaller C, i.e. the stronger regularisation), and
that fit, trained on the train split only, is scored on test; with refit=True (the
transfer suite's protocol, Kornblith et al. 2019) the chosen C is fitted again on train
+ val (standardised with their statistics, warm-started from the chosen fit) and that
fit is scored. The score (`METRICS`) is the accuracy, or 'mean_per_class': the mean over
the classes present of each class's accuracy (the suite's metric for Aircraft,
Caltech-101, Flowers-102 and Pets). Softmax is invariant to a shift of b, so b is
returned centred (mean 0).

Per-segment probes: z [N, D] is cut into n equal segments z_1..z_n (DiffSiam's
segments, D/n dims each); a probe is fitted on each segment, or on each group of
segments (e.g. the brief's z_{1..3}, z_{4..5}, z_{6..8} as groups ((0,1,2), (3,4), (5,6,7))).

Raw-pixel probe (the trivial baseline of brief sec. 4 C): images scaled to [-1, 1],
average-pooled by `downsample`, flattened, then the linear probe.

Few-shot episodes (Table 4.2, thesis sec. 4.1.2): an episode draws `ways` classes
without replacement among the classes with at least shots + queries examples, then per
class shots + queries distinct examples: the first `shots` are its support, the rest
its queries (so support and query are disjoint). Episode e uses
`np.random.default_rng([seed, e])`, so it does not depend on how many episodes are
drawn. A linear head (W [D, ways], b [ways]; zero-initialised, a deterministic choice
where PyTorch would draw them) is trained on the support set for `epochs` epochs of
SGD without momentum (the thesis names none), as in the thesis: lr 0.01, weight decay
0.001 added to the gradient of W and b (PyTorch's SGD), mini-batches of 4 (the last
batch of an epoch smaller), mean cross-entropy per batch; epoch j visits the support
in the order argsort(u) of uniforms u drawn from `np.random.default_rng([seed, e, 1])`.
Features are used as given (the thesis's frozen backbone output); standardise them
first with `standardizer` when encoders of different scales are compared. Reported:
mean query accuracy over episodes, its standard deviation, and the 95 % interval
half-width 1.96 std / sqrt(E).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from fdm.errors import UserError

C_GRID = tuple(float(c) for c in np.logspace(-4, 4, 9))
LBFGS_MAX_ITER = 500
LBFGS_TOL = 1e-4
FEW_SHOT_WAYS, FEW_SHOT_QUERIES = 5, 15
FEW_SHOT_EPOCHS, FEW_SHOT_LR, FEW_SHOT_WEIGHT_DECAY, FEW_SHOT_BATCH = 100, 0.01, 0.001, 4
_EPISODE_CHUNK = 256            # episodes trained together (bounds the gathered features)
METRICS = ("accuracy", "mean_per_class")

Split = tuple[np.ndarray, dict[str, np.ndarray]]      # (features or images [N, ...], labels)


# ------------------------------------------------------------------ linear probe
@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """A fitted linear probe. accuracy: its score on test (the probe's metric, `METRICS`);
    c: the chosen C; val_accuracy: its val score; c_grid, val_accuracies: the grid
    (ascending) and val score per entry; weights [D, K], bias [K]: the classifier on
    standardised features; mean, scale [D]: the standardisation (of train, or of train +
    val when refitted)."""
    accuracy: float
    c: float
    val_accuracy: float
    c_grid: tuple[float, ...]
    val_accuracies: tuple[float, ...]
    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        """int [N]: predicted classes of raw (unstandardised) features x [N, D]."""
        return _predict(self.weights, self.bias, (np.asarray(x) - self.mean) / self.scale)


def standardizer(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], scale [D]) of features x_train [N, D]: the standard deviation, 1 where
    a dimension is constant; standardise any split as (x - mean) / scale."""
    x = np.asarray(x_train, np.float64)
    scale = x.std(axis=0)
    return x.mean(axis=0), np.where(scale > 1e-12, scale, 1.0)


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, c: float,
                 init: tuple[np.ndarray, np.ndarray] | None = None,
                 max_iter: int = LBFGS_MAX_ITER,
                 tol: float = LBFGS_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (module doc's objective) on x [N, D], y int [N]:
    (weights [D, K] float64, bias [K] float64, centred); L-BFGS from `init` (zeros by
    default) until the largest gradient entry is below `tol` or `max_iter` iterations.
    The two [N, D] products run in x's precision (float32 x: float32, twice as fast),
    everything else in float64."""
    x = np.asarray(x, _dtype(x))
    n, d = x.shape
    onehot = np.eye(num_classes)[np.asarray(y)]
    reg = 1.0 / (c * n)

    def objective(theta):
        w, b = theta[:d * num_classes].reshape(d, num_classes), theta[d * num_classes:]
        logits = (x @ w.astype(x.dtype)).astype(np.float64) + b
        shifted = logits - logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -(onehot * (shifted - lse)).sum() / n + 0.5 * reg * (w * w).sum()
        g = (np.exp(shifted - lse) - onehot) / n
        grad_w = (g.astype(x.dtype).T @ x).T.astype(np.float64) + reg * w
        return loss, np.concatenate([grad_w.ravel(), g.sum(axis=0)])

    w0, b0 = init if init is not None else (np.zeros((d, num_classes)), np.zeros(num_classes))
    theta0 = np.concatenate([np.ravel(w0), b0]).astype(np.float64)
    out = scipy.optimize.minimize(objective, theta0, jac=True, method="L-BFGS-B",
                                  options=dict(maxiter=max_iter, gtol=tol, maxls=50,
                                               ftol=64 * np.finfo(float).eps))
    w, b = out.x[:d * num_classes].reshape(d, num_classes), out.x[d * num_classes:]
    return w, b - b.mean()


def _dtype(x) -> np.dtype:
    """float32 for float32 (or narrower) features, float64 otherwise."""
    return np.result_type(np.asarray(x).dtype, np.float32)


def _predict(w, b, x):
    return np.argmax(x @ w + b, axis=1)


def score(predicted: np.ndarray, y: np.ndarray, metric: str = "accuracy") -> float:
    """The probe's score of predicted classes against labels y, both int [N]: 'accuracy'
    (mean of predicted == y) or 'mean_per_class' (that mean within each class present in
    y, averaged over those classes)."""
    hit = np.asarray(predicted) == np.asarray(y)
    if metric == "accuracy":
        return float(np.mean(hit))
    if metric == "mean_per_class":
        return float(np.mean([np.mean(hit[y == k]) for k in np.unique(y)]))
    raise UserError(f"probe metric {metric!r} is unknown; use one of {list(METRICS)}")


def _standardised(xs, mean, scale):
    return [(((x - mean) / scale).astype(x.dtype), y) for x, y in xs]


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                 y_val: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 c_grid: Sequence[float] = C_GRID, refit: bool = False,
                 metric: str = "accuracy") -> ProbeResult:
    """The linear probe of the module doc: features x_* [N_*, D], labels y_* int [N_*];
    K = 1 + the largest label of the three splits; refit and metric as there. Returns a
    `ProbeResult`."""
    xs = _check_features(("train", x_train, y_train), ("val", x_val, y_val),
                         ("test", x_test, y_test))
    grid = tuple(sorted(float(c) for c in c_grid))
    if not grid or min(grid) <= 0:
        raise UserError(f"c_grid={tuple(c_grid)!r} is invalid; give positive values of C")
    if metric not in METRICS:
        raise UserError(f"probe metric {metric!r} is unknown; use one of {list(METRICS)}")
    num_classes = 1 + max(int(y.max()) for _, y in xs)
    mean, scale = standardizer(xs[0][0])
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = _standardised(xs, mean, scale)
    fits, val_scores, init = [], [], None
    for c in grid:
        init = fit_logistic(x_tr, y_tr, num_classes, c, init)
        fits.append(init)
        val_scores.append(score(_predict(*init, x_va), y_va, metric))
    best = int(np.argmax(val_scores))
    w, b = fits[best]
    if refit:
        train_val = (np.concatenate([xs[0][0], xs[1][0]]), np.concatenate([y_tr, y_va]))
        old_scale = scale
        mean, scale = standardizer(train_val[0])
        (x_all, y_all), (x_te, y_te) = _standardised([train_val, xs[2]], mean, scale)
        warm = (w * (scale / old_scale)[:, None], b)   # the same logits up to a shift
        w, b = fit_logistic(x_all, y_all, num_classes, grid[best], warm)
    return ProbeResult(accuracy=score(_predict(w, b, x_te), y_te, metric), c=grid[best],
                       val_accuracy=val_scores[best], c_grid=grid,
                       val_accuracies=tuple(val_scores), weights=w, bias=b, mean=mean,
                       scale=scale)


def _check_features(*splits) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(x float32 or float64 [N, D], y int [N])] of (name, x, y) triples (`_dtype`); a
    UserError on bad shapes."""
    out, dims = [], set()
    for name, x, y in splits:
        x, y = np.asarray(x, _dtype(x)), np.asarray(y)
        if x.ndim != 2 or y.shape != (len(x),) or not len(x):
            raise UserError(f"{name} features {x.shape} / labels {y.shape} are invalid; pass "
                            "features [N, D] and int labels [N] with N > 0")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise UserError(f"{name} labels must be non-negative integers; got dtype "
                            f"{y.dtype}, min {y.min()}")
        dims.add(x.shape[1])
        out.append((x, y.astype(np.int64)))
    if len(dims) != 1:
        raise UserError(f"the splits' feature sizes {sorted(dims)} differ; extract every "
                        "split with the same encoder")
    return out


def factor_probes(train: Split, val: Split, test: Split, factors: Sequence[str] | None = None,
                  c_grid: Sequence[float] = C_GRID, **protocol) -> dict[str, ProbeResult]:
    """{factor: ProbeResult}: one linear probe per labelled factor. Each split is
    (features [N, D], {factor: int labels [N]}) (e.g. `fdm.data.factors` columns);
    `factors` defaults to every label of the train split; protocol: refit, metric of
    `linear_probe`."""
    names = tuple(train[1]) if factors is None else tuple(factors)
    missing = [n for n in names if any(n not in s[1] for s in (train, val, test))]
    if missing:
        raise UserError(f"factors {missing} are not labelled in every split; use names from "
                        f"{sorted(train[1])}")
    return {n: linear_probe(train[0], train[1][n], val[0], val[1][n], test[0], test[1][n],
                            c_grid, **protocol) for n in names}


def segments(z: np.ndarray, num_segments: int,
             groups: Sequence[Sequence[int]] | None = None) -> list[np.ndarray]:
    """z [N, D] cut into num_segments equal segments of D/n dims; returns one [N, D/n * |g|]
    array per group g (0-based segment indices, concatenated in order; default: each
    segment alone)."""
    z = np.asarray(z)
    if z.ndim != 2 or num_segments < 1 or z.shape[1] % num_segments:
        raise UserError(f"z {z.shape} cannot be cut into {num_segments} equal segments; "
                        "pass z [N, D] with D a multiple of num_segments")
    groups = [(k,) for k in range(num_segments)] if groups is None else groups
    bad = [g for g in groups if not len(g) or any(not 0 <= k < num_segments for k in g)]
    if bad:
        raise UserError(f"segment groups {bad} are invalid; use non-empty tuples of indices "
                        f"in [0, {num_segments})")
    parts = np.split(z, num_segments, axis=1)
    return [np.concatenate([parts[k] for k in g], axis=1) for g in groups]


def segment_probes(z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray,
                   y_val: np.ndarray, z_test: np.ndarray, y_test: np.ndarray,
                   num_segments: int, groups: Sequence[Sequence[int]] | None = None,
                   c_grid: Sequence[float] = C_GRID, **protocol) -> list[ProbeResult]:
    """One linear probe per segment (or per group of segments, see `segments`) of
    z_* [N_*, D] for the labels y_* [N_*]; results in the order of the groups; protocol:
    refit, metric of `linear_probe`."""
    cut = [segments(z, num_segments, groups) for z in (z_train, z_val, z_test)]
    return [linear_probe(tr, y_train, va, y_val, te, y_test, c_grid, **protocol)
            for tr, va, te in zip(*cut)]


def pixel_features(images: np.ndarray, downsample: int = 1) -> np.ndarray:
    """float32 [N, (H/f)(W/f)C]: images [N, H, W, C] (uint8, read as x/127.5 - 1, or
    float already in [-1, 1]) average-pooled over f x f blocks (f = downsample, dividing
    H and W), flattened."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise UserError(f"images {images.shape} are invalid; pass [N, H, W, C]")
    n, h, w, ch = images.shape
    if downsample < 1 or h % downsample or w % downsample:
        raise UserError(f"downsample={downsample} does not divide the {h}x{w} images; use "
                        "a positive divisor of both sides")
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x = x / 127.5 - 1.0
    f = downsample
    x = x.reshape(n, h // f, f, w // f, f, ch).mean(axis=(2, 4))
    return x.reshape(n, -1)


def pixel_probes(train: Split, val: Split, test: Split, downsample: int = 1,
                 factors: Sequence[str] | None = None,
                 c_grid: Sequence[float] = C_GRID) -> dict[str, ProbeResult]:
    """The raw-pixel baseline: `factor_probes` on `pixel_features(images, downsample)`;
    each split is (images [N, H, W, C], {factor: int labels [N]})."""
    feats = [(pixel_features(s[0], downsample), s[1]) for s in (train, val, test)]
    return factor_probes(*feats, factors=factors, c_grid=c_grid)


# ------------------------------------------------------------------ few-shot episodes
@dataclasses.dataclass(frozen=True)
class Episodes:
    """E episodes of `ways` classes: classes int [E, ways] (dataset labels; episode class
    w is classes[:, w]); support int [E, ways * shots] and query int [E, ways * queries]:
    example indices, class-major (support[:, w*shots:(w+1)*shots] belong to class w)."""
    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray
    shots: int
    queries: int

    @property
    def support_labels(self) -> np.ndarray:
        """int [ways * shots]: the episode-local class of each support column."""
        return np.repeat(np.arange(self.classes.shape[1]), self.shots)

    @property
    def query_labels(self) -> np.ndarray:
        """int [ways * queries]: the episode-local class of each query column."""
        return np.repeat(np.arange(self.classes.shape[1]), self.queries)


@dataclasses.dataclass(frozen=True)
class FewShotResult:
    """Query accuracy over episodes: mean, std, ci95 (half-width of the 95 % interval of
    the mean, 1.96 std / sqrt(E)) and accuracies float [E], all as fractions in [0, 1]."""
    mean: float
    std: float
    ci95: float
    accuracies: np.ndarray


def sample_episodes(labels: np.ndarray, num_episodes: int, ways: int = FEW_SHOT_WAYS,
                    shots: int = 1, queries: int = FEW_SHOT_QUERIES,
                    seed: int = 0) -> Episodes:
    """The episodes of the module doc over labels int [N]."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"labels {labels.shape} {labels.dtype} are invalid; pass int [N]")
    if min(num_episodes, ways, shots, queries) < 1:
        raise UserError(f"num_episodes={num_episodes}, ways={ways}, shots={shots}, "
                        f"queries={queries}: each must be at least 1")
    order = np.argsort(labels, kind="stable")
    values, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    eligible = np.flatnonzero(counts >= shots + queries)
    if len(eligible) < ways:
        raise UserError(f"only {len(eligible)} classes have {shots + queries} examples "
                        f"(shots + queries) but ways={ways}; lower ways, shots or queries")
    classes = np.empty((num_episodes, ways), np.int64)
    picks = np.empty((num_episodes, ways, shots + queries), np.int64)
    for e in range(num_episodes):
        rng = np.random.default_rng([seed, e])
        chosen = rng.choice(eligible, ways, replace=False)
        classes[e] = values[chosen]
        for w, k in enumerate(chosen):
            picks[e, w] = order[starts[k] + rng.choice(counts[k], shots + queries,
                                                       replace=False)]
    return Episodes(classes=classes, support=picks[:, :, :shots].reshape(num_episodes, -1),
                    query=picks[:, :, shots:].reshape(num_episodes, -1), shots=shots,
                    queries=queries)


def sgd_orders(num_support: int, num_episodes: int, seed: int = 0,
               epochs: int = FEW_SHOT_EPOCHS, batch_size: int = FEW_SHOT_BATCH) -> np.ndarray:
    """int [E, epochs * ceil(S / batch_size), batch_size]: the support rows of every SGD
    step of every episode (module doc), -1 padding the last batch of each epoch."""
    batches = -(-num_support // batch_size)
    out = np.full((num_episodes, epochs, batches * batch_size), -1, np.int64)
    for e in range(num_episodes):
        u = np.random.default_rng([seed, e, 1]).random((epochs, num_support))
        out[e, :, :num_support] = np.argsort(u, axis=1)
    return out.reshape(num_episodes, epochs * batches, batch_size)


@functools.partial(jax.jit, static_argnames=("ways",))
def _train_heads(support, labels, orders, lr, weight_decay, ways: int):
    """Heads (W [E, D, ways], b [E, ways]) trained by SGD on support [E, S, D] with labels
    [S], steps orders [E, T, B] (-1: padding)."""

    def one(x, order):
        def loss(params, rows):
            valid = rows >= 0
            logits = x[jnp.maximum(rows, 0)] @ params[0] + params[1]
            ce = -jnp.take_along_axis(jax.nn.log_softmax(logits),
                                      labels[jnp.maximum(rows, 0)][:, None], axis=1)[:, 0]
            return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.sum(valid)

        def step(params, rows):
            grads = jax.grad(loss)(params, rows)
            return jax.tree.map(lambda p, g: p - lr * (g + weight_decay * p), params,
                                grads), None

        init = (jnp.zeros((x.shape[1], ways), x.dtype), jnp.zeros((ways,), x.dtype))
        return jax.lax.scan(step, init, order)[0]

    return jax.vmap(one)(support, orders)


def few_shot_eval(features: np.ndarray, labels: np.ndarray, num_episodes: int = 2000,
                  ways: int = FEW_SHOT_WAYS, shots: int = 1, queries: int = FEW_SHOT_QUERIES,
                  seed: int = 0, epochs: int = FEW_SHOT_EPOCHS, lr: float = FEW_SHOT_LR,
                  weight_decay: float = FEW_SHOT_WEIGHT_DECAY,
                  batch_size: int = FEW_SHOT_BATCH) -> FewShotResult:
    """Table 4.2's ways-way shots-shot evaluation (module doc) of features [N, D] with
    class labels int [N] (e.g. `fdm.data.factors.joint_label`)."""
    features = np.asarray(features, np.float32)
    if features.ndim != 2 or len(features) != len(labels):
        raise UserError(f"features {features.shape} do not match labels of length "
                        f"{len(labels)}; pass features [N, D] and labels [N]")
    episodes = sample_episodes(labels, num_episodes, ways, shots, queries, seed)
    orders = sgd_orders(ways * shots, num_episodes, seed, epochs, batch_size)
    support_labels = jnp.asarray(episodes.support_labels)
    accuracies, chunk = [], min(_EPISODE_CHUNK, num_episodes)
    for lo in range(0, num_episodes, chunk):
        rows = np.arange(lo, lo + chunk) % num_episodes              # one static shape
        w, b = _train_heads(jnp.asarray(features[episodes.support[rows]]), support_labels,
                            jnp.asarray(orders[rows]), lr, weight_decay, ways)
        logits = jnp.einsum("eqd,edk->eqk", features[episodes.query[rows]], w) + b[:, None]
        hits = np.asarray(jnp.argmax(logits, axis=-1)) == episodes.query_labels
        accuracies.append(hits.mean(axis=1)[:min(chunk, num_episodes - lo)])
    acc = np.concatenate(accuracies)
    std = float(acc.std(ddof=1)) if num_episodes > 1 else 0.0
    return FewShotResult(mean=float(acc.mean()), std=std, ci95=1.96 * std / np.sqrt(len(acc)),
                         accuracies=acc)
