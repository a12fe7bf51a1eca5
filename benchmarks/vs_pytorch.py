"""Train-step throughput of this port beside PyTorch equivalents of the authors' code.

PyTorch is optional and nothing else in the project imports it. Install it beside the
project's requirements, e.g. in a separate environment (the pin is a CPU build; plain
`pip install torch` may fetch a multi-GB CUDA build):

    python -m venv /tmp/torchenv && . /tmp/torchenv/bin/activate
    pip install -r requirements.txt && pip install torch==2.13.0
    # (or the CPU wheel from https://pytorch.org/get-started/locally/)
    python benchmarks/vs_pytorch.py                       # 3 rounds, all default cases
    python benchmarks/vs_pytorch.py --rounds=5 --cases=beta_vae,idgan_conv
    python benchmarks/vs_pytorch.py --profile             # our stage-1 and 2 steps, piece by piece

Every measurement runs in its own subprocess (one framework per process, so neither
framework's thread pools or allocator sees the other's), and the rounds alternate TF and
PyTorch (the order flips every round); the table shows the median over rounds of each
subprocess' images/s, itself the median of --windows timed windows after a warm-up
window (which pays for tracing). Both sides train on one batch of 64 sprite images held
in memory (rendered once, same seed), so the input pipeline is not measured.
torch.set_num_threads(os.cpu_count()) is set; TensorFlow keeps its default thread pools.

The PyTorch side follows 1Konny/idgan (gan_training/dvae/dvae.py nets, gan_training/train.py
losses and steps, gan_training/dvae/loss.py) and 1Konny/FactorVAE (solver.py), written
anew here:
  beta_vae    Encoder/Decoder (nc 1, c 10), Bernoulli BCE-with-logits summed / batch +
              beta * KL, Adam(1e-4, (0.9, 0.999)).
  factor_vae  the same VAE with gamma 35 * TC from a 6 x 1000 LeakyReLU MLP discriminator,
              Adam(1e-4, (0.5, 0.9)) for it. As in ours and the authors', each step takes two
              batches of 64: one for the VAE step, one whose codes are permuted for the D
              step (images/s counts 64 per step).
  idgan_conv  Generator/Discriminator of dvae.py (Table A.3) with c 10, no z; D step:
              BCE-with-logits on reals and fakes + 10 * mean(sum grad_x D(x)^2) on reals
              (double backward); G step: non-saturating BCE + 1e-4 * Gaussian NLL of c under
              the frozen encoder of G(c); both RMSprop (G 1e-3, D 1e-4, alpha 0.99, eps 1e-8);
              EMA 0.999 of G after every step. The encoder's weights are frozen
              (requires_grad False); the authors' generator step leaves them requiring
              gradients and so also computes their (unused) gradients, which costs PyTorch
              time: the version here is the faster one.
  idgan_resnet64  (optional) the same stage-2 step with the ResNets of Mescheder et al.
              (the authors' resnet3.py) at 64 px, nf 16 (a small width; the paper uses 64),
              nf_max 512, c 20, z 256, RGB color sprites, and a 3-channel encoder.
"""
import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("beta_vae", "factor_vae", "idgan_conv")
OPTIONAL_CASES = ("idgan_resnet64",)  # --cases=...,idgan_resnet64
RESNET_NF = 16  # small width (the paper: 64)
BATCH, C_DIM, RES = 64, 10, 64

INSTALL = """PyTorch is not installed, so there is nothing to compare against.
It is optional for this project. To run the comparison, install it beside the project's
requirements, preferably in a separate environment:

    python -m venv /tmp/torchenv && . /tmp/torchenv/bin/activate
    pip install -r requirements.txt && pip install torch==2.13.0

(or the CPU-only wheel from https://pytorch.org/get-started/locally/; a plain
`pip install torch` may download a multi-GB CUDA build), then run this script again."""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    except OSError:
        pass
    return []


