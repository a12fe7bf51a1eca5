"""Stage 1: train a beta-VAE or FactorVAE and save its encoder for ID-GAN.

    python train_vae.py --dataset=celeba --data_dir=/data/img_align_celeba   # runs/vae_celeba
    python train_vae.py --dataset=sprites --model=factor_vae                  # runs/vae_sprites

The run directory holds encoder.keras (images in [0, 1] -> concat([mu, logvar])),
decoder.keras (codes -> images), checkpoint.weights.h5 (the whole training state),
flags.json, TensorBoard logs/ and picture grids. The same command again resumes. The second
half of this file is `Run`, the run harness that train_idgan.py shares.
"""
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import data  # noqa: E402
from data import first_line  # noqa: E402 (an exception as one line of words)
import metrics  # noqa: E402
import vae  # noqa: E402

FLAGS = flags.FLAGS

# The published settings per dataset (README "Published settings": the authors'
# scripts/run_*.sh for stage 1, configs/*.yaml for stage 2). A flag left unset takes the
# value of its dataset; "sprites" stands for the whole dSprites family.
PUBLISHED = {
    #            c_dim beta decoder      vae_steps  nuisance_dim distill_weight r1     g_lr
    "sprites":   (10,  8.0, "bernoulli", 300_000,   0,           1e-4,          10.0,  1e-3),
    "celeba":    (20,  6.4, "gaussian",  1_000_000, 256,         1e-3,          10.0,  1e-4),
    "celeba_hq": (20,  6.4, "gaussian",  1_000_000, 256,         1e-4,          10.0,  1e-4),
    "chairs":    (20, 10.0, "gaussian",  1_000_000, 256,         1e-4,          1000.0, 1e-4),
    "cars":      (20,  5.0, "gaussian",  1_000_000, 256,         1e-3,          10.0,  1e-4),
}
SETTINGS = ("c_dim", "beta", "decoder", "vae_steps", "nuisance_dim", "distill_weight", "r1",
            "g_lr")
FACTOR_VAE_GAMMA = 35.0  # Kim and Mnih's gamma for dSprites


def published(dataset):
    """The published settings of a dataset, as a dict."""
    family = "sprites" if data.has_ground_truth(dataset) else dataset
    return dict(zip(SETTINGS, PUBLISHED[family]))


def define_flags():
    flags.DEFINE_enum("dataset", "sprites", data.DATASETS, "Training data.")
    flags.DEFINE_string("data_dir", None, "TFDS data_dir, dSprites npz folder or image folder.")
    flags.DEFINE_string("painting", None, "Image file for scream_* backgrounds.")
    flags.DEFINE_integer("res", 64, "Image resolution of the VAE (a power of two).")
    flags.DEFINE_enum("model", "beta_vae", ["beta_vae", "factor_vae"], "Stage-1 model.")
    flags.DEFINE_float("beta", None, "beta_vae's KL weight (default: published).", lower_bound=0)
    flags.DEFINE_float("gamma", None, "factor_vae's total-correlation weight (default 35).",
                       lower_bound=0)
    flags.DEFINE_integer("c_dim", None, "Code dimensions (default: published).", lower_bound=1)
    flags.DEFINE_enum("decoder", None, ["bernoulli", "gaussian"],
                      "Likelihood (default: bernoulli sprites family, gaussian natural).")
    flags.DEFINE_integer("batch_size", 64, "Global batch size.", lower_bound=1)
    flags.DEFINE_float("lr", 1e-4, "Adam learning rate (PyTorch's Adam: eps 1e-8).")
    flags.DEFINE_integer("steps", None, "Training steps (default: 3e5 sprites, 1e6 natural).",
                         lower_bound=1)
    flags.DEFINE_string("out_dir", None, "Run directory (default: runs/vae_<dataset>).")
    flags.register_validator("res", is_resolution, "must be a power of two from 32 to 1024")
    flags.register_validator("lr", lambda v: v > 0, "must be positive")
    define_shared_flags()
    flags.register_multi_flags_validator(
        ["model", "beta"], lambda f: f["model"] == "beta_vae" or f["beta"] is None,
        "--beta applies to --model=beta_vae; factor_vae uses beta 1 and --gamma")
    flags.register_multi_flags_validator(
        ["model", "gamma"], lambda f: f["model"] == "factor_vae" or f["gamma"] is None,
        "--gamma applies to --model=factor_vae; beta_vae's weight is --beta")


