"""Surviving faults: SIGKILL and resume, the NaN guard, and seeded reproducibility."""
import json
import os
import re
import signal
import subprocess
import time

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import vae
from conftest import run_script as run, script_command

TINY = ["--res=32", "--c_dim=3", "--batch_size=8", "--noevaluate"]


def load_vae_checkpoint(path):
    model = vae.BetaVAE(vae.build_encoder(3, 32, 1), vae.build_decoder(3, 32, 1))
    model.compile(optimizer=keras.optimizers.Adam())
    model(np.zeros((1, 32, 32, 1), "float32"))
    model.build_optimizers()
    model.load_weights(path)
    return model


def wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, "training ended before its first backup"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)


def test_sigkill_mid_run_then_the_same_command_resumes(tmp_path):
    out = str(tmp_path / "run")
    args = TINY + ["--steps=300", "--log_every=100", "--backup_every=5", f"--out_dir={out}"]
    checkpoint = os.path.join(out, "checkpoint.weights.h5")
    process = subprocess.Popen(script_command("train_vae.py", *args),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(checkpoint, process)
        time.sleep(0.5)  # let it train on past the backup, maybe into the next one
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed_at = int(load_vae_checkpoint(checkpoint).optimizer.iterations)
    assert 0 < killed_at < 300 and killed_at % 5 == 0

    result = run("train_vae.py", *args)
    assert result.returncode == 0, result.stderr
    resumed_from = int(re.search(r"Resuming .* from step (\d+)", result.stdout).group(1))
    assert resumed_from >= killed_at
    assert "Done: 300 of 300 steps" in result.stdout
    assert int(load_vae_checkpoint(checkpoint).optimizer.iterations) == 300
    for name in os.listdir(out):  # every artifact loads
        path = os.path.join(out, name)
        if name.endswith(".keras"):
            keras.models.load_model(path)
        elif name.endswith(".png"):
            tf.io.decode_png(tf.io.read_file(path))
        elif name.endswith(".json"):
            with open(path) as f:
                json.load(f)
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_nan_stops_training_and_keeps_the_last_good_backup(tmp_path):
    out = str(tmp_path / "nan")
    # Adam's first step moves every weight by ~lr: finite weights, then a NaN loss.
    result = run("train_vae.py", *TINY, "--lr=1e12", "--steps=50", "--log_every=10",
                 "--backup_every=1", f"--out_dir={out}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"train_vae.py: error: the loss or the weights became NaN or infinite "
                         r"at step (\d+); training stopped and the last good backup, step (\d+), "
                         r"is kept in .*checkpoint.weights.h5", last)
    assert match, last
    bad, good = map(int, match.groups())
    assert good < bad
    model = load_vae_checkpoint(os.path.join(out, "checkpoint.weights.h5"))
    assert int(model.optimizer.iterations) == good
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_nan_guard_stops_within_one_backup_interval_with_steps_per_execution(tmp_path):
    """Losses are read once per execution of 5 steps. The loss turns NaN within the first
    few steps (as in the test above), inside the first execution: the guard stops at its end,
    step 5, the first backup point, and writes no backup of the bad weights."""
    out = str(tmp_path / "nan_spe")
    result = run("train_vae.py", *TINY, "--lr=1e12", "--steps=50", "--log_every=10",
                 "--backup_every=5", "--steps_per_execution=5", f"--out_dir={out}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        "NaN or infinite at step 5; training stopped and no good backup was written")
    assert not os.path.exists(os.path.join(out, "checkpoint.weights.h5"))


class LossTurnsNaN(keras.Model):
    """One weight trained towards 1; the reported loss is NaN at step `bad_step` (counted
    from 1) and the weights stay finite, so only the per-step loss check can stop it."""

    def __init__(self, bad_step):
        super().__init__()
        self.w = self.add_weight(shape=(), initializer="zeros", name="w")
        self.bad_step = bad_step
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        step = self.optimizer.iterations + 1
        with tf.GradientTape() as tape:
            loss = tf.square(self.w - 1.0)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, [self.w]), [self.w]))
        self.loss_tracker.update_state(tf.where(step == self.bad_step, np.nan, loss))
        return {"loss": self.loss_tracker.result()}


def test_at_the_default_intervals_a_nan_at_step_k_stops_the_run_at_step_k(run_config, capsys):
    """At the default --backup_every and --log_every, the NaN check of every step, not the
    backup's weight check, must stop a run whose loss turns NaN at step 7."""
    import train_vae

    config = run_config()
    assert config["backup_every"] > 40 and config["log_every"] > 40  # the defaults
    model = LossTurnsNaN(bad_step=7)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    run = train_vae.Run(config, tf.distribute.get_strategy())
    run.start(model, model.optimizer, 32)
    with pytest.raises(SystemExit) as exit_info:
        run.fit(model, tf.data.Dataset.from_tensors(0.0).repeat(), lambda step: {})
    assert exit_info.value.code == 2
    assert int(model.optimizer.iterations) == 7
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith("error: the loss or the weights became NaN or infinite at step 7; "
                         "training stopped and no good backup was written"), last
    assert not os.path.exists(os.path.join(config["out_dir"], "checkpoint.weights.h5"))


