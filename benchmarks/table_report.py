"""The results of benchmarks/tables.py: the table's rows from metrics.evaluate's results, the
markdown beside the paper's numbers, and the gap analysis' FID curves and figures.

    python benchmarks/table_report.py benchmarks/results/table1   # re-report, train nothing

re-writes a table's results.md and results.json from its results.json and the metrics/*.json
it names (the rows results.json holds where they are missing), keeping results.md's header.
Every FID is printed with its spread and real-vs-real floor (metrics.fid_scores); a figure an
older metrics.json lacks reads "not measured (run directories gone)": rescoring needs the runs.
"""
import json
import os
import shutil
import statistics
import sys

import numpy as np


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


NOISE = ("spread", "floor", "trace", "diversity")  # metrics.fid_scores' fields beside each FID
GONE = "not measured (run directories gone)"


def fid_of(results, fid_key):
    """{fid, fid_spread, fid_floor, fid_trace, fid_diversity} of one FID of an evaluate()
    result, those it holds (a metrics.json of before fid_scores holds the FID alone)."""
    return dict(fid=results.get(fid_key), **{f"fid_{k}": results[f"{fid_key}_{k}"]
                                             for k in NOISE if f"{fid_key}_{k}" in results})


def encoder_of(row):
    """A row's encoder scores (FVM, MIG), its FID fields left out."""
    return {k: v for k, v in row.items() if not k.startswith("fid")}


def scores_of(results, fid_key):
    """The table's columns from one evaluate() result."""
    row = fid_of(results, fid_key)
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
                fid_of(results[f"idgan_s{s}"], "fid_idgan"), **encoder_of(vae)))
        return rows
    if table == "1":
        labels = {"vae": "VAE", "beta_vae": "beta-VAE", "factor_vae": "FactorVAE"}
        rows = {label: scores_of(results[run], "fid_vae") for run, label in labels.items()}
        rows["GAN"] = scores_of(results["gan"], "fid_idgan")
        rows["InfoGAN"] = scores_of(results["infogan"], "fid_idgan")
        for run, label in labels.items():
            rows[f"ID-GAN + {label}"] = dict(fid_of(results[f"idgan_{run}"], "fid_idgan"),
                                             **encoder_of(rows[label]))
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


def seeds_of(values):
    return values if isinstance(values, list) else [values]


def collapsed(row):
    """The collapse rule, in metrics.json's own quantities: an FID at least tr(Sigma_real), what
    a generator drawing one point at the real mean scores (metrics.fid_scores), is no better
    than a fully collapsed generator. None where the trace was not measured."""
    if row.get("fid") is None or row.get("fid_trace") is None:
        return None
    return row["fid"] >= row["fid_trace"]


def fid_cell(values):
    """The FID cell: fmt's value, with the seeds whose FID the collapse rule marks."""
    marks = [collapsed(v) for v in seeds_of(values)]
    if not any(marks):
        return fmt(values, "fid")
    which = "" if len(marks) == 1 else f" in {sum(marks)} of {len(marks)} seeds"
    return f"{fmt(values, 'fid')}, collapsed{which} (FID ≥ tr Σ_real)"


def noise_cell(values, key, missing=GONE):
    """FID's spread or floor, one value a seed ("a / b", once if all agree); a note
    metrics.json wrote, as it is."""
    cells = [missing if v.get("fid") is not None and key not in v else "-" if key not in v
             else f"{v[key]:.2f}" if isinstance(v[key], (int, float)) else v[key]
             for v in seeds_of(values)]
    return cells[0] if len(set(cells)) == 1 else " / ".join(cells)


def distinguished(name_a, a, name_b, b, missing=GONE):
    """One comparison of two FIDs: "not distinguished" where |a - b| < 2 sqrt(sa^2 + sb^2),
    sa and sb their spreads (metrics.fid_spread)."""
    if "fid_spread" not in a or "fid_spread" not in b:
        return f"{name_a} vs {name_b}: spread {missing}"
    gap = abs(a["fid"] - b["fid"])
    bound = 2 * (a["fid_spread"] ** 2 + b["fid_spread"] ** 2) ** 0.5
    verdict = "distinguished" if gap >= bound else "not distinguished"
    return (f"{name_a} vs {name_b}: {a['fid']:.2f} vs {b['fid']:.2f}, |a - b| {gap:.2f} "
            f"{'≥' if gap >= bound else '<'} 2 sqrt(sa^2 + sb^2) {bound:.2f}: {verdict}")


