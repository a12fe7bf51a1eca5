"""Train one of the paper's comparison systems (benchmarks/baselines.py) into a run directory.

    python benchmarks/train_baseline.py --system=infogan                     # sprites, 64 px
    python benchmarks/train_baseline.py --system=vae_gan
    python benchmarks/train_baseline.py --system=end_to_end
    python benchmarks/train_baseline.py --system=cgan --vae=runs/vae_sprites
    python benchmarks/train_baseline.py --system=infogan --dataset=celeba --data_dir=/data/img_align_celeba

The run directory is like train_idgan.py's (flags.json, checkpoint.weights.h5, logs/, picture
grids; the same command resumes it) and holds generator.keras (inputs [z, c], images in
[-1, 1]: the moving-average generator, or VAE-GAN's decoder), encoder.keras where the system
learns one (InfoGAN's Q head, the VAE encoder of vae_gan and end_to_end: images in [0, 1] ->
concat([mu, logvar])) and decoder.keras (vae_gan, end_to_end). metrics.py scores it,
`python benchmarks/evaluate.py --vae=RUN --idgan=RUN` (cgan: --vae=its stage-1 run). Defaults
are the published ID-GAN / beta-VAE settings for the dataset (README), the nets Table A.3's on the
sprites family and the ResNets elsewhere; the run harness is train_vae.py's.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402
import keras  # noqa: E402

import baselines  # noqa: E402
import data  # noqa: E402
import evaluate  # noqa: E402 (benchmarks/evaluate.py)
import idgan  # noqa: E402
import metrics  # noqa: E402
import train_idgan  # noqa: E402
import vae  # noqa: E402
from train_vae import (  # noqa: E402
    Run, define_shared_flags, fail, is_resolution, make_strategy, parse_flags, published,
    script_flags)

FLAGS = flags.FLAGS
SYSTEMS = ("infogan", "vae_gan", "end_to_end", "cgan")
GANS = ("infogan", "end_to_end", "cgan")  # systems with ID-GAN's generator
# Flags only some systems use: given to another, they are refused.
ONLY = dict(vae=("cgan",), c_dim=("infogan", "vae_gan", "end_to_end"), nuisance_dim=GANS,
            info_weight=("infogan",), code_prior=("infogan",), distill_weight=("end_to_end",),
            beta=("vae_gan", "end_to_end"), decoder=("vae_gan", "end_to_end"),
            lr=("vae_gan", "end_to_end"), adversarial_weight=("vae_gan",), g_lr=GANS, ema=GANS)


def define_flags():
    flags.DEFINE_enum("system", None, SYSTEMS, "The comparison system to train.")
    flags.DEFINE_string("vae", None, "cgan: the stage-1 run directory (or encoder.keras) whose "
                        "frozen encoder gives c, as for train_idgan.py.")
    flags.DEFINE_enum("dataset", None, data.DATASETS, "Training data (default: sprites; "
                      "cgan: stage 1's).")
    flags.DEFINE_string("data_dir", None, "As for train_vae.py.")
    flags.DEFINE_string("painting", None, "As for train_vae.py.")
    flags.DEFINE_integer("res", None, "Resolution (default: 64; cgan: the encoder's).")
    flags.DEFINE_enum("arch", None, ["conv", "resnet"],
                      "GAN nets: conv (Table A.3) for the sprites family, else resnet.")
    flags.DEFINE_integer("nf", None, "ResNet base width (default 64; 16 at 1024 px).")
    flags.DEFINE_integer("nf_max", 512, "ResNet maximum width.")
    flags.DEFINE_integer("c_dim", None, "Code dimensions (default: 10 sprites, 20 natural).")
    flags.DEFINE_integer("nuisance_dim", None, "z dimensions (default: 0 sprites, 256 natural).")
    flags.DEFINE_float("info_weight", None, "infogan: lambda on Q's NLL of c, for G and Q "
                       "(default 1; the paper's Figure A.10 sweeps it).")
    flags.DEFINE_enum("code_prior", None, baselines.CODE_PRIORS,
                      "infogan: the prior of c (default uniform, U(-1, 1) as Chen et al.).")
    flags.DEFINE_float("distill_weight", None, "end_to_end: weight of the distillation NLL "
                       "(default: ID-GAN's for the dataset).")
    flags.DEFINE_float("beta", None, "vae_gan, end_to_end: KL weight (default: train_vae.py's).")
    flags.DEFINE_enum("decoder", None, ["bernoulli", "gaussian"], "vae_gan, end_to_end: "
                      "likelihood (default: bernoulli sprites family, gaussian natural).")
    flags.DEFINE_float("lr", None, "vae_gan, end_to_end: Adam lr of the VAE nets (default 1e-4).")
    flags.DEFINE_float("adversarial_weight", None, "vae_gan: weight of the decoder's GAN loss "
                       "against its ELBO (default 1).")
    flags.DEFINE_float("r1", None, "R1 weight, as for train_idgan.py (default 10; 1000 Chairs).")
    flags.DEFINE_float("g_lr", None, "Generator RMSprop lr (default: 1e-3 sprites, 1e-4 natural).")
    flags.DEFINE_float("d_lr", 1e-4, "Discriminator RMSprop lr.")
    flags.DEFINE_float("ema", None, "Decay of the generator's moving average (default 0.999).")
    flags.DEFINE_integer("batch_size", None, "Global batch (default: 64; 24 at 256 px).")
    flags.DEFINE_integer("steps", 300_000, "Training steps.")
    flags.DEFINE_string("out_dir", None, "Run directory (default: runs/<system>_<dataset>_<res>).")
    flags.register_validator("res", is_resolution, "must be a power of two from 32 to 1024")
    for name in ("nf", "nf_max", "c_dim", "lr", "g_lr", "d_lr", "batch_size", "steps"):
        flags.register_validator(name, lambda v: v is None or v > 0, "must be positive")
    for name in ("nuisance_dim", "info_weight", "distill_weight", "beta", "adversarial_weight",
                 "r1"):
        flags.register_validator(name, lambda v: v is None or v >= 0, "must not be negative")
    flags.register_validator("ema", lambda v: v is None or 0 <= v < 1, "must be in [0, 1)")
    define_shared_flags()


def resolved_flags(argv):
    """The flags as a dict, with the stage-1 encoder (cgan) and the dataset's defaults."""
    config = script_flags(argv)
    system = config["system"]
    if system is None:
        fail(f"--system is required: one of {', '.join(SYSTEMS)}")
    for name, systems in ONLY.items():
        if config[name] is not None and system not in systems:
            fail(f"--{name} applies to --system={' or '.join(systems)}, not {system}")
    encoder = None
    if system == "cgan":
        if not config["vae"]:
            fail("--system=cgan needs --vae: a stage-1 run directory or an encoder.keras file")
        encoder, config["c_dim"], stage1 = train_idgan.load_encoder(config["vae"])
        for name in ("dataset", "data_dir", "painting"):
            config[name] = config[name] if config[name] is not None else stage1.get(name)
        if config["dataset"] is None:
            fail("--dataset is required when --vae is a bare encoder file")
        config["res"] = config["res"] or encoder.input_shape[1]
    config["dataset"] = config["dataset"] or "sprites"
    config["res"] = config["res"] or 64
    defaults = dict(published(config["dataset"]), info_weight=1.0,
                    code_prior="uniform", lr=1e-4, adversarial_weight=1.0, ema=0.999)
    defaults.update(train_idgan.defaults(config["dataset"], config["res"]))
    for name, value in defaults.items():  # only the flags this system uses
        if name in config and config[name] is None and system in ONLY.get(name, SYSTEMS):
            config[name] = value
    config["out_dir"] = config["out_dir"] or os.path.join(
        "runs", f"{system}_{config['dataset']}_{config['res']}")
    return config, encoder


