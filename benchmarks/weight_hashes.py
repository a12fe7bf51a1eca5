"""Fixed-seed short runs of every training script, and a hash of each run's final state.

    python benchmarks/weight_hashes.py --out=/tmp/hashes.json [--compare=before.json]

Trains, at tiny sizes and a fixed seed, the beta-VAE, the FactorVAE, ID-GAN with the conv
nets, ID-GAN with the ResNets and a VDB, and each comparison system of
benchmarks/train_baseline.py, then hashes each run's checkpoint.weights.h5 (every weight,
optimizer slot, moving average and random-generator state). A hash covers the values and
shapes of the arrays, not their names, so a refactor that renames an attribute but trains
the same numbers keeps it. Then it scores two of those runs with benchmarks/evaluate.py at
a tiny size (ID-GAN on the beta-VAE, and InfoGAN, whose c comes from its prior) and hashes
each metrics.json, every number as written, with the temporary directory's name taken out.
With --compare, it says which entries differ from an earlier list.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import h5py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--batch_size=8", "--steps=6", "--log_every=3", "--backup_every=3", "--noevaluate",
        "--seed=1"]
VAE = ["--res=32", "--c_dim=3"]
BASELINE = os.path.join("benchmarks", "train_baseline.py")
RUNS = {  # name: (script, flags); {beta_vae} is that run's directory
    "beta_vae": ("train_vae.py", VAE),
    "factor_vae": ("train_vae.py", VAE + ["--model=factor_vae"]),
    "idgan_conv": ("train_idgan.py", ["--vae={beta_vae}"]),
    "idgan_resnet_vdb": ("train_idgan.py", ["--vae={beta_vae}", "--arch=resnet", "--nf=4",
                                            "--nf_max=8", "--vdb"]),
    "infogan": (BASELINE, ["--system=infogan", "--res=32", "--c_dim=3"]),
    "vae_gan": (BASELINE, ["--system=vae_gan", "--res=32", "--c_dim=3"]),
    "end_to_end": (BASELINE, ["--system=end_to_end", "--res=32", "--c_dim=3"]),
    "cgan": (BASELINE, ["--system=cgan", "--vae={beta_vae}"]),
}
EVALUATIONS = {  # name: evaluate.py's flags; the metrics.json hashed is the last run's
    "metrics_idgan_conv": ["--vae={beta_vae}", "--idgan={idgan_conv}"],
    "metrics_infogan": ["--vae={infogan}", "--idgan={infogan}"],
}
EVALUATE = [os.path.join("benchmarks", "evaluate.py"), "--num_samples=64", "--batch_size=16"]


def state_hash(path):
    """sha256 over the sorted per-array digests (dtype, shape, bytes) of an .h5 file."""
    digests = []
    with h5py.File(path) as f:
        def visit(_, item):
            if isinstance(item, h5py.Dataset):
                value = item[()]
                digest = hashlib.sha256(f"{value.dtype}{value.shape}".encode())
                digest.update(value.tobytes() if hasattr(value, "tobytes") else bytes(value))
                digests.append(digest.hexdigest())
        f.visititems(visit)
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file for {run: hash}.")
    parser.add_argument("--compare", help="An earlier --out file to compare with.")
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    hashes = {}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {name: os.path.join(tmp, name) for name in RUNS}
        for name, (script, flags) in RUNS.items():
            flags = [f.format(**dirs) for f in flags] + TINY + [f"--out_dir={dirs[name]}"]
            result = subprocess.run([sys.executable, os.path.join(ROOT, script), *flags],
                                    cwd=ROOT, env=env, capture_output=True, text=True)
            if result.returncode:
                sys.exit(f"{name} failed: {result.stderr.strip().splitlines()[-1]}")
            hashes[name] = state_hash(os.path.join(dirs[name], "checkpoint.weights.h5"))
            print(f"{name:>18}  {hashes[name][:16]}", flush=True)
        for name, flags in EVALUATIONS.items():
            out = os.path.join(tmp, name + ".json")
            flags = [f.format(**dirs) for f in flags] + [f"--out={out}"]
            result = subprocess.run([sys.executable, *EVALUATE, *flags], cwd=ROOT, env=env,
                                    capture_output=True, text=True)
            if result.returncode:
                sys.exit(f"{name} failed: {result.stderr.strip().splitlines()[-1]}")
            text = open(out).read().replace(tmp, "TMP")  # run paths are written into it
            hashes[name] = hashlib.sha256(text.encode()).hexdigest()
            print(f"{name:>18}  {hashes[name][:16]}", flush=True)
    with open(args.out, "w") as f:
        json.dump(hashes, f, indent=2)
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
        differ = [name for name in hashes if before.get(name) != hashes[name]]
        print("identical to " + args.compare if not differ else "differ: " + ", ".join(differ))
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