def sprite_batch(name="sprites"):
    """One batch of 64 sprites, (64, 64, 64, C) float32 in [0, 1], always the same."""
    import numpy as np

    sys.path.insert(0, ROOT)
    import data

    return data.ground_truth_data(name).sample(BATCH, np.random.default_rng(0))[1].astype(
        np.float32)


def median_rate(run_window, images_per_window, windows):
    run_window()  # warm-up: tracing, allocator, thread pools
    times = []
    for _ in range(windows):
        start = time.perf_counter()
        run_window()
        times.append(time.perf_counter() - start)
    return images_per_window / statistics.median(times)


# ----------------------------------------------------------------------------------------
# Ours: built and fitted as benchmarks/throughput.py does, on the in-memory batch, with
# tf.data's autotuner off as in data.make_dataset.


def our_model(case):
    """Our compiled model of one case, with the authors' settings (see the docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    import idgan
    import vae

    if case == "beta_vae":
        model = vae.BetaVAE(vae.build_encoder(C_DIM, RES, 1), vae.build_decoder(C_DIM, RES, 1),
                            beta=8.0)
        model.compile(optimizer=vae.adam(1e-4))
    elif case == "factor_vae":
        model = vae.FactorVAE(vae.build_encoder(C_DIM, RES, 1), vae.build_decoder(C_DIM, RES, 1),
                              vae.build_tc_discriminator(C_DIM), gamma=35.0)
        model.compile(vae.adam(1e-4), vae.tc_optimizer())
    elif case == "idgan_conv":
        model = idgan.IDGAN(idgan.build_conv_generator(C_DIM, 0), idgan.build_conv_discriminator(),
                            vae.build_encoder(C_DIM, RES, 1), nuisance_dim=0, c_dim=C_DIM)
        model.compile(idgan.rmsprop(1e-3), idgan.rmsprop(1e-4))
    elif case == "idgan_resnet64":
        model = idgan.IDGAN(idgan.build_resnet_generator(20, 256, RES, nf=RESNET_NF),
                            idgan.build_resnet_discriminator(RES, nf=RESNET_NF),
                            vae.build_encoder(20, RES, 3), nuisance_dim=256, c_dim=20)
        model.compile(idgan.rmsprop(1e-4), idgan.rmsprop(1e-4))
    else:
        raise ValueError(case)
    return model


def ours_rate(case, steps, windows):
    model = our_model(case)
    import tensorflow as tf
    import data

    images = sprite_batch("color_sprites" if case == "idgan_resnet64" else "sprites")
    if case == "factor_vae":  # two batches per step: the VAE's and the permuted codes'
        images = (images, images[::-1])
    dataset = data.without_autotuning(tf.data.Dataset.from_tensors(images).repeat())
    fit = lambda: model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0,  # noqa: E731
                            shuffle=False)
    return median_rate(fit, steps * BATCH, windows)


# ----------------------------------------------------------------------------------------
# PyTorch equivalents of the authors' networks and steps (NCHW, as theirs).


def torch_rate(case, steps, windows):
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    x = torch.from_numpy(sprite_batch(
        "color_sprites" if case == "idgan_resnet64" else "sprites")).permute(0, 3, 1, 2).contiguous()  # B, 1, 64, 64

    class Flat(nn.Module):
        def forward(self, h):
            return h.reshape(h.shape[0], -1)

    class Unflat(nn.Module):
        def forward(self, h):
            return h.reshape(h.shape[0], -1, 1, 1)

    def down_net(outputs, channels=1):  # dvae.py Encoder / Discriminator: image -> values
        return nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(True), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(True), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(64, 256, 4, 1), nn.ReLU(True), Flat(), nn.Linear(256, outputs))

    def up_net(tanh):  # dvae.py Decoder / Generator: code -> image (logits or tanh)
        layers = [nn.Linear(C_DIM, 256), Unflat(), nn.ReLU(True),
                  nn.ConvTranspose2d(256, 64, 4), nn.ReLU(True),
                  nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(True),
                  nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(True),
                  nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(True),
                  nn.ConvTranspose2d(32, 1, 4, 2, 1)]
        return nn.Sequential(*layers, *([nn.Tanh()] if tanh else []))

    def lrelu(h):
        return F.leaky_relu(h, 0.2)

    class Block(nn.Module):  # x_s + 0.1 * conv(lrelu(conv(lrelu(x)))), as resnet3.py
        def __init__(self, fin, fout):
            super().__init__()
            hidden = min(fin, fout)
            self.conv0 = nn.Conv2d(fin, hidden, 3, 1, 1)
            self.conv1 = nn.Conv2d(hidden, fout, 3, 1, 1)
            self.shortcut = nn.Conv2d(fin, fout, 1, bias=False) if fin != fout else None

        def forward(self, h):
            skip = h if self.shortcut is None else self.shortcut(h)
            return skip + 0.1 * self.conv1(lrelu(self.conv0(lrelu(h))))

    n_stages, nf, nf_max = int(math.log2(RES // 4)), RESNET_NF, 512

    class ResNetG(nn.Module):
        def __init__(self, in_dim):
            super().__init__()
            self.nf0 = min(nf * 2 ** n_stages, nf_max)
            self.fc = nn.Linear(in_dim, 16 * self.nf0)
            blocks = []
            for i in range(n_stages):
                blocks += [Block(min(nf * 2 ** (n_stages - i), nf_max),
                                 min(nf * 2 ** (n_stages - i - 1), nf_max)),
                           nn.Upsample(scale_factor=2)]
            self.blocks = nn.Sequential(*blocks, Block(nf, nf))
            self.conv_img = nn.Conv2d(nf, 3, 3, 1, 1)

        def forward(self, s):
            h = self.blocks(self.fc(s).view(s.shape[0], self.nf0, 4, 4))
            return torch.tanh(self.conv_img(lrelu(h)))

    class ResNetD(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_img = nn.Conv2d(3, nf, 3, 1, 1)
            blocks = [Block(nf, nf)]
            for i in range(n_stages):
                blocks += [nn.AvgPool2d(3, 2, 1),
                           Block(min(nf * 2 ** i, nf_max), min(nf * 2 ** (i + 1), nf_max))]
            self.blocks = nn.Sequential(*blocks)
            self.nf0 = min(nf * 2 ** n_stages, nf_max)
            self.fc = nn.Linear(16 * self.nf0, 1)

        def forward(self, x):
            h = self.blocks(self.conv_img(x))
            return self.fc(lrelu(h.reshape(x.shape[0], 16 * self.nf0)))

    def normal_init(module):  # the authors' VAE init
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            nn.init.zeros_(module.bias)

    def encode(encoder, images, c_dim=C_DIM):
        stats = encoder(images)
        mu, logvar = stats[:, :c_dim], stats[:, c_dim:]
        return mu + torch.exp(logvar / 2) * torch.randn_like(mu), mu, logvar

    def elbo_terms(encoder, decoder, images):
        codes, mu, logvar = encode(encoder, images)
        logits = decoder(codes)
        batch = images.shape[0]
        recon = F.binary_cross_entropy_with_logits(logits, images, reduction="sum") / batch
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).sum(1).mean()
        return recon, kl, codes

    if case in ("beta_vae", "factor_vae"):
        encoder, decoder = down_net(2 * C_DIM), up_net(tanh=False)
        encoder.apply(normal_init)
        decoder.apply(normal_init)
        vae_params = list(encoder.parameters()) + list(decoder.parameters())
        vae_opt = torch.optim.Adam(vae_params, lr=1e-4, betas=(0.9, 0.999))

    if case == "beta_vae":
        def step():
            recon, kl, _ = elbo_terms(encoder, decoder, x)
            loss = recon + 8.0 * kl
            vae_opt.zero_grad()
            loss.backward()
            vae_opt.step()

    elif case == "factor_vae":
        mlp = []
        width = C_DIM
        for _ in range(6):
            mlp += [nn.Linear(width, 1000), nn.LeakyReLU(0.2, True)]
            width = 1000
        tc_disc = nn.Sequential(*mlp, nn.Linear(1000, 2))
        tc_disc.apply(normal_init)
        d_opt = torch.optim.Adam(tc_disc.parameters(), lr=1e-4, betas=(0.5, 0.9))
        x_vae, x_perm = x, x.flip(0)  # two batches per step, as ours
        zeros = torch.zeros(x_vae.shape[0], dtype=torch.long)
        ones = torch.ones(x_perm.shape[0], dtype=torch.long)

        def permute_dims(codes):
            columns = [col[torch.randperm(codes.shape[0])] for col in codes.unbind(1)]
            return torch.stack(columns, 1)

        def step():
            recon, kl, codes = elbo_terms(encoder, decoder, x_vae)
            for p in tc_disc.parameters():
                p.requires_grad_(False)
            logits = tc_disc(codes)
            tc = (logits[:, 0] - logits[:, 1]).mean()
            loss = recon + kl + 35.0 * tc
            vae_opt.zero_grad()
            loss.backward()
            vae_opt.step()
            for p in tc_disc.parameters():
                p.requires_grad_(True)
            with torch.no_grad():
                permuted = permute_dims(encode(encoder, x_perm)[0])
            d_loss = 0.5 * (F.cross_entropy(tc_disc(codes.detach()), zeros)
                            + F.cross_entropy(tc_disc(permuted), ones))
            d_opt.zero_grad()
            d_loss.backward()
            d_opt.step()

    elif case in ("idgan_conv", "idgan_resnet64"):
        if case == "idgan_conv":
            c_dim, z_dim, channels = C_DIM, 0, 1
            make_g, make_d = (lambda: up_net(tanh=True)), (lambda: down_net(1))
        else:
            c_dim, z_dim, channels = 20, 256, 3
            make_g, make_d = (lambda: ResNetG(z_dim + c_dim)), ResNetD
        generator, discriminator = make_g(), make_d()  # PyTorch default init, as theirs
        generator_ema = make_g()
        generator_ema.load_state_dict(generator.state_dict())
        encoder = down_net(2 * c_dim, channels)
        encoder.apply(normal_init)
        encoder.eval()
        for p in list(encoder.parameters()) + list(generator_ema.parameters()):
            p.requires_grad_(False)
        g_lr = 1e-3 if case == "idgan_conv" else 1e-4
        g_opt = torch.optim.RMSprop(generator.parameters(), lr=g_lr, alpha=0.99, eps=1e-8)
        d_opt = torch.optim.RMSprop(discriminator.parameters(), lr=1e-4, alpha=0.99, eps=1e-8)
        g_params, d_params = list(generator.parameters()), list(discriminator.parameters())
        ema_pairs = list(zip(generator_ema.parameters(), generator.parameters()))
        real_image = x * 2 - 1

        def toggle(params, flag):
            for p in params:
                p.requires_grad_(flag)

        def bce(logits, target):
            return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

        def step():
            # Discriminator: reals (with R1 by double backward), then fakes from c ~ q(c|x).
            toggle(g_params, False)
            toggle(d_params, True)
            d_opt.zero_grad()
            real = real_image.clone().requires_grad_(True)
            d_real = discriminator(real)
            d_loss_real = bce(d_real, 1.0)
            d_loss_real.backward(retain_graph=True)
            grad, = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = 10.0 * grad.pow(2).reshape(BATCH, -1).sum(1).mean()
            r1.backward()
            with torch.no_grad():
                c, _, _ = encode(encoder, (real_image + 1) / 2, c_dim)
                s = torch.cat([torch.randn(BATCH, z_dim), c], 1)
                fake = generator(s)
            d_loss_fake = bce(discriminator(fake), 0.0)
            d_loss_fake.backward()
            d_opt.step()
            # Generator: non-saturating loss + distillation through the frozen encoder.
            toggle(g_params, True)
            toggle(d_params, False)
            g_opt.zero_grad()
            fake = generator(torch.cat([torch.randn(BATCH, z_dim), c], 1))
            g_loss = bce(discriminator(fake), 1.0)
            stats = encoder((fake + 1) / 2)
            mu_hat, logvar_hat = stats[:, :c_dim], stats[:, c_dim:]
            nll = 0.5 * (math.log(2 * math.pi) + logvar_hat
                         + (c - mu_hat).pow(2) / (logvar_hat.exp() + 1e-8)).sum(1).mean()
            (g_loss + 1e-4 * nll).backward()
            g_opt.step()
            with torch.no_grad():
                for ema, param in ema_pairs:
                    ema.mul_(0.999).add_(param, alpha=0.001)
    else:
        raise ValueError(case)

    def window():
        for _ in range(steps):
            step()

    return median_rate(window, steps * BATCH, windows)


# ----------------------------------------------------------------------------------------
# Our stage-1 and stage-2 steps, piece by piece (TensorFlow only).


def profile_stage2(repeats):
    """Times each piece of one sprites ID-GAN step as its own tf.function (median of
    `repeats` calls after a warm-up); pieces overlap (the D step includes R1), so the
    differences are the costs."""
    model = our_model("idgan_conv")
    import tensorflow as tf
    import idgan

    real = tf.constant(sprite_batch())
    d_vars = model.discriminator.trainable_weights
    g_vars = model.generator.trainable_weights
    c = model.sample_codes(real)

    def d_losses(with_r1):
        fake = model.generator([tf.zeros((BATCH, 0)), c], training=True)
        with tf.GradientTape() as tape:
            if with_r1:
                real_out, r1 = idgan.r1_penalty(model.discriminator, real * 2.0 - 1.0)
            else:
                real_out, r1 = model.discriminator(real * 2.0 - 1.0, training=True), 0.0
            fake_out = model.discriminator(fake, training=True)
            loss = tf.reduce_mean(tf.nn.softplus(-real_out[:, 0]) + tf.nn.softplus(fake_out[:, 0])
                                  + 10.0 * r1)
        return tape.gradient(loss, d_vars)

    def g_grads(distill):
        with tf.GradientTape() as tape:
            fake = model.generator([tf.zeros((BATCH, 0)), c], training=True)
            loss = tf.nn.softplus(-model.discriminator(fake, training=True)[:, 0])
            if distill:
                loss += 1e-4 * idgan.gaussian_nll(c, model._encode((fake + 1.0) / 2.0))
            loss = tf.reduce_mean(loss)
        return tape.gradient(loss, g_vars)

    pieces = {
        "sample c (encode reals)": lambda: model.sample_codes(real),
        "G forward": lambda: model.generator([tf.zeros((BATCH, 0)), c], training=True),
        "D grads, no R1": lambda: d_losses(False),
        "D grads with R1": lambda: d_losses(True),
        "G grads, no distillation": lambda: g_grads(False),
        "G grads with distillation": lambda: g_grads(True),
        "D optimiser apply": lambda: model.d_optimizer.apply_gradients(
            zip([tf.zeros_like(v) for v in d_vars], d_vars)),
        "G optimiser apply": lambda: model.g_optimizer.apply_gradients(
            zip([tf.zeros_like(v) for v in g_vars], g_vars)),
        "EMA update": model.update_ema,
        "whole train_step": lambda: model.train_step(real),
    }
    return median_ms(pieces, repeats)


def median_ms(pieces, repeats):
    """{name: median ms of `repeats` calls} of each piece as its own tf.function, after a
    warm-up call; each call waits for its results."""
    import tensorflow as tf

    results = {}
    for name, piece in pieces.items():
        fn = tf.function(piece)
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
            times.append(time.perf_counter() - start)
        results[name] = 1000 * statistics.median(times)
    return results


def profile_stage1(repeats):
    """Times each piece of one beta-VAE step (64 px, batch 64), as profile_stage2."""
    model = our_model("beta_vae")
    import tensorflow as tf

    real = tf.constant(sprite_batch())
    model.build_optimizers()
    weights = model.vae_weights
    codes = tf.zeros((BATCH, C_DIM))

    def grads():
        with tf.GradientTape() as tape:
            reconstruction, kl, _ = model.elbo_terms(real)
            loss = tf.reduce_mean(reconstruction + model.beta * kl)
        return tape.gradient(loss, weights)

    pieces = {
        "encoder forward": lambda: model.encoder(real, training=True),
        "decoder forward": lambda: model.decoder(codes, training=True),
        "loss (both nets, sampling)": lambda: model.elbo_terms(real)[:2],
        "loss and gradients": grads,
        "Adam apply": lambda: model.optimizer.apply_gradients(
            zip([tf.zeros_like(v) for v in weights], weights)),
        "whole train_step": lambda: model.train_step(real),
    }
    return median_ms(pieces, repeats)


# ----------------------------------------------------------------------------------------


def run_worker(framework, case, args):
    cmd = [sys.executable, os.path.abspath(__file__), f"--worker={framework}", f"--case={case}",
           f"--steps={args.steps}", f"--gan_steps={args.gan_steps}", f"--windows={args.windows}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["rate"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES + OPTIONAL_CASES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="stage-1 steps per timed window")
    parser.add_argument("--gan_steps", type=int, default=10, help="stage-2 steps per timed window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per measurement")
    parser.add_argument("--profile", action="store_true",
                        help="profile our stage-1 and stage-2 steps only")
    parser.add_argument("--repeats", type=int, default=20, help="calls per piece with --profile")
    parser.add_argument("--worker", choices=["tf", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        steps = args.gan_steps if args.case.startswith("idgan") else args.steps
        rate = (ours_rate if args.worker == "tf" else torch_rate)(args.case, steps, args.windows)
        print(json.dumps({"rate": rate}))
        return 0

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs; {' '.join(cpu_flags()) or 'no avx2'})")
    if args.profile:
        for title, profile in [("beta-VAE step", profile_stage1),
                               ("sprites ID-GAN step", profile_stage2)]:
            print(f"Our {title} (batch 64), median ms per call of each piece:")
            for name, ms in profile(args.repeats).items():
                print(f"  {name:<28} {ms:8.1f} ms")
        return 0
    if importlib.util.find_spec("torch") is None:
        print(INSTALL)
        return 0
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES + OPTIONAL_CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from "
                     f"{', '.join(CASES + OPTIONAL_CASES)}")
    import torch  # only to report its version

    print(f"PyTorch {torch.__version__}, {args.rounds} alternating rounds, batch {BATCH}, "
          f"in-memory sprite batch; steps/window {args.steps} (stage 1), {args.gan_steps} "
          f"(stage 2); {args.windows} timed windows after a warm-up", flush=True)
    rates = {case: {"tf": [], "torch": []} for case in cases}
    for round_index in range(args.rounds):
        order = ("tf", "torch") if round_index % 2 == 0 else ("torch", "tf")
        for case in cases:
            for framework in order:
                rate = run_worker(framework, case, args)
                rates[case][framework].append(rate)
                print(f"  round {round_index + 1} {case:<11} {framework:<5} {rate:8.1f} images/s",
                      flush=True)
    print(f"\n{'case':<12} | {'ours img/s':>10} | {'PyTorch img/s':>13} | {'ratio':>5}")
    for case in cases:
        ours, theirs = (statistics.median(rates[case][k]) for k in ("tf", "torch"))
        print(f"{case:<12} | {ours:10.1f} | {theirs:13.1f} | {ours / theirs:5.2f}")
    print("(medians over rounds; ratio = ours / PyTorch images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
