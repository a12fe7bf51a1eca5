"""Stage 1 of ID-GAN: a disentangled encoder from a beta-VAE or a FactorVAE.

The encoder q(c|x) learned here is frozen and handed to stage 2 (`idgan.py`) as a plain
Keras model: images in [0, 1] in, one tensor concat([mu, logvar]) of width 2 * c_dim out.
The objectives are the paper's Eq. (1) (beta-VAE) and Kim & Mnih (2018) (FactorVAE), the
networks its Table A.2, the settings the authors' (1Konny/idgan gan_training/dvae,
1Konny/FactorVAE). This file needs only TensorFlow, Keras and NumPy: copy it alone if you like.
"""
import math

import numpy as np
import tensorflow as tf
import keras
from keras import layers, ops

# ---------------------------------------------------------------------------------------
# Networks (Table A.2). At 64 px: four 4x4 stride-2 convolutions (32, 32, 64, 64) down to
# 4 x 4, then Dense 256. Other powers of two add or drop 64-wide stages. Output layers are
# float32 so that, under a mixed-precision policy, the losses are still computed in float32.
#
# init="authors" draws every kernel from N(0, 0.02) with zero biases, the authors' normal_init
# (1Konny/idgan gan_training/dvae/dvae.py, applied to BetaVAE_H; 1Konny/FactorVAE model.py
# does the same for the TC discriminator). init="keras" is Keras' Glorot uniform, zero bias.
INITS = ("authors", "keras")


def initializers(init):
    """Kernel and bias initialisers for one layer (a fresh seeded instance per layer)."""
    if init == "authors":
        return dict(kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02),
                    bias_initializer="zeros")
    if init == "keras":
        return dict(kernel_initializer="glorot_uniform", bias_initializer="zeros")
    raise ValueError(f"init must be one of {INITS}, not {init!r}.")


def conv_widths(res):
    stages = int(math.log2(res)) - 2
    return [32, 32, 64, 64, 64, 64, 64, 64, 64][:stages]


def build_encoder(c_dim, res=64, channels=1, init="authors"):
    """q(c|x): images in [0, 1] -> concat([mu, logvar]) of width 2 * c_dim."""
    images = keras.Input((res, res, channels), name="images")
    x = images
    for width in conv_widths(res):
        x = layers.Conv2D(width, 4, strides=2, padding="same", activation="relu",
                          **initializers(init))(x)
    x = layers.Dense(256, activation="relu", **initializers(init))(layers.Flatten()(x))
    stats = layers.Dense(2 * c_dim, name="mu_logvar", dtype="float32", **initializers(init))(x)
    return keras.Model(images, stats, name="encoder")


def build_decoder(c_dim, res=64, channels=1, init="authors"):
    """p(x|c): codes -> pixel logits (Bernoulli) or pre-sigmoid means (Gaussian)."""
    codes = keras.Input((c_dim,), name="c")
    x = layers.Dense(256, activation="relu", **initializers(init))(codes)
    x = layers.Dense(4 * 4 * 64, activation="relu", **initializers(init))(x)
    x = layers.Reshape((4, 4, 64))(x)
    for width in reversed(conv_widths(res)[:-1]):
        x = layers.Conv2DTranspose(width, 4, strides=2, padding="same", activation="relu",
                                   **initializers(init))(x)
    logits = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", name="logits",
                                    dtype="float32", **initializers(init))(x)
    return keras.Model(codes, logits, name="decoder")


def build_tc_discriminator(c_dim, init="authors"):
    """FactorVAE's D(c): 6 x (Dense 1000, LeakyReLU 0.2), Dense 2 (joint vs permuted)."""
    codes = keras.Input((c_dim,), name="c")
    x = codes
    for _ in range(6):
        x = layers.LeakyReLU(0.2)(layers.Dense(1000, **initializers(init))(x))
    logits = layers.Dense(2, dtype="float32", **initializers(init))(x)
    return keras.Model(codes, logits, name="tc_discriminator")


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
    """Shuffle each code dimension independently across the *global* batch: samples of
    prod_j q(c_j). Every replica gathers all replicas' codes, draws the same permutation of
    the whole batch (as replica_normal draws its noise) and keeps its own rows, so the TC
    estimate does not depend on how many replicas share the batch."""
    context = tf.distribute.get_replica_context()
    rows = ops.shape(codes)[0]
    if context.num_replicas_in_sync > 1:
        codes = context.all_gather(codes, axis=0)  # replica 0's rows first, as in the batch
    keys = keras.random.uniform(ops.shape(codes), seed=seed)
    permuted = ops.take_along_axis(codes, ops.argsort(keys, axis=0), axis=0)
    return permuted[context.replica_id_in_sync_group * rows:][:rows]


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

    def train_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            mu, logvar = split_stats(self.encoder(images, training=True))
            codes = sample_codes(mu, logvar, self.seed_generator)
            logits = self.decoder(codes, training=True)
            reconstruction = reconstruction_loss(images, logits, self.likelihood)
            kl = kl_divergence(mu, logvar)
            loss = reconstruction + self.beta * kl  # the negative of Eq. (1)
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
        """Create the optimizer's slots now, so restored checkpoints fill them."""
        self.optimizer.build(self.vae_weights)


