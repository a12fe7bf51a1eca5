"""Stage 2: train the ID-GAN generator on a frozen stage-1 encoder.

    python train_idgan.py --vae=runs/sprites_vae                 # sprites, 64 px, conv nets
    python train_idgan.py --vae=runs/celeba_vae --res=256        # ResNet nets, 256 px

--vae is a stage-1 run directory or any encoder.keras (images in [0, 1] -> concat([mu,
logvar])). The run directory holds generator.keras (the moving-average generator: inputs
[z, c], images in [-1, 1]), checkpoint.weights.h5, flags.json, TensorBoard logs and picture
grids: samples, traversals (one row per c dimension, z fixed), figure7 (rows share c,
columns share z) and figure6 (VAE decoder above, generator below, same c). Running the same
command again resumes. Defaults follow SPEC.md's published settings for the dataset.
"""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402
import keras  # noqa: E402

import data  # noqa: E402
import idgan  # noqa: E402
from train_vae import (  # noqa: E402
    RESUMABLE, adapt_to_strategy, check_jit_compile, check_nonnegative, check_paths,
    check_positive, check_resolution, check_run_dir, create_run_dir, define_shared_flags,
    evaluate, fail, fit_resumable, flag_values, image_grid, is_chief, load_dataset,
    make_strategy, parse_flags, save_model, set_precision, write_flags)

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("vae", None, "Stage-1 run directory or encoder.keras file.")
    flags.DEFINE_integer("res", None, "GAN resolution (default: the encoder's).")
    flags.DEFINE_enum("dataset", None, data.DATASETS, "Training data (default: stage 1's).")
    flags.DEFINE_string("data_dir", None, "As for train_vae.py (default: stage 1's).")
    flags.DEFINE_string("painting", None, "As for train_vae.py (default: stage 1's).")
    flags.DEFINE_enum("arch", None, ["conv", "resnet"],
                      "Networks: conv (Table A.3) for the sprites family, else resnet.")
    flags.DEFINE_integer("nf", None, "ResNet base width (default 64; 16 at 1024 px).")
    flags.DEFINE_integer("nf_max", 512, "ResNet maximum width.")
    flags.DEFINE_integer("nuisance_dim", None, "z dimensions (default: 0 sprites, 256 natural).")
    flags.DEFINE_bool("use_codes", True, "Feed c to G; --nouse_codes is the plain GAN baseline.")
    flags.DEFINE_float("distill_weight", None, "Weight of the distillation NLL (0: w/o distill).")
    flags.DEFINE_float("r1", 10.0, "R1 weight on ||grad D(x_real)||^2 (no 1/2 factor).")
    flags.DEFINE_float("g_lr", None, "Generator RMSprop lr (default: 1e-3 sprites, 1e-4 natural).")
    flags.DEFINE_float("d_lr", 1e-4, "Discriminator RMSprop lr.")
    flags.DEFINE_float("ema", 0.999, "Decay of the generator's moving average.")
    flags.DEFINE_bool("vdb", None, "Variational discriminator bottleneck (default: at 1024 px).")
    flags.DEFINE_integer("batch_size", None, "Global batch (default: 64; 24 at 256 px; 8 at 1024).")
    flags.DEFINE_integer("steps", 300_000, "Training steps.")
    flags.DEFINE_integer("log_every", 1000, "Steps between logs and pictures (an epoch).")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_string("out_dir", None, "Run directory (default: runs/idgan_<dataset>_<res>).")
    flags.DEFINE_bool("overwrite", False, "Replace a run made with different flags.")
    define_shared_flags()


