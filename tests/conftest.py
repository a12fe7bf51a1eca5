"""Test-session set-up and helpers shared by every test file.

Two logical CPU devices are configured before anything else touches TensorFlow, so
replica-equivalence tests can run tf.distribute.MirroredStrategy on a machine without GPUs.
Plain helpers (test files import them: `from conftest import run_script`): run_script (a
script of the repository in a fresh process), run_scripts (several), script_command,
benchmark (a benchmarks/ module), softplus and bernoulli_nll (NumPy references). Fixtures:
below.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import concurrent.futures  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import queue  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import types  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


# The scripts run in fresh processes forked from a server that has imported what every
# script imports first (TensorFlow's import alone takes seconds a process). For each request
# the server forks a child that runs the script as `python script args` would: as __main__,
# sys.argv and sys.path[0] set, status SystemExit's code, or 1 after an uncaught exception's
# traceback; killed by SIGALRM after `timeout` seconds.
FORK_SERVER = r"""
import json, os, runpy, signal, sys, traceback
import absl.app, absl.flags, h5py, keras, numpy, scipy.linalg, tensorflow
for request in sys.stdin:
    script, args, cwd, out, err, timeout = json.loads(request)
    pid = os.fork()
    if pid == 0:
        signal.alarm(timeout)
        os.chdir(cwd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, path in [(1, out), (2, err)]:
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv, sys.path[0], status = [script, *args], os.path.dirname(script), 0
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else stop.code is not None
            if not isinstance(stop.code, (int, type(None))):
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            status = 1
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(status)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""
_IDLE_SERVERS = {}  # environment -> queue.Queue of idle servers started in it
_KEPT_ENVIRONMENTS = 2  # idle servers of older environments end (each holds TensorFlow)
_SERVERS_LOCK = threading.Lock()  # run_scripts calls from two threads


def _forked_run(script, args, cwd, env, timeout):
    """One run of script (a path in the repository) with args on an idle server for env."""
    env = dict(os.environ if env is None else env)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    key = tuple(sorted(env.items()))
    with _SERVERS_LOCK:
        idle = _IDLE_SERVERS[key] = _IDLE_SERVERS.pop(key, None) or queue.Queue()  # newest last
        for old in list(_IDLE_SERVERS)[:-_KEPT_ENVIRONMENTS]:
            _close(_IDLE_SERVERS.pop(old))
    try:
        server = idle.get_nowait()
    except queue.Empty:
        server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=tempfile.TemporaryFile(),
                                  env=env, text=True)
    with tempfile.TemporaryDirectory() as scratch:
        out, err = os.path.join(scratch, "out"), os.path.join(scratch, "err")
        server.stdin.write(json.dumps([os.path.join(ROOT, script), list(args),
                                       os.getcwd() if cwd is None else str(cwd), out, err,
                                       timeout]) + "\n")
        server.stdin.flush()
        status = server.stdout.readline()
        assert status, f"the fork server ended with status {server.wait()}"
        idle.put(server)
        with open(out) as stdout, open(err) as stderr:
            return subprocess.CompletedProcess([script, *args], int(status), stdout.read(),
                                               stderr.read())


def run_script(script, *args, cwd=None, env=None, timeout=300):
    """script (a path in the repository, e.g. "train_vae.py" or "benchmarks/evaluate.py") run
    with args to its end, in a fresh process forked as above -> CompletedProcess (stdout and
    stderr as text). env: its environment (default this one's), TensorFlow's C++ logs at
    level 2 unless env sets TF_CPP_MIN_LOG_LEVEL."""
    return _forked_run(script, args, cwd, env, timeout)


