"""Throughput on this machine: images/s of rendering, the input pipeline and training.

    python benchmarks/throughput.py                      # everything
    python benchmarks/throughput.py --only=render,pipeline,beta_vae
    python benchmarks/throughput.py --only=idgan_conv,idgan_resnet64 --gan_steps=3
    python benchmarks/throughput.py --only=beta_vae --jit_compile --mixed_precision

The models and their settings are benchmarks/models.py's cases. Each figure is the median
over --windows timed windows after one warm-up window (which also pays for tracing and, with
--jit_compile, XLA compilation). A quick check that everything runs:

    python benchmarks/throughput.py --steps=2 --gan_steps=1 --windows=1 --batch_size=8
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
import models  # noqa: E402 (benchmarks/models.py)

flags.DEFINE_list("only", ["render", "pipeline", *models.CASES], "What to time: render, "
                  "pipeline, or cases of benchmarks/models.py.")
flags.DEFINE_string("dataset", "sprites", "Dataset of the pipeline and stage-1 figures (stage 2: "
                    "its case's, benchmarks/models.py).")
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


def training_rate(case):
    """Stage 1 or 2 (models.py's case) on batches of --batch_size from the input pipeline:
    stage 1 on --dataset, stage 2 on its case's dataset (the ResNet on color_sprites)."""
    stage1 = case in ("beta_vae", "factor_vae")
    model = models.build(case, dataset=FLAGS.dataset if stage1 else None,
                         jit_compile=FLAGS.jit_compile)
    dataset = models.batches(case, FLAGS.batch_size, dataset=FLAGS.dataset if stage1 else None)
    steps = FLAGS.steps if stage1 else FLAGS.gan_steps
    fit = lambda: model.fit(dataset, epochs=1, steps_per_epoch=steps,  # noqa: E731
                            verbose=0, shuffle=False)
    return median_rate(fit, steps * FLAGS.batch_size)


def main(argv):
    del argv
    timers = {"render": render_rate, "pipeline": pipeline_rate}
    timers.update({case: lambda case=case: training_rate(case) for case in models.CASES})
    keras.config.set_dtype_policy("mixed_bfloat16" if FLAGS.mixed_precision else "float32")
    print(f"{os.cpu_count()} CPUs, batch {FLAGS.batch_size}, dataset {FLAGS.dataset}, "
          f"jit_compile {FLAGS.jit_compile}, mixed_precision {FLAGS.mixed_precision}")
    for name in FLAGS.only:
        print(f"{name:>12}: {timers[name]():12,.0f} images/s", flush=True)


if __name__ == "__main__":
    app.run(main)