def main(argv):
    config = script_flags(argv)
    settings = published(config["dataset"])
    config["c_dim"] = config["c_dim"] or settings["c_dim"]
    config["decoder"] = config["decoder"] or settings["decoder"]
    config["steps"] = config["steps"] or settings["vae_steps"]
    if config["model"] == "beta_vae":
        config["beta"] = settings["beta"] if config["beta"] is None else config["beta"]
    else:  # FactorVAE's ELBO has beta 1; flags.json records what is used
        config["beta"] = 1.0
        config["gamma"] = FACTOR_VAE_GAMMA if config["gamma"] is None else config["gamma"]
    config["out_dir"] = config["out_dir"] or os.path.join("runs", "vae_" + config["dataset"])
    run = Run(config, make_strategy(config["strategy"]))
    res, channels = config["res"], data.num_channels(config["dataset"])

    with run.strategy.scope():
        keras.utils.set_random_seed(config["seed"])
        encoder = vae.build_encoder(config["c_dim"], res, channels)
        decoder = vae.build_decoder(config["c_dim"], res, channels)
        if config["model"] == "beta_vae":
            model = vae.BetaVAE(encoder, decoder, config["beta"], config["decoder"], config["seed"])
            model.compile(optimizer=vae.adam(config["lr"]), jit_compile=config["jit_compile"])
        else:
            model = vae.FactorVAE(encoder, decoder, vae.build_tc_discriminator(config["c_dim"]),
                                  config["gamma"], config["decoder"], config["seed"])
            model.compile(vae.adam(config["lr"]), vae.tc_optimizer(),
                          jit_compile=config["jit_compile"])
        model(keras.ops.zeros((1, res, res, channels)))
        model.build_optimizers()
    # FactorVAE takes two independent batches per step (vae.py).
    stream, first_batch = run.start(model, model.optimizer, res,
                                    pairs=config["model"] == "factor_vae")
    fixed_images, chunk = first_batch[:8], config["batch_size"]  # grids: a batch per call

    def log_pictures(step):
        run.save(encoder, "encoder.keras")
        run.save(vae.image_decoder(decoder), "decoder.keras")
        reconstructions = np.concatenate([fixed_images, vae.in_chunks(model, fixed_images, chunk)])
        return {"reconstructions": vae.image_grid(reconstructions, rows=2),
                "traversals": vae.traversal_grid(encoder, decoder, fixed_images[:1], chunk=chunk)}

    rng, sample_decoder = np.random.default_rng(config["seed"]), vae.image_decoder(decoder)
    prior_samples = lambda n: vae.in_chunks(  # noqa: E731  --fid_every's samples
        sample_decoder, rng.standard_normal((n, config["c_dim"])).astype("float32"), chunk)
    run.fit(model, stream, log_pictures, prior_samples,
            os.path.join(run.dir, "factor_classifier.keras"))
    run.evaluate()


# ---------------------------------------------------------------------------------------
# The run harness, shared with train_idgan.py: the flags both take, one-line errors, `Run`.
# Flags that may change between runs of one directory (out_dir and vae are places, not
# settings: a run directory can be moved and resumed where it now is).
RESUMABLE = ("steps", "log_every", "backup_every", "overwrite", "evaluate", "eval_samples",
             "inception_weights", "strategy", "jit_compile", "mixed_precision",
             "steps_per_execution", "out_dir", "vae", "fid_every", "fid_samples",
             "fid_classifier")
ARTIFACTS = ("flags.json", "checkpoint.weights.h5", "logs")


def is_resolution(res):
    return res is None or (32 <= res <= 1024 and not res & (res - 1))


