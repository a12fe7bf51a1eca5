"""vae.py: the stage-1 objectives against hand computations, replica equivalence, learning."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import tensorflow as tf

import data
import vae

RES, BATCH = 32, 8


@pytest.fixture(scope="module")
def images():
    return next(iter(data.make_dataset("sprites", RES, BATCH, seed=7))).numpy()


def quiet_encoder(c_dim, seed=0):
    """An encoder whose logvar is -60: the posterior noise exp(-30) * eps is immaterial,
    so losses are deterministic and runs under different replica counts comparable."""
    keras.utils.set_random_seed(seed)
    encoder = vae.build_encoder(c_dim, RES, 1)
    bias = np.concatenate([np.zeros(c_dim), np.full(c_dim, -60.0)]).astype("float32")
    encoder.get_layer("mu_logvar").bias.assign(bias)
    return encoder


def make_model(kind, c_dim, strategy=None, lr=1e-3, seed=0, quiet=True):
    with (strategy or tf.distribute.get_strategy()).scope():
        if quiet:
            encoder = quiet_encoder(c_dim, seed)
        else:
            keras.utils.set_random_seed(seed)
            encoder = vae.build_encoder(c_dim, RES, 1)
        decoder = vae.build_decoder(c_dim, RES, 1)
        if kind == "beta_vae":
            model = vae.BetaVAE(encoder, decoder, beta=4.0, seed=1)
            model.compile(optimizer=keras.optimizers.Adam(lr))
        else:
            model = vae.FactorVAE(encoder, decoder, vae.build_tc_discriminator(c_dim), gamma=10.0,
                                  seed=1)
            model.compile(keras.optimizers.Adam(lr), vae.tc_optimizer())
        model.build_optimizers()
    return model


def numpy_bernoulli_nll(x, logits):
    """Cross-entropy of targets x in [0, 1] (area-downsampled sprites are not binary)."""
    logits = logits.astype(np.float64)
    log_p, log_not_p = scipy.special.log_expit(logits), scipy.special.log_expit(-logits)
    return -(x * log_p + (1 - x) * log_not_p).reshape(len(x), -1).sum(axis=1)


def test_bernoulli_and_gaussian_reconstruction_losses(images):
    logits = np.random.default_rng(0).normal(size=images.shape).astype("float32")
    np.testing.assert_allclose(vae.reconstruction_loss(images, logits, "bernoulli"),
                               numpy_bernoulli_nll(images, logits), rtol=1e-5)
    squared = ((images - scipy.special.expit(logits)) ** 2).reshape(BATCH, -1).sum(axis=1)
    np.testing.assert_allclose(vae.reconstruction_loss(images, logits, "gaussian"), squared,
                               rtol=1e-5)


def test_kl_matches_numerical_integration():
    mu = np.array([[0.3, -1.2]], "float32")
    logvar = np.array([[0.5, -0.7]], "float32")
    expected = 0.0
    for m, lv in zip(mu[0], logvar[0]):
        q = scipy.stats.norm(m, np.exp(lv / 2))
        expected += scipy.integrate.quad(lambda c: q.pdf(c) * (q.logpdf(c) - scipy.stats.norm.logpdf(c)),
                                         -20, 20)[0]
    np.testing.assert_allclose(vae.kl_divergence(mu, logvar), [expected], rtol=1e-5)


def test_permute_dims_shuffles_each_dimension_independently():
    codes = np.stack([np.arange(256.0), 1000 + np.arange(256.0)], axis=1).astype("float32")
    permuted = np.asarray(vae.permute_dims(codes, keras.random.SeedGenerator(0)))
    for j in range(2):
        assert sorted(permuted[:, j]) == sorted(codes[:, j])  # a permutation of its column
    assert not np.array_equal(permuted[:, 0] - permuted[:, 1], codes[:, 0] - codes[:, 1])


def test_beta_vae_step_reports_the_hand_computed_elbo(images):
    model = make_model("beta_vae", 4)
    stats = model.encoder(images).numpy()
    mu, logvar = stats[:, :4], stats[:, 4:]
    recon = numpy_bernoulli_nll(images, model.decoder(mu).numpy())
    kl = 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar).sum(axis=1)
    logs = model.train_on_batch(images, return_dict=True)
    assert logs["reconstruction"] == pytest.approx(recon.mean(), rel=1e-4)
    assert logs["kl"] == pytest.approx(kl.mean(), rel=1e-4)
    assert logs["loss"] == pytest.approx((recon + 4.0 * kl).mean(), rel=1e-4)


def test_factor_vae_step_reports_the_hand_computed_losses(images):
    model = make_model("factor_vae", 1)
    stats = model.encoder(images).numpy()
    mu, logvar = stats[:, :1], stats[:, 1:]
    even, odd = slice(0, None, 2), slice(1, None, 2)
    recon = numpy_bernoulli_nll(images[even], model.decoder(mu[even]).numpy())
    kl = 0.5 * (np.exp(logvar[even]) + mu[even] ** 2 - 1 - logvar[even]).sum(axis=1)
    joint = model.discriminator(mu[even]).numpy()
    tc = joint[:, 0] - joint[:, 1]
    # With one code dimension, permuting across the batch only reorders it.
    log_p = lambda logits, k: scipy.special.log_softmax(logits, axis=1)[:, k]  # noqa: E731
    d_loss = 0.5 * (-log_p(joint, 0).mean() - log_p(model.discriminator(mu[odd]).numpy(), 1).mean())
    logs = model.train_on_batch(images, return_dict=True)
    assert logs["tc"] == pytest.approx(tc.mean(), rel=1e-4, abs=1e-6)
    assert logs["loss"] == pytest.approx((recon + kl + 10.0 * tc).mean(), rel=1e-4)
    assert logs["d_loss"] == pytest.approx(d_loss, rel=1e-4)


@pytest.mark.parametrize("kind,c_dim", [("beta_vae", 4), ("factor_vae", 1)])
def test_two_replicas_train_exactly_like_one_device(images, two_replicas, kind, c_dim):
    weights = []
    for strategy in (tf.distribute.get_strategy(), two_replicas):
        # Real posterior noise: each example gets the same eps however the batch is split.
        model = make_model(kind, c_dim, strategy, quiet=False)
        model.fit(tf.data.Dataset.from_tensors(images), epochs=1, verbose=0)
        weights.append([w.numpy() for w in model.weights])
    before = [w.numpy() for w in make_model(kind, c_dim, quiet=False).weights]
    moved = max(np.abs(a - b).max() for a, b in zip(weights[0], before))
    assert moved > 1e-4  # the step did something ...
    for one, two in zip(*weights):  # ... and the same thing on two replicas
        np.testing.assert_allclose(one, two, atol=1e-5)


def test_loss_falls_on_a_short_sprites_run():
    model = make_model("beta_vae", 4, lr=1e-3)
    dataset = data.make_dataset("sprites", RES, 32, seed=1)
    history = model.fit(dataset, epochs=3, steps_per_epoch=40, verbose=0).history["loss"]
    assert history[-1] < 0.6 * history[0]


def test_saved_encoder_loads_in_a_fresh_process_without_the_project(tmp_path, images):
    encoder = quiet_encoder(3)
    encoder.save(tmp_path / "encoder.keras")
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, keras\n"
        "m = keras.models.load_model('encoder.keras')\n"
        "assert not {'vae', 'data', 'idgan'} & set(sys.modules), 'project imported'\n"
        "np.save('out.npy', m(np.load('images.npy')))\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), encoder(images), rtol=1e-5,
                               atol=1e-6)
