"""Tests of metrics.py against closed forms, independent numpy/scipy code and invariances."""
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from conftest import benchmark  # noqa: E402

baselines, evaluate_cli = benchmark("baselines"), benchmark("evaluate")


class FactorsAsObservations:
    """Toy ground truth whose 1 x 1 x k observations are the normalised factors."""

    factor_names = ("a", "b", "c")
    factor_sizes = (6, 5, 4)

    def sample_factors(self, num, rng):
        return np.stack([rng.integers(size, size=num) for size in self.factor_sizes], 1)

    def sample_observations_from_factors(self, factors, rng):
        scale = np.array(self.factor_sizes, np.float32) - 1
        return (factors / scale).astype(np.float32).reshape(len(factors), 1, 1, -1)

    def sample(self, num, rng):
        factors = self.sample_factors(num, rng)
        return factors, self.sample_observations_from_factors(factors, rng)


class Squares(FactorsAsObservations):
    """Toy ground truth: a square (side size/8) at (x, y) of one of 3 intensities on black."""

    factor_names = ("x", "y", "intensity")
    factor_sizes = (6, 6, 3)

    def __init__(self, size=32):
        self.size = size

    def sample_observations_from_factors(self, factors, rng):
        side = self.size // 8
        images = np.zeros((len(factors), self.size, self.size, 1), np.float32)
        rows = np.arange(len(factors))[:, None, None]
        ys = (side * (factors[:, 1] + 1))[:, None, None] + np.arange(side)[None, :, None]
        xs = (side * (factors[:, 0] + 1))[:, None, None] + np.arange(side)[None, None, :]
        images[rows, ys, xs, 0] = ((factors[:, 2] + 1) / 3)[:, None, None]
        return images


class CoarseSprites(FactorsAsObservations):
    """data.py's procedural sprites on a coarse grid (orientation 0), learnable in seconds."""

    factor_names = ("shape", "scale", "pos_x", "pos_y")
    factor_sizes = (3, 2, 4, 4)

    def __init__(self):
        self.sprites = pytest.importorskip("data").ground_truth_data("sprites")

    def sample_observations_from_factors(self, factors, rng):
        shape, scale, x, y = factors.T
        full = np.stack([shape, 5 * scale, np.zeros_like(shape), 10 * x, 10 * y], 1)
        return self.sprites.sample_observations_from_factors(full, rng)


def factor_codes(observations, noise_rng, mixing=0.0):
    """Codes copying the factors (plus `mixing` of the next factor) beside two noise dims."""
    scale = np.array(FactorsAsObservations.factor_sizes) - 1
    factors = observations.reshape(len(observations), -1) * scale
    copies = factors + mixing * np.roll(factors, 1, axis=1)
    return np.concatenate([copies, noise_rng.standard_normal((len(factors), 2))], axis=1)


def scipy_frechet(mu1, sigma1, mu2, sigma2):
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def random_covariance(rng, d):
    a = rng.normal(size=(d, 2 * d))
    return a @ a.T / (2 * d) + 0.05 * np.eye(d)


# --- Frechet distance and feature statistics ------------------------------------------


@pytest.mark.parametrize("d", [64, 512])
def test_frechet_distance_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    sigma1, sigma2 = random_covariance(rng, d), random_covariance(rng, d)
    expected = scipy_frechet(mu1, sigma1, mu2, sigma2)
    assert metrics.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)
    assert metrics.frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(expected, rel=1e-6)
    assert abs(metrics.frechet_distance(mu1, sigma1, mu1, sigma1)) < 1e-8 * np.trace(sigma1)


@pytest.mark.parametrize("n_x, n_y", [(5, 9), (9, 5), (24, 24)])
def test_feature_distance_of_few_wide_samples_equals_the_covariances_route(n_x, n_y):
    """With no more samples than dimensions, feature_distance goes through the samples' cross
    product (an SVD); it must equal scipy's sqrtm route on the same statistics."""
    rng = np.random.default_rng(n_x)
    x = [rng.normal(size=(n_x - 2, 24)), rng.normal(size=(2, 24))]  # two batches
    y = [rng.normal(1.0, 2.0, size=(n_y, 24)) @ rng.normal(size=(24, 24))]
    stats = [metrics.feature_statistics(batches) for batches in (x, y)]
    expected = scipy_frechet(*stats[0], *stats[1])
    assert metrics.feature_distance(x, y) == pytest.approx(expected, rel=1e-8)  # sqrtm: singular
    assert metrics.feature_distance(x, y, stats) == pytest.approx(expected, rel=1e-8)
    assert abs(metrics.feature_distance(x, x)) < 1e-9 * np.trace(stats[0][1])


def test_frechet_distance_of_isotropic_gaussians():
    d, rng = 32, np.random.default_rng(1)
    m1, m2, s1, s2 = rng.normal(size=d), rng.normal(size=d), 0.7, 1.9
    expected = np.sum((m1 - m2) ** 2) + d * (s1 - s2) ** 2
    distance = metrics.frechet_distance(m1, s1**2 * np.eye(d), m2, s2**2 * np.eye(d))
    assert distance == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_lapack_route_on_cpu_equals_tensorflow_route_and_sqrtm(monkeypatch):
    """On a CPU the two eigendecompositions are LAPACK's (scipy.linalg.eigh); where a GPU is
    visible, TensorFlow's. Both equal scipy.linalg.sqrtm's route within 1e-9."""
    d, rng = 64, np.random.default_rng(3)
    args = (rng.normal(size=d), random_covariance(rng, d), rng.normal(size=d),
            random_covariance(rng, d))
    expected, eigh, calls = scipy_frechet(*args), scipy.linalg.eigh, []
    monkeypatch.setattr(scipy.linalg, "eigh", lambda *a, **k: calls.append(1) or eigh(*a, **k))
    lapack = metrics.frechet_distance(*args)
    assert len(calls) == 2 and lapack == pytest.approx(expected, rel=1e-9)
    devices = tf.config.list_logical_devices
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else devices(kind))
    assert metrics.frechet_distance(*args) == pytest.approx(lapack, rel=1e-9)
    assert len(calls) == 2  # TensorFlow's eigh this time


