"""Does the authors' initialisation matter, and does PyTorch's RMSprop (eps outside the root)?

    nice -n 10 python benchmarks/init_and_optimizers.py                # everything
    python benchmarks/init_and_optimizers.py --only=vae_init --seeds=0,1

Three comparisons on sprites at 64 px, on benchmarks/models.py's beta_vae and idgan_conv
(the authors' dSprites settings, 1Konny/idgan configs/dsprites.yaml; README "Published
settings"):
  vae_init   the beta-VAE (c_dim 10, beta 8, Bernoulli, batch 64, PyTorch's Adam 1e-4) with
             init="keras" (Glorot uniform, zero bias) vs init="authors" (N(0, 0.02), zero
             bias: normal_init of 1Konny/idgan gan_training/dvae/dvae.py).
  gan_init   the ID-GAN (Table A.3 conv nets, nuisance 0, PyTorch's RMSprop G / D 1e-3 /
             1e-4, r1 10, distill 1e-4, EMA 0.999, batch 64) on one fixed encoder, with
             init="keras" vs init="authors" (PyTorch's default init, which the authors keep).
  optimizer  the same ID-GAN (--optimizer_init) with keras.optimizers.RMSprop(rho 0.99,
             epsilon 1e-8) vs idgan.rmsprop (PyTorch's formula). Its "pytorch" run is
             gan_init's run of the same init when both are asked for.

Losses are means over the --window steps ending at each reported step. Every GAN run uses
one fixed encoder, <out_dir>/encoder.keras: the first init="authors" VAE trained here, unless
that file already exists. The optimizer runs' moving-average generators are written to
<out_dir>/seed<k>/{keras,pytorch}/generator.keras (for fid) unless those exist, and the
tables are appended to <out_dir>/results.txt; so a later --seeds=1 run into the same
--out_dir adds seeds on the same encoder.

  fid        for each --seeds generator saved above: FID in the features of one sprites factor
             classifier (trained once, cached in --out_dir) against one set of real statistics,
             and the distillation NLL of c under Encoder(G(z, c)), on the same codes c ~ q(c|x)
             of real sprites for every generator; <out_dir>/samples.png shows real sprites
             (top row), then the keras rows, then the pytorch rows, on the same (z, c).

    python benchmarks/init_and_optimizers.py --only=fid --seeds=0,1 --out_dir=DIR
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import data  # noqa: E402
import idgan  # noqa: E402
import metrics  # noqa: E402
import models  # noqa: E402 (benchmarks/models.py)
import vae  # noqa: E402

flags.DEFINE_list("only", ["vae_init", "gan_init", "optimizer", "fid"], "Comparisons to run.")
flags.DEFINE_list("seeds", ["0"], "Seeds; each comparison runs once per seed.")
flags.DEFINE_integer("vae_steps", 2000, "beta-VAE steps per run.")
flags.DEFINE_integer("gan_steps", 1000, "ID-GAN steps per run.")
flags.DEFINE_integer("window", 100, "Steps averaged into each reported loss.")
flags.DEFINE_list("report", ["500", "1000", "2000"], "Steps to report (those <= the run's).")
flags.DEFINE_enum("optimizer_init", "authors", vae.INITS, "Init of the optimizer comparison.")
flags.DEFINE_integer("fid_samples", 10_000, "Real and generated images per FID and NLL.")
flags.DEFINE_integer("classifier_steps", 5000, "Training steps of the FID factor classifier.")
flags.DEFINE_string("out_dir", "/tmp/optim_compare", "Encoder, generators and results.txt.")
FLAGS = flags.FLAGS
RES, BATCH = 64, 64


def windowed_fit(model, dataset, steps):
    """fit() in --window-step epochs: each epoch's logs are the mean over its steps."""
    start = time.perf_counter()
    history = model.fit(dataset, epochs=steps // FLAGS.window, steps_per_epoch=FLAGS.window,
                        verbose=0).history
    rows = {}
    for step in map(int, FLAGS.report):
        if step <= steps:
            rows[step] = {name: values[step // FLAGS.window - 1]
                          for name, values in history.items()}
    return rows, (time.perf_counter() - start) / steps


def train_vae(init, seed):
    keras.utils.set_random_seed(seed)
    model = models.build("beta_vae", RES, init=init, seed=seed)
    rows, seconds = windowed_fit(model, models.batches("beta_vae", BATCH, RES, seed=seed),
                                 FLAGS.vae_steps)
    return model, rows, seconds


def keras_rmsprop(learning_rate):
    return keras.optimizers.RMSprop(learning_rate, rho=0.99, epsilon=1e-8)


def train_gan(encoder_path, init, optimizer, seed):
    """The sprites ID-GAN on the saved encoder; optimizer "pytorch" or "keras"."""
    keras.utils.set_random_seed(seed)
    encoder = keras.models.load_model(encoder_path, compile=False)
    model = models.build("idgan_conv", RES, init=init, seed=seed, encoder=encoder,
                         gan_optimizer=idgan.rmsprop if optimizer == "pytorch" else keras_rmsprop)
    rows, seconds = windowed_fit(model, models.batches("idgan_conv", BATCH, RES, seed=seed),
                                 FLAGS.gan_steps)
    return model, rows, seconds


def table(title, runs, columns):
    """runs: {label: (rows, seconds_per_step)} -> a Markdown table, one line per step."""
    lines = [f"### {title}", "",
             "| run | step | " + " | ".join(columns) + " | s/step |",
             "| --- | ---: | " + " | ".join("---:" for _ in columns) + " | ---: |"]
    for label, (rows, seconds) in runs.items():
        for step, logs in rows.items():
            values = " | ".join(f"{logs[c]:.4g}" for c in columns)
            lines.append(f"| {label} | {step} | {values} | {seconds:.3f} |")
    return "\n".join(lines) + "\n"


def sample_code(encoder, images, rng):
    """c ~ q(c|x) = N(mu, exp(logvar)) of real images."""
    mu, logvar = np.split(np.asarray(encoder(images, training=False), np.float64), 2, axis=-1)
    return mu + np.exp(logvar / 2) * rng.standard_normal(mu.shape)


def generate(generator, c, rng):
    """G([z, c]) in [0, 1], z ~ N(0, I) of the generator's nuisance width (here 0)."""
    z = rng.standard_normal((len(c), generator.inputs[0].shape[-1]))
    return (generator([z.astype("float32"), c.astype("float32")], training=False) + 1) / 2


def fid_and_samples(seeds, emit, columns=12):
    truth = data.ground_truth_data("sprites")
    classifier, record = metrics.load_or_train_factor_classifier(
        os.path.join(FLAGS.out_dir, "factor_classifier.keras"), truth,
        steps=FLAGS.classifier_steps, dataset="sprites")
    features = metrics.classifier_features_fn(classifier)
    encoder = keras.models.load_model(os.path.join(FLAGS.out_dir, "encoder.keras"),
                                      compile=False)
    real = lambda seed: data.make_dataset("sprites", RES, 100, seed=seed)  # noqa: E731
    n = FLAGS.fid_samples
    stats = metrics.real_statistics(real(100), features, n)
    floor = metrics.frechet_distance(*stats, *metrics.real_statistics(real(101), features, n))
    accuracy = ", ".join(f"{k} {v:.2f}" for k, v in record["accuracy"].items())
    lines = [f"### FID ({n} samples, factor classifier features; classifier accuracy: "
             f"{accuracy}) and distillation NLL", "",
             "| generator | FID | distill NLL |", "| --- | ---: | ---: |",
             f"| real sprites (another {n}) | {floor:.3f} | |"]
    shown = next(iter(real(102)))[:columns]
    shown_c, rows = sample_code(encoder, shown, np.random.default_rng(1)), [shown]
    for optimizer in ("keras", "pytorch"):
        for seed in seeds:
            generator = keras.models.load_model(os.path.join(
                FLAGS.out_dir, f"seed{seed}", optimizer, "generator.keras"), compile=False)
            rng, posterior = np.random.default_rng(0), iter(real(103))  # the same c for all
            fake = metrics.generated_statistics(
                lambda k: generate(generator, sample_code(encoder, next(posterior)[:k], rng),
                                   rng), features, n, 100)
            nll = -metrics.distill_lower_bound(generator, encoder, real(103), n, seed=0)
            lines.append(f"| {optimizer} RMSprop, seed {seed} | "
                         f"{metrics.frechet_distance(*stats, *fake):.3f} | {nll:.3f} |")
            rows.append(generate(generator, shown_c, np.random.default_rng(2)))
    emit("\n".join(lines) + "\n")
    tiles = np.pad(np.clip(np.stack(rows), 0, 1), [(0, 0), (0, 0), (1, 1), (1, 1), (0, 0)],
                   constant_values=0.5)  # (rows, columns, 66, 66, 1), grey borders
    grid = tiles.transpose(0, 2, 1, 3, 4).reshape(len(rows) * 66, columns * 66, -1)
    path = os.path.join(FLAGS.out_dir, "samples.png")
    tf.io.write_file(path, tf.io.encode_png(np.round(grid * 255).astype(np.uint8)))
    print(f"Wrote {path}")


def main(argv):
    del argv
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    results = os.path.join(FLAGS.out_dir, "results.txt")
    encoder_path = os.path.join(FLAGS.out_dir, "encoder.keras")

    def emit(text):
        print(text, flush=True)
        with open(results, "a") as f:
            f.write(text + "\n")

    emit(f"# init and optimiser comparison (sprites, {RES} px, batch {BATCH}); "
         f"`{' '.join(sys.argv)}`\n")
    for seed in map(int, FLAGS.seeds):
        if "vae_init" in FLAGS.only or not os.path.exists(encoder_path):
            runs = {}
            for init in (["keras", "authors"] if "vae_init" in FLAGS.only else ["authors"]):
                model, rows, seconds = train_vae(init, seed)
                runs[f"init={init}, seed {seed}"] = (rows, seconds)
                if init == "authors" and not os.path.exists(encoder_path):
                    model.encoder.save(encoder_path)
            emit(table(f"beta-VAE, {FLAGS.vae_steps} steps (loss = reconstruction + 8 KL)",
                       runs, ["loss", "reconstruction", "kl"]))
        gan = {}  # (init, optimizer) -> (model, rows, seconds per step)
        if "gan_init" in FLAGS.only:
            for init in ("keras", "authors"):
                gan[init, "pytorch"] = train_gan(encoder_path, init, "pytorch", seed)
            emit(table(f"ID-GAN init, {FLAGS.gan_steps} steps, PyTorch's RMSprop",
                       {f"init={i}, seed {seed}": gan[i, "pytorch"][1:] for i, _ in gan},
                       ["d_loss", "g_loss", "r1", "distill_nll"]))
        if "optimizer" in FLAGS.only:
            runs = {}
            for optimizer in ("keras", "pytorch"):
                key = (FLAGS.optimizer_init, optimizer)
                if key not in gan:
                    gan[key] = train_gan(encoder_path, *key, seed)
                runs[f"{optimizer} RMSprop, seed {seed}"] = gan[key][1:]
                path = os.path.join(FLAGS.out_dir, f"seed{seed}", optimizer, "generator.keras")
                if not os.path.exists(path):
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    gan[key][0].generator_ema.save(path)
            emit(table(f"ID-GAN optimiser, {FLAGS.gan_steps} steps, "
                       f"init={FLAGS.optimizer_init}", runs,
                       ["d_loss", "g_loss", "r1", "distill_nll"]))
    if "fid" in FLAGS.only:
        fid_and_samples(list(map(int, FLAGS.seeds)), emit)
    print(f"Wrote {results}")


if __name__ == "__main__":
    app.run(main)
