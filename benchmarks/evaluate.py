"""Evaluate run directories: metrics.py's evaluate on the project's datasets (data.py).

    python benchmarks/evaluate.py --vae=RUN [--idgan=RUN] [--num_samples=50000]
        [--batch_size=N] [--out=PATH] [--classifier=PATH] [--inception_weights=imagenet|PATH]

The training scripts run the same evaluation when they finish; this command scores a run
later, with other sizes or another FID network. An InfoGAN run (benchmarks/train_baseline.py)
is scored on c from the prior its flags.json names (code_prior). Progress goes to stderr,
the metrics as JSON to stdout and to metrics.json in the last run given (README "Metrics").
A bad flag, path or file ends in one line `evaluate.py: error: ...` and exit status 2.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # after the project's modules

from absl import app, flags  # noqa: E402

import baselines  # noqa: E402 (benchmarks/baselines.py)
import data  # noqa: E402
import metrics  # noqa: E402
from train_vae import (  # noqa: E402 (one-line errors, exit 2)
    fail, first_line, parse_flags, unused_inception_weights)

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("vae", None, "Stage-1 run: flags.json, encoder.keras, decoder.keras.")
    flags.DEFINE_string("idgan", None, "Optional stage-2 run: flags.json, generator.keras.")
    flags.DEFINE_integer("num_samples", 50_000, "Real and generated images for FID and L_I; also "
                         "caps FVM / MIG / factor classifier sizes (sprites: at least 32).",
                         lower_bound=2)
    flags.DEFINE_integer("batch_size", None, "Images per generator or feature network call: 500 "
                         "with the factor classifier, 100 with InceptionV3 by default.",
                         lower_bound=1)
    flags.DEFINE_string("out", None, "Output JSON (default: metrics.json in the last run given).")
    flags.DEFINE_string("classifier", None,
                        "Factor classifier cache (default: VAE_RUN/factor_classifier.keras).")
    flags.DEFINE_string("inception_weights", "imagenet", "FID network on natural images: "
                        "imagenet, a Keras .h5 file, or inception-2015-12-05.tgz / its .pb.")
    flags.mark_flag_as_required("vae")


def evaluate(vae_run, idgan_run=None, datasets=data, **kwargs):
    """metrics.evaluate on data.py's datasets, c drawn from the ID-GAN run's code_prior if its
    flags.json names one (InfoGAN's), else from the encoder's posterior. inception_weights
    other than imagenet on sprites-family runs only is refused, as the training scripts do."""
    runs = metrics.load_runs(vae_run, idgan_run)
    unused = unused_inception_weights(kwargs.get("inception_weights", "imagenet"),
                                      [source[0] for _, source in runs], "--classifier")
    if unused:
        raise ValueError(unused)
    code_prior = runs[-1][0].get("code_prior") if idgan_run else None
    codes_fn = baselines.prior_codes_fn(code_prior, runs[0][0]["c_dim"])
    return metrics.evaluate(vae_run, idgan_run, codes_fn=codes_fn, datasets=datasets, **kwargs)


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}")
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    try:  # progress on stderr, the JSON alone on stdout
        results = evaluate(FLAGS.vae, FLAGS.idgan, num_samples=FLAGS.num_samples,
                           batch_size=FLAGS.batch_size, out=FLAGS.out,
                           classifier_path=FLAGS.classifier,
                           inception_weights=FLAGS.inception_weights, log=log)
    except (ImportError, OSError, ValueError, RuntimeError) as error:
        fail(first_line(error))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
