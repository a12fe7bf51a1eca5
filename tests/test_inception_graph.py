"""The 2015 Inception graph of published FIDs (TTUR / pytorch-fid), offline: a synthetic
GraphDef with the real graph's tensor names, input convention, batch-1 shapes and GraphDef
version, with its removed op BatchNormWithGlobalNormalization, stands in."""
import io
import json
import os
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import metrics
from conftest import ROOT, run_script


SIZE = 8  # the synthetic graph's JPEG size; it resizes to SIZE / 2 as the real one does to 299
KERNEL = np.random.default_rng(0).normal(size=(3, 2048)).astype(np.float32)
# conv/batchnorm's constants: variances from 0.05, where variance_epsilon moves the output
_BN = np.random.default_rng(1)
MEAN, BETA = _BN.normal(scale=0.5, size=(2, 2048)).astype(np.float32)
VARIANCE, GAMMA = _BN.uniform([[0.05], [0.5]], [[1.0], [1.5]], (2, 2048)).astype(np.float32)
EPSILON = 1e-3


def synthetic_graph_def(pool_name="pool_3", scale_after_normalization=True, variance=VARIANCE):
    """DecodeJpeg (uint8 [8, 8, 3]) -> Cast -> ExpandDims [1, 8, 8, 3] (RGB in 0..255) ->
    ResizeBilinear (2015's legacy kernel) -> (x - 128) / 128 -> 1x1 conv -> conv/batchnorm
    (BatchNormWithGlobalNormalization) -> conv/CheckNumerics, conv/control_dependency ->
    ReLU -> pool_3 [1, 1, 1, 2048] -> pool_3/_reshape [1, 2048]: the real graph's names, ops,
    batch-1 shapes (recorded in _output_shapes too) and GraphDef version (8, before the one
    that removed BatchNormWithGlobalNormalization)."""
    graph = tf.Graph()
    with graph.as_default():
        decoded = tf.compat.v1.placeholder(tf.uint8, [SIZE, SIZE, 3], name="DecodeJpeg")
        x = tf.expand_dims(tf.cast(decoded, tf.float32, name="Cast"), 0, name="ExpandDims")
        x = tf.compat.v1.image.resize_bilinear(x, [SIZE // 2] * 2, name="ResizeBilinear")
        x = tf.nn.conv2d((x - 128.0) / 128.0, KERNEL[None, None], 1, "VALID", name="conv/Conv2D")
        x = tf.identity(x, name="conv/batchnorm")  # made BatchNormWithGlobalNormalization below
        constants = [tf.constant(value, name=f"conv/batchnorm/{name}").op.name for name, value in
                     dict(moving_mean=MEAN, moving_variance=variance, beta=BETA,
                          gamma=GAMMA).items()]
        with tf.control_dependencies([tf.debugging.check_numerics(x, "conv",
                                                                  name="conv/CheckNumerics")]):
            x = tf.identity(x, name="conv/control_dependency")
        pool = tf.nn.avg_pool2d(tf.nn.relu(x, name="conv"), SIZE // 2, 1, "VALID", name=pool_name)
        assert pool.shape == (1, 1, 1, 2048)
        tf.reshape(pool, [1, 2048], name=f"{pool_name}/_reshape")  # batch 1 hard-coded
    graph_def = graph.as_graph_def(add_shapes=True)
    batch_norm, = [node for node in graph_def.node if node.name == "conv/batchnorm"]
    batch_norm.op = "BatchNormWithGlobalNormalization"  # TensorFlow no longer builds it
    batch_norm.input.extend(constants)
    batch_norm.attr["variance_epsilon"].f = EPSILON
    batch_norm.attr["scale_after_normalization"].b = scale_after_normalization
    graph_def.versions.producer = 8
    return graph_def


def batch_norm(x, scale_after_normalization=True):
    """BatchNormWithGlobalNormalization's arithmetic, in float64."""
    scale = 1 / np.sqrt(VARIANCE.astype(np.float64) + np.float32(EPSILON))
    return (x - MEAN) * scale * (GAMMA if scale_after_normalization else 1) + BETA


def direct_features(images, scale_after_normalization=True):
    """The synthetic net in numpy on images in [0, 1]: 8-bit RGB pixels; the legacy bilinear
    resize by 1/2 samples every other pixel; the conv; the batch norm; the mean."""
    pixels = np.round(np.clip(images, 0, 1) * 255)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    x = (pixels[:, ::2, ::2] - 128) / 128 @ KERNEL
    return np.maximum(batch_norm(x, scale_after_normalization), 0).mean(axis=(1, 2))


def write_graph(tmp_path, graph_def=None, name="classify_image_graph_def.pb"):
    path = tmp_path / name
    path.write_bytes((graph_def or synthetic_graph_def()).SerializeToString())
    return str(path)


def write_archive(tmp_path, members):
    """A .tgz laid out as inception-2015-12-05.tgz: {name: bytes} at its top level."""
    path = tmp_path / "inception-2015-12-05.tgz"
    with tarfile.open(path, "w:gz") as archive:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return str(path)


@pytest.fixture(scope="module")
def graph_pb(tmp_path_factory):
    return write_graph(tmp_path_factory.mktemp("graph"))


@pytest.mark.parametrize("scale_after_normalization", [True, False])
def test_the_synthetic_graph_runs_as_ttur_runs_it(scale_after_normalization):
    """The old op at GraphDef version 8 runs in a tf.compat.v1.Session after
    tf.import_graph_def, as TTUR's fid.py runs the real graph, and TensorFlow's own kernel
    computes direct_features (on one image, the batch its recorded shapes say)."""
    graph_def = synthetic_graph_def(scale_after_normalization=scale_after_normalization)
    assert graph_def.versions.producer == 8
    assert "BatchNormWithGlobalNormalization" in {node.op for node in graph_def.node}
    images = np.random.default_rng(4).uniform(size=(1, SIZE, SIZE, 3))
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="FID_Inception_Net")
        with tf.compat.v1.Session(graph=graph) as session:
            features = session.run("FID_Inception_Net/pool_3:0", {
                "FID_Inception_Net/ExpandDims:0": np.round(images * 255)})
    np.testing.assert_allclose(features.reshape(1, 2048),
                               direct_features(images, scale_after_normalization),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale_after_normalization", [True, False])
def test_features_equal_direct_computation_at_any_batch_size(tmp_path, scale_after_normalization):
    """The old graph (its BatchNormWithGlobalNormalization at GraphDef version 8, as the
    real one's) runs at today's version, at any batch size."""
    path = write_graph(tmp_path, synthetic_graph_def(
        scale_after_normalization=scale_after_normalization))
    assert any("_output_shapes" in node.attr for node in synthetic_graph_def().node)
    assert not any("_output_shapes" in node.attr  # the batch-1 shapes are forgotten
                   for node in metrics.read_inception_graph(path).node)
    features_fn = metrics.inception_graph_features_fn(path)
    rng = np.random.default_rng(1)
    for batch in (1, 3, 7):
        images = rng.uniform(size=(batch, SIZE, SIZE, 3)).astype(np.float32)
        features = features_fn(images)
        assert features.shape == (batch, 2048)
        np.testing.assert_allclose(features, direct_features(images, scale_after_normalization),
                                   rtol=1e-5, atol=1e-5)


def test_tgz_and_pb_load_the_same_network(tmp_path, graph_pb):
    blob = open(graph_pb, "rb").read()
    tgz = write_archive(tmp_path, {"LICENSE": b"x", "imagenet_synset_to_human_label_map.txt": b"x",
                                   "classify_image_graph_def.pb": blob})
    images = np.random.default_rng(2).uniform(size=(2, SIZE, SIZE, 3))
    expected = metrics.inception_graph_features_fn(graph_pb)(images)
    for weights in (tgz, graph_pb):  # --inception_weights takes both, through either function
        np.testing.assert_array_equal(metrics.inception_features_fn(weights)(images), expected)


def test_input_convention_values_0_255_and_grey_repeated(graph_pb):
    """[0, 1] images reach ExpandDims as RGB in 0..255 (8-bit steps, clipped); grey ones as
    three equal channels."""
    features_fn = metrics.inception_graph_features_fn(graph_pb)
    white = features_fn(np.ones((1, SIZE, SIZE, 3)))[0]
    np.testing.assert_allclose(white, np.maximum(batch_norm(127 / 128 * KERNEL.sum(0)), 0),
                               rtol=1e-5, atol=1e-5)  # 255 in
    np.testing.assert_array_equal(features_fn(np.full((1, SIZE, SIZE, 3), 1.7))[0], white)
    np.testing.assert_allclose(features_fn(np.zeros((1, SIZE, SIZE, 3)))[0],
                               np.maximum(batch_norm(-KERNEL.sum(0)), 0), rtol=1e-5, atol=1e-5)
    grey = np.random.default_rng(3).uniform(size=(3, SIZE, SIZE, 1))
    np.testing.assert_array_equal(features_fn(grey), features_fn(np.repeat(grey, 3, axis=-1)))
    np.testing.assert_allclose(features_fn(grey), direct_features(grey), rtol=1e-5, atol=1e-5)


def removed_op_graph():
    """The synthetic graph with an op removed at GraphDef version 22 (not the real graph's)."""
    graph_def = synthetic_graph_def()
    next(node for node in graph_def.node if node.name == "conv/control_dependency").op = (
        "QuantizeAndDequantize")
    return graph_def


@pytest.mark.parametrize("case, reason", [
    ("no pool_3", "has no tensor pool_3:0"),
    ("text", "not the inception-2015-12-05 graph"),
    ("archive without the graph", "has no tensor ExpandDims:0 or pool_3:0"),
    ("damaged archive", "not the inception-2015-12-05 graph"),
    ("missing", "No such file"),
    ("an op removed from TensorFlow", "QuantizeAndDequantize is not available"),
])
def test_other_files_are_refused_in_one_line(tmp_path, case, reason):
    text = tmp_path / "notes.pb"
    text.write_text("not a graph\n" * 3)
    path = {"no pool_3": lambda: write_graph(tmp_path, synthetic_graph_def("pool_4")),
            "an op removed from TensorFlow": lambda: write_graph(tmp_path, removed_op_graph()),
            "text": lambda: str(text),
            "archive without the graph": lambda: write_archive(tmp_path, {"README": b"x"}),
            "damaged archive": lambda: write_archive(tmp_path, {
                "classify_image_graph_def.pb": b"\xff" * 64}),
            "missing": lambda: str(tmp_path / "inception-2015-12-05.tgz")}[case]()
    with pytest.raises(ValueError) as error:
        metrics.inception_features_fn(path)
    assert reason in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_evaluate_names_the_network_in_metrics_json(fake_runs, graph_pb, fake_datasets):
    vae, _ = fake_runs(ground_truth=False)  # 8 px grey images
    results = metrics.evaluate(str(vae), num_samples=6, batch_size=3, inception_weights=graph_pb,
                               log=lambda line: None, datasets=fake_datasets)
    assert results["fid_features"] == metrics.INCEPTION_GRAPH
    assert "comparable to published" in json.loads((vae / "metrics.json").read_text())[
        "fid_features"]
    assert np.isfinite(results["fid_vae"]) and results["fid_vae"] > 0


def test_a_graph_whose_op_fails_is_refused_in_one_line(tmp_path):
    """A node that fails on a batch (conv/CheckNumerics: negative variances make NaN) is one
    line, a ValueError as for a file that is not the graph, not TensorFlow's OpError."""
    path = write_graph(tmp_path, synthetic_graph_def(variance=-VARIANCE))
    features_fn = metrics.inception_graph_features_fn(path)
    with pytest.raises(ValueError) as error:
        features_fn(np.zeros((2, SIZE, SIZE, 3)))
    message = str(error.value)
    assert path in message and "NaN" in message and "\n" not in message, message


def celeba_run(tmp_path, data_dir=None):
    """A CelebA run directory at 8 px (encoder, decoder), its real images in data_dir."""
    run = tmp_path / "celeba"
    run.mkdir()
    (run / "flags.json").write_text(json.dumps(dict(dataset="celeba", res=8, c_dim=3,
                                                    data_dir=data_dir)))
    x, c = keras.Input((8, 8, 3)), keras.Input((3,))
    keras.Model(x, keras.layers.Dense(6)(keras.layers.Flatten()(x))).save(run / "encoder.keras")
    keras.Model(c, keras.layers.Reshape((8, 8, 3))(keras.layers.Dense(192)(c))).save(
        run / "decoder.keras")
    return run


def run_metrics(run, weights):
    """benchmarks/evaluate.py on the run with --inception_weights=weights: (status, stderr)."""
    result = run_script("benchmarks/evaluate.py", f"--vae={run}", "--num_samples=2",
                        "--batch_size=2", f"--inception_weights={weights}", cwd=ROOT,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return result.returncode, result.stderr


def assert_one_error_line(status, stderr, reason):
    """Status 2 and one line `evaluate.py: error: ...` naming the reason, no traceback: the
    line."""
    assert status == 2 and "Traceback" not in stderr, (status, stderr)
    errors = [line for line in stderr.splitlines() if line.startswith("evaluate.py: error:")]
    assert len(errors) == 1 and reason in errors[0], stderr
    return errors[0]


def test_command_line_refuses_a_wrong_file_in_one_line(tmp_path):
    run = celeba_run(tmp_path)
    wrong = write_graph(tmp_path, synthetic_graph_def("pool_4"))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert_one_error_line(*run_metrics(run, wrong), "has no tensor pool_3:0")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written


def test_command_line_reports_a_graph_that_fails_in_one_line(tmp_path):
    """The graph fails on the first batch of real images (two 8-bit PNGs in data_dir)."""
    images = tmp_path / "images"
    images.mkdir()
    for k in range(2):
        pixels = np.random.default_rng(k).integers(0, 256, (12, 12, 3), np.uint8)
        (images / f"{k}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    run = celeba_run(tmp_path, str(images))
    failing = write_graph(tmp_path, synthetic_graph_def(variance=-VARIANCE))
    error = assert_one_error_line(*run_metrics(run, failing), f"the graph of {failing} fails")
    assert "NaN" in error, error  # CheckNumerics' words, from running the graph
    assert not (run / "metrics.json").exists()