def run_scripts(runs, cwd=None, env=None, timeout=300):
    """[run_script(script, *args, cwd=cwd, env=env) for (script, args) in runs], two at a time."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda run: _forked_run(*run, cwd, env, timeout), runs))


def _close(idle):
    while not idle.empty():  # each server ends at the end of its input
        server = idle.get()
        server.stdin.close()
        server.wait(timeout=60)


def pytest_sessionfinish(session):
    for idle in list(_IDLE_SERVERS.values()):
        _close(idle)


def script_command(script, *args):
    """The command line running `script` with args in this Python (for a process of its own:
    one to kill, or one of several workers)."""
    return [sys.executable, os.path.join(ROOT, script), *args]


def benchmark(name):
    """benchmarks/<name>.py as a module, loaded by its path once and kept in sys.modules under
    its name, the name the benchmark scripts import each other by (evaluate.py's `import
    baselines` then finds this module, not a second copy; an installed package of that name,
    e.g. `evaluate`, is not picked up)."""
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    assert os.path.samefile(module.__file__, path), f"{name} is {module.__file__}, not {path}"
    return module


def softplus(x):
    """log(1 + e^x), without overflow."""
    return np.logaddexp(0.0, x)


def bernoulli_nll(x, logits):
    """-log p(x | logits) of targets x in [0, 1] (sigmoid cross-entropy), summed over all
    but the first axis, in float64: sum_k softplus(l_k) - x_k l_k."""
    x, logits = np.asarray(x, np.float64), np.asarray(logits, np.float64)
    return (softplus(logits) - x * logits).reshape(len(x), -1).sum(axis=1)


def pytest_configure(config):
    # Keras' TensorFlow backend converts tensors with np.array(x, copy=False) (keras/src/
    # backend/tensorflow/core.py), and TensorFlow's tensors' __array__ take no `copy`, so
    # NumPy 2 warns inside those two dependencies at every conversion; nothing here can fix it.
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation doesn't accept "
                            "a copy keyword:DeprecationWarning:keras")


@pytest.fixture(scope="session")
def two_replicas():
    """One MirroredStrategy over the two logical CPUs for the whole session: separate
    instances in one process reuse collective keys and then clash."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


# train_vae.py's flags of the shared stage-1 run below.
STAGE1_RUN = ["--res=32", "--c_dim=3", "--batch_size=8", "--steps=2", "--log_every=2",
              "--noevaluate"]


@pytest.fixture(scope="session")
def stage1_run(tmp_path_factory):
    """A finished stage-1 run directory, `train_vae.py *STAGE1_RUN` (sprites, 32 px, c_dim 3,
    batch 8, 2 steps), trained once for every test that reads one: copy it to change it."""
    out = str(tmp_path_factory.mktemp("stage1_run") / "vae")
    result = run_script("train_vae.py", *STAGE1_RUN, f"--out_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture
def mixed_bfloat16():
    """Keras' global dtype policy mixed_bfloat16 for one test, float32 again after it."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy("float32")


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


# Small stage-2 builders shared by test_idgan.py and test_speed_options.py (the `stage2`
# fixture below hands them out).


def sgd():
    # Plain SGD keeps a gradient's scale visible in the update (RMSprop's first step is
    # about lr * 10 * sign(g), blind to a wrong loss scaling across replicas).
    return keras.optimizers.SGD(0.05)


def tiny_encoder(c_dim, res=16, channels=3, logvar_bias=None):
    """A small Table A.2-shaped encoder: [0, 1] images -> concat([mu, logvar]).

    With logvar_bias the logvar head is that constant (zero kernel).
    """
    image = keras.Input((res, res, channels))
    h = layers.Conv2D(4, 4, 2, "same", activation="relu")(image)
    h = layers.Flatten()(layers.Conv2D(4, 4, 2, "same", activation="relu")(h))
    if logvar_bias is None:
        return keras.Model(image, layers.Dense(2 * c_dim)(h))
    mu = layers.Dense(c_dim)(h)
    logvar = layers.Dense(c_dim, kernel_initializer="zeros",
                          bias_initializer=keras.initializers.Constant(logvar_bias))(h)
    return keras.Model(image, layers.Concatenate()([mu, logvar]))


def tiny_resnets(c_dim, nuisance_dim, res=32, vdb=False):
    import idgan

    return (idgan.build_resnet_generator(c_dim, nuisance_dim, res, nf=4, nf_max=8),
            idgan.build_resnet_discriminator(res, nf=4, nf_max=8, vdb=vdb))


def images(n, res=32, channels=3, seed=0):
    return np.random.default_rng(seed).random((n, res, res, channels), dtype=np.float32)


def dataset(x, batch):
    return tf.data.Dataset.from_tensor_slices(x).batch(batch)


def build_replica_model(c_dim=2, vdb=False):
    """No randomness that matters: no nuisance, and a logvar head at -60 makes
    c = mu + exp(-30) * eps equal mu in float32. distill_weight = exp(-60) keeps the
    NLL's gradient O(1) despite its 1 / exp(logvar). With vdb, the VDB's noise is drawn
    for the global batch, so it matters but is the same on any number of replicas."""
    import idgan

    generator, discriminator = tiny_resnets(c_dim, 0, vdb=vdb)
    encoder = tiny_encoder(c_dim, logvar_bias=-60.0)
    model = idgan.IDGAN(generator, discriminator, encoder, nuisance_dim=0, c_dim=c_dim,
                        distill_weight=float(np.exp(-60.0)), ema_decay=0.5,
                        vdb_target=0.1 if vdb else None, seed=4)
    model.compile(sgd(), sgd())
    return model


@pytest.fixture(scope="session")
def stage2():
    """stage2.images(n), .dataset(x, batch), .tiny_encoder(...), .tiny_resnets(...),
    .build_replica_model(...), .sgd(): small stage-2 pieces."""
    return types.SimpleNamespace(sgd=sgd, tiny_encoder=tiny_encoder, tiny_resnets=tiny_resnets,
                                 images=images, dataset=dataset,
                                 build_replica_model=build_replica_model)


class _Refusing:
    """A model that raises AssertionError when called on more than `chunk` rows (its training
    batch), appending each call's rows to `sizes`; otherwise the model."""

    def __init__(self, model, chunk, sizes=None):
        self.model, self.chunk, self.sizes = model, chunk, [] if sizes is None else sizes

    def __getattr__(self, name):  # inputs, output_shape, ... of the model
        return getattr(self.model, name)

    def __call__(self, inputs, training=False):
        self.sizes.append(len(tf.nest.flatten(inputs)[0]))
        if self.sizes[-1] > self.chunk:
            raise AssertionError(f"called on {self.sizes[-1]} images, chunk {self.chunk}")
        return self.model(inputs, training=training)


@pytest.fixture(scope="session")
def refusing():
    """refusing(model, chunk, sizes=None): the model, refusing calls of more than chunk rows."""
    return _Refusing


# Tiny run directories for metrics.evaluate (test_metrics.py, test_inception_graph.py): the
# `fake_runs` fixture below.

class _NoiseImages:
    """Stand-in ground truth whose images are uniform noise (for datasets without factors)."""

    def __init__(self, res):
        self.res = res

    def sample(self, num, rng):
        return None, rng.random((num, self.res, self.res, 1), dtype=np.float32)


@pytest.fixture
def fake_datasets():
    """The stand-in for data.py that fake_runs fills: metrics.evaluate's `datasets`."""
    return types.SimpleNamespace()


@pytest.fixture
def fake_runs(tmp_path, fake_datasets):
    """fake_runs(ground_truth, truth=None) -> (vae, idgan): a stage-1 run directory (8 px, one
    channel, c_dim 3: encoder.keras, decoder.keras) and a stage-2 one (16 px, nuisance_dim 2:
    generator.keras) of dataset "toy" in tmp_path, and fills fake_datasets, a stand-in for
    data.py: has_ground_truth(name) is ground_truth, make_dataset(name, res, batch_size, ...)
    endless batches of the 64 images truth(res).sample(64, default_rng(seed)) gives (truth: a
    class of the ground-truth interface, default uniform noise), ground_truth_data(...)
    truth(8)."""
    def make(ground_truth, truth=None):
        truth = truth or _NoiseImages

        def make_dataset(name, res, batch_size, data_dir=None, seed=0, painting=None):
            images = truth(res).sample(64, np.random.default_rng(seed))[1]
            return tf.data.Dataset.from_tensor_slices(images).repeat().batch(batch_size, True)

        fake_datasets.__dict__.update(has_ground_truth=lambda name: ground_truth,
                                      make_dataset=make_dataset,
                                      ground_truth_data=lambda name, **kwargs: truth(8))
        vae, idgan = tmp_path / "vae", tmp_path / "idgan"
        vae.mkdir(), idgan.mkdir()
        (vae / "flags.json").write_text(json.dumps(dict(dataset="toy", res=8, c_dim=3,
                                                        data_dir=None)))
        (idgan / "flags.json").write_text(json.dumps(dict(dataset="toy", res=16,
                                                          nuisance_dim=2)))
        x = keras.Input((8, 8, 1))
        keras.Model(x, layers.Dense(6)(layers.Flatten()(x))).save(vae / "encoder.keras")
        c = keras.Input((3,))
        image = layers.Reshape((8, 8, 1))(layers.Dense(64, activation="sigmoid")(c))
        keras.Model(c, image).save(vae / "decoder.keras")
        z = keras.Input((2,))
        image = layers.Dense(256, activation="tanh")(layers.Concatenate()([z, c]))
        keras.Model([z, c], layers.Reshape((16, 16, 1))(image)).save(idgan / "generator.keras")
        return vae, idgan
    return make
