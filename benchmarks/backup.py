"""Seconds per backup of the whole training state (what train_*.py write every
--backup_every steps), and the size of the file, for the sprites and 64 px ResNet models.

    python benchmarks/backup.py
"""
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import idgan  # noqa: E402
import vae  # noqa: E402
from train_vae import write_atomically  # noqa: E402


def beta_vae():
    model = vae.BetaVAE(vae.build_encoder(10), vae.build_decoder(10), beta=8.0)
    model.compile(optimizer=vae.adam(1e-4))
    model(np.zeros((1, 64, 64, 1), "float32"))
    model.build_optimizers()
    return model


def id_gan(arch):
    if arch == "conv":
        nets, encoder = (idgan.build_conv_generator(10, 0), idgan.build_conv_discriminator()), \
            vae.build_encoder(10)
        model = idgan.IDGAN(*nets, encoder, nuisance_dim=0, c_dim=10)
    else:
        nets = idgan.build_resnet_generator(20, 256, 64), idgan.build_resnet_discriminator(64)
        model = idgan.IDGAN(*nets, vae.build_encoder(20, 64, 3), nuisance_dim=256, c_dim=20)
    model.compile(idgan.rmsprop(1e-4), idgan.rmsprop(1e-4))
    return model


def backup_seconds(model, repeats=5):
    """Median seconds of the finiteness check plus the atomic save, as RunMonitor does."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "checkpoint.weights.h5")
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            assert all(np.isfinite(w).all() for w in model.get_weights())
            write_atomically(path, model.save_weights)
            times.append(time.perf_counter() - start)
        return statistics.median(times), os.path.getsize(path) / 2**20


def main():
    for name, build in [("beta-VAE, sprites 64 px", beta_vae),
                        ("ID-GAN conv, sprites 64 px", lambda: id_gan("conv")),
                        ("ID-GAN ResNet 64 px, nf 64", lambda: id_gan("resnet"))]:
        seconds, megabytes = backup_seconds(build())
        print(f"{name:>28}: {seconds:.3f} s per backup, {megabytes:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
