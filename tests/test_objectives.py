"""How the losses of both stages are formed and weighted (issue 22), in closed form.

Each test builds tiny functional Keras models with weights typed in below, runs one
`train_step` under plain SGD (so an update is exactly -lr * gradient and a wrongly weighted
term shows in it), and compares the step's reported losses and the weights it leaves behind
with a float64 NumPy reference: one function per objective, named after what it computes,
differentiated by central finite differences. Nothing of idgan.py / vae.py is used but the
model classes' constructors, compile, train_step and sub-model attributes.

The reparameterisation noise is kept out of the closed-form references, not re-drawn:
  * stage 2: the encoder's logvar on real images is below -50, so c = mu to float32
    precision, while on G's images it is of order 1 (a ReLU "certainty" unit that only real
    images switch on, see `gated_encoder`); nuisance_dim = 0, so no z;
  * stage 1: either the same certain codes (logvar ~ -50), or codes of ordinary variance fed
    to a decoder whose hidden ReLUs are all dead, so neither the loss nor any gradient
    depends on the noise.
The sampling c = mu + exp(logvar / 2) * eps itself is checked statistically, on many rows.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import idgan
import vae
from conftest import bernoulli_nll, softplus

LOG_2PI = np.log(2.0 * np.pi)


def f32(values):
    return np.asarray(values, np.float32)


def f64(arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def log_softmax(logits):
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def numerical_gradient(loss, params, step=1e-6):
    """Central differences of the float64 scalar loss(params), params a list of arrays."""
    params = f64(params)
    grads = [np.zeros_like(p) for p in params]
    for p, g in zip(params, grads):
        for index in np.ndindex(p.shape):
            saved = p[index]
            p[index] = saved + step
            up = loss(params)
            p[index] = saved - step
            down = loss(params)
            p[index] = saved
            g[index] = (up - down) / (2.0 * step)
    return grads


def sgd(params, grads, lr):
    return [p - lr * g for p, g in zip(f64(params), grads)]


def weights(model, *names):
    """The [kernel, bias] of the named Dense layers, concatenated, as float64."""
    return [w.astype(np.float64) for name in names for w in model.get_layer(name).get_weights()]


def assert_weights(actual, expected, atol=2e-6):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=atol)


def scalars(logs):
    return {name: float(value) for name, value in logs.items()}


# ---------------------------------------------------------------------------------------
# Stage 2 (idgan.IDGAN): 2 x 2 x 1 images, c_dim 2, no nuisance.

IMAGE = (2, 2, 1)
PIXELS = 4
C_DIM = 2
R1_WEIGHT, DISTILL_WEIGHT, EMA_DECAY = 3.0, 0.7, 0.75
G_LR, D_LR = 0.5, 0.25
CERTAINTY_THRESHOLD = 3.0  # the encoder's certainty unit: relu(sum of pixels - 3)

REAL = f32([[0.90, 1.00, 0.80, 0.95],  # pixel sums 3.55 .. 3.75: certainty 0.55 .. 0.75
            [1.00, 0.85, 0.90, 0.90],
            [0.80, 0.90, 1.00, 0.85],
            [0.95, 0.95, 0.85, 1.00]])
G_WEIGHTS = [f32([[0.6, -0.4, 0.3, 0.5],
                  [-0.2, 0.7, 0.5, -0.6]]),
             f32([0.1, -0.2, 0.05, 0.15])]
D_WEIGHTS = [f32([[0.5, -0.3, 0.2],
                  [-0.4, 0.6, 0.1],
                  [0.3, 0.2, -0.5],
                  [0.1, -0.7, 0.4]]),
             f32([0.1, -0.1, 0.05]),
             f32([[0.8], [-0.6], [0.5]]),
             f32([0.1])]
# Rows: the four pixels, then the certainty unit; columns: mu_1, mu_2, logvar_1, logvar_2.
# Certainty >= 0.55 on real images puts their logvar below -50; G's images (pixel sums
# about 2) leave it at 0, and their logvar is of order 1.
E_WEIGHTS = [f32([[1.5, -0.5, 0.4, -0.3],
                  [-1.0, 2.0, -0.2, 0.5],
                  [0.5, 1.0, 0.3, 0.2],
                  [-2.0, -1.5, -0.5, 0.1],
                  [0.0, 0.0, -100.0, -100.0]]),
             f32([0.3, -0.6, 0.2, -0.1])]


def stage2_generator(kernel, bias):
    """G(z, c) = tanh(c K + b) as a 2 x 2 x 1 image in [-1, 1]; z is 0 wide."""
    z, c = keras.Input((0,), name="z"), keras.Input((C_DIM,), name="c")
    h = layers.Dense(PIXELS, activation="tanh", name="g")(layers.Concatenate()([z, c]))
    model = keras.Model([z, c], layers.Reshape(IMAGE)(h))
    model.get_layer("g").set_weights([kernel, bias])
    return model


def stage2_discriminator(w1, b1, w2, b2):
    """D(x) = tanh(x W1 + b1) w2 + b2: one logit; its input gradient varies with x."""
    image = keras.Input(IMAGE)
    h = layers.Dense(3, activation="tanh", name="d_hidden")(layers.Flatten()(image))
    model = keras.Model(image, layers.Dense(1, name="d_logit")(h))
    model.get_layer("d_hidden").set_weights([w1, b1])
    model.get_layer("d_logit").set_weights([w2, b2])
    return model


def gated_encoder(kernel, bias):
    """[mu, logvar] = [x, u(x)] K + b, u(x) = relu(sum(x) - 3): a unit only real images
    switch on (their pixel sums exceed 3, G's here stay below)."""
    image = keras.Input(IMAGE)
    x = layers.Flatten()(image)
    certainty = layers.Dense(1, activation="relu", name="certainty")(x)
    stats = layers.Dense(2 * C_DIM, name="stats")(layers.Concatenate()([x, certainty]))
    model = keras.Model(image, stats)
    model.get_layer("certainty").set_weights([np.ones((PIXELS, 1), np.float32),
                                              f32([-CERTAINTY_THRESHOLD])])
    model.get_layer("stats").set_weights([kernel, bias])
    return model


def generator_np(g, c):
    kernel, bias = g
    return np.tanh(c @ kernel + bias)  # flattened images in [-1, 1]


def discriminator_np(d, x):
    w1, b1, w2, b2 = d
    return (np.tanh(x @ w1 + b1) @ w2 + b2)[:, 0]


def gated_encoder_np(e, x01):
    kernel, bias = e
    certainty = np.maximum(x01.sum(axis=1, keepdims=True) - CERTAINTY_THRESHOLD, 0.0)
    stats = np.concatenate([x01, certainty], axis=1) @ kernel + bias
    return stats[:, :C_DIM], stats[:, C_DIM:]


def r1_penalty_np(d, x):
    """The R1 penalty of Mescheder et al. 2018 (Sec. 4.1: (gamma / 2) E||grad_x D(x)||^2)
    without its gamma / 2: ||grad_x D(x)||^2 per example. For D(x) = tanh(x W1 + b1) w2 + b2,
    grad_x D = W1 (w2 * (1 - tanh^2(x W1 + b1)))."""
    w1, b1, w2, _ = d
    h = np.tanh(x @ w1 + b1)
    grad = ((1.0 - h**2) * w2[:, 0]) @ w1.T
    return np.sum(grad**2, axis=1)


def gaussian_nll_np(c, mu_hat, logvar_hat):
    """-log N(c; mu_hat, diag(exp(logvar_hat))) per example:
    0.5 * sum_j [log(2 pi) + logvar_hat_j + (c_j - mu_hat_j)^2 * exp(-logvar_hat_j)]."""
    return 0.5 * np.sum(LOG_2PI + logvar_hat + (c - mu_hat)**2 * np.exp(-logvar_hat), axis=1)


def nonsaturating_d_loss_with_r1(d, real, fake):
    """The non-saturating D loss with the R1 penalty of Mescheder et al. 2018, batch mean:
    L_D = mean_i [softplus(-D(x_i)) + softplus(D(G(s_i))) + r1_weight * ||grad_x D(x_i)||^2],
    x_i = 2 real_i - 1 (real images in [0, 1], D's inputs in [-1, 1]).
    Returns L_D and, per example, the adversarial part and the unweighted R1."""
    x = 2.0 * real - 1.0
    adversarial = softplus(-discriminator_np(d, x)) + softplus(discriminator_np(d, fake))
    r1 = r1_penalty_np(d, x)
    return np.mean(adversarial + R1_WEIGHT * r1), adversarial, r1


def nonsaturating_g_loss_with_distillation(g, d, e, c):
    """ID-GAN's generator loss, batch mean: the non-saturating GAN term minus
    lambda R_ID, R_ID(G) = E[log q(c | G(s))] + H(c) the distillation term of ID-GAN Eq. (4)
    (H(c) is constant in G, lambda = distill_weight):
    L_G = mean_i [softplus(-D(G(c_i))) + distill_weight * NLL(c_i | E((G(c_i) + 1) / 2))],
    E the frozen encoder, which sees G's images mapped to [0, 1].
    Returns L_G and, per example, the adversarial part and the NLL."""
    fake = generator_np(g, c)
    mu_hat, logvar_hat = gated_encoder_np(e, (fake + 1.0) / 2.0)
    adversarial = softplus(-discriminator_np(d, fake))
    nll = gaussian_nll_np(c, mu_hat, logvar_hat)
    return np.mean(adversarial + DISTILL_WEIGHT * nll), adversarial, nll


def idgan_step_np(g, d, e, real):
    """One ID-GAN step: c = mu(real) (certain encoder), the D step on G(c), then the G step
    against the *updated* D. Returns the updated weights and the batch means the trackers
    hold."""
    g, d, e, real = f64(g), f64(d), f64(e), real.astype(np.float64)
    mu, logvar = gated_encoder_np(e, real)
    assert np.all(logvar < -50)  # c = mu + exp(logvar / 2) eps = mu in float32
    c = mu
    fake = generator_np(g, c)
    assert np.all(((fake + 1) / 2).sum(axis=1) < CERTAINTY_THRESHOLD - 0.5)  # E uncertain
    _, d_adversarial, r1 = nonsaturating_d_loss_with_r1(d, real, fake)
    d_grad = numerical_gradient(lambda p: nonsaturating_d_loss_with_r1(p, real, fake)[0], d)
    d_new = sgd(d, d_grad, D_LR)
    _, g_adversarial, nll = nonsaturating_g_loss_with_distillation(g, d_new, e, c)
    g_grad = numerical_gradient(
        lambda p: nonsaturating_g_loss_with_distillation(p, d_new, e, c)[0], g)
    g_new = sgd(g, g_grad, G_LR)
    logs = dict(d_loss=d_adversarial.mean(), r1=r1.mean(), g_loss=g_adversarial.mean(),
                distill_nll=nll.mean())
    return dict(generator=g_new, discriminator=d_new, logs=logs)


@pytest.fixture(scope="module")
def idgan_step():
    """One IDGAN.train_step on the weights above, and the NumPy reference of that step."""
    generator = stage2_generator(*G_WEIGHTS)
    discriminator = stage2_discriminator(*D_WEIGHTS)
    encoder = gated_encoder(*E_WEIGHTS)
    model = idgan.IDGAN(generator, discriminator, encoder, nuisance_dim=0, c_dim=C_DIM,
                        distill_weight=DISTILL_WEIGHT, r1_weight=R1_WEIGHT,
                        ema_decay=EMA_DECAY, seed=3)
    model.compile(g_optimizer=keras.optimizers.SGD(G_LR),
                  d_optimizer=keras.optimizers.SGD(D_LR))
    encoder_before = encoder.get_weights()
    logs = scalars(model.train_step(tf.constant(REAL.reshape(-1, *IMAGE))))
    return dict(model=model, logs=logs, encoder_before=encoder_before,
                expected=idgan_step_np(G_WEIGHTS, D_WEIGHTS, E_WEIGHTS, REAL))


def test_idgan_step_reports_the_closed_form_losses(idgan_step):
    """d_loss: D's adversarial part (no R1); r1: the unweighted penalty; g_loss: G's
    adversarial part against the updated D; distill_nll: the unweighted NLL."""
    expected = idgan_step["expected"]["logs"]
    assert set(idgan_step["logs"]) == set(expected)
    for name, value in expected.items():
        assert idgan_step["logs"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_idgan_discriminator_update_is_sgd_on_the_loss_with_weighted_r1(idgan_step):
    model, expected = idgan_step["model"], idgan_step["expected"]
    assert_weights(weights(model.discriminator, "d_hidden", "d_logit"), expected["discriminator"])


def test_idgan_generator_update_is_sgd_on_the_loss_with_weighted_distillation(idgan_step):
    model, expected = idgan_step["model"], idgan_step["expected"]
    assert_weights(weights(model.generator, "g"), expected["generator"])


def test_idgan_ema_follows_the_step_and_the_encoder_stays_frozen(idgan_step):
    """ema = decay * old + (1 - decay) * new after one step from ema = old, whatever G's new
    weights are (their correctness is the test above)."""
    model = idgan_step["model"]
    new = weights(model.generator, "g")
    ema = [EMA_DECAY * old + (1.0 - EMA_DECAY) * w for old, w in zip(f64(G_WEIGHTS), new)]
    assert_weights(model.generator_ema.get_weights(), ema, atol=1e-7)
    for after, before in zip(model.encoder.get_weights(), idgan_step["encoder_before"]):
        np.testing.assert_array_equal(after, before)


def test_idgan_samples_codes_from_the_encoders_posterior():
    """c = mu + exp(logvar / 2) eps, eps ~ N(0, I), on 4096 real images, seen through
    distill_nll. On real images (all ones) the encoder gives (mu, logvar); on G's images,
    which do not depend on c, (mu_hat, logvar_hat). So the tracker is
        mean_i 0.5 sum_j [log(2 pi) + logvar_hat_j + (c_ij - mu_hat_j)^2 exp(-logvar_hat_j)],
    of expectation 0.5 sum_j [log(2 pi) + logvar_hat_j + (var_j + (mu_j - mu_hat_j)^2) w_j],
    var = exp(logvar), w = exp(-logvar_hat); a per-row variance of
    0.25 sum_j w_j^2 (2 var_j^2 + 4 (mu_j - mu_hat_j)^2 var_j) (c_j is normal). The distinct
    weights and offsets per dimension make the variance's scale, the mean and each
    dimension's logvar show."""
    rows = 4096
    mu, logvar = np.array([1.5, -1.0]), np.log([4.0, 0.25])
    mu_hat, logvar_hat = np.array([2.0, -0.5]), np.log([2.0, 0.5])
    # Pixel rows zero; the certainty unit (1 on images of ones, 0 on G's) adds (mu, logvar)
    # - (mu_hat, logvar_hat).
    kernel = np.zeros((PIXELS + 1, 2 * C_DIM))
    kernel[-1] = np.concatenate([mu - mu_hat, logvar - logvar_hat])
    encoder = gated_encoder(f32(kernel), f32(np.concatenate([mu_hat, logvar_hat])))
    generator = stage2_generator(np.zeros((C_DIM, PIXELS), np.float32),
                                 np.full(PIXELS, -2.0, np.float32))  # pixels ~0.02 in [0, 1]
    model = idgan.IDGAN(generator, stage2_discriminator(*D_WEIGHTS), encoder, nuisance_dim=0,
                        c_dim=C_DIM, distill_weight=DISTILL_WEIGHT, r1_weight=R1_WEIGHT,
                        seed=5)
    model.compile(g_optimizer=keras.optimizers.SGD(G_LR),
                  d_optimizer=keras.optimizers.SGD(D_LR))
    logs = scalars(model.train_step(tf.ones((rows, *IMAGE))))
    var, w, offset = np.exp(logvar), np.exp(-logvar_hat), mu - mu_hat
    expected = 0.5 * np.sum(LOG_2PI + logvar_hat + (var + offset**2) * w)
    sd = np.sqrt(0.25 * np.sum(w**2 * (2 * var**2 + 4 * offset**2 * var)) / rows)
    assert logs["distill_nll"] == pytest.approx(expected, abs=4 * sd)


# ---------------------------------------------------------------------------------------
# Stage 1 (vae.BetaVAE, vae.FactorVAE): 2 x 2 x 1 images, c_dim 2.

BETA, GAMMA = 2.5, 1.7
VAE_LR, TC_LR = 0.25, 0.5

VAE_IMAGES = f32([[0.1, 0.7, 0.4, 0.9],
                  [0.6, 0.2, 0.8, 0.3],
                  [0.5, 0.5, 0.1, 0.2],
                  [0.9, 0.4, 0.3, 0.6]])
# Columns: mu_1, mu_2, logvar_1, logvar_2.
ENCODER_KERNEL = f32([[0.8, -0.5, 0.3, -0.2],
                      [-0.6, 0.9, -0.1, 0.4],
                      [0.4, 0.3, 0.2, -0.3],
                      [-0.3, -0.7, -0.4, 0.1]])
CERTAIN_BIAS = f32([0.2, -0.1, -50.0, -50.0])  # logvar ~ -50: c = mu in float32
UNCERTAIN_BIAS = f32([0.2, -0.1, 0.3, -0.5])  # logvar of order 1
# Decoder: c -> relu(c K1 + b1) K2 + b2, 4 pixel logits.
DECODER_KERNELS = f32([[0.7, -0.4, 0.5],
                       [-0.3, 0.8, 0.6]]), f32([[0.5, -0.6, 0.3, 0.2],
                                                [-0.4, 0.2, 0.7, -0.5],
                                                [0.3, 0.4, -0.2, 0.6]])
LIVE_BIAS = f32([2.0, 2.0, 2.0])  # every hidden unit on, for |c| < 1.3
DEAD_BIAS = f32([-10.0, -10.0, -10.0])  # every hidden unit off: logits = b2, whatever c
LOGIT_BIAS = f32([0.1, -0.2, 0.3, 0.0])
# FactorVAE's D: c -> tanh(c T1 + t1) T2 + t2, logits of (joint, permuted).
TC_WEIGHTS = [f32([[0.6, -0.8, 0.3],
                   [0.4, 0.5, -0.7]]),
              f32([0.1, -0.2, 0.05]),
              f32([[0.9, -0.3],
                   [-0.5, 0.7],
                   [0.2, 0.4]]),
              f32([0.05, -0.05])]
DISC_ROW = f32([0.3, 0.8, 0.6, 0.2])  # FactorVAE's second batch: this row four times


def vae_encoder(kernel, bias, image_shape=IMAGE):
    image = keras.Input(image_shape)
    model = keras.Model(image, layers.Dense(kernel.shape[1], name="stats")(
        layers.Flatten()(image)))
    model.get_layer("stats").set_weights([kernel, bias])
    return model


def relu_decoder(k1, b1, k2, b2, image_shape=IMAGE):
    codes = keras.Input((k1.shape[0],))
    h = layers.Dense(k1.shape[1], activation="relu", name="hidden")(codes)
    model = keras.Model(codes, layers.Reshape(image_shape)(layers.Dense(k2.shape[1],
                                                                        name="logits")(h)))
    model.get_layer("hidden").set_weights([k1, b1])
    model.get_layer("logits").set_weights([k2, b2])
    return model


def tanh_discriminator(w1, b1, w2, b2):
    codes = keras.Input((w1.shape[0],))
    h = layers.Dense(w1.shape[1], activation="tanh", name="tc_hidden")(codes)
    model = keras.Model(codes, layers.Dense(w2.shape[1], name="tc_logits")(h))
    model.get_layer("tc_hidden").set_weights([w1, b1])
    model.get_layer("tc_logits").set_weights([w2, b2])
    return model


def vae_encoder_np(e, x):
    kernel, bias = e
    stats = x @ kernel + bias
    half = stats.shape[1] // 2
    return stats[:, :half], stats[:, half:]


def relu_decoder_np(dec, c):
    k1, b1, k2, b2 = dec
    return np.maximum(c @ k1 + b1, 0.0) @ k2 + b2


def tanh_discriminator_np(d, c):
    w1, b1, w2, b2 = d
    return np.tanh(c @ w1 + b1) @ w2 + b2


def reconstruction_nll_np(x, logits, likelihood):
    """-log p(x | c) summed over pixels: Bernoulli, sum_k [softplus(l_k) - x_k l_k] (sigmoid
    cross-entropy on logits); Gaussian (up to constants), sum_k (x_k - sigmoid(l_k))^2."""
    if likelihood == "bernoulli":
        return bernoulli_nll(x, logits)
    return np.sum((x - sigmoid(logits))**2, axis=1)


def gaussian_kl_np(mu, logvar):
    """KL(N(mu, diag(exp(logvar))) || N(0, I))
    = 0.5 sum_j (exp(logvar_j) + mu_j^2 - 1 - logvar_j)."""
    return 0.5 * np.sum(np.exp(logvar) + mu**2 - 1.0 - logvar, axis=1)


def negative_beta_elbo(params, x, beta, likelihood):
    """The negative beta-VAE ELBO (ID-GAN Eq. (1), Higgins et al. 2017), batch mean:
    L = mean_i [-log p(x_i | c_i) + beta * KL(q(c | x_i) || N(0, I))], c_i = mu(x_i)
    (the codes are certain, or the decoder ignores them). Returns L, and per example the
    reconstruction term and the KL."""
    encoder, decoder = params[:2], params[2:]
    mu, logvar = vae_encoder_np(encoder, x)
    reconstruction = reconstruction_nll_np(x, relu_decoder_np(decoder, mu), likelihood)
    kl = gaussian_kl_np(mu, logvar)
    return np.mean(reconstruction + beta * kl), reconstruction, kl


def beta_vae_check(encoder_bias, hidden_bias, likelihood):
    """One BetaVAE.train_step against negative_beta_elbo: logs and the SGD update."""
    encoder = vae_encoder(ENCODER_KERNEL, encoder_bias)
    decoder = relu_decoder(DECODER_KERNELS[0], hidden_bias, DECODER_KERNELS[1], LOGIT_BIAS)
    model = vae.BetaVAE(encoder, decoder, beta=BETA, likelihood=likelihood, seed=2)
    model.compile(optimizer=keras.optimizers.SGD(VAE_LR))
    logs = scalars(model.train_step(tf.constant(VAE_IMAGES.reshape(-1, *IMAGE))))

    x = VAE_IMAGES.astype(np.float64)
    params = f64([ENCODER_KERNEL, encoder_bias, DECODER_KERNELS[0], hidden_bias,
                  DECODER_KERNELS[1], LOGIT_BIAS])
    _, reconstruction, kl = negative_beta_elbo(params, x, BETA, likelihood)
    assert logs["reconstruction"] == pytest.approx(reconstruction.mean(), rel=1e-5)
    assert logs["kl"] == pytest.approx(kl.mean(), rel=1e-5)
    assert logs["loss"] == pytest.approx((reconstruction + BETA * kl).mean(), rel=1e-5)
    grads = numerical_gradient(lambda p: negative_beta_elbo(p, x, BETA, likelihood)[0], params)
    expected = sgd(params, grads, VAE_LR)
    assert_weights(weights(encoder, "stats") + weights(decoder, "hidden", "logits"), expected,
                   atol=1e-5)  # logvar's bias near -50 has float32 steps of 4e-6
    return grads


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_beta_vae_step_with_certain_codes(likelihood):
    """logvar ~ -50: the decoder sees c = mu; checks the reconstruction path and beta."""
    beta_vae_check(CERTAIN_BIAS, LIVE_BIAS, likelihood)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_beta_vae_step_with_uncertain_codes_and_a_decoder_that_ignores_them(likelihood):
    """logvar of order 1, so every term of the KL counts; the decoder's ReLUs are dead, so
    the noisy codes change neither the loss nor any gradient: the encoder moves by
    beta * KL alone."""
    grads = beta_vae_check(UNCERTAIN_BIAS, DEAD_BIAS, likelihood)
    assert not np.any(grads[2]) and not np.any(grads[3]) and not np.any(grads[4])
    assert np.all(grads[1] != 0)


def test_beta_vae_samples_codes_from_the_posterior():
    """c = mu + exp(logvar / 2) eps on 4096 rows, seen through the reconstruction term: with
    a decoder whose logits are c itself and all-zero images, the Bernoulli term is
    softplus(c_1) + softplus(c_2), whose mean and variance under the correct posterior come
    from Gauss-Hermite quadrature."""
    rows = 4096
    mu, logvar = np.array([1.5, -1.0]), np.log([4.0, 0.25])
    encoder = vae_encoder(np.zeros((2, 4), np.float32), f32(np.concatenate([mu, logvar])),
                          image_shape=(1, 2, 1))
    # logits = relu(c) - relu(-c) = c, dimension by dimension.
    decoder = relu_decoder(f32([[1, -1, 0, 0], [0, 0, 1, -1]]), np.zeros(4, np.float32),
                           f32([[1, 0], [-1, 0], [0, 1], [0, -1]]), np.zeros(2, np.float32),
                           image_shape=(1, 2, 1))
    model = vae.BetaVAE(encoder, decoder, beta=BETA, likelihood="bernoulli", seed=4)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = scalars(model.train_step(tf.zeros((rows, 1, 2, 1))))
    nodes, node_weights = np.polynomial.hermite_e.hermegauss(80)
    node_weights = node_weights / node_weights.sum()  # expectations under N(0, 1)
    moments = [softplus(m + np.exp(lv / 2) * nodes) for m, lv in zip(mu, logvar)]
    mean = sum(node_weights @ f for f in moments)
    variance = sum(node_weights @ f**2 - (node_weights @ f)**2 for f in moments)
    assert logs["reconstruction"] == pytest.approx(mean, abs=4 * np.sqrt(variance / rows))


def factor_vae_loss(params, x, d, likelihood):
    """Kim & Mnih 2018, Algorithm 1, the VAE's loss (the negative of the ELBO minus gamma
    times the TC estimate), batch mean:
    L = mean_i [-log p(x_i | c_i) + KL(q(c | x_i) || N(0, I)) + gamma (D_0(c_i) - D_1(c_i))],
    D_0, D_1 D's logits of "joint" and "permuted", so D_0 - D_1 = log(D(c) / (1 - D(c)));
    c_i = mu(x_i) (certain codes). Returns L, per example the reconstruction term, the KL
    and the TC estimate, and the codes."""
    encoder, decoder = params[:2], params[2:]
    mu, logvar = vae_encoder_np(encoder, x)
    reconstruction = reconstruction_nll_np(x, relu_decoder_np(decoder, mu), likelihood)
    kl = gaussian_kl_np(mu, logvar)
    logits = tanh_discriminator_np(d, mu)
    tc = logits[:, 0] - logits[:, 1]
    return np.mean(reconstruction + kl + GAMMA * tc), reconstruction, kl, tc, mu


def tc_discriminator_cross_entropy(d, joint, permuted):
    """Kim & Mnih 2018, Algorithm 1, D's loss: -1/(2m) sum_i [log D(c_i) + log(1 - D(c~_i))]
    = mean_i 0.5 [CE(D(c_i), joint) + CE(D(c~_i), permuted)], c~ the second batch's codes
    with each dimension permuted across the batch. Returns the mean and the per-example
    values."""
    per_example = 0.5 * (-log_softmax(tanh_discriminator_np(d, joint))[:, 0]
                         - log_softmax(tanh_discriminator_np(d, permuted))[:, 1])
    return per_example.mean(), per_example


@pytest.fixture(scope="module")
def factor_vae_step():
    """One FactorVAE.train_step((vae_images, disc_images)) and its NumPy reference: the VAE
    step on vae_images, then D's step on their codes (before the VAE update) against the
    permuted codes of disc_images, encoded after the VAE update. disc_images repeats one
    row, so every permutation of its codes gives the same rows."""
    likelihood = "bernoulli"
    encoder = vae_encoder(ENCODER_KERNEL, CERTAIN_BIAS)
    decoder = relu_decoder(DECODER_KERNELS[0], LIVE_BIAS, DECODER_KERNELS[1], LOGIT_BIAS)
    discriminator = tanh_discriminator(*TC_WEIGHTS)
    model = vae.FactorVAE(encoder, decoder, discriminator, gamma=GAMMA, likelihood=likelihood,
                          seed=6)
    model.compile(keras.optimizers.SGD(VAE_LR), keras.optimizers.SGD(TC_LR))
    disc_images = np.tile(DISC_ROW, (len(VAE_IMAGES), 1))
    logs = scalars(model.train_step((tf.constant(VAE_IMAGES.reshape(-1, *IMAGE)),
                                     tf.constant(disc_images.reshape(-1, *IMAGE)))))

    x, d = VAE_IMAGES.astype(np.float64), f64(TC_WEIGHTS)
    params = f64([ENCODER_KERNEL, CERTAIN_BIAS, DECODER_KERNELS[0], LIVE_BIAS,
                  DECODER_KERNELS[1], LOGIT_BIAS])
    _, reconstruction, kl, tc, joint = factor_vae_loss(params, x, d, likelihood)
    vae_new = sgd(params, numerical_gradient(
        lambda p: factor_vae_loss(p, x, d, likelihood)[0], params), VAE_LR)
    permuted, _ = vae_encoder_np(vae_new[:2], disc_images.astype(np.float64))
    _, d_loss = tc_discriminator_cross_entropy(d, joint, permuted)
    d_grad = numerical_gradient(
        lambda p: tc_discriminator_cross_entropy(p, joint, permuted)[0], d)
    d_new = sgd(d, d_grad, TC_LR)
    expected_logs = dict(loss=(reconstruction + kl + GAMMA * tc).mean(),
                         reconstruction=reconstruction.mean(), kl=kl.mean(), tc=tc.mean(),
                         d_loss=d_loss.mean())
    return dict(logs=logs, expected_logs=expected_logs,
                vae=weights(encoder, "stats") + weights(decoder, "hidden", "logits"),
                expected_vae=vae_new,
                discriminator=weights(discriminator, "tc_hidden", "tc_logits"),
                expected_discriminator=d_new)


def test_factor_vae_step_reports_the_closed_form_losses(factor_vae_step):
    expected = factor_vae_step["expected_logs"]
    assert set(factor_vae_step["logs"]) == set(expected)
    for name, value in expected.items():
        assert factor_vae_step["logs"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_factor_vae_update_is_sgd_on_the_elbo_with_weighted_tc(factor_vae_step):
    assert_weights(factor_vae_step["vae"], factor_vae_step["expected_vae"], atol=1e-5)


def test_factor_vae_discriminator_update_is_sgd_on_its_cross_entropy(factor_vae_step):
    assert_weights(factor_vae_step["discriminator"], factor_vae_step["expected_discriminator"])


def test_factor_vae_discriminator_sees_each_dimension_permuted():
    """256 images whose codes are (a, a), a = +-1 in equal numbers: jointly c_1 c_2 = 1;
    with each dimension permuted independently, mean(c~_1 c~_2) ~ 0 +- 1/16 (1 if the codes
    are not permuted or permuted as whole rows). D's logits are (k_0, k_1) c_1 c_2 + bias,
    from zero, so softmax = (1/2, 1/2) and one SGD step on D's loss (vae_images =
    disc_images, the VAE's lr 0) moves k_0 by
    -lr * d/dk_0 0.5 mean[CE(joint) + CE(permuted)] = -lr * 0.25 (mean c~_1 c~_2 - 1),
    which gives the permuted batch's mean product."""
    rows = 256
    pixels = np.repeat([0.0, 1.0], rows // 2).astype(np.float32).reshape(rows, 1, 1, 1)
    # mu = (2 x - 1, 2 x - 1) = (a, a); logvar -50.
    encoder = vae_encoder(f32([[2, 2, 0, 0]]), f32([-1, -1, -50, -50]), image_shape=(1, 1, 1))
    decoder = relu_decoder(DECODER_KERNELS[0], LIVE_BIAS, DECODER_KERNELS[1][:, :1],
                           LOGIT_BIAS[:1], image_shape=(1, 1, 1))
    codes = keras.Input((2,))
    product = layers.Multiply()([codes[:, :1], codes[:, 1:]])
    discriminator = keras.Model(codes, layers.Dense(2, kernel_initializer="zeros",
                                                    name="tc_logits")(product))
    model = vae.FactorVAE(encoder, decoder, discriminator, gamma=GAMMA, seed=7)
    model.compile(keras.optimizers.SGD(0.0), keras.optimizers.SGD(TC_LR))
    model.train_step((tf.constant(pixels), tf.constant(pixels)))
    k = discriminator.get_layer("tc_logits").get_weights()[0][0]
    assert k[1] == pytest.approx(-k[0], abs=1e-6)
    permuted_product = 1.0 - 4.0 * k[0] / TC_LR
    assert abs(permuted_product) < 5.0 / np.sqrt(rows), permuted_product
