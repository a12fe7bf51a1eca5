"""Stage 1: train a beta-VAE or FactorVAE and save its encoder for ID-GAN.

    python train_vae.py --dataset=sprites --out_dir=runs/sprites_vae

The run directory holds encoder.keras (a plain Keras model: images in [0, 1] ->
concat([mu, logvar])), decoder.keras (codes -> images in [0, 1]), checkpoint.weights.h5
(the full training state), flags.json, TensorBoard logs in logs/, and picture grids
(reconstructions.png, traversals.png) refreshed every --log_every steps. Running the same
command again resumes from the last backup.

The second half of this file is the run harness that train_idgan.py shares.
"""
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import data  # noqa: E402
import metrics  # noqa: E402
import vae  # noqa: E402

FLAGS = flags.FLAGS

# Published settings (SPEC.md): per dataset family, the values a flag left unset takes.
GROUND_TRUTH_DEFAULTS = dict(c_dim=10, beta=8.0, decoder="bernoulli", steps=300_000)
NATURAL_DEFAULTS = dict(c_dim=20, beta=6.4, decoder="gaussian", steps=1_000_000)
# Flags that may change between runs of one directory.
RESUMABLE = ("steps", "log_every", "overwrite", "evaluate", "eval_samples")


def define_flags():
    flags.DEFINE_enum("dataset", "sprites", data.DATASETS, "Training data.")
    flags.DEFINE_string("data_dir", None, "TFDS data_dir, dSprites npz folder or image folder.")
    flags.DEFINE_string("painting", None, "Image file for scream_* backgrounds.")
    flags.DEFINE_integer("res", 64, "Image resolution of the VAE (a power of two).")
    flags.DEFINE_enum("model", "beta_vae", ["beta_vae", "factor_vae"], "Stage-1 model.")
    flags.DEFINE_float("beta", None, "KL weight (default: 8 sprites family, 6.4 natural).")
    flags.DEFINE_float("gamma", 35.0, "FactorVAE total-correlation weight.")
    flags.DEFINE_integer("c_dim", None, "Code dimensions (default: 10 sprites, 20 natural).")
    flags.DEFINE_enum("decoder", None, ["bernoulli", "gaussian"],
                      "Likelihood (default: bernoulli sprites family, gaussian natural).")
    flags.DEFINE_integer("batch_size", 64, "Global batch size.")
    flags.DEFINE_float("lr", 1e-4, "Adam learning rate.")
    flags.DEFINE_integer("steps", None, "Training steps (default: 3e5 sprites, 1e6 natural).")
    flags.DEFINE_integer("log_every", 1000, "Steps between logs, pictures and backups.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_string("out_dir", None, "Run directory (default: runs/vae_<dataset>).")
    flags.DEFINE_bool("overwrite", False, "Replace a run made with different flags.")
    define_evaluation_flags()


def define_evaluation_flags():
    """Flags both scripts share, registered as the running script's own (see flag_values)."""
    flags.DEFINE_bool("evaluate", True, "Write metrics.json (metrics.py) when training ends.",
                      module_name=sys.argv[0])
    flags.DEFINE_integer("eval_samples", 50_000,
                         "Samples for FID and L_I; also caps FVM / MIG sizes (metrics.py).",
                         module_name=sys.argv[0])


def resolved_flags():
    """The flags as a dict, with dataset-dependent defaults filled in."""
    config = flag_values()
    defaults = GROUND_TRUTH_DEFAULTS if data.has_ground_truth(config["dataset"]) else NATURAL_DEFAULTS
    for name, value in defaults.items():
        if config[name] is None:
            config[name] = value
    config["out_dir"] = config["out_dir"] or os.path.join("runs", "vae_" + config["dataset"])
    return config


def check_flags(config):
    check_resolution(config["res"])
    check_positive(config, "c_dim", "batch_size", "steps", "log_every", "lr")
    check_nonnegative(config, "beta", "gamma")
    check_paths(config)
    if config["model"] == "factor_vae" and config["batch_size"] % 2:
        fail("--batch_size must be even for factor_vae (half the batch feeds its discriminator)")


def main(argv):
    del argv
    config = resolved_flags()
    check_flags(config)
    check_run_dir(config, RESUMABLE)
    strategy = make_strategy()
    dataset = load_dataset(config, config["res"], strategy)
    run_dir = create_run_dir(config)
    channels = data.num_channels(config["dataset"])
    fixed_images = next(iter(dataset))[:8]

    with strategy.scope():
        keras.utils.set_random_seed(config["seed"])
        encoder = vae.build_encoder(config["c_dim"], config["res"], channels)
        decoder = vae.build_decoder(config["c_dim"], config["res"], channels)
        if config["model"] == "beta_vae":
            model = vae.BetaVAE(encoder, decoder, config["beta"], config["decoder"], config["seed"])
            model.compile(optimizer=keras.optimizers.Adam(config["lr"]))
        else:
            model = vae.FactorVAE(encoder, decoder, vae.build_tc_discriminator(config["c_dim"]),
                                  config["gamma"], config["decoder"], config["seed"])
            model.compile(keras.optimizers.Adam(config["lr"]), vae.tc_optimizer())
        model(fixed_images)
        model.build_optimizers()

    def log_pictures(step):
        save_model(encoder, os.path.join(run_dir, "encoder.keras"))
        save_model(vae.image_decoder(decoder), os.path.join(run_dir, "decoder.keras"))
        reconstructions = np.concatenate([fixed_images, model(fixed_images)], axis=0)
        return {"reconstructions": image_grid(reconstructions, rows=2),
                "traversals": traversal_grid(encoder, decoder, fixed_images[:1])}

    write_flags(run_dir, config)
    fit_resumable(model, dataset, config, run_dir, log_pictures,
                  steps_done=lambda: int(model.optimizer.iterations))
    if config["evaluate"]:
        evaluate(run_dir, num_samples=config["eval_samples"])


def traversal_grid(encoder, decoder, image, values=np.linspace(-2.5, 2.5, 10)):
    """One row per code dimension: that dimension swept over `values`, the rest at mu(x)."""
    mu, _ = vae.split_stats(encoder(image))
    c_dim = mu.shape[-1]
    codes = np.repeat(np.asarray(mu), c_dim * len(values), axis=0)
    rows = np.repeat(np.arange(c_dim), len(values))
    codes[np.arange(len(codes)), rows] = np.tile(values, c_dim)
    return image_grid(keras.ops.sigmoid(decoder(codes)), rows=c_dim)


# ---------------------------------------------------------------------------------------
# Run harness, shared with train_idgan.py: one-line errors, run directories that refuse to
# mix flags, the distribution strategy, picture grids, and resumable training.


def fail(message):
    """Exit with one line naming the problem (no traceback) and status 2."""
    sys.stderr.write(f"{os.path.basename(sys.argv[0])}: error: {message}\n")
    sys.exit(2)


def parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(str(error).replace("\n", " "))


def flag_values():
    """The running script's own flags (not absl's) as a dict."""
    return {f.name: f.value for f in FLAGS.get_flags_for_module(sys.modules["__main__"])}


def check_resolution(res, name="res"):
    if res < 32 or res > 1024 or res & (res - 1):
        fail(f"--{name}={res} must be a power of two from 32 to 1024")


def check_positive(config, *names):
    for name in names:
        if not config[name] > 0:
            fail(f"--{name}={config[name]} must be positive")


def check_nonnegative(config, *names):
    for name in names:
        if not config[name] >= 0:
            fail(f"--{name}={config[name]} must not be negative")


def check_paths(config):
    if config.get("data_dir") and not os.path.isdir(config["data_dir"]):
        fail(f"--data_dir {config['data_dir']} does not exist or is not a directory")
    if config.get("painting") and not os.path.isfile(config["painting"]):
        fail(f"--painting {config['painting']} does not exist")


ARTIFACTS = ("flags.json", "checkpoint.weights.h5", "logs")


def check_run_dir(config, resumable):
    """Refuse, before anything is written, a directory holding a run with other flags."""
    run_dir = config["out_dir"]
    flags_path = os.path.join(run_dir, "flags.json")
    if config["overwrite"]:
        return
    if os.path.exists(flags_path):
        with open(flags_path) as f:
            previous = json.load(f)
        changed = sorted(k for k in config if k not in resumable and previous.get(k) != config[k])
        if changed:
            diff = ", ".join(f"--{k}={previous.get(k)} there, {config[k]} now" for k in changed)
            fail(f"{run_dir} holds a run with other flags ({diff}); "
                 "pass --overwrite or choose another --out_dir")
    elif os.path.isdir(run_dir) and os.listdir(run_dir):
        fail(f"--out_dir {run_dir} is not empty and holds no run; pass --overwrite to use it")


def create_run_dir(config):
    """Create the run directory (emptied of a previous run's artifacts with --overwrite)."""
    run_dir = config["out_dir"]
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write_test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as error:
        fail(f"cannot write to --out_dir {run_dir} ({error.strerror})")
    if config["overwrite"]:
        for name in os.listdir(run_dir):
            if name in ARTIFACTS or name.endswith((".png", ".keras")):
                path = os.path.join(run_dir, name)
                tf.io.gfile.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return run_dir


def write_flags(run_dir, config):
    def write(path):
        with open(path, "w") as f:
            json.dump(config, f, indent=2)

    write_atomically(os.path.join(run_dir, "flags.json"), write)


def make_strategy():
    """MirroredStrategy over all visible GPUs; the default strategy on a CPU machine."""
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def load_dataset(config, res, strategy):
    batch_size = config["batch_size"]
    if batch_size % strategy.num_replicas_in_sync:
        fail(f"--batch_size={batch_size} must be a multiple of the "
             f"{strategy.num_replicas_in_sync} replicas")
    try:
        dataset = data.make_dataset(config["dataset"], res, batch_size, config.get("data_dir"),
                                    config["seed"], config.get("painting"))
        next(iter(dataset))
    except data.DataError as error:
        fail(str(error))
    except StopIteration:  # an empty dataset, e.g. every file unreadable
        source = config.get("data_dir") or "TFDS " + config["dataset"]
        fail(f"no readable images in {source}")
    return dataset


def image_grid(images, rows):
    """Tile a batch of images in [0, 1] into one uint8 picture of `rows` rows."""
    images = np.clip(np.asarray(images), 0.0, 1.0)
    n, h, w, c = images.shape
    cols = math.ceil(n / rows)
    images = np.concatenate([images, np.zeros((rows * cols - n, h, w, c))], axis=0)
    grid = images.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4)
    return (grid.reshape(rows * h, cols * w, c) * 255).round().astype(np.uint8)


