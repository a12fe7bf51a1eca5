set -e
cd /work/main
T="--batch_size=8 --steps=6 --log_every=3 --backup_every=3 --noevaluate --seed=1"
python train_vae.py --res=32 --c_dim=3 $T --out_dir=/tmp/fdcheck/vae > /tmp/fdcheck/train.log 2>&1
python train_idgan.py --vae=/tmp/fdcheck/vae $T --out_dir=/tmp/fdcheck/idgan >> /tmp/fdcheck/train.log 2>&1
python benchmarks/evaluate.py --vae=/tmp/fdcheck/vae --idgan=/tmp/fdcheck/idgan --num_samples=64 --batch_size=16 --out=/tmp/fdcheck/new.json > /tmp/fdcheck/new.log 2>&1
cd /work/h_metrics && python benchmarks/evaluate.py --vae=/tmp/fdcheck/vae --idgan=/tmp/fdcheck/idgan --num_samples=64 --batch_size=16 --out=/tmp/fdcheck/old.json > /tmp/fdcheck/old.log 2>&1
echo done
