"""Timings of the project's metrics.py: frechet_distance at d = 2048 beside
scipy.linalg.sqrtm's route, and mig on 10,000 x 10 codes with 5 factors (median of a few runs
each); with --stages, the seconds per unit of each stage of metrics.evaluate (the figures
of benchmarks/results/metric_timings, behind benchmarks/tables.py's EVAL_SECONDS), on the
untrained networks of benchmarks/models.py's cases (64 px; the conv nets on color_sprites).

    python benchmarks/metric_timings.py [--stages]
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


def stage_seconds():
    """Seconds per unit of evaluate()'s stages, timed through metrics.py's own functions."""
    import data
    import models
    import vae
    truth, rng = data.ground_truth_data("color_sprites"), np.random.default_rng(0)
    stage1 = models.build("beta_vae", dataset="color_sprites")
    encoder, decoder = stage1.encoder, vae.image_decoder(stage1.decoder)
    generator = models.build("idgan_conv", dataset="color_sprites", encoder=encoder).generator
    encode = lambda x: 1e6 * np.split(  # noqa: E731 (the posterior means; every dim active)
        np.asarray(encoder(x), np.float64), 2, axis=-1)[0]
    images = iter(data.make_dataset("color_sprites", 64, 100, seed=1))
    sprites = metrics.generator_sampler(generator, encoder, images, rng)
    inception = metrics.inception_features_fn(weights=None)
    noise = np.random.default_rng(0).uniform(size=(50, 64, 64, 3)).astype(np.float32)
    resnet = models.build("idgan_resnet64").generator
    z, c = (np.zeros((50, t.shape[-1]), np.float32) for t in resnet.inputs)

    def per_unit(run, units):
        """Marginal seconds per unit: run(units) less run(units / 10), after a warm-up."""
        timings = []
        for n in (units // 10, units // 10, units):
            start = time.perf_counter()
            run(n)
            timings.append(time.perf_counter() - start)
        return (timings[2] - timings[1]) / (units - units // 10)

    classifier = metrics.train_factor_classifier(truth, steps=2)[0]
    features = metrics.classifier_features_fn(classifier)
    measured = dict(
        classifier_step=per_unit(lambda n: metrics.train_factor_classifier(truth, steps=n), 200),
        encode=per_unit(lambda n: metrics.factor_vae_score(
            truth, encode, rng, num_variance=1024, num_train=n // 64, num_eval=0), 64 * 200),
        real=per_unit(lambda n: metrics.real_statistics(
            data.make_dataset("color_sprites", 64, 100), features, n), 5000),
        vae=per_unit(lambda n: metrics.generated_statistics(lambda m: decoder(
            rng.standard_normal((m, 10)).astype(np.float32)), features, n, 100), 5000),
        idgan=per_unit(lambda n: metrics.generated_statistics(sprites, features, n, 100), 5000),
        l_i=per_unit(lambda n: metrics.distill_lower_bound(generator, encoder, images, n), 5000),
        inception=per_unit(lambda n: [inception(noise) for _ in range(n // 50)], 300),
        resnet_64=per_unit(lambda n: [resnet([z, c]) for _ in range(n // 50)], 200))
    for name, seconds in measured.items():
        print(f"{name}: {seconds:.2e} s per unit here (benchmarks/results/metric_timings)")


def main():
    if sys.argv[1:] == ["--stages"]:
        return stage_seconds()
    if sys.argv[1:]:
        sys.exit(f"metric_timings.py: error: unexpected arguments {sys.argv[1:]}; only --stages")
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
