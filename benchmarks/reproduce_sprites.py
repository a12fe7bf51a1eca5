"""Reproduce the paper's dSprites experiment (Table 1) on the procedural sprites, offline.

    python benchmarks/reproduce_sprites.py --budget=80     # minutes; results.md at the end
    python benchmarks/reproduce_sprites.py --budget=0.3    # a smoke run of about 2 minutes

1. Stage 1: beta-VAE on `sprites`, c_dim 10, Bernoulli decoder, beta 8 (the authors'
   value; the paper sweeps 1..16). Its encoder's FVM and MIG.
2. Stage 2, twice on that one encoder, with the paper's sprites settings (Table A.3 conv
   nets, no z, RMSprop G/D lr 1e-3/1e-4, R1 10, batch 64): ID-GAN (distill_weight 1e-4)
   and ID-GAN w/o distill (distill_weight 0).
3. FID of the VAE decoder and of both generators, all in one factor classifier's feature
   space (the paper's sprites FID), and L_I of both generators.

--budget is minutes of compute on the reference machine (a 2-core CPU): it fixes every
step count through the per-step costs below, so one budget always trains the same steps.
The table, the figures and results.json land in --out_dir; the three runs are ordinary run
directories, so rerunning the same command resumes them, and a larger budget continues
them. Stage 1 uses lr 5e-4 instead of the paper's 1e-4, to get further in a short budget.
"""
import json
import os
import platform
import shutil
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

flags.DEFINE_float("budget", 80.0, "Minutes of compute on the reference 2-core CPU.")
flags.DEFINE_string("out_dir", "runs/reproduce_sprites", "Where the runs and results go.")
flags.DEFINE_integer("seed", 0, "Seed of all three runs and of the metrics.")
FLAGS = flags.FLAGS

# Reference machine costs (benchmarks/throughput.py plus the training scripts' own
# overheads), and the share of the budget each part gets.
SECONDS_PER_VAE_STEP, SECONDS_PER_GAN_STEP, SECONDS_PER_EVAL_SAMPLE = 0.06, 0.14, 0.015
VAE_SHARE, GAN_SHARE, EVAL_SHARE = 0.35, 0.25, 0.15  # GAN_SHARE is per stage-2 run
PAPER = dict(fvm="0.65", mig="0.28", fid_vae="37.75", fid_idgan="2.00")  # Table 1, dSprites


def fail(message):
    sys.exit(f"reproduce_sprites.py: error: {message}")


def plan(budget):
    """Step counts and evaluation size for a budget in minutes."""
    seconds = budget * 60

    def steps(share, cost):
        count = int(seconds * share / cost)
        return max(20, count - count % 100 if count >= 1000 else count)

    vae_steps, gan_steps = steps(VAE_SHARE, SECONDS_PER_VAE_STEP), steps(GAN_SHARE, SECONDS_PER_GAN_STEP)
    eval_samples = int(min(50_000, max(256, seconds * EVAL_SHARE / SECONDS_PER_EVAL_SAMPLE)))
    return dict(vae_steps=vae_steps, gan_steps=gan_steps, eval_samples=eval_samples)


def train(script, **flag_values):
    """Runs a training script to completion (or resumes it); its output streams through."""
    command = [sys.executable, os.path.join(ROOT, script), "--noevaluate"]
    command += [f"--{name}={value}" for name, value in flag_values.items()]
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    if subprocess.run(command).returncode != 0:
        fail(f"{script} {flag_values['out_dir']} failed (its error is above)")
    return (time.perf_counter() - start) / 60


