"""Every bad flag, path or file: one line, exit status 2, no traceback, nothing touched.

One table covers the command-line scripts (benchmarks/train_baseline.py, evaluate.py and
tables.py too). The cases run two at a time in a module fixture, each a fresh process
forked from a server that has imported TensorFlow (conftest.run_scripts); each row is then
its own test. Rows marked RUN point the script at an existing run directory (a copy of the
shared stage1_run), which must stay byte-identical; the others name a fresh --out_dir, which
must not be created.
"""
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import STAGE1_RUN, run_scripts

# No network, so that InceptionV3's ImageNet weights cannot download (and, in the fixture,
# an empty Keras cache): a natural-image run that evaluates is refused everywhere.
DEAD_PROXY = "http://127.0.0.1:9"
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", https_proxy=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY,
           no_proxy="", NO_PROXY="")
TINY = ["--res=32", "--c_dim=3", "--batch_size=8", "--log_every=2", "--noevaluate"]
TINY_GAN = ["--batch_size=4", "--log_every=1", "--steps=1", "--noevaluate"]
RUN, FRESH = "{run}", "{out}"  # --out_dir of a row: the existing run, or a new directory
BASELINE = os.path.join("benchmarks", "train_baseline.py")
EVALUATE = os.path.join("benchmarks", "evaluate.py")
TABLES = os.path.join("benchmarks", "tables.py")
NO_INCEPTION = ("; pass --inception_weights=FILE (Keras' InceptionV3 .h5 or the 2015 graph's "
                ".tgz / .pb) or ")

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
    # natural images: FID's Inception is loaded at the start (ImageNet's: no cache, no network)
    ("train_vae.py", ["--dataset=celeba", "--data_dir={root}/faces", "--evaluate"], FRESH,
     "FID on celeba needs InceptionV3, and --inception_weights=imagenet does not load ("),
    ("train_vae.py", ["--dataset=celeba", "--data_dir={root}/faces", "--evaluate"], FRESH,
     NO_INCEPTION + "--noevaluate"),
    ("train_vae.py", ["--dataset=celeba", "--data_dir={root}/faces", "--fid_every=2",
                      "--inception_weights={root}/text/readme.txt"], FRESH,
     NO_INCEPTION + "--fid_every=0"),
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
    ("train_idgan.py", ["--vae={root}/garbage_decoder"], FRESH,
     "--vae {root}/garbage_decoder/decoder.keras is not a loadable Keras model"),
    ("train_idgan.py", ["--vae={root}/wide_decoder"], FRESH,
     "wide_decoder/decoder.keras does not fit the encoder: it maps (4,) to (32, 32, 1), not "
     "(3,) codes to (32, 32, 1) images"),
    ("train_idgan.py", ["--vae={root}/color_decoder"], FRESH,
     "color_decoder/decoder.keras does not fit the encoder: it maps (3,) to (32, 32, 3)"),
    ("train_idgan.py", ["--vae={root}/celeba_vae", "--evaluate"], FRESH,
     NO_INCEPTION + "--noevaluate"),
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
    (BASELINE, ["--system=cgan", "--vae={root}/garbage_decoder", "--evaluate"], FRESH,
     "garbage_decoder/decoder.keras is not a loadable Keras model"),
    (BASELINE, ["--system=infogan", "--dataset=celeba", "--data_dir={root}/faces", "--res=32",
                "--evaluate"], FRESH, NO_INCEPTION + "--noevaluate"),
    # benchmarks/evaluate.py (metrics.py's evaluation of run directories)
    (EVALUATE, ["--vae={run}", "stray"], None, "unexpected arguments"),
    (EVALUATE, ["--vae={run}", "--num_samples=0"], None, "--num_samples=0"),
    (EVALUATE, ["--vae={run}", "--num_samples=1"], None, "--num_samples=1"),
    (EVALUATE, ["--vae={run}", "--batch_size=0"], None,
     "--batch_size=0: 0 is not a positive integer"),
    (EVALUATE, ["--vae={root}/missing"], None, "missing"),
    (EVALUATE, ["--vae={run}", "--num_samples=64", "--inception_weights={root}/text/readme.txt"],
     None, "--inception_weights applies to natural images; FID on sprites uses the factor "
     "classifier (--classifier)"),
    # benchmarks/tables.py
    (TABLES, ["--table=4", "--budget=1"], None, "--table=4: value should be one of"),
    (TABLES, ["--table=2", "--budget=0"], None, "--budget must be a positive number of minutes"),
]


def arguments(script, args, out_dir, root, run):
    args = [a.format(root=root, run=run) for a in args]
    if script == "train_vae.py":
        args = TINY + ["--steps=2"] + args
    elif script in ("train_idgan.py", BASELINE):
        args = TINY_GAN + args
    if out_dir is not None:
        args.append("--out_dir=" + out_dir.format(run=run, out=os.path.join(root, "out")))
    return args


def snapshot(folder):
    """Every file under folder, with its bytes."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def tiny_decoder(c_dim, channels):
    """c_dim codes -> 32 x 32 images of `channels`."""
    return keras.Sequential([keras.Input((c_dim,)), keras.layers.Dense(32 * 32 * channels),
                             keras.layers.Reshape((32, 32, channels))])


@pytest.fixture(scope="module")
def results(tmp_path_factory, stage1_run):
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
    (root / "faces").mkdir()
    for k in range(2):
        pixels = np.random.default_rng(k).integers(0, 256, (40, 50, 3), np.uint8)
        (root / "faces" / f"{k}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    env = dict(ENV, KERAS_HOME=str(root / "keras_home"))  # an empty cache
    run = str(root / "run")
    assert sorted(arguments("train_vae.py", [], None, root, run)) == sorted(STAGE1_RUN)
    shutil.copytree(stage1_run, run)
    # Stage-1 runs whose decoder.keras does not load, or takes 4 codes, or makes RGB images;
    # and a CelebA one (32 px, c_dim 3) on the images in faces.
    for name, decoder in [("garbage_decoder", None), ("wide_decoder", tiny_decoder(4, 1)),
                          ("color_decoder", tiny_decoder(3, 3))]:
        (root / name).mkdir()
        for file in ("flags.json", "encoder.keras"):
            shutil.copy(os.path.join(run, file), root / name / file)
        if decoder is None:
            (root / name / "decoder.keras").write_text("not a model")
        else:
            decoder.save(root / name / "decoder.keras")
    celeba = root / "celeba_vae"
    celeba.mkdir()
    (celeba / "flags.json").write_text(json.dumps(dict(dataset="celeba", res=32, c_dim=3,
                                                       data_dir=str(root / "faces"))))
    keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                      keras.layers.Dense(6)]).save(celeba / "encoder.keras")
    tiny_decoder(3, 3).save(celeba / "decoder.keras")
    before = snapshot(run)
    processes = run_scripts([(case[0], arguments(*case[:3], root, run)) for case in CASES],
                            cwd=root, env=env)
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
