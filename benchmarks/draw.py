"""Draw a run's pictures from its saved models alone: no training, no backup.

    python benchmarks/draw.py --vae=benchmarks/results/fullrun/vae --idgan=benchmarks/results/fullrun/idgan --out=pictures

--vae is a folder with flags.json, encoder.keras and decoder.keras (a stage-1 run directory,
or the models shipped in benchmarks/results/fullrun/vae); --idgan, optional, a folder with
flags.json and generator.keras. Writes vae_reconstructions.png (real images above) and
vae_traversals.png, and with --idgan figure6.png (the paper's Figure 6: the VAE decoder
above, the generator below, on the same codes), figure7.png, samples.png and traversals.png,
drawn as the training scripts draw them. The inputs are fixed (the first 8 images of the
dataset's stream at --seed, numpy draws at --seed), so the same models give the same pictures.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import data  # noqa: E402
import train_idgan  # noqa: E402
import vae  # noqa: E402
from train_vae import fail, first_line, parse_flags  # noqa: E402 (one-line errors, exit 2)

FLAGS = flags.FLAGS


def load(folder, *names):
    """(flags.json as a dict, the named models) of a folder; OSError / ValueError if not."""
    try:
        with open(os.path.join(folder, "flags.json")) as f:
            config = json.load(f)
        return config, [keras.models.load_model(os.path.join(folder, name), compile=False)
                        for name in names]
    except Exception as error:  # Keras raises many types for a file it cannot read
        raise ValueError(f"{folder}: {first_line(error)}") from None


def real_images(config, res, seed):
    """The first 8 images of the run's dataset stream at `seed`."""
    return np.asarray(next(iter(data.make_dataset(
        config["dataset"], res, 8, config.get("data_dir"), seed, config.get("painting")))))


def draw(vae_dir, idgan_dir=None, seed=0):
    """{name: uint8 grid} of the models in vae_dir (and idgan_dir)."""
    stage1, (encoder, decoder) = load(vae_dir, "encoder.keras", "decoder.keras")
    real, c_dim = real_images(stage1, stage1["res"], seed), stage1["c_dim"]
    mu = np.asarray(encoder(real))[:, :c_dim]
    logits = keras.Model(decoder.input, decoder.layers[-1].input)  # decoder.keras: sigmoid(logits)
    pictures = {"vae_reconstructions": vae.image_grid(np.concatenate([real, decoder(mu)]), 2),
                "vae_traversals": vae.traversal_grid(encoder, logits, real[:1],
                                                     chunk=stage1.get("batch_size", 64))}
    if idgan_dir:
        stage2, (generator,) = load(idgan_dir, "generator.keras")
        z_dim, c_dim = (x.shape[-1] for x in generator.inputs)
        chunk = stage2.get("batch_size", 64)  # images per network call, as in training
        inputs = train_idgan.picture_inputs(encoder, c_dim, z_dim, real_images(
            stage1, stage2["res"], seed), np.random.default_rng(seed), chunk)
        pictures.update(train_idgan.draw_pictures(generator, decoder, chunk, **inputs))
    return pictures


def write(pictures, out):
    os.makedirs(out, exist_ok=True)
    for name, grid in pictures.items():
        tf.io.write_file(os.path.join(out, name + ".png"), tf.io.encode_png(grid))


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}")
    if os.path.exists(FLAGS.out) and not os.path.isdir(FLAGS.out):
        fail(f"--out {FLAGS.out} is a file, not a directory")
    try:
        pictures = draw(FLAGS.vae, FLAGS.idgan, FLAGS.seed)
    except (OSError, ValueError, data.DataError) as error:
        fail(first_line(error))
    write(pictures, FLAGS.out)
    print(f"{', '.join(name + '.png' for name in pictures)} in {FLAGS.out}")


if __name__ == "__main__":
    flags.DEFINE_string("vae", None, "Folder with flags.json, encoder.keras, decoder.keras.")
    flags.DEFINE_string("idgan", None, "Optional folder with flags.json, generator.keras.")
    flags.DEFINE_string("out", None, "Folder for the PNG files (created if absent).")
    flags.DEFINE_integer("seed", 0, "Seed of the real images and the numpy draws.")
    flags.mark_flags_as_required(["vae", "out"])
    app.run(main, flags_parser=parse_flags)
