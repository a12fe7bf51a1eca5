"""Tests for the comparison systems (benchmarks/baselines.py, benchmarks/train_baseline.py)
and GILBO (metrics.gilbo): each new loss against numpy on a tiny case, what trains what,
short sprites runs, and the script end to end. Bad flags are rows of test_bad_inputs.py."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import data
import idgan
import metrics
import vae

from conftest import benchmark, bernoulli_nll, run_script, softplus

baselines = benchmark("baselines")

RES, C_DIM = 32, 3


def gaussian_nll(c, stats):
    mu, logvar = np.split(np.asarray(stats, np.float64), 2, axis=-1)
    return 0.5 * np.sum(np.log(2 * np.pi) + logvar + (c - mu) ** 2 / np.exp(logvar), axis=-1)


@pytest.fixture(scope="module")
def sprites():
    return data.make_dataset("sprites", RES, 8, seed=0)


@pytest.fixture(scope="module")
def infogan():
    keras.utils.set_random_seed(0)
    discriminator = baselines.build_infogan_discriminator(idgan.build_conv_discriminator(RES),
                                                          C_DIM)
    model = baselines.InfoGAN(idgan.build_conv_generator(C_DIM, 0, RES), discriminator,
                              nuisance_dim=0, c_dim=C_DIM, info_weight=2.0, seed=1)
    model.compile(idgan.rmsprop(1e-3), idgan.rmsprop(1e-3))
    return model


# --- Each new loss against numpy --------------------------------------------------------


def test_infogan_q_nll_matches_numpy(infogan):
    rng = np.random.default_rng(0)
    fake = rng.uniform(-1, 1, (5, RES, RES, 1)).astype("float32")
    c = rng.uniform(-1, 1, (5, C_DIM)).astype("float32")
    outputs = infogan.discriminate(fake)
    loss, values = infogan.info_loss(c, fake, outputs)
    stats = np.asarray(infogan.encoder((fake + 1) / 2))  # Q as saved: images in [0, 1]
    np.testing.assert_allclose(np.asarray(outputs[1]), stats, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(values["info_nll"]), gaussian_nll(c, stats), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(loss), 2.0 * gaussian_nll(c, stats), rtol=1e-5)
    assert infogan.encoder.output_shape == (None, 2 * C_DIM)
    # Q is trained with D (its head is among D's weights); the info term also reaches G.
    assert any("q_mu_logvar" in w.path for w in infogan.discriminator_and_q.trainable_weights)
    with tf.GradientTape() as tape:
        fake = infogan.generator([np.zeros((5, 0), "float32"), c])
        loss, _ = infogan.info_loss(c, fake, infogan.discriminate(fake))
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, infogan.generator.trainable_weights)
    assert all(g is not None for g in grads) and max(float(tf.reduce_max(tf.abs(g)))
                                                     for g in grads) > 0
    codes = np.asarray(infogan.sample_codes(4000))
    assert codes.shape == (4000, C_DIM) and np.abs(codes).max() <= 1.0  # U(-1, 1)
    np.testing.assert_allclose(codes.var(axis=0), 1 / 3, rtol=0.1)


def test_infogan_prior_codes_do_not_depend_on_the_replica_count(two_replicas):
    """Each replica draws the global batch's U(-1, 1) codes and keeps its own rows: two
    replicas of 3 rows get the rows one device draws for 6, from the same seed."""
    def codes(strategy, rows):
        with strategy.scope():
            model = baselines.InfoGAN(
                idgan.build_conv_generator(C_DIM, 0, RES), baselines.build_infogan_discriminator(
                    idgan.build_conv_discriminator(RES), C_DIM), nuisance_dim=0, c_dim=C_DIM,
                seed=5)
        drawn = strategy.run(tf.function(lambda: model.sample_codes(rows)))
        return np.concatenate([np.asarray(c) for c in strategy.experimental_local_results(drawn)])

    one_device = codes(tf.distribute.get_strategy(), 6)
    assert one_device.shape == (6, C_DIM) and np.abs(one_device).max() <= 1.0
    np.testing.assert_array_equal(codes(two_replicas, 3), one_device)


def test_projection_discriminator_matches_numpy():
    keras.utils.set_random_seed(1)
    base = idgan.build_conv_discriminator(RES)
    projection = baselines.build_projection_discriminator(base, C_DIM)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (4, RES, RES, 1)).astype("float32")
    c = rng.normal(size=(4, C_DIM)).astype("float32")
    phi = np.asarray(keras.Model(base.input, baselines.split_head(base))(x), np.float64)
    psi_kernel, psi_bias = base.layers[-1].get_weights()
    (embed,) = projection.get_layer("embed_c").get_weights()
    expected = phi @ psi_kernel[:, 0] + psi_bias[0] + np.sum((c @ embed) * phi, axis=-1)
    np.testing.assert_allclose(np.asarray(projection([x, c]))[:, 0], expected, rtol=1e-4)
    # The logit depends on c only through the projection: another c, another logit.
    assert np.abs(np.asarray(projection([x, -c])) - np.asarray(projection([x, c]))).max() > 1e-4


def linear(inputs, units, kernel, bias):
    dense = layers.Dense(units)
    outputs = dense(layers.Flatten()(inputs) if len(inputs.shape) > 2 else inputs)
    dense.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return outputs


def test_vae_gan_terms_match_numpy():
    """Linear encoder (logvar -60: c = mu), a decoder with zero kernel (every reconstruction
    and prior sample is sigmoid(b)), a linear D: each tracked term in closed form."""
    rng = np.random.default_rng(2)
    pixels, beta, weight, r1_weight = RES * RES, 4.0, 0.5, 3.0
    x = keras.Input((RES, RES, 1))
    enc_kernel = rng.normal(0, 0.01, (pixels, 2 * C_DIM))
    enc_bias = np.r_[rng.normal(size=C_DIM), np.full(C_DIM, -60.0)]
    encoder = keras.Model(x, linear(x, 2 * C_DIM, enc_kernel, enc_bias))
    c = keras.Input((C_DIM,))
    dec_bias = rng.normal(size=pixels)
    decoder = keras.Model(c, layers.Reshape((RES, RES, 1))(
        linear(c, pixels, np.zeros((C_DIM, pixels)), dec_bias)))
    w, b = rng.normal(0, 0.05, (pixels, 1)), np.array([0.2])
    discriminator = keras.Model(x, linear(x, 1, w, b))
    model = baselines.VAEGAN(encoder, decoder, discriminator, beta=beta, adversarial_weight=weight,
                             r1_weight=r1_weight, seed=0)
    model.compile(keras.optimizers.SGD(1e-6), keras.optimizers.SGD(1e-6))
    images = (rng.uniform(size=(6, RES, RES, 1)) > 0.7).astype("float32")
    logs = model.train_on_batch(images, return_dict=True)

    flat = images.reshape(6, -1).astype(np.float64)
    stats = flat @ enc_kernel + enc_bias
    mu, logvar = stats[:, :C_DIM], stats[:, C_DIM:]
    reconstruction = bernoulli_nll(flat, np.broadcast_to(dec_bias, flat.shape))
    kl = 0.5 * np.sum(np.exp(logvar) + mu**2 - 1 - logvar, axis=1)
    fake_logit = (2 / (1 + np.exp(-dec_bias)) - 1) @ w[:, 0] + b[0]  # the same for all fakes
    real_logits = (2 * flat - 1) @ w[:, 0] + b[0]
    g_loss = 2 * softplus(-fake_logit)
    expected = dict(reconstruction=reconstruction.mean(), kl=kl.mean(), g_loss=g_loss,
                    loss=(reconstruction + beta * kl + weight * g_loss).mean(),
                    d_loss=(softplus(-real_logits) + 2 * softplus(fake_logit)).mean(),
                    r1=np.sum(w**2))  # grad_x of a linear D is its kernel
    for name, value in expected.items():
        np.testing.assert_allclose(logs[name], value, rtol=2e-4, err_msg=name)


# --- GILBO --------------------------------------------------------------------------------


def test_gilbo_bound_matches_numpy():
    """train_steps=0 with a given auxiliary: the mean of log N(c; e(G(z, c))) itself. c = the
    encoder's mu (logvar -60); G draws a constant image, bilinearly resized to e's 8 px."""
    rng = np.random.default_rng(3)
    real = rng.uniform(size=(30, 16, 16, 1)).astype("float32")
    x = keras.Input((16, 16, 1))
    kernel = rng.normal(0, 0.1, (256, 2 * C_DIM))
    bias = np.r_[np.zeros(C_DIM), np.full(C_DIM, -60.0)]
    encoder = keras.Model(x, linear(x, 2 * C_DIM, kernel, bias))
    z, c = keras.Input((2,)), keras.Input((C_DIM,))
    constant = linear(layers.Concatenate()([z, c]), 256, np.zeros((2 + C_DIM, 256)),
                      np.full(256, 0.4))  # G = 0.4 everywhere: 0.7 in [0, 1]
    generator = keras.Model([z, c], layers.Reshape((16, 16, 1))(constant))
    small = keras.Input((8, 8, 1))
    aux_kernel, aux_bias = rng.normal(0, 0.1, (64, 2 * C_DIM)), rng.normal(0, 0.5, 2 * C_DIM)
    auxiliary = keras.Model(small, linear(small, 2 * C_DIM, aux_kernel, aux_bias))
    batches = tf.data.Dataset.from_tensor_slices(real).batch(8)
    value = metrics.gilbo(generator, encoder, batches, num_samples=20, train_steps=0,
                          auxiliary=auxiliary)
    codes = (real.reshape(30, -1) @ kernel + bias)[:20, :C_DIM]
    stats = np.full(64, 0.7) @ aux_kernel + aux_bias
    assert value == pytest.approx(-gaussian_nll(codes, np.tile(stats, (20, 1))).mean(), rel=1e-5)


def code_models(copy):
    """An encoder whose mu reads the real image (std ~1), logvar log 0.01; a generator that
    ignores c, or writes tanh(0.5 c_j) into its own block of pixels."""
    rng = np.random.default_rng(4)
    x = keras.Input((16, 16, 1))
    kernel = np.zeros((256, 2 * C_DIM))
    kernel[:, :C_DIM] = rng.normal(0, 0.2, (256, C_DIM))
    bias = np.r_[-kernel[:, :C_DIM].sum(0) / 2, np.full(C_DIM, np.log(0.01))]
    hidden = layers.Conv2D(4, 3, padding="same")(x)  # a layer to re-initialise in the copy
    encoder = keras.Model(x, layers.Add()([linear(x, 2 * C_DIM, kernel, bias),
                                           layers.Dense(2 * C_DIM)(layers.Flatten()(hidden))]))
    encoder.layers[-2].set_weights([np.zeros((1024, 2 * C_DIM), "float32"),
                                    np.zeros(2 * C_DIM, "float32")])
    z, c = keras.Input((0,)), keras.Input((C_DIM,))
    write = np.zeros((C_DIM, 256))
    for j in range(C_DIM):
        write[j, 64 * j:64 * (j + 1)] = 0.5 if copy else 0.0
    pixels = layers.Activation("tanh")(linear(layers.Concatenate()([z, c]), 256, write,
                                              np.zeros(256)))
    return keras.Model([z, c], layers.Reshape((16, 16, 1))(pixels)), encoder


def test_gilbo_near_minimum_when_g_ignores_c_and_far_above_when_it_copies():
    real = np.random.default_rng(5).uniform(size=(512, 16, 16, 1)).astype("float32")
    batches = tf.data.Dataset.from_tensor_slices(real).repeat().batch(64)
    ignoring, encoder = code_models(copy=False)
    mu = np.asarray(encoder(real))[:, :C_DIM]
    minimum = -0.5 * np.sum(np.log(2 * np.pi * np.e * (mu.var(0) + 0.01)))  # -H(c), Gaussian
    low = metrics.gilbo(ignoring, encoder, batches, num_samples=512, train_steps=300)
    high = metrics.gilbo(code_models(copy=True)[0], encoder, batches, num_samples=512,
                         train_steps=300)
    assert minimum - 0.5 < low < minimum + 0.1  # cannot beat -H(c) without information
    assert high > minimum + 3.0


# --- What trains what ---------------------------------------------------------------------


def test_end_to_end_trains_the_encoder_and_id_gan_does_not(sprites):
    keras.utils.set_random_seed(6)
    encoder, plain_encoder = vae.build_encoder(C_DIM, RES), vae.build_encoder(C_DIM, RES)
    model = baselines.EndToEndIDGAN(
        idgan.build_conv_generator(C_DIM, 0, RES), idgan.build_conv_discriminator(RES), encoder,
        vae.build_decoder(C_DIM, RES), nuisance_dim=0, c_dim=C_DIM, beta=4.0,
        distill_weight=1.0, seed=0)
    model.compile(idgan.rmsprop(1e-3), idgan.rmsprop(1e-4), vae.adam(1e-4))
    # The distillation term alone (c held fixed) has a gradient for the encoder.
    c = tf.constant(np.random.default_rng(6).normal(size=(4, C_DIM)), tf.float32)
    with tf.GradientTape() as tape:
        loss, values = baselines.generator_loss(model, c, model.discriminate, model.distillation)
    grads = tape.gradient(loss, encoder.trainable_weights)
    assert "distill_nll" in values and encoder.trainable_weights
    assert all(g is not None for g in grads) and max(float(tf.reduce_max(tf.abs(g)))
                                                     for g in grads) > 0
    plain = idgan.IDGAN(idgan.build_conv_generator(C_DIM, 0, RES),
                        idgan.build_conv_discriminator(RES), plain_encoder, nuisance_dim=0,
                        c_dim=C_DIM, distill_weight=1.0, seed=0)
    plain.compile(idgan.rmsprop(1e-3), idgan.rmsprop(1e-4))
    before, plain_before = encoder.get_weights(), plain_encoder.get_weights()
    history = model.fit(sprites.take(2), shuffle=False, verbose=0).history
    plain.fit(sprites.take(2), shuffle=False, verbose=0)
    assert max(np.abs(a - b).max() for a, b in zip(before, encoder.get_weights())) > 1e-5
    for a, b in zip(plain_before, plain_encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert {"vae_loss", "reconstruction", "kl", "distill_nll", "g_loss", "d_loss"} <= set(history)


# --- Short sprites runs ------------------------------------------------------------------


def fit_epochs(model, sprites, epochs=4, steps=12):
    history = model.fit(sprites, epochs=epochs, steps_per_epoch=steps, shuffle=False,
                        verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values())
    return history


def build_short_run(system):
    """The system at 32 px with c_dim 3, compiled; the VAE nets at Adam 1e-3 and cGAN's D at
    RMSprop 1e-3 (not the published 1e-4), to move within a few dozen steps."""
    conv_d, conv_g = idgan.build_conv_discriminator(RES), idgan.build_conv_generator(C_DIM, 0, RES)
    gan = dict(nuisance_dim=0, c_dim=C_DIM, seed=0)
    if system == "infogan":
        model = baselines.InfoGAN(conv_g, baselines.build_infogan_discriminator(conv_d, C_DIM),
                                  **gan)
    elif system == "cgan":
        model = baselines.CGAN(conv_g, baselines.build_projection_discriminator(conv_d, C_DIM),
                               vae.build_encoder(C_DIM, RES), **gan)
    elif system == "end_to_end":
        model = baselines.EndToEndIDGAN(conv_g, conv_d, vae.build_encoder(C_DIM, RES),
                                        vae.build_decoder(C_DIM, RES), beta=4.0, **gan)
        model.compile(idgan.rmsprop(1e-3), idgan.rmsprop(1e-4), vae.adam(1e-3))
        return model
    else:
        model = baselines.VAEGAN(vae.build_encoder(C_DIM, RES), vae.build_decoder(C_DIM, RES),
                                 conv_d, beta=4.0, seed=0)
        model.compile(vae.adam(1e-3), idgan.rmsprop(1e-4))
        return model
    model.compile(idgan.rmsprop(1e-3), idgan.rmsprop(1e-3 if system == "cgan" else 1e-4))
    return model


@pytest.mark.parametrize("system, term, drop", [
    ("infogan", "info_nll", 0.4),  # Q's NLL of c falls from its untrained value (~3.2)
    ("vae_gan", "reconstruction", 200.0),  # from ~710 nats
    ("end_to_end", "reconstruction", 200.0),
    ("cgan", "d_loss", 0.1),  # D starts to tell real (x, c) pairs from generated ones
])
def test_short_sprites_run_lowers_its_loss(sprites, system, term, drop):
    keras.utils.set_random_seed(7)
    model = build_short_run(system)
    first = model.fit(sprites.take(1), shuffle=False, verbose=0).history[term][0]  # untrained step
    history = model.fit(sprites, epochs=4, steps_per_epoch=12, shuffle=False, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values()), history
    assert min(history[term]) < first - drop, (first, history)
    assert ("distill_nll" in history) == (system == "end_to_end")


# --- The script ---------------------------------------------------------------------------


def test_train_baseline_writes_a_run_metrics_scores(tmp_path):
    """InfoGAN through the command line: the run directory metrics.py evaluates (no
    decoder.keras: no VAE FID), scored with c from its prior U(-1, 1), GILBO beside L_I."""
    run = tmp_path / "infogan"
    result = run_script("benchmarks/train_baseline.py", "--system=infogan", f"--res={RES}",
                        f"--c_dim={C_DIM}", "--batch_size=8", "--steps=3", "--log_every=3",
                        "--eval_samples=32", f"--out_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    names = set(os.listdir(run))
    assert {"generator.keras", "encoder.keras", "flags.json", "checkpoint.weights.h5",
            "samples.png", "traversals.png", "metrics.json"} <= names
    assert "decoder.keras" not in names
    flags = json.loads((run / "flags.json").read_text())
    assert flags["code_prior"] == "uniform" and flags["nuisance_dim"] == 0
    scores = json.loads((run / "metrics.json").read_text())
    for key in ("mig", "fid_idgan", "l_i", "gilbo"):
        assert np.isfinite(scores[key]), key
    assert "fid_vae" not in scores
    uniform = lambda images, rng: rng.uniform(-1, 1, (len(images), C_DIM))  # noqa: E731
    prior = metrics.evaluate(str(run), str(run), num_samples=32, codes_fn=uniform,
                             out=str(tmp_path / "prior.json"), log=lambda line: None,
                             datasets=data)
    for key in ("fid_idgan", "l_i", "gilbo"):
        assert scores[key] == pytest.approx(prior[key], rel=1e-5), key
    generator = keras.models.load_model(run / "generator.keras")
    assert [tuple(t.shape[1:]) for t in generator.inputs] == [(0,), (C_DIM,)]
