#!/usr/bin/env bash
# The full-budget sprites run (benchmarks/results/fullrun/README.md): the README's
# "Reproducing the paper" lines for sprites, published settings, 300,000 steps per stage,
# FID every 10,000 steps on 2,000 samples in stage 1's factor-classifier features.
#
#     bash benchmarks/fullrun.sh RUNS     # from the repository root; the same again resumes
#
# Each stage trains in 10,000-step legs: --steps only says where a process stops (it may
# change between runs of one directory), so the legs train what one 300,000-step command
# would. After each leg, its backup and the models its last log saved (encoder.keras and
# decoder.keras, or generator.keras) are copied to RUNS/backups/NAME_STEP/ (milestone pictures
# and rescoring a lost FID point read them), and the leg is skipped on the next start.
set -euo pipefail
runs=${1:?usage: bash benchmarks/fullrun.sh RUNS_DIR}
mkdir -p "$runs/backups"
curve=(--fid_every=10000 --fid_samples=2000 --noevaluate)

leg() {  # leg NAME TARGET COMMAND...: train to TARGET steps, then keep its state
  local name=$1 target=$2 kept="$runs/backups/$1_$2"
  shift 2
  [ -d "$kept" ] && return 0
  echo "$(date -u +%FT%TZ) start $name $target" >> "$runs/legs.log"
  "$@" --steps="$target" "${curve[@]}"
  rm -rf "$kept.tmp" && mkdir "$kept.tmp"
  for file in checkpoint.weights.h5 flags.json fid_curve.csv {en,de}coder.keras generator.keras; do
    [ ! -e "$runs/$name/$file" ] || cp "$runs/$name/$file" "$kept.tmp/"
  done
  mv "$kept.tmp" "$kept"
  echo "$(date -u +%FT%TZ) done $name $target" >> "$runs/legs.log"
}

for target in $(seq 10000 10000 300000); do
  leg vae_sprites "$target" python train_vae.py --dataset=sprites --out_dir="$runs/vae_sprites"
done
for target in $(seq 10000 10000 300000); do
  leg idgan_sprites_64 "$target" python train_idgan.py --vae="$runs/vae_sprites" \
    --out_dir="$runs/idgan_sprites_64"
done
