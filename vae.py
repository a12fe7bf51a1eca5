"""Stage 1 of ID-GAN: a disentangled encoder from a beta-VAE or a FactorVAE.

The encoder q(c|x) learned here is frozen and handed to stage 2 (`idgan.py`) as a plain
Keras model: images in [0, 1] in, one tensor concat([mu, logvar]) of width 2 * c_dim out.
Equations and settings follow ../shared/SPEC.md ("Stage 1 objectives") and the paper's
Table A.2. This file needs only TensorFlow and Keras: copy it alone if you like.
"""
import math

import tensorflow as tf
import keras
from keras import layers, ops

# ---------------------------------------------------------------------------------------
# Networks (Table A.2). At 64 px: four 4x4 stride-2 convolutions (32, 32, 64, 64) down to
# 4 x 4, then Dense 256. Other powers of two add or drop 64-wide stages. Output layers are
# float32 so that, under a mixed-precision policy, the losses are still computed in float32.


def conv_widths(res):
    stages = int(math.log2(res)) - 2
    return [32, 32, 64, 64, 64, 64, 64, 64, 64][:stages]


def build_encoder(c_dim, res=64, channels=1):
    """q(c|x): images in [0, 1] -> concat([mu, logvar]) of width 2 * c_dim."""
    images = keras.Input((res, res, channels), name="images")
    x = images
    for width in conv_widths(res):
        x = layers.Conv2D(width, 4, strides=2, padding="same", activation="relu")(x)
    x = layers.Dense(256, activation="relu")(layers.Flatten()(x))
    stats = layers.Dense(2 * c_dim, name="mu_logvar", dtype="float32")(x)
    return keras.Model(images, stats, name="encoder")


def build_decoder(c_dim, res=64, channels=1):
    """p(x|c): codes -> pixel logits (Bernoulli) or pre-sigmoid means (Gaussian)."""
    codes = keras.Input((c_dim,), name="c")
    x = layers.Dense(256, activation="relu")(codes)
    x = layers.Dense(4 * 4 * 64, activation="relu")(x)
    x = layers.Reshape((4, 4, 64))(x)
    for width in reversed(conv_widths(res)[:-1]):
        x = layers.Conv2DTranspose(width, 4, strides=2, padding="same", activation="relu")(x)
    logits = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", name="logits",
                                    dtype="float32")(x)
    return keras.Model(codes, logits, name="decoder")


def build_tc_discriminator(c_dim):
    """FactorVAE's D(c): 6 x (Dense 1000, LeakyReLU 0.2), Dense 2 (joint vs permuted)."""
    codes = keras.Input((c_dim,), name="c")
    x = codes
    for _ in range(6):
        x = layers.LeakyReLU(0.2)(layers.Dense(1000)(x))
    return keras.Model(codes, layers.Dense(2, dtype="float32")(x), name="tc_discriminator")


def image_decoder(decoder):
    """The decoder as codes -> images in [0, 1], the form saved for stage 2 and metrics."""
    return keras.Model(decoder.input, layers.Activation("sigmoid", dtype="float32")(decoder.output),
                       name="image_decoder")


# ---------------------------------------------------------------------------------------
# The pieces of the objective, per example (reduced over the batch by the train steps).


def split_stats(stats):
    mu, logvar = ops.split(stats, 2, axis=-1)
    return mu, logvar


def reconstruction_loss(images, logits, likelihood):
    """-log p(x|c) summed over pixels: Bernoulli cross-entropy on logits, or the squared
    error of sigmoid means (the Gaussian decoder, up to constants)."""
    axes = list(range(1, len(images.shape)))
    if likelihood == "bernoulli":
        return ops.sum(ops.binary_crossentropy(images, logits, from_logits=True), axis=axes)
    return ops.sum(ops.square(images - ops.sigmoid(logits)), axis=axes)


