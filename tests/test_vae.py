"""vae.py: the stage-1 objectives against hand computations, replica equivalence, learning;
and the PyTorch optimisers of both stages (vae.adam, idgan.rmsprop) against closed forms."""
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
import idgan
import vae
from conftest import bernoulli_nll

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
            model.compile(optimizer=vae.adam(lr))
        else:
            model = vae.FactorVAE(encoder, decoder, vae.build_tc_discriminator(c_dim), gamma=10.0,
                                  seed=1)
            model.compile(vae.adam(lr), vae.tc_optimizer())
        model.build_optimizers()
    return model


def test_bernoulli_and_gaussian_reconstruction_losses(images):
    logits = np.random.default_rng(0).normal(size=images.shape).astype("float32")
    np.testing.assert_allclose(vae.reconstruction_loss(images, logits, "bernoulli"),
                               bernoulli_nll(images, logits), rtol=1e-5)
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
    recon = bernoulli_nll(images, model.decoder(mu).numpy())
    kl = 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar).sum(axis=1)
    logs = model.train_on_batch(images, return_dict=True)
    assert logs["reconstruction"] == pytest.approx(recon.mean(), rel=1e-4)
    assert logs["kl"] == pytest.approx(kl.mean(), rel=1e-4)
    assert logs["loss"] == pytest.approx((recon + 4.0 * kl).mean(), rel=1e-4)


def test_factor_vae_step_reports_the_hand_computed_losses(images):
    """Two full batches per step (Kim & Mnih's Algorithm 1): the VAE loss and D's joint codes
    on all of the first, the permuted codes from all of the second."""
    model = make_model("factor_vae", 1)
    first, second = images, images[::-1] * 0.5
    stats = model.encoder(first).numpy()
    mu, logvar = stats[:, :1], stats[:, 1:]
    recon = bernoulli_nll(first, model.decoder(mu).numpy())
    kl = 0.5 * (np.exp(logvar) + mu ** 2 - 1 - logvar).sum(axis=1)
    joint = model.discriminator(mu).numpy()
    tc = joint[:, 0] - joint[:, 1]
    log_p = lambda logits, k: scipy.special.log_softmax(logits, axis=1)[:, k]  # noqa: E731
    logs = model.train_on_batch(first, second, return_dict=True)
    assert recon.shape == (BATCH,)
    assert logs["reconstruction"] == pytest.approx(recon.mean(), rel=1e-4)
    assert logs["tc"] == pytest.approx(tc.mean(), rel=1e-4, abs=1e-6)
    assert logs["loss"] == pytest.approx((recon + kl + 10.0 * tc).mean(), rel=1e-4)
    # D's permuted codes: the second batch encoded after the VAE step. With one code
    # dimension, permuting across the batch only reorders them.
    permuted = model.encoder(second).numpy()[:, :1]
    d_loss = 0.5 * (-log_p(joint, 0).mean() - log_p(model.discriminator(permuted).numpy(), 1).mean())
    assert logs["d_loss"] == pytest.approx(d_loss, rel=1e-3)


def test_factor_vae_stream_gives_two_batches_of_batch_size_per_step(run_config):
    """train_vae.py feeds FactorVAE pairs of independent batches, each --batch_size."""
    import train_vae

    model = make_model("factor_vae", 3)
    run = train_vae.Run(run_config(batch_size=BATCH), tf.distribute.get_strategy())
    stream, first = run.start(model, model.optimizer, RES, pairs=True)
    vae_images, permuted_images = next(iter(stream))
    assert vae_images.shape == permuted_images.shape == (BATCH, RES, RES, 1) == first.shape
    assert not np.array_equal(vae_images, permuted_images)
    np.testing.assert_array_equal(first, vae_images)
    single, _ = run.start(model, model.optimizer, RES)
    assert next(iter(single)).shape == (BATCH, RES, RES, 1)


