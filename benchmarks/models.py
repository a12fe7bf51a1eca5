"""The benchmark models, built in one place: `build(case)` is the compiled model of a case and
`batches(case)` the stream its train_step takes. Every script here that trains or times one
of these models builds it with these two functions.

The settings are the authors' for dSprites (1Konny/idgan configs/dsprites.yaml,
gan_training/config.py and gan_training/dvae/solver.py; 1Konny/FactorVAE solver.py) and the
paper's networks (Tables A.2 - A.4), as the README's "Published settings" lists them:

  beta_vae        sprites (1 channel), c 10, beta 8, Bernoulli decoder, PyTorch's Adam 1e-4,
                  betas (0.9, 0.999).
  factor_vae      the same VAE with gamma 35 and the 6 x 1000 TC discriminator, its Adam 1e-4,
                  betas (0.5, 0.9). Each step takes two batches, (vae_images, permuted_images).
  idgan_conv      sprites, Table A.3 conv nets, c 10, no z, PyTorch's RMSprop G 1e-3 / D 1e-4.
  idgan_resnet64  color_sprites (RGB), the ResNets of Mescheder et al. (the authors'
                  resnet3.py) at nf (the paper's 64 by default), nf_max 512, c 20, z 256,
                  RMSprop G 1e-4 / D 1e-4.

Both ID-GANs: R1 10, distillation weight 1e-4, EMA 0.999, on a fresh (untrained) stage-1
encoder unless given one. `res` is the image size of every case (64: the "64" of
idgan_resnet64); `dataset` changes the data and so the channel count.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

import data  # noqa: E402
import idgan  # noqa: E402
import vae  # noqa: E402

CASES = ("beta_vae", "factor_vae", "idgan_conv", "idgan_resnet64")
DATASET = dict(beta_vae="sprites", factor_vae="sprites", idgan_conv="sprites",
               idgan_resnet64="color_sprites")
C_DIM = dict(beta_vae=10, factor_vae=10, idgan_conv=10, idgan_resnet64=20)
NUISANCE_DIM = dict(idgan_conv=0, idgan_resnet64=256)
BETA, GAMMA, VAE_LR = 8.0, 35.0, 1e-4
G_LR, D_LR = dict(idgan_conv=1e-3, idgan_resnet64=1e-4), 1e-4
R1_WEIGHT, DISTILL_WEIGHT, EMA_DECAY = 10.0, 1e-4, 0.999


def check_case(case):
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; choose from {', '.join(CASES)}")


def build(case, res=64, dataset=None, *, nf=64, init="authors", seed=None, encoder=None,
          gan_optimizer=idgan.rmsprop, jit_compile=False):
    """The compiled model of `case`, its optimizers' slots built (so a backup holds them).

    nf: the ResNets' base width (idgan_resnet64). init: "authors" or "keras", of every network
    built here. encoder: the ID-GANs' stage-1 encoder (default: a fresh one). gan_optimizer:
    learning rate -> optimizer of G and D (default PyTorch's RMSprop, idgan.rmsprop).
    """
    check_case(case)
    channels = data.num_channels(dataset or DATASET[case])
    c_dim = C_DIM[case]
    if case in ("beta_vae", "factor_vae"):
        encoder = vae.build_encoder(c_dim, res, channels, init=init)
        decoder = vae.build_decoder(c_dim, res, channels, init=init)
        optimizer = vae.adam(VAE_LR)
        if case == "beta_vae":
            model = vae.BetaVAE(encoder, decoder, beta=BETA, likelihood="bernoulli", seed=seed)
            model.compile(optimizer, jit_compile=jit_compile)
        else:
            tc = vae.build_tc_discriminator(c_dim, init=init)
            model = vae.FactorVAE(encoder, decoder, tc, gamma=GAMMA, likelihood="bernoulli",
                                  seed=seed)
            tc_optimizer = vae.tc_optimizer()
            model.compile(optimizer, tc_optimizer, jit_compile=jit_compile)
            tc_optimizer.build(tc.trainable_weights)
        optimizer.build(encoder.trainable_weights + decoder.trainable_weights)
        return model

    nuisance_dim = NUISANCE_DIM[case]
    if case == "idgan_conv":
        generator = idgan.build_conv_generator(c_dim, nuisance_dim, res, channels, init=init)
        discriminator = idgan.build_conv_discriminator(res, channels, init=init)
    else:
        generator = idgan.build_resnet_generator(c_dim, nuisance_dim, res, nf=nf,
                                                 channels=channels, init=init)
        discriminator = idgan.build_resnet_discriminator(res, nf=nf, channels=channels,
                                                         init=init)
    if encoder is None:
        encoder = vae.build_encoder(c_dim, res, channels, init=init)
    model = idgan.IDGAN(generator, discriminator, encoder, nuisance_dim=nuisance_dim,
                        c_dim=c_dim, distill_weight=DISTILL_WEIGHT, r1_weight=R1_WEIGHT,
                        ema_decay=EMA_DECAY, seed=seed)
    g_optimizer, d_optimizer = gan_optimizer(G_LR[case]), gan_optimizer(D_LR)
    model.compile(g_optimizer, d_optimizer, jit_compile=jit_compile)
    g_optimizer.build(generator.trainable_weights)
    d_optimizer.build(discriminator.trainable_weights)
    return model


def batches(case, batch_size=64, res=64, dataset=None, seed=0, images=None):
    """What `case`'s train_step takes, endlessly: batches of data.make_dataset(dataset, default
    the case's), or with `images` that one in-memory batch again and again (tf.data's
    autotuner off in both, as in data.make_dataset). factor_vae: pairs (vae_images,
    permuted_images) of batch_size each, two independent batches of the stream, or `images`
    and the same images in reverse order."""
    check_case(case)
    factor = case == "factor_vae"
    if images is not None:
        single = (images, images[::-1]) if factor else images
        return data.without_autotuning(tf.data.Dataset.from_tensors(single).repeat())
    stream = data.make_dataset(dataset or DATASET[case], res, batch_size * (2 if factor else 1),
                               seed=seed)
    if factor:  # one shuffled batch of 2 x batch_size, split in two
        return stream.map(lambda x: (x[:batch_size], x[batch_size:]))
    return stream
