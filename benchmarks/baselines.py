"""The paper's comparison systems, as small subclasses of the project's models.

    InfoGAN             Table 1 and 4   InfoGAN(IDGAN): c from a fixed prior, a Q head on D
    VAEGAN              Table 2         VAEGAN(BetaVAE): the decoder also fools a discriminator
    EndToEndIDGAN       Table 2         EndToEndIDGAN(IDGAN): beta-VAE and ID-GAN in one step
    CGAN                Table 3         CGAN(IDGAN): a projection discriminator, no distillation
    train_oracle_encoder  gap analysis  an encoder that knows the ground-truth factors

Each reuses the networks, losses and pieces of idgan.py and vae.py, and writes its own
whole train_step: the teaching files hold no hooks for them. The GAN systems share the two
functions below, ID-GAN's D step and G loss for another discriminator (this file may repeat
what idgan.py spells out; it is not teaching material). Losses are per example and divided
by the *global* batch (tf.nn.compute_average_loss) and noise is drawn for the global batch,
as in IDGAN and BetaVAE, so any tf.distribute strategy gives the same results. The command
line is benchmarks/train_baseline.py; the paper's authors released none of these systems.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

import idgan  # noqa: E402
import vae  # noqa: E402


def split_head(discriminator):
    """D's features phi(x) (the input of its last Dense layer) as a tensor of its graph."""
    last = discriminator.layers[-1]
    if not isinstance(last, layers.Dense) or isinstance(discriminator.output_shape, list):
        raise ValueError("The discriminator must end in one Dense logit (no VDB).")
    return last.input


def image_encoder(network):
    """A network on images in [-1, 1] as an encoder on images in [0, 1]: the VAE encoder's
    contract (images in [0, 1] -> concat([mu, logvar])), so FVM, MIG and metrics.py apply."""
    images = keras.Input(network.input_shape[1:], name="images")
    return keras.Model(images, network(layers.Rescaling(2.0, offset=-1.0)(images)),
                       name="encoder")


def decoder_as_generator(decoder):
    """A VAE decoder (codes -> pixel logits) with the generator contract of generator.keras:
    inputs [z (0 wide), c], images in [-1, 1] (tanh(l / 2) = 2 sigmoid(l) - 1)."""
    z = keras.Input((0,), name="z")
    c = keras.Input(decoder.input_shape[1:], name="c")
    logits = decoder(layers.Concatenate()([z, c]))
    image = layers.Activation("tanh", dtype="float32")(layers.Rescaling(0.5)(logits))
    return keras.Model([z, c], image, name="decoder_generator")


def discriminator_step(model, real, c, discriminate, weights, extra=None):
    """IDGAN's D step (non-saturating loss + r1 * R1 on real images) for another D:
    discriminate(images in [-1, 1]) -> outputs, the logit first; `weights` are what it
    trains; extra(c, fake, fake_outputs) -> (a per-example loss to add, values to track)."""
    fake = model.generator([model.normal((ops.shape(real)[0], model.nuisance_dim)), c],
                           training=True)
    with tf.GradientTape() as tape:
        real_outputs, r1 = idgan.r1_penalty(discriminate, real * 2.0 - 1.0)
        fake_outputs = discriminate(fake)
        adversarial = (ops.softplus(-idgan.logits(real_outputs))
                       + ops.softplus(idgan.logits(fake_outputs)))
        extra_loss, values = extra(c, fake, fake_outputs) if extra else (0.0, {})
        d_loss = tf.nn.compute_average_loss(adversarial + model.r1_weight * r1 + extra_loss)
    model.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights))
    return dict(values, d_loss=adversarial, r1=r1)


def generator_loss(model, c, discriminate, extra=None):
    """IDGAN's G loss for another D, softplus(-D(G(z, c))) + extra(c, fake, fake_outputs)'s
    loss, divided by the global batch, and the values to track. Call it inside a tape."""
    fake = model.generator([model.normal((ops.shape(c)[0], model.nuisance_dim)), c],
                           training=True)
    outputs = discriminate(fake)
    adversarial = ops.softplus(-idgan.logits(outputs))
    extra_loss, values = extra(c, fake, outputs) if extra else (0.0, {})
    return tf.nn.compute_average_loss(adversarial + extra_loss), dict(values, g_loss=adversarial)


