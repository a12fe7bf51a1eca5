"""Seconds per backup of the whole training state (what train_*.py write every
--backup_every steps), and the size of the file, for the sprites and 64 px ResNet models
(benchmarks/models.py's beta_vae, idgan_conv and idgan_resnet64).

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

import models  # noqa: E402 (benchmarks/models.py)
from train_vae import write_atomically  # noqa: E402


def built(case):
    """models.py's compiled model of `case`, its weights and optimizer slots all created."""
    model = models.build(case)
    if case == "beta_vae":
        model(np.zeros((1, 64, 64, 1), "float32"))  # builds the Keras model around the nets
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
    for name, case in [("beta-VAE, sprites 64 px", "beta_vae"),
                       ("ID-GAN conv, sprites 64 px", "idgan_conv"),
                       ("ID-GAN ResNet 64 px, nf 64", "idgan_resnet64")]:
        seconds, megabytes = backup_seconds(built(case))
        print(f"{name:>28}: {seconds:.3f} s per backup, {megabytes:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
