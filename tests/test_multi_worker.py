"""--strategy=multi_worker: two worker processes on 127.0.0.1 train exactly like one."""
import json
import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE1 = ["--res=32", "--c_dim=3", "--batch_size=8", "--steps=3", "--log_every=3", "--noevaluate"]
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
    command = [sys.executable, os.path.join(ROOT, script), *args]
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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_worker")
    train("train_vae.py", *STAGE1, f"--out_dir={root / 'vae'}")
    return root


def test_stage1_two_workers_equal_one_process(runs):
    train("train_vae.py", *STAGE1, f"--out_dir={runs / 'vae_2w'}", workers=2)
    assert_same_training_state(runs / "vae", runs / "vae_2w")
    assert int(checkpoint(runs / "vae_2w")["optimizer/vars/0"]) == 3


def test_stage2_two_workers_equal_one_process(runs):
    args = [*STAGE2, f"--vae={runs / 'vae'}"]
    train("train_idgan.py", *args, f"--out_dir={runs / 'gan'}")
    train("train_idgan.py", *args, f"--out_dir={runs / 'gan_2w'}", workers=2)
    assert_same_training_state(runs / "gan", runs / "gan_2w")