def generator_step(model, c, discriminate, extra=None):
    """One G update on generator_loss; returns the values to track."""
    with tf.GradientTape() as tape:
        g_loss, values = generator_loss(model, c, discriminate, extra)
    weights = model.generator.trainable_weights
    model.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights))
    return values


# ---------------------------------------------------------------------------------------
# InfoGAN (Chen et al. 2016): c ~ a fixed prior, and a Q network sharing D's trunk that
# predicts a Gaussian N(mu, exp(logvar)) over c from an image; info_weight * NLL(c | Q(G(s)))
# is added to G's loss and to D's, whose step trains D and Q together (trunk and both heads),
# on generated images only, as Chen et al. do. Chen et al. draw continuous codes from
# U(-1, 1): code_prior="uniform" (default) does too; "normal" draws N(0, I). The sprites
# family has no nuisance z, as for every GAN of the paper's section 5.1.
CODE_PRIORS = ("uniform", "normal")


def prior_codes_fn(code_prior, c_dim):
    """metrics.py's codes_fn(images, rng) for the prior of c a run's flags.json names as
    code_prior: "uniform" U(-1, 1) or "normal" N(0, I); None for None (c from the encoder)."""
    if code_prior not in (None,) + CODE_PRIORS:
        raise ValueError(f"code_prior must be 'uniform', 'normal' or None, not {code_prior!r}")
    if code_prior == "uniform":
        return lambda images, rng: rng.uniform(-1, 1, (len(images), c_dim))
    if code_prior == "normal":
        return lambda images, rng: rng.standard_normal((len(images), c_dim))


def build_infogan_discriminator(discriminator, c_dim, init="authors"):
    """D with a Q head on its trunk: images in [-1, 1] -> [logit, concat([mu, logvar])].
    The head is one Dense layer on D's features (its last layer's input)."""
    features = split_head(discriminator)
    stats = layers.Dense(2 * c_dim, name="q_mu_logvar", dtype="float32",
                         **idgan.initializers(init, features.shape[-1]))(features)
    return keras.Model(discriminator.input, [discriminator.output, stats], name="d_and_q")


class InfoGAN(idgan.IDGAN):
    """`discriminator` is build_infogan_discriminator's [logit, stats] model. Saves like
    IDGAN; `encoder` is Q as an image encoder (images in [0, 1] -> concat([mu, logvar]))."""

    def __init__(self, generator, discriminator, *, nuisance_dim, c_dim, info_weight=1.0,
                 code_prior="uniform", **kwargs):
        if code_prior not in CODE_PRIORS:
            raise ValueError(f"code_prior must be one of {CODE_PRIORS}, not {code_prior!r}.")
        logit_only = keras.Model(discriminator.input, discriminator.outputs[0])
        q_network = keras.Model(discriminator.input, discriminator.outputs[1], name="q_network")
        super().__init__(generator, logit_only, image_encoder(q_network), nuisance_dim=nuisance_dim,
                         c_dim=c_dim, distill_weight=info_weight, **kwargs)
        self.encoder.trainable = True  # Q is trained (IDGAN froze it)
        self.discriminator_and_q = discriminator
        self.info_weight = info_weight
        self.code_prior = code_prior
        del self.trackers["distill_nll"]
        self.trackers["info_nll"] = keras.metrics.Mean(name="info_nll")

    def compile(self, g_optimizer, d_optimizer, **kwargs):
        keras.Model.compile(self, optimizer=None, **kwargs)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        g_optimizer.build(self.generator.trainable_variables)
        d_optimizer.build(self.discriminator_and_q.trainable_variables)  # D, Q, shared trunk

    def train_step(self, data):
        real, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        c = self.sample_codes(ops.shape(real)[0])
        values = discriminator_step(self, real, c, self.discriminate,
                                    self.discriminator_and_q.trainable_weights, self.info_loss)
        values.update(generator_step(self, c, self.discriminate, self.info_loss))
        self.update_ema()
        return self.track(values)

    def sample_codes(self, batch):
        """c from the fixed prior, U(-1, 1) (Chen et al.) or N(0, I), for this replica's rows
        of the global batch, drawn from the model's seed generator as IDGAN.normal draws."""
        if self.code_prior == "normal":
            return self.normal((batch, self.c_dim))
        context = tf.distribute.get_replica_context()
        uniform = keras.random.uniform((batch * context.num_replicas_in_sync, self.c_dim),
                                       seed=self.seed_generator)
        return 2.0 * uniform[context.replica_id_in_sync_group * batch:][:batch] - 1.0

    def discriminate(self, images):
        return self.discriminator_and_q(images, training=True)  # [logit, Q's stats]

    def info_loss(self, c, fake, outputs):
        """info_weight * NLL(c | Q(G(s))) per example: trains Q in D's step, G in G's."""
        nll = idgan.gaussian_nll(c, outputs[1])
        return self.info_weight * nll, {"info_nll": nll}