def check_flags(config, encoder):
    if encoder is not None:
        if config["res"] < encoder.input_shape[1]:
            fail(f"--res={config['res']} is below the encoder's input size "
                 f"{encoder.input_shape[1]}")
        if encoder.input_shape[-1] != data.num_channels(config["dataset"]):
            fail(f"the encoder takes {encoder.input_shape[-1]} channels but --dataset="
                 f"{config['dataset']} has {data.num_channels(config['dataset'])}")


def build_discriminator(config, channels):
    if config["arch"] == "conv":
        return idgan.build_conv_discriminator(config["res"], channels)
    return idgan.build_resnet_discriminator(config["res"], config["nf"], config["nf_max"],
                                            channels)


def build_generator(config, channels):
    c_dim, nuisance_dim, res = config["c_dim"], config["nuisance_dim"], config["res"]
    if config["arch"] == "conv":
        return idgan.build_conv_generator(c_dim, nuisance_dim, res, channels)
    return idgan.build_resnet_generator(c_dim, nuisance_dim, res, config["nf"],
                                        config["nf_max"], channels)


def build_model(config, channels, encoder):
    """The system's model, compiled with the authors' optimisers (RMSprop for GAN nets,
    Adam for VAE nets), and its step counter."""
    system, c_dim, gan = config["system"], config["c_dim"], dict(r1_weight=config["r1"],
                                                                 seed=config["seed"])
    discriminator = build_discriminator(config, channels)
    if system == "vae_gan":
        model = baselines.VAEGAN(
            vae.build_encoder(c_dim, config["res"], channels),
            vae.build_decoder(c_dim, config["res"], channels), discriminator, config["beta"],
            config["decoder"], config["adversarial_weight"], **gan)
        model.compile(vae.adam(config["lr"]), idgan.rmsprop(config["d_lr"]),
                      jit_compile=config["jit_compile"])
        model(keras.ops.zeros((1, config["res"], config["res"], channels)))
        model.build_optimizers()
        return model, model.optimizer
    generator = build_generator(config, channels)
    gan.update(nuisance_dim=config["nuisance_dim"], c_dim=c_dim, ema_decay=config["ema"])
    optimizers = [idgan.rmsprop(config["g_lr"]), idgan.rmsprop(config["d_lr"])]
    if system == "infogan":
        model = baselines.InfoGAN(
            generator, baselines.build_infogan_discriminator(discriminator, c_dim),
            info_weight=config["info_weight"], code_prior=config["code_prior"], **gan)
    elif system == "cgan":
        model = baselines.CGAN(generator, baselines.build_projection_discriminator(
            discriminator, c_dim), encoder, **gan)
    else:
        model = baselines.EndToEndIDGAN(
            generator, discriminator, vae.build_encoder(c_dim, config["res"], channels),
            vae.build_decoder(c_dim, config["res"], channels), beta=config["beta"],
            likelihood=config["decoder"], distill_weight=config["distill_weight"], **gan)
        optimizers.append(vae.adam(config["lr"]))
    model.compile(*optimizers, jit_compile=config["jit_compile"])
    return model, model.g_optimizer


