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
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import data  # noqa: E402
import metrics  # noqa: E402
import vae  # noqa: E402

FLAGS = flags.FLAGS

# Published settings (SPEC.md; the authors' scripts/run_*.sh): per dataset family, the
# values a flag left unset takes. FactorVAE has no beta: its ELBO uses beta = 1.
GROUND_TRUTH_DEFAULTS = dict(c_dim=10, beta=8.0, decoder="bernoulli", steps=300_000)
NATURAL_DEFAULTS = dict(c_dim=20, beta=6.4, decoder="gaussian", steps=1_000_000)
BETA = {"chairs": 10.0, "cars": 5.0}  # run_chairs.sh --beta 10, run_cars.sh --beta 5
# Flags that may change between runs of one directory; out_dir and vae are places, not
# settings, so a run directory can be moved or copied and resumed where it now is.
RESUMABLE = ("steps", "log_every", "backup_every", "overwrite", "evaluate", "eval_samples",
             "inception_weights", "strategy", "jit_compile", "mixed_precision", "steps_per_execution",
             "out_dir", "vae", "fid_every", "fid_samples", "fid_classifier")


def define_flags():
    flags.DEFINE_enum("dataset", "sprites", data.DATASETS, "Training data.")
    flags.DEFINE_string("data_dir", None, "TFDS data_dir, dSprites npz folder or image folder.")
    flags.DEFINE_string("painting", None, "Image file for scream_* backgrounds.")
    flags.DEFINE_integer("res", 64, "Image resolution of the VAE (a power of two).")
    flags.DEFINE_enum("model", "beta_vae", ["beta_vae", "factor_vae"], "Stage-1 model.")
    flags.DEFINE_float("beta", None, "beta_vae's KL weight (default: 8 sprites family, 6.4 "
                       "CelebA, 10 Chairs, 5 Cars).")
    flags.DEFINE_float("gamma", None, "factor_vae's total-correlation weight (default 35).")
    flags.DEFINE_integer("c_dim", None, "Code dimensions (default: 10 sprites, 20 natural).")
    flags.DEFINE_enum("decoder", None, ["bernoulli", "gaussian"],
                      "Likelihood (default: bernoulli sprites family, gaussian natural).")
    flags.DEFINE_integer("batch_size", 64, "Global batch size.")
    flags.DEFINE_float("lr", 1e-4, "Adam learning rate (PyTorch's Adam: eps 1e-8).")
    flags.DEFINE_integer("steps", None, "Training steps (default: 3e5 sprites, 1e6 natural).")
    flags.DEFINE_string("out_dir", None, "Run directory (default: runs/vae_<dataset>).")
    define_shared_flags()


def define_shared_flags():
    """Flags both scripts share, registered as the running script's own (see flag_values)."""
    main_module = dict(module_name=sys.argv[0])
    flags.DEFINE_integer("log_every", 1000, "Steps between logs and pictures.", **main_module)
    flags.DEFINE_integer("seed", 0, "Random seed.", **main_module)
    flags.DEFINE_bool("overwrite", False, "Delete the run in --out_dir and start afresh.",
                      **main_module)
    flags.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
                      "tf.distribute strategy; auto: mirrored over local GPUs, else default. "
                      "multi_worker reads TF_CONFIG.", **main_module)
    flags.DEFINE_integer("backup_every", 500, "Steps between backups of the training state.",
                         **main_module)
    flags.DEFINE_bool("evaluate", True, "Write metrics.json (metrics.py) when training ends.",
                      **main_module)
    flags.DEFINE_integer("eval_samples", None,
                         "Samples for FID and L_I; also caps FVM / MIG sizes (metrics.py). "
                         "Default: 50,000, fewer for short runs (5 per training step, at "
                         "least 1,000).", **main_module)
    flags.DEFINE_integer("fid_every", 0, "Steps between FIDs of the model's samples during "
                         "training (0: none): TensorBoard scalar `fid` and fid_curve.csv.",
                         **main_module)
    flags.DEFINE_integer("fid_samples", 2000, "Samples per FID of --fid_every.", **main_module)
    flags.DEFINE_string("fid_classifier", None, "--fid_every on the sprites family: the factor "
                        "classifier whose features FID uses, used as it is if the file exists, "
                        "else trained (5000 steps, seed 0) and saved there; runs given one file "
                        "share one feature space. Default: factor_classifier.keras in the "
                        "stage-1 run.", **main_module)
    flags.DEFINE_string("inception_weights", "imagenet",
                        "FID network on natural images: Keras' ImageNet InceptionV3 ('imagenet' "
                        "or a .h5 file), or the inception-2015-12-05 .tgz / .pb of published "
                        "FIDs (metrics.py).", **main_module)
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (helps on GPUs).",
                      **main_module)
    flags.DEFINE_integer("steps_per_execution", 1,
                         "Train steps per call into TensorFlow; the host reads the losses once "
                         "per call (a GPU then runs this many steps without waiting). Must "
                         "divide --steps, --log_every and --backup_every.", **main_module)
    flags.DEFINE_bool("mixed_precision", False,
                      "bfloat16 compute, float32 weights and losses (helps on A100 / H100 GPUs "
                      "and CPUs with AMX or AVX512-BF16).", **main_module)


