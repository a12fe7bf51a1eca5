"""Rerun the paper's comparisons on the procedural sprites, at a budget of CPU minutes.

    python benchmarks/tables.py --table=gap --budget=60    # where the FID gap comes from
    python benchmarks/tables.py --table=2 --budget=150     # Table 2: one or two objectives
    python benchmarks/tables.py --table=1 --budget=150     # Table 1 on color_sprites
    python benchmarks/tables.py --table=3 --budget=40      # Table 3 on sprites (paper: CelebA)

gap  FID over training steps, in one factor classifier's features, of the beta-VAE decoder,
     (a) ID-GAN on that beta-VAE's encoder, (b) ID-GAN on an oracle encoder that returns
     the standardised ground-truth factors (benchmarks/baselines.py), (c) the plain GAN.
2    sprites, --seeds seeds: beta-VAE, VAE-GAN, end-to-end ID-GAN, two-step ID-GAN.
1    color_sprites: VAE (beta 1), beta-VAE, FactorVAE, GAN, InfoGAN, ID-GAN on each VAE.
3    sprites: cGAN, ID-GAN w/o distill and ID-GAN on one beta-VAE: FID, L_I, GILBO.

--budget is minutes of the machine the table runs on and fixes every step count: all
stage-1 runs of a table train the same steps, and so do all its GANs. The seconds per step
come from short timed runs of each system here first (--probe_steps; measure_costs), and
the plan is printed with its expected wall time before anything trains. Settings are the
authors' (1Konny/idgan configs/dsprites.yaml; the README's "Published settings") except
stage 1's lr, 5e-4 instead of 1e-4, to get further in a CPU budget. Every run is an
ordinary run directory under --out_dir/table<name>, so the same command resumes, and a
larger budget continues the runs. The table lands in results.md (the paper's numbers beside
ours; each FID with its spread and floor), results.json and figures/, written by
benchmarks/table_report.py, which re-writes them alone from a table's results.json and
metrics/ (`python benchmarks/table_report.py DIR`). For the paper's
step counts (3e5 GAN steps, on a GPU) give --budget so that the printed plan reaches them.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

import table_report  # noqa: E402 (benchmarks/table_report.py)

FLAGS = flags.FLAGS

# Seconds per training step, batch 64, 64 px, on the reference CPU (2 cores of an AMD EPYC
# with AVX-512; benchmarks/throughput.py and the scripts' own logging): the plan's costs
# with --probe_steps=0, and the yardstick that scales EVAL_SECONDS to a measured machine.
# The plan's shares of the budget (SHARES below): stage 1, stage 2, the rest evaluation.
COSTS = dict(beta_vae=0.06, factor_vae=0.07, oracle=0.03, vae_gan=0.13, idgan=0.14, gan=0.13,
             infogan=0.14, cgan=0.15, end_to_end=0.2)
# Seconds per unit of each evaluation stage on sprites at 64 px, on the same CPU
# (benchmarks/results/metric_timings/README.md, `python benchmarks/metric_timings.py --stages`),
# by the names of evaluation_stages. GILBO's training pairs count twice.
EVAL_SECONDS = {"factor classifier": 0.026, "FactorVAE metric": 2.2e-4, "MIG": 2.2e-4,
                "FID, real": 3.5e-4, "FID, VAE": 8e-4, "FID, ID-GAN": 1.1e-3, "L_I": 8e-4,
                "GILBO": 8e-4}
FID_POINTS, FID_SAMPLES = 10, 2000  # FIDs along each curve of --table=gap, and their size
VAE_FLAGS = dict(c_dim=10, lr=5e-4)


def define_flags():
    flags.DEFINE_enum("table", None, ["gap", "1", "2", "3"], "Which comparison.")
    flags.DEFINE_float("budget", None, "Minutes of this machine for the whole table.")
    flags.DEFINE_string("out_dir", "runs/tables", "Where the tables' runs and results go.")
    flags.DEFINE_integer("seeds", 2, "Table 2: seeds per system (the paper: 5).")
    flags.DEFINE_integer("probe_steps", 600, "Steps of each system's timed run before planning "
                         "(an even number; 0: plan from COSTS, the reference CPU's); 200 "
                         "underestimated the GANs' long runs (results/table2/README.md).",
                         lower_bound=0)
    flags.register_validator("probe_steps", lambda n: n % 2 == 0, "must be even")
    flags.DEFINE_integer("eval_samples", 0, "FID and L_I samples (0: the plan's, the largest "
                         "that fits the budget); pins a committed table's size.", lower_bound=0)


def fail(message):
    """One line and exit status 2, as train_vae.fail (whose import would load TensorFlow)."""
    print(f"tables.py: error: {message}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------
# Which runs each table trains. A run: (name, script, flags, cost key, stage); flags name
# other runs as "@name", resolved to their directories.


def vae_run(name, dataset, model="beta_vae", seed=0, **extra):
    flags = dict(dataset=dataset, model=model, seed=seed, **VAE_FLAGS, **extra)
    return (name, "train_vae.py", flags, model, 1)


def gan_run(name, vae, cost="idgan", seed=0, script="train_idgan.py", stage=2, **extra):
    flags = dict(vae=f"@{vae}", seed=seed, **extra) if vae else dict(seed=seed, **extra)
    return (name, script, flags, cost, stage)


def baseline_run(name, system, seed=0, stage=2, vae=None, **extra):
    return gan_run(name, vae, system, seed, "benchmarks/train_baseline.py", stage,
                   system=system, **extra)


def table_runs(table, seeds):
    if table == "gap":
        return [vae_run("vae", "sprites"),
                ("oracle", None, dict(dataset="sprites"), "oracle", 1),
                gan_run("idgan", "vae"), gan_run("idgan_oracle", "oracle"),
                gan_run("gan", "vae", cost="gan", use_codes=False, nuisance_dim=10)]
    if table == "2":
        runs = []
        for seed in range(seeds):
            # VAE-GAN and end-to-end ID-GAN learn their encoders: stage-1 steps.
            runs += [vae_run(f"beta_vae_s{seed}", "sprites", seed=seed),
                     baseline_run(f"vae_gan_s{seed}", "vae_gan", seed, 1, lr=VAE_FLAGS["lr"]),
                     baseline_run(f"end_to_end_s{seed}", "end_to_end", seed, 1,
                                  lr=VAE_FLAGS["lr"]),
                     gan_run(f"idgan_s{seed}", f"beta_vae_s{seed}", seed=seed)]
        return runs
    if table == "1":
        vaes = dict(vae=dict(beta=1.0), beta_vae={}, factor_vae=dict(model="factor_vae"))
        return ([vae_run(name, "color_sprites", **extra) for name, extra in vaes.items()]
                + [gan_run("gan", "beta_vae", "gan", use_codes=False, nuisance_dim=10),
                   baseline_run("infogan", "infogan", dataset="color_sprites")]
                + [gan_run(f"idgan_{name}", name) for name in vaes])
    return [vae_run("beta_vae", "sprites"),
            baseline_run("cgan", "cgan", vae="beta_vae"),
            gan_run("idgan_nodistill", "beta_vae", distill_weight=0.0),
            gan_run("idgan", "beta_vae")]


def table_evaluations(table, seeds):
    """[(name, stage-1 run, stage-2 run or None, with FVM and MIG)]: metrics.evaluate calls."""
    if table == "gap":
        return []  # the FID curves are the result
    if table == "2":
        return [row for s in range(seeds) for row in (
            (f"beta_vae_s{s}", f"beta_vae_s{s}", None, True),
            (f"idgan_s{s}", f"beta_vae_s{s}", f"idgan_s{s}", False),
            (f"vae_gan_s{s}", f"vae_gan_s{s}", None, True),  # FID of decoder(prior samples)
            (f"end_to_end_s{s}", f"end_to_end_s{s}", f"end_to_end_s{s}", True))]
    if table == "1":
        vaes = ("vae", "beta_vae", "factor_vae")
        return ([(run, run, None, True) for run in vaes]
                + [("gan", "beta_vae", "gan", False), ("infogan", "infogan", "infogan", True)]
                + [(f"idgan_{run}", run, f"idgan_{run}", False) for run in vaes])
    return [(run, "beta_vae", run, False) for run in ("cgan", "idgan_nodistill", "idgan")]


SHARES = {"gap": (0.35, 0.65), "2": (0.6, 0.25), "1": (0.35, 0.5), "3": (0.2, 0.65)}


def evaluation_stages(n, has_idgan, disentanglement):
    """[(stage, units)] of metrics.evaluate on n samples of a sprites run after its factor
    classifier, named as EVAL_SECONDS; GILBO's units count its training pairs twice."""
    import metrics
    fvm, gilbo_steps = metrics.evaluation_sizes(n)
    stages = [("FactorVAE metric", images) for _, images in fvm.values()] + [
        ("MIG", min(10_000, n))] if disentanglement else []
    stages += [("FID, real", 2 * n), ("FID, VAE", n)]  # a second real set: the floor
    return stages + [("FID, ID-GAN", n), ("L_I", n), (
        "GILBO", n + 2 * gilbo_steps * metrics.GILBO_BATCH)] * has_idgan


