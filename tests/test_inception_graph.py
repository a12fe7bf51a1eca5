"""The 2015 Inception graph of published FIDs (TTUR / pytorch-fid), offline: a synthetic
GraphDef with the real graph's tensor names, input convention and batch-1 shapes stands in."""
import io
import json
import os
import subprocess
import sys
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import metrics
from test_metrics import ROOT, fake_runs

SIZE = 8  # the synthetic graph's JPEG size; it resizes to SIZE / 2 as the real one does to 299
KERNEL = np.random.default_rng(0).normal(size=(3, 2048)).astype(np.float32)


def synthetic_graph_def(pool_name="pool_3"):
    """DecodeJpeg (uint8 [8, 8, 3]) -> Cast -> ExpandDims [1, 8, 8, 3] (RGB in 0..255) ->
    ResizeBilinear (2015's legacy kernel) -> (x - 128) / 128 -> 1x1 conv, ReLU -> pool_3
    [1, 1, 1, 2048] -> pool_3/_reshape [1, 2048]: the real graph's names and batch-1 shapes,
    recorded in _output_shapes too."""
    graph = tf.Graph()
    with graph.as_default():
        decoded = tf.compat.v1.placeholder(tf.uint8, [SIZE, SIZE, 3], name="DecodeJpeg")
        x = tf.expand_dims(tf.cast(decoded, tf.float32, name="Cast"), 0, name="ExpandDims")
        x = tf.compat.v1.image.resize_bilinear(x, [SIZE // 2] * 2, name="ResizeBilinear")
        x = tf.nn.relu(tf.nn.conv2d((x - 128.0) / 128.0, KERNEL[None, None], 1, "VALID"))
        pool = tf.nn.avg_pool2d(x, SIZE // 2, 1, "VALID", name=pool_name)
        assert pool.shape == (1, 1, 1, 2048)
        tf.reshape(pool, [1, 2048], name=f"{pool_name}/_reshape")  # batch 1 hard-coded
    return graph.as_graph_def(add_shapes=True)


def direct_features(images):
    """The synthetic net in numpy on images in [0, 1]: 8-bit RGB pixels; the legacy bilinear
    resize by 1/2 samples every other pixel; the conv; the mean."""
    pixels = np.round(np.clip(images, 0, 1) * 255)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.maximum((pixels[:, ::2, ::2] - 128) / 128 @ KERNEL, 0).mean(axis=(1, 2))


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


def test_features_equal_direct_computation_at_any_batch_size(graph_pb):
    assert any("_output_shapes" in node.attr for node in synthetic_graph_def().node)
    assert not any("_output_shapes" in node.attr  # the batch-1 shapes are forgotten
                   for node in metrics.read_inception_graph(graph_pb).node)
    features_fn = metrics.inception_graph_features_fn(graph_pb)
    rng = np.random.default_rng(1)
    for batch in (1, 3, 7):
        images = rng.uniform(size=(batch, SIZE, SIZE, 3)).astype(np.float32)
        features = features_fn(images)
        assert features.shape == (batch, 2048)
        np.testing.assert_allclose(features, direct_features(images), rtol=1e-5, atol=1e-5)


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
    np.testing.assert_allclose(white, np.maximum(127 / 128 * KERNEL.sum(0), 0),  # 255 in
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(features_fn(np.full((1, SIZE, SIZE, 3), 1.7))[0], white)
    np.testing.assert_allclose(features_fn(np.zeros((1, SIZE, SIZE, 3)))[0],
                               np.maximum(-KERNEL.sum(0), 0), rtol=1e-5, atol=1e-6)
    grey = np.random.default_rng(3).uniform(size=(3, SIZE, SIZE, 1))
    np.testing.assert_array_equal(features_fn(grey), features_fn(np.repeat(grey, 3, axis=-1)))
    np.testing.assert_allclose(features_fn(grey), direct_features(grey), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case, reason", [
    ("no pool_3", "has no tensor pool_3:0"),
    ("text", "not the inception-2015-12-05 graph"),
    ("archive without the graph", "has no tensor ExpandDims:0 or pool_3:0"),
    ("damaged archive", "not the inception-2015-12-05 graph"),
    ("missing", "No such file"),
])
def test_other_files_are_refused_in_one_line(tmp_path, case, reason):
    text = tmp_path / "notes.pb"
    text.write_text("not a graph\n" * 3)
    path = {"no pool_3": lambda: write_graph(tmp_path, synthetic_graph_def("pool_4")),
            "text": lambda: str(text),
            "archive without the graph": lambda: write_archive(tmp_path, {"README": b"x"}),
            "damaged archive": lambda: write_archive(tmp_path, {
                "classify_image_graph_def.pb": b"\xff" * 64}),
            "missing": lambda: str(tmp_path / "inception-2015-12-05.tgz")}[case]()
    with pytest.raises(ValueError) as error:
        metrics.inception_features_fn(path)
    assert reason in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_evaluate_names_the_network_in_metrics_json(tmp_path, monkeypatch, graph_pb):
    vae, _ = fake_runs(tmp_path, monkeypatch, ground_truth=False)  # 8 px grey images
    results = metrics.evaluate(str(vae), num_samples=6, batch_size=3, inception_weights=graph_pb,
                               log=lambda line: None)
    assert results["fid_features"] == metrics.INCEPTION_GRAPH
    assert "comparable to published" in json.loads((vae / "metrics.json").read_text())[
        "fid_features"]
    assert np.isfinite(results["fid_vae"]) and results["fid_vae"] > 0


def test_command_line_refuses_a_wrong_file_in_one_line(tmp_path):
    run = tmp_path / "celeba"
    run.mkdir()
    (run / "flags.json").write_text(json.dumps(dict(dataset="celeba", res=8, c_dim=3)))
    x, c = keras.Input((8, 8, 3)), keras.Input((3,))
    keras.Model(x, keras.layers.Dense(6)(keras.layers.Flatten()(x))).save(run / "encoder.keras")
    keras.Model(c, keras.layers.Reshape((8, 8, 3))(keras.layers.Dense(192)(c))).save(
        run / "decoder.keras")
    wrong = write_graph(tmp_path, synthetic_graph_def("pool_4"))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    command = [sys.executable, "metrics.py", f"--vae={run}", "--num_samples=2",
               f"--inception_weights={wrong}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("metrics.py: error:")]
    assert len(errors) == 1 and "has no tensor pool_3:0" in errors[0], result.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written
