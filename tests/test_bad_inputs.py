"""Every bad flag, path or file: one line, exit status 2, no traceback, nothing touched.

One table covers the command-line scripts (benchmarks/train_baseline.py too). The cases run two at a time (each is a
fresh Python process that imports TensorFlow) in a module fixture; each row is then its
own test. Rows marked RUN point the script at an existing run directory, which must stay
byte-identical; the others name a fresh --out_dir, which must not be created.
"""
import concurrent.futures
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
TINY = ["--res=32", "--c_dim=3", "--batch_size=8", "--log_every=2", "--noevaluate"]
TINY_GAN = ["--batch_size=4", "--log_every=1", "--steps=1", "--noevaluate"]
RUN, FRESH = "{run}", "{out}"  # --out_dir of a row: the existing run, or a new directory
BASELINE = os.path.join("benchmarks", "train_baseline.py")
EVALUATE = os.path.join("benchmarks", "evaluate.py")

CASES = [
    # train_vae.py: flags
    ("train_vae.py", ["extra_positional"], FRESH, "unexpected argument 'extra_positional'"),
    ("train_vae.py", ["dataset=celeba"], FRESH, "did you mean --dataset=celeba?"),
    ("train_vae.py", ["--dataset=mnist"], FRESH, "--dataset=mnist"),
    ("train_vae.py", ["--steps=ten"], FRESH, "--steps"),
    ("train_vae.py", ["--res=48"], FRESH, "--res=48: must be a power of two from 32 to 1024"),
    ("train_vae.py", ["--c_dim=0"], FRESH, "--c_dim=0: 0 is not a positive integer"),
    ("train_vae.py", ["--beta=-1"], FRESH, "--beta=-1: -1.0 is not a non-negative number"),
    ("train_vae.py", ["--model=factor_vae", "--beta=4"], FRESH,
     "--beta applies to --model=beta_vae; factor_vae uses beta 1"),
    ("train_vae.py", ["--gamma=10"], FRESH, "--gamma applies to --model=factor_vae"),
    ("train_vae.py", ["--eval_samples=1"], FRESH, "--eval_samples=1: 1 is not integer >= 2"),
    ("train_vae.py", ["--fid_every=4", "--fid_samples=1"], FRESH,
     "--fid_samples=1: 1 is not integer >= 2"),
    ("train_vae.py", ["--steps_per_execution=0"], FRESH,
     "--steps_per_execution=0: 0 is not a positive integer"),
    ("train_vae.py", ["--lr=0"], FRESH, "--lr=0.0: must be positive"),
    ("train_vae.py", ["--fid_every=4", "--fid_classifier={root}/missing/c.keras"], FRESH,
     "--fid_classifier: its directory does not exist"),
    ("train_vae.py", ["--fid_every=3", "--steps_per_execution=2", "--steps=8"], FRESH,
     "--steps_per_execution=2 must divide --fid_every=3"),
    ("train_vae.py", ["--dataset=celeba", "--data_dir={root}/corrupt",
                      "--inception_weights={root}/missing.tgz"], FRESH,
     "--inception_weights={root}/missing.tgz: does not exist"),
    ("train_vae.py", ["--inception_weights={root}/text/readme.txt"], FRESH,
     "--inception_weights applies to natural images; FID on sprites uses the factor classifier"),
    # train_vae.py: paths and files
    ("train_vae.py", ["--dataset=celeba", "--data_dir={root}/missing"], FRESH, "does not exist"),
    ("train_vae.py", ["--dataset=celeba", "--data_dir={root}/empty"], FRESH, "is empty"),
    ("train_vae.py", ["--dataset=celeba", "--data_dir={root}/text"], FRESH,
     "holds no image files"),
    ("train_vae.py", ["--dataset=celeba", "--data_dir={root}/corrupt"], FRESH,
     "no readable images"),
    ("train_vae.py", ["--dataset=scream_sprites", "--painting={root}/corrupt/face.jpg"], FRESH,
     "face.jpg is not a readable image"),
    ("train_vae.py", ["--out_dir={root}/a_file/run"], None, "cannot write to --out_dir"),
    ("train_vae.py", ["--out_dir={root}/text"], None, "is not empty and holds no run"),
    ("train_vae.py", ["--out_dir={root}/broken_run"], None,
     "broken_run/flags.json is not a readable run description"),
    # train_vae.py: an existing run with other flags is refused, not resumed or replaced
    ("train_vae.py", ["--beta=2"], RUN,
     "holds a run with other flags (--beta=8.0 there, 2.0 now); choose another --out_dir, "
     "or pass --overwrite to delete that run"),
    ("train_vae.py", ["extra", "--steps=8"], RUN, "unexpected argument 'extra'"),
    # train_idgan.py
    ("train_idgan.py", [], FRESH, "--vae is required"),
    ("train_idgan.py", ["--vae={run}", "res=64"], FRESH, "did you mean --res=64?"),
    ("train_idgan.py", ["--vae={root}/missing"], FRESH,
     "neither a stage-1 run directory nor an encoder.keras file"),
    ("train_idgan.py", ["--vae={root}/text.keras", "--dataset=sprites"], FRESH,
     "is not a loadable Keras model"),
    ("train_idgan.py", ["--vae={root}/vector.keras", "--dataset=sprites"], FRESH,
     "is not an encoder"),
    ("train_idgan.py", ["--vae={root}/odd.keras", "--dataset=sprites"], FRESH, "not 2 x c_dim"),
    ("train_idgan.py", ["--vae={root}/broken_vae"], FRESH,
     "broken_vae/flags.json is not a readable run description"),
    ("train_idgan.py", ["--vae={run}", "--dataset=color_sprites"], FRESH,
     "the encoder takes 1 channels"),
    ("train_idgan.py", ["--vae={run}", "--res=100"], FRESH, "--res=100: must be a power of two"),
    ("train_idgan.py", ["--vae={run}", "--res=16"], FRESH, "must be a power of two from 32 to 1024"),
    ("train_idgan.py", ["--vae={run}", "--distill_weight=-1"], FRESH,
     "--distill_weight=-1: -1.0 is not a non-negative number"),
    ("train_idgan.py", ["--vae={run}", "--g_lr=0"], FRESH, "--g_lr=0.0: must be positive"),
    ("train_idgan.py", ["--vae={run}", "--r1=-2"], FRESH, "--r1=-2: -2.0 is not a non-negative number"),
    ("train_idgan.py", ["--vae={run}", "--inception_weights=NOT_A_FILE"], FRESH,
     "--inception_weights=NOT_A_FILE: does not exist"),
    ("train_idgan.py", ["--vae={run}", "--inception_weights={root}/text/readme.txt"], FRESH,
     "--inception_weights applies to natural images; FID on sprites uses the factor classifier"),
    ("train_idgan.py", ["--vae={run}", "--ema=1"], FRESH, "--ema=1.0: must be in [0, 1)"),
    ("train_idgan.py", ["--vae={run}", "--out_dir={root}/broken_run"], None,
     "broken_run/flags.json is not a readable run description"),
    # benchmarks/train_baseline.py (the comparison systems)
    (BASELINE, [], FRESH, "--system is required: one of infogan, vae_gan, end_to_end, cgan"),
    (BASELINE, ["--system=foo"], FRESH, "--system=foo: value should be one of"),
    (BASELINE, ["--system=infogan", "--info_weight=-1"], FRESH,
     "--info_weight=-1.0: must not be negative"),
    (BASELINE, ["--system=vae_gan", "--info_weight=2"], FRESH,
     "--info_weight applies to --system=infogan, not vae_gan"),
    (BASELINE, ["--system=cgan"], FRESH, "--system=cgan needs --vae"),
    (BASELINE, ["--system=cgan", "--vae={run}", "--dataset=color_sprites"], FRESH,
     "the encoder takes 1 channels"),
    # benchmarks/evaluate.py (metrics.py's evaluation of run directories)
    (EVALUATE, ["--vae={run}", "stray"], None, "unexpected arguments"),
    (EVALUATE, ["--vae={run}", "--num_samples=0"], None, "--num_samples=0"),
    (EVALUATE, ["--vae={run}", "--num_samples=1"], None, "--num_samples=1"),
    (EVALUATE, ["--vae={run}", "--batch_size=0"], None,
     "--batch_size=0: 0 is not a positive integer"),
    (EVALUATE, ["--vae={root}/missing"], None, "missing"),
]