def published_defaults(dataset):
    """The authors' stage-1 settings for a dataset (SPEC.md "Published settings")."""
    defaults = dict(GROUND_TRUTH_DEFAULTS if data.has_ground_truth(dataset) else NATURAL_DEFAULTS)
    defaults["beta"] = BETA.get(dataset, defaults["beta"])
    return defaults


def resolved_flags():
    """The flags as a dict, with dataset-dependent defaults filled in."""
    config = flag_values()
    defaults = published_defaults(config["dataset"])
    if config["model"] == "factor_vae":  # record what is used, refuse what would be ignored
        if config["beta"] is not None:
            fail("--beta applies to --model=beta_vae; factor_vae uses beta 1 and --gamma")
        config["beta"], defaults["gamma"] = 1.0, 35.0  # Kim and Mnih's gamma for dSprites
    elif config["gamma"] is not None:
        fail("--gamma applies to --model=factor_vae; beta_vae's weight is --beta")
    for key, value in defaults.items():
        if config[key] is None:
            config[key] = value
    config["out_dir"] = config["out_dir"] or os.path.join("runs", "vae_" + config["dataset"])
    return config


def check_flags(config):
    check_resolution(config["res"])
    check_positive(config, "c_dim", "batch_size", "steps", "log_every", "backup_every", "lr")
    check_nonnegative(config, "beta", "gamma")
    check_eval_samples(config)
    check_paths(config)


def main(argv):
    check_no_arguments(argv)
    config = resolved_flags()
    check_flags(config)
    strategy = make_strategy(config["strategy"])
    check_speed_flags(config, strategy)
    check_run_dir(config, RESUMABLE, strategy)
    channels = data.num_channels(config["dataset"])
    set_precision(config)

    with strategy.scope():
        keras.utils.set_random_seed(config["seed"])
        encoder = vae.build_encoder(config["c_dim"], config["res"], channels)
        decoder = vae.build_decoder(config["c_dim"], config["res"], channels)
        if config["model"] == "beta_vae":
            model = vae.BetaVAE(encoder, decoder, config["beta"], config["decoder"], config["seed"])
            model.compile(optimizer=vae.adam(config["lr"]), jit_compile=config["jit_compile"])
        else:
            model = vae.FactorVAE(encoder, decoder, vae.build_tc_discriminator(config["c_dim"]),
                                  config["gamma"], config["decoder"], config["seed"])
            model.compile(vae.adam(config["lr"]), vae.tc_optimizer(),
                          jit_compile=config["jit_compile"])
        model(keras.ops.zeros((1, config["res"], config["res"], channels)))
        model.build_optimizers()
    adapt_to_strategy(model, strategy)
    steps_done = lambda: int(model.optimizer.iterations.numpy())  # noqa: E731
    restore(model, config, steps_done)
    # FactorVAE takes two independent batches per step (see vae.py).
    stream, first_batch = load_dataset(config, config["res"], strategy, steps_done(),
                                       pairs=config["model"] == "factor_vae")
    fixed_images = first_batch[:8]
    run_dir = create_run_dir(config, strategy)

    def log_pictures(step):
        save_model(encoder, os.path.join(run_dir, "encoder.keras"))
        save_model(vae.image_decoder(decoder), os.path.join(run_dir, "decoder.keras"))
        reconstructions = np.concatenate([fixed_images, model(fixed_images)], axis=0)
        return {"reconstructions": image_grid(reconstructions, rows=2),
                "traversals": traversal_grid(encoder, decoder, fixed_images[:1])}

    write_flags(run_dir, config, strategy)
    rng, sample_decoder = np.random.default_rng(config["seed"]), vae.image_decoder(decoder)
    prior_samples = lambda n: sample_decoder(  # noqa: E731
        rng.standard_normal((n, config["c_dim"])).astype("float32"), training=False)
    fit_resumable(model, stream, config, run_dir, strategy, log_pictures, steps_done,
                  prior_samples, os.path.join(run_dir, "factor_classifier.keras"))
    if is_chief(strategy):
        evaluate(config, run_dir)


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


