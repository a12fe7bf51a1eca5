"""train_vae.py end to end: artifacts, resume, and one-line errors for bad input."""
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import vae

from conftest import run_script

TINY = ["--dataset=sprites", "--c_dim=3", "--batch_size=8", "--log_every=2", "--res=32",
        "--noevaluate"]


def train_vae(*args):
    return run_script("train_vae.py", *args)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run of 4 steps, then the same command asked for 6: it must resume."""
    out = str(tmp_path_factory.mktemp("runs") / "vae")
    first = train_vae(*TINY, "--steps=4", f"--out_dir={out}")
    assert first.returncode == 0, first.stderr
    # Progress lines count the run's steps, not --log_every's: the last one says 4/4.
    progress = [line for line in first.stdout.splitlines() if line.startswith("step ")]
    assert progress[-1].startswith("step 4/4: ") and "loss " in progress[-1]
    assert "(100.0%" in progress[-1]
    with open(os.path.join(out, "flags.json")) as f:
        assert json.load(f)["steps"] == 4
    second = train_vae(*TINY, "--steps=6", "--evaluate", "--eval_samples=64", f"--out_dir={out}")
    assert second.returncode == 0, second.stderr
    assert "Resuming" in second.stdout and "from step 4" in second.stdout
    return out


def test_finished_run_is_evaluated(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        results = json.load(f)
    assert 0.0 <= results["factor_vae_score"]["eval_accuracy"] <= 1.0
    assert 0.0 <= results["mig"] <= 1.0
    assert results["fid_vae"] > 0.0


def test_run_directory_holds_every_artifact(run_dir):
    names = set(os.listdir(run_dir))
    assert {"encoder.keras", "decoder.keras", "checkpoint.weights.h5", "flags.json",
            "reconstructions.png", "traversals.png", "logs"} <= names
    assert os.listdir(os.path.join(run_dir, "logs"))
    traversals = tf.io.decode_png(tf.io.read_file(os.path.join(run_dir, "traversals.png")))
    assert traversals.shape[0] == 3 * 32  # one row per code dimension


def test_saved_models_follow_the_encoder_contract(run_dir):
    encoder = keras.models.load_model(os.path.join(run_dir, "encoder.keras"))
    decoder = keras.models.load_model(os.path.join(run_dir, "decoder.keras"))
    assert encoder.input_shape == (None, 32, 32, 1) and encoder.output_shape == (None, 6)
    images = decoder(np.zeros((2, 3), "float32")).numpy()
    assert images.shape == (2, 32, 32, 1) and 0.0 <= images.min() and images.max() <= 1.0


def test_resumed_run_continued_the_step_counter(run_dir):
    encoder, decoder = vae.build_encoder(3, 32, 1), vae.build_decoder(3, 32, 1)
    model = vae.BetaVAE(encoder, decoder)
    model.compile(optimizer=keras.optimizers.Adam())
    model(np.zeros((1, 32, 32, 1), "float32"))
    model.build_optimizers()
    model.load_weights(os.path.join(run_dir, "checkpoint.weights.h5"))
    assert int(model.optimizer.iterations) == 6
    saved = keras.models.load_model(os.path.join(run_dir, "encoder.keras"))
    for a, b in zip(saved.weights, encoder.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_factor_vae_runs_end_to_end_with_xla_and_mixed_precision(tmp_path):
    result = train_vae(*TINY, "--model=factor_vae", "--steps=2", "--jit_compile",
                       "--mixed_precision", f"--out_dir={tmp_path / 'f'}")
    assert result.returncode == 0, result.stderr
    encoder = keras.models.load_model(tmp_path / "f" / "encoder.keras")
    assert encoder.layers[1].compute_dtype == "bfloat16"
    assert encoder(np.zeros((1, 32, 32, 1), "float32")).dtype == "float32"


def test_overwrite_starts_afresh(run_dir, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(run_dir, out)  # 6 steps at beta 8
    result = train_vae(*TINY, "--steps=2", "--beta=1", "--overwrite", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert "Resuming" not in result.stdout
    with open(out / "flags.json") as f:
        assert json.load(f)["beta"] == 1.0
    assert "step 2/2: " in result.stdout and "Done: 2 of 2 steps" in result.stdout


def test_a_moved_run_directory_resumes_where_it_now_is(run_dir, tmp_path):
    moved = str(tmp_path / "moved")
    shutil.copytree(run_dir, moved)
    result = train_vae(*TINY, "--steps=8", f"--out_dir={moved}")
    assert result.returncode == 0, result.stderr
    assert f"Resuming {moved} from step 6" in result.stdout
    with open(os.path.join(moved, "flags.json")) as f:
        assert json.load(f)["out_dir"] == moved


def test_published_defaults_per_dataset():
    """README "Published settings" (the authors' scripts/run_*.sh)."""
    import train_vae as script
    for dataset, beta, c_dim, decoder in [("dsprites", 8.0, 10, "bernoulli"),
                                          ("color_sprites", 8.0, 10, "bernoulli"),
                                          ("celeba", 6.4, 20, "gaussian"),
                                          ("chairs", 10.0, 20, "gaussian"),
                                          ("cars", 5.0, 20, "gaussian")]:
        defaults = script.published(dataset)
        assert (defaults["beta"], defaults["c_dim"], defaults["decoder"]) == (beta, c_dim, decoder)


@pytest.mark.parametrize("changes, evaluated, loads", [
    (dict(dataset="celeba"), True, True),  # --evaluate, the default
    (dict(dataset="celeba", evaluate=False), True, False),
    (dict(dataset="celeba", evaluate=False, fid_every=4), True, True),
    (dict(dataset="celeba"), False, False),  # the script will not evaluate
    (dict(dataset="color_sprites", fid_every=4), True, False),  # the factor classifier's FID
])
def test_run_loads_inception_at_the_start_where_fid_will_use_it(
        run_config, monkeypatch, capsys, changes, evaluated, loads):
    import train_vae as script
    loaded = []
    monkeypatch.setattr(script.metrics, "inception_features_fn", loaded.append)
    config = run_config(**changes)
    script.Run(config, tf.distribute.get_strategy(), evaluated=evaluated)
    assert loaded == (["imagenet"] if loads else [])
    if not loads:
        return

    def offline(weights):
        raise RuntimeError("cannot load InceptionV3 weights") from OSError("no network\nhere")

    monkeypatch.setattr(script.metrics, "inception_features_fn", offline)
    with pytest.raises(SystemExit) as stopped:
        script.Run(config, tf.distribute.get_strategy(), evaluated=evaluated)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    offer = "--noevaluate" if config["evaluate"] else "--fid_every=0"
    assert error.count("\n") == 1 and "imagenet does not load (no network)" in error
    assert error.endswith(f"or {offer}\n") and "--inception_weights=FILE" in error
    assert not os.path.exists(config["out_dir"])
