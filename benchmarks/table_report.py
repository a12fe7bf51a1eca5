"""The results of benchmarks/tables.py: the table's rows from metrics.evaluate's results, the
markdown beside the paper's numbers, and the gap analysis' FID curves, forecast and figures.
"""
import json
import os
import shutil
import statistics

import numpy as np

PAPER_STEPS = 300_000  # the authors' GAN steps (max_iter, 1Konny/idgan configs/dsprites.yaml)

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


def gap_results(dirs):
    """{curve: [(step, fid)]} and the markdown table of FID against steps."""
    import metrics  # the project's (tables.py puts its folder first on sys.path)
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
    points = [p for p in points[len(points) // 2:] if p[1] > 0]
    if len(points) < 3:
        return None
    slope, intercept = np.polyfit(np.log([p[0] for p in points]), np.log([p[1] for p in points]),
                                  1)
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
    """Each run's picture grids, copied into <out_dir>/figures as <run>_<picture>.png. A
    stage-1 run draws no samples, so its <run>_samples.png is drawn here (prior_samples)."""
    figures = os.path.join(out_dir, "figures")
    os.makedirs(figures, exist_ok=True)
    for name, *_ in runs:
        for picture in ("samples", "reconstructions", "traversals"):
            source, target = (os.path.join(dirs[name], picture + ".png"),
                              os.path.join(figures, f"{name}_{picture}.png"))
            if os.path.exists(source):
                shutil.copy(source, target)
            elif picture == "samples" and os.path.exists(os.path.join(dirs[name], "decoder.keras")):
                prior_samples(os.path.join(dirs[name], "decoder.keras"), target)
    return figures


def prior_samples(decoder_path, path, rows=8):
    """An image grid of rows x rows codes from N(0, I) (numpy seed 0) through a stage-1 run's
    decoder.keras: the samples its FID scores."""
    import keras
    import tensorflow as tf
    import vae  # the project's (tables.py puts its folder first on sys.path)

    decoder = keras.models.load_model(decoder_path, compile=False)
    codes = np.random.default_rng(0).standard_normal((rows * rows, decoder.input_shape[-1]))
    grid = vae.image_grid(decoder(codes.astype("float32")), rows=rows)
    tf.io.write_file(path, tf.io.encode_png(grid))


def forecast_text(forecast, floor):
    """The forecasts as words: "at the floor" for one below the real-vs-real floor, where
    an FID of this sample size means nothing, else its value."""
    return ", ".join(f"{label} " + ("at the floor" if value < floor else f"{value:.2f}")
                     for label, value in forecast.items() if value)


def gap_report(dirs, figures, floor):
    """The gap table's additions to results.json and its markdown lines: the FID curves
    (drawn into <figures>/fid_curves.png), their forecast at PAPER_STEPS beside the floor
    (the FID of two independent sets of real images, as many as each FID's) and the
    oracle's R^2."""
    curves, lines = gap_results(dirs)
    curve_figure(curves, os.path.join(figures, "fid_curves.png"))
    forecast = {label: power_law_forecast(points) for label, points in curves.items()}
    with open(os.path.join(dirs["oracle"], "oracle.json")) as f:
        oracle = json.load(f)
    lines += ["", f"Power-law forecast of FID at {PAPER_STEPS:,} steps (second half of each "
              f"curve; a crude extrapolation): {forecast_text(forecast, floor)}. The floor: two "
              f"independent sets of real sprites score {floor:.2f}, so no FID below it means "
              "anything at this sample size.",
              "Oracle encoder R^2 per factor: " + ", ".join(
                  f"{k} {v:.2f}" for k, v in oracle["r_squared"].items()) + "."]
    return dict(curves=curves, forecast_at_paper_steps=forecast, real_floor=floor,
                oracle_r_squared=oracle["r_squared"]), lines
