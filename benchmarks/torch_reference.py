"""PyTorch equivalents of the authors' networks and train steps, for benchmarks/vs_pytorch.py
(its PyTorch worker imports this module; nothing else does, and PyTorch is optional).

Written anew after 1Konny/idgan (gan_training/dvae/dvae.py: Encoder, Decoder, Discriminator,
Generator and normal_init; gan_training/models/resnet3.py; gan_training/train.py: the stage-2
steps; gan_training/dvae/loss.py and solver.py: the beta-VAE loss and step) and
1Konny/FactorVAE (model.py's Discriminator, solver.py's step). NCHW, as theirs.
`make_step(case, x)` builds a case's nets and optimizers and returns its train step, a
function of no arguments.
"""
import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

C_DIM = 10  # the sprites cases' code width (configs/dsprites.yaml)


# ----------------------------------------------------------------------------------------
# Networks.


class View(nn.Module):
    """h.view(batch, *shape), as dvae.py's View."""

    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def forward(self, h):
        return h.reshape(h.shape[0], *self.shape)


class ConvDown(nn.Sequential):
    """dvae.py's Encoder (outputs 2 c_dim) and Discriminator (outputs 1): image -> values."""

    def __init__(self, outputs, nc=1):
        super().__init__(
            nn.Conv2d(nc, 32, 4, 2, 1), nn.ReLU(True), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(True), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(64, 256, 4, 1), nn.ReLU(True), View(256), nn.Linear(256, outputs))


class ConvUp(nn.Sequential):
    """dvae.py's Decoder (logits) and Generator (tanh): code -> image."""

    def __init__(self, in_dim=C_DIM, nc=1, tanh=False):
        layers = [nn.Linear(in_dim, 256), View(256, 1, 1), nn.ReLU(True),
                  nn.ConvTranspose2d(256, 64, 4), nn.ReLU(True),
                  nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(True),
                  nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(True),
                  nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(True),
                  nn.ConvTranspose2d(32, nc, 4, 2, 1)]
        super().__init__(*layers, *([nn.Tanh()] if tanh else []))


class TCDiscriminator(nn.Sequential):
    """FactorVAE's D (1Konny/FactorVAE model.py): 6 x (Linear 1000, LeakyReLU 0.2), Linear 2."""

    def __init__(self, c_dim=C_DIM):
        layers, width = [], c_dim
        for _ in range(6):
            layers += [nn.Linear(width, 1000), nn.LeakyReLU(0.2, True)]
            width = 1000
        super().__init__(*layers, nn.Linear(1000, 2))


def lrelu(h):
    return F.leaky_relu(h, 0.2)  # resnet3.py's actvn


class ResnetBlock(nn.Module):
    """resnet3.py's block: shortcut(x) + 0.1 * conv1(lrelu(conv0(lrelu(x))))."""

    def __init__(self, fin, fout):
        super().__init__()
        hidden = min(fin, fout)
        self.conv0 = nn.Conv2d(fin, hidden, 3, 1, 1)
        self.conv1 = nn.Conv2d(hidden, fout, 3, 1, 1)
        self.shortcut = nn.Conv2d(fin, fout, 1, bias=False) if fin != fout else None

    def forward(self, h):
        skip = h if self.shortcut is None else self.shortcut(h)
        return skip + 0.1 * self.conv1(lrelu(self.conv0(lrelu(h))))