# ---------------------------------------------------------------------------------------
# FactorVAE (Kim & Mnih 2018): the ELBO with beta = 1, minus gamma * TC, with the total
# correlation TC = E_q(c)[log q(c) / prod_j q(c_j)] estimated by a discriminator D that
# tells codes from codes with every dimension permuted across the batch:
#   TC ~= E[logit_joint(c) - logit_permuted(c)].
# Each step takes two independent batches of batch_size images (Kim & Mnih's Algorithm 1;
# 1Konny/FactorVAE solver.py, `for x_true1, x_true2 in self.data_loader`): the VAE loss and
# D's joint codes come from the first, the permuted codes from the second. D has its own
# optimizer.


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
        """optimizer: the VAE's (adam(lr)); discriminator_optimizer: D's (tc_optimizer())."""
        super().compile(optimizer=optimizer, **kwargs)
        self.discriminator_optimizer = discriminator_optimizer

    def build_optimizers(self):
        super().build_optimizers()
        self.discriminator_optimizer.build(self.discriminator.trainable_weights)

    def train_step(self, data):
        """data = (vae_images, permuted_images): two independent batches of one size."""
        vae_images, permuted_images, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            mu, logvar = split_stats(self.encoder(vae_images, training=True))
            codes = sample_codes(mu, logvar, self.seed_generator)
            logits = self.decoder(codes, training=True)
            reconstruction = reconstruction_loss(vae_images, logits, self.likelihood)
            kl = kl_divergence(mu, logvar)
            d_logits = self.discriminator(codes, training=False)
            tc = d_logits[:, 0] - d_logits[:, 1]
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


# ---------------------------------------------------------------------------------------
# Adam as PyTorch defines it (README "Optimisers and initialisation"). The authors train
# the VAE with torch.optim.Adam(lr, betas=(0.9, 0.999)), eps 1e-8 (gan_training/dvae/solver.py):
#   m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2,
#   w <- w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
# Keras' Adam puts eps beside the uncorrected root, lr sqrt(1 - b2^t) / (1 - b1^t) * m /
# (sqrt(v) + eps), i.e. PyTorch's step with eps / sqrt(1 - b2^t) (31.6 eps at t = 1), and its
# default eps is 1e-7. Its 1 - b^t in float32 also loses digits (1 - 0.999f = 0.00099999);
# PyTorch computes it in float64, so here it is -expm1(t log b), exact to float32 rounding.


def _one_minus_power(beta, step):
    """1 - beta^step for a Python float beta in [0, 1) and a float32 step count."""
    if beta == 0.0:
        return ops.ones_like(step)
    return -ops.expm1(step * math.log(beta))


@keras.saving.register_keras_serializable(package="vae")
class TorchAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam with torch.optim.Adam's update (and its default eps 1e-8).

    Same slots and variable names as keras.optimizers.Adam, so its checkpoints load either
    way. amsgrad is not supported; weight_decay is Keras' decoupled decay, not torch's L2.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 amsgrad=False, name="torch_adam", **kwargs):
        if amsgrad:
            raise ValueError("TorchAdam does not implement amsgrad.")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, (gradient - m) * (1.0 - self.beta_1))
        self.assign_add(v, (ops.square(gradient) - v) * (1.0 - self.beta_2))
        denominator = (ops.sqrt(v) / ops.sqrt(_one_minus_power(self.beta_2, step))
                       + self.epsilon)
        step_size = lr / _one_minus_power(self.beta_1, step)
        self.assign_sub(variable, step_size * m / denominator)


def adam(learning_rate, beta_1=0.9, beta_2=0.999):
    """torch.optim.Adam(lr, betas=(beta_1, beta_2), eps=1e-8): the VAE's optimiser, lr 1e-4
    and betas (0.9, 0.999) in the authors' gan_training/dvae/solver.py."""
    return TorchAdam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=1e-8)


def tc_optimizer(learning_rate=1e-4):
    """FactorVAE's D optimiser (1Konny/FactorVAE solver.py): PyTorch's Adam, lr 1e-4,
    beta1 0.5, beta2 0.9."""
    return adam(learning_rate, beta_1=0.5, beta_2=0.9)


# --- Pictures: image grids and latent traversals ------------------------------------------
def image_grid(images, rows):
    """Tile a batch of images in [0, 1] into one uint8 picture of `rows` rows."""
    images = np.clip(np.asarray(images), 0.0, 1.0)
    n, h, w, c = images.shape
    cols = math.ceil(n / rows)
    images = np.concatenate([images, np.zeros((rows * cols - n, h, w, c))], axis=0)
    grid = images.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4)
    return (grid.reshape(rows * h, cols * w, c) * 255).round().astype(np.uint8)


def in_chunks(model, inputs, chunk):
    """model(inputs) as one array, computed `chunk` rows per call, so a grid of many images
    needs no more memory than a training batch. inputs: an array, or a list of arrays."""
    many = isinstance(inputs, (list, tuple))
    rows = len(inputs[0] if many else inputs)
    return np.concatenate([
        np.asarray(model([x[i:i + chunk] for x in inputs] if many else inputs[i:i + chunk]))
        for i in range(0, rows, chunk)])


def traversal_grid(encoder, decoder, image, values=np.linspace(-2.5, 2.5, 10), chunk=64):
    """One row per code dimension: that dimension swept over `values`, the rest at mu(x).
    The decoder sees at most `chunk` codes at a time (the training batch, say)."""
    mu, _ = split_stats(in_chunks(encoder, image, chunk))
    c_dim = mu.shape[-1]
    codes = np.repeat(np.asarray(mu), c_dim * len(values), axis=0)
    rows = np.repeat(np.arange(c_dim), len(values))
    codes[np.arange(len(codes)), rows] = np.tile(values, c_dim)
    return image_grid(keras.ops.sigmoid(in_chunks(decoder, codes, chunk)), rows=c_dim)