class BaselineRun(Run):
    """train_vae.Run scoring as benchmarks/evaluate.py does: InfoGAN's c from its prior."""

    def score(self, *runs, **options):
        return evaluate.evaluate(*runs, **options)


def sampler(generator, encoder, config):
    """train_idgan.sampler's generate(n) for --fid_every, InfoGAN's c from its prior."""
    real = data.make_dataset(config["dataset"], config["res"], 100, config["data_dir"],
                             config["seed"] + 1, config["painting"])
    codes_fn = baselines.prior_codes_fn(config.get("code_prior"), config["c_dim"])
    return metrics.generator_sampler(generator, encoder, iter(real),
                                     np.random.default_rng(config["seed"]), codes_fn,
                                     chunk=config["batch_size"])


def main(argv):
    strategy = make_strategy(FLAGS.strategy)
    with strategy.scope():
        config, encoder = resolved_flags(argv)
    vae_run = config["vae"] if config["system"] == "cgan" else None  # else the run itself
    if vae_run and config["evaluate"]:  # scored with its stage-1 run's decoder
        train_idgan.load_decoder(vae_run, encoder, config["c_dim"])
    run = BaselineRun(config, strategy, evaluated=not vae_run or os.path.isfile(
        os.path.join(vae_run, "encoder.keras")))
    check_flags(config, encoder)
    channels = data.num_channels(config["dataset"])
    with strategy.scope():
        keras.utils.set_random_seed(config["seed"])
        model, counter = build_model(config, channels, encoder)
    stream, real = run.start(model, counter, config["res"], augment=True)

    def log_pictures(step):
        return save_and_draw(model, config, run, real[:8])

    vae_run = vae_run or run.dir
    generator = (baselines.decoder_as_generator(model.decoder) if config["system"] == "vae_gan"
                 else model.generator_ema)
    run.fit(model, stream, log_pictures,
            sampler(generator, model.encoder, config) if config["fid_every"] else None,
            os.path.join(vae_run, "factor_classifier.keras"))
    if os.path.isfile(os.path.join(vae_run, "encoder.keras")):
        run.evaluate(vae_run=vae_run)
    elif config["evaluate"] and run.chief:
        print("No evaluation: metrics.py needs --vae to be a stage-1 run directory.")


def save_and_draw(model, config, run, real):
    """Save the run's models; picture grids as train_idgan.py draws them (c from the current
    encoder's posterior means on a fixed real batch; InfoGAN's samples from its prior), and
    the VAE's reconstructions where there is one."""
    system, c_dim = config["system"], config["c_dim"]
    rng = np.random.default_rng(config["seed"])  # the same z and noise at every log
    if system == "vae_gan":
        generator, encoder, decoder = (baselines.decoder_as_generator(model.decoder),
                                       model.encoder, model.decoder)
    else:
        generator, encoder = model.generator_ema, model.encoder
        decoder = model.vae.decoder if system == "end_to_end" else None
    run.save(generator, "generator.keras")
    if system != "cgan":
        run.save(encoder, "encoder.keras")
    if decoder is not None:
        run.save(vae.image_decoder(decoder), "decoder.keras")
    chunk = config["batch_size"]  # images per network call, as in training
    inputs = train_idgan.picture_inputs(encoder, c_dim, generator.inputs[0].shape[-1], real, rng,
                                        chunk)
    if system == "infogan":  # numpy's draws: the model's noise stream is the checkpoint's
        shape = inputs["sampled_codes"].shape
        inputs["sampled_codes"] = (rng.uniform(-1, 1, shape) if config["code_prior"] == "uniform"
                                   else rng.standard_normal(shape)).astype("float32")
    figure6 = vae.image_decoder(decoder) if system == "end_to_end" else None
    pictures = train_idgan.draw_pictures(generator, figure6, chunk, **inputs)
    if decoder is not None:
        vae_model = model if system == "vae_gan" else model.vae
        both = np.concatenate([real, vae.in_chunks(vae_model, real, chunk)])
        pictures["reconstructions"] = vae.image_grid(both, rows=2)
    return pictures


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
