"""--jit_compile and --mixed_precision: same training step, float32 where it matters;
benchmarks/vs_pytorch.py without PyTorch; the benchmarks' one model builder,
benchmarks/models.py."""
import importlib.util

import keras
import numpy as np
import pytest

import idgan
import train_vae
import vae
from conftest import benchmark, run_script


def test_xla_compiled_step_equals_the_plain_step(stage2):
    """One ID-GAN step (R1's inner tape, distillation, EMA) with and without XLA."""
    models = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(3)
        model = stage2.build_replica_model()
        model.compile(model.g_optimizer, model.d_optimizer, jit_compile=jit_compile)
        models.append(model)
    for name in ["generator", "generator_ema", "discriminator", "encoder"]:
        getattr(models[1], name).set_weights(getattr(models[0], name).get_weights())
    start = models[0].generator.get_weights()
    for model in models:
        model.fit(stage2.dataset(stage2.images(8), 8), shuffle=False, verbose=0)
    for name in ["generator", "generator_ema", "discriminator"]:
        for a, b in zip(getattr(models[0], name).weights, getattr(models[1], name).weights):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-5)
    moved = max(np.abs(a - b).max() for a, b in zip(start, models[0].generator.get_weights()))
    assert moved > 1e-3


SIZES = {"steps": 300, "log_every": 100, "backup_every": 50}


def test_jit_compile_is_refused_on_several_replicas(two_replicas, run_config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_vae.Run(run_config(jit_compile=True, **SIZES), two_replicas)
    assert exit_info.value.code == 2
    assert "--jit_compile needs one device, not 2 replicas" in capsys.readouterr().err
    train_vae.Run(run_config(**SIZES), two_replicas)  # no error


@pytest.mark.parametrize("per_call,message", [
    (7, "--steps_per_execution=7 must divide --steps=300"),
    (20, "--steps_per_execution=20 must divide --backup_every=50")])
def test_steps_per_execution_must_divide_every_step_the_monitor_acts_at(
        two_replicas, run_config, capsys, per_call, message):
    with pytest.raises(SystemExit):
        train_vae.Run(run_config(steps_per_execution=per_call, **SIZES), two_replicas)
    assert message in capsys.readouterr().err


def test_mixed_precision_computes_in_bfloat16_and_keeps_losses_float32(mixed_bfloat16, stage2):
    keras.utils.set_random_seed(0)
    encoder, decoder = vae.build_encoder(3, 32), vae.build_decoder(3, 32)
    generator = idgan.build_conv_generator(3, 2, 32)
    discriminator = idgan.build_conv_discriminator(32)
    tc = vae.build_tc_discriminator(3)
    for model in (encoder, decoder, generator, discriminator, tc):
        assert model.layers[1].compute_dtype == "bfloat16"  # the first hidden layer
        assert model.outputs[0].dtype == "float32"
        assert {w.dtype for w in model.weights} == {"float32"}
    assert vae.image_decoder(decoder).outputs[0].dtype == "float32"

    beta_vae = vae.BetaVAE(encoder, decoder, beta=4.0, seed=0)
    beta_vae.compile(vae.adam(1e-4))
    gan = idgan.IDGAN(generator, discriminator, encoder, nuisance_dim=2, c_dim=3, seed=0)
    gan.compile(idgan.rmsprop(1e-4), idgan.rmsprop(1e-4))
    for model in (beta_vae, gan):
        history = model.fit(stage2.dataset(stage2.images(32, channels=1), 8), shuffle=False,
                            verbose=0).history
        assert all(np.isfinite(values).all() for values in history.values())
        assert {w.dtype for w in model.weights} <= {"float32", "int64"}  # int64: RNG state


def elbo_terms(encoder, decoder, x, eps):
    """Per-example reconstruction loss and KL, and the logits, on codes mu + sigma * eps."""
    mu, logvar = vae.split_stats(encoder(x, training=True))
    logits = decoder(mu + np.exp(0.5 * logvar) * eps, training=True)
    return vae.reconstruction_loss(x, logits, "bernoulli"), vae.kl_divergence(mu, logvar), logits


def test_mixed_precision_losses_match_float32(mixed_bfloat16, stage2):
    """The same weights give the same ELBO terms to bfloat16 accuracy (~3 digits)."""
    x = stage2.images(32, channels=1)[:8]
    eps = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    mixed = vae.build_encoder(3, 32), vae.build_decoder(3, 32)
    keras.config.set_dtype_policy("float32")
    plain = vae.build_encoder(3, 32), vae.build_decoder(3, 32)
    for a, b in zip(mixed, plain):
        b.set_weights(a.get_weights())
    assert mixed[0].layers[1].compute_dtype == "bfloat16"
    for a, b in zip(elbo_terms(*mixed, x, eps), elbo_terms(*plain, x, eps)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0.03, atol=0.05)


def test_vs_pytorch_without_pytorch_says_how_to_install_it_and_exits_cleanly():
    """PyTorch is optional: benchmarks/vs_pytorch.py must not need it to start."""
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("PyTorch is installed here; this checks the environment without it")
    done = run_script("benchmarks/vs_pytorch.py", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "PyTorch is not installed" in done.stdout
    assert "pip install torch==2.13.0" in done.stdout
    assert "Traceback" not in done.stderr


def test_every_benchmark_case_trains_on_its_batches_streamed_and_in_memory(stage2):
    models = benchmark("models")
    for case in models.CASES:
        model = models.build(case, res=32, nf=8, seed=0)
        channels = 3 if case == "idgan_resnet64" else 1
        memory = models.batches(case, images=stage2.images(4, 32, channels))
        streamed = models.batches(case, 4, res=32)
        for batches in (streamed, memory):
            first = next(iter(batches))
            parts = first if case == "factor_vae" else (first,)  # FactorVAE: two batches
            assert [tuple(x.shape) for x in parts] == [(4, 32, 32, channels)] * len(parts)
            history = model.fit(batches, epochs=1, steps_per_epoch=1, shuffle=False,
                                verbose=0).history
            assert all(np.isfinite(values).all() for values in history.values()), case
    assert models.build("beta_vae", res=32, jit_compile=True).jit_compile


def test_benchmark_models_keep_the_authors_optimizer_settings():
    models = benchmark("models")
    factor_vae, conv, resnet = (models.build(case, res=32, nf=8)
                                for case in ("factor_vae", "idgan_conv", "idgan_resnet64"))
    assert isinstance(factor_vae.optimizer, vae.TorchAdam) and factor_vae.optimizer.built
    assert float(factor_vae.optimizer.learning_rate) == pytest.approx(1e-4)
    lrs = [[float(o.learning_rate) for o in (m.g_optimizer, m.d_optimizer)] for m in (conv, resnet)]
    assert lrs == [[pytest.approx(1e-3), pytest.approx(1e-4)], [pytest.approx(1e-4)] * 2]
    assert isinstance(conv.g_optimizer, idgan.TorchRMSprop) and conv.d_optimizer.built
    with pytest.raises(ValueError, match="unknown case"):
        models.build("idgan_resnet128")