def first_line(error):
    """An exception as one line of words, even when its message is empty."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(first_line(error))


def check_no_arguments(argv):
    """Flags only: a stray word (a typo like `dataset=celeba`) must not start a default run."""
    if len(argv) > 1:
        word = argv[1]
        hint = f" (did you mean --{word}?)" if "=" in word and not word.startswith("-") else ""
        fail(f"unexpected argument {word!r}{hint}; every setting is a flag, --name=value")


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
        if config[name] is not None and not config[name] >= 0:
            fail(f"--{name}={config[name]} must not be negative")


def check_eval_samples(config):
    """metrics.py needs two samples for a covariance (and FVM / MIG more: it says so)."""
    if config["eval_samples"] is not None and config["eval_samples"] < 2:
        fail(f"--eval_samples={config['eval_samples']} must be at least 2")
    check_nonnegative(config, "fid_every")
    if config["fid_samples"] < 2:
        fail(f"--fid_samples={config['fid_samples']} must be at least 2")
    folder = os.path.dirname(os.path.abspath(config["fid_classifier"] or "."))
    if config["fid_every"] and not os.path.isdir(folder):
        fail(f"--fid_classifier: the directory {folder} does not exist")


def check_paths(config):
    if config.get("data_dir") and not os.path.isdir(config["data_dir"]):
        fail(f"--data_dir {config['data_dir']} does not exist or is not a directory")
    if config.get("painting") and not os.path.isfile(config["painting"]):
        fail(f"--painting {config['painting']} does not exist")
    weights = config.get("inception_weights", "imagenet")
    if weights != "imagenet" and data.has_ground_truth(config["dataset"]):
        fail(f"--inception_weights applies to natural images; FID on {config['dataset']} uses "
             "the factor classifier (--fid_classifier)")
    if weights != "imagenet" and not os.path.isfile(weights):
        fail(f"--inception_weights {weights} does not exist")


ARTIFACTS = ("flags.json", "checkpoint.weights.h5", "logs")


def read_flags_file(path):
    """A run's flags.json as a dict, or one line saying what is wrong with the file."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError
        fail(f"{path} is not a readable run description ({first_line(error)}); "
             "restore it, or move the run away")
    if not isinstance(saved, dict):
        fail(f"{path} is not a readable run description (not a JSON object)")
    return saved


def check_run_dir(config, resumable, strategy):
    """Refuse, before anything is written, a directory holding a run with other flags."""
    run_dir = config["out_dir"]
    flags_path = os.path.join(run_dir, "flags.json")
    if config["overwrite"] or not is_chief(strategy):
        return
    if os.path.exists(flags_path):
        previous = read_flags_file(flags_path)
        changed = sorted(k for k in config if k not in resumable and previous.get(k) != config[k])
        if changed:
            diff = ", ".join(f"--{k}={previous.get(k)} there, {config[k]} now" for k in changed)
            fail(f"{run_dir} holds a run with other flags ({diff}); choose another --out_dir, "
                 "or pass --overwrite to delete that run and start afresh")
    elif os.path.isdir(run_dir) and os.listdir(run_dir):
        fail(f"--out_dir {run_dir} is not empty and holds no run; choose another --out_dir")


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


def check_speed_flags(config, strategy):
    """Keras 3 cannot XLA-compile a train step that runs on several replicas; the monitor
    acts after whole executions, so --steps_per_execution must divide every step it acts at."""
    if config["jit_compile"] and strategy.num_replicas_in_sync > 1:
        fail(f"--jit_compile needs one device, not {strategy.num_replicas_in_sync} replicas: "
             "add --strategy=one_device or drop --jit_compile")
    per_call = config.get("steps_per_execution", 1)
    if per_call < 1:
        fail(f"--steps_per_execution={per_call} must be positive")
    for name in ("steps", "log_every", "backup_every", "fid_every"):
        if config.get(name) and config[name] % per_call:
            fail(f"--steps_per_execution={per_call} must divide --{name}={config[name]}")


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


