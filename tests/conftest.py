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