def plan(table, budget, seeds, costs=COSTS):
    """Steps of every stage-1 and every stage-2 run, and evaluation samples: the largest
    size whose estimated time (evaluation_stages) fits the rest of the budget; costs:
    seconds per step of each cost key (measure_costs)."""
    runs, seconds = table_runs(table, seeds), budget * 60
    shares, scale = SHARES[table], machine_scale(costs)

    def steps(stage):
        cost = sum(costs[run[3]] for run in runs if run[4] == stage)
        count = int(seconds * shares[stage - 1] / cost)
        return max(10, count - count % 100 if count >= 1000 else count - count % 10)

    left = seconds * (1 - sum(shares))
    sizes = [n for n in (64, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)
             if eval_seconds(table, seeds, n, scale) <= left] or [64]
    return dict(stage1_steps=steps(1), stage2_steps=steps(2),
                eval_samples=0 if table == "gap" else sizes[-1])


def eval_seconds(table, seeds, n, scale=1.0):
    """Estimated seconds of the table's evaluations on n samples: EVAL_SECONDS times scale,
    this machine's speed relative to the reference CPU (machine_scale)."""
    stages = [stage for _, _, gan, dis in table_evaluations(table, seeds)
              for stage in evaluation_stages(n, bool(gan), dis)] if n else []
    classifier = min(5000, n) * EVAL_SECONDS["factor classifier"] if n else 0.0
    return scale * (sum(EVAL_SECONDS[name] * units for name, units in stages) + classifier)