def load_dataset(config, res, strategy, start=0, augment=False, pairs=False):
    """The training stream from step `start` on, built once, and its first batch (which
    also proves, before anything is written, that the data can be read). With pairs, each
    step is two independent batches of --batch_size (drawn as one of twice the size)."""
    batch_size = config["batch_size"]
    if batch_size % strategy.num_replicas_in_sync:
        fail(f"--batch_size={batch_size} must be a multiple of the "
             f"{strategy.num_replicas_in_sync} replicas")
    try:
        stream = data.make_dataset(config["dataset"], res, batch_size * (1 + pairs),
                                   config.get("data_dir"), config["seed"], config.get("painting"),
                                   start, augment=augment)
        if pairs:
            stream = stream.map(lambda x: (x[:batch_size], x[batch_size:]))
        first = next(iter(stream))
        return stream, np.asarray(first[0] if pairs else first)
    except data.DataError as error:
        fail(first_line(error))
    except StopIteration:  # an empty dataset, e.g. every file unreadable
        source = config.get("data_dir") or "TFDS " + config["dataset"]
        fail(f"no readable images in {source}")


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


def duration(seconds):
    """3h05m, 4m10s or 12s."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class RunMonitor(keras.callbacks.Callback):
    """Counts steps (not Keras epochs): stops at exactly --steps or at the first non-finite
    loss; backs up the training state every --backup_every steps; every --log_every steps
    and at the end writes TensorBoard scalars and pictures, refreshes the PNG grids and
    prints the losses with the run's progress and ETA (and a progress line every 30 s in
    between). Only the chief worker writes."""

    def __init__(self, run_dir, config, log_pictures, steps_done, chief):
        super().__init__()
        self.run_dir, self.config, self.steps = run_dir, config, config["steps"]
        self.log_pictures, self.steps_done, self.chief = log_pictures, steps_done, chief
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "logs")) if chief else None
        self.bad_step = None  # the step whose loss or weights were not finite
        self.last_backup = None  # the step of the last backup this run wrote

    def on_train_begin(self, logs=None):
        self.start_time = self.last_print = time.monotonic()
        self.start_step = self.steps_done()

    def on_train_batch_end(self, batch, logs=None):
        # batch: the last step of this execution within this fit. Counting here, rather than
        # reading the optimizer's counter, costs no round trip to the device.
        step = self.start_step + batch + 1
        logs = {name: float(np.mean(value)) for name, value in (logs or {}).items()}
        if not all(np.isfinite(value) for value in logs.values()):
            self.stop(step)
            return
        end = step >= self.steps
        if end:
            self.model.stop_training = True
        if end or step % self.config["log_every"] == 0:
            if self.backup(step):
                self.log(step, logs)
        elif step % self.config["backup_every"] == 0:
            self.backup(step)
        elif time.monotonic() - self.last_print >= 30:
            self.print_progress(step)

    def print_progress(self, step, losses=""):
        """`step 1200/300000[: losses] (0.4%, 4.1 steps/s, 4m53s so far, ETA 20h16m)`"""
        self.last_print = now = time.monotonic()
        rate = (step - self.start_step) / max(now - self.start_time, 1e-9)
        eta = duration((self.steps - step) / rate) if rate > 0 else "?"
        print(f"step {step}/{self.steps}{losses} ({100 * step / self.steps:.1f}%, "
              f"{rate:.1f} steps/s, {duration(now - self.start_time)} so far, ETA {eta})",
              flush=True)

    def log(self, step, logs):
        self.print_progress(step, ": " + ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))
        self.model.reset_metrics()  # the next line averages the next --log_every steps
        if not self.chief:
            return
        pictures = self.log_pictures(step)
        with self.writer.as_default(step=step):
            for name, value in logs.items():
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


def default_eval_samples(steps):
    """--eval_samples left unset: 50,000 (the paper's FID size), or 5 per training step
    (at least 1,000) so that a trial run is not followed by half an hour of metrics."""
    return min(50_000, max(1_000, 5 * steps))


def evaluate(config, run_dir, vae_run=None):
    """metrics.evaluate on the finished run(s) with progress; a failure is one line."""
    if not config["evaluate"]:
        return
    num_samples = config["eval_samples"] or default_eval_samples(config["steps"])
    runs = (vae_run, run_dir) if vae_run else (run_dir,)
    print("Evaluation follows. Skip it with --noevaluate, shrink it with --eval_samples=N, or run it later: "
          f"python metrics.py --vae={runs[0]}" + (f" --idgan={run_dir}" if vae_run else "")
          + f" --num_samples={num_samples}", flush=True)
    try:
        results = metrics.evaluate(*runs, num_samples=num_samples,
                                   inception_weights=config["inception_weights"])
    except (OSError, ValueError, RuntimeError) as error:
        fail(f"training finished but evaluation failed: {first_line(error)}")
    print("Metrics (metrics.json):")
    for name, value in results.items():
        print(f"  {name}: {value}")


def restore(model, config, steps_done):
    """Load the run's backup into the built model (read only; nothing is written), unless
    --overwrite starts afresh."""
    backup = os.path.join(config["out_dir"], "checkpoint.weights.h5")
    if config["overwrite"] or not os.path.exists(backup):
        return
    try:
        model.load_weights(backup)
    except Exception as error:  # h5py and Keras raise many types for a damaged file
        fail(f"cannot resume from {backup} ({first_line(error)}); move it away to start afresh")
    print(f"Resuming {config['out_dir']} from step {steps_done()}.")


def fid_curve(config, run_dir, generate_fn, start_step, classifier_path):
    """metrics.FIDCurve for --fid_every: generate_fn(n) -> n images in [0, 1] against
    --fid_samples real images, in the features metrics.py uses for the dataset (the
    --fid_classifier factor classifier, trained with seed 0 if absent, or Inception)."""
    source = (config["dataset"], config.get("data_dir"), config.get("painting"))
    classifier_path = config["fid_classifier"] or classifier_path
    print(f"FID every {config['fid_every']} steps on {config['fid_samples']:,} samples; "
          "features first:", flush=True)
    try:
        if data.has_ground_truth(source[0]) and os.path.isfile(classifier_path):
            features_fn = metrics.classifier_features_fn(  # a given classifier, used as it is
                keras.models.load_model(classifier_path, compile=False))
        else:
            features_fn, _, _ = metrics.fid_feature_network(
                data, source, classifier_path, 5000, 0, config["inception_weights"], print)
        real = data.make_dataset(config["dataset"], config["res"], 100, config.get("data_dir"),
                                 config["seed"] + 7, config.get("painting"))
        real_stats = metrics.real_statistics(real, features_fn, config["fid_samples"])
    except (OSError, ValueError, data.DataError) as error:
        fail(f"--fid_every: {first_line(error)}")
    return metrics.FIDCurve(config["fid_every"], generate_fn, features_fn, real_stats,
                            config["fid_samples"], os.path.join(run_dir, "fid_curve.csv"),
                            os.path.join(run_dir, "logs"), start_step)


def fit_resumable(model, stream, config, run_dir, strategy, log_pictures, steps_done,
                  generate_fn=None, classifier_path=None):
    """Train from the restored step to --steps on `stream` (which starts at that step, so
    a resumed run sees new batches), in one Keras fit: logging, backups and the stop at
    --steps count steps. A non-finite loss stops the run with one line, keeping the last
    good backup. With --fid_every, generate_fn(n) (n images in [0, 1]) is scored as it
    trains (fid_curve)."""
    monitor = RunMonitor(run_dir, config, log_pictures, steps_done, is_chief(strategy))
    monitor.last_backup = steps_done() or None
    callbacks = [monitor]
    if config.get("fid_every") and is_chief(strategy):
        callbacks.append(fid_curve(config, run_dir, generate_fn, steps_done(), classifier_path))
    remaining = config["steps"] - steps_done()
    model.steps_per_execution = config.get("steps_per_execution", 1)
    if remaining > 0:
        model.fit(stream, epochs=1, steps_per_epoch=remaining, callbacks=callbacks,
                  shuffle=False, verbose=0)
    if monitor.bad_step is not None:
        backup = os.path.join(run_dir, "checkpoint.weights.h5")
        kept = (f"the last good backup, step {monitor.last_backup}, is kept in {backup}"
                if monitor.last_backup else "no good backup was written")
        fail(f"the loss or the weights became NaN or infinite at step {monitor.bad_step}; "
             f"training stopped and {kept}")
    print(f"Done: {steps_done()} of {config['steps']} steps in {run_dir}.", flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