# FactorVAE with c_dim >= 2: with one dimension a permutation cannot change the TC estimate.
@pytest.mark.parametrize("kind,c_dim", [("beta_vae", 4), ("factor_vae", 3)])
def test_two_replicas_train_exactly_like_one_device(images, two_replicas, kind, c_dim):
    weights = []
    for strategy in (tf.distribute.get_strategy(), two_replicas):
        # Real posterior noise: each example gets the same eps however the batch is split.
        model = make_model(kind, c_dim, strategy, quiet=False)
        batches = images if kind == "beta_vae" else (images, images[::-1])
        model.fit(tf.data.Dataset.from_tensors(batches), epochs=1, shuffle=False, verbose=0)
        weights.append([w.numpy() for w in model.weights])
    before = [w.numpy() for w in make_model(kind, c_dim, quiet=False).weights]
    moved = max(np.abs(a - b).max() for a, b in zip(weights[0], before))
    assert moved > 1e-4  # the step did something ...
    for one, two in zip(*weights):  # ... and the same thing on two replicas
        np.testing.assert_allclose(one, two, atol=1e-5)


def test_loss_falls_on_a_short_sprites_run():
    model = make_model("beta_vae", 4, lr=1e-3)
    dataset = data.make_dataset("sprites", RES, 32, seed=1)
    history = model.fit(dataset, epochs=3, steps_per_epoch=40, shuffle=False,
                        verbose=0).history["loss"]
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


def test_permute_dims_permutes_the_global_batch_on_two_replicas(two_replicas):
    codes = np.stack([np.arange(8.0), 100 + np.arange(8.0), 200 + np.arange(8.0)], 1)
    codes = tf.constant(codes, "float32")
    expected = np.asarray(vae.permute_dims(codes, keras.random.SeedGenerator(5)))
    with two_replicas.scope():
        seed = keras.random.SeedGenerator(5)
    halves = two_replicas.experimental_distribute_values_from_function(
        lambda context: codes[4 * context.replica_id_in_sync_group:][:4])
    permuted = tf.function(lambda x: two_replicas.run(
        lambda rows: vae.permute_dims(rows, seed), (x,)))(halves)
    np.testing.assert_array_equal(np.concatenate([p.numpy() for p in permuted.values]), expected)
    assert np.any(expected[:4] % 100 >= 4)  # replica 0 got codes of replica 1's examples


# ---------------------------------------------------------------------------------------
# PyTorch's Adam, against torch.optim.Adam's documented update computed in float64 numpy.


def torch_adam_reference(grads, lr, beta_1, beta_2, eps=1e-8):
    """The parameter after len(grads) steps of torch.optim.Adam from 0."""
    w = m = v = 0.0
    for t, g in enumerate(np.asarray(grads, np.float64), start=1):
        m, v = beta_1 * m + (1 - beta_1) * g, beta_2 * v + (1 - beta_2) * g**2
        w = w - lr / (1 - beta_1**t) * m / (np.sqrt(v) / np.sqrt(1 - beta_2**t) + eps)
    return w


def gradients(rms, steps=3, size=64, seed=0):
    """`steps` gradients of RMS about `rms`, each coordinate of one sign (no cancellation in
    the parameter, so a relative tolerance on it bounds each step's error), in float32."""
    g = np.random.default_rng(seed).normal(size=size)
    g *= rms / np.sqrt(np.mean(g**2))
    return np.stack([g * scale for scale in (1.0, 0.3, 2.0)[:steps]]).astype("float32")


