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

--budget is minutes of a 2-core CPU (measured on an AMD EPYC with AVX-512: COSTS below)
and fixes every step count: all stage-1 runs of a table train the same steps, and so do
all its GANs. Settings are the authors' (SPEC.md, configs/dsprites.yaml) except stage 1's
lr, 5e-4 instead of 1e-4, to get further in a CPU budget. Every run is an ordinary run
directory under --out_dir/table<name>, so the same command resumes, and a larger budget
continues the runs. The table lands in results.md (the paper's numbers beside ours),
results.json and figures/. For the paper's step counts (3e5 GAN steps, on a GPU) give
--budget so that the printed plan reaches them, e.g. --table=gap --budget=3200.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # before benchmarks/, whose metrics.py is a benchmark

from absl import app, flags  # noqa: E402

flags.DEFINE_enum("table", None, ["gap", "1", "2", "3"], "Which comparison.")
flags.DEFINE_float("budget", None, "Minutes of a 2-core CPU for the whole table.")
flags.DEFINE_string("out_dir", "runs/tables", "Where the tables' runs and results go.")
flags.DEFINE_integer("seeds", 2, "Table 2: seeds per system (the paper: 5).")
FLAGS = flags.FLAGS

# Seconds per training step, batch 64, 64 px, on the reference CPU (2 cores of an AMD EPYC
# with AVX-512; benchmarks/throughput.py and the scripts' own logging), and per sample of
# evaluation. Shares of the budget: stage 1, stage 2, evaluation.
COSTS = dict(beta_vae=0.06, factor_vae=0.07, oracle=0.03, vae_gan=0.13, idgan=0.14, gan=0.13,
             infogan=0.14, cgan=0.15, end_to_end=0.2)
SECONDS_PER_EVAL_SAMPLE = 0.004  # per sample, per metrics.evaluate call
STAGE1_SHARE, STAGE2_SHARE = 0.35, 0.5
FID_POINTS, FID_SAMPLES = 10, 2000  # FIDs along each curve of --table=gap, and their size
PAPER_STEPS = 300_000
VAE_FLAGS = dict(c_dim=10, lr=5e-4)

# The paper's numbers (mean +- std over 5 seeds): Table 2 on dSprites, Table 1 on
# Color-dSprites. Its Table 3 is on CelebA 128 px, not comparable with sprites.
PAPER = {
    "2": {"beta-VAE": ("0.65 ± 0.08", "0.28 ± 0.09", "37.75 ± 24.58"),
          "VAE-GAN": ("0.46 ± 0.18", "0.13 ± 0.11", "33.54 ± 24.93"),
          "ID-GAN (end-to-end)": ("0.50 ± 0.14", "0.13 ± 0.09", "3.18 ± 2.38"),
          "ID-GAN (two-step)": ("0.65 ± 0.08", "0.28 ± 0.09", "2.00 ± 1.74")},
    "1": {"VAE": (".67 ± .12", ".16 ± .08", "21.63 ± 4.97"),
          "beta-VAE": (".67 ± .07", ".32 ± .04", "15.13 ± 4.25"),
          "FactorVAE": (".69 ± .05", ".37 ± .02", "10.71 ± 5.73"),
          "GAN": ("N/A", "N/A", "0.30 ± 0.07"),
          "InfoGAN": (".34", ".01 ± .01", "30.55 ± 21.17"),
          "ID-GAN + VAE": (".67 ± .12", ".16 ± .08", "0.32 ± 0.10"),
          "ID-GAN + beta-VAE": (".67 ± .07", ".32 ± .04", "0.25 ± 0.23"),
          "ID-GAN + FactorVAE": (".69 ± .05", ".37 ± .02", "0.75 ± 0.54")},
}


def fail(message):
    sys.exit(f"tables.py: error: {message}")


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


def plan(table, budget, seeds):
    """Steps of every stage-1 and every stage-2 run, and evaluation samples: the largest
    size whose estimated time (metrics.evaluation_stages) fits the rest of the budget."""
    import metrics
    runs, seconds = table_runs(table, seeds), budget * 60
    shares = SHARES[table]

    def steps(stage):
        cost = sum(COSTS[run[3]] for run in runs if run[4] == stage)
        count = int(seconds * shares[stage - 1] / cost)
        return max(10, count - count % 100 if count >= 1000 else count - count % 10)

    def eval_seconds(n):
        stages = [stage for _, _, gan, dis in table_evaluations(table, seeds)
                  for stage in metrics.evaluation_stages(n, True, bool(gan), 64, dis)
                  if stage[0] != "factor classifier training"]
        return sum(stage[-1] for stage in stages) + min(5000, n) * metrics.SECONDS["classifier_step"]

    left = seconds * (1 - sum(shares))
    sizes = [n for n in (64, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)
             if eval_seconds(n) <= left] or [64]
    return dict(stage1_steps=steps(1), stage2_steps=steps(2),
                eval_samples=0 if table == "gap" else sizes[-1])


# ---------------------------------------------------------------------------------------
# Training: each run is a subprocess of its script, resumed if its directory exists.


def train(run, dirs, steps, classifier):
    """Train (or resume, or find finished) one run; the gap table's runs log FID curves."""
    name, script, flag_values, _, stage = run
    count = steps[f"stage{stage}_steps"]
    values = {k: dirs[v[1:]] if isinstance(v, str) and v.startswith("@") else v
              for k, v in flag_values.items()}
    if script is None:
        return train_oracle(dirs[name], values["dataset"], count)
    every = max(100, count // 5)  # pictures and backups; a tiny run only at its end
    values.update(steps=count, out_dir=dirs[name], log_every=every, backup_every=every)
    if classifier:
        values.update(fid_every=max(1, count // FID_POINTS), fid_classifier=classifier,
                      fid_samples=min(FID_SAMPLES, 20 * count))
    command = [sys.executable, os.path.join(ROOT, script), "--noevaluate"] + [
        f"--{'' if v else 'no'}{k}" if isinstance(v, bool) else f"--{k}={v}"
        for k, v in values.items()]
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    if subprocess.run(command).returncode != 0:
        fail(f"{script} {dirs[name]} failed (its error is above)")
    return time.perf_counter() - start


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
    (5000 steps, fewer for a budget under about 4 minutes, seed 0) and shared by path."""
    import data
    import metrics
    path = os.path.join(out_dir, "fid_classifier.keras")
    classifier_steps = min(5000, 5 * steps["stage1_steps"])
    print(f"FID features: the factor classifier {path} ({classifier_steps:,} steps, about "
          f"{classifier_steps * metrics.SECONDS['classifier_step'] / 60:.0f} min if not cached)",
          flush=True)
    _, record = metrics.load_or_train_factor_classifier(
        path, data.ground_truth_data("sprites"), classifier_steps, dataset="sprites")
    print(f"  its accuracy on fresh samples: {record['accuracy']}", flush=True)
    return path


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
    import metrics
    name, vae, gan, disentanglement = evaluation
    path = os.path.join(out_dir, "metrics", f"{name}.json")
    if os.path.exists(path) and read_json(path).get("plan") == steps:
        return read_json(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    samples = steps["eval_samples"]
    print(f"metrics of {name} on {samples:,} samples", flush=True)
    results = metrics.evaluate(dirs[vae], gan and dirs[gan], num_samples=samples, out=path,
                               classifier_path=os.path.join(out_dir, "factor_classifier.keras"),
                               disentanglement=disentanglement, seed=seed, log=lambda line: None)
    write_json(path, dict(results, plan=steps))
    return results


def scores_of(results, fid_key):
    """The table's columns from one evaluate() result."""
    row = dict(fid=results.get(fid_key))
    if "mig" in results:
        row.update(fvm=results["factor_vae_score"]["score"],
                   fvm_paper=results["factor_vae_score_paper"]["score"], mig=results["mig"])
    row.update({k: results[k] for k in ("l_i", "gilbo") if k in results})
    return row


def table_rows(table, results, seeds):
    """{row: {column: value}}, Table 2's with one entry per seed: {row: [{...}, ...]}."""
    if table == "2":
        rows = {"beta-VAE": [], "VAE-GAN": [], "ID-GAN (end-to-end)": [], "ID-GAN (two-step)": []}
        for s in range(seeds):
            vae = scores_of(results[f"beta_vae_s{s}"], "fid_vae")
            rows["beta-VAE"].append(vae)
            rows["VAE-GAN"].append(scores_of(results[f"vae_gan_s{s}"], "fid_vae"))
            rows["ID-GAN (end-to-end)"].append(scores_of(results[f"end_to_end_s{s}"], "fid_idgan"))
            rows["ID-GAN (two-step)"].append(dict(  # the encoder is beta-VAE's
                vae, fid=results[f"idgan_s{s}"]["fid_idgan"]))
        return rows
    if table == "1":
        labels = {"vae": "VAE", "beta_vae": "beta-VAE", "factor_vae": "FactorVAE"}
        rows = {label: scores_of(results[run], "fid_vae") for run, label in labels.items()}
        rows["GAN"] = scores_of(results["gan"], "fid_idgan")
        rows["InfoGAN"] = scores_of(results["infogan"], "fid_idgan")
        for run, label in labels.items():
            rows[f"ID-GAN + {label}"] = dict(rows[label], fid=results[f"idgan_{run}"]["fid_idgan"])
        return rows
    return {label: scores_of(results[run], "fid_idgan") for run, label in (
        ("cgan", "cGAN"), ("idgan_nodistill", "ID-GAN w/o distill"), ("idgan", "ID-GAN"))}


# ---------------------------------------------------------------------------------------
# The results: markdown beside the paper, results.json, figures.


def fmt(values, key, digits=2):
    """One cell: a value, or mean ± spread (half the range) over seeds; '-' if absent."""
    values = [v[key] for v in (values if isinstance(values, list) else [values])
              if v.get(key) is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    spread = (max(values) - min(values)) / 2
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def markdown(table, rows, seeds):
    if table == "3":
        lines = ["| system | FID | L_I (nats) | GILBO (nats) |", "| --- | --- | --- | --- |"]
        lines += [f"| {name} | {fmt(r, 'fid')} | {fmt(r, 'l_i')} | {fmt(r, 'gilbo')} |"
                  for name, r in rows.items()]
        return lines + ["", "The paper (CelebA 128 px, Section 5.3; the table's values are not in "
                        "our copy of it): comparable FIDs for all three; L_I and GILBO highest "
                        "for ID-GAN, then cGAN, very low for ID-GAN w/o distill."]
    paper = PAPER[table]
    lines = ["| system | FVM paper | FVM ours (paper's protocol) | FVM ours (disentanglement_lib) "
             "| MIG paper | MIG ours | FID paper | FID ours |", "| --- " * 8 + "|"]
    for name, r in rows.items():
        fvm, mig, fid = paper[name]
        lines.append(f"| {name} | {fvm} | {fmt(r, 'fvm_paper')} | {fmt(r, 'fvm')} | {mig} | "
                     f"{fmt(r, 'mig')} | {fid} | {fmt(r, 'fid')} |")
    if table == "2":
        lines.append(f"\nMean ± half the range over {seeds} seed(s) (the paper: mean ± std "
                     "over 5).")
    return lines


def gap_results(dirs, steps):
    """{curve: [(step, fid)]} and the markdown table of FID against steps."""
    import metrics
    curves = {label: metrics.read_fid_curve(os.path.join(dirs[run], "fid_curve.csv"))
              for run, label in GAP_CURVES.items()}
    columns = list(curves)
    by_step = {}
    for label, points in curves.items():
        for step, value in points:
            by_step.setdefault(step, {})[label] = value
    lines = ["| step | " + " | ".join(columns) + " |", "| --- " * (len(columns) + 1) + "|"]
    for step in sorted(by_step):
        cells = [f"{by_step[step][c]:.2f}" if c in by_step[step] else "" for c in columns]
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    return curves, lines


GAP_CURVES = {"vae": "beta-VAE decoder", "idgan": "(a) ID-GAN, beta-VAE encoder",
              "idgan_oracle": "(b) ID-GAN, oracle encoder", "gan": "(c) plain GAN"}


def power_law_forecast(points, step=PAPER_STEPS):
    """FID at `step` from a least-squares line through log FID against log step over the
    second half of a curve: a crude extrapolation, None without three points."""
    import numpy as np
    points = [p for p in points[len(points) // 2:] if p[1] > 0]
    if len(points) < 3:
        return None
    slope, intercept = np.polyfit(np.log([p[0] for p in points]), np.log([p[1] for p in points]), 1)
    return float(np.exp(intercept + slope * np.log(step)))


def curve_figure(curves, path):
    """FID against steps, log-log, if matplotlib is installed (an optional, benchmark-only
    dependency); the markdown table has the same numbers."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        print("(no matplotlib: fid_curves.png not drawn; `pip install matplotlib` for it)")
        return
    figure, axes = pyplot.subplots(figsize=(6, 4))
    for label, points in curves.items():
        if points:
            axes.plot(*zip(*points), marker="o", label=label)
    axes.set(xscale="log", yscale="log", xlabel="training step", ylabel="FID (factor classifier)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def collect_figures(runs, dirs, out_dir):
    figures = os.path.join(out_dir, "figures")
    os.makedirs(figures, exist_ok=True)
    for name, *_ in runs:
        for picture in ("samples", "reconstructions", "traversals"):
            source = os.path.join(dirs[name], picture + ".png")
            if os.path.exists(source):
                shutil.copy(source, os.path.join(figures, f"{name}_{picture}.png"))
    return figures


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
    steps, runs = plan(table, FLAGS.budget, seeds), table_runs(table, seeds)
    print(f"Table {table}, budget {FLAGS.budget:g} min: {steps}", flush=True)
    dirs = {run[0]: os.path.join(out_dir, run[0]) for run in runs}
    timings_path = os.path.join(out_dir, "timings.json")
    minutes = read_json(timings_path) if os.path.exists(timings_path) else {}
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
              + f"; {sum(minutes.values()):.0f} min on {os.cpu_count()} x {cpu_model()}.")
    summary = dict(table=table, budget=FLAGS.budget, seeds=seeds, plan=steps, minutes=minutes,
                   runs={name: os.path.relpath(d, out_dir) for name, d in dirs.items()})
    figures = collect_figures(runs, dirs, out_dir)
    if table == "gap":
        curves, lines = gap_results(dirs, steps)
        curve_figure(curves, os.path.join(figures, "fid_curves.png"))
        forecast = {label: power_law_forecast(points) for label, points in curves.items()}
        oracle = read_json(os.path.join(dirs["oracle"], "oracle.json"))
        summary.update(curves=curves, forecast_at_paper_steps=forecast,
                       oracle_r_squared=oracle["r_squared"])
        lines += ["", f"Power-law forecast of FID at {PAPER_STEPS:,} steps (second half of each "
                  "curve): " + ", ".join(f"{k} {v:.2f}" for k, v in forecast.items() if v) + ".",
                  "Oracle encoder R^2 per factor: " + ", ".join(
                      f"{k} {v:.2f}" for k, v in oracle["r_squared"].items()) + "."]
    else:
        rows = table_rows(table, results, seeds)
        summary.update(rows=rows, metrics={k: os.path.relpath(os.path.join(out_dir, "metrics", k + ".json"), out_dir) for k in results})
        lines = markdown(table, rows, seeds)
    text = "\n".join([header, ""] + lines) + "\n"
    write_json(os.path.join(out_dir, "results.json"), summary)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    print(text)


def parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(error)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