# ---------------------------------------------------------------------------------------
# cGAN (the paper's Table 3): ID-GAN's generator and codes (c from the frozen encoder's
# posterior on the real batch, so the real pair is (x, c ~ q(c|x)) and the fake one
# (G(z, c), c)), a projection discriminator (Miyato and Koyama 2018) on [image, c], and no
# distillation term: what I(c; G(s)) it gets is implicit in the conditional GAN loss.


def build_projection_discriminator(discriminator, c_dim, init="authors"):
    """[image in [-1, 1], c] -> logit = psi(phi(x)) + <embed(c), phi(x)>: phi is D's trunk
    (the input of its last Dense layer), psi that layer, embed a linear map of the continuous
    c (no bias) to phi's width."""
    features = split_head(discriminator)
    c = keras.Input((c_dim,), name="c")
    embedded = layers.Dense(features.shape[-1], use_bias=False, name="embed_c",
                            **idgan.initializers(init, c_dim))(c)
    projection = layers.Dot(axes=1, dtype="float32")([embedded, features])
    logit = layers.Add(dtype="float32")([discriminator.output, projection])
    return keras.Model([discriminator.input, c], logit, name="projection_discriminator")


class CGAN(idgan.IDGAN):
    """IDGAN's codes with build_projection_discriminator's D and no distillation term."""

    def __init__(self, generator, discriminator, encoder, *, nuisance_dim, c_dim, **kwargs):
        super().__init__(generator, discriminator, encoder, nuisance_dim=nuisance_dim,
                         c_dim=c_dim, distill_weight=0.0, **kwargs)
        del self.trackers["distill_nll"]

    def train_step(self, data):
        real, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        mu, logvar = ops.split(self.encode(real), 2, axis=-1)  # c ~ q(c), as IDGAN's
        c = mu + ops.exp(logvar / 2.0) * self.normal(ops.shape(mu))
        discriminate = lambda images: self.discriminator([images, c], training=True)  # noqa: E731
        values = discriminator_step(self, real, c, discriminate,
                                    self.discriminator.trainable_weights)
        values.update(generator_step(self, c, discriminate))
        self.update_ema()
        return self.track(values)


# ---------------------------------------------------------------------------------------
# End-to-end ID-GAN (the paper's Table 2): the beta-VAE and the ID-GAN optimise one
# objective at once. Each step: c ~ q(c|x) by reparameterisation on the real batch; ID-GAN's
# D step on that c (detached); then one gradient of
#     [reconstruction + beta KL]  +  [softplus(-D(G(z, c))) + distill_weight * NLL(c | E(G(z, c)))]
# for the decoder (first bracket), G (second) and the encoder (both: the GAN terms reach it
# through c's reparameterisation and through E(G(s))). G uses its RMSprop, the encoder and
# decoder the VAE's Adam. Nothing is frozen, which is what the two-step ID-GAN avoids.


