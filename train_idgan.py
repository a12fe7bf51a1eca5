"""Stage 2: train the ID-GAN generator on a frozen stage-1 encoder.

    python train_idgan.py --vae=runs/vae_sprites                 # sprites, 64 px, conv nets
    python train_idgan.py --vae=runs/vae_celeba --res=256        # ResNet nets, 256 px

--vae is a stage-1 run directory or any encoder.keras (images in [0, 1] -> concat([mu,
logvar])). The run directory holds generator.keras (the moving-average generator: inputs
[z, c], images in [-1, 1]), checkpoint.weights.h5, flags.json, TensorBoard logs and picture
grids: samples, traversals (one row per c dimension, z fixed), figure7 (rows share c,
columns share z) and figure6 (VAE decoder above, generator below, same c). Running the same
command again resumes. Defaults are the published settings of the dataset (train_vae.py's
PUBLISHED; README "Published settings").
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402
import keras  # noqa: E402

import data  # noqa: E402
import idgan  # noqa: E402
import metrics  # noqa: E402
from train_vae import (  # noqa: E402
    Run, define_shared_flags, fail, first_line, is_resolution, make_strategy, parse_flags,
    published, read_flags_file, script_flags)
from vae import image_grid, in_chunks  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("vae", None, "Stage-1 run directory or encoder.keras file.")
    flags.DEFINE_integer("res", None, "GAN resolution (default: the encoder's).")
    flags.DEFINE_enum("dataset", None, data.DATASETS, "Training data (default: stage 1's).")
    flags.DEFINE_string("data_dir", None, "As for train_vae.py (default: stage 1's).")
    flags.DEFINE_string("painting", None, "As for train_vae.py (default: stage 1's).")
    flags.DEFINE_enum("arch", None, ["conv", "resnet"],
                      "Networks: conv (Table A.3) for the sprites family, else resnet.")
    flags.DEFINE_integer("nf", None, "ResNet base width (default 64; 16 at 1024 px).",
                         lower_bound=1)
    flags.DEFINE_integer("nf_max", 512, "ResNet maximum width.", lower_bound=1)
    flags.DEFINE_integer("nuisance_dim", None, "z dimensions (default: published).",
                         lower_bound=0)
    flags.DEFINE_bool("use_codes", True, "Feed c to G; --nouse_codes is the plain GAN baseline.")
    flags.DEFINE_float("distill_weight", None, "Weight of the distillation NLL; 0 is the "
                       "paper's w/o distill (default: published).", lower_bound=0)
    flags.DEFINE_float("r1", None, "R1 weight on ||grad D(x_real)||^2, no 1/2 factor "
                       "(default: published).", lower_bound=0)
    flags.DEFINE_float("g_lr", None, "Generator lr (default: published); PyTorch's RMSprop, "
                       "alpha 0.99, eps 1e-8.")
    flags.DEFINE_float("d_lr", 1e-4, "Discriminator lr (PyTorch's RMSprop, as --g_lr).")
    flags.DEFINE_float("ema", 0.999, "Decay of the generator's moving average, in [0, 1).")
    flags.DEFINE_bool("vdb", None, "Variational discriminator bottleneck (default: at 1024 px).")
    flags.DEFINE_integer("batch_size", None, "Global batch (default: 64; 24 at 256 px; 8 at "
                         "1024).", lower_bound=1)
    flags.DEFINE_integer("steps", 300_000, "Training steps.", lower_bound=1)
    flags.DEFINE_string("out_dir", None, "Run directory (default: runs/idgan_<dataset>_<res>).")
    flags.register_validator("res", is_resolution, "must be a power of two from 32 to 1024")
    for name in ("g_lr", "d_lr"):
        flags.register_validator(name, lambda v: v is None or v > 0, "must be positive")
    flags.register_validator("ema", lambda v: 0 <= v < 1, "must be in [0, 1)")
    define_shared_flags()


def load_model(path):
    """The Keras model in a file of --vae, or one line saying why it does not load."""
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a file it cannot read
        fail(f"--vae {path} is not a loadable Keras model ({first_line(error)[:200]})")


def load_encoder(vae):
    """The encoder, c_dim and the stage-1 run's flags ({} for a bare encoder file)."""
    path, stage1 = vae, {}
    if os.path.isdir(vae):
        path = os.path.join(vae, "encoder.keras")
        if os.path.exists(os.path.join(vae, "flags.json")):
            stage1 = read_flags_file(os.path.join(vae, "flags.json"))
    if not os.path.isfile(path):
        fail(f"--vae {vae} is neither a stage-1 run directory nor an encoder.keras file")
    encoder = load_model(path)
    if len(encoder.inputs) != 1 or len(encoder.input_shape) != 4 or len(encoder.outputs) != 1:
        fail(f"--vae {path} is not an encoder: it must map images (h, w, channels) to one "
             "tensor concat([mu, logvar])")
    width = encoder.output_shape[-1]
    c_dim = stage1.get("c_dim", width // 2)
    if len(encoder.output_shape) != 2 or width != 2 * c_dim:
        fail(f"--vae {path} returns {encoder.output_shape[1:]} values, not 2 x c_dim = "
             f"{2 * c_dim} (mu and logvar)")
    return encoder, c_dim, stage1


def load_decoder(vae, encoder, c_dim):
    """The stage-1 run's decoder.keras (figure6, the evaluation's VAE samples), checked
    against the encoder: c_dim codes to its images. None for a bare encoder file."""
    path = os.path.join(vae, "decoder.keras")
    if not os.path.isfile(path):
        return None
    decoder, images = load_model(path), encoder.input_shape[1:]
    if decoder.input_shape[1:] != (c_dim,) or decoder.output_shape[1:] != images:
        fail(f"--vae {path} does not fit the encoder: it maps {decoder.input_shape[1:]} to "
             f"{decoder.output_shape[1:]}, not ({c_dim},) codes to {images} images")
    return decoder


def defaults(dataset, res):
    """The authors' stage-2 settings (README "Published settings"; configs/*.yaml): the
    dataset's, and what depends on the resolution."""
    settings = published(dataset)
    return dict(arch="conv" if data.has_ground_truth(dataset) else "resnet",
                nf=16 if res >= 1024 else 64, vdb=res >= 1024,
                batch_size=64 if res <= 128 else 24 if res <= 512 else 8,
                **{k: settings[k] for k in ("nuisance_dim", "distill_weight", "r1", "g_lr")})


def resolved_flags(argv, encoder, stage1):
    """The flags as a dict, unset ones taken from stage 1 or the published settings."""
    config = script_flags(argv)
    config["dataset"] = config["dataset"] or stage1.get("dataset")
    if config["dataset"] == stage1.get("dataset"):  # stage 1's data, unless another dataset
        for name in ("data_dir", "painting"):
            config[name] = config[name] or stage1.get(name)
    if config["dataset"] is None:
        fail("--dataset is required when --vae is a bare encoder file")
    config["res"] = config["res"] or encoder.input_shape[1]
    for name, value in defaults(config["dataset"], config["res"]).items():
        if config[name] is None:
            config[name] = value
    config["out_dir"] = config["out_dir"] or os.path.join(
        "runs", f"idgan_{config['dataset']}_{config['res']}")
    return config


def check_flags(config, encoder):
    if config["res"] < encoder.input_shape[1]:
        fail(f"--res={config['res']} is below the encoder's input size {encoder.input_shape[1]}")
    if not config["use_codes"] and config["nuisance_dim"] == 0:
        fail("--nouse_codes (the plain GAN) needs --nuisance_dim > 0")
    channels = data.num_channels(config["dataset"])
    if encoder.input_shape[-1] != channels:
        fail(f"the encoder takes {encoder.input_shape[-1]} channels but --dataset="
             f"{config['dataset']} has {channels}")


def build_networks(config, c_dim, channels):
    res, nuisance_dim = config["res"], config["nuisance_dim"]
    if config["arch"] == "conv":
        return (idgan.build_conv_generator(c_dim, nuisance_dim, res, channels),
                idgan.build_conv_discriminator(res, channels))
    widths = dict(nf=config["nf"], nf_max=config["nf_max"], channels=channels)
    return (idgan.build_resnet_generator(c_dim, nuisance_dim, res, **widths),
            idgan.build_resnet_discriminator(res, vdb=config["vdb"], **widths))


def main(argv):
    if not FLAGS.vae:
        fail("--vae is required: a stage-1 run directory or an encoder.keras file")
    strategy = make_strategy(FLAGS.strategy)
    with strategy.scope():
        encoder, c_dim, stage1 = load_encoder(FLAGS.vae)
    config = resolved_flags(argv, encoder, stage1)
    decoder = load_decoder(config["vae"], encoder, c_dim)
    run = Run(config, strategy, evaluated=decoder is not None)
    check_flags(config, encoder)
    c_dim = c_dim if config["use_codes"] else 0

    with strategy.scope():
        keras.utils.set_random_seed(config["seed"])
        generator, discriminator = build_networks(config, c_dim, data.num_channels(config["dataset"]))
        model = idgan.IDGAN(
            generator, discriminator, encoder if c_dim else None,
            nuisance_dim=config["nuisance_dim"], c_dim=c_dim,
            distill_weight=config["distill_weight"], r1_weight=config["r1"],
            ema_decay=config["ema"], vdb_target=0.1 if config["vdb"] else None,
            seed=config["seed"])
        model.compile(idgan.rmsprop(config["g_lr"]), idgan.rmsprop(config["d_lr"]),
                      jit_compile=config["jit_compile"])
    # Natural images get the authors' random flip and dequantisation noise (inputs.py);
    # the sprites family is fed as it is.
    stream, real = run.start(model, model.g_optimizer, config["res"], augment=True)
    chunk = config["batch_size"]  # the grids' images go through the networks a batch at a time
    pictures = picture_inputs(encoder, c_dim, config["nuisance_dim"], real[:8],
                              np.random.default_rng(config["seed"]), chunk)

    def log_pictures(step):
        run.save(model.generator_ema, "generator.keras")
        return draw_pictures(model.generator_ema, decoder, chunk, **pictures)

    run.fit(model, stream, log_pictures,
            sampler(model.generator_ema, encoder, config) if config["fid_every"] else None,
            os.path.join(config["vae"], "factor_classifier.keras"))
    if decoder is not None:
        run.evaluate(vae_run=config["vae"])
    elif config["evaluate"] and run.chief:
        print("No evaluation: metrics.py needs --vae to be a stage-1 run directory.")


def sampler(generator, encoder, config):
    """generate(n) -> n images in [0, 1] of the (moving-average) generator for --fid_every,
    c from the encoder on a real stream of its own, as in training; G sees a training batch
    at a time."""
    real = data.make_dataset(config["dataset"], config["res"], 100, config["data_dir"],
                             config["seed"] + 1, config["painting"])
    return metrics.generator_sampler(generator, encoder, iter(real),
                                     np.random.default_rng(config["seed"]),
                                     chunk=config["batch_size"])


# ---------------------------------------------------------------------------------------
# Picture grids. Codes come from the encoder's posterior means on a fixed real batch. The
# networks see at most `chunk` images per call (vae.in_chunks): the training batch's memory.


def picture_inputs(encoder, c_dim, nuisance_dim, real, rng, chunk, columns=8):
    """Fixed inputs for the grids: posterior means of the real batch (`codes`), and
    columns^2 samples of q(c) (`sampled_codes`) and of z."""
    count = columns * columns
    codes, sampled = np.zeros((len(real), 0), "float32"), np.zeros((count, 0), "float32")
    if c_dim:
        stats = in_chunks(encoder, idgan.encoder_view(real, encoder.input_shape[1:3]), chunk)
        codes, logvar = stats[:, :c_dim], stats[:, c_dim:]
        pick = np.arange(count) % len(real)
        noise = rng.standard_normal((count, c_dim)).astype("float32")
        sampled = codes[pick] + np.exp(logvar[pick] / 2) * noise
    z = rng.standard_normal((count, nuisance_dim)).astype("float32")
    return dict(codes=codes, sampled_codes=sampled, z=z, columns=columns)


def draw_pictures(generator, decoder, chunk, codes, sampled_codes, z, columns):
    """samples, traversals, figure7 and (with a stage-1 decoder) figure6 grids."""
    generate = lambda noise, c: (in_chunks(generator, [noise, c], chunk) + 1.0) / 2.0  # noqa: E731
    n, c_dim = codes.shape
    pictures = {"samples": image_grid(generate(z, sampled_codes), rows=columns)}
    if c_dim == 0:
        return pictures
    # Figure 7: row i shares c_i, column j shares z_j.
    rows = min(n, columns)
    grid_codes = np.repeat(codes[:rows], columns, axis=0)
    grid_z = np.tile(z[:columns], (rows, 1))
    pictures["figure7"] = image_grid(generate(grid_z, grid_codes), rows=rows)
    # Traversals: dimension i of the first code swept over [-2.5, 2.5], z fixed.
    values = np.linspace(-2.5, 2.5, columns, dtype="float32")
    swept = np.repeat(codes[:1], c_dim * columns, axis=0)
    swept[np.arange(len(swept)), np.repeat(np.arange(c_dim), columns)] = np.tile(values, c_dim)
    fixed_z = np.repeat(z[:1], len(swept), axis=0)
    pictures["traversals"] = image_grid(generate(fixed_z, swept), rows=c_dim)
    if decoder is not None:  # Figure 6: the VAE decoder above, the generator below, same c
        fakes = generate(z[:n], codes)
        decoded = keras.ops.image.resize(in_chunks(decoder, codes, chunk), fakes.shape[1:3],
                                         "nearest")
        pictures["figure6"] = image_grid(np.concatenate([decoded, fakes]), rows=2)
    return pictures


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
