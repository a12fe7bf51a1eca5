"""Collect the full-budget sprites run (benchmarks/fullrun.sh) into benchmarks/results/fullrun.

    python benchmarks/fullrun_report.py --runs=RUNS [--out=benchmarks/results/fullrun]

Copies each stage's fid_curve.csv and metrics.json (vae/, idgan/) and the legs' log, plots
both FID curves on one axis (fid_curves.png, if matplotlib is installed), draws the pictures
of the models kept at the milestone steps with benchmarks/draw.py's fixed inputs
(milestones/STAGE_STEP/), and once a stage has reached 300,000 steps ships its final models:
vae/{encoder,decoder,factor_classifier}.keras and flags.json, idgan/generator.keras and
flags.json. Run it again at any time: it redraws what the run has reached so far.
"""
import argparse
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # after the project's modules

import draw  # noqa: E402 (benchmarks/draw.py)
import metrics  # noqa: E402
import table_report  # noqa: E402 (benchmarks/table_report.py)

STAGES = {"vae": "vae_sprites", "idgan": "idgan_sprites_64"}  # out subfolder: run name
MILESTONES = (30_000, 100_000, 300_000)
FINAL = 300_000
SHIPPED = {"vae": ("encoder.keras", "decoder.keras", "flags.json"),
           "idgan": ("generator.keras", "flags.json")}


def copy(source, target):
    if os.path.isfile(source):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
        return True
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="The RUNS folder of fullrun.sh.")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "fullrun"))
    args = parser.parse_args()
    runs, out, kept = args.runs, args.out, os.path.join(args.runs, "backups")
    if not os.path.isdir(kept):
        parser.exit(2, f"fullrun_report.py: error: {runs} holds no backups/ of fullrun.sh\n")
    copy(os.path.join(runs, "legs.log"), os.path.join(out, "legs.log"))
    curves = {}
    for sub, name in STAGES.items():
        for file in ("fid_curve.csv", "metrics.json"):
            copy(os.path.join(runs, name, file), os.path.join(out, sub, file))
        csv = os.path.join(runs, name, "fid_curve.csv")
        curves[{"vae": "beta-VAE decoder", "idgan": "ID-GAN generator"}[sub]] = (
            metrics.read_fid_curve(csv) if os.path.isfile(csv) else [])
    table_report.curve_figure(curves, os.path.join(out, "fid_curves.png"))
    final_vae = os.path.join(kept, f"vae_sprites_{FINAL}")
    for step in MILESTONES:
        vae_dir, idgan_dir = (os.path.join(kept, f"{name}_{step}") for name in STAGES.values())
        vae_drawn = os.path.isfile(os.path.join(vae_dir, "encoder.keras"))  # not a placeholder
        if vae_drawn:  # (README "Attempt 2": legs trained before a resume leave empty folders)
            pictures = draw.draw(vae_dir)
            draw.write(pictures, os.path.join(out, "milestones", f"vae_{step}"))
        if os.path.isdir(idgan_dir) and os.path.isdir(final_vae):
            pictures = draw.draw(final_vae, idgan_dir)
            draw.write({k: v for k, v in pictures.items() if not k.startswith("vae_")},
                       os.path.join(out, "milestones", f"idgan_{step}"))
        print(f"milestone {step}: stage 1 {'drawn' if vae_drawn else 'not drawn'}"
              f", stage 2 {'drawn' if os.path.isdir(idgan_dir) else 'not reached'}")
    for sub, name in STAGES.items():
        final = os.path.join(kept, f"{name}_{FINAL}")
        if os.path.isdir(final):
            for file in SHIPPED[sub]:
                copy(os.path.join(final, file), os.path.join(out, sub, file))
            print(f"{sub}: final models shipped in {os.path.join(out, sub)}")
    for file in ("factor_classifier.keras", "factor_classifier.json"):  # FID's features
        if os.path.isdir(final_vae):
            copy(os.path.join(runs, STAGES["vae"], file), os.path.join(out, "vae", file))


if __name__ == "__main__":
    main()