class EndToEndIDGAN(idgan.IDGAN):
    def __init__(self, generator, discriminator, encoder, decoder, *, nuisance_dim, c_dim,
                 beta=1.0, likelihood="bernoulli", seed=None, **kwargs):
        super().__init__(generator, discriminator, encoder, nuisance_dim=nuisance_dim,
                         c_dim=c_dim, seed=seed, **kwargs)
        encoder.trainable = True  # trained here (IDGAN froze it)
        self.vae = vae.BetaVAE(encoder, decoder, beta, likelihood,
                               seed=None if seed is None else seed + 1)
        for name in ("vae_loss", "reconstruction", "kl"):
            self.trackers[name] = keras.metrics.Mean(name=name)

    def compile(self, g_optimizer, d_optimizer, vae_optimizer, **kwargs):
        super().compile(g_optimizer, d_optimizer, **kwargs)
        self.vae_optimizer = vae_optimizer  # PyTorch's Adam: vae.adam(lr)
        self.vae_optimizer.build(self.vae.vae_weights)

    def train_step(self, data):
        real, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            view = idgan.encoder_view(real, self.encoder.input_shape[1:3])
            mu, logvar = vae.split_stats(self.encoder(view, training=True))
            c = vae.sample_codes(mu, logvar, self.vae.seed_generator)
            logits = self.vae.decoder(c, training=True)
            reconstruction = vae.reconstruction_loss(view, logits, self.vae.likelihood)
            kl = vae.kl_divergence(mu, logvar)
            with tape.stop_recording():
                values = discriminator_step(self, real, ops.stop_gradient(c), self.discriminate,
                                            self.discriminator.trainable_weights)
            g_loss, g_values = generator_loss(self, c, self.discriminate, self.distillation)
            vae_loss = reconstruction + self.vae.beta * kl
            loss = tf.nn.compute_average_loss(vae_loss) + g_loss
        g_weights, vae_weights = self.generator.trainable_weights, self.vae.vae_weights
        grads = tape.gradient(loss, g_weights + vae_weights)
        self.g_optimizer.apply_gradients(zip(grads[:len(g_weights)], g_weights))
        self.vae_optimizer.apply_gradients(zip(grads[len(g_weights):], vae_weights))
        self.update_ema()
        values.update(g_values, vae_loss=vae_loss, reconstruction=reconstruction, kl=kl)
        return self.track(values)

    def distillation(self, c, fake, outputs):
        """ID-GAN's distill_weight * NLL(c | E(G(s))) per example; here E is trained too."""
        nll = idgan.gaussian_nll(c, self.encode((fake + 1.0) / 2.0))
        return self.distill_weight * nll, {"distill_nll": nll}


# ---------------------------------------------------------------------------------------
# VAE-GAN (Larsen et al. 2016; the paper's Table 2) on the beta-VAE. Kept from Larsen: one
# discriminator that tells real images from both reconstructions Dec(c ~ q(c|x)) and decoded
# prior samples Dec(c ~ N(0, I)); the decoder trained to fool it on both, besides the ELBO;
# simultaneous updates from one forward pass. Dropped: the feature-wise reconstruction loss
# in D's l-th layer (the beta-VAE's pixel likelihood stays, so beta and the KL keep their
# beta-VAE meaning), Larsen's gamma split between decoder and encoder (one adversarial_weight,
# whose gradient also reaches the encoder through the reparameterised c, as the paper
# describes its VAE-GAN's encoder being updated by the adversarial loss), and his
# batch-normalised nets (the VAE nets of Table A.2 and ID-GAN's discriminators here). D uses
# ID-GAN's non-saturating loss with R1 on real images and its own RMSprop.