def logged_losses(stdout):
    """{step: its --log_every line's losses} of `step N/M: loss ... (timings)` lines."""
    lines = [re.fullmatch(r"step (\d+)/\d+: (.*) \(.*\)", line) for line in stdout.splitlines()]
    return {int(m.group(1)): m.group(2) for m in lines if m}


def assert_same_state(one, two, atol=0.0):
    """Equal checkpoint.weights.h5 of two run directories (every weight, optimizer slot,
    step counter and random-generator state), to atol."""
    one, two = (h5_values(os.path.join(d, "checkpoint.weights.h5")) for d in (one, two))
    assert one.keys() == two.keys()
    for name in one:
        if atol:
            np.testing.assert_allclose(one[name], two[name], rtol=0, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(one[name], two[name], err_msg=name)


STAGE1 = TINY + ["--log_every=2", "--backup_every=2"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """(directory, stdout) of an uninterrupted 6-step stage-1 run (STAGE1, seed 0), the
    reference of the next three tests."""
    out = str(tmp_path_factory.mktemp("straight") / "vae")
    result = run("train_vae.py", *STAGE1, "--steps=6", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_a_resumed_stage1_run_equals_an_uninterrupted_one_and_logs_its_losses(straight,
                                                                               tmp_path):
    """Weights, optimizers, the noise generator and the data stream all resume. The first 3
    steps, in another process, log step 2's losses as the straight run did (the same seed
    gives the same losses), and so do the last 2 steps after the resume."""
    resumed = str(tmp_path / "resumed")
    first = run("train_vae.py", *STAGE1, "--steps=3", f"--out_dir={resumed}")
    second = run("train_vae.py", *STAGE1, "--steps=6", f"--out_dir={resumed}")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert_same_state(straight[0], resumed)
    losses = logged_losses(straight[1])
    assert sorted(losses) == [2, 4, 6]
    assert logged_losses(first.stdout)[2] == losses[2]
    assert logged_losses(second.stdout)[6] == losses[6]  # steps 5 and 6 in both


def test_another_seed_gives_other_losses(straight, tmp_path):
    other = run("train_vae.py", *STAGE1, "--steps=2", "--seed=4", f"--out_dir={tmp_path / 'o'}")
    assert other.returncode == 0, other.stderr
    assert logged_losses(other.stdout)[2] != logged_losses(straight[1])[2]


def test_steps_per_execution_ends_at_the_same_weights(straight, tmp_path):
    """Several steps per call into TensorFlow change when the host looks, not what is trained."""
    out = str(tmp_path / "spe2")
    result = run("train_vae.py", *STAGE1, "--steps=6", "--steps_per_execution=2",
                 f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert "Done: 6 of 6 steps" in result.stdout
    assert_same_state(straight[0], out, atol=1e-6)


def test_the_same_seed_gives_the_same_factor_vae_losses(tmp_path):
    args = TINY + ["--model=factor_vae", "--steps=10", "--log_every=5"]
    runs = [run("train_vae.py", *args, "--seed=3", f"--out_dir={tmp_path / str(i)}")
            for i in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    first, second = (logged_losses(r.stdout) for r in runs)
    assert sorted(first) == [5, 10] and first == second
    other = run("train_vae.py", *args, "--seed=4", f"--out_dir={tmp_path / 'other'}")
    assert logged_losses(other.stdout) != first  # the seed matters


# The VDB's noise comes from the model's tracked seed generator, so it resumes too.
@pytest.mark.parametrize("extra", [[], ["--arch=resnet", "--nf=4", "--nf_max=8", "--vdb"]])
def test_a_resumed_stage2_run_equals_an_uninterrupted_one(stage1_run, tmp_path, extra):
    """As for stage 1. (Two processes reaching the same bits also shows a seeded stage-2 run
    is reproducible.)"""
    args = ["--batch_size=8", "--noevaluate", "--log_every=2", "--backup_every=2",
            f"--vae={stage1_run}", *extra]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    assert run("train_idgan.py", *args, "--steps=6", f"--out_dir={straight}").returncode == 0
    assert run("train_idgan.py", *args, "--steps=3", f"--out_dir={resumed}").returncode == 0
    assert run("train_idgan.py", *args, "--steps=6", f"--out_dir={resumed}").returncode == 0
    assert_same_state(straight, resumed)


def h5_values(path):
    values = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, item: values.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return values
