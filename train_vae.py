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
RESUMABLE = ("steps", "log_every", "backup_every", "overwrite", "evaluate", "eval_samples",
             "strategy", "jit_compile", "mixed_precision")


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
    flags.DEFINE_integer("log_every", 1000, "Steps between logs and pictures (an epoch).")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_string("out_dir", None, "Run directory (default: runs/vae_<dataset>).")
    flags.DEFINE_bool("overwrite", False, "Replace a run made with different flags.")
    define_shared_flags()


def define_shared_flags():
    """Flags both scripts share, registered as the running script's own (see flag_values)."""
    main_module = dict(module_name=sys.argv[0])
    flags.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
                      "tf.distribute strategy; auto: mirrored over local GPUs, else default. "
                      "multi_worker reads TF_CONFIG.", **main_module)
    flags.DEFINE_integer("backup_every", 500, "Steps between backups of the training state.",
                         **main_module)
    flags.DEFINE_bool("evaluate", True, "Write metrics.json (metrics.py) when training ends.",
                      **main_module)
    flags.DEFINE_integer("eval_samples", 50_000,
                         "Samples for FID and L_I; also caps FVM / MIG sizes (metrics.py).",
                         **main_module)
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (helps on GPUs).",
                      **main_module)
    flags.DEFINE_bool("mixed_precision", False,
                      "bfloat16 compute, float32 weights and losses (helps on A100 / H100 GPUs "
                      "and CPUs with AMX or AVX512-BF16).", **main_module)


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
    check_positive(config, "c_dim", "batch_size", "steps", "log_every", "backup_every", "lr")
    check_nonnegative(config, "beta", "gamma")
    check_paths(config)
    if config["model"] == "factor_vae" and config["batch_size"] % 2:
        fail("--batch_size must be even for factor_vae (half the batch feeds its discriminator)")


def main(argv):
    del argv
    config = resolved_flags()
    check_flags(config)
    strategy = make_strategy(config["strategy"])
    check_jit_compile(config, strategy)
    check_run_dir(config, RESUMABLE, strategy)
    dataset_from = lambda step: load_dataset(config, config["res"], strategy, step)  # noqa: E731
    fixed_images = next(iter(dataset_from(0)))[:8]
    run_dir = create_run_dir(config, strategy)
    channels = data.num_channels(config["dataset"])
    set_precision(config)

    with strategy.scope():
        keras.utils.set_random_seed(config["seed"])
        encoder = vae.build_encoder(config["c_dim"], config["res"], channels)
        decoder = vae.build_decoder(config["c_dim"], config["res"], channels)
        if config["model"] == "beta_vae":
            model = vae.BetaVAE(encoder, decoder, config["beta"], config["decoder"], config["seed"])
            model.compile(optimizer=keras.optimizers.Adam(config["lr"]),
                          jit_compile=config["jit_compile"])
        else:
            model = vae.FactorVAE(encoder, decoder, vae.build_tc_discriminator(config["c_dim"]),
                                  config["gamma"], config["decoder"], config["seed"])
            model.compile(keras.optimizers.Adam(config["lr"]), vae.tc_optimizer(),
                          jit_compile=config["jit_compile"])
        model(fixed_images)
        model.build_optimizers()
    adapt_to_strategy(model, strategy)

    def log_pictures(step):
        save_model(encoder, os.path.join(run_dir, "encoder.keras"))
        save_model(vae.image_decoder(decoder), os.path.join(run_dir, "decoder.keras"))
        reconstructions = np.concatenate([fixed_images, model(fixed_images)], axis=0)
        return {"reconstructions": image_grid(reconstructions, rows=2),
                "traversals": traversal_grid(encoder, decoder, fixed_images[:1])}

    write_flags(run_dir, config, strategy)
    fit_resumable(model, dataset_from, config, run_dir, strategy, log_pictures,
                  steps_done=lambda: int(model.optimizer.iterations.numpy()))
    if config["evaluate"] and is_chief(strategy):
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


def check_run_dir(config, resumable, strategy):
    """Refuse, before anything is written, a directory holding a run with other flags."""
    run_dir = config["out_dir"]
    flags_path = os.path.join(run_dir, "flags.json")
    if config["overwrite"] or not is_chief(strategy):
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


def create_run_dir(config, strategy):
    """Create the run directory (emptied of a previous run's artifacts with --overwrite)."""
    run_dir = config["out_dir"]
    if not is_chief(strategy):  # other workers of a multi-worker run only read it
        return run_dir
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


def write_flags(run_dir, config, strategy):
    if not is_chief(strategy):
        return

    def write(path):
        with open(path, "w") as f:
            json.dump(config, f, indent=2)

    write_atomically(os.path.join(run_dir, "flags.json"), write)


def make_strategy(name):
    """The tf.distribute strategy for --strategy. Every one divides losses by the global
    batch in the models' train_steps, so results do not depend on the replica count."""
    gpus = tf.config.list_physical_devices("GPU")
    if name == "multi_worker":  # TF_CONFIG names the workers; each runs the same command
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored" or gpus:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def check_jit_compile(config, strategy):
    """Keras 3 cannot XLA-compile a train step that runs on several replicas."""
    if config["jit_compile"] and strategy.num_replicas_in_sync > 1:
        fail(f"--jit_compile needs one device, not {strategy.num_replicas_in_sync} replicas: "
             "add --strategy=one_device or drop --jit_compile")