def define_shared_flags():
    """Flags both scripts share, registered as the running script's own (script_flags)."""
    own = dict(module_name=sys.argv[0])
    flags.DEFINE_integer("log_every", 1000, "Steps between logs and pictures.", 1, **own)
    flags.DEFINE_integer("backup_every", 500, "Steps between backups of the state.", 1, **own)
    flags.DEFINE_integer("seed", 0, "Random seed.", **own)
    flags.DEFINE_bool("overwrite", False, "Delete the run in --out_dir and start afresh.", **own)
    flags.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
                      "tf.distribute strategy (auto: mirrored over the local GPUs, if any; "
                      "multi_worker reads TF_CONFIG).", **own)
    flags.DEFINE_bool("evaluate", True, "Write metrics.json when training ends.", **own)
    flags.DEFINE_integer("eval_samples", None, "FID and L_I samples, also capping FVM and MIG "
                         "(default: 5 per step, from 1,000 to 50,000).", 2, **own)
    flags.DEFINE_integer("fid_every", 0, "Steps between FIDs while training (0: none).", 0, **own)
    flags.DEFINE_integer("fid_samples", 2000, "Samples per FID of --fid_every.", 2, **own)
    flags.DEFINE_string("fid_classifier", None, "Sprites family: the factor classifier of "
                        "--fid_every, trained there if absent (default: the stage-1 run's).", **own)
    flags.DEFINE_string("inception_weights", "imagenet", "Natural images' FID network: 'imagenet' "
                        "or a .h5 (Keras' InceptionV3), or the 2015 graph's .tgz / .pb.", **own)
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (for GPUs).", **own)
    flags.DEFINE_integer("steps_per_execution", 1, "Train steps per call into TensorFlow; must "
                         "divide --steps, --log_every, --backup_every and --fid_every.", 1, **own)
    flags.DEFINE_bool("mixed_precision", False, "bfloat16 compute, float32 weights.", **own)
    for name, exists, what in [("data_dir", os.path.isdir, "does not exist or is not a directory"),
                               ("painting", os.path.isfile, "does not exist")]:
        flags.register_validator(name, lambda v, exists=exists: v is None or exists(v), what)
    flags.register_validator("inception_weights", lambda v: v == "imagenet" or os.path.isfile(v),
                             "does not exist")
    flags.register_multi_flags_validator(
        ["fid_every", "fid_classifier"], lambda f: not f["fid_every"] or os.path.isdir(
            os.path.dirname(os.path.abspath(f["fid_classifier"] or "."))),
        "--fid_classifier: its directory does not exist")


def unused_inception_weights(weights, datasets, classifier_flag):
    """The error if --inception_weights names a file but FID on every one of `datasets` is in
    the factor classifier's features (the sprites family)."""
    if weights != "imagenet" and all(map(data.has_ground_truth, datasets)):
        return (f"--inception_weights applies to natural images; FID on {' and '.join(datasets)}"
                f" uses the factor classifier ({classifier_flag})")


def fail(message):
    """Exit with one line naming the problem (no traceback), status 2."""
    sys.stderr.write(f"{os.path.basename(sys.argv[0])}: error: {message}\n")
    sys.exit(2)


def parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(first_line(error))


def script_flags(argv):
    """The running script's own flags (not absl's) as a dict. Flags only: a stray word (a
    typo like `dataset=celeba`) must not start a default run."""
    if len(argv) > 1:
        word = argv[1]
        hint = f" (did you mean --{word}?)" if "=" in word and not word.startswith("-") else ""
        fail(f"unexpected argument {word!r}{hint}; every setting is a flag, --name=value")
    return {f.name: f.value for f in FLAGS.get_flags_for_module(sys.modules["__main__"])}


def make_strategy(name):
    """The tf.distribute strategy of --strategy (every loss is divided by the global batch)."""
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


