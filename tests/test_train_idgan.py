"""train_idgan.py end to end from a stage-1 run at 64 px, and its one-line errors."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_script as run

TINY = ["--batch_size=4", "--log_every=1", "--steps=2", "--noevaluate"]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("stage1") / "vae")
    result = run("train_vae.py", "--c_dim=3", "--batch_size=8", "--steps=2", "--log_every=2",
                 "--noevaluate", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def run64(stage1, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("stage2") / "idgan64")
    first = run("train_idgan.py", f"--vae={stage1}", *TINY, f"--out_dir={out}")
    assert first.returncode == 0, first.stderr
    again = run("train_idgan.py", f"--vae={stage1}", *TINY, "--steps=3", "--evaluate",
                "--eval_samples=32", f"--out_dir={out}")
    assert again.returncode == 0, again.stderr
    assert "from step 2" in again.stdout
    return out


def test_finished_run_is_evaluated_on_the_stage1_encoder(run64):
    with open(os.path.join(run64, "metrics.json")) as f:
        results = json.load(f)
    assert results["fid_idgan"] > 0.0 and results["fid_vae"] > 0.0
    assert np.isfinite(results["l_i"])


def read_png(path):
    return tf.io.decode_png(tf.io.read_file(path)).numpy()


def test_64px_run_writes_every_artifact(run64):
    assert {"generator.keras", "checkpoint.weights.h5", "flags.json", "logs", "samples.png",
            "traversals.png", "figure7.png", "figure6.png"} <= set(os.listdir(run64))
    with open(os.path.join(run64, "flags.json")) as f:
        config = json.load(f)
    assert (config["dataset"], config["res"], config["arch"]) == ("sprites", 64, "conv")
    assert (config["nuisance_dim"], config["distill_weight"], config["g_lr"]) == (0, 1e-4, 1e-3)
    assert read_png(os.path.join(run64, "traversals.png")).shape[0] == 3 * 64  # a row per c_j
    assert read_png(os.path.join(run64, "figure6.png")).shape[0] == 2 * 64


def test_draw_script_draws_figure6_from_the_saved_models_alone(tmp_path):
    # benchmarks/draw.py (the README's line for the shipped full-budget models) on model files
    # of known form whose outputs vary strongly with c: figure6's top row is decoder(mu(x)),
    # its bottom row G(c = mu(x)) (sprites: no z), x the first 8 sprites of the stream at seed 0.
    from keras import layers
    import data

    vae_dir, idgan_dir, out = tmp_path / "vae", tmp_path / "idgan", tmp_path / "pictures"
    vae_dir.mkdir(), idgan_dir.mkdir()
    (vae_dir / "flags.json").write_text(json.dumps(dict(dataset="sprites", res=32, c_dim=3)))
    (idgan_dir / "flags.json").write_text(json.dumps(dict(dataset="sprites", res=32)))
    wide = dict(kernel_initializer=keras.initializers.RandomNormal(stddev=3.0, seed=1))
    x, c, z = keras.Input((32, 32, 1)), keras.Input((3,)), keras.Input((0,))
    encoder = keras.Model(x, layers.Dense(6, **wide)(layers.Flatten()(x)))
    decoder = keras.Model(c, layers.Activation("sigmoid")(
        layers.Reshape((32, 32, 1))(layers.Dense(32 * 32, **wide)(c))))
    generator = keras.Model([z, c], layers.Reshape((32, 32, 1))(
        layers.Dense(32 * 32, activation="tanh", **wide)(layers.Concatenate()([z, c]))))
    for model, path in [(encoder, vae_dir / "encoder.keras"),
                        (decoder, vae_dir / "decoder.keras"),
                        (generator, idgan_dir / "generator.keras")]:
        model.save(path)
    result = run("benchmarks/draw.py", f"--vae={vae_dir}", f"--idgan={idgan_dir}", f"--out={out}")
    assert result.returncode == 0, result.stderr
    real = next(iter(data.make_dataset("sprites", 32, 8, seed=0))).numpy()
    mu = encoder(real).numpy()[:, :3]
    rows = [decoder(mu).numpy(), (generator([np.zeros((8, 0)), mu]).numpy() + 1) / 2]
    expected = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    figure6 = read_png(str(out / "figure6.png")).astype(np.float32) / 255
    assert np.std(expected[:32]) > 0.2  # the test sees a wrong code or a wrong image
    np.testing.assert_allclose(figure6, expected, atol=1 / 255 + 1e-6)
    assert {"vae_reconstructions.png", "vae_traversals.png", "samples.png", "figure7.png",
            "traversals.png"} <= set(os.listdir(out))


def test_generator_loads_in_a_fresh_process_without_the_project(run64, tmp_path):
    script = (
        "import sys, numpy as np, keras\n"
        f"g = keras.models.load_model({os.path.join(run64, 'generator.keras')!r})\n"
        "assert not {'vae', 'data', 'idgan', 'train_vae'} & set(sys.modules)\n"
        "x = np.asarray(g([np.zeros((2, 0)), np.zeros((2, 3))]))\n"
        "assert x.shape == (2, 64, 64, 1) and -1 <= x.min() and x.max() <= 1, x.shape\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_256px_resnet_from_a_64px_encoder(stage1, tmp_path):
    out = str(tmp_path / "idgan256")
    result = run("train_idgan.py", f"--vae={stage1}", "--res=256", "--arch=resnet", "--nf=4",
                 "--nf_max=8", "--batch_size=2", "--steps=1", "--log_every=1", "--noevaluate",
                 f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    generator = keras.models.load_model(os.path.join(out, "generator.keras"))
    assert generator.output_shape == (None, 256, 256, 1)


def test_plain_gan_baseline_runs_without_codes(stage1, tmp_path):
    result = run("train_idgan.py", f"--vae={stage1}", "--nouse_codes", "--nuisance_dim=4", *TINY,
                 "--mixed_precision", f"--out_dir={tmp_path / 'gan'}")
    assert result.returncode == 0, result.stderr
    assert "distill_nll" not in result.stdout
    generator = keras.models.load_model(tmp_path / "gan" / "generator.keras")
    assert [tuple(i.shape[1:]) for i in generator.inputs] == [(4,), (0,)]


def test_any_encoder_file_plugs_in(stage1, tmp_path):
    """A bare encoder.keras (no stage-1 run around it) with --dataset: plug and play."""
    encoder = tmp_path / "my_encoder.keras"
    keras.models.load_model(os.path.join(stage1, "encoder.keras")).save(encoder)
    result = run("train_idgan.py", f"--vae={encoder}", "--dataset=sprites", *TINY,
                 f"--out_dir={tmp_path / 'plugged'}")
    assert result.returncode == 0, result.stderr
    assert "figure6.png" not in os.listdir(tmp_path / "plugged")  # no stage-1 decoder to show
    assert "traversals.png" in os.listdir(tmp_path / "plugged")


@pytest.mark.parametrize("dataset,res,distill_weight,r1,g_lr,batch_size", [
    ("dsprites", 64, 1e-4, 10.0, 1e-3, 64),  # configs/dsprites.yaml
    ("celeba", 64, 1e-3, 10.0, 1e-4, 64),  # celebA-64.yaml
    ("celeba", 256, 1e-3, 10.0, 1e-4, 24),  # celebA-256.yaml
    ("celeba_hq", 1024, 1e-4, 10.0, 1e-4, 8),  # celebA-HQ.yaml (batch 1 per GPU there)
    ("chairs", 64, 1e-4, 1000.0, 1e-4, 64),  # chairs-64.yaml
    ("cars", 64, 1e-3, 10.0, 1e-4, 64),  # cars-64.yaml
])
def test_published_defaults_per_dataset(dataset, res, distill_weight, r1, g_lr, batch_size):
    import train_idgan
    defaults = train_idgan.defaults(dataset, res)
    assert (defaults["distill_weight"], defaults["r1"], defaults["g_lr"],
            defaults["batch_size"]) == (distill_weight, r1, g_lr, batch_size)
    assert defaults["vdb"] == (res == 1024)


def test_stage1_data_dir_is_inherited_only_for_stage1_dataset(tmp_path):
    """--data_dir and --painting default to stage 1's only when the dataset is stage 1's:
    a CelebA encoder trained on a folder must not feed that folder to a Chairs GAN."""
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image))
    vae_run = tmp_path / "vae"
    vae_run.mkdir()
    keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                      keras.layers.Dense(6)]).save(vae_run / "encoder.keras")
    (vae_run / "flags.json").write_text(json.dumps(
        {"dataset": "celeba", "data_dir": str(folder), "c_dim": 3}))
    tiny = ["--batch_size=4", "--steps=1", "--log_every=1", "--noevaluate", "--nf=4",
            "--nf_max=8", "--nuisance_dim=2"]
    same = run("train_idgan.py", f"--vae={vae_run}", *tiny, f"--out_dir={tmp_path / 'a'}")
    assert same.returncode == 0, same.stderr[-2000:]
    with open(tmp_path / "a" / "flags.json") as f:
        assert json.load(f)["data_dir"] == str(folder)
    other = run("train_idgan.py", f"--vae={vae_run}", "--dataset=chairs", *tiny,
                f"--out_dir={tmp_path / 'b'}")
    assert other.returncode == 2, other.stdout[-2000:]
    assert str(folder) not in other.stderr and "Traceback" not in other.stderr


# Picture grids in chunks: networks called on at most a training batch at a time.


def assert_same_grids(chunked, whole):
    """Equal uint8 grids up to one grey level (float rounding of other batch shapes)."""
    assert sorted(chunked) == sorted(whole)
    for name, grid in whole.items():
        assert len(np.unique(grid)) > 20, name  # varied pictures: a misplaced chunk shows
        assert chunked[name].shape == grid.shape, name
        assert np.abs(chunked[name].astype(int) - grid.astype(int)).max() <= 1, name


def test_stage2_grids_are_drawn_in_chunks_and_match_one_call_grids(stage2, refusing):
    import train_idgan
    import vae
    generator = stage2.tiny_resnets(3, 2)[0]  # 32 px, 3 channels
    encoder = stage2.tiny_encoder(3, res=16)
    decoder = vae.image_decoder(vae.build_decoder(3, 32, channels=3, init="keras"))
    real = stage2.images(8)

    def draw(chunk, wrap):
        inputs = train_idgan.picture_inputs(wrap(encoder), 3, 2, real, np.random.default_rng(0),
                                            chunk)
        return train_idgan.draw_pictures(wrap(generator), wrap(decoder), chunk, **inputs)

    chunked = draw(5, lambda model: refusing(model, 5))  # 5 divides none of 8, 64, 24
    whole = draw(1000, lambda model: model)  # one call per grid: the plain networks
    assert set(whole) == {"samples", "figure7", "traversals", "figure6"}
    assert_same_grids(chunked, whole)


def test_fid_sampler_calls_the_generator_a_training_batch_at_a_time(stage2, refusing):
    import train_idgan
    generator = stage2.tiny_resnets(3, 2)[0]  # 32 px, 3 channels
    config = dict(dataset="color_sprites", res=32, data_dir=None, painting=None, seed=0,
                  batch_size=4)
    generate = train_idgan.sampler(refusing(generator, 4), stage2.tiny_encoder(3), config)
    images = np.asarray(generate(10))  # 4 + 4 + 2
    assert images.shape == (10, 32, 32, 3) and 0 <= images.min() and images.max() <= 1


def test_stage1_traversal_grid_is_decoded_in_chunks_and_matches_one_call(stage2, refusing):
    import vae
    encoder = stage2.tiny_encoder(3, res=32)
    decoder = keras.Sequential([  # logits of a wide spread: varied grey levels
        keras.Input((3,)), keras.layers.Dense(32 * 32 * 3, kernel_initializer="random_normal"),
        keras.layers.Rescaling(30.0), keras.layers.Reshape((32, 32, 3))])
    image = stage2.images(1)
    chunked = vae.traversal_grid(refusing(encoder, 4), refusing(decoder, 4), image, chunk=4)
    whole = vae.traversal_grid(encoder, decoder, image, chunk=1000)  # 30 codes in one call
    assert chunked.shape == (3 * 32, 10 * 32, 3)
    assert_same_grids({"traversals": chunked}, {"traversals": whole})


def test_stage2_traversals_sweep_one_code_per_row():
    """Row i of the stage-2 traversals sweeps c_i over linspace(-2.5, 2.5, columns), the other
    codes at the first real image's, z fixed: with a generator whose pixel j is 0.3 c_j (in
    [-1, 1]), picture (i, k) is (0.3 v_k + 1) / 2 at pixel i and (0.3 c_j + 1) / 2 elsewhere."""
    import train_idgan
    c_dim, nuisance_dim, columns = 3, 2, 8
    z, c = keras.Input((nuisance_dim,)), keras.Input((c_dim,))
    kernel = np.concatenate([np.zeros((nuisance_dim, c_dim)), 0.3 * np.eye(c_dim)])
    pixels = keras.layers.Dense(c_dim, use_bias=False,
                                kernel_initializer=keras.initializers.Constant(kernel))(
        keras.layers.Concatenate()([z, c]))
    generator = keras.Model([z, c], keras.layers.Reshape((1, c_dim, 1))(pixels))
    rng = np.random.default_rng(0)
    codes = rng.uniform(-1, 1, (4, c_dim)).astype("float32")
    pictures = train_idgan.draw_pictures(
        generator, None, 16, codes, rng.standard_normal((64, c_dim)).astype("float32"),
        rng.standard_normal((64, nuisance_dim)).astype("float32"), columns)
    values = np.linspace(-2.5, 2.5, columns)
    expected = np.empty((c_dim, columns, c_dim))  # (row i, column k, pixel j)
    for i in range(c_dim):
        for k in range(columns):
            expected[i, k] = (0.3 * np.where(np.arange(c_dim) == i, values[k], codes[0]) + 1) / 2
    np.testing.assert_allclose(pictures["traversals"][..., 0],
                               np.round(255 * expected).reshape(c_dim, columns * c_dim), atol=1)
