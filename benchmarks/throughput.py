"""Throughput on this machine: images/s of rendering, the input pipeline and training.

    python benchmarks/throughput.py                      # everything
    python benchmarks/throughput.py --only=render,pipeline,beta_vae
    python benchmarks/throughput.py --only=idgan_conv,idgan_resnet64 --gan_steps=3
    python benchmarks/throughput.py --only=beta_vae --jit_compile --mixed_precision

Each figure is the median over --windows timed windows after one warm-up window (which
also pays for tracing and, with --jit_compile, XLA compilation).
"""
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import data  # noqa: E402
import idgan  # noqa: E402
import vae  # noqa: E402

flags.DEFINE_list("only", ["render", "pipeline", "beta_vae", "factor_vae", "idgan_conv",
                           "idgan_resnet64"], "What to time.")
flags.DEFINE_string("dataset", "sprites", "Dataset for the pipeline and training figures.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("steps", 50, "Training steps per timed window.")
flags.DEFINE_integer("gan_steps", 10, "Stage-2 training steps per timed window.")
flags.DEFINE_integer("windows", 5, "Timed windows (after one warm-up).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train steps.")
flags.DEFINE_bool("mixed_precision", False, "mixed_bfloat16 policy, as in the training scripts.")
FLAGS = flags.FLAGS


def median_rate(run_window, images_per_window):
    """Images/s: the median of --windows timed calls of run_window, after a warm-up."""
    run_window()
    times = []
    for _ in range(FLAGS.windows):
        start = time.perf_counter()
        run_window()
        times.append(time.perf_counter() - start)
    return images_per_window / statistics.median(times)


def render_rate():
    """Render the whole 737,280-image factor grid once, in chunks."""
    gt = data.ground_truth_data("sprites")
    grid = np.stack(np.unravel_index(np.arange(np.prod(gt.factor_sizes)), gt.factor_sizes), 1)
    start = time.perf_counter()
    for chunk in np.array_split(grid, 12):
        gt.sample_observations_from_factors(chunk, None)
    return len(grid) / (time.perf_counter() - start)


def pipeline_rate():
    batches = iter(data.make_dataset(FLAGS.dataset, 64, FLAGS.batch_size))
    window = 100
    return median_rate(lambda: [next(batches) for _ in range(window)], window * FLAGS.batch_size)


def training_rate(model_name):
    batch = FLAGS.batch_size
    dataset = data.make_dataset(FLAGS.dataset, 64, batch * (1 + (model_name == "factor_vae")))
    channels = data.num_channels(FLAGS.dataset)
    encoder, decoder = vae.build_encoder(10, 64, channels), vae.build_decoder(10, 64, channels)
    if model_name == "beta_vae":
        model = vae.BetaVAE(encoder, decoder, beta=8.0)
        model.compile(optimizer=vae.adam(1e-4), jit_compile=FLAGS.jit_compile)
    else:
        dataset = dataset.map(lambda x: (x[:batch], x[batch:]))  # two batches per step
        model = vae.FactorVAE(encoder, decoder, vae.build_tc_discriminator(10), gamma=35.0)
        model.compile(vae.adam(1e-4), vae.tc_optimizer(),
                      jit_compile=FLAGS.jit_compile)
    fit = lambda: model.fit(dataset, epochs=1, steps_per_epoch=FLAGS.steps,  # noqa: E731
                            verbose=0, shuffle=False)
    return median_rate(fit, FLAGS.steps * FLAGS.batch_size)


def idgan_rate(arch):
    """Stage 2 at 64 px: the sprites conv nets (c 10, no z) or the paper-width ResNets
    (nf 64, nf_max 512, c 20, z 256, RGB), on a fresh stage-1 encoder."""
    conv = arch == "conv"
    dataset_name = "sprites" if conv else "color_sprites"
    c_dim, nuisance_dim, channels = (10, 0, 1) if conv else (20, 256, 3)
    dataset = data.make_dataset(dataset_name, 64, FLAGS.batch_size)
    if conv:
        nets = idgan.build_conv_generator(c_dim, 0), idgan.build_conv_discriminator()
    else:
        nets = (idgan.build_resnet_generator(c_dim, nuisance_dim, 64),
                idgan.build_resnet_discriminator(64))
    model = idgan.IDGAN(*nets, vae.build_encoder(c_dim, 64, channels),
                        nuisance_dim=nuisance_dim, c_dim=c_dim)
    model.compile(idgan.rmsprop(1e-4), idgan.rmsprop(1e-4), jit_compile=FLAGS.jit_compile)
    fit = lambda: model.fit(dataset, epochs=1, steps_per_epoch=FLAGS.gan_steps,  # noqa: E731
                            verbose=0, shuffle=False)
    return median_rate(fit, FLAGS.gan_steps * FLAGS.batch_size)


def main(argv):
    del argv
    timers = {"render": render_rate, "pipeline": pipeline_rate,
              "beta_vae": lambda: training_rate("beta_vae"),
              "factor_vae": lambda: training_rate("factor_vae"),
              "idgan_conv": lambda: idgan_rate("conv"),
              "idgan_resnet64": lambda: idgan_rate("resnet")}
    keras.config.set_dtype_policy("mixed_bfloat16" if FLAGS.mixed_precision else "float32")
    print(f"{os.cpu_count()} CPUs, batch {FLAGS.batch_size}, dataset {FLAGS.dataset}, "
          f"jit_compile {FLAGS.jit_compile}, mixed_precision {FLAGS.mixed_precision}")
    for name in FLAGS.only:
        print(f"{name:>12}: {timers[name]():12,.0f} images/s", flush=True)


if __name__ == "__main__":
    app.run(main)
