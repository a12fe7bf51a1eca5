"""ID-GAN stage 2: a GAN that renders the codes of a frozen disentangling encoder.

Stage 1 (a beta-VAE or FactorVAE) gives an encoder q(c|x). Stage 2 trains a generator
G(s), s = [z, c], with z ~ N(0, I) nuisance and c sampled from the aggregated posterior
(encode a real batch, c = mu + exp(logvar / 2) * eps). The discriminator uses the
non-saturating loss with an R1 penalty on real images; the generator adds
distill_weight * NLL, the negative variational bound on I(c; G(s)) read off the frozen
encoder (the paper's Section 4, Eqs. (2) to (4)). Networks follow the paper's Tables A.3
to A.7 and the authors' gan_training/models (dvae.py, resnet3.py); samples and checkpoints
use an exponential moving average of G. IDGAN.train_step is the whole algorithm.
Output layers are float32, so a mixed-precision policy leaves every loss in float32.
"""

import numpy as np
import tensorflow as tf
import keras
from keras import layers, ops


def _stages(res):
    """Number of 2x resolution steps between 4 x 4 and res (Tables A.4 to A.7)."""
    if res < 32 or res & (res - 1):
        raise ValueError(f"res must be a power of two >= 32, got {res}.")
    return int(np.log2(res // 4))


# init="authors" is PyTorch's default for nn.Linear / nn.Conv2d / nn.ConvTranspose2d, which
# the authors' GAN nets keep (dvae_enc / dvae_dec for Table A.3, resnet3 for A.4 - A.7: no
# custom init): weights kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)), and biases
# U(+-1/sqrt(fan_in)). PyTorch's fan_in is weight.size(1) * k * k: in_channels * k * k for a
# convolution, in_features for a Linear, but *out_channels* * k * k for a ConvTranspose2d
# (its weight is (in, out, k, k)). Each layer below states its PyTorch fan_in. init="keras"
# is Keras' Glorot uniform with zero biases.
INITS = ("authors", "keras")


def initializers(init, fan_in):
    """Kernel and bias initialisers for one layer (a fresh seeded instance per layer)."""
    if init == "authors":
        bound = 1.0 / np.sqrt(fan_in)
        return dict(kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
                    bias_initializer=keras.initializers.RandomUniform(-bound, bound))
    if init == "keras":
        return dict(kernel_initializer="glorot_uniform", bias_initializer="zeros")
    raise ValueError(f"init must be one of {INITS}, not {init!r}.")


def _code_inputs(c_dim, nuisance_dim):
    """The generator's inputs z (nuisance) and c (code); either may be 0 wide."""
    z = keras.Input((nuisance_dim,), name="z")
    c = keras.Input((c_dim,), name="c")
    return z, c, layers.Concatenate()([z, c])


# Sprites networks (Table A.3): the VAE decoder / encoder shapes of Table A.2.


def build_conv_generator(c_dim, nuisance_dim, res=64, channels=1, init="authors"):
    """Table A.3 generator: [z, c] -> image in [-1, 1]."""
    n = _stages(res)
    z, c, h = _code_inputs(c_dim, nuisance_dim)
    h = layers.Dense(256, activation="relu", **initializers(init, c_dim + nuisance_dim))(h)
    # The authors' ConvTranspose2d(256, 64, 4) on a 1 x 1 map: this Dense, fan_in 64 * 4 * 4.
    h = layers.Dense(4 * 4 * 64, activation="relu", **initializers(init, 64 * 4 * 4))(h)
    h = layers.Reshape((4, 4, 64))(h)
    for width in [64] + [32] * (n - 2):
        h = layers.Conv2DTranspose(width, 4, 2, "same", activation="relu",
                                   **initializers(init, width * 4 * 4))(h)
    image = layers.Conv2DTranspose(channels, 4, 2, "same", activation="tanh", dtype="float32",
                                   **initializers(init, channels * 4 * 4))(h)
    return keras.Model([z, c], image, name="conv_generator")


def build_conv_discriminator(res=64, channels=1, init="authors"):
    """Table A.3 discriminator: image in [-1, 1] -> one logit."""
    n = _stages(res)
    image = keras.Input((res, res, channels), name="image")
    h = image
    for width in [32] * (n - 2) + [64, 64]:
        h = layers.Conv2D(width, 4, 2, "same", activation="relu",
                          **initializers(init, h.shape[-1] * 4 * 4))(h)
    # The authors' Conv2d(64, 256, 4) on the 4 x 4 map: this Dense, fan_in 64 * 4 * 4.
    h = layers.Dense(256, activation="relu", **initializers(init, 64 * 4 * 4))(
        layers.Flatten()(h))
    logit = layers.Dense(1, dtype="float32", **initializers(init, 256))(h)
    return keras.Model(image, logit, name="conv_discriminator")


# ResNet networks of Mescheder et al. 2018 (Tables A.4 - A.7; the authors' resnet3.py).


def resnet_block(x, fout, name, init="authors"):
    """Shortcut + 0.1 * Conv3x3(LReLU(Conv3x3(LReLU(x)))); 1x1 shortcut when widths differ."""
    fin = x.shape[-1]
    hidden = min(fin, fout)
    shortcut = x
    if fin != fout:
        shortcut = layers.Conv2D(fout, 1, use_bias=False, name=f"{name}_shortcut",
                                 **initializers(init, fin))(x)
    dx = layers.LeakyReLU(0.2)(x)
    dx = layers.Conv2D(hidden, 3, padding="same", name=f"{name}_conv0",
                       **initializers(init, fin * 3 * 3))(dx)
    dx = layers.LeakyReLU(0.2)(dx)
    dx = layers.Conv2D(fout, 3, padding="same", name=f"{name}_conv1",
                       **initializers(init, hidden * 3 * 3))(dx)
    return shortcut + 0.1 * dx


def build_resnet_generator(c_dim, nuisance_dim, res, nf=64, nf_max=512, channels=3,
                           init="authors"):
    """Dense -> 4 x 4, n x (ResBlock, nearest upsample x2), ResBlock(nf), Conv3x3, tanh."""
    n = _stages(res)
    z, c, h = _code_inputs(c_dim, nuisance_dim)
    nf0 = min(nf * 2**n, nf_max)
    h = layers.Dense(4 * 4 * nf0, **initializers(init, c_dim + nuisance_dim))(h)
    h = layers.Reshape((4, 4, nf0))(h)
    for i in range(n):
        h = resnet_block(h, min(nf * 2 ** (n - i - 1), nf_max), f"block{i}", init)
        h = layers.UpSampling2D(2)(h)
    h = resnet_block(h, nf, f"block{n}", init)
    h = layers.LeakyReLU(0.2)(h)
    image = layers.Conv2D(channels, 3, padding="same", activation="tanh", dtype="float32",
                          **initializers(init, nf * 3 * 3))(h)
    return keras.Model([z, c], image, name="resnet_generator")


@keras.saving.register_keras_serializable(package="idgan")
class VDBSample(layers.Layer):
    """mean + exp(logstd) * noise when training and given noise; the mean otherwise."""

    def call(self, mean, logstd, noise=None, training=None):
        if noise is None or not training:
            return mean
        return mean + ops.exp(logstd) * noise


def variational_bottleneck(h, noise, init="authors"):
    """VDB (Table A.7; Peng et al. 2019): the map sampled from N(mean, std^2), and its KL
    to N(0, I).

    noise is N(0, I) of the map's shape, supplied by the caller (IDGAN draws it from its
    seed generator, which its checkpoints save). The KL is summed over channels, averaged
    over locations: one value per example.
    """
    width = h.shape[-1]
    mean = layers.Conv2D(width, 1, name="vdb_mean", dtype="float32",
                         **initializers(init, width))(h)
    logstd = layers.Conv2D(width, 1, name="vdb_logstd", dtype="float32",
                           **initializers(init, width))(h)
    sample = VDBSample(name="vdb_sample", dtype="float32")(mean, logstd, noise)
    kl = ops.sum(-logstd + (ops.exp(2.0 * logstd) + ops.square(mean)) / 2.0, axis=-1)
    return sample, ops.mean(kl - width / 2.0, axis=(1, 2))


def build_resnet_discriminator(res, nf=64, nf_max=512, channels=3, vdb=False, init="authors"):
    """Conv3x3, ResBlock(nf), n x (AvgPool 3x3 / 2, ResBlock), Dense -> logit.

    With vdb=True the model takes [image, noise] and returns [logit, kl_per_example]; noise
    is N(0, I) of shape (batch, 4, 4, width) or None. It is used only when training; with
    None, or at inference, the bottleneck passes its mean.
    """
    n = _stages(res)
    image = keras.Input((res, res, channels), name="image")
    h = layers.Conv2D(nf, 3, padding="same", **initializers(init, channels * 3 * 3))(image)
    h = resnet_block(h, nf, "block0", init)
    for i in range(n):
        # torch AvgPool2d(3, stride=2, padding=1): zero padding counted in the mean.
        h = layers.AveragePooling2D(3, 2)(layers.ZeroPadding2D(1)(h))
        h = resnet_block(h, min(nf * 2 ** (i + 1), nf_max), f"block{i + 1}", init)
    inputs, outputs = image, []
    if vdb:
        noise = keras.Input(h.shape[1:], name="vdb_noise", optional=True)
        h, kl = variational_bottleneck(h, noise, init)
        inputs, outputs = [image, noise], [kl]
    h = layers.Flatten()(h)
    logit = layers.Dense(1, dtype="float32", **initializers(init, h.shape[-1]))(
        layers.LeakyReLU(0.2)(h))
    return keras.Model(inputs, [logit] + outputs if vdb else logit, name="resnet_discriminator")


# RMSprop as PyTorch defines it (README "Optimisers and initialisation"). The authors
# use torch.optim.RMSprop(lr, alpha=0.99, eps=1e-8) for G and D (gan_training/config.py):
#   v <- alpha v + (1 - alpha) g^2  (v starts at 0),   w <- w - lr g / (sqrt(v) + eps).
# keras.optimizers.RMSprop divides by sqrt(v + eps) instead: with eps 1e-8 that acts like
# eps ~1e-4 outside the root and shrinks every step whose gradient RMS is below ~1e-3.


@keras.saving.register_keras_serializable(package="idgan")
class TorchRMSprop(keras.optimizers.RMSprop):
    """keras.optimizers.RMSprop with torch.optim.RMSprop's update (eps outside the root).

    Same slots and variable names as keras.optimizers.RMSprop, so its checkpoints load either
    way. momentum and centered are not supported.
    """

    def __init__(self, learning_rate=0.001, rho=0.99, epsilon=1e-8, momentum=0.0,
                 centered=False, name="torch_rmsprop", **kwargs):
        if momentum or centered:
            raise ValueError("TorchRMSprop does not implement momentum or centered.")
        super().__init__(learning_rate=learning_rate, rho=rho, epsilon=epsilon, name=name,
                         **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        v = self._velocities[self._get_variable_index(variable)]
        self.assign(v, self.rho * v + (1.0 - self.rho) * ops.square(gradient))
        self.assign_sub(variable, lr * gradient / (ops.sqrt(v) + self.epsilon))


def rmsprop(learning_rate):
    """torch.optim.RMSprop(lr, alpha=0.99, eps=1e-8), the optimiser of both networks."""
    return TorchRMSprop(learning_rate, rho=0.99, epsilon=1e-8)


# The pieces of the stage-2 objective (Section 4), used by IDGAN.train_step.


def encoder_view(images, encoder_size):
    """Images in [0, 1] resized to the encoder's (height, width): average pooling by an
    integer factor (the authors' choice), bilinear otherwise."""
    height, width = images.shape[1:3]
    if (height, width) == tuple(encoder_size):
        return images
    if height % encoder_size[0] == 0 and width % encoder_size[1] == 0:
        pool = (height // encoder_size[0], width // encoder_size[1])
        return ops.average_pool(images, pool, strides=pool)
    return tf.image.resize(images, encoder_size, "bilinear", antialias=True)


def logits(outputs):
    """The discriminator's logit per example (a VDB discriminator also returns its KL)."""
    logit = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    return logit[:, 0]


def r1_penalty(discriminate, images):
    """discriminate(images)'s outputs and the R1 penalty ||grad_x D(x)||^2 per example.

    Call it inside the tape that differentiates the penalty (double backprop).
    `discriminate` maps images in [-1, 1] to D's outputs, as IDGAN.discriminate does.
    """
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = discriminate(images)
        logit_sum = ops.sum(logits(outputs))
    grads = tape.gradient(logit_sum, images)
    return outputs, ops.sum(ops.square(grads), axis=(1, 2, 3))


def gaussian_nll(c, stats):
    """-log N(c; mu_hat, exp(logvar_hat)) per example; stats = concat([mu_hat, logvar_hat])."""
    mu, logvar = ops.split(stats, 2, axis=-1)
    terms = np.log(2.0 * np.pi) + logvar + ops.square(c - mu) * ops.exp(-logvar)
    return 0.5 * ops.sum(terms, axis=-1)


def _assign_synchronized(variables, values):
    """Assigns values that are equal on every replica, from cross-replica context
    (a MirroredVariable cannot be assigned safely in replica context)."""

    def assign(strategy, values):
        for variable, value in zip(variables, values):
            strategy.extended.update(
                variable.value, lambda v, x: v.assign(x), args=(value,), group=False
            )

    tf.distribute.get_replica_context().merge_call(assign, args=(values,))


class IDGAN(keras.Model):
    """Stage 2 of ID-GAN. `fit` it on real images in [0, 1] at the GAN's resolution.

    encoder=None with c_dim=0 is the plain GAN baseline; distill_weight=0 is the paper's
    "w/o distill" ablation (Table 3). r1_weight multiplies ||grad||^2 with no 1/2 (the
    authors' reg_param; gamma = 2 * r1_weight in Mescheder et al.'s notation). vdb_target
    switches on the VDB's dual update (the discriminator must then be
    build_resnet_discriminator(..., vdb=True): [image, noise] -> [logit, kl]; the model
    draws the noise from its own seed generator, so a restored checkpoint continues it).
    """

    def __init__(self, generator, discriminator, encoder=None, *, nuisance_dim, c_dim,
                 distill_weight=1e-4, r1_weight=10.0, ema_decay=0.999, vdb_target=None,
                 vdb_beta=0.1, vdb_step=1e-5, seed=None, **kwargs):
        super().__init__(**kwargs)
        z_shape, c_shape = (tuple(t.shape[1:]) for t in generator.inputs)
        if (z_shape, c_shape) != ((nuisance_dim,), (c_dim,)):
            raise ValueError(f"The generator takes z {z_shape} and c {c_shape}, "
                             f"not ({nuisance_dim},) and ({c_dim},).")
        if encoder is None and c_dim:
            raise ValueError(f"c_dim={c_dim} needs an encoder (c_dim=0 is the plain GAN).")
        if encoder is not None:
            shape = encoder.output_shape
            if not isinstance(shape, tuple) or shape[-1] != 2 * c_dim:
                raise ValueError(f"The encoder must return one tensor of 2 * c_dim = "
                                 f"{2 * c_dim} values (mu and logvar), not {shape}.")
            if encoder.input_shape[-1] != generator.output_shape[-1]:
                raise ValueError(f"The encoder takes {encoder.input_shape[-1]} channels "
                                 f"but the generator makes {generator.output_shape[-1]}.")
            encoder.trainable = False  # frozen: stage 1's disentangled factors stay as learnt
        if (vdb_target is not None) != isinstance(discriminator.output_shape, list):
            raise ValueError("Pass vdb_target exactly when the discriminator is built "
                             "with vdb=True (it then returns [logit, kl]).")
        self.generator, self.discriminator, self.encoder = generator, discriminator, encoder
        self.generator_ema = keras.models.clone_model(generator)
        self.generator_ema.set_weights(generator.get_weights())
        self.nuisance_dim, self.c_dim = nuisance_dim, c_dim
        self.distill_weight, self.r1_weight, self.ema_decay = distill_weight, r1_weight, ema_decay
        self.vdb_target, self.vdb_step = vdb_target, vdb_step
        if vdb_target is not None:
            self.vdb_beta = keras.Variable(vdb_beta, trainable=False, name="vdb_beta")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.noise_state = self.seed_generator.state  # tracked: backups resume the noise
        names = ["d_loss", "g_loss", "r1"]
        names += ["distill_nll"] if encoder is not None else []
        names += ["vdb_kl", "vdb_beta"] if vdb_target is not None else []
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.built = True  # every sub-model is built; there is no call() to trace

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, g_optimizer, d_optimizer, **kwargs):
        """Both optimizers (the authors': PyTorch's RMSprop, `rmsprop(lr)`), built now so that
        load_weights restores their slots. kwargs go to keras.Model.compile (jit_compile,
        steps_per_execution)."""
        super().compile(optimizer=None, **kwargs)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def train_step(self, data):
        real, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        batch = ops.shape(real)[0]
        # c ~ q(c), the aggregated posterior: encode the real batch and sample (Section 4).
        # As in the authors' gan_training/train.py, both steps share c, each with its own z.
        c = ops.zeros((batch, 0))
        if self.encoder is not None:
            mu, logvar = ops.split(self.encode(real), 2, axis=-1)
            c = mu + ops.exp(logvar / 2.0) * self.normal(ops.shape(mu))

        # D: the non-saturating loss, + r1 * ||grad_x D(x)||^2 on real images (R1), + the
        # VDB's beta * KL when it has one.
        fake = self.generator([self.normal((batch, self.nuisance_dim)), c], training=True)
        with tf.GradientTape() as tape:
            real_outputs, r1 = r1_penalty(self.discriminate, real * 2.0 - 1.0)
            fake_outputs = self.discriminate(fake)
            d_adversarial = (ops.softplus(-logits(real_outputs))
                             + ops.softplus(logits(fake_outputs)))
            d_loss = d_adversarial + self.r1_weight * r1
            if self.vdb_target is not None:
                kl = (real_outputs[1] + fake_outputs[1]) / 2.0
                d_loss += self.vdb_beta * kl
            # Divide by the *global* batch: MirroredStrategy sums gradients over replicas.
            d_loss = tf.nn.compute_average_loss(d_loss)
        d_weights = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_weights), d_weights))
        values = dict(d_loss=d_adversarial, r1=r1)
        if self.vdb_target is not None:
            values.update(self.update_vdb_beta(kl))

        # G: fool D, and let the frozen encoder read c back from G(z, c): distill_weight *
        # the NLL of c under q(c | G(z, c)): -R_ID of Eq. (4) (the paper's L_I) up to H(c).
        with tf.GradientTape() as tape:
            fake = self.generator([self.normal((batch, self.nuisance_dim)), c], training=True)
            g_adversarial = ops.softplus(-logits(self.discriminate(fake)))
            g_loss = g_adversarial
            if self.encoder is not None:
                nll = gaussian_nll(c, self.encode((fake + 1.0) / 2.0))  # G's [-1, 1] -> [0, 1]
                g_loss = g_adversarial + self.distill_weight * nll
                values["distill_nll"] = nll
            g_loss = tf.nn.compute_average_loss(g_loss)
        g_weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_weights), g_weights))
        values["g_loss"] = g_adversarial

        self.update_ema()
        return self.track(values)

    def normal(self, shape):
        """N(0, I) for this replica's rows of the global batch: each replica draws the global
        batch's and keeps its rows, so the replica count (GPUs, workers) does not matter."""
        context = tf.distribute.get_replica_context()
        rows = shape[0]
        noise = keras.random.normal((rows * context.num_replicas_in_sync, *shape[1:]),
                                    seed=self.seed_generator)
        return noise[context.replica_id_in_sync_group * rows:][:rows]

    def encode(self, images):
        """The frozen encoder's [mu, logvar] for images in [0, 1] at the GAN's resolution."""
        view = encoder_view(images, self.encoder.input_shape[1:3])
        return self.encoder(view, training=False)

    def discriminate(self, images):
        """D's outputs on images in [-1, 1] in training mode, with fresh VDB noise if any."""
        if self.vdb_target is None:
            return self.discriminator(images, training=True)
        noise = self.normal((ops.shape(images)[0], *self.discriminator.inputs[1].shape[1:]))
        return self.discriminator([images, noise], training=True)

    def update_vdb_beta(self, kl):
        """The VDB's dual ascent, beta <- max(0, beta + vdb_step * (E[KL] - vdb_target))."""
        mean_kl = tf.distribute.get_replica_context().all_reduce(
            "sum", tf.nn.compute_average_loss(kl))
        beta = ops.maximum(0.0, self.vdb_beta + self.vdb_step * (mean_kl - self.vdb_target))
        _assign_synchronized([self.vdb_beta], [beta])
        return dict(vdb_kl=kl, vdb_beta=self.vdb_beta)

    def update_ema(self):
        """The exponential moving average of the generator's weights (decay ema_decay)."""
        ema, weights = self.generator_ema.weights, self.generator.weights
        _assign_synchronized(
            ema, [self.ema_decay * a + (1.0 - self.ema_decay) * w for a, w in zip(ema, weights)])

    def track(self, values):
        """Update the trackers with the batch means of `values`; return every tracker."""
        for name, value in values.items():
            self.trackers[name].update_state(ops.mean(value))
        return {name: tracker.result() for name, tracker in self.trackers.items()}
