"""fdm.metrics.probes against independent references (seed 002 brief, sec. 5): the
logistic regression and the C selection against scikit-learn's LogisticRegression, the
episode sampler against a slow Python loop, the few-shot head against a torch SGD loop,
known answers on constructed features (separable, random, one informative segment)."""
import numpy as np
import pytest

from fdm.errors import UserError
from fdm.metrics import probes


def blobs(n, d, k, sep, seed):
    """Gaussian class clusters: features [n, d] float64, labels [n]; class means sep apart."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    means = sep * rng.standard_normal((k, d))
    return means[y] + rng.standard_normal((n, d)), y


def three_splits(n, d, k, sep, seed=0):
    x, y = blobs(3 * n, d, k, sep, seed)
    return [(x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]) for i in range(3)]


# ------------------------------------------------------------------ linear probe
def test_separable_labels_are_recovered():
    (xt, yt), (xv, yv), (xe, ye) = three_splits(300, 8, 4, sep=4.0)
    res = probes.linear_probe(xt, yt, xv, yv, xe, ye)
    assert res.accuracy >= 0.99 and res.val_accuracy >= 0.99
    assert abs(np.mean(res.predict(xe) == ye) - res.accuracy) < 1e-12


def test_random_labels_are_at_chance():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    y = rng.integers(0, 4, 3000)
    res = probes.linear_probe(x[:1000], y[:1000], x[1000:2000], y[1000:2000], x[2000:],
                              y[2000:])
    assert abs(res.accuracy - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 1000)


def test_fit_matches_sklearn_logistic_regression():
    """Same objective as LogisticRegression(C) (lbfgs, multinomial): weights, centred
    intercepts and probabilities agree to 1e-5 when both run to a tight tolerance."""
    sklearn_lm = pytest.importorskip("sklearn.linear_model")
    x, y = blobs(400, 6, 3, sep=0.8, seed=2)                # overlapping: a finite optimum
    for c in (0.01, 1.0, 100.0):
        w, b = probes.fit_logistic(x, y, 3, c, max_iter=20000, tol=1e-10)
        ref = sklearn_lm.LogisticRegression(C=c, tol=1e-12, max_iter=20000).fit(x, y)
        np.testing.assert_allclose(w, ref.coef_.T, atol=1e-5 * max(1.0, np.abs(w).max()))
        np.testing.assert_allclose(b, ref.intercept_ - ref.intercept_.mean(), atol=1e-5)
        logits = x @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(p / p.sum(1, keepdims=True), ref.predict_proba(x),
                                   atol=1e-6)


def test_float32_features_fit_like_float64():
    x, y = blobs(400, 6, 3, sep=0.8, seed=3)
    w64, b64 = probes.fit_logistic(x, y, 3, 1.0, max_iter=5000, tol=1e-8)
    w32, b32 = probes.fit_logistic(x.astype(np.float32), y, 3, 1.0, max_iter=5000, tol=1e-6)
    np.testing.assert_allclose(w32, w64, atol=1e-4)
    np.testing.assert_allclose(b32, b64, atol=1e-4)


def test_selection_and_standardisation_match_an_sklearn_loop():
    """C chosen as scikit-learn would be (standardise on train, fit each C, best val
    accuracy, ties to the smaller C), and the same test accuracy."""
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    (xt, yt), (xv, yv), (xe, ye) = three_splits(200, 12, 3, sep=0.5, seed=4)
    xt = xt * np.arange(1, 13) + 5.0                                     # scales matter
    xv, xe = xv * np.arange(1, 13) + 5.0, xe * np.arange(1, 13) + 5.0
    grid = (0.001, 0.01, 0.1, 1.0, 10.0)
    res = probes.linear_probe(xt, yt, xv, yv, xe, ye, c_grid=grid)
    scaler = StandardScaler().fit(xt)
    fits = [LogisticRegression(C=c, max_iter=10000).fit(scaler.transform(xt), yt)
            for c in grid]
    val = [f.score(scaler.transform(xv), yv) for f in fits]
    np.testing.assert_allclose(res.val_accuracies, val, atol=1.5 / len(yv))
    best = int(np.argmax(val))
    assert res.c == grid[best] and res.c_grid == grid
    assert abs(res.accuracy - fits[best].score(scaler.transform(xe), ye)) <= 1.5 / len(ye)
    np.testing.assert_allclose(res.mean, scaler.mean_)
    np.testing.assert_allclose(res.scale, scaler.scale_)


def test_refit_on_train_plus_val_matches_an_sklearn_loop():
    """refit=True (the transfer suite): C chosen on val as without refit, then
    LogisticRegression(C) on standardised train + val scores test the same."""
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    (xt, yt), (xv, yv), (xe, ye) = three_splits(150, 10, 3, sep=0.5, seed=6)
    scale = np.arange(1, 11)
    xt, xv, xe = xt * scale + 2.0, xv * scale - 1.0, xe * scale
    grid = (0.01, 0.1, 1.0, 10.0)
    plain = probes.linear_probe(xt, yt, xv, yv, xe, ye, c_grid=grid)
    res = probes.linear_probe(xt, yt, xv, yv, xe, ye, c_grid=grid, refit=True)
    assert res.c == plain.c and res.val_accuracies == plain.val_accuracies
    x_all, y_all = np.concatenate([xt, xv]), np.concatenate([yt, yv])
    scaler = StandardScaler().fit(x_all)
    ref = LogisticRegression(C=res.c, tol=1e-10, max_iter=20000).fit(
        scaler.transform(x_all), y_all)
    np.testing.assert_allclose(res.mean, scaler.mean_)
    np.testing.assert_allclose(res.scale, scaler.scale_)
    np.testing.assert_allclose(res.weights, ref.coef_.T, atol=2e-3 * np.abs(res.weights).max())
    assert abs(res.accuracy - ref.score(scaler.transform(xe), ye)) <= 1.5 / len(ye)


def test_mean_per_class_score_against_a_loop():
    rng = np.random.default_rng(7)
    y = rng.choice(5, 400, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    pred = np.where(rng.random(400) < 0.3 + 0.1 * y, y, (y + 1) % 5)
    per_class = [sum(p == k for p, t in zip(pred, y) if t == k) / sum(t == k for t in y)
                 for k in sorted(set(y))]
    assert probes.score(pred, y, "mean_per_class") == pytest.approx(np.mean(per_class))
    assert probes.score(pred, y, "accuracy") == pytest.approx(np.mean(pred == y))
    assert probes.score(pred, y, "mean_per_class") != pytest.approx(np.mean(pred == y))
    (xt, yt), (xv, yv), (xe, ye) = three_splits(200, 6, 3, sep=0.6, seed=8)
    res = probes.linear_probe(xt, yt, xv, yv, xe, ye, metric="mean_per_class")
    assert res.accuracy == pytest.approx(probes.score(res.predict(xe), ye, "mean_per_class"))
    with pytest.raises(UserError, match="metric 'top5'"):
        probes.linear_probe(xt, yt, xv, yv, xe, ye, metric="top5")


def test_factor_probes_one_per_factor():
    (xt, yt), (xv, yv), (xe, ye) = three_splits(200, 6, 3, sep=4.0, seed=5)
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 2, 200) for _ in range(3)]
    splits = [(x, {"a": y, "b": z}) for (x, y), z in zip(((xt, yt), (xv, yv), (xe, ye)), noise)]
    res = probes.factor_probes(*splits)
    assert list(res) == ["a", "b"] and res["a"].accuracy > 0.97
    assert list(probes.factor_probes(*splits, factors=["b"])) == ["b"]
    with pytest.raises(UserError, match="not labelled"):
        probes.factor_probes(*splits, factors=["c"])


# ------------------------------------------------------------------ segments and pixels
def test_only_the_informative_segment_decodes_the_factor():
    """z = 4 segments of 3 dims; the labels live in segment 2 only."""
    rng = np.random.default_rng(6)
    n, k = 900, 4
    y = rng.integers(0, k, n)
    z = rng.standard_normal((n, 12))
    z[:, 6:9] += 4.0 * np.eye(k, 3)[y] - 4.0 * (y == 3)[:, None]
    s = [slice(0, 300), slice(300, 600), slice(600, 900)]
    res = probes.segment_probes(z[s[0]], y[s[0]], z[s[1]], y[s[1]], z[s[2]], y[s[2]], 4)
    acc = [r.accuracy for r in res]
    assert acc[2] > 0.97 and max(acc[:2] + acc[3:]) < 0.25 + 4 * np.sqrt(0.1875 / 300)
    grouped = probes.segment_probes(z[s[0]], y[s[0]], z[s[1]], y[s[1]], z[s[2]], y[s[2]], 4,
                                    groups=((0, 1), (2, 3)))
    assert grouped[1].accuracy > 0.97 and grouped[0].accuracy < 0.4
    assert grouped[1].weights.shape == (6, k)


def test_segments_cut_in_order_and_check_inputs():
    z = np.arange(2 * 8).reshape(2, 8)
    parts = probes.segments(z, 4, groups=((3,), (0, 2)))
    np.testing.assert_array_equal(parts[0], z[:, 6:8])
    np.testing.assert_array_equal(parts[1], np.concatenate([z[:, 0:2], z[:, 4:6]], 1))
    with pytest.raises(UserError, match="multiple of num_segments"):
        probes.segments(z, 3)
    with pytest.raises(UserError, match="segment groups"):
        probes.segments(z, 4, groups=((4,),))


def test_pixel_features_pool_like_a_loop():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (3, 8, 12, 3)).astype(np.uint8)
    out = probes.pixel_features(images, downsample=4)
    ref = np.zeros((3, 2, 3, 3))
    for n in range(3):
        for i in range(2):
            for j in range(3):
                block = images[n, 4 * i:4 * i + 4, 4 * j:4 * j + 4].astype(np.float64)
                ref[n, i, j] = (block / 127.5 - 1.0).mean(axis=(0, 1))
    assert out.dtype == np.float32 and out.shape == (3, 18)
    np.testing.assert_allclose(out, ref.reshape(3, -1), atol=1e-6)
    np.testing.assert_allclose(probes.pixel_features(images),
                               images.reshape(3, -1) / 127.5 - 1.0, atol=1e-6)
    with pytest.raises(UserError, match="downsample=5"):
        probes.pixel_features(images, 5)


def test_pixel_probes_read_a_brightness_label():
    rng = np.random.default_rng(8)
    images = rng.integers(0, 200, (600, 4, 4, 3)).astype(np.uint8)
    label = rng.integers(0, 2, 600)
    images[label == 1, :2] += 55                                        # top half brighter
    splits = [(images[i::3], {"bright": label[i::3]}) for i in range(3)]
    res = probes.pixel_probes(*splits, downsample=2)
    assert res["bright"].accuracy > 0.95 and res["bright"].weights.shape == (12, 2)


def test_bad_probe_inputs_give_one_line_errors():
    x, y = np.zeros((4, 3)), np.zeros(4, int)
    with pytest.raises(UserError, match="features sizes|feature sizes"):
        probes.linear_probe(x, y, np.zeros((4, 2)), y, x, y)
    with pytest.raises(UserError, match="labels"):
        probes.linear_probe(x, y.astype(float), x, y, x, y)
    with pytest.raises(UserError, match="c_grid"):
        probes.linear_probe(x, y, x, y, x, y, c_grid=(0.0,))


# ------------------------------------------------------------------ few-shot episodes
def slow_episodes(labels, num_episodes, ways, shots, queries, seed):
    """Reference sampler: class lists built by a Python loop, one episode at a time, the
    same generator calls (classes, then per class shots + queries positions)."""
    members = {}
    for i, label in enumerate(labels.tolist()):
        members.setdefault(label, []).append(i)
    eligible = sorted(c for c, m in members.items() if len(m) >= shots + queries)
    out = []
    for e in range(num_episodes):
        rng = np.random.default_rng([seed, e])
        chosen = rng.choice(np.arange(len(eligible)), ways, replace=False)
        support, query = [], []
        for pos in chosen:
            cls = members[eligible[pos]]
            picked = [cls[j] for j in rng.choice(len(cls), shots + queries, replace=False)]
            support.append(picked[:shots])
            query.append(picked[shots:])
        out.append(([eligible[p] for p in chosen], support, query))
    return out


@pytest.fixture(scope="module")
def imbalanced_labels():
    """10 classes, 7-60 examples each, shuffled; class 9 has too few for 5 + 15."""
    counts = [60, 40, 33, 25, 21, 50, 30, 22, 45, 7]
    labels = np.repeat(np.arange(10), counts)
    return np.random.default_rng(9).permutation(labels)


@pytest.mark.parametrize("shots", [1, 5])
def test_episode_sampler_matches_a_slow_loop(imbalanced_labels, shots):
    labels = imbalanced_labels
    ep = probes.sample_episodes(labels, 30, ways=5, shots=shots, queries=15, seed=11)
    ref = slow_episodes(labels, 30, 5, shots, 15, 11)
    assert ep.support.shape == (30, 5 * shots) and ep.query.shape == (30, 75)
    for e, (classes, support, query) in enumerate(ref):
        np.testing.assert_array_equal(ep.classes[e], classes)
        np.testing.assert_array_equal(ep.support[e], np.concatenate(support))
        np.testing.assert_array_equal(ep.query[e], np.concatenate(query))
        assert len(set(classes)) == 5 and 9 not in classes                 # eligible only
        assert not set(ep.support[e]) & set(ep.query[e])
        assert len(set(ep.support[e])) == 5 * shots and len(set(ep.query[e])) == 75
        np.testing.assert_array_equal(labels[ep.support[e]], ep.classes[e][ep.support_labels])
        np.testing.assert_array_equal(labels[ep.query[e]], ep.classes[e][ep.query_labels])
        for w in range(5):                                              # exactly C per class
            assert (labels[ep.support[e]] == classes[w]).sum() == shots
    prefix = probes.sample_episodes(labels, 7, ways=5, shots=shots, queries=15, seed=11)
    np.testing.assert_array_equal(prefix.support, ep.support[:7])      # episode e is fixed
    other = probes.sample_episodes(labels, 30, ways=5, shots=shots, queries=15, seed=12)
    assert not np.array_equal(other.support, ep.support)


def test_episode_sampler_errors(imbalanced_labels):
    with pytest.raises(UserError, match="only 9 classes"):
        probes.sample_episodes(imbalanced_labels, 3, ways=10, shots=5)
    with pytest.raises(UserError, match="at least 1"):
        probes.sample_episodes(imbalanced_labels, 0)


def test_sgd_orders_visit_every_support_row_once_per_epoch():
    orders = probes.sgd_orders(num_support=5, num_episodes=3, seed=0, epochs=4, batch_size=4)
    assert orders.shape == (3, 8, 4)                                   # 2 batches per epoch
    epochs = orders.reshape(3, 4, 8)
    assert (np.sort(epochs, axis=2)[:, :, 3:] == np.arange(5)).all()
    assert ((epochs == -1).sum(axis=2) == 3).all()
    assert (epochs[:, :, 5:] == -1).all()                             # padding at the end


def torch_episode_accuracy(torch, features, labels, ep, orders, e, epochs_lr_wd):
    """The thesis's head in PyTorch: nn.Linear (zeroed), SGD(lr, weight_decay), mean CE
    per mini-batch in the given order; returns (query accuracy, weight [D, W], bias)."""
    lr, wd = epochs_lr_wd
    x = torch.tensor(features[ep.support[e]])
    y = torch.tensor(ep.support_labels)
    head = torch.nn.Linear(features.shape[1], ep.classes.shape[1])
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(head.parameters(), lr=lr, weight_decay=wd)
    for rows in orders[e]:
        rows = torch.tensor(rows[rows >= 0])
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(x[rows]), y[rows]).backward()
        opt.step()
    with torch.no_grad():
        pred = head(torch.tensor(features[ep.query[e]])).argmax(1).numpy()
    return (float(np.mean(pred == ep.query_labels)), head.weight.detach().numpy().T,
            head.bias.detach().numpy())


def test_few_shot_head_matches_torch_sgd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    labels = np.repeat(np.arange(8), 25)
    features = (rng.standard_normal((8, 10))[labels] * 1.0
                + 1.5 * rng.standard_normal((200, 10))).astype(np.float32)
    ways, shots, epochs = 5, 5, 20
    res = probes.few_shot_eval(features, labels, num_episodes=6, ways=ways, shots=shots,
                               seed=3, epochs=epochs)
    ep = probes.sample_episodes(labels, 6, ways=ways, shots=shots, seed=3)
    orders = probes.sgd_orders(ways * shots, 6, seed=3, epochs=epochs)
    ref = [torch_episode_accuracy(torch, features, labels, ep, orders, e, (0.01, 0.001))
           for e in range(6)]
    np.testing.assert_allclose(res.accuracies, [r[0] for r in ref], atol=1e-12)
    assert 0.3 < res.mean < 1.0                                        # not trivial
    w, b = probes._train_heads(features[ep.support[:1]], ep.support_labels, orders[:1],
                               0.01, 0.001, ways)
    np.testing.assert_allclose(w[0], ref[0][1], atol=1e-5)
    np.testing.assert_allclose(b[0], ref[0][2], atol=1e-5)


def test_few_shot_known_answers_and_interval():
    rng = np.random.default_rng(14)
    labels = np.repeat(np.arange(12), 30)
    separable = 5.0 * np.eye(12)[labels] + 0.1 * rng.standard_normal((360, 12))
    res = probes.few_shot_eval(separable, labels, num_episodes=40, shots=1)
    assert res.mean == 1.0 and res.std == 0.0 and res.accuracies.shape == (40,)
    noise = rng.standard_normal((360, 12))
    res = probes.few_shot_eval(noise, labels, num_episodes=300, shots=5)
    assert abs(res.mean - 0.2) < 4 * res.std / np.sqrt(300)
    np.testing.assert_allclose(res.ci95, 1.96 * res.accuracies.std(ddof=1) / np.sqrt(300))
    with pytest.raises(UserError, match="do not match"):
        probes.few_shot_eval(noise[:10], labels, num_episodes=2)
