"""Tests for idgan.py: networks, the stage-2 objective's pieces, and IDGAN.train_step."""

import contextlib
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import data
import idgan

RESOLUTIONS = [32, 64, 128, 256, 512, 1024]


# Networks.


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_resnet_shapes(res, stage2):
    generator, discriminator = stage2.tiny_resnets(3, 2, res)
    _, vdb_discriminator = stage2.tiny_resnets(3, 2, res, vdb=True)
    fake = generator([np.zeros((1, 2), "float32"), np.ones((1, 3), "float32")])
    assert fake.shape == (1, res, res, 3)
    assert np.all(np.abs(fake) <= 1.0)
    assert discriminator(fake).shape == (1, 1)
    logit, kl = vdb_discriminator([fake, None])
    assert logit.shape == (1, 1) and kl.shape == (1,)


@pytest.mark.parametrize("res,channels", [(32, 1), (64, 1), (64, 3)])
@pytest.mark.parametrize("c_dim,nuisance_dim", [(10, 0), (0, 8), (4, 6)])
def test_conv_shapes(res, channels, c_dim, nuisance_dim):
    generator = idgan.build_conv_generator(c_dim, nuisance_dim, res, channels)
    discriminator = idgan.build_conv_discriminator(res, channels)
    fake = generator([np.ones((2, nuisance_dim), "float32"), np.ones((2, c_dim), "float32")])
    assert fake.shape == (2, res, res, channels)
    assert discriminator(fake).shape == (2, 1)


def test_bad_resolution():
    with pytest.raises(ValueError, match="power of two"):
        idgan.build_resnet_discriminator(48)


def conv(k, fin, fout, bias=True):
    return k * k * fin * fout + (fout if bias else 0)


def dense(fin, fout):
    return fin * fout + fout


def block(fin, fout):
    hidden = min(fin, fout)
    shortcut = conv(1, fin, fout, bias=False) if fin != fout else 0
    return conv(3, fin, hidden) + conv(3, hidden, fout) + shortcut


def test_paper_parameter_counts(stage2):
    # Table A.4 / the authors' resnet3.py at 64 px, nf=64, nf_max=512, c_dim 20, z 256.
    generator = (dense(256 + 20, 4 * 4 * 512) + block(512, 512) + block(512, 256)
                 + block(256, 128) + block(128, 64) + block(64, 64) + conv(3, 64, 3))
    # resnet3.py has ResBlock(nf, nf) then one (pool, ResBlock) per stage: 5 blocks.
    discriminator = (conv(3, 3, 64) + block(64, 64) + block(64, 128) + block(128, 256)
                     + block(256, 512) + block(512, 512) + dense(4 * 4 * 512, 1))
    assert idgan.build_resnet_generator(20, 256, 64).count_params() == generator
    assert idgan.build_resnet_discriminator(64).count_params() == discriminator
    # Table A.3 at 64 px, dSprites: c_dim 10, no nuisance, 1 channel.
    generator = (dense(10, 256) + dense(256, 4 * 4 * 64) + conv(4, 64, 64) + conv(4, 64, 32)
                 + conv(4, 32, 32) + conv(4, 32, 1))
    discriminator = (conv(4, 1, 32) + conv(4, 32, 32) + conv(4, 32, 64) + conv(4, 64, 64)
                     + dense(4 * 4 * 64, 256) + dense(256, 1))
    assert idgan.build_conv_generator(10, 0, 64, 1).count_params() == generator
    assert idgan.build_conv_discriminator(64, 1).count_params() == discriminator
    # VDB (Table A.7) adds two 1x1 convs (mean, log-std) at the last map's width.
    width = 8
    _, plain = stage2.tiny_resnets(1, 1, 64)
    _, vdb = stage2.tiny_resnets(1, 1, 64, vdb=True)
    assert vdb.count_params() - plain.count_params() == 2 * conv(1, width, width)