# The FIDs each table compares: (row, row), Table 2's within each seed.
COMPARISONS = {
    "1": [("ID-GAN + VAE", "VAE"), ("ID-GAN + beta-VAE", "beta-VAE"),
          ("ID-GAN + FactorVAE", "FactorVAE"), ("beta-VAE", "VAE"), ("FactorVAE", "VAE"),
          ("FactorVAE", "beta-VAE"), ("ID-GAN + beta-VAE", "ID-GAN + VAE"),
          ("ID-GAN + FactorVAE", "ID-GAN + VAE"), ("ID-GAN + FactorVAE", "ID-GAN + beta-VAE")],
    "2": [("ID-GAN (two-step)", "ID-GAN (end-to-end)"), ("ID-GAN (two-step)", "beta-VAE"),
          ("VAE-GAN", "beta-VAE")],
    "3": [("ID-GAN", "cGAN"), ("ID-GAN", "ID-GAN w/o distill")]}


def comparisons(table, rows, missing=GONE):
    """The comparison lines under a table (COMPARISONS), each seed's on its own line."""
    lines = ["", "FID differences (each FID's spread: metrics.fid_spread; collapsed: FID ≥ "
             "tr Σ_real, what one point at the real mean scores):"]
    if not any("fid_spread" in v for r in rows.values() for v in seeds_of(r)):
        return lines[:1] + [f"FID differences and collapse not judged: spread and tr Σ_real "
                            f"{missing}."]
    for a, b in COMPARISONS[table]:
        for seed, (row_a, row_b) in enumerate(zip(seeds_of(rows[a]), seeds_of(rows[b]))):
            which = f"seed {seed}: " if isinstance(rows[a], list) else ""
            lines.append(f"- {which}{distinguished(a, row_a, b, row_b, missing)}")
    return lines


def markdown(table, rows, seeds, missing=GONE):
    """The table's markdown lines: ours beside the paper's, each FID with its spread and floor
    (noise_cell; `missing` where metrics.json has neither), then the comparisons."""
    noise = lambda r: " | ".join(  # noqa: E731
        noise_cell(r, key, missing) for key in ("fid_spread", "fid_floor")) + " |"
    if table == "3":
        lines = ["| system | FID | L_I (nats) | GILBO (nats) | FID spread | FID floor |",
                 "| --- " * 6 + "|"]
        lines += [f"| {name} | {fid_cell(r)} | {fmt(r, 'l_i')} | {fmt(r, 'gilbo')} | {noise(r)}"
                  for name, r in rows.items()]
        return lines + ["", "The paper (CelebA 128 px, Section 5.3; the table's values are not in "
                        "our copy of it): comparable FIDs for all three; L_I and GILBO highest "
                        "for ID-GAN, then cGAN, very low for ID-GAN w/o distill."] + comparisons(
                            table, rows, missing)
    paper = PAPER[table]
    lines = ["| system | FVM paper | FVM ours (paper's protocol) | FVM ours (disentanglement_lib) "
             "| MIG paper | MIG ours | FID paper | FID ours | FID spread | FID floor |",
             "| --- " * 10 + "|"]
    for name, r in rows.items():
        fvm, mig, fid = paper[name]
        lines.append(f"| {name} | {fvm} | {fmt(r, 'fvm_paper')} | {fmt(r, 'fvm')} | {mig} | "
                     f"{fmt(r, 'mig')} | {fid} | {fid_cell(r)} | {noise(r)}")
    if table == "2":
        lines.append(f"\nMean ± half the range over {seeds} seed(s) (the paper: mean ± std "
                     "over 5); spread and floor one value a seed.")
    return lines + comparisons(table, rows, missing)