def run_stages(steps, out_dir, seed):
    """The three training runs; returns their directories and wall-clock minutes, summed
    over the invocations that trained them (timings.json)."""
    runs = {name: os.path.join(out_dir, name) for name in ("vae", "idgan", "idgan_nodistill")}
    timings = os.path.join(out_dir, "timings.json")
    spent = {}
    if os.path.exists(timings):
        with open(timings) as f:
            spent = json.load(f)
    minutes = {"vae": train("train_vae.py", dataset="sprites", model="beta_vae", c_dim=10,
                            decoder="bernoulli", beta=8, lr=5e-4, steps=steps["vae_steps"],
                            log_every=max(10, steps["vae_steps"] // 10), seed=seed,
                            out_dir=runs["vae"])}
    for name, distill_weight in (("idgan", 1e-4), ("idgan_nodistill", 0.0)):
        minutes[name] = train("train_idgan.py", vae=runs["vae"], arch="conv", nuisance_dim=0,
                              distill_weight=distill_weight, g_lr=1e-3, d_lr=1e-4, r1=10,
                              batch_size=64, steps=steps["gan_steps"],
                              log_every=max(10, steps["gan_steps"] // 10), seed=seed,
                              out_dir=runs[name])
    minutes = {name: spent.get(name, 0.0) + value for name, value in minutes.items()}
    with open(timings, "w") as f:
        json.dump(minutes, f)
    return runs, minutes


def measure(runs, out_dir, num_samples, seed):
    """FVM, MIG and the three FIDs in one factor classifier's space, and L_I of both GANs."""
    import data
    import keras
    import metrics
    classifier_steps = min(5000, num_samples)  # as metrics.evaluate caps it
    classifier_path = os.path.join(out_dir, f"factor_classifier_{classifier_steps}.keras")
    common = dict(num_samples=num_samples, classifier_path=classifier_path, seed=seed)
    vae = metrics.evaluate(runs["vae"], out=os.path.join(out_dir, "metrics_vae.json"), **common)
    gans = {name: metrics.evaluate(runs["vae"], runs[name], disentanglement=False,
                                   out=os.path.join(out_dir, f"metrics_{name}.json"), **common)
            for name in ("idgan", "idgan_nodistill")}
    classifier = keras.models.load_model(classifier_path, compile=False)
    accuracy = metrics.factor_classifier_accuracy(
        classifier, data.ground_truth_data("sprites"), np.random.default_rng(seed + 1))
    return dict(fvm=vae["factor_vae_score"]["eval_accuracy"],
                active_dims=vae["factor_vae_score"]["num_active_dims"], mig=vae["mig"],
                fid_vae=vae["fid_vae"], fid_idgan=gans["idgan"]["fid_idgan"],
                fid_nodistill=gans["idgan_nodistill"]["fid_idgan"],
                l_i_idgan=gans["idgan"]["l_i"], l_i_nodistill=gans["idgan_nodistill"]["l_i"],
                classifier_accuracy=accuracy)


def comparison_figure(runs, path, count=8, seed=0):
    """Figure 6 for all three models: real images, then on their posterior means the VAE
    decoder, ID-GAN and ID-GAN w/o distill (one row each)."""
    import data
    import keras
    import tensorflow as tf
    from train_vae import image_grid
    load = lambda *parts: keras.models.load_model(os.path.join(*parts), compile=False)  # noqa
    encoder, decoder = load(runs["vae"], "encoder.keras"), load(runs["vae"], "decoder.keras")
    real = next(iter(data.make_dataset("sprites", 64, count, seed=seed + 2)))
    codes = np.asarray(encoder(real))[:, :encoder.output_shape[-1] // 2]
    rows = [real, decoder(codes)]
    for name in ("idgan", "idgan_nodistill"):
        rows.append((load(runs[name], "generator.keras")([np.zeros((count, 0), "float32"), codes]) + 1) / 2)
    grid = image_grid(np.concatenate([np.asarray(row) for row in rows]), rows=len(rows))
    tf.io.write_file(path, tf.io.encode_png(grid))


def collect_figures(runs, out_dir):
    """The runs' picture grids, copied under figures/ with names that say which run."""
    figures = os.path.join(out_dir, "figures")
    os.makedirs(figures, exist_ok=True)
    wanted = {"vae": ("reconstructions", "traversals"), "idgan": ("samples", "traversals"),
              "idgan_nodistill": ("samples", "traversals")}
    for run, names in wanted.items():
        for name in names:
            shutil.copy(os.path.join(runs[run], name + ".png"),
                        os.path.join(figures, f"{run}_{name}.png"))
    comparison_figure(runs, os.path.join(figures, "figure6_all.png"))


def machine():
    import tensorflow as tf
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]
    return f"{os.cpu_count()} x {cpu}" + (f", {', '.join(gpus)}" if gpus else ", no GPU")


def results_table(budget, steps, minutes, scores, where):
    """The results as markdown: this run beside the paper's dSprites numbers."""
    yes = lambda claim: "holds" if claim else "does NOT hold"  # noqa: E731
    accuracy = ", ".join(f"{name} {value:.2f}" for name, value in scores["classifier_accuracy"].items())
    rows = [
        ("beta-VAE FVM", PAPER["fvm"], f"{scores['fvm']:.3f} ({scores['active_dims']} active dims)"),
        ("beta-VAE MIG", PAPER["mig"], f"{scores['mig']:.3f}"),
        ("FID, beta-VAE decoder", PAPER["fid_vae"], f"{scores['fid_vae']:.2f}"),
        ("FID, ID-GAN", PAPER["fid_idgan"], f"{scores['fid_idgan']:.2f}"),
        ("FID, ID-GAN w/o distill", "-", f"{scores['fid_nodistill']:.2f}"),
        ("L_I, ID-GAN", "-", f"{scores['l_i_idgan']:.2f}"),
        ("L_I, ID-GAN w/o distill", "-", f"{scores['l_i_nodistill']:.2f}"),
    ]
    lines = [
        f"Budget {budget:g} minutes on the reference CPU: beta-VAE {steps['vae_steps']:,} steps "
        f"({minutes['vae']:.1f} min), ID-GAN {steps['gan_steps']:,} steps ({minutes['idgan']:.1f} "
        f"min), w/o distill {steps['gan_steps']:,} steps ({minutes['idgan_nodistill']:.1f} min), "
        f"metrics on {steps['eval_samples']:,} samples ({minutes['metrics']:.1f} min). "
        f"Machine: {where}.",
        "",
        "| metric | paper (dSprites, 3e5 steps, Table 1) | this run (procedural sprites) |",
        "| --- | --- | --- |",
        *[f"| {name} | {paper} | {ours} |" for name, paper, ours in rows],
        "",
        f"- FID of ID-GAN below the VAE decoder's: {yes(scores['fid_idgan'] < scores['fid_vae'])}.",
        f"- L_I of ID-GAN above w/o distill: {yes(scores['l_i_idgan'] > scores['l_i_nodistill'])}.",
        f"- FIDs use our factor classifier's penultimate features (accuracy on fresh samples: "
        f"{accuracy}), not the paper's classifier: compare them with each other, not with "
        f"the paper's values. L_I is in nats, summed over the 10 code dimensions.",
    ]
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}")
    if not FLAGS.budget > 0:
        fail(f"--budget must be a positive number of minutes, not {FLAGS.budget}")
    out_dir = os.path.abspath(FLAGS.out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        fail(f"cannot create --out_dir {FLAGS.out_dir}: {error.strerror}")
    steps = plan(FLAGS.budget)
    print(f"Budget {FLAGS.budget:g} min: {steps}", flush=True)
    runs, minutes = run_stages(steps, out_dir, FLAGS.seed)
    start = time.perf_counter()
    scores = measure(runs, out_dir, steps["eval_samples"], FLAGS.seed)
    collect_figures(runs, out_dir)
    minutes["metrics"] = (time.perf_counter() - start) / 60
    table = results_table(FLAGS.budget, steps, minutes, scores, machine())
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(dict(budget=FLAGS.budget, **steps, minutes=minutes, **scores), f, indent=2)
    print(table)


def parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(error)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