def set_precision(config):
    """--mixed_precision: layers compute in bfloat16 (no loss scaling needed, unlike
    float16); weights, the models' float32 output layers and the losses stay float32."""
    keras.config.set_dtype_policy("mixed_bfloat16" if config["mixed_precision"] else "float32")


def adapt_to_strategy(model, strategy):
    """Keras 3's fit reduces train_step's outputs under MultiWorkerMirroredStrategy with
    strategy.reduce(MEAN, axis=0), which fails on scalars: hand it 1-element vectors."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        train_step = model.train_step
        model.train_step = lambda data: {
            name: tf.reshape(value, [1]) for name, value in train_step(data).items()}


def is_chief(strategy):
    """Whether this process writes the run directory (always, unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_id == 0)


def load_dataset(config, res, strategy, start=0):
    batch_size = config["batch_size"]
    if batch_size % strategy.num_replicas_in_sync:
        fail(f"--batch_size={batch_size} must be a multiple of the "
             f"{strategy.num_replicas_in_sync} replicas")
    try:
        dataset = data.make_dataset(config["dataset"], res, batch_size, config.get("data_dir"),
                                    config["seed"], config.get("painting"), start)
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
    """Stops at exactly --steps or at the first non-finite loss; backs up the training state
    every --backup_every steps; every epoch (--log_every steps) logs TensorBoard scalars and
    pictures and refreshes the PNG grids. Only the chief worker writes."""

    def __init__(self, run_dir, config, log_pictures, steps_done, chief):
        super().__init__()
        self.run_dir, self.steps, self.backup_every = run_dir, config["steps"], config["backup_every"]
        self.log_pictures, self.steps_done, self.chief = log_pictures, steps_done, chief
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "logs")) if chief else None
        self.bad_step = None  # the step whose loss or weights were not finite
        self.last_backup = None  # the step of the last backup this run wrote

    def on_train_batch_end(self, batch, logs=None):
        step = self.steps_done()
        if not all(np.isfinite(float(value)) for value in (logs or {}).values()):
            self.stop(step)
        elif step % self.backup_every == 0:
            self.backup(step)
        if step >= self.steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        step = self.steps_done()
        if self.bad_step is not None or not self.backup(step) or not self.chief:
            return
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

    def backup(self, step):
        """Write the whole training state atomically, unless a weight is no longer finite."""
        if not all(np.isfinite(w).all() for w in self.model.get_weights()):
            self.stop(step)
            return False
        if self.chief:
            write_atomically(os.path.join(self.run_dir, "checkpoint.weights.h5"),
                             self.model.save_weights)
        self.last_backup = step
        return True

    def stop(self, step):
        self.bad_step = self.bad_step or step
        self.model.stop_training = True


def evaluate(*runs, num_samples):
    """metrics.evaluate on the finished run(s), printed; a failure is one line, not a crash."""
    try:
        results = metrics.evaluate(*runs, num_samples=num_samples)
    except (OSError, ValueError, RuntimeError) as error:
        fail(f"training finished but evaluation failed: {error}")
    print("Metrics (metrics.json):")
    for name, value in results.items():
        print(f"  {name}: {value}")


def fit_resumable(model, dataset_from, config, run_dir, strategy, log_pictures, steps_done):
    """Train to --steps, resuming from the run's backup when there is one.

    dataset_from(step) gives the data stream from a step on, so a resumed run sees new
    batches. A non-finite loss stops the run with one line, keeping the last good backup.
    """
    backup = os.path.join(run_dir, "checkpoint.weights.h5")
    monitor = RunMonitor(run_dir, config, log_pictures, steps_done, is_chief(strategy))
    if os.path.exists(backup):
        model.load_weights(backup)
        monitor.last_backup = steps_done()
        print(f"Resuming {run_dir} from step {steps_done()}.")
    steps, log_every = config["steps"], config["log_every"]
    fit = dict(callbacks=[monitor], shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
    # Epochs are --log_every steps. A run restored mid-epoch first finishes that epoch in a
    # short fit of its own (fit would otherwise run a whole epoch again).
    epoch, into_epoch = divmod(steps_done(), log_every)
    if into_epoch and steps_done() < steps:
        model.fit(dataset_from(steps_done()), initial_epoch=epoch, epochs=epoch + 1,
                  steps_per_epoch=log_every - into_epoch, **fit)
        epoch += 1
    if steps_done() < steps and monitor.bad_step is None:
        model.fit(dataset_from(steps_done()), initial_epoch=epoch,
                  epochs=math.ceil(steps / log_every), steps_per_epoch=log_every, **fit)
    if monitor.bad_step is not None:
        kept = (f"the last good backup, step {monitor.last_backup}, is kept in {backup}"
                if monitor.last_backup else "no good backup was written")
        fail(f"the loss or the weights became NaN or infinite at step {monitor.bad_step}; "
             f"training stopped and {kept}")
    print(f"Done: {steps_done()} of {steps} steps in {run_dir}.")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