def gap_curves(dirs):
    """{curve: [(step, fid)]} of the gap table's runs (their fid_curve.csv)."""
    import metrics  # the project's (tables.py puts its folder first on sys.path)
    return {label: metrics.read_fid_curve(os.path.join(dirs[run], "fid_curve.csv"))
            for run, label in GAP_CURVES.items()}


def gap_table(curves):
    """The markdown table of FID against steps, a column a curve."""
    columns, by_step = list(curves), {}
    for label, points in curves.items():
        for step, value in points:
            by_step.setdefault(step, {})[label] = value
    lines = ["| step | " + " | ".join(columns) + " |", "| --- " * (len(columns) + 1) + "|"]
    for step in sorted(by_step):
        cells = [f"{by_step[step][c]:.2f}" if c in by_step[step] else "" for c in columns]
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    return lines


GAP_CURVES = {"vae": "beta-VAE decoder", "idgan": "(a) ID-GAN, beta-VAE encoder",
              "idgan_oracle": "(b) ID-GAN, oracle encoder", "gan": "(c) plain GAN"}


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


def gap_report(dirs, figures, floor):
    """The gap table's additions to results.json: the FID curves (drawn into
    <figures>/fid_curves.png), the floor (the FID of two independent sets of real images, as
    many as each FID's) and the oracle's R^2. No forecast beyond the measured steps."""
    curves = gap_curves(dirs)
    curve_figure(curves, os.path.join(figures, "fid_curves.png"))
    with open(os.path.join(dirs["oracle"], "oracle.json")) as f:
        oracle = json.load(f)
    return dict(curves=curves, real_floor=floor, oracle_r_squared=oracle["r_squared"])


def gap_markdown(summary, missing=GONE):
    """The gap table's markdown lines from its results.json fields (gap_report's)."""
    floor = summary.get("real_floor")
    floor_text = (f"two independent sets of real sprites score {floor:.2f}, so no FID below it "
                  "means anything at this sample size" if floor is not None else missing)
    return gap_table(summary["curves"]) + [
        "", "Each FID's spread: not measured (metrics.FIDCurve records the FID alone).",
        f"The floor: {floor_text}.",
        "Oracle encoder R^2 per factor: " + ", ".join(
            f"{k} {v:.2f}" for k, v in summary["oracle_r_squared"].items()) + "."]


def write_results(out_dir, summary, header, lines):
    """results.json (summary) and results.md (header, then lines) in out_dir; the text back."""
    text = "\n".join([header, ""] + lines) + "\n"
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    return text


def rereport(out_dir, missing=GONE):
    """results.md and results.json of a finished table re-written from its results.json and
    the metrics/*.json it names (where it names them and all exist; else results.json's rows), nothing trained
    or scored; results.md's first line, the run's header, is kept."""
    with open(os.path.join(out_dir, "results.json")) as f:
        summary = json.load(f)
    with open(os.path.join(out_dir, "results.md")) as f:
        header = f.readline().rstrip("\n")
    if summary["table"] == "gap":
        return write_results(out_dir, summary, header, gap_markdown(summary, missing))
    paths = {name: os.path.join(out_dir, path)
             for name, path in summary.get("metrics", {}).items()}  # table3's were never kept
    if paths and all(map(os.path.exists, paths.values())):
        results = {}
        for name, path in paths.items():
            with open(path) as f:
                results[name] = json.load(f)
        summary["rows"] = table_rows(summary["table"], results, summary["seeds"])
    lines = markdown(summary["table"], summary["rows"], summary["seeds"], missing)
    return write_results(out_dir, summary, header, lines)


def main(argv):
    if len(argv) != 2 or not os.path.isfile(os.path.join(argv[1], "results.json")):
        print("table_report.py: error: give one table directory holding results.json and "
              "results.md, e.g. benchmarks/results/table1", file=sys.stderr)
        sys.exit(2)
    try:
        text = rereport(argv[1])
    except (OSError, ValueError, KeyError) as error:  # not JSON, or not a table's results.json
        reason = f"no {error}" if isinstance(error, KeyError) else str(error).splitlines()[0]
        print(f"table_report.py: error: {argv[1]}/results.json: {reason}", file=sys.stderr)
        sys.exit(2)
    print(text, end="")


if __name__ == "__main__":
    main(sys.argv)