class ResNetGenerator(nn.Module):
    """resnet3.py's Generator: Linear -> 4 x 4, n x (block, upsample x2), block(nf), conv, tanh."""

    def __init__(self, in_dim, size=64, nf=64, nf_max=512):
        super().__init__()
        n = int(math.log2(size // 4))
        self.nf0 = min(nf * 2 ** n, nf_max)
        self.fc = nn.Linear(in_dim, 16 * self.nf0)
        blocks = []
        for i in range(n):
            blocks += [ResnetBlock(min(nf * 2 ** (n - i), nf_max),
                                   min(nf * 2 ** (n - i - 1), nf_max)),
                       nn.Upsample(scale_factor=2)]
        self.blocks = nn.Sequential(*blocks, ResnetBlock(nf, nf))
        self.conv_img = nn.Conv2d(nf, 3, 3, 1, 1)

    def forward(self, s):
        h = self.blocks(self.fc(s).view(s.shape[0], self.nf0, 4, 4))
        return torch.tanh(self.conv_img(lrelu(h)))


class ResNetDiscriminator(nn.Module):
    """resnet3.py's Discriminator: conv, block(nf), n x (avg-pool 3 / 2, block), Linear."""

    def __init__(self, size=64, nf=64, nf_max=512):
        super().__init__()
        n = int(math.log2(size // 4))
        self.conv_img = nn.Conv2d(3, nf, 3, 1, 1)
        blocks = [ResnetBlock(nf, nf)]
        for i in range(n):
            blocks += [nn.AvgPool2d(3, 2, 1),
                       ResnetBlock(min(nf * 2 ** i, nf_max), min(nf * 2 ** (i + 1), nf_max))]
        self.blocks = nn.Sequential(*blocks)
        self.nf0 = min(nf * 2 ** n, nf_max)
        self.fc = nn.Linear(16 * self.nf0, 1)

    def forward(self, x):
        h = self.blocks(self.conv_img(x))
        return self.fc(lrelu(h.reshape(x.shape[0], 16 * self.nf0)))


def normal_init(module):
    """The authors' VAE init (dvae.py normal_init): N(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------
# Losses and steps.


def encode(encoder, images, c_dim=C_DIM):
    """c ~ q(c|x) by reparameterisation, with its mu and logvar."""
    stats = encoder(images)
    mu, logvar = stats[:, :c_dim], stats[:, c_dim:]
    return mu + torch.exp(logvar / 2) * torch.randn_like(mu), mu, logvar


def elbo_terms(encoder, decoder, images):
    """Bernoulli BCE-with-logits summed over pixels / batch, KL summed over c / batch, codes."""
    codes, mu, logvar = encode(encoder, images)
    logits = decoder(codes)
    batch = images.shape[0]
    recon = F.binary_cross_entropy_with_logits(logits, images, reduction="sum") / batch
    kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).sum(1).mean()
    return recon, kl, codes


def toggle(params, flag):
    for p in params:
        p.requires_grad_(flag)


def permute_dims(codes):
    """Each code dimension shuffled across the batch, as FactorVAE's solver.py."""
    columns = [col[torch.randperm(codes.shape[0])] for col in codes.unbind(1)]
    return torch.stack(columns, 1)


def bce(logits, target):
    """train.py's compute_loss: BCE-with-logits against a constant target."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def beta_vae_step(encoder, decoder, optimizer, x, beta=8.0):
    recon, kl, _ = elbo_terms(encoder, decoder, x)
    loss = recon + beta * kl
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def factor_vae_step(encoder, decoder, tc_disc, vae_opt, d_opt, x_vae, x_perm, zeros, ones,
                    gamma=35.0):
    """The VAE step on x_vae (gamma * TC from D on its codes), then D on x_vae's codes (class
    0) and x_perm's permuted codes (class 1). D sees x_vae's codes detached, and is frozen
    during the VAE step: the authors reuse D_z of the VAE step, whose graph current PyTorch
    refuses to backpropagate after the VAE optimizer's in-place step (1Konny/FactorVAE
    issue 15)."""
    recon, kl, codes = elbo_terms(encoder, decoder, x_vae)
    toggle(tc_disc.parameters(), False)
    logits = tc_disc(codes)
    tc = (logits[:, 0] - logits[:, 1]).mean()
    loss = recon + kl + gamma * tc
    vae_opt.zero_grad()
    loss.backward()
    vae_opt.step()
    toggle(tc_disc.parameters(), True)
    with torch.no_grad():
        permuted = permute_dims(encode(encoder, x_perm)[0])
    d_loss = 0.5 * (F.cross_entropy(tc_disc(codes.detach()), zeros)
                    + F.cross_entropy(tc_disc(permuted), ones))
    d_opt.zero_grad()
    d_loss.backward()
    d_opt.step()


def idgan_step(generator, discriminator, encoder, ema_pairs, g_opt, d_opt, real_image, z_dim,
               c_dim, r1_weight=10.0, distill_weight=1e-4, ema_decay=0.999):
    """train.py's discriminator_trainstep, generator_trainstep on the same c, then the
    moving average of G (update_average). real_image in [-1, 1]; the encoder takes [0, 1]."""
    batch = real_image.shape[0]
    g_params, d_params = list(generator.parameters()), list(discriminator.parameters())
    # Discriminator: reals (with R1 by double backward), then fakes from c ~ q(c|x).
    toggle(g_params, False)
    toggle(d_params, True)
    d_opt.zero_grad()
    real = real_image.clone().requires_grad_(True)
    d_real = discriminator(real)
    d_loss_real = bce(d_real, 1.0)
    d_loss_real.backward(retain_graph=True)
    grad, = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    r1 = r1_weight * grad.pow(2).reshape(batch, -1).sum(1).mean()
    r1.backward()
    with torch.no_grad():
        c, _, _ = encode(encoder, (real_image + 1) / 2, c_dim)
        fake = generator(torch.cat([torch.randn(batch, z_dim), c], 1))
    d_loss_fake = bce(discriminator(fake), 0.0)
    d_loss_fake.backward()
    d_opt.step()
    # Generator: non-saturating loss + distillation through the frozen encoder.
    toggle(g_params, True)
    toggle(d_params, False)
    g_opt.zero_grad()
    fake = generator(torch.cat([torch.randn(batch, z_dim), c], 1))
    g_loss = bce(discriminator(fake), 1.0)
    stats = encoder((fake + 1) / 2)
    mu_hat, logvar_hat = stats[:, :c_dim], stats[:, c_dim:]
    nll = 0.5 * (math.log(2 * math.pi) + logvar_hat
                 + (c - mu_hat).pow(2) / (logvar_hat.exp() + 1e-8)).sum(1).mean()
    (g_loss + distill_weight * nll).backward()
    g_opt.step()
    with torch.no_grad():
        for ema, param in ema_pairs:
            ema.mul_(ema_decay).add_(param, alpha=1 - ema_decay)


# ----------------------------------------------------------------------------------------
# The cases of benchmarks/vs_pytorch.py.


def rmsprop(params, lr):
    return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-8)


def make_step(case, x, resnet_nf=64):
    """The train step of `case` on the batch x (B, C, H, W in [0, 1]), a function of no
    arguments, with freshly built nets and optimizers (the authors' settings)."""
    if case in ("beta_vae", "factor_vae"):
        encoder, decoder = ConvDown(2 * C_DIM), ConvUp(C_DIM)
        encoder.apply(normal_init)
        decoder.apply(normal_init)
        vae_params = list(encoder.parameters()) + list(decoder.parameters())
        vae_opt = torch.optim.Adam(vae_params, lr=1e-4, betas=(0.9, 0.999))
        if case == "beta_vae":
            return functools.partial(beta_vae_step, encoder, decoder, vae_opt, x)
        tc_disc = TCDiscriminator()
        tc_disc.apply(normal_init)
        d_opt = torch.optim.Adam(tc_disc.parameters(), lr=1e-4, betas=(0.5, 0.9))
        x_vae, x_perm = x, x.flip(0)  # two batches per step, as ours
        zeros = torch.zeros(x_vae.shape[0], dtype=torch.long)
        ones = torch.ones(x_perm.shape[0], dtype=torch.long)
        return functools.partial(factor_vae_step, encoder, decoder, tc_disc, vae_opt, d_opt,
                                 x_vae, x_perm, zeros, ones)
    if case == "idgan_conv":
        c_dim, z_dim, channels, g_lr = C_DIM, 0, 1, 1e-3
        make_g, make_d = (lambda: ConvUp(C_DIM, tanh=True)), (lambda: ConvDown(1))
    elif case == "idgan_resnet64":
        c_dim, z_dim, channels, g_lr = 20, 256, 3, 1e-4
        make_g = lambda: ResNetGenerator(z_dim + c_dim, 64, resnet_nf)  # noqa: E731
        make_d = lambda: ResNetDiscriminator(64, resnet_nf)  # noqa: E731
    else:
        raise ValueError(case)
    generator, discriminator = make_g(), make_d()  # PyTorch's default init, as theirs
    generator_ema = make_g()
    generator_ema.load_state_dict(generator.state_dict())
    # The encoder is frozen (requires_grad False). The authors' generator step leaves it
    # requiring gradients and so also computes its (unused) gradients, which costs PyTorch
    # time: the version here is the faster one.
    encoder = ConvDown(2 * c_dim, channels)
    encoder.apply(normal_init)
    encoder.eval()
    toggle(list(encoder.parameters()) + list(generator_ema.parameters()), False)
    g_opt = rmsprop(generator.parameters(), g_lr)
    d_opt = rmsprop(discriminator.parameters(), 1e-4)
    ema_pairs = list(zip(generator_ema.parameters(), generator.parameters()))
    return functools.partial(idgan_step, generator, discriminator, encoder, ema_pairs, g_opt,
                             d_opt, x * 2 - 1, z_dim, c_dim)
