"""Timings of metrics.py: frechet_distance at d = 2048 beside scipy.linalg.sqrtm's route,
and mig on 10,000 x 10 codes with 5 factors (median of a few runs each).

    python benchmarks/metrics.py
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

import metrics  # noqa: E402


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), value


def scipy_frechet(mu1, sigma1, mu2, sigma2):
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def main():
    rng = np.random.default_rng(0)
    d = 2048
    features = [np.maximum(rng.normal(size=(4096, d)) @ rng.normal(size=(d, d)) / 45 + 0.3 * i, 0)
                for i in range(2)]  # ReLU-like pool features, n > d so full rank
    (mu1, sigma1), (mu2, sigma2) = (metrics.feature_statistics([f]) for f in features)
    metrics.frechet_distance(mu1, sigma1, mu2, sigma2)  # warm-up
    ours, value = median_seconds(lambda: metrics.frechet_distance(mu1, sigma1, mu2, sigma2), 3)
    theirs, reference = median_seconds(lambda: scipy_frechet(mu1, sigma1, mu2, sigma2), 3)
    print(f"frechet_distance d={d}: eigh route {ours:.2f} s (FID {value:.6f}), "
          f"scipy sqrtm route {theirs:.2f} s (FID {reference:.6f}), "
          f"relative difference {abs(value - reference) / reference:.1e}")

    factors = np.stack([rng.integers(n, size=10_000) for n in (3, 6, 40, 32, 32)], axis=1)
    noise = rng.normal(size=(10_000, 5))
    codes = np.concatenate([factors + rng.normal(size=factors.shape), noise], axis=1)
    seconds, value = median_seconds(lambda: metrics.mig(codes, factors), 5)
    print(f"mig 10,000 x 10 codes, 5 factors (sizes 3, 6, 40, 32, 32): {seconds * 1000:.1f} ms "
          f"(MIG {value:.4f})")


if __name__ == "__main__":
    main()