def is_chief(strategy):
    """Whether this process writes the run directory (always, unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_id == 0)


def write_atomically(path, write):
    """write(tmp) then rename: a crash never leaves a half-written file at `path`."""
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    write(tmp)
    os.replace(tmp, path)


def duration(seconds):
    """3h05m, 4m10s or 12s."""
    h, m, s = int(seconds) // 3600, int(seconds) // 60 % 60, int(seconds) % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Run(keras.callbacks.Callback):
    """One training run: its flags, strategy and directory. Every failure is one line.

        run = Run(config, strategy)   # refuses bad combinations before anything is written
        stream, first = run.start(model, counter, res)  # resume, open the data, write flags
        run.fit(model, stream, log_pictures)  # to --steps: backups, logs, the NaN guard
        run.evaluate()                # metrics.json

    As fit's callback it backs up every --backup_every steps and every --log_every steps
    writes logs and grids and prints the losses with an ETA. Only the chief worker writes.
    Run(..., evaluated=False): the script will not call evaluate (no stage-1 run to score)."""

    def __init__(self, config, strategy, evaluated=True):
        super().__init__()
        self.config, self.strategy, self.dir = config, strategy, config["out_dir"]
        self.chief = is_chief(strategy)
        unused = unused_inception_weights(config["inception_weights"], [config["dataset"]],
                                          "--fid_classifier")
        if unused:
            fail(unused)
        replicas = strategy.num_replicas_in_sync
        if config["jit_compile"] and replicas > 1:
            fail(f"--jit_compile needs one device, not {replicas} replicas: add "
                 "--strategy=one_device or drop --jit_compile")
        per_call = config["steps_per_execution"]  # the callback acts after whole executions
        for name in ("steps", "log_every", "backup_every", "fid_every"):
            if config[name] % per_call:
                fail(f"--steps_per_execution={per_call} must divide --{name}={config[name]}")
        if config["batch_size"] % replicas:
            fail(f"--batch_size={config['batch_size']} must be a multiple of the {replicas} "
                 "replicas")
        flags_path = os.path.join(self.dir, "flags.json")
        keep = self.chief and not config["overwrite"]  # a run there is resumed, never mixed
        if keep and os.path.exists(flags_path):
            saved = read_flags_file(flags_path)
            changed = sorted(k for k in config if k not in RESUMABLE and saved.get(k) != config[k])
            if changed:
                diff = ", ".join(f"--{k}={saved.get(k)} there, {config[k]} now" for k in changed)
                fail(f"{self.dir} holds a run with other flags ({diff}); choose another "
                     "--out_dir, or pass --overwrite to delete that run and start afresh")
        elif keep and os.path.isdir(self.dir) and os.listdir(self.dir):
            fail(f"--out_dir {self.dir} is not empty and holds no run; choose another --out_dir")
        # FID on natural images (--evaluate, --fid_every) needs Inception: loaded now.
        offs = [off for off, on in [("--noevaluate", config["evaluate"] and evaluated),
                                    ("--fid_every=0", config["fid_every"])] if on]
        if offs and self.chief and not data.has_ground_truth(config["dataset"]):
            try:
                metrics.inception_features_fn(config["inception_weights"])
            except (OSError, ValueError, RuntimeError) as error:
                reason = first_line(error.__cause__ or error)[:200]
                fail(f"FID on {config['dataset']} needs InceptionV3, and --inception_weights="
                     f"{config['inception_weights']} does not load ({reason}); pass "
                     "--inception_weights=FILE (Keras' InceptionV3 .h5 or the 2015 graph's "
                     f".tgz / .pb) or {' '.join(offs)}")
        # bfloat16 compute needs no loss scaling; weights, output layers and losses stay float32.
        keras.config.set_dtype_policy("mixed_bfloat16" if config["mixed_precision"] else "float32")

    def start(self, model, counter, res, augment=False, pairs=False):
        """Resume the model from the run's backup, open the data stream at the step reached
        (`counter`: the optimizer counting steps; pairs: two batches a step), read its first
        batch (before anything is written), then write the directory. -> (stream, first)."""
        config, batch_size = self.config, self.config["batch_size"]
        self.steps_done = lambda: int(counter.iterations.numpy())
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3's fit reduces train_step's outputs there with strategy.reduce(MEAN, axis=0),
            # which fails on scalars: hand it 1-element vectors.
            step = model.train_step
            model.train_step = lambda batch: {k: tf.reshape(v, [1]) for k, v in step(batch).items()}
        backup = os.path.join(self.dir, "checkpoint.weights.h5")
        if os.path.exists(backup) and not config["overwrite"]:
            try:
                model.load_weights(backup)
            except Exception as error:  # h5py and Keras raise many types for a damaged file
                fail(f"cannot resume from {backup} ({first_line(error)}); move it away to "
                     "start afresh")
            print(f"Resuming {self.dir} from step {self.steps_done()}.")
        try:
            stream = data.make_dataset(config["dataset"], res, batch_size * (1 + pairs),
                                       config["data_dir"], config["seed"], config["painting"],
                                       self.steps_done(), augment=augment)
            if pairs:
                stream = stream.map(lambda x: (x[:batch_size], x[batch_size:]))
            first = next(iter(stream))
        except data.DataError as error:
            fail(first_line(error))
        except StopIteration:  # an empty dataset, e.g. every file unreadable
            fail(f"no readable images in {config['data_dir'] or 'TFDS ' + config['dataset']}")
        if self.chief:
            self.create_directory()
        return stream, np.asarray(first[0] if pairs else first)

    def create_directory(self):
        """The run directory (emptied of a run's artifacts with --overwrite) and flags.json."""
        try:  # in a directory we cannot write to, the first write or removal fails
            os.makedirs(self.dir, exist_ok=True)
            for name in os.listdir(self.dir) if self.config["overwrite"] else ():
                if name in ARTIFACTS or name.endswith((".png", ".keras")):
                    path = os.path.join(self.dir, name)
                    tf.io.gfile.rmtree(path) if os.path.isdir(path) else os.remove(path)
            write_atomically(os.path.join(self.dir, "flags.json"), lambda path: pathlib.Path(
                path).write_text(json.dumps(self.config, indent=2)))
        except OSError as error:
            fail(f"cannot write to --out_dir {self.dir} ({error.strerror})")

    def save(self, model, name):  # atomically
        write_atomically(os.path.join(self.dir, name), model.save)

    def fit(self, model, stream, log_pictures, generate_fn=None, classifier_path=None):
        """Train from the restored step to --steps in one Keras fit; a non-finite loss stops
        it with one line. With --fid_every, generate_fn(n) (images in [0, 1]) is scored."""
        config, self.log_pictures = self.config, log_pictures
        self.bad_step, self.last_backup = None, self.steps_done() or None
        callbacks = [self]
        if config["fid_every"] and self.chief:
            try:
                callbacks.append(self.fid_curve(generate_fn, classifier_path))
            except (OSError, ValueError, RuntimeError) as error:  # DataError: a ValueError
                fail(f"--fid_every: {first_line(error)}")
        model.steps_per_execution = config["steps_per_execution"]
        if self.steps_done() < config["steps"]:
            model.fit(stream, epochs=1, steps_per_epoch=config["steps"] - self.steps_done(),
                      callbacks=callbacks, shuffle=False, verbose=0)
        if self.bad_step is not None:
            backup = os.path.join(self.dir, "checkpoint.weights.h5")
            kept = (f"the last good backup, step {self.last_backup}, is kept in {backup}"
                    if self.last_backup else "no good backup was written")
            fail(f"the loss or the weights became NaN or infinite at step {self.bad_step}; "
                 f"training stopped and {kept}")
        print(f"Done: {self.steps_done()} of {config['steps']} steps in {self.dir}.", flush=True)

    def fid_curve(self, generate_fn, classifier_path):
        """The metrics.FIDCurve of --fid_every in evaluate's features (the factor classifier
        at --fid_classifier or classifier_path, trained if absent; else Inception)."""
        config, path = self.config, self.config["fid_classifier"] or classifier_path
        source = (config["dataset"], config["data_dir"], config["painting"])
        print(f"FID every {config['fid_every']} steps on {config['fid_samples']:,} samples:")
        if data.has_ground_truth(source[0]) and os.path.isfile(path):  # used as it is
            features_fn = metrics.classifier_features_fn(
                keras.models.load_model(path, compile=False))
        else:
            features_fn = metrics.fid_feature_network(
                source, path, 5000, 0, config["inception_weights"], print, data)[0]
        real = data.make_dataset(source[0], config["res"], 100, source[1], config["seed"] + 7,
                                 source[2])
        return metrics.FIDCurve(config["fid_every"], generate_fn, features_fn,
                                metrics.real_statistics(real, features_fn, config["fid_samples"]),
                                config["fid_samples"], os.path.join(self.dir, "fid_curve.csv"),
                                os.path.join(self.dir, "logs"), self.steps_done())

    def on_train_begin(self, logs=None):
        self.start_time = self.last_print = time.monotonic()
        self.start_step = self.steps_done()
        self.writer = self.chief and tf.summary.create_file_writer(os.path.join(self.dir, "logs"))

    def on_train_batch_end(self, batch, logs=None):
        # batch: the last step of this execution within this fit (no round trip to the device)
        step, config = self.start_step + batch + 1, self.config
        logs = {name: float(np.mean(value)) for name, value in (logs or {}).items()}
        if not all(np.isfinite(value) for value in logs.values()):
            return self.stop(step)
        end = step >= config["steps"]
        self.model.stop_training |= end
        if end or step % config["log_every"] == 0:
            if self.backup(step):
                self.log(step, logs)
        elif step % config["backup_every"] == 0:
            self.backup(step)
        elif time.monotonic() - self.last_print >= 30:
            self.print_progress(step)

    def print_progress(self, step, losses=""):
        """`step 1200/300000[: losses] (0.4%, 4.12 steps/s, 4m53s so far, ETA 20h16m)`"""
        self.last_print = now = time.monotonic()
        steps = self.config["steps"]
        rate = (step - self.start_step) / max(now - self.start_time, 1e-9)
        eta = duration((steps - step) / rate) if rate > 0 else "?"
        print(f"step {step}/{steps}{losses} ({100 * step / steps:.1f}%, {rate:.3g} steps/s, "
              f"{duration(now - self.start_time)} so far, ETA {eta})", flush=True)

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
            write_atomically(os.path.join(self.dir, name + ".png"),
                             lambda path: tf.io.write_file(path, tf.io.encode_png(grid)))

    def backup(self, step):
        """Write the whole training state atomically, unless a weight is no longer finite."""
        if not all(np.isfinite(w).all() for w in self.model.get_weights()):
            return self.stop(step)
        if self.chief:
            write_atomically(os.path.join(self.dir, "checkpoint.weights.h5"),
                             self.model.save_weights)
        self.last_backup = step
        return True

    def stop(self, step):
        self.bad_step = self.bad_step or step
        self.model.stop_training = True
        return False

    def evaluate(self, vae_run=None):
        """The finished run's metrics.json (a stage-2 run's scored with its stage-1 run vae_run)."""
        config = self.config
        if not config["evaluate"] or not self.chief:
            return
        num_samples = config["eval_samples"] or min(50_000, max(1_000, 5 * config["steps"]))
        runs = (vae_run, self.dir) if vae_run else (self.dir,)
        print("Evaluation follows. Skip it with --noevaluate, shrink it with --eval_samples=N, "
              f"or run it later: python benchmarks/evaluate.py --vae={runs[0]}"
              + (f" --idgan={self.dir}" if vae_run else "") + f" --num_samples={num_samples}",
              flush=True)
        try:
            results = self.score(*runs, num_samples=num_samples,
                                 inception_weights=config["inception_weights"])
        except (OSError, ValueError, RuntimeError) as error:
            fail(f"training finished but evaluation failed: {first_line(error)}")
        print("Metrics (metrics.json):\n" + "\n".join(f"  {k}: {v}" for k, v in results.items()))

    def score(self, *runs, **options):
        """metrics.evaluate of the run directories on data.py's datasets."""
        return metrics.evaluate(*runs, datasets=data, **options)


def read_flags_file(path):
    """A run's flags.json as a dict, or one line saying what is wrong with the file."""
    try:
        saved = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError
        fail(f"{path} is not a readable run description ({first_line(error)}); "
             "restore it, or move the run away")
    if not isinstance(saved, dict):
        fail(f"{path} is not a readable run description (not a JSON object)")
    return saved


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
