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

Ours are benchmarks/models.py's cases. The PyTorch side is benchmarks/torch_reference.py,
written anew after 1Konny/idgan (gan_training/dvae/dvae.py nets, gan_training/train.py
losses and steps, gan_training/dvae/loss.py) and 1Konny/FactorVAE (solver.py):
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

Without PyTorch the script says how to install it; --profile needs only TensorFlow, and a
quick check that a worker runs is

    python benchmarks/vs_pytorch.py --worker=tf --case=idgan_conv --gan_steps=1 --windows=1
"""
import argparse
import importlib.util
import json
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
BATCH = 64

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
                    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
                    return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def dataset_of(case):
    """The sprites dataset a case trains on (that of benchmarks/models.py's case)."""
    return "color_sprites" if case == "idgan_resnet64" else "sprites"


def sprite_batch(case):
    """One batch of 64 of the case's sprites, (64, 64, 64, C) float32 in [0, 1], always the
    same, for both frameworks."""
    import numpy as np

    sys.path.insert(0, ROOT)
    import data

    return data.ground_truth_data(dataset_of(case)).sample(
        BATCH, np.random.default_rng(0))[1].astype(np.float32)


def median_rate(run_window, images_per_window, windows):
    run_window()  # warm-up: tracing, allocator, thread pools
    times = []
    for _ in range(windows):
        start = time.perf_counter()
        run_window()
        times.append(time.perf_counter() - start)
    return images_per_window / statistics.median(times)


# ----------------------------------------------------------------------------------------
# The two workers: one case, one framework, the in-memory batch.


def our_model(case):
    """benchmarks/models.py's compiled model of `case` (the ResNets at RESNET_NF)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import models

    return models.build(case, dataset=dataset_of(case), nf=RESNET_NF)


def ours_rate(case, steps, windows):
    model = our_model(case)
    import models

    dataset = models.batches(case, BATCH, images=sprite_batch(case))
    fit = lambda: model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0,  # noqa: E731
                            shuffle=False)
    return median_rate(fit, steps * BATCH, windows)


def torch_rate(case, steps, windows):
    import torch
    import torch_reference

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    x = torch.from_numpy(sprite_batch(case)).permute(0, 3, 1, 2).contiguous()  # B, C, 64, 64
    step = torch_reference.make_step(case, x, resnet_nf=RESNET_NF)

    def window():
        for _ in range(steps):
            step()

    return median_rate(window, steps * BATCH, windows)


# ----------------------------------------------------------------------------------------
# Our stage-1 and stage-2 steps, piece by piece (TensorFlow only).


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


def sampled(stats):
    """c = mu + exp(logvar / 2) * eps of an encoder's concat([mu, logvar])."""
    import tensorflow as tf
    import vae

    mu, logvar = vae.split_stats(stats)
    return mu + tf.exp(logvar / 2.0) * tf.random.normal(tf.shape(mu))


def zero_update(optimizer, variables):
    """One optimizer update of `variables` with zero gradients."""
    import tensorflow as tf

    return lambda: optimizer.apply_gradients(zip([tf.zeros_like(v) for v in variables],
                                                 variables))


def profile_stage1(repeats):
    """Times each piece of one beta-VAE step (64 px, batch 64) as its own tf.function
    (median of `repeats` calls after a warm-up); the pieces are written out here, as
    vae.BetaVAE.train_step computes them, so they overlap and differences are the costs."""
    model = our_model("beta_vae")
    import tensorflow as tf
    import models
    import vae

    real = tf.constant(sprite_batch("beta_vae"))
    encoder, decoder = model.encoder, model.decoder
    weights = encoder.trainable_weights + decoder.trainable_weights
    codes = tf.zeros((BATCH, models.C_DIM["beta_vae"]))

    def elbo_terms():
        stats = encoder(real, training=True)
        logits = decoder(sampled(stats), training=True)
        return (vae.reconstruction_loss(real, logits, "bernoulli"),
                vae.kl_divergence(*vae.split_stats(stats)))

    def grads():
        with tf.GradientTape() as tape:
            reconstruction, kl = elbo_terms()
            loss = tf.reduce_mean(reconstruction + models.BETA * kl)
        return tape.gradient(loss, weights)

    pieces = {
        "encoder forward": lambda: encoder(real, training=True),
        "decoder forward": lambda: decoder(codes, training=True),
        "loss (both nets, sampling)": elbo_terms,
        "loss and gradients": grads,
        "Adam apply": zero_update(model.optimizer, weights),
        "whole train_step": lambda: model.train_step(real),
    }
    return median_ms(pieces, repeats)


def profile_stage2(repeats):
    """Times each piece of one sprites ID-GAN step, as profile_stage1: the pieces of
    idgan.IDGAN.train_step written out here (the D step includes R1, so differences are
    the costs)."""
    model = our_model("idgan_conv")
    import tensorflow as tf
    import idgan
    import models

    real = tf.constant(sprite_batch("idgan_conv"))
    generator, discriminator, encoder = model.generator, model.discriminator, model.encoder
    d_vars, g_vars = discriminator.trainable_weights, generator.trainable_weights
    no_z = tf.zeros((BATCH, 0))

    def encode(images):  # the frozen encoder's concat([mu, logvar]) of images in [0, 1]
        return encoder(idgan.encoder_view(images, encoder.input_shape[1:3]), training=False)

    c = sampled(encode(real))

    def d_grads(with_r1):
        fake = generator([no_z, c], training=True)
        with tf.GradientTape() as tape:
            if with_r1:
                real_out, r1 = idgan.r1_penalty(model.discriminate, real * 2.0 - 1.0)
            else:
                real_out, r1 = discriminator(real * 2.0 - 1.0, training=True), 0.0
            fake_out = discriminator(fake, training=True)
            loss = tf.reduce_mean(tf.nn.softplus(-real_out[:, 0]) + tf.nn.softplus(fake_out[:, 0])
                                  + models.R1_WEIGHT * r1)
        return tape.gradient(loss, d_vars)

    def g_grads(distill):
        with tf.GradientTape() as tape:
            fake = generator([no_z, c], training=True)
            loss = tf.nn.softplus(-discriminator(fake, training=True)[:, 0])
            if distill:
                loss += models.DISTILL_WEIGHT * idgan.gaussian_nll(c, encode((fake + 1.0) / 2.0))
            loss = tf.reduce_mean(loss)
        return tape.gradient(loss, g_vars)

    def ema_update():
        decay = models.EMA_DECAY
        for average, weight in zip(model.generator_ema.weights, generator.weights):
            average.assign(decay * average + (1.0 - decay) * weight)

    pieces = {
        "sample c (encode reals)": lambda: sampled(encode(real)),
        "G forward": lambda: generator([no_z, c], training=True),
        "D grads, no R1": lambda: d_grads(False),
        "D grads with R1": lambda: d_grads(True),
        "G grads, no distillation": lambda: g_grads(False),
        "G grads with distillation": lambda: g_grads(True),
        "D optimiser apply": zero_update(model.d_optimizer, d_vars),
        "G optimiser apply": zero_update(model.g_optimizer, g_vars),
        "EMA update": ema_update,
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
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated: " + ", ".join(CASES + OPTIONAL_CASES))
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

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs; "
          f"{' '.join(cpu_flags()) or 'no avx2'})")
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
