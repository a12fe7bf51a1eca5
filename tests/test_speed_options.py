"""--jit_compile and --mixed_precision: same training step, float32 where it matters;
benchmarks/vs_pytorch.py without PyTorch."""
import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import idgan
import train_vae
import vae


@pytest.fixture
def mixed_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy("float32")


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
        model.fit(stage2.dataset(stage2.images(8), 8), verbose=0)
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
        history = model.fit(stage2.dataset(stage2.images(32, channels=1), 8), verbose=0).history
        assert all(np.isfinite(values).all() for values in history.values())
        assert {w.dtype for w in model.weights} <= {"float32", "int64"}  # int64: RNG state


def test_mixed_precision_losses_match_float32(mixed_bfloat16, stage2):
    """The same weights give the same ELBO terms to bfloat16 accuracy (~3 digits)."""
    x = stage2.images(32, channels=1)[:8]
    keras.utils.set_random_seed(0)
    mixed = vae.BetaVAE(vae.build_encoder(3, 32), vae.build_decoder(3, 32), beta=4.0, seed=0)
    keras.config.set_dtype_policy("float32")
    plain = vae.BetaVAE(vae.build_encoder(3, 32), vae.build_decoder(3, 32), beta=4.0, seed=0)
    mixed(x), plain(x)
    plain.set_weights(mixed.get_weights())
    for model in (mixed, plain):
        model.compile(optimizer=keras.optimizers.SGD(0.0))  # a step that changes nothing
    logs = [model.train_on_batch(x, return_dict=True) for model in (mixed, plain)]
    for name in ("loss", "reconstruction", "kl"):
        assert logs[0][name] == pytest.approx(logs[1][name], rel=0.03, abs=0.05), name


def test_vs_pytorch_without_pytorch_says_how_to_install_it_and_exits_cleanly():
    """PyTorch is optional: benchmarks/vs_pytorch.py must not need it to start."""
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("PyTorch is installed here; this checks the environment without it")
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks", "vs_pytorch.py")
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "PyTorch is not installed" in done.stdout
    assert "pip install torch==2.13.0" in done.stdout
    assert "Traceback" not in done.stderr