def run_optimizer(optimizer_fn, grads, mode, strategy=None):
    """Applies `grads` one step at a time to a zero parameter; returns it after each step.

    mode: "eager"; "jit" (a jit-compiled step); "replicas" (two replicas of `strategy`,
    each passing half of the gradient: MirroredStrategy sums them); "bfloat16" (a Dense
    kernel under the mixed_bfloat16 policy, float32, receiving bfloat16 gradients).
    """
    with strategy.scope() if mode == "replicas" else tf.distribute.get_strategy().scope():
        if mode == "bfloat16":
            layer = keras.layers.Dense(grads.shape[1], kernel_initializer="zeros")
            layer.build((None, 1))
            w = layer.kernel
            grads = grads.astype(tf.bfloat16.as_numpy_dtype)[:, None, :]
        else:
            w = keras.Variable(np.zeros(grads.shape[1:], "float32"))
        optimizer = optimizer_fn()
        optimizer.build([w])
    assert {v.dtype for v in optimizer.variables if v.name != "iteration"} == {"float32"}
    apply = lambda g: optimizer.apply_gradients([(g, w)])  # noqa: E731
    if mode == "jit":
        apply = tf.function(apply, jit_compile=True)
    if mode == "replicas":
        apply = tf.function(lambda g: strategy.run(
            lambda: optimizer.apply_gradients([(g / 2.0, w)])))
    trajectory = []
    for g in grads:
        apply(tf.constant(g))
        values = [w.numpy()] if mode != "replicas" else [v.numpy() for v in w.value.values]
        for value in values[1:]:
            np.testing.assert_array_equal(value, values[0])
        trajectory.append(values[0].reshape(-1))
    return np.array(trajectory), np.asarray(grads, np.float64).reshape(len(grads), -1)


@pytest.mark.parametrize("mode", ["eager", "jit", "replicas", "bfloat16"])
@pytest.mark.parametrize("rms", [1e-5, 1e-3, 1.0])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])  # the VAE's, tc_optimizer()'s
def test_adam_is_pytorchs_adam(request, two_replicas, rms, mode, betas):
    if mode == "bfloat16":
        request.getfixturevalue("mixed_bfloat16")
    trajectory, grads = run_optimizer(lambda: vae.adam(1e-3, *betas), gradients(rms), mode,
                                      two_replicas)
    for t in (1, 3):  # one step, and three (bias correction at t = 2, 3)
        np.testing.assert_allclose(trajectory[t - 1], torch_adam_reference(grads[:t], 1e-3, *betas),
                                   rtol=1e-6)


def test_tc_optimizer_is_pytorchs_adam_with_betas_half_and_0_9():
    optimizer = vae.tc_optimizer()
    assert isinstance(optimizer, vae.TorchAdam)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.5, 0.9, 1e-8)
    assert float(optimizer.learning_rate) == pytest.approx(1e-4)


def test_keras_adam_differs_from_pytorchs_at_small_gradients():
    # Keras: lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps): at t = 1 and |g| = 1e-5
    # that is lr g / (|g| + eps / sqrt(1 - b2)), 3% short of PyTorch's lr g / (|g| + eps).
    g = gradients(1e-5, steps=1)
    keras_step, _ = run_optimizer(lambda: keras.optimizers.Adam(1e-3, epsilon=1e-8), g, "eager")
    torch_step = torch_adam_reference(g, 1e-3, 0.9, 0.999)
    np.testing.assert_allclose(keras_step[0], -1e-3 * g[0] / (np.abs(g[0]) + 1e-8 / np.sqrt(1e-3)),
                               rtol=2e-5)
    assert np.all(np.abs(keras_step[0] / torch_step - 1) > 0.01)


# PyTorch's RMSprop, against torch.optim.RMSprop's documented update in float64 numpy.


def torch_rmsprop_reference(grads, lr, alpha=0.99, eps=1e-8):
    """The parameter after len(grads) steps of torch.optim.RMSprop from 0."""
    w = v = 0.0
    for g in np.asarray(grads, np.float64):
        v = alpha * v + (1 - alpha) * g**2
        w = w - lr * g / (np.sqrt(v) + eps)
    return w


@pytest.mark.parametrize("mode", ["eager", "jit", "replicas", "bfloat16"])
@pytest.mark.parametrize("rms", [1e-5, 1e-3, 1.0])
def test_rmsprop_is_pytorchs_rmsprop(request, two_replicas, rms, mode):
    if mode == "bfloat16":
        request.getfixturevalue("mixed_bfloat16")
    trajectory, grads = run_optimizer(lambda: idgan.rmsprop(1e-3), gradients(rms), mode,
                                      two_replicas)
    for t in (1, 3):
        np.testing.assert_allclose(trajectory[t - 1], torch_rmsprop_reference(grads[:t], 1e-3),
                                   rtol=1e-6)