def machine_scale(costs):
    """The median ratio of costs to COSTS over their keys: how much slower this machine
    trains than the reference CPU (1 for COSTS itself)."""
    return statistics.median(costs[key] / COSTS[key] for key in costs)


def expected_minutes(table, seeds, steps, costs):
    """The plan's wall time on the machine of `costs`: every run's steps times its cost, and
    the evaluations' estimate (start-up, tracing and logging left out)."""
    training = sum(steps[f"stage{stage}_steps"] * costs[key]
                   for _, _, _, key, stage in table_runs(table, seeds))
    return (training + eval_seconds(table, seeds, steps["eval_samples"],
                                    machine_scale(costs))) / 60


# A training script's progress line: "step 100/200: losses (50.0%, 3.21 steps/s, ...)", its
# rate counted from the start of training.
PROGRESS = re.compile(r"^step (\d+)/\d+.* \([\d.]+%, ([\d.e+-]+) steps/s")


def probe_cost(lines):
    """Seconds per step between the last two progress lines of a run's output: the steps
    between them over the time between them, each time = step / its rate since the start,
    so start-up and tracing (before the first line) drop out."""
    points = [(int(m[1]), float(m[2])) for m in map(PROGRESS.match, lines) if m]
    if len(points) < 2:
        raise ValueError(f"no two progress lines in {len(lines)} lines of output")
    (step1, rate1), (step2, rate2) = points[-2:]
    return max((step2 / rate2 - step1 / rate1) / (step2 - step1), 1e-6)