def load_encoder(vae):
    """The encoder, c_dim and the stage-1 run's flags ({} for a bare encoder file)."""
    path, stage1 = vae, {}
    if os.path.isdir(vae):
        path = os.path.join(vae, "encoder.keras")
        if os.path.exists(os.path.join(vae, "flags.json")):
            with open(os.path.join(vae, "flags.json")) as f:
                stage1 = json.load(f)
    if not os.path.isfile(path):
        fail(f"--vae {vae} is neither a stage-1 run directory nor an encoder.keras file")
    try:
        encoder = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a file it cannot read
        fail(f"--vae {path} is not a loadable Keras model ({type(error).__name__})")
    if len(encoder.inputs) != 1 or len(encoder.input_shape) != 4 or len(encoder.outputs) != 1:
        fail(f"--vae {path} is not an encoder: it must map images (h, w, channels) to one "
             "tensor concat([mu, logvar])")
    width = encoder.output_shape[-1]
    c_dim = stage1.get("c_dim", width // 2)
    if len(encoder.output_shape) != 2 or width != 2 * c_dim:
        fail(f"--vae {path} returns {encoder.output_shape[1:]} values, not 2 x c_dim = "
             f"{2 * c_dim} (mu and logvar)")
    return encoder, c_dim, stage1


def resolved_flags(encoder, stage1):
    """The flags as a dict, unset ones taken from stage 1 or SPEC.md's published settings."""
    config = flag_values()
    for name in ("dataset", "data_dir", "painting"):
        if config[name] is None:
            config[name] = stage1.get(name)
    if config["dataset"] is None:
        fail("--dataset is required when --vae is a bare encoder file")
    sprites = data.has_ground_truth(config["dataset"])
    res = config["res"] = config["res"] or encoder.input_shape[1]
    defaults = dict(
        arch="conv" if sprites else "resnet",
        nf=16 if res >= 1024 else 64,
        nuisance_dim=0 if sprites else 256,
        distill_weight=1e-4 if sprites or res >= 1024 or config["dataset"] != "celeba" else 1e-3,
        g_lr=1e-3 if sprites else 1e-4,
        vdb=res >= 1024,
        batch_size=64 if res <= 128 else 24 if res <= 512 else 8)
    for name, value in defaults.items():
        if config[name] is None:
            config[name] = value
    config["out_dir"] = config["out_dir"] or os.path.join(
        "runs", f"idgan_{config['dataset']}_{res}")
    return config


def check_flags(config, encoder):
    check_resolution(config["res"])
    if config["res"] < encoder.input_shape[1]:
        fail(f"--res={config['res']} is below the encoder's input size {encoder.input_shape[1]}")
    check_positive(config, "g_lr", "d_lr", "batch_size", "steps", "log_every", "backup_every",
                   "nf", "nf_max")
    check_nonnegative(config, "distill_weight", "r1", "nuisance_dim")
    if not 0 <= config["ema"] < 1:
        fail(f"--ema={config['ema']} must be in [0, 1)")
    if not config["use_codes"] and config["nuisance_dim"] == 0:
        fail("--nouse_codes (the plain GAN) needs --nuisance_dim > 0")
    channels = data.num_channels(config["dataset"])
    if encoder.input_shape[-1] != channels:
        fail(f"the encoder takes {encoder.input_shape[-1]} channels but --dataset="
             f"{config['dataset']} has {channels}")
    check_paths(config)


def build_networks(config, c_dim, channels):
    res, nuisance_dim = config["res"], config["nuisance_dim"]
    if config["arch"] == "conv":
        return (idgan.build_conv_generator(c_dim, nuisance_dim, res, channels),
                idgan.build_conv_discriminator(res, channels))
    widths = dict(nf=config["nf"], nf_max=config["nf_max"], channels=channels)
    return (idgan.build_resnet_generator(c_dim, nuisance_dim, res, **widths),
            idgan.build_resnet_discriminator(res, vdb=config["vdb"], **widths))


def main(argv):
    del argv
    if not FLAGS.vae:
        fail("--vae is required: a stage-1 run directory or an encoder.keras file")
    strategy = make_strategy(FLAGS.strategy)
    with strategy.scope():
        encoder, c_dim, stage1 = load_encoder(FLAGS.vae)
    config = resolved_flags(encoder, stage1)
    check_flags(config, encoder)
    check_jit_compile(config, strategy)
    check_run_dir(config, RESUMABLE, strategy)
    dataset_from = lambda step: load_dataset(config, config["res"], strategy, step)  # noqa: E731
    real = np.asarray(next(iter(dataset_from(0)))[:8])
    run_dir = create_run_dir(config, strategy)
    c_dim = c_dim if config["use_codes"] else 0
    decoder_path = os.path.join(config["vae"], "decoder.keras")
    decoder = keras.models.load_model(decoder_path) if os.path.isfile(decoder_path) else None

    set_precision(config)
    with strategy.scope():
        keras.utils.set_random_seed(config["seed"])
        generator, discriminator = build_networks(config, c_dim, data.num_channels(config["dataset"]))
        model = idgan.IDGAN(
            generator, discriminator, encoder if c_dim else None,
            nuisance_dim=config["nuisance_dim"], c_dim=c_dim,
            distill_weight=config["distill_weight"], r1_weight=config["r1"],
            ema_decay=config["ema"], vdb_target=0.1 if config["vdb"] else None,
            seed=config["seed"])
        rmsprop = lambda lr: keras.optimizers.RMSprop(lr, rho=0.99, epsilon=1e-8)  # noqa: E731
        model.compile(rmsprop(config["g_lr"]), rmsprop(config["d_lr"]),
                      jit_compile=config["jit_compile"])
    adapt_to_strategy(model, strategy)
    pictures = picture_inputs(encoder, c_dim, config["nuisance_dim"], real,
                              np.random.default_rng(config["seed"]))

    def log_pictures(step):
        save_model(model.generator_ema, os.path.join(run_dir, "generator.keras"))
        return draw_pictures(model.generator_ema, decoder, **pictures)

    write_flags(run_dir, config, strategy)
    fit_resumable(model, dataset_from, config, run_dir, strategy, log_pictures,
                  steps_done=lambda: int(model.g_optimizer.iterations.numpy()))
    if not (config["evaluate"] and is_chief(strategy)):
        return
    if os.path.isfile(decoder_path):
        evaluate(config["vae"], run_dir, num_samples=config["eval_samples"])
    else:
        print("No evaluation: metrics.py needs --vae to be a stage-1 run directory.")


# ---------------------------------------------------------------------------------------
# Picture grids. Codes come from the encoder's posterior means on a fixed real batch.


def picture_inputs(encoder, c_dim, nuisance_dim, real, rng, columns=8):
    """Fixed inputs for the grids: posterior means of the real batch (`codes`), and
    columns^2 samples of q(c) (`sampled_codes`) and of z."""
    count = columns * columns
    codes, sampled = np.zeros((len(real), 0), "float32"), np.zeros((count, 0), "float32")
    if c_dim:
        stats = np.asarray(encoder(idgan.encoder_view(real, encoder.input_shape[1:3])))
        codes, logvar = stats[:, :c_dim], stats[:, c_dim:]
        pick = np.arange(count) % len(real)
        noise = rng.standard_normal((count, c_dim)).astype("float32")
        sampled = codes[pick] + np.exp(logvar[pick] / 2) * noise
    z = rng.standard_normal((count, nuisance_dim)).astype("float32")
    return dict(codes=codes, sampled_codes=sampled, z=z, columns=columns)


def draw_pictures(generator, decoder, codes, sampled_codes, z, columns):
    """samples, traversals, figure7 and (with a stage-1 decoder) figure6 grids."""
    to_unit = lambda images: (np.asarray(images) + 1.0) / 2.0  # noqa: E731
    n, c_dim = codes.shape
    pictures = {"samples": image_grid(to_unit(generator([z, sampled_codes])), rows=columns)}
    if c_dim == 0:
        return pictures
    # Figure 7: row i shares c_i, column j shares z_j.
    rows = min(n, columns)
    grid_codes = np.repeat(codes[:rows], columns, axis=0)
    grid_z = np.tile(z[:columns], (rows, 1))
    pictures["figure7"] = image_grid(to_unit(generator([grid_z, grid_codes])), rows=rows)
    # Traversals: dimension i of the first code swept over [-2.5, 2.5], z fixed.
    values = np.linspace(-2.5, 2.5, columns, dtype="float32")
    swept = np.repeat(codes[:1], c_dim * columns, axis=0)
    swept[np.arange(len(swept)), np.repeat(np.arange(c_dim), columns)] = np.tile(values, c_dim)
    fixed_z = np.repeat(z[:1], len(swept), axis=0)
    pictures["traversals"] = image_grid(to_unit(generator([fixed_z, swept])), rows=c_dim)
    if decoder is not None:  # Figure 6: the VAE decoder above, the generator below, same c
        fakes = to_unit(generator([z[:n], codes]))
        decoded = keras.ops.image.resize(decoder(codes), fakes.shape[1:3], "nearest")
        pictures["figure6"] = image_grid(np.concatenate([decoded, fakes]), rows=2)
    return pictures


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