def test_feature_statistics_match_numpy_over_uneven_batches():
    rng = np.random.default_rng(2)
    features = 1000.0 + rng.normal(size=(60, 7)) @ rng.normal(size=(7, 7))  # large offset
    batches = np.split(features, [1, 6, 6, 23, 57])  # sizes 1, 5, 0, 17, 34, 3
    mu, sigma = metrics.feature_statistics(iter(batches))
    np.testing.assert_allclose(mu, features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("batches, message", [
    ([np.ones((1, 3))], "at least 2 samples"),
    ([np.zeros((0, 3))], "at least 2 samples"),
    ([np.array([[0.0, np.nan], [1.0, 2.0]])], "NaN or infinite"),
    ([np.array([[0.0, np.inf], [1.0, 2.0]])], "NaN or infinite"),
    ([np.ones((3, 4)), np.ones((3, 5))], "mismatched dimensions"),
    ([np.ones(3)], r"\(n, d\)"),
])
def test_feature_statistics_errors(batches, message):
    with pytest.raises(ValueError, match=message):
        metrics.feature_statistics(batches)


def test_frechet_distance_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="of one d"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="of one d"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def test_fid_uses_first_num_samples_and_matches_scipy():
    rng = np.random.default_rng(3)
    real = rng.uniform(size=(50, 4, 4, 1)).astype(np.float32)
    fake = rng.uniform(size=(45, 4, 4, 1)).astype(np.float32) ** 2
    dataset = tf.data.Dataset.from_tensor_slices(real).batch(7)
    position = [0]

    def generate(n):
        position[0] += n
        return fake[position[0] - n:position[0]]

    flatten = lambda images: np.reshape(images, (len(images), -1))  # noqa: E731
    value = metrics.fid(dataset, generate, flatten, num_samples=40, batch_size=6)
    r, f = flatten(real[:40]).astype(np.float64), flatten(fake[:40]).astype(np.float64)
    expected = scipy_frechet(r.mean(0), np.cov(r, rowvar=False), f.mean(0), np.cov(f, rowvar=False))
    assert position[0] == 40
    assert value == pytest.approx(expected, rel=1e-6)


# --- FID's own noise: spread, floor, the one-point FID -----------------------------------


def gaussian_fid(real, fake):
    """FID of two (n, d) arrays, statistics from numpy and the distance from scipy."""
    return scipy_frechet(real.mean(0), np.cov(real, rowvar=False), fake.mean(0),
                         np.cov(fake, rowvar=False))


@pytest.mark.parametrize("shift, scale, low, high", [
    (0.3, 1.5, 0.75, 1.25),  # distinct distributions: the spread of independent draws
    (0.0, 1.0, 0.9, 3.0)])  # one distribution (the floor): never much below it, may be above
def test_fid_spread_follows_independent_full_size_draws(shift, scale, low, high):
    """Gaussian features: 200 independent full-size draws give FID's spread directly; the
    bootstrap of single draws, averaged over 10 of them, agrees within [low, high] x it."""
    rng, n, d = np.random.default_rng(0), 500, 8
    draw = lambda: (rng.standard_normal((n, d)),  # noqa: E731
                    shift + np.sqrt(scale) * rng.standard_normal((n, d)))
    truth = np.std([gaussian_fid(*draw()) for _ in range(200)], ddof=1)
    spreads = [metrics.fid_spread(*([x[:250], x[250:]] for x in draw())) for _ in range(10)]
    assert low * truth < np.mean(spreads) < high * truth, (np.mean(spreads), truth)


def test_fid_scores_of_one_point_at_the_real_mean_are_its_trace():
    """A generator drawing one point, the real mean, scores FID = tr(Sigma_real) (closed form:
    no mean term, no covariance of its own) with diversity 0; the real set against itself 0."""
    rng = np.random.default_rng(1)
    real = [rng.normal(size=(300, 6)) * np.arange(1, 7)]
    point = [np.tile(real[0].mean(0), (300, 1))]
    scores = metrics.fid_scores("fid_x", real, point, floor=1.5)
    trace = np.trace(np.cov(real[0], rowvar=False))
    assert scores["fid_x"] == pytest.approx(trace, rel=1e-9)
    assert scores["fid_x_trace"] == pytest.approx(trace, rel=1e-12)
    assert scores["fid_x_diversity"] == 0 and scores["fid_x_floor"] == 1.5
    assert scores["fid_x_spread"] > 0
    same = metrics.fid_scores("fid_x", real, real, floor=0.0)
    assert abs(same["fid_x"]) < 1e-8 and same["fid_x_diversity"] == pytest.approx(1.0)


class Stream:
    """An endless stream of batches of 8 of `images`, pass after pass, in one order."""

    def __init__(self, images):
        self.images = images

    def __iter__(self):
        while True:
            for start in range(0, len(self.images), 8):
                yield self.images[start:start + 8]


@pytest.mark.parametrize("natural", [True, False])
def test_floor_is_the_fid_of_the_next_disjoint_real_set(natural):
    """The floor: FID between the first n images and the next n of one stream, recomputed
    with numpy and scipy from the two disjoint halves."""
    images = np.random.default_rng(2).uniform(size=(64, 2, 2, 1)).astype(np.float32)
    flat = lambda batch: np.asarray(batch).reshape(len(batch), -1)  # noqa: E731
    real, floor = metrics.real_reference("real", flat, 32, lambda line: None, Stream(images),
                                         natural)
    assert np.array_equal(np.concatenate(real), flat(images[:32]))
    assert floor == pytest.approx(gaussian_fid(flat(images[:32]), flat(images[32:])), rel=1e-6)
    assert floor > 1e-3  # two sets, not one set twice (0 up to rounding)


def test_floor_of_natural_images_needs_twice_the_samples():
    """Natural images come in passes: 64 images give no two disjoint sets of 40 (a note);
    procedural ones are drawn afresh, an equal image being no repeat (a value)."""
    images = np.random.default_rng(3).uniform(size=(64, 2, 2, 1)).astype(np.float32)
    flat = lambda batch: np.asarray(batch).reshape(len(batch), -1)  # noqa: E731
    _, note = metrics.real_reference("real", flat, 40, lambda line: None, Stream(images), True)
    assert note == "not measured: the data has fewer than 80 images"
    _, floor = metrics.real_reference("real", flat, 40, lambda line: None, Stream(images), False)
    assert isinstance(floor, float)


# --- FactorVAE metric and MIG ------------------------------------------------------


def reference_mig(codes, factors, num_bins):
    """disentanglement_lib's MIG, pair by pair with np.unique counts."""
    binned = np.stack([np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in codes.T], 1)

    def mutual_info(a, b):
        _, joint = np.unique(np.stack([a, b], 1), axis=0, return_counts=True)
        _, pa = np.unique(a, return_counts=True)
        _, pb = np.unique(b, return_counts=True)
        entropy = lambda counts: -np.sum(counts / len(a) * np.log(counts / len(a)))  # noqa: E731
        return entropy(pa) + entropy(pb) - entropy(joint)

    mi = np.array([[mutual_info(binned[:, i], factors[:, k]) for k in range(factors.shape[1])]
                   for i in range(codes.shape[1])])
    entropy = np.array([mutual_info(f, f) for f in factors.T])
    top = np.sort(mi, axis=0)[::-1]
    return np.mean((top[0] - top[1]) / entropy)


def test_mig_matches_pairwise_reference():
    rng = np.random.default_rng(4)
    factors = FactorsAsObservations().sample_factors(3000, rng)
    codes = np.concatenate([factors + rng.normal(size=factors.shape) * [0.3, 1.0, 3.0],
                            rng.normal(size=(3000, 2))], axis=1)
    expected = reference_mig(codes, factors, 20)
    assert metrics.mig(codes, factors, 20) == pytest.approx(expected, abs=1e-12)


def test_factor_copies_score_perfectly():
    data = FactorsAsObservations()
    noise = np.random.default_rng(5)
    encode = lambda x: factor_codes(x, noise)  # noqa: E731
    score = metrics.factor_vae_score(data, encode, np.random.default_rng(0), num_variance=2000,
                                     batch_size=32, num_train=500, num_eval=300)
    assert score == dict(train_accuracy=1.0, eval_accuracy=1.0, num_active_dims=5)
    assert metrics.compute_mig(data, encode, np.random.default_rng(0), num_samples=5000) > 0.9


def test_independent_codes_score_chance():
    data = FactorsAsObservations()
    noise = np.random.default_rng(6)
    encode = lambda x: noise.standard_normal((len(x), 6))  # noqa: E731
    score = metrics.factor_vae_score(data, encode, np.random.default_rng(1), num_variance=2000,
                                     batch_size=32, num_train=600, num_eval=600)
    assert abs(score["eval_accuracy"] - 1 / 3) < 0.12
    assert metrics.compute_mig(data, encode, np.random.default_rng(1), num_samples=5000) < 0.05


def test_scores_invariant_to_permuting_and_rescaling_code_dims():
    data, permutation = FactorsAsObservations(), np.array([3, 0, 4, 2, 1])
    scale = np.array([0.5, 2.0, 4.0, 0.25, 8.0])  # powers of two: rescaling is exact

    def scores(transform):
        noise = np.random.default_rng(7)
        encode = lambda x: transform(factor_codes(x, noise, mixing=0.8))  # noqa: E731
        fvm = metrics.factor_vae_score(data, encode, np.random.default_rng(2), num_variance=1000,
                                       batch_size=16, num_train=300, num_eval=200)
        return fvm, metrics.compute_mig(data, encode, np.random.default_rng(2), num_samples=3000)

    plain = scores(lambda codes: codes)
    assert 0.0 < plain[1] < 0.9 and plain[0]["train_accuracy"] < 1.0  # not trivially perfect
    fvm, mig = scores(lambda codes: codes[:, permutation] * scale)
    assert fvm == plain[0]
    assert mig == pytest.approx(plain[1], rel=1e-12)  # equal up to summation order


def test_fvm_protocols_disentanglement_lib_and_paper():
    """The paper's protocol votes 800 times on batches of 100 with one factor fixed (after
    10,000 observations for the global variances); disentanglement_lib's 10,000 + 5,000 times
    on batches of 64. Factor copies score 1 under both."""
    data, noise, seen = FactorsAsObservations(), np.random.default_rng(8), []

    def encode(observations):
        seen.append(observations.reshape(len(observations), -1))
        return factor_codes(observations, noise)

    expected = dict(factor_vae_score=(64, 15_000), factor_vae_score_paper=(100, 800))
    for name, (batch, votes) in expected.items():
        seen.clear()
        score = metrics.factor_vae_score(data, encode, np.random.default_rng(0),
                                         **metrics.FVM_PROTOCOLS[name])
        observations = np.concatenate(seen)
        assert len(observations) == 10_000 + batch * votes, name
        batches = observations[10_000:].reshape(votes, batch, -1)
        assert np.all(np.any(np.all(batches == batches[:, :1], axis=1), axis=1)), name
        assert score["train_accuracy"] == 1.0 and score.get("eval_accuracy", 1.0) == 1.0
    assert "eval_accuracy" not in score  # the paper's score is its train accuracy


def reference_factor_vae_score(factors, codes, num_variance, batch_size, num_train, num_eval):
    """disentanglement_lib's FVM recomputed from what the encoder saw and returned, in the
    order the votes are cast: num_variance rows for the global variances, then batches of
    batch_size rows, each with one factor fixed: num_train training votes, then num_eval
    held-out ones. Each vote: (argmin over active dims of local / global variance, the
    fixed factor); the classifier maps a dim to its most voted factor in training."""
    global_variances = np.var(codes[:num_variance], axis=0, ddof=1)
    active = np.sqrt(global_variances) >= 0.05
    votes = []
    for start in range(num_variance, len(codes), batch_size):
        batch = slice(start, start + batch_size)
        fixed, = np.flatnonzero(np.all(factors[batch] == factors[start], axis=0))
        ratios = np.var(codes[batch], axis=0, ddof=1)[active] / global_variances[active]
        votes.append((np.argmin(ratios), fixed))
    assert len(votes) == num_train + num_eval
    table = np.zeros((active.sum(), factors.shape[1]), int)
    for dim, factor in votes[:num_train]:
        table[dim, factor] += 1
    accuracy = lambda cast: np.mean([table[dim].argmax() == k for dim, k in cast])  # noqa: E731
    return dict(train_accuracy=accuracy(votes[:num_train]),
                eval_accuracy=accuracy(votes[num_train:]), num_active_dims=active.sum())


class RecordingEncoder:
    """encode_fn(observations of FactorsAsObservations) -> code(factors, rows), rows numbering
    the observations in the order encoded; keeps the factors and codes."""

    def __init__(self, code):
        self.code, self.factors, self.codes = code, [], []

    def __call__(self, observations):
        scale = np.array(FactorsAsObservations.factor_sizes) - 1
        factors = np.round(observations.reshape(len(observations), -1) * scale).astype(int)
        rows = sum(map(len, self.factors)) + np.arange(len(factors))
        self.factors.append(factors)
        self.codes.append(np.asarray(self.code(factors, rows), np.float64))
        return self.codes[-1]

    def seen(self):
        return np.concatenate(self.factors), np.concatenate(self.codes)


def test_fvm_equals_a_recomputation_from_the_encoded_batches():
    """Mixed, noisy, rescaled codes beside a collapsed dim (std < 0.05: no vote): both
    accuracies and the active dims equal reference_factor_vae_score's, and are not trivial."""
    sizes = dict(num_variance=1500, batch_size=24, num_train=400, num_eval=300)
    noise = np.random.default_rng(10)

    def code(factors, rows):
        mixed = factors + 0.8 * np.roll(factors, 1, axis=1) + 0.3 * noise.standard_normal(
            factors.shape)
        return np.concatenate([mixed * [1.0, 3.0, 0.5], noise.standard_normal((len(rows), 2)),
                               0.01 * noise.standard_normal((len(rows), 1))], axis=1)

    encode = RecordingEncoder(code)
    score = metrics.factor_vae_score(FactorsAsObservations(), encode, np.random.default_rng(3),
                                     **sizes)
    expected = reference_factor_vae_score(*encode.seen(), **sizes)
    assert score == pytest.approx(expected, abs=1e-12)
    assert expected["num_active_dims"] == 5
    assert 0.4 < expected["eval_accuracy"] < 0.95 and expected["train_accuracy"] < 0.95


def test_fvm_scores_held_out_votes_with_the_training_votes_classifier():
    """Codes copy factor j to dim j while the global variances and the training votes are
    taken, and swap dims 0 and 1 for the held-out votes: training accuracy 1 (dim j ->
    factor j), held-out accuracy the share of held-out votes with factor 2 fixed (a vote
    with factor 0 fixed picks dim 1, which the training votes map to factor 1)."""
    sizes = dict(num_variance=1000, batch_size=16, num_train=200, num_eval=150)
    held_out = sizes["num_variance"] + sizes["batch_size"] * sizes["num_train"]
    encode = RecordingEncoder(lambda factors, rows: np.where(
        (rows >= held_out)[:, None], factors[:, [1, 0, 2]], factors))
    score = metrics.factor_vae_score(FactorsAsObservations(), encode, np.random.default_rng(9),
                                     **sizes)
    factors = encode.seen()[0][held_out:].reshape(sizes["num_eval"], sizes["batch_size"], 3)
    fixed = np.all(factors == factors[:, :1], axis=1)  # (held-out votes, factors)
    assert np.all(fixed.sum(axis=1) == 1)
    share = fixed[:, 2].mean()
    assert 0.2 < share < 0.5
    assert score == dict(train_accuracy=1.0, eval_accuracy=pytest.approx(share, abs=1e-12),
                         num_active_dims=3)


def test_mig_errors():
    with pytest.raises(ValueError, match="at least two values"):
        metrics.mig(np.random.default_rng(0).normal(size=(10, 3)), np.zeros((10, 2), int))
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.mig(np.full((10, 3), np.nan), np.arange(20).reshape(10, 2))
    with pytest.raises(ValueError, match="codes"):
        metrics.mig(np.ones((10, 3)), np.ones((9, 2), int))


# --- Feature extractors ----------------------------------------------------------


def test_factor_classifier_learns_the_factors():
    classifier, accuracy = metrics.train_factor_classifier(CoarseSprites(), steps=150,
                                                           batch_size=64)
    assert set(accuracy) == set(CoarseSprites.factor_names)
    assert min(accuracy.values()) > 0.9, accuracy  # chance: 1/2 to 1/4
    features_fn = metrics.classifier_features_fn(classifier)
    images = Squares(128).sample(3, np.random.default_rng(0))[1]  # resized to 64 x 64
    assert features_fn(images).shape == (3, 256)


class CountingSquares(Squares):
    """Squares counting the training batches drawn (batches of `batch_size`) per call."""

    def __init__(self, size=8, batch_size=8):
        super().__init__(size)
        self.batch_size, self.batches = batch_size, 0

    def sample(self, num, rng):
        self.batches += num == self.batch_size
        return super().sample(num, rng)


def test_classifier_cache_is_keyed_by_its_training(tmp_path, monkeypatch):
    path, data = str(tmp_path / "classifier.keras"), CountingSquares()
    trained, record = metrics.load_or_train_factor_classifier(path, data, steps=2, batch_size=8)
    assert sorted(os.listdir(tmp_path)) == ["classifier.json", "classifier.keras"]  # no temp
    assert data.batches == 2 and set(record["accuracy"]) == set(Squares.factor_names)
    loaded, cached = metrics.load_or_train_factor_classifier(path, None, steps=2, batch_size=8)
    images = Squares(8).sample(4, np.random.default_rng(0))[1]
    np.testing.assert_allclose(metrics.classifier_features_fn(loaded)(images),
                               metrics.classifier_features_fn(trained)(images), rtol=1e-6)
    assert cached["accuracy"] == record["accuracy"]  # from the sidecar, as measured
    trainings = []
    monkeypatch.setattr(metrics, "train_factor_classifier", lambda *args: (
        trainings.append(args[1:4]) or (trained, {"x": 1.0})))
    for other in (dict(steps=3), dict(seed=1), dict(batch_size=4), dict(dataset="other"),
                  dict(dataset="other")):
        asked = dict(dict(steps=2, batch_size=8, seed=0), **other)
        metrics.load_or_train_factor_classifier(path, data, **asked)
        assert trainings[-1] == (asked["steps"], asked["batch_size"], asked["seed"])
    assert len(trainings) == 4  # each other training retrains; the same one again is reused


def test_inception_features_shapes_for_gray_and_rgb():
    features_fn = metrics.inception_features_fn(weights=None)
    assert features_fn(np.random.default_rng(0).uniform(size=(2, 32, 32, 1))).shape == (2, 2048)
    assert features_fn(np.random.default_rng(0).uniform(size=(1, 80, 80, 3))).shape == (1, 2048)


def test_inception_weights_errors(monkeypatch, tmp_path):
    missing = str(tmp_path / "inception.h5")
    with pytest.raises(RuntimeError, match="inception.h5.*local"):
        metrics.inception_features_fn(weights=missing)

    def no_network(**kwargs):
        raise Exception("URL fetch failure")

    monkeypatch.setattr(keras.applications, "InceptionV3", no_network)
    with pytest.raises(RuntimeError, match="'imagenet'.*local .h5"):
        metrics.inception_features_fn()


def test_evaluation_sizes_cap_each_protocol_by_num_samples_and_evaluate_logs_them(
        toy_runs, fake_datasets):
    fvm, gilbo_steps = metrics.evaluation_sizes(50_000)
    assert fvm["factor_vae_score"] == (dict(num_variance=10_000, batch_size=64, num_train=10_000,
                                            num_eval=5_000), 970_000)  # 10k + 64 x 15k
    assert fvm["factor_vae_score_paper"][1] == 90_000 and gilbo_steps == 2000  # 10k + 100 x 800
    fvm, gilbo_steps = metrics.evaluation_sizes(100)
    assert fvm["factor_vae_score"] == (dict(num_variance=100, batch_size=64, num_train=100,
                                            num_eval=100), 100 + 64 * 200)
    assert gilbo_steps == 10
    vae, idgan = toy_runs(True)
    lines = []
    metrics.evaluate(str(vae), str(idgan), num_samples=40, batch_size=20, classifier_steps=2,
                     log=lines.append, datasets=fake_datasets)
    _, images = metrics.evaluation_sizes(40)[0]["factor_vae_score_paper"]
    assert any(line.startswith(f"  FactorVAE metric, the paper's protocol: {images:,} images in ")
               for line in lines), lines
    assert any(line.startswith("  GILBO: 40 samples in ") and "trained 4 steps first" in line
               for line in lines), lines


def aligned_models(logvar, c_gain=0.1):
    """G writes 0.1 c into 2x2-upsampled pixels; E reads mu = c back with a fixed logvar."""
    z, c = keras.Input((3,)), keras.Input((2,))
    dense = keras.layers.Dense(16, use_bias=False)
    pixels = dense(keras.layers.Concatenate()([z, c]))
    images = keras.layers.UpSampling2D(2)(keras.layers.Reshape((4, 4, 1))(pixels))
    generator = keras.Model([z, c], images)
    kernel = np.zeros((5, 16), np.float32)
    kernel[3, 0], kernel[4, 1] = c_gain, c_gain
    dense.set_weights([kernel])
    x = keras.Input((4, 4, 1))
    head = keras.layers.Dense(4)
    encoder = keras.Model(x, head(keras.layers.Flatten()(x)))
    kernel = np.zeros((16, 4), np.float32)
    kernel[0, 0], kernel[1, 1] = 20.0, 20.0  # (0.5 + 0.05 c) * 20 - 10 = c
    head.set_weights([kernel, np.array([-10, -10, logvar, logvar], np.float32)])
    return generator, encoder


def test_distill_lower_bound_closed_form():
    real = np.random.default_rng(0).uniform(size=(40, 4, 4, 1)).astype(np.float32)
    batches = tf.data.Dataset.from_tensor_slices(real).batch(10)
    generator, encoder = aligned_models(logvar=0.3)
    value = metrics.distill_lower_bound(generator, encoder, batches, num_samples=25)
    assert value == pytest.approx(-0.5 * 2 * (np.log(2 * np.pi) + 0.3), abs=1e-4)
    ignoring_c = aligned_models(logvar=0.3, c_gain=0.0)[0]
    assert metrics.distill_lower_bound(ignoring_c, encoder, batches, num_samples=25) < value - 1


def test_codes_fn_draws_c_in_place_of_the_posterior():
    """codes_fn(images, rng) gives c for each real batch instead of q(c|x), as a model with
    a fixed prior of c needs; E reads any c back, so L_I keeps its closed form."""
    real = np.random.default_rng(0).uniform(size=(40, 4, 4, 1)).astype(np.float32)
    batches = tf.data.Dataset.from_tensor_slices(real).batch(10)
    generator, encoder = aligned_models(logvar=0.3)
    sizes = []

    def uniform(images, rng):
        sizes.append(len(images))
        return rng.uniform(-1, 1, (len(images), 2))

    value = metrics.distill_lower_bound(generator, encoder, batches, num_samples=25,
                                        codes_fn=uniform)
    assert sizes == [10, 10, 5]
    assert value == pytest.approx(-0.5 * 2 * (np.log(2 * np.pi) + 0.3), abs=1e-4)
    generate = metrics.generator_sampler(generator, encoder, iter([real[:6]]),
                                         np.random.default_rng(0),
                                         lambda images, rng: np.full((len(images), 2), 3.0))
    images = np.asarray(generate(4))  # G upsamples its 4 x 4 pixels 2x
    assert images.shape == (4, 8, 8, 1)
    np.testing.assert_allclose(np.asarray(encoder(images[:, ::2, ::2]))[:, :2], 3.0, atol=1e-4)


def test_generator_calls_in_chunks_give_what_one_call_gives(refusing):
    """With chunk=4, generator_sampler, L_I and GILBO call G on at most 4 images at a time,
    on the z and c one call would get: the same images and scores up to float rounding."""
    z, c = keras.Input((3,)), keras.Input((2,))
    pixels = keras.layers.Dense(16, activation="tanh")(keras.layers.Concatenate()([z, c]))
    generator = keras.Model([z, c], keras.layers.Reshape((4, 4, 1))(pixels))  # reads z and c
    refusing, encoder = refusing(generator, 4), aligned_models(logvar=0.3)[1]
    real = np.random.default_rng(0).uniform(size=(40, 4, 4, 1)).astype(np.float32)
    batches = tf.data.Dataset.from_tensor_slices(real).batch(10)
    sample = lambda model, **chunk: np.asarray(metrics.generator_sampler(  # noqa: E731
        model, encoder, iter(batches), np.random.default_rng(0), **chunk)(10))
    chunked, whole = sample(refusing, chunk=4), sample(generator)
    assert refusing.sizes == [4, 4, 2] and chunked.shape == (10, 4, 4, 1)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    with pytest.raises(AssertionError, match="called on 10 images"):
        sample(refusing)
    refusing.sizes.clear()
    assert metrics.distill_lower_bound(refusing, encoder, batches, 25, chunk=4) == pytest.approx(
        metrics.distill_lower_bound(generator, encoder, batches, 25), abs=1e-5)
    assert metrics.gilbo(refusing, encoder, batches, 20, train_steps=2, chunk=4) == pytest.approx(
        metrics.gilbo(generator, encoder, batches, 20, train_steps=2), abs=1e-4)
    assert max(refusing.sizes) == 4


# --- evaluate() and the command line -------------------------------------------------


@pytest.fixture
def toy_runs(fake_runs):
    """toy_runs(ground_truth) -> (vae, idgan): conftest's fake_runs on Squares' images, with
    Squares(8) as the ground truth."""
    return lambda ground_truth: fake_runs(ground_truth, Squares)


def test_evaluate_ground_truth_runs(toy_runs, fake_datasets):
    vae, idgan = toy_runs(True)
    lines = []
    results = metrics.evaluate(str(vae), str(idgan), num_samples=50, batch_size=20,
                               classifier_steps=2, log=lines.append, datasets=fake_datasets)
    assert json.loads((idgan / "metrics.json").read_text()) == results
    assert (vae / "factor_classifier.keras").exists()
    for key in ("mig", "fid_vae", "fid_idgan", "l_i"):
        assert np.isfinite(results[key]), key
    assert results["factor_vae_score"]["num_active_dims"] >= 1
    assert set(results["factor_classifier"]["accuracy"]) == set(Squares.factor_names)
    assert results["factor_classifier"]["steps"] == 2
    # Stage by stage, with its closed-form size: FVM votes cast batches of 64 and 100.
    for stage in ("factor classifier training (toy): 2 steps",
                  "disentanglement_lib's protocol: 6,450 images",  # 50 + 64 x (50 + 50)
                  "the paper's protocol: 5,050 images",  # 50 + 100 x 50
                  "MIG: 50 images", "FID, real images: 50 images", "FID, VAE samples: 50 images",
                  "FID, real images, second set: 50 images",  # the floor's
                  "FID, ID-GAN samples: 50 images", "L_I: 50 samples"):
        assert any(stage in line for line in lines), (stage, lines)
    for key in ("fid_vae", "fid_idgan"):  # each FID with its noise (fid_scores)
        assert results[f"{key}_spread"] > 0 and results[f"{key}_trace"] > 0, key
        assert isinstance(results[f"{key}_floor"], float) and results[f"{key}_diversity"] > 0


def test_evaluate_reuses_the_classifier_only_as_trained(toy_runs, monkeypatch, fake_datasets):
    vae, _ = toy_runs(True)
    truth = CountingSquares(8, batch_size=64)
    monkeypatch.setattr(fake_datasets, "ground_truth_data", lambda name, **kwargs: truth)
    run = lambda steps, num_samples=40: metrics.evaluate(  # noqa: E731
        str(vae), num_samples=num_samples, batch_size=20, classifier_steps=steps,
        disentanglement=False, log=lambda line: None, datasets=fake_datasets)
    first = run(2)
    assert truth.batches == 2 and not first["factor_classifier"]["cached"]
    again = run(2)
    assert truth.batches == 2, "a cache trained as asked is reused"
    assert again["factor_classifier"]["accuracy"] == first["factor_classifier"]["accuracy"]
    assert json.loads((vae / "metrics.json").read_text())["factor_classifier"]["accuracy"] == \
        first["factor_classifier"]["accuracy"]
    run(4)
    assert truth.batches == 2 + 4, "a cache trained for 2 steps is not reused for 4"
    run(5000, num_samples=33)
    assert truth.batches == 2 + 4 + 33, "num_samples caps the steps"


def test_evaluate_gan_trained_on_another_dataset(toy_runs, monkeypatch, fake_datasets):
    """An encoder of `toy` (8 px) and a GAN of `other` (16 px, both 1 channel): the GAN's FID
    and its codes come from `other`. Its generator draws ones, exactly `other`'s images, so
    its FID is 0 (equal features: equal means, zero covariances)."""
    vae, idgan = toy_runs(True)
    calls, toy = [], fake_datasets.make_dataset

    def make_dataset(name, res, batch_size, data_dir=None, seed=0, painting=None):
        calls.append((name, res, seed))
        if name == "toy":
            return toy(name, res, batch_size, seed=seed)
        return tf.data.Dataset.from_tensors(tf.ones((batch_size, res, res, 1))).repeat()

    monkeypatch.setattr(fake_datasets, "make_dataset", make_dataset)
    (idgan / "flags.json").write_text(json.dumps(dict(dataset="other", res=16, data_dir=None)))
    z, c = keras.Input((2,)), keras.Input((3,))
    ones = keras.layers.Dense(256, activation="tanh", kernel_initializer="zeros",
                              bias_initializer=keras.initializers.Constant(20.0))  # tanh(20) = 1
    image = ones(keras.layers.Concatenate()([z, c]))
    keras.Model([z, c], keras.layers.Reshape((16, 16, 1))(image)).save(idgan / "generator.keras")
    results = metrics.evaluate(str(vae), str(idgan), num_samples=40, batch_size=20,
                               classifier_steps=2, disentanglement=False, log=lambda line: None,
                               datasets=fake_datasets)
    assert results["dataset"] == "toy" and results["idgan_dataset"] == "other"
    assert abs(results["fid_idgan"]) < 1e-6
    assert sorted(set(calls)) == [("other", 16, 0), ("other", 16, 1), ("other", 16, 2),
                                  ("toy", 8, 0)]  # real, posterior, GILBO's streams
    assert (vae / "factor_classifier_other.keras").exists()  # features trained on `other`
    assert results["idgan_factor_classifier"]["dataset"] == "other"


def test_evaluate_batch_size_changes_speed_not_gilbo(toy_runs, monkeypatch, fake_datasets):
    """--batch_size sets the generator and feature calls (default 500 with the factor
    classifier); GILBO's auxiliary encoder trains on GILBO_BATCH pairs whatever it is, so its
    bound is the same number at any batch size."""
    vae, idgan = toy_runs(True)
    batches, toy = [], fake_datasets.make_dataset

    def make_dataset(name, res, batch_size, data_dir=None, seed=0, painting=None):
        batches.append(batch_size)
        return toy(name, res, batch_size, seed=seed)

    monkeypatch.setattr(fake_datasets, "make_dataset", make_dataset)
    run = lambda **size: metrics.evaluate(  # noqa: E731
        str(vae), str(idgan), num_samples=40, classifier_steps=2, disentanglement=False,
        log=lambda line: None, **size, datasets=fake_datasets)
    default = run()
    assert default["batch_size"] == 500 and sorted(set(batches)) == [metrics.GILBO_BATCH, 500]
    batches.clear()
    small = run(batch_size=8)
    assert small["batch_size"] == 8 and sorted(set(batches)) == [8, metrics.GILBO_BATCH]
    assert small["gilbo"] == pytest.approx(default["gilbo"], rel=1e-6, abs=1e-6)


def test_evaluate_calls_decoder_and_generator_on_at_most_their_training_batch(
        toy_runs, monkeypatch, fake_datasets, refusing):
    """The batch_size of each run's flags.json bounds the images of every decoder and
    generator call (FID samples, L_I, GILBO), whatever evaluate's batch_size."""
    vae, idgan = toy_runs(True)
    sizes, load, chunks = {}, keras.models.load_model, {"decoder.keras": 4, "generator.keras": 8}
    for run, name in ((vae, "decoder.keras"), (idgan, "generator.keras")):
        flags = json.loads((run / "flags.json").read_text())
        (run / "flags.json").write_text(json.dumps(dict(flags, batch_size=chunks[name])))

    def load_refusing(path, **kwargs):
        name = os.path.basename(path)
        return refusing(load(path, **kwargs), chunks[name], sizes.setdefault(name, [])) if (
            name in chunks) else load(path, **kwargs)

    monkeypatch.setattr(keras.models, "load_model", load_refusing)
    results = metrics.evaluate(str(vae), str(idgan), num_samples=40, batch_size=20,
                               classifier_steps=2, disentanglement=False, log=lambda line: None,
                               datasets=fake_datasets)
    assert all(np.isfinite(results[key]) for key in ("fid_vae", "fid_idgan", "l_i", "gilbo"))
    assert max(sizes["decoder.keras"]) == 4 and max(sizes["generator.keras"]) == 8


def test_evaluate_refuses_a_gan_of_other_channels(toy_runs, fake_datasets):
    vae, idgan = toy_runs(True)
    z, c = keras.Input((2,)), keras.Input((3,))
    image = keras.layers.Dense(16 * 16 * 3)(keras.layers.Concatenate()([z, c]))
    keras.Model([z, c], keras.layers.Reshape((16, 16, 3))(image)).save(idgan / "generator.keras")
    with pytest.raises(ValueError, match="3-channel images .* takes 1 channels"):
        metrics.evaluate(str(vae), str(idgan), num_samples=40, log=lambda line: None,
                         datasets=fake_datasets)
    assert sorted(os.listdir(vae)) == ["decoder.keras", "encoder.keras", "flags.json"]


def test_evaluate_natural_images_uses_inception(toy_runs, fake_datasets):
    vae, _ = toy_runs(False)
    results = metrics.evaluate(str(vae), num_samples=6, batch_size=3, inception_weights=None,
                               datasets=fake_datasets)
    assert json.loads((vae / "metrics.json").read_text()) == results
    assert "Inception" in results["fid_features"] and np.isfinite(results["fid_vae"])
    assert isinstance(results["fid_vae_floor"], float)  # 64 images hold two disjoint sets of 6
    assert "mig" not in results and "fid_idgan" not in results


@pytest.mark.parametrize("ground_truth, num_samples", [(False, 1), (True, 31)])
def test_evaluate_checks_sizes_first(toy_runs, ground_truth, num_samples, fake_datasets):
    vae, _ = toy_runs(ground_truth)
    minimum = 32 if ground_truth else 2
    with pytest.raises(ValueError, match=f"num_samples={num_samples} must be at least {minimum}"):
        metrics.evaluate(str(vae), num_samples=num_samples, datasets=fake_datasets)
    assert sorted(os.listdir(vae)) == ["decoder.keras", "encoder.keras", "flags.json"]


def test_prior_codes_fn_draws_the_priors_a_run_records():
    images, rng = np.zeros((2000, 8, 8, 1)), np.random.default_rng(0)
    uniform = baselines.prior_codes_fn("uniform", 3)(images, rng)
    assert uniform.shape == (2000, 3) and -1 <= uniform.min() < -0.99 and 0.99 < uniform.max() <= 1
    normal = baselines.prior_codes_fn("normal", 3)(images, rng)
    assert normal.shape == (2000, 3) and abs(normal.std() - 1) < 0.05 and normal.min() < -2.5
    assert baselines.prior_codes_fn(None, 3) is None
    with pytest.raises(ValueError, match="code_prior must be"):
        baselines.prior_codes_fn("cauchy", 3)


def test_evaluate_draws_c_from_the_code_prior_a_run_records(toy_runs, fake_datasets):
    """benchmarks/evaluate.py scores an ID-GAN run whose flags.json has a code_prior
    (InfoGAN's) on c from that prior; an unknown prior is refused before anything is
    computed or written."""
    vae, idgan = toy_runs(True)
    run = lambda: evaluate_cli.evaluate(  # noqa: E731
        str(vae), str(idgan), num_samples=40, batch_size=20, classifier_steps=2,
        disentanglement=False, log=lambda l: None, datasets=fake_datasets)
    flags = json.loads((idgan / "flags.json").read_text())
    (idgan / "flags.json").write_text(json.dumps(dict(flags, code_prior="cauchy")))
    with pytest.raises(ValueError, match="code_prior must be"):
        run()
    assert sorted(os.listdir(vae)) == ["decoder.keras", "encoder.keras", "flags.json"]
    assert not (idgan / "metrics.json").exists()
    (idgan / "flags.json").write_text(json.dumps(flags))
    posterior = run()
    (idgan / "flags.json").write_text(json.dumps(dict(flags, code_prior="uniform")))
    uniform = run()
    assert uniform["fid_vae"] == posterior["fid_vae"]  # the VAE's c is N(0, I) either way
    for key in ("fid_idgan", "l_i", "gilbo"):
        assert np.isfinite(uniform[key]) and uniform[key] != posterior[key], key


def test_evaluate_logs_progress_with_an_eta_and_each_stages_rate(toy_runs, monkeypatch,
                                                                 fake_datasets):
    """On a clock advancing 40 s per reading, each batch of a stage logs done/total, the
    time elapsed and the ETA extrapolated from it; each stage ends with its rate."""
    vae, idgan = toy_runs(True)
    clock = itertools.count(0, 40)
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    lines = []
    metrics.evaluate(str(vae), str(idgan), num_samples=50, batch_size=20, classifier_steps=2,
                     disentanglement=False, log=lines.append, datasets=fake_datasets)
    seconds = lambda value, unit: int(value) * (60 if unit == "min" else 1)  # noqa: E731
    pattern = r"  FID, real images: (\d+)/50 images, (\d+) (s|min) elapsed, ~(\d+) (s|min) left"
    etas = [match.groups() for match in map(re.compile(pattern).fullmatch, lines) if match]
    assert [int(done) for done, *_ in etas] == [20, 40], lines
    for done, elapsed, unit, left, left_unit in etas:
        expected = seconds(elapsed, unit) * (50 - int(done)) / int(done)
        assert abs(seconds(left, left_unit) - expected) <= (30 if left_unit == "min" else 0.5)
    for stage, unit in (("FID, real images", "images"), ("FID, ID-GAN samples", "images"),
                        ("L_I", "samples"), ("GILBO", "samples")):
        assert any(re.fullmatch(rf"  {stage}: 50 {unit} in \d+ (s|min|h) \([\d.,]+ {unit}/s\)"
                                r".*", line) for line in lines), (stage, lines)


def run_directory(path, dataset):
    """A stage-1 run directory as far as the command line reads it before evaluating."""
    path.mkdir()
    (path / "flags.json").write_text(json.dumps(dict(dataset=dataset, res=64, c_dim=10)))
    (path / "encoder.keras").write_text(""), (path / "decoder.keras").write_text("")
    return path


@pytest.mark.parametrize("arguments, message", [
    (["--vae={empty}"], "has no flags.json"),
    ([], "--vae"),
    (["--vae={empty}", "--idgan={empty}"], "has no flags.json"),
    (["--vae={celeba}", "--num_samples=0"], "--num_samples=0: 0 is not integer >= 2"),
    (["--vae={celeba}", "--num_samples=1"], "--num_samples=1: 1 is not integer >= 2"),
    (["--vae={sprites}", "--num_samples=31"], "num_samples=31 must be at least 32 (MIG "),
    (["--vae={sprites}", "--batch_size=0"], "--batch_size=0: 0 is not a positive integer"),
])
def test_command_line_errors_are_one_line(tmp_path, arguments, message):
    runs = dict(empty=tmp_path, celeba=run_directory(tmp_path / "celeba", "celeba"),
                sprites=run_directory(tmp_path / "sprites", "sprites"))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    command = [sys.executable, os.path.join("benchmarks", "evaluate.py")]
    command += [a.format(**runs) for a in arguments]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)  # as the training scripts
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("evaluate.py: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written


def test_the_metric_library_works_copied_alone(tmp_path):
    """metrics.py copied alone into an empty directory and imported there by a fresh isolated
    interpreter (python -I: no PYTHONPATH, no user site, no project directory on sys.path)
    computes a Frechet distance, MIG and the FVM on tiny synthetic inputs, and imports
    neither data.py nor any other module of the project."""
    shutil.copy(os.path.join(ROOT, "metrics.py"), tmp_path)
    script = textwrap.dedent("""
        import json, os, sys
        sys.path.insert(0, os.getcwd())
        import numpy as np
        import metrics

        class Toy:  # disentanglement_lib's ground-truth interface; observations = factors
            factor_names, factor_sizes = ("a", "b"), (4, 3)

            def sample_factors(self, n, rng):
                return np.stack([rng.integers(k, size=n) for k in self.factor_sizes], 1)

            def sample_observations_from_factors(self, factors, rng):
                return factors.astype(np.float32).reshape(len(factors), 1, 1, 2)

        rng = np.random.default_rng(0)
        copies = lambda x: np.concatenate([x.reshape(len(x), 2), rng.normal(size=(len(x), 1))],
                                          axis=1)
        project = ("data", "vae", "idgan", "train_vae", "train_idgan", "baselines")
        print(json.dumps(dict(
            file=metrics.__file__,
            fd=metrics.frechet_distance(np.zeros(3), np.eye(3), np.ones(3), 4 * np.eye(3)),
            mig=metrics.compute_mig(Toy(), copies, rng, num_samples=2000),
            fvm=metrics.factor_vae_score(Toy(), copies, rng, num_variance=500, batch_size=16,
                                         num_train=100, num_eval=50),
            project=[name for name in project if name in sys.modules])))
    """)
    result = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, text=True,
                            capture_output=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert os.path.realpath(out["file"]) == os.path.realpath(tmp_path / "metrics.py")
    assert out["project"] == [] and set(os.listdir(tmp_path)) <= {"metrics.py", "__pycache__"}
    assert out["fd"] == pytest.approx(6.0)  # |1|^2 x 3 + 3 (1 - 2)^2
    assert out["mig"] > 0.9
    assert out["fvm"] == dict(train_accuracy=1.0, eval_accuracy=1.0, num_active_dims=3)
