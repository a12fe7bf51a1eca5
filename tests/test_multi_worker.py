"""--strategy=multi_worker: two worker processes on 127.0.0.1 train exactly like one."""
import json
import os
import socket
import subprocess

import h5py
import numpy as np

from conftest import STAGE1_RUN, script_command

STAGE2 = ["--batch_size=8", "--steps=3", "--log_every=3", "--noevaluate"]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train(script, *args, workers=1, timeout=150):
    """Run the script as one process, or as `workers` processes of one TF_CONFIG cluster;
    every process is reaped, even on failure or timeout."""
    command = script_command(script, *args)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if workers == 1:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, result.stderr[-2000:]
        return
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    processes = []
    try:
        for index in range(workers):
            config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            processes.append(subprocess.Popen(
                command + ["--strategy=multi_worker"], env=dict(env, TF_CONFIG=config),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-2000:]


def checkpoint(run_dir):
    values = {}
    with h5py.File(os.path.join(run_dir, "checkpoint.weights.h5")) as f:
        f.visititems(lambda name, item: values.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return values


def assert_same_training_state(one, two):
    one, two = checkpoint(one), checkpoint(two)
    assert one.keys() == two.keys()
    for name in one:  # weights, moving averages, optimizer slots and step counters
        np.testing.assert_allclose(one[name], two[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_stage1_two_workers_equal_one_process(stage1_run, tmp_path):
    """The one-process run: the shared stage1_run (train_vae.py *STAGE1_RUN)."""
    train("train_vae.py", *STAGE1_RUN, f"--out_dir={tmp_path / 'vae_2w'}", workers=2)
    assert_same_training_state(stage1_run, tmp_path / "vae_2w")
    assert int(checkpoint(tmp_path / "vae_2w")["optimizer/vars/0"]) == 2


def test_stage2_two_workers_equal_one_process(stage1_run, tmp_path):
    args = [*STAGE2, f"--vae={stage1_run}"]
    train("train_idgan.py", *args, f"--out_dir={tmp_path / 'gan'}")
    train("train_idgan.py", *args, f"--out_dir={tmp_path / 'gan_2w'}", workers=2)
    assert_same_training_state(tmp_path / "gan", tmp_path / "gan_2w")