def write_atomically(path, write):
    """write(tmp) then rename: a crash never leaves a half-written file at `path`."""
    base, name = os.path.split(path)
    tmp = os.path.join(base, ".tmp-" + name)
    write(tmp)
    os.replace(tmp, path)


def save_model(model, path):
    write_atomically(path, model.save)


class RunMonitor(keras.callbacks.Callback):
    """Every epoch (--log_every steps): TensorBoard scalars and pictures, PNG grids and a
    backup of the whole training state; stops training at exactly --steps."""

    def __init__(self, run_dir, steps, log_pictures, steps_done):
        super().__init__()
        self.run_dir, self.steps = run_dir, steps
        self.log_pictures, self.steps_done = log_pictures, steps_done
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "logs"))

    def on_train_batch_end(self, batch, logs=None):
        if self.steps_done() >= self.steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        step = self.steps_done()
        pictures = self.log_pictures(step)
        with self.writer.as_default(step=step):
            for name, value in (logs or {}).items():
                tf.summary.scalar(name, value)
            for name, grid in pictures.items():
                tf.summary.image(name, grid[None])
        self.writer.flush()
        for name, grid in pictures.items():
            write_atomically(os.path.join(self.run_dir, name + ".png"),
                             lambda path: tf.io.write_file(path, tf.io.encode_png(grid)))
        save_backup(self.model, self.run_dir)