def test_keras_rmsprop_is_not_pytorchs_at_small_gradients():
    # Keras divides by sqrt(v + eps): at RMS 1e-5, v = 0.01 g^2 ~ 1e-12 is swamped by
    # eps = 1e-8, so the step is 20 to 1000 times smaller than PyTorch's lr g / (sqrt(v) + eps).
    g = gradients(1e-5, steps=1)
    keras_step, _ = run_optimizer(
        lambda: keras.optimizers.RMSprop(1e-3, rho=0.99, epsilon=1e-8), g, "eager")
    np.testing.assert_allclose(keras_step[0], -1e-3 * g[0] / np.sqrt(0.01 * g[0]**2 + 1e-8),
                               rtol=1e-5)
    ratio = keras_step[0] / torch_rmsprop_reference(g, 1e-3)
    assert np.all(ratio < 0.05)


def test_vae_weights_restore_the_adam_state(tmp_path, images):
    model = make_model("factor_vae", 3)
    pairs = tf.data.Dataset.from_tensors((images, images[::-1]))
    model.fit(pairs.repeat(2), shuffle=False, verbose=0)
    model(images[:1])  # builds the subclassed model, as the training script does
    model.save_weights(tmp_path / "vae.weights.h5")
    restored = make_model("factor_vae", 3, seed=9)
    restored(images[:1])
    restored.load_weights(tmp_path / "vae.weights.h5")
    for name in ["optimizer", "discriminator_optimizer"]:
        assert int(getattr(restored, name).iterations) == 2
        for a, b in zip(getattr(model, name).variables, getattr(restored, name).variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    for m in (model, restored):  # and the next step is the same
        m.fit(pairs, shuffle=False, verbose=0)
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# Initialisation: the authors' normal_init, N(0, 0.02) kernels and zero biases.


def test_authors_init_is_normal_0_02_with_zero_bias():
    keras.utils.set_random_seed(0)
    for model in (vae.build_encoder(10, 64, 1, init="authors"),
                  vae.build_decoder(10, 64, 1, init="authors"),
                  vae.build_tc_discriminator(10, init="authors")):
        for layer in [layer for layer in model.layers if hasattr(layer, "kernel")]:
            kernel = np.asarray(layer.kernel)
            assert kernel.size >= 512
            assert kernel.std() == pytest.approx(0.02, rel=0.1)
            assert abs(kernel.mean()) < 0.2 * 0.02
            np.testing.assert_array_equal(layer.bias, 0.0)
    with pytest.raises(ValueError, match="init must be one of"):
        vae.build_encoder(10, 64, 1, init="torch")


def test_traversal_grid_sweeps_one_code_per_row():
    """Row i of vae.traversal_grid sweeps code i over `values`, the others at mu(x): with a
    decoder whose pixel j is the logit c_j, picture (i, k) is sigmoid(values[k]) at pixel i
    and sigmoid(mu_j) elsewhere."""
    mu = np.array([0.4, -0.7, 1.1])
    encoder = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(
        6, kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(np.concatenate([mu, np.zeros(3)])))])
    decoder = keras.Sequential([keras.Input((3,)), keras.layers.Reshape((1, 3, 1))])
    values = np.linspace(-2.5, 2.5, 10)
    grid = vae.traversal_grid(encoder, decoder, np.zeros((1, 2, 2, 1), "float32"), values)
    expected = np.empty((3, 10, 3))  # (row i, column k, pixel j)
    for i in range(3):
        for k in range(10):
            expected[i, k] = scipy.special.expit(np.where(np.arange(3) == i, values[k], mu))
    np.testing.assert_allclose(grid[..., 0], np.round(255 * expected).reshape(3, 30), atol=1)