def command(script, args, out_dir, root, run):
    args = [a.format(root=root, run=run) for a in args]
    if script == "train_vae.py":
        args = TINY + ["--steps=2"] + args
    elif script in ("train_idgan.py", BASELINE):
        args = TINY_GAN + args
    if out_dir is not None:
        args.append("--out_dir=" + out_dir.format(run=run, out=os.path.join(root, "out")))
    return [sys.executable, os.path.join(ROOT, script), *args]


def snapshot(folder):
    """Every file under folder, with its bytes."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """(run directory before, after every case, each case's CompletedProcess)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    for name in ("empty", "text", "corrupt", "broken_run", "broken_vae"):
        (root / name).mkdir()
    (root / "text" / "readme.txt").write_text("not an image")
    (root / "corrupt" / "face.jpg").write_bytes(b"\xff\xd8 truncated")
    (root / "a_file").write_text("")
    (root / "broken_run" / "flags.json").write_text('{"dataset": "sprites", "res": ')
    (root / "broken_vae" / "flags.json").write_text("")
    (root / "broken_vae" / "encoder.keras").write_text("")
    (root / "text.keras").write_text("not a model")
    keras.Sequential([keras.Input((64, 64, 1)), keras.layers.Flatten(),
                      keras.layers.Dense(5)]).save(root / "odd.keras")
    keras.Sequential([keras.Input((10,)), keras.layers.Dense(6)]).save(root / "vector.keras")
    run = str(root / "run")
    made = subprocess.run(command("train_vae.py", [], run, root, run), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    before = snapshot(run)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        processes = list(pool.map(
            lambda case: subprocess.run(command(case[0], case[1], case[2], root, run), cwd=root,
                                        env=ENV, capture_output=True, text=True, timeout=300),
            CASES))
    return root, before, snapshot(run), processes


@pytest.mark.parametrize("index", range(len(CASES)),
                         ids=[f"{c[0]}:{' '.join(c[1]) or 'no flags'}" for c in CASES])
def test_bad_input_gives_one_line_and_touches_nothing(results, index):
    root, before, after, processes = results
    script, _, out_dir, expected = CASES[index]
    result = processes[index]
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines()
              if line.startswith(f"{os.path.basename(script)}: error:")]
    assert len(errors) == 1 and expected.format(root=root) in errors[0], result.stderr[-3000:]
    assert errors[0] == result.stderr.strip().splitlines()[-1]
    assert after == before  # the existing run is byte-identical
    assert not os.path.exists(root / "out")
    assert not os.path.exists(root / "metrics.json")