def save_backup(model, run_dir):
    write_atomically(os.path.join(run_dir, "checkpoint.weights.h5"), model.save_weights)


def evaluate(*runs, num_samples):
    """metrics.evaluate on the finished run(s), printed; a failure is one line, not a crash."""
    try:
        results = metrics.evaluate(*runs, num_samples=num_samples)
    except (OSError, ValueError, RuntimeError) as error:
        fail(f"training finished but evaluation failed: {error}")
    print("Metrics (metrics.json):")
    for name, value in results.items():
        print(f"  {name}: {value}")


def fit_resumable(model, dataset, config, run_dir, log_pictures, steps_done):
    """Train to --steps, resuming from the run's backup when there is one."""
    backup = os.path.join(run_dir, "checkpoint.weights.h5")
    if os.path.exists(backup):
        model.load_weights(backup)
        print(f"Resuming {run_dir} from step {steps_done()}.")
    steps, log_every = config["steps"], config["log_every"]
    if steps_done() >= steps:
        print(f"{run_dir} already has {steps_done()} of {steps} steps; nothing to do.")
        return
    monitor = RunMonitor(run_dir, steps, log_pictures, steps_done)
    model.fit(dataset, epochs=math.ceil(steps / log_every), steps_per_epoch=log_every,
              initial_epoch=steps_done() // log_every, callbacks=[monitor], shuffle=False,
              verbose=1 if sys.stdout.isatty() else 2)
    print(f"Done: {steps_done()} steps in {run_dir}.")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
