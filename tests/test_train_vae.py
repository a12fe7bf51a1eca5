"""train_vae.py end to end: artifacts, resume, and one-line errors for bad input."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import vae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset=sprites", "--c_dim=3", "--batch_size=8", "--log_every=2", "--res=32",
        "--noevaluate"]


def train_vae(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(ROOT, "train_vae.py"), *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run of 4 steps, then the same command asked for 6: it must resume."""
    out = str(tmp_path_factory.mktemp("runs") / "vae")
    first = train_vae(*TINY, "--steps=4", f"--out_dir={out}")
    assert first.returncode == 0, first.stderr
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


def test_a_run_is_not_overwritten_by_other_flags(run_dir):
    before = os.path.getmtime(os.path.join(run_dir, "checkpoint.weights.h5"))
    result = train_vae(*TINY, "--steps=6", "--beta=2", f"--out_dir={run_dir}")
    assert_one_line_error(result, "holds a run with other flags (--beta=8.0 there, 2.0 now)")
    assert os.path.getmtime(os.path.join(run_dir, "checkpoint.weights.h5")) == before


def test_overwrite_starts_afresh(tmp_path):
    out = f"--out_dir={tmp_path / 'o'}"
    assert train_vae(*TINY, "--steps=2", out).returncode == 0
    result = train_vae(*TINY, "--steps=2", "--beta=1", "--overwrite", out)
    assert result.returncode == 0, result.stderr
    assert "Resuming" not in result.stdout
    with open(tmp_path / "o" / "flags.json") as f:
        assert json.load(f)["beta"] == 1.0


def assert_one_line_error(result, expected):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train_vae.py: error: ") and expected in last, result.stderr


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    (root / "empty").mkdir()
    (root / "text").mkdir()
    (root / "text" / "readme.txt").write_text("not an image")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "face.jpg").write_bytes(b"\xff\xd8 truncated")
    (root / "a_file").write_text("")
    return root


@pytest.mark.parametrize("args,expected", [
    (["--dataset=mnist"], "--dataset=mnist"),
    (["--dataset=celeba", "--data_dir={root}/missing"], "does not exist"),
    (["--dataset=celeba", "--data_dir={root}/empty"], "is empty"),
    (["--dataset=celeba", "--data_dir={root}/text"], "holds no image files"),
    (["--dataset=celeba", "--data_dir={root}/corrupt"], "no readable images"),
    (["--res=48"], "--res=48 must be a power of two"),
    (["--c_dim=0"], "--c_dim=0 must be positive"),
    (["--beta=-1"], "--beta=-1.0 must not be negative"),
    (["--out_dir={root}/a_file/run"], "cannot write to --out_dir"),
    (["--out_dir={root}/text"], "is not empty and holds no run"),
    (["--steps=ten"], "--steps"),
])
def test_bad_input_gives_one_line_and_writes_nothing(folders, args, expected):
    before = sorted(p for p in folders.rglob("*"))
    args = ["--steps=1", f"--out_dir={folders}/out"] + [a.format(root=folders) for a in args]
    result = train_vae(*args)
    assert_one_line_error(result, expected)
    assert sorted(p for p in folders.rglob("*")) == before