def kl_divergence(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over code dimensions."""
    return 0.5 * ops.sum(ops.exp(logvar) + ops.square(mu) - 1.0 - logvar, axis=-1)


def replica_normal(shape, seed):
    """N(0, I) noise for this replica's rows of the global batch. Every replica draws the
    whole global batch's noise and keeps its own rows, so an example's noise does not depend
    on how many replicas (GPUs, workers) share the batch."""
    context = tf.distribute.get_replica_context()
    rows = shape[0]
    noise = keras.random.normal((rows * context.num_replicas_in_sync, *shape[1:]), seed=seed)
    return noise[context.replica_id_in_sync_group * rows:][:rows]


def sample_codes(mu, logvar, seed):
    """The reparameterisation c = mu + exp(logvar / 2) * eps."""
    return mu + ops.exp(0.5 * logvar) * replica_normal(ops.shape(mu), seed)


def permute_dims(codes, seed):
    """Shuffle each code dimension independently across the batch: samples of prod_j q(c_j)."""
    keys = keras.random.uniform(ops.shape(codes), seed=seed)
    order = ops.argsort(keys, axis=0)
    return ops.take_along_axis(codes, order, axis=0)


# ---------------------------------------------------------------------------------------
# beta-VAE: maximise E_q[log p(x|c)] - beta KL(q(c|x) || N(0, I)).


class BetaVAE(keras.Model):
    def __init__(self, encoder, decoder, beta=1.0, likelihood="bernoulli", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.beta = beta
        self.likelihood = likelihood
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.noise_state = self.seed_generator.state  # tracked: backups resume the noise
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    @property
    def vae_weights(self):
        return self.encoder.trainable_weights + self.decoder.trainable_weights

    def call(self, images):
        """Reconstructions in [0, 1] from the posterior means."""
        mu, _ = split_stats(self.encoder(images))
        return ops.sigmoid(self.decoder(mu))

    def elbo_terms(self, images):
        """Per-example reconstruction loss and KL, and the sampled codes."""
        mu, logvar = split_stats(self.encoder(images, training=True))
        codes = sample_codes(mu, logvar, self.seed_generator)
        logits = self.decoder(codes, training=True)
        return reconstruction_loss(images, logits, self.likelihood), kl_divergence(mu, logvar), codes

    def train_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            reconstruction, kl, _ = self.elbo_terms(images)
            loss = reconstruction + self.beta * kl
            # Divide by the *global* batch: MirroredStrategy sums gradients over replicas.
            scaled_loss = tf.nn.compute_average_loss(loss)
        grads = tape.gradient(scaled_loss, self.vae_weights)
        self.optimizer.apply_gradients(zip(grads, self.vae_weights))
        return self.track(loss=loss, reconstruction=reconstruction, kl=kl)

    def track(self, **values):
        trackers = {m.name: m for m in self.metrics}
        for name, value in values.items():
            trackers[name].update_state(value)
        return {m.name: m.result() for m in self.metrics}

    def build_optimizers(self):
        """Create optimizer slots now, so restored checkpoints fill them (see README)."""
        self.optimizer.build(self.vae_weights)


# ---------------------------------------------------------------------------------------
# FactorVAE (Kim & Mnih 2018): the ELBO with beta = 1, minus gamma * TC, with the total
# correlation TC = E_q(c)[log q(c) / prod_j q(c_j)] estimated by a discriminator D that
# tells codes from codes with every dimension permuted across the batch:
#   TC ~= E[logit_joint(c) - logit_permuted(c)].
# Each step splits the batch: even examples feed the VAE, odd ones the permuted samples
# for D, which has its own optimizer. (Interleaving keeps the halves the same under any
# number of replicas.)


class FactorVAE(BetaVAE):
    def __init__(self, encoder, decoder, discriminator, gamma=35.0, likelihood="bernoulli",
                 seed=None, **kwargs):
        super().__init__(encoder, decoder, beta=1.0, likelihood=likelihood, seed=seed, **kwargs)
        self.discriminator = discriminator
        self.gamma = gamma
        self.tc_tracker = keras.metrics.Mean(name="tc")
        self.discriminator_tracker = keras.metrics.Mean(name="d_loss")

    @property
    def metrics(self):
        return super().metrics + [self.tc_tracker, self.discriminator_tracker]

    def compile(self, optimizer, discriminator_optimizer, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.discriminator_optimizer = discriminator_optimizer

    def build_optimizers(self):
        super().build_optimizers()
        self.discriminator_optimizer.build(self.discriminator.trainable_weights)

    def train_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        vae_images, permuted_images = images[0::2], images[1::2]
        with tf.GradientTape() as tape:
            reconstruction, kl, codes = self.elbo_terms(vae_images)
            logits = self.discriminator(codes, training=False)
            tc = logits[:, 0] - logits[:, 1]
            loss = reconstruction + kl + self.gamma * tc
            scaled_loss = tf.nn.compute_average_loss(loss)
        grads = tape.gradient(scaled_loss, self.vae_weights)
        self.optimizer.apply_gradients(zip(grads, self.vae_weights))

        # D: class 0 for codes of the joint q(c), class 1 for dimension-permuted codes.
        mu, logvar = split_stats(self.encoder(permuted_images, training=False))
        permuted = permute_dims(sample_codes(mu, logvar, self.seed_generator), self.seed_generator)
        joint = ops.stop_gradient(codes)
        with tf.GradientTape() as tape:
            joint_loss = ops.sparse_categorical_crossentropy(
                ops.zeros_like(tc, dtype="int32"), self.discriminator(joint, training=True),
                from_logits=True)
            permuted_loss = ops.sparse_categorical_crossentropy(
                ops.ones_like(tc, dtype="int32"), self.discriminator(permuted, training=True),
                from_logits=True)
            d_loss = 0.5 * (joint_loss + permuted_loss)
            scaled_d_loss = tf.nn.compute_average_loss(d_loss)
        d_weights = self.discriminator.trainable_weights
        grads = tape.gradient(scaled_d_loss, d_weights)
        self.discriminator_optimizer.apply_gradients(zip(grads, d_weights))
        return self.track(loss=loss, reconstruction=reconstruction, kl=kl, tc=tc, d_loss=d_loss)


def tc_optimizer():
    """FactorVAE's D optimiser (SPEC.md): Adam, lr 1e-4, beta1 0.5, beta2 0.9."""
    return keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.9)