class VAEGAN(vae.BetaVAE):
    """compile(vae.adam(lr), idgan.rmsprop(d_lr)): the VAE nets' optimiser, then D's."""

    def __init__(self, encoder, decoder, discriminator, beta=1.0, likelihood="bernoulli",
                 adversarial_weight=1.0, r1_weight=10.0, seed=None, **kwargs):
        super().__init__(encoder, decoder, beta, likelihood, seed, **kwargs)
        self.discriminator = discriminator
        self.adversarial_weight = adversarial_weight
        self.r1_weight = r1_weight
        self.gan_trackers = [keras.metrics.Mean(name=n) for n in ("g_loss", "d_loss", "r1")]

    @property
    def metrics(self):
        return super().metrics + self.gan_trackers

    def compile(self, optimizer, discriminator_optimizer, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.discriminator_optimizer = discriminator_optimizer

    def build_optimizers(self):
        super().build_optimizers()
        self.discriminator_optimizer.build(self.discriminator.trainable_weights)

    def train_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        batch = ops.shape(images)[0]
        prior = vae.replica_normal((batch, self.decoder.input_shape[-1]), self.seed_generator)
        with tf.GradientTape() as tape:
            mu, logvar = vae.split_stats(self.encoder(images, training=True))
            logits = self.decoder(vae.sample_codes(mu, logvar, self.seed_generator),
                                  training=True)
            reconstruction = vae.reconstruction_loss(images, logits, self.likelihood)
            kl = vae.kl_divergence(mu, logvar)
            fakes = ops.concatenate([logits, self.decoder(prior, training=True)], axis=0)
            fakes = ops.sigmoid(fakes) * 2.0 - 1.0  # reconstructions, then prior samples
            fake_logits = self.discriminator(fakes, training=True)[:, 0]
            # Non-saturating: softplus(-D(x_rec)) + softplus(-D(x_prior)) per example.
            adversarial = ops.softplus(-fake_logits[:batch]) + ops.softplus(-fake_logits[batch:])
            loss = reconstruction + self.beta * kl + self.adversarial_weight * adversarial
            scaled_loss = tf.nn.compute_average_loss(loss)
        grads = tape.gradient(scaled_loss, self.vae_weights)
        self.optimizer.apply_gradients(zip(grads, self.vae_weights))

        fakes = ops.stop_gradient(fakes)
        with tf.GradientTape() as tape:
            discriminate = lambda x: self.discriminator(x, training=True)  # noqa: E731
            real_logits, r1 = idgan.r1_penalty(discriminate, images * 2.0 - 1.0)
            fake_logits = discriminate(fakes)[:, 0]
            # softplus(-D(x)) + softplus(D(x_rec)) + softplus(D(x_prior)) per example.
            d_loss = (ops.softplus(-real_logits[:, 0]) + ops.softplus(fake_logits[:batch])
                      + ops.softplus(fake_logits[batch:]))
            scaled_d_loss = tf.nn.compute_average_loss(d_loss + self.r1_weight * r1)
        d_weights = self.discriminator.trainable_weights
        grads = tape.gradient(scaled_d_loss, d_weights)
        self.discriminator_optimizer.apply_gradients(zip(grads, d_weights))
        return self.track(loss=loss, reconstruction=reconstruction, kl=kl, g_loss=adversarial,
                          d_loss=d_loss, r1=r1)


# ---------------------------------------------------------------------------------------
# The oracle encoder: what ID-GAN reaches when its code is the ground truth, whatever stage
# 1 learns. The stage-1 encoder network regressed (squared error, Adam 1e-3) onto every
# factor's standardised value; its logvar half is then fixed at log(std^2) (zero kernel,
# constant bias), so it is a plain encoder.keras: images -> concat([mu, logvar]), c_dim =
# the number of factors. Where the images do not determine a factor (a square's rotation
# by 90 degrees) it predicts the conditional mean: its R^2 per factor says how far.


def train_oracle_encoder(ground_truth_data, steps=3000, batch_size=64, seed=0, std=0.1,
                         progress=None):
    """(encoder, {factor name: R^2 on 1024 fresh samples}); progress(step) after each step."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    sizes = np.asarray(ground_truth_data.factor_sizes, np.float64)
    # A factor's index is uniform on 0 .. n-1: mean (n - 1) / 2, variance (n^2 - 1) / 12.
    mean, scale = (sizes - 1) / 2, np.sqrt(np.maximum(sizes ** 2 - 1, 1) / 12)
    standardise = lambda factors: ((factors - mean) / scale).astype(np.float32)  # noqa: E731
    _, example = ground_truth_data.sample(1, rng)
    c_dim = len(sizes)
    encoder = vae.build_encoder(c_dim, example.shape[1], example.shape[-1])
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def train_step(images, targets):
        with tf.GradientTape() as tape:
            mu = encoder(images, training=True)[:, :c_dim]
            loss = tf.reduce_mean(tf.square(mu - targets))
        grads = tape.gradient(loss, encoder.trainable_weights)
        optimizer.apply_gradients(zip(grads, encoder.trainable_weights))

    for step in range(steps):
        factors, images = ground_truth_data.sample(batch_size, rng)
        train_step(images.astype(np.float32), standardise(factors))
        if progress:
            progress(step + 1)
    head = encoder.get_layer("mu_logvar")
    kernel, bias = head.get_weights()
    kernel[:, c_dim:], bias[c_dim:] = 0.0, np.log(std ** 2)
    head.set_weights([kernel, bias])
    factors, images = ground_truth_data.sample(1024, rng)
    mu = np.asarray(encoder.predict(images, batch_size=256, verbose=0))[:, :c_dim]
    errors = np.mean((mu - standardise(factors)) ** 2, axis=0)
    return encoder, {name: float(1 - error) for name, error in
                     zip(ground_truth_data.factor_names, errors)}