def measure_costs(table, seeds, out_dir, probe_steps):
    """{cost key: seconds per training step here}, from the first run of each key, trained
    probe_steps steps from scratch in <out_dir>/probes/<key> with its table flags, timed
    between its logs at half and all of probe_steps (probe_cost; one picture log and one
    backup fall inside, so the figure errs long). Stage-2 probes use the stage-1 probes.
    The oracle (no script; gap table only) keeps its COSTS figure. Cached in costs.json."""
    path = os.path.join(out_dir, "costs.json")
    if os.path.exists(path) and read_json(path).get("probe_steps") == probe_steps:
        return read_json(path)["costs"]
    runs, costs = table_runs(table, seeds), {}
    probes = {run[0]: os.path.join(out_dir, "probes", run[3]) for run in runs}
    print(f"Timing {probe_steps} steps of each system on this machine:", flush=True)
    for name, script, flag_values, key, _ in runs:
        if key in costs:
            continue
        if script is None:  # the oracle encoder, as a directory for the stage-2 probes
            train_oracle(probes[name], flag_values["dataset"], 10)
            costs[key] = COSTS[key]
            continue
        values = resolve(flag_values, probes)
        values.update(steps=probe_steps, out_dir=probes[name], log_every=probe_steps // 2,
                      backup_every=probe_steps // 2, overwrite=True)
        result = subprocess.run(command(script, values), capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            fail(f"the timed run of {key} failed: {last}")
        costs[key] = probe_cost(result.stdout.splitlines())
        print(f"  {key}: {costs[key]:.3f} s/step (reference CPU: {COSTS[key]})", flush=True)
    write_json(path, dict(probe_steps=probe_steps, costs=costs))
    return costs


# ---------------------------------------------------------------------------------------
# Training: each run is a subprocess of its script, resumed if its directory exists.


def train(run, dirs, steps, classifier):
    """Train (or resume, or find finished) one run; the gap table's runs log FID curves."""
    name, script, flag_values, _, stage = run
    count, values = steps[f"stage{stage}_steps"], resolve(flag_values, dirs)
    if script is None:
        return train_oracle(dirs[name], values["dataset"], count)
    every = max(100, count // 5)  # pictures and backups; a tiny run only at its end
    values.update(steps=count, out_dir=dirs[name], log_every=every, backup_every=every)
    if classifier:
        values.update(fid_every=max(1, count // FID_POINTS), fid_classifier=classifier,
                      fid_samples=min(FID_SAMPLES, 20 * count))
    line = command(script, values)
    print("$", " ".join(line[1:]), flush=True)
    start = time.perf_counter()
    if subprocess.run(line).returncode != 0:
        fail(f"{script} {dirs[name]} failed (its error is above)")
    return time.perf_counter() - start


def resolve(flag_values, dirs):
    """A run's flags with each "@name" replaced by that run's directory in dirs."""
    return {k: dirs[v[1:]] if isinstance(v, str) and v.startswith("@") else v
            for k, v in flag_values.items()}


def command(script, values):
    """The command line training `script` with flag values (booleans as --name/--noname)."""
    return [sys.executable, os.path.join(ROOT, script), "--noevaluate"] + [
        f"--{'' if v else 'no'}{k}" if isinstance(v, bool) else f"--{k}={v}"
        for k, v in values.items()]


def train_oracle(run_dir, dataset, steps):
    """The oracle encoder as a stage-1 run directory (flags.json, encoder.keras)."""
    record = os.path.join(run_dir, "oracle.json")
    if os.path.exists(record) and read_json(record)["steps"] == steps:
        return 0.0
    import baselines
    import data
    truth = data.ground_truth_data(dataset)
    print(f"oracle encoder: {steps} steps of regression onto the factors", flush=True)
    start, every = time.perf_counter(), max(1, steps // 10)
    progress = lambda step: step % every or print(  # noqa: E731
        f"  oracle step {step}/{steps} ({time.perf_counter() - start:.0f} s)", flush=True)
    encoder, r_squared = baselines.train_oracle_encoder(truth, steps, progress=progress)
    os.makedirs(run_dir, exist_ok=True)
    encoder.save(os.path.join(run_dir, "encoder.keras"))
    write_json(os.path.join(run_dir, "flags.json"), dict(
        dataset=dataset, res=64, c_dim=len(truth.factor_sizes), model="oracle", steps=steps))
    write_json(record, dict(steps=steps, r_squared=r_squared))
    return time.perf_counter() - start


def gap_classifier(out_dir, steps):
    """The factor classifier every curve of --table=gap is measured with, trained here
    (5000 steps, or five times the stage-1 steps if fewer; seed 0) and shared by path."""
    import data
    import metrics
    path = os.path.join(out_dir, "fid_classifier.keras")
    classifier_steps = min(5000, 5 * steps["stage1_steps"])
    print(f"FID features: the factor classifier {path} ({classifier_steps:,} steps, about "
          f"{classifier_steps * EVAL_SECONDS['factor classifier'] / 60:.0f} min if not cached)",
          flush=True)
    _, record = metrics.load_or_train_factor_classifier(
        path, data.ground_truth_data("sprites"), classifier_steps, dataset="sprites")
    print(f"  its accuracy on fresh samples: {record['accuracy']}", flush=True)
    return path


def real_floor(classifier_path, samples=FID_SAMPLES):
    """FID of two independent sets of `samples` real sprites in the gap classifier's
    features: the lowest FID that means anything at the curves' sample size."""
    import data
    import keras
    import metrics
    features = metrics.classifier_features_fn(
        keras.models.load_model(classifier_path, compile=False))
    first, second = (metrics.real_statistics(data.make_dataset("sprites", 64, 100, seed=seed),
                                             features, samples) for seed in (101, 102))
    return metrics.frechet_distance(*first, *second)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


# ---------------------------------------------------------------------------------------
# Scores: metrics.evaluate per run, cached with the plan they describe (a rerun of a
# finished table does not evaluate again; a larger budget does).


def evaluate(out_dir, dirs, evaluation, steps, seed=0):
    from evaluate import evaluate as evaluate_runs  # benchmarks/evaluate.py
    name, vae, gan, disentanglement = evaluation
    path = os.path.join(out_dir, "metrics", f"{name}.json")
    if os.path.exists(path) and read_json(path).get("plan") == steps:
        return read_json(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    samples = steps["eval_samples"]
    print(f"metrics of {name} on {samples:,} samples", flush=True)
    results = evaluate_runs(dirs[vae], gan and dirs[gan], num_samples=samples, out=path,
                            classifier_path=os.path.join(out_dir, "factor_classifier.keras"),
                            disentanglement=disentanglement, seed=seed, log=lambda line: None)
    write_json(path, dict(results, plan=steps))
    return results


def cpu_model():
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}")
    if FLAGS.table is None:
        fail("--table is required: gap, 1, 2 or 3")
    if FLAGS.budget is None or not FLAGS.budget > 0:
        fail(f"--budget must be a positive number of minutes, not {FLAGS.budget}")
    if FLAGS.seeds < 1:
        fail(f"--seeds={FLAGS.seeds} must be positive")
    table, seeds = FLAGS.table, FLAGS.seeds if FLAGS.table == "2" else 1
    out_dir = os.path.abspath(os.path.join(FLAGS.out_dir, f"table{table}"))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        fail(f"cannot create --out_dir {FLAGS.out_dir}: {error.strerror}")
    timings_path = os.path.join(out_dir, "timings.json")
    minutes = read_json(timings_path) if os.path.exists(timings_path) else {}
    start = time.perf_counter()
    costs = measure_costs(table, seeds, out_dir, FLAGS.probe_steps) if FLAGS.probe_steps else (
        COSTS)
    minutes["probes"] = minutes.get("probes", 0.0) + (time.perf_counter() - start) / 60
    steps, runs = plan(table, FLAGS.budget, seeds, costs), table_runs(table, seeds)
    if FLAGS.eval_samples and table != "gap":
        steps["eval_samples"] = FLAGS.eval_samples
    how = (f"from {FLAGS.probe_steps}-step timed runs here" if FLAGS.probe_steps else
           "the reference CPU's (COSTS)")
    print(f"Table {table}, budget {FLAGS.budget:g} min: {steps}; expected "
          f"{expected_minutes(table, seeds, steps, costs):.0f} min of training and metrics, "
          f"seconds per step {how}: {costs}", flush=True)
    dirs = {run[0]: os.path.join(out_dir, run[0]) for run in runs}
    classifier = gap_classifier(out_dir, steps) if table == "gap" else None
    for run in runs:
        minutes[run[0]] = minutes.get(run[0], 0.0) + train(run, dirs, steps, classifier) / 60
        write_json(timings_path, minutes)
    start = time.perf_counter()
    results = {e[0]: evaluate(out_dir, dirs, e, steps) for e in table_evaluations(table, seeds)}
    minutes["metrics"] = (time.perf_counter() - start) / 60
    header = (f"Table {table} at --budget={FLAGS.budget:g}: stage-1 runs "
              f"{steps['stage1_steps']:,} steps, stage-2 runs {steps['stage2_steps']:,} steps"
              + (f", metrics on {steps['eval_samples']:,} samples" if steps["eval_samples"] else "")
              + f"; {sum(minutes.values()):.0f} min on {os.cpu_count()} x {cpu_model()}, "
              f"planned from seconds per step {how}.")
    summary = dict(table=table, budget=FLAGS.budget, seeds=seeds, plan=steps, minutes=minutes,
                   costs=costs, costs_measured=bool(FLAGS.probe_steps),
                   runs={name: os.path.relpath(d, out_dir) for name, d in dirs.items()})
    figures = table_report.collect_figures(runs, dirs, out_dir)
    if table == "gap":
        summary.update(table_report.gap_report(dirs, figures, real_floor(
            classifier, min(FID_SAMPLES, 20 * min(steps["stage1_steps"], steps["stage2_steps"])))))
        lines = table_report.gap_markdown(summary)
    else:
        rows = table_report.table_rows(table, results, seeds)
        summary.update(rows=rows, metrics={
            k: os.path.relpath(os.path.join(out_dir, "metrics", k + ".json"), out_dir)
            for k in results})
        lines = table_report.markdown(table, rows, seeds, missing="not measured")
    print(table_report.write_results(out_dir, summary, header, lines))


def parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(error)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