def test_vdb_kl_matches_closed_form(stage2):
    _, discriminator = stage2.tiny_resnets(1, 1, 32, vdb=True)
    probe = keras.Model(discriminator.input, [discriminator.get_layer("vdb_mean").output,
                                              discriminator.get_layer("vdb_logstd").output,
                                              discriminator.output[1]])
    mean, logstd, kl = (np.asarray(t, np.float64) for t in probe([stage2.images(3) * 2 - 1, None]))
    width = mean.shape[-1]
    expected = (-logstd + (np.exp(2 * logstd) + mean**2) / 2).sum(-1) - width / 2
    np.testing.assert_allclose(kl, expected.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_vdb_samples_only_when_training(stage2):
    _, discriminator = stage2.tiny_resnets(1, 1, 32, vdb=True)
    names = ("vdb_mean", "vdb_logstd", "vdb_sample")
    probe = keras.Model(discriminator.inputs, [discriminator.get_layer(n).output for n in names])
    x, noise = stage2.images(3) * 2 - 1, np.random.default_rng(2).normal(size=(3, 4, 4, 8))
    mean, logstd, sample = (np.asarray(t) for t in probe([x, noise], training=True))
    np.testing.assert_allclose(sample, mean + np.exp(logstd) * noise, rtol=1e-5, atol=1e-6)
    for inputs, training in [([x, noise], False), ([x, None], True), ([x, None], False)]:
        mean, _, sample = probe(inputs, training=training)  # the mean, without noise
        np.testing.assert_array_equal(np.asarray(sample), np.asarray(mean))


# Initialisation: the authors' GAN nets keep PyTorch's defaults, U(+-1/sqrt(fan_in)) for
# weights (kaiming_uniform, a = sqrt(5)) and biases, where fan_in = weight.size(1) *
# prod(kernel) (torch.nn.init._calculate_fan_in_and_fan_out); PyTorch weights are Linear
# (out, in), Conv2d (out, in, k, k) and ConvTranspose2d (in, out, k, k).


def assert_uniform(values, torch_weight_shape):
    bound = 1 / np.sqrt(torch_weight_shape[1] * np.prod(torch_weight_shape[2:]))
    values = np.asarray(values).ravel()
    assert np.abs(values).max() <= bound
    if values.size >= 256:  # U(-b, b) has std b / sqrt(3)
        assert values.std() == pytest.approx(bound / np.sqrt(3), rel=0.1)
    elif values.size >= 8:
        assert np.abs(values).max() > 0.5 * bound


def kernel_layers(model):
    return [layer for layer in model.layers if hasattr(layer, "kernel")]


def test_conv_nets_authors_init_is_pytorchs_default():
    keras.utils.set_random_seed(0)
    # The authors' dvae_dec / dvae_enc at 64 px, c_dim 10, one channel, as PyTorch weights.
    # ConvTranspose2d(256, 64, 4) on a 1 x 1 map is the generator's second Dense, and
    # Conv2d(64, 256, 4) on the 4 x 4 map is the discriminator's first Dense.
    generator = [(256, 10), (256, 64, 4, 4), (64, 64, 4, 4), (64, 32, 4, 4), (32, 32, 4, 4),
                 (32, 1, 4, 4)]
    discriminator = [(32, 1, 4, 4), (32, 32, 4, 4), (64, 32, 4, 4), (64, 64, 4, 4),
                     (256, 64, 4, 4), (1, 256)]
    for model, shapes in [(idgan.build_conv_generator(10, 0, 64, 1, init="authors"), generator),
                          (idgan.build_conv_discriminator(64, 1, init="authors"), discriminator)]:
        assert len(kernel_layers(model)) == len(shapes)
        for layer, shape in zip(kernel_layers(model), shapes):
            assert_uniform(layer.kernel, shape)
            assert_uniform(layer.bias, shape)
    with pytest.raises(ValueError, match="init must be one of"):
        idgan.build_conv_discriminator(64, 1, init="torch")


def test_resnets_authors_init_is_pytorchs_default():
    keras.utils.set_random_seed(0)
    for model in (idgan.build_resnet_generator(3, 5, 32, nf=16, nf_max=32, init="authors"),
                  idgan.build_resnet_discriminator(32, nf=16, nf_max=32, vdb=True,
                                                   init="authors")):
        for layer in kernel_layers(model):
            # Keras kernels: Dense (in, out), Conv2D (k, k, in, out), Conv2DTranspose
            # (k, k, out, in): all reversed PyTorch weights but for the kernel's k, k.
            k = layer.kernel.shape
            shape = k[::-1] if len(k) == 2 else (k[3], k[2], k[0], k[1])
            assert_uniform(layer.kernel, shape)
            if layer.use_bias:
                assert_uniform(layer.bias, shape)
            else:
                assert layer.name.endswith("_shortcut")  # resnet3's conv_s has no bias


# Pieces of the objective.


def test_r1_matches_linear_closed_form(stage2):
    # D(x) = <w, x> + b has grad_x D = w, so the penalty is ||w||^2 for every example,
    # and its gradient with respect to w is 2 w (double backprop through the inner tape).
    image = keras.Input((8, 8, 2))
    linear = layers.Dense(1, kernel_initializer="random_normal", bias_initializer="ones")
    discriminator = keras.Model(image, linear(layers.Flatten()(image)))
    x = tf.constant(stage2.images(5, 8, 2) * 2 - 1)
    with tf.GradientTape() as tape:
        outputs, r1 = idgan.r1_penalty(lambda x: discriminator(x, training=True), x)
        mean_r1 = tf.reduce_mean(r1)
    w = linear.kernel.numpy()
    np.testing.assert_allclose(r1.numpy(), np.full(5, np.sum(w**2)), rtol=1e-5)
    np.testing.assert_allclose(outputs.numpy(), x.numpy().reshape(5, -1) @ w + 1, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(mean_r1, linear.kernel).numpy(), 2 * w, rtol=1e-5)


def test_gaussian_nll_matches_numpy():
    rng = np.random.default_rng(1)
    c = rng.normal(size=(6, 4))
    mu, logvar = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    expected = [sum(0.5 * (np.log(2 * np.pi) + logvar[i, j]
                           + (c[i, j] - mu[i, j]) ** 2 / np.exp(logvar[i, j])) for j in range(4))
                for i in range(6)]
    stats = np.concatenate([mu, logvar], -1).astype("float32")
    nll = idgan.gaussian_nll(c.astype("float32"), stats)
    np.testing.assert_allclose(np.asarray(nll), expected, rtol=1e-5)


def test_encoder_view(stage2):
    x = stage2.images(2, 32, 3)
    pooled = x.reshape(2, 16, 2, 16, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(np.asarray(idgan.encoder_view(x, (16, 16))), pooled, rtol=1e-5)
    assert idgan.encoder_view(x, (32, 32)) is x
    upsized = np.asarray(idgan.encoder_view(np.full((1, 16, 16, 1), 0.25, "float32"), (64, 64)))
    np.testing.assert_allclose(upsized, np.full((1, 64, 64, 1), 0.25), rtol=1e-6)


def test_bad_inputs(stage2):
    generator, discriminator = stage2.tiny_resnets(3, 2)
    with pytest.raises(ValueError, match=r"2 \* c_dim = 6 values"):
        seven = keras.Sequential([keras.Input((16, 16, 3)), layers.Flatten(), layers.Dense(7)])
        idgan.IDGAN(generator, discriminator, seven, nuisance_dim=2, c_dim=3)
    with pytest.raises(ValueError, match="channels"):
        idgan.IDGAN(generator, discriminator, stage2.tiny_encoder(3, channels=1),
                    nuisance_dim=2, c_dim=3)
    with pytest.raises(ValueError, match="generator takes"):
        idgan.IDGAN(generator, discriminator, stage2.tiny_encoder(4), nuisance_dim=2, c_dim=4)
    with pytest.raises(ValueError, match="needs an encoder"):
        idgan.IDGAN(generator, discriminator, None, nuisance_dim=2, c_dim=3)
    with pytest.raises(ValueError, match="vdb_target"):
        idgan.IDGAN(generator, discriminator, stage2.tiny_encoder(3), nuisance_dim=2, c_dim=3,
                    vdb_target=0.1)


# Training.


@pytest.fixture(scope="module")
def trained(tmp_path_factory, stage2):
    """A tiny ID-GAN (32 px, encoder at 16 px) with snapshots around its first step."""
    keras.utils.set_random_seed(0)
    generator, discriminator = stage2.tiny_resnets(3, 2)
    encoder = stage2.tiny_encoder(3)
    encoder_before = [w.copy() for w in encoder.get_weights()]
    model = idgan.IDGAN(generator, discriminator, encoder, nuisance_dim=2, c_dim=3,
                        ema_decay=0.9, seed=1)
    model.compile(idgan.rmsprop(1e-3), idgan.rmsprop(1e-3))
    before = generator.get_weights()
    data = stage2.dataset(stage2.images(32), 8)
    history = model.fit(data.take(1), shuffle=False, verbose=0).history
    after, ema = generator.get_weights(), model.generator_ema.get_weights()
    model.fit(data, shuffle=False, verbose=0)  # four more steps
    return dict(model=model, encoder_before=encoder_before, before=before, after=after,
                ema=ema, history=history, data=data, tmp=tmp_path_factory.mktemp("idgan"))


def test_metrics(trained):
    assert set(trained["history"]) == {"d_loss", "g_loss", "r1", "distill_nll"}
    assert all(np.isfinite(v[0]) for v in trained["history"].values())


def test_encoder_is_frozen(trained):
    model = trained["model"]
    assert not model.encoder.trainable
    for new, old in zip(model.encoder.get_weights(), trained["encoder_before"]):
        np.testing.assert_array_equal(new, old)
    # The generator did move, so the encoder's stillness is not vacuous.
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(trained["after"], trained["before"]))


def test_ema_formula(trained):
    # One step from ema = w_old: ema_new = decay * w_old + (1 - decay) * w_new.
    for ema, old, new in zip(trained["ema"], trained["before"], trained["after"]):
        np.testing.assert_allclose(ema, 0.9 * old + 0.1 * new, rtol=1e-5, atol=1e-7)


def test_weights_restore_optimizers(trained, stage2):
    model, path = trained["model"], str(trained["tmp"] / "checkpoint.weights.h5")
    model.save_weights(path)
    generator, discriminator = stage2.tiny_resnets(3, 2)
    restored = idgan.IDGAN(generator, discriminator, stage2.tiny_encoder(3), nuisance_dim=2, c_dim=3)
    restored.compile(idgan.rmsprop(1e-3), idgan.rmsprop(1e-3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored.load_weights(path)
    assert not [w for w in caught if "Skipping" in str(w.message)]
    for name in ["generator", "generator_ema", "discriminator", "encoder",
                 "g_optimizer", "d_optimizer"]:
        for a, b in zip(getattr(model, name).variables, getattr(restored, name).variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert restored.g_optimizer.iterations.numpy() == 5


def test_ema_generator_loads_without_project(trained):
    path = str(trained["tmp"] / "generator.keras")
    generator = trained["model"].generator_ema
    generator.save(path)
    loaded = keras.models.load_model(path)  # standard layers and ops only
    z, c = np.ones((2, 2), "float32"), np.linspace(-1, 1, 6, dtype="float32").reshape(2, 3)
    np.testing.assert_allclose(np.asarray(loaded([z, c])), np.asarray(generator([z, c])),
                               atol=1e-6)


def test_plain_gan_baseline(stage2):
    generator, discriminator = stage2.tiny_resnets(0, 4)
    model = idgan.IDGAN(generator, discriminator, None, nuisance_dim=4, c_dim=0)
    model.compile(idgan.rmsprop(1e-4), idgan.rmsprop(1e-4))
    history = model.fit(stage2.dataset(stage2.images(8), 4), shuffle=False, verbose=0).history
    assert set(history) == {"d_loss", "g_loss", "r1"}


def test_vdb_run_resumes_exactly(tmp_path, stage2):
    """4 steps straight == 2 steps, save_weights, load into a fresh model, 2 more steps:
    the VDB's noise must come from state that the checkpoint keeps."""

    def vdb_model(seed):
        keras.utils.set_random_seed(0)
        generator, discriminator = stage2.tiny_resnets(2, 2, vdb=True)
        model = idgan.IDGAN(generator, discriminator, stage2.tiny_encoder(2), nuisance_dim=2,
                            c_dim=2, vdb_target=0.1, seed=seed)
        model.compile(idgan.rmsprop(1e-3), idgan.rmsprop(1e-3))
        return model

    batches, path = stage2.dataset(stage2.images(32), 8), str(tmp_path / "vdb.weights.h5")
    straight, first = vdb_model(seed=1), vdb_model(seed=1)
    straight.fit(batches, shuffle=False, verbose=0)
    first.fit(batches.take(2), shuffle=False, verbose=0)
    first.save_weights(path)
    resumed = vdb_model(seed=2)  # another seed: the noise state must be the checkpoint's
    resumed.load_weights(path)
    resumed.fit(batches.skip(2), shuffle=False, verbose=0)
    assert int(resumed.g_optimizer.iterations) == 4
    for part in ["discriminator", "generator", "generator_ema", "g_optimizer", "d_optimizer"]:
        for a, b in zip(getattr(straight, part).variables, getattr(resumed, part).variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_array_equal(straight.vdb_beta.numpy(), resumed.vdb_beta.numpy())


@pytest.mark.parametrize("vdb", [False, True])
def test_replica_equivalence(two_replicas, vdb, stage2):
    keras.utils.set_random_seed(3)
    single = stage2.build_replica_model(vdb=vdb)
    with two_replicas.scope():
        mirrored = stage2.build_replica_model(vdb=vdb)
    for name in ["generator", "generator_ema", "discriminator", "encoder"]:
        getattr(mirrored, name).set_weights(getattr(single, name).get_weights())
    start = single.generator.get_weights() + single.discriminator.get_weights()
    data = stage2.dataset(stage2.images(8), 8)
    single.fit(data, shuffle=False, verbose=0)
    mirrored.fit(data, shuffle=False, verbose=0)
    for name in ["generator", "generator_ema", "discriminator"]:
        for a, b in zip(getattr(single, name).weights, getattr(mirrored, name).weights):
            replicas = [v.numpy() for v in b.value.values]
            np.testing.assert_allclose(replicas[0], replicas[1], rtol=0, atol=0)
            np.testing.assert_allclose(a.numpy(), replicas[0], rtol=0, atol=1e-5)
    end = single.generator.get_weights() + single.discriminator.get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(start, end)) > 1e-3


@pytest.mark.parametrize("target,distributed", [(0.0, False), (1e6, False), (0.0, True)])
def test_vdb_dual_update(two_replicas, target, distributed, stage2):
    with two_replicas.scope() if distributed else contextlib.nullcontext():
        generator, discriminator = stage2.tiny_resnets(2, 2, vdb=True)
        model = idgan.IDGAN(generator, discriminator, stage2.tiny_encoder(2), nuisance_dim=2,
                            c_dim=2, vdb_target=target, vdb_beta=0.1, vdb_step=1.0)
        model.compile(idgan.rmsprop(1e-4), idgan.rmsprop(1e-4))
    history = model.fit(stage2.dataset(stage2.images(8), 8), shuffle=False, verbose=0).history
    kl = history["vdb_kl"][0]
    expected = max(0.0, 0.1 + 1.0 * (kl - target))
    assert kl > 0
    np.testing.assert_allclose(model.vdb_beta.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(history["vdb_beta"][0], expected, rtol=1e-5)


def position_encoder(res):
    """A fixed encoder whose mu is the sprite's first moments (its centre in [-1, 1] times
    its area / 64) and logvar log(0.01)."""
    coord = (np.arange(res) + 0.5) / (res / 2) - 1.0
    kernel = np.zeros((res, res, 2), "float32")
    kernel[:, :, 0], kernel[:, :, 1] = coord[None, :] / 64, coord[:, None] / 64
    kernel = np.concatenate([kernel.reshape(-1, 2), np.zeros((res * res, 2), "float32")], 1)
    image = keras.Input((res, res, 1))
    head = layers.Dense(4)
    encoder = keras.Model(image, head(layers.Flatten()(image)))
    head.set_weights([kernel, np.array([0, 0, np.log(0.01), np.log(0.01)], "float32")])
    return encoder


def test_sprites_distillation_lowers_nll():
    res, nll = 32, {}
    for weight in [0.1, 0.0]:
        keras.utils.set_random_seed(1)
        model = idgan.IDGAN(idgan.build_conv_generator(2, 0, res), idgan.build_conv_discriminator(
            res), position_encoder(res), nuisance_dim=0, c_dim=2, distill_weight=weight, seed=2)
        model.compile(idgan.rmsprop(1e-3), idgan.rmsprop(1e-4))  # the dSprites learning rates
        ds = data.make_dataset("sprites", res, 32, seed=0)
        nll[weight] = model.fit(ds, epochs=4, steps_per_epoch=10, shuffle=False, verbose=0).history[
            "distill_nll"]
    assert nll[0.1][-1] < nll[0.1][0] - 5.0
    assert nll[0.1][-1] < nll[0.0][-1] - 5.0
