"""Test-session set-up shared by every test file.

Two logical CPU devices are configured before anything else touches TensorFlow, so
replica-equivalence tests can run tf.distribute.MirroredStrategy on a machine without GPUs.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(scope="session")
def two_replicas():
    """One MirroredStrategy over the two logical CPUs for the whole session: separate
    instances in one process reuse collective keys and then clash."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session")
def stage1_flags():
    """train_vae.py's flags at their defaults, as the dict its main() starts from."""
    from absl import flags
    import train_vae

    train_vae.define_flags()
    flags.FLAGS(["train_vae.py"])
    own = [f for module in ("train_vae", sys.argv[0])
           for f in flags.FLAGS.get_flags_for_module(module)]
    return {f.name: f.value for f in own}


@pytest.fixture
def run_config(stage1_flags, tmp_path):
    """run_config(**changes): a resolved stage-1 config for train_vae.Run in tmp_path/run,
    every other flag at its default."""
    def make(**changes):
        config = dict(stage1_flags, c_dim=3, beta=8.0, decoder="bernoulli", steps=40,
                      res=32, batch_size=8, out_dir=str(tmp_path / "run"))
        config.update(changes)
        return config
    return make
