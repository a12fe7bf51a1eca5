#!/usr/bin/env bash
# One sitting, nothing else running: the speed README's commands, run from a clean clone in
# /tmp/qs with requirements.txt installed, PyTorch in /tmp/torchenv (README). Output: /tmp/speed/.
set -u
out=/tmp/speed; mkdir -p $out
cd /tmp/qs
date -u +%FT%TZ > $out/start
lscpu > $out/lscpu.txt
git log --oneline -1 > $out/commit
QS1="python train_vae.py --dataset=sprites --res=32 --steps=1200 --log_every=400 --lr=5e-4 --noevaluate --out_dir=runs/quickstart_vae"
QS2="python train_idgan.py --vae=runs/quickstart_vae --steps=800 --log_every=200 --distill_weight=1e-2 --ema=0.99 --noevaluate --out_dir=runs/quickstart_idgan"
for isa in native AVX2; do
  rm -rf runs
  env=""; [ $isa = AVX2 ] && env="ONEDNN_MAX_CPU_ISA=AVX2"
  /usr/bin/time -f "%e s wall" -o $out/quickstart_$isa.time env $env bash -c "$QS1 && $QS2" > $out/quickstart_$isa.log 2>&1
  cp -r runs $out/runs_$isa
done
for batch in 500 100; do
  /usr/bin/time -f "%e s wall" -o $out/evaluate_$batch.time python benchmarks/evaluate.py --vae=$out/runs_native/quickstart_vae --idgan=$out/runs_native/quickstart_idgan --num_samples=5000 --batch_size=$batch --out=$out/metrics_$batch.json > $out/evaluate_$batch.log 2>&1
done
for opt in "" --jit_compile --mixed_precision; do
  /usr/bin/time -f "%e s wall" -o $out/throughput$opt.time python benchmarks/throughput.py --only=beta_vae,idgan_conv,idgan_resnet64 --gan_steps=3 --windows=3 $opt > $out/throughput$opt.log 2>&1
done
/usr/bin/time -f "%e s wall" -o $out/vs_pytorch.time /tmp/torchenv/bin/python benchmarks/vs_pytorch.py --rounds=3 > $out/vs_pytorch.log 2>&1
date -u +%FT%TZ > $out/end
# then, by hand in the same sitting:
# /usr/bin/time -f "%e s wall" -o $out/profile.time python benchmarks/vs_pytorch.py --profile > $out/profile.log 2>&1
