"""Metrics of ID-GAN (paper appendix C.1 and Table 3; SPEC.md "Metrics").

FID compares Gaussians fitted to features of real and generated images; the FactorVAE
metric (FVM) and the mutual information gap (MIG) score how axis-aligned an encoder's codes
are with the ground-truth factors (disentanglement_lib's definitions); L_I is the stage-2
lower bound of I(c; G(s)), and GILBO the same bound read off a freshly trained auxiliary
encoder; FIDCurve logs FID while a model trains. Everything up to `evaluate` needs only
tensorflow, keras, numpy and scipy.

    python metrics.py --vae=RUN [--idgan=RUN] [--num_samples=50000] [--batch_size=N]
        [--out=PATH] [--classifier=PATH] [--inception_weights=imagenet|PATH]   (plan and
        progress on stderr, the metrics as JSON on stdout)
"""
import importlib
import json
import os
import pathlib
import sys
import tarfile
import time

import keras
import numpy as np
import scipy.linalg
import tensorflow as tf
from absl import app, flags


# --- Frechet distance and streaming feature statistics (FID, Heusel et al. 2017) ----------
def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)), in float64.

    sigma1 sigma2 has the spectrum of the symmetric A sigma2 A, A = sigma1^(1/2), so the
    trace of its square root is the sum of square roots of A sigma2 A's eigenvalues: two
    symmetric eigendecompositions replace a general matrix square root.
    """
    mu1, sigma1, mu2, sigma2 = (np.asarray(x, np.float64) for x in (mu1, sigma1, mu2, sigma2))
    d = mu1.size
    shapes = [tuple(x.shape) for x in (mu1, sigma1, mu2, sigma2)]
    if shapes != [(d,), (d, d), (d,), (d, d)]:
        raise ValueError(f"frechet_distance needs means (d,) and covariances (d, d) of one d, "
                         f"got shapes {shapes}.")
    eigenvalues, eigenvectors = _eigh(sigma1)
    root = np.sqrt(np.maximum(eigenvalues, 0.0))  # clip rounding-negative eigenvalues
    sqrt_sigma1 = (eigenvectors * root) @ eigenvectors.T
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    product = (product + product.T) / 2  # symmetric up to rounding
    trace_sqrt = np.sum(np.sqrt(np.maximum(_eigh(product, vectors=False), 0.0)))
    return float(np.sum(np.square(mu1 - mu2)) + np.trace(sigma1) + np.trace(sigma2)
                 - 2.0 * trace_sqrt)


def _eigh(matrix, vectors=True):
    """Symmetric eigendecomposition in float64: LAPACK's (scipy) on a CPU, where FID at
    d = 2048 takes 2 s instead of tf.linalg.eigh's 7.5 s on 2 idle cores (on cores shared
    with other processes OPENBLAS_NUM_THREADS=1 keeps it at 3 s); TensorFlow's on a GPU."""
    if not tf.config.list_logical_devices("GPU"):
        return scipy.linalg.eigh(matrix, eigvals_only=not vectors)
    return [np.asarray(x) for x in tf.linalg.eigh(matrix)] if vectors else np.asarray(
        tf.linalg.eigvalsh(matrix))


def feature_statistics(feature_batches):
    """Mean and covariance (ddof=1) of an iterable of (n, d) feature batches.

    Running float64 sums (count, sum, sum of outer products) keep memory at O(d^2) for any
    number of samples; they are taken around the first batch's mean to avoid cancellation.
    """
    count, shift, total, total_outer = 0, None, None, None
    for batch in feature_batches:
        batch = np.asarray(batch, np.float64)
        if batch.ndim != 2:
            raise ValueError(f"feature batches must be (n, d) arrays, got shape {batch.shape}.")
        if not np.all(np.isfinite(batch)):
            raise ValueError("features contain NaN or infinite values.")
        if shift is None and len(batch):
            shift = batch.mean(axis=0)
            total, total_outer = np.zeros_like(shift), np.zeros((len(shift), len(shift)))
        if shift is not None and batch.shape[1] != len(shift):
            raise ValueError(f"feature batches have mismatched dimensions "
                             f"{len(shift)} and {batch.shape[1]}.")
        if len(batch):
            centred = batch - shift
            total += centred.sum(axis=0)
            total_outer += centred.T @ centred
            count += len(batch)
    if count < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {count}.")
    mean = total / count
    sigma = (total_outer - count * np.outer(mean, mean)) / (count - 1)
    return shift + mean, sigma


# --- Feature extractors: InceptionV3 (natural images), a factor classifier (ground-truth data)
def inception_features_fn(weights="imagenet"):
    """Images in [0, 1] (any size, 1 or 3 channels) -> 2048-d InceptionV3 pool features.

    Keras' ImageNet InceptionV3 is not the 2015 TF graph that pytorch-fid ports: its FIDs
    rank models as the paper's do but do not equal published values (SPEC.md "Metrics").
    `weights`: "imagenet" (downloaded once), a local .h5 / .weights.h5 file, or None; or
    that 2015 graph (a .tgz or .pb file, see inception_graph_features_fn) in its place.
    """
    if is_inception_graph(weights):
        return inception_graph_features_fn(weights)
    try:
        inception = keras.applications.InceptionV3(
            include_top=False, weights=weights, input_shape=(299, 299, 3), pooling="avg")
    except Exception as error:  # no network, a missing file, or not InceptionV3's weights
        raise RuntimeError(f"cannot load InceptionV3 weights {weights!r}; download them where "
                           "there is internet and pass the local .h5 / .weights.h5 file "
                           "(metrics.py: --inception_weights=PATH).") from error

    @tf.function(reduce_retracing=True)
    def features(images):
        if images.shape[-1] == 1:
            images = tf.image.grayscale_to_rgb(images)
        images = tf.image.resize(images, (299, 299), method="bilinear")
        pixels = keras.applications.inception_v3.preprocess_input(images * 255.0)
        return inception(pixels, training=False)

    return lambda images: features(tf.convert_to_tensor(images, tf.float32)).numpy()


# The "inception-2015-12-05" graph that the original FID code loads (TTUR, Heusel et al. 2017)
# and pytorch-fid ports: FIDs in its pool_3 space are the published ones. Never downloaded.
INCEPTION_GRAPH = "inception-2015-12-05 (TTUR, comparable to published FIDs)"
KERAS_INCEPTION = "Keras InceptionV3: ranks models, not pytorch-fid's values"
_GRAPH_INPUT, _GRAPH_FEATURES = "ExpandDims:0", "pool_3:0"  # TTUR's feed and fetch


def is_inception_graph(weights):
    """Whether --inception_weights names the 2015 graph: its .tgz archive or its .pb."""
    return isinstance(weights, (str, os.PathLike)) and str(weights).endswith(
        (".pb", ".tgz", ".tar.gz"))


def read_inception_graph(path):
    """The GraphDef of inception-2015-12-05.tgz or of its classify_image_graph_def.pb;
    ValueError (one line) for anything else, or a graph without TTUR's two tensors."""
    what = f"{path} is not the inception-2015-12-05 graph (.tgz or classify_image_graph_def.pb)"
    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as archive:  # without the .pb: an empty graph, refused below
                member = next((m for m in archive.getmembers() if m.isfile() and os.path.basename(
                    m.name) == "classify_image_graph_def.pb"), None)
                blob = archive.extractfile(member).read() if member else b""
        else:
            blob = pathlib.Path(path).read_bytes()
        graph_def = tf.compat.v1.GraphDef.FromString(blob)
    except Exception as error:  # no file, a damaged archive, not a GraphDef (a DecodeError)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{what}: {reason}") from error
    names = {node.name for node in graph_def.node}
    missing = [name for name in (_GRAPH_INPUT, _GRAPH_FEATURES) if name[:-2] not in names]
    if missing:
        raise ValueError(f"{what}: it has no tensor {' or '.join(missing)}")
    for node in graph_def.node:  # forget the recorded batch-1 shapes (TTUR patches them too)
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
    return _without_removed_batch_norm(graph_def)


def _without_removed_batch_norm(graph_def):
    """graph_def with each BatchNormWithGlobalNormalization node (the 2015 graph's batch
    normalisation after each convolution) replaced by the same arithmetic in ops of today:
    TensorFlow refuses that op at GraphDef version 9 and later, and a tf.function (as
    wrap_function's) runs at today's version whatever the graph's. The graph is then marked
    as of today's version, so that any other removed op is refused when it is imported."""
    names = {node.name for node in graph_def.node}
    nodes = [new for node in graph_def.node for new in (
        _batch_norm_arithmetic(node, names) if node.op == "BatchNormWithGlobalNormalization"
        else [node])]
    del graph_def.node[:]
    graph_def.node.extend(nodes)
    graph_def.versions.producer = max(graph_def.versions.producer, tf.version.GRAPH_DEF_VERSION)
    return graph_def


def _batch_norm_arithmetic(batch_norm, names):
    """Nodes computing a BatchNormWithGlobalNormalization node's output, the last under its
    name (with its control inputs): (t - mean) * (rsqrt(variance + variance_epsilon) *
    gamma) + beta, without gamma if not scale_after_normalization, as TensorFlow's kernel."""
    t, mean, variance, beta, gamma = batch_norm.input[:5]
    dtype, nodes = batch_norm.attr["T"], []

    def add(suffix, op, *inputs):
        name = f"{batch_norm.name}/{suffix}" if suffix else batch_norm.name
        while suffix and name in names:  # a name of its own
            name += "_"
        names.add(name)
        nodes.append(tf.compat.v1.NodeDef(name=name, op=op, input=inputs,
                                          device=batch_norm.device))
        nodes[-1].attr["dtype" if op == "Const" else "T"].CopyFrom(dtype)
        return name

    epsilon = add("variance_epsilon", "Const")
    nodes[-1].attr["value"].tensor.CopyFrom(tf.make_tensor_proto(
        batch_norm.attr["variance_epsilon"].f, tf.as_dtype(dtype.type), []))
    scale = add("rsqrt", "Rsqrt", add("add_epsilon", "AddV2", variance, epsilon))
    if batch_norm.attr["scale_after_normalization"].b:
        scale = add("scale", "Mul", scale, gamma)
    add("", "AddV2", add("normalized", "Mul", add("centred", "Sub", t, mean), scale), beta)
    nodes[-1].input.extend(batch_norm.input[5:])
    return nodes


def inception_graph_features_fn(path):
    """Images in [0, 1] (any batch and size, 1 or 3 channels) -> the 2048-d pool_3 features of
    the 2015 graph, fed as TTUR feeds it: RGB in 0..255 (rounded, as the 8-bit image files of
    published FIDs) into 'ExpandDims:0', which resizes to 299 px itself. The graph is
    imported with that input replaced by a placeholder of any batch size and its old batch
    norm rewritten (read_inception_graph); a batch it fails on is a ValueError of one line."""
    graph_def = read_inception_graph(path)

    def network(pixels):
        pool_3, = tf.graph_util.import_graph_def(graph_def, {_GRAPH_INPUT: pixels},
                                                 [_GRAPH_FEATURES], name="FID_Inception_Net")
        return tf.reshape(pool_3, [-1, 2048])

    try:
        network = tf.compat.v1.wrap_function(
            network, [tf.TensorSpec([None, None, None, 3], tf.float32)])
    except (ValueError, TypeError, tf.errors.OpError) as error:
        raise ValueError(f"cannot import the graph of {path}: "
                         f"{str(error).strip().splitlines()[0]}") from error

    def features(images):
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape[-1] == 1:
            images = tf.image.grayscale_to_rgb(images)
        try:
            return network(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0)).numpy()
        except tf.errors.OpError as error:  # e.g. one of its CheckNumerics nodes
            # ValueError, as read_inception_graph's refusals: metrics.py's command line and
            # the training scripts (their evaluation and --fid_every) report it in one line.
            raise ValueError(f"the graph of {path} fails: {_op_error_reason(error)}") from error

    return features


def _op_error_reason(error):
    """The line of a TensorFlow OpError that says what failed (its message starts with
    "Graph execution error:" and the node's stack, and ends with the node's name)."""
    lines = [line.strip() for line in error.message.splitlines()]
    lines = [line for line in lines if line and not line.startswith("[[")]
    return lines[-1] if lines else type(error).__name__


def build_factor_classifier(image_shape, factor_names, factor_sizes):
    """ConvNet predicting every factor: Table A.2's encoder trunk, one softmax head each."""
    images = keras.Input(image_shape)
    x = images
    for filters in (32, 32, 64, 64):
        x = keras.layers.Conv2D(filters, 4, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    features = keras.layers.Dense(256, activation="relu", name="features")(x)
    heads = {name: keras.layers.Dense(size, activation="softmax", name=f"factor_{name}")(features)
             for name, size in zip(factor_names, factor_sizes)}
    return keras.Model(images, heads, name="factor_classifier")


def train_factor_classifier(ground_truth_data, steps=5000, batch_size=64, seed=0, progress=None):
    """The classifier whose penultimate features define FID on ground-truth data, and
    {factor name: its accuracy on 1024 fresh samples}; progress(step) after each step."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    names = ground_truth_data.factor_names
    _, example = ground_truth_data.sample(1, rng)
    classifier = build_factor_classifier(example.shape[1:], names, ground_truth_data.factor_sizes)
    classifier.compile(keras.optimizers.Adam(1e-3),
                       loss={name: "sparse_categorical_crossentropy" for name in names})
    for step in range(steps):
        factors, images = ground_truth_data.sample(batch_size, rng)
        classifier.train_on_batch(images, dict(zip(names, factors.T)))
        if progress:
            progress(step + 1)
    return classifier, factor_classifier_accuracy(classifier, ground_truth_data, rng)


def factor_classifier_accuracy(classifier, ground_truth_data, rng, num_samples=1024):
    """{factor name: accuracy on num_samples fresh samples}."""
    factors, images = ground_truth_data.sample(num_samples, rng)
    predictions = classifier.predict(images, batch_size=256, verbose=0)
    return {name: float(np.mean(np.argmax(predictions[name], -1) == factors[:, k]))
            for k, name in enumerate(ground_truth_data.factor_names)}


def load_or_train_factor_classifier(path, ground_truth_data, steps=5000, batch_size=64, seed=0,
                                    dataset=None, progress=None):
    """(classifier, record). The cache is `path` and a sidecar (path with .json for .keras)
    recording its training (dataset, steps, batch_size, seed) and accuracy on fresh samples:
    it is loaded when that training is the one asked for, else retrained and overwritten."""
    key = dict(dataset=dataset, steps=steps, batch_size=batch_size, seed=seed)
    sidecar = os.path.splitext(path)[0] + ".json"
    try:
        with open(sidecar) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = {}
    if os.path.exists(path) and {name: record.get(name) for name in key} == key:
        return keras.models.load_model(path, compile=False), dict(record, cached=True)
    classifier, accuracy = train_factor_classifier(ground_truth_data, steps, batch_size, seed,
                                                   progress)
    if os.path.exists(sidecar):
        os.remove(sidecar)  # first: an old sidecar must never describe the new model
    _save(path, classifier.save)
    _save(sidecar, dict(key, accuracy=accuracy))
    return classifier, dict(key, accuracy=accuracy, cached=False)


def _save(path, value):
    """value(path) or `value` as JSON, written beside and renamed: never a half-written file."""
    temporary = f"{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}"  # Keras needs .keras
    if callable(value):
        value(temporary)
    else:
        pathlib.Path(temporary).write_text(json.dumps(value, indent=2))
    os.replace(temporary, path)


def _resized(images, model):
    """Images resized to a model's input size as stage 2 trains (idgan.encoder_view): average
    pooling ("area") by whole factors, else antialiased bilinear."""
    images, size = tf.convert_to_tensor(images, tf.float32), tuple(model.input_shape[1:3])
    if tuple(images.shape[1:3]) == size:
        return images
    whole = images.shape[1] % size[0] == 0 and images.shape[2] % size[1] == 0
    return tf.image.resize(images, size, "area" if whole else "bilinear", antialias=not whole)


def classifier_features_fn(classifier):
    """Images in [0, 1] -> the classifier's penultimate ("features") activations."""
    features = keras.Model(classifier.inputs, classifier.get_layer("features").output)
    return lambda images: features(_resized(images, classifier), training=False).numpy()


# --- FID ----------------------------------------------------------------------------------
def real_statistics(real_dataset, features_fn, num_samples):
    """Feature statistics of the first num_samples images of an iterable of image batches."""
    def batches():
        remaining = num_samples
        for images in real_dataset:
            images = images[:remaining]
            remaining -= len(images)
            yield features_fn(images)
            if remaining <= 0:
                return
    return feature_statistics(batches())


def generated_statistics(generate_fn, features_fn, num_samples, batch_size):
    """Feature statistics of num_samples images from generate_fn(n) -> n images in [0, 1]."""
    sizes = [min(batch_size, num_samples - start) for start in range(0, num_samples, batch_size)]
    return feature_statistics(features_fn(generate_fn(n)) for n in sizes)


def fid(real_dataset, generate_fn, features_fn, num_samples=50_000, batch_size=100):
    """FID of num_samples real images (fewer if the dataset is shorter) and generated ones."""
    fake = generated_statistics(generate_fn, features_fn, num_samples, batch_size)
    return frechet_distance(*real_statistics(real_dataset, features_fn, num_samples), *fake)


class FIDCurve(keras.callbacks.Callback):
    """FID during training: every `every` steps, num_samples images of generate_fn(n)
    against fixed real statistics (mu, sigma), logged as the TensorBoard scalar `fid` in
    log_dir and as a row "step,fid" of csv_path. Steps count from start_step (the step a
    resumed run starts at); rows after it, left by a run that stopped before its next
    backup, are dropped first, so a resumed curve has each step once."""

    def __init__(self, every, generate_fn, features_fn, real_stats, num_samples, csv_path,
                 log_dir, start_step=0, batch_size=100, log=print):
        super().__init__()
        self.every, self.generate_fn, self.features_fn = every, generate_fn, features_fn
        self.real_stats, self.num_samples, self.batch_size = real_stats, num_samples, batch_size
        self.csv_path, self.log_dir, self.start_step, self.log = csv_path, log_dir, start_step, log

    def on_train_begin(self, logs=None):
        rows = read_fid_curve(self.csv_path) if os.path.exists(self.csv_path) else []
        kept = "".join(f"{step},{value!r}\n" for step, value in rows if step <= self.start_step)
        _save(self.csv_path, lambda path: pathlib.Path(path).write_text("step,fid\n" + kept))
        self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        step = self.start_step + batch + 1  # as the run's monitor counts, no device read
        if step % self.every:
            return
        start = time.monotonic()
        fake = generated_statistics(self.generate_fn, self.features_fn, self.num_samples,
                                    self.batch_size)
        value = float(frechet_distance(*self.real_stats, *fake))
        with open(self.csv_path, "a") as f:
            f.write(f"{step},{value!r}\n")
        with self.writer.as_default(step=step):
            tf.summary.scalar("fid", value)
        self.writer.flush()
        self.log(f"step {step}: FID {value:.2f} ({self.num_samples:,} samples, "
                 f"{_duration(time.monotonic() - start)})")


def fid_curve(config, generate_fn, classifier_path, start_step, log=print):
    """The FIDCurve of a training run's --fid_every: generate_fn(n) -> n images in [0, 1]
    against --fid_samples real images, in the features evaluate uses for the dataset (the
    factor classifier at --fid_classifier or classifier_path, trained with seed 0 if
    absent, or Inception). Writes fid_curve.csv and TensorBoard scalars in the run."""
    data = importlib.import_module("data")
    source = (config["dataset"], config["data_dir"], config["painting"])
    classifier_path = config["fid_classifier"] or classifier_path
    log(f"FID every {config['fid_every']} steps on {config['fid_samples']:,} samples; "
        "features first:")
    if data.has_ground_truth(source[0]) and os.path.isfile(classifier_path):
        features_fn = classifier_features_fn(  # a given classifier, used as it is
            keras.models.load_model(classifier_path, compile=False))
    else:
        features_fn, _, _ = fid_feature_network(data, source, classifier_path, 5000, 0,
                                                config["inception_weights"], log)
    real = data.make_dataset(config["dataset"], config["res"], 100, config["data_dir"],
                             config["seed"] + 7, config["painting"])
    real_stats = real_statistics(real, features_fn, config["fid_samples"])
    run_dir = config["out_dir"]
    return FIDCurve(config["fid_every"], generate_fn, features_fn, real_stats,
                    config["fid_samples"], os.path.join(run_dir, "fid_curve.csv"),
                    os.path.join(run_dir, "logs"), start_step)


def read_fid_curve(path):
    """[(step, fid)] from a FIDCurve csv file."""
    with open(path) as f:
        return [(int(step), float(value)) for step, value in
                (line.strip().split(",") for line in f.readlines()[1:] if line.strip())]


# --- FactorVAE metric (Kim & Mnih 2018) and MIG (Chen et al. 2018), disentanglement_lib's way
def _encode_samples(ground_truth_data, encode_fn, num_samples, rng, chunk=1024):
    """(factors, mean codes) of num_samples random observations, encoded chunk by chunk."""
    factors = ground_truth_data.sample_factors(num_samples, rng)
    observe = ground_truth_data.sample_observations_from_factors
    codes = [encode_fn(observe(factors[i:i + chunk], rng)) for i in range(0, num_samples, chunk)]
    return factors, np.concatenate(codes).astype(np.float64)


def factor_vae_score(ground_truth_data, encode_fn, rng, num_variance=10_000, batch_size=64,
                     num_train=10_000, num_eval=5_000):
    """FVM: accuracy of a majority-vote classifier from (argmin code dim -> fixed factor) votes.

    Defaults follow disentanglement_lib (its score: eval_accuracy); FVM_PROTOCOLS holds the
    paper's too. num_eval=0 casts no held-out votes. encode_fn: observations -> mean codes (n, d).
    """
    _, codes = _encode_samples(ground_truth_data, encode_fn, num_variance, rng)
    global_variances = np.var(codes, axis=0, ddof=1)
    active = np.flatnonzero(np.sqrt(global_variances) >= 0.05)  # collapsed dims cast no vote
    if active.size == 0:
        return dict(train_accuracy=0.0, **({"eval_accuracy": 0.0} if num_eval else {}),
                    num_active_dims=0)
    num_factors = len(ground_truth_data.factor_sizes)

    def votes(num_votes):
        """(active dim x factor) counts; many votes' batches are encoded together."""
        table = np.zeros((active.size, num_factors), np.int64)
        votes_per_chunk = max(1, 1024 // batch_size)
        for start in range(0, num_votes, votes_per_chunk):
            n = min(votes_per_chunk, num_votes - start)
            fixed = rng.integers(num_factors, size=n)
            factors = ground_truth_data.sample_factors(n * batch_size, rng).reshape(
                n, batch_size, num_factors)
            factors[np.arange(n), :, fixed] = factors[np.arange(n), 0, fixed][:, None]  # fix k
            observations = ground_truth_data.sample_observations_from_factors(
                factors.reshape(n * batch_size, num_factors), rng)
            codes = np.asarray(encode_fn(observations), np.float64).reshape(n, batch_size, -1)
            local_variances = np.var(codes[:, :, active], axis=1, ddof=1)
            argmin = np.argmin(local_variances / global_variances[active], axis=1)
            np.add.at(table, (argmin, fixed), 1)
        return table

    train_votes = votes(num_train)
    classifier = np.argmax(train_votes, axis=1)  # each code dim -> its most voted factor
    accuracy = lambda table, n: float(table[np.arange(active.size), classifier].sum() / n)  # noqa
    scores = dict(train_accuracy=accuracy(train_votes, num_train))
    if num_eval:
        scores["eval_accuracy"] = accuracy(votes(num_eval), num_eval)
    return dict(scores, num_active_dims=int(active.size))


# Both FVM protocols of SPEC.md "Metrics": disentanglement_lib's (score = eval accuracy) and
# the paper's appendix C.1 (score = train accuracy; no held-out votes). evaluate() reports both.
FVM_PROTOCOLS = {
    "factor_vae_score": dict(num_variance=10_000, batch_size=64, num_train=10_000, num_eval=5_000),
    "factor_vae_score_paper": dict(num_variance=10_000, batch_size=100, num_train=800, num_eval=0)}


def _histogram_discretize(codes, num_bins):
    """Bin index 0..num_bins-1 of each value among its dim's equal-width histogram bins."""
    return np.stack([np.digitize(column, np.histogram(column, num_bins)[1][:-1]) - 1
                     for column in codes.T], axis=1)


def _one_hot(values):
    """(N, m) ints -> (N, m, V) one-hot, values relabelled 0..V-1 per column."""
    labels = np.stack([np.unique(column, return_inverse=True)[1].ravel() for column in values.T],
                      axis=1)
    return np.eye(labels.max() + 1)[labels], labels


def mig(codes, factors, num_bins=20):
    """Mean over factors of (largest - second largest I(code_i; factor_k)) / H(factor_k)."""
    codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or codes.shape[1] < 2:
        raise ValueError(f"mig needs codes (N, d >= 2) and factors (N, k), "
                         f"got {codes.shape} and {factors.shape}.")
    if not np.all(np.isfinite(codes)):
        raise ValueError("codes contain NaN or infinite values.")
    code_hot, _ = _one_hot(_histogram_discretize(codes, num_bins))
    factor_hot, factor_labels = _one_hot(factors)
    if np.any(factor_labels.max(axis=0) == 0):
        raise ValueError("mig needs every factor to take at least two values.")
    n, d, num_code_values = code_hot.shape
    _, k, num_factor_values = factor_hot.shape
    # Joint distribution of every (code dim, factor) pair in one matmul: (d, bins, k, values).
    joint = (code_hot.reshape(n, -1).T @ factor_hot.reshape(n, -1)).reshape(
        d, num_code_values, k, num_factor_values) / n
    code_marginal = joint.sum(axis=3)[:, :, 0]  # (d, bins)
    factor_marginal = joint.sum(axis=1)[0]  # (k, values)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = joint / (code_marginal[:, :, None, None] * factor_marginal[None, None])
        mutual_info = np.where(joint > 0, joint * np.log(ratio), 0.0).sum(axis=(1, 3))  # (d, k)
        entropy = -np.where(factor_marginal > 0, factor_marginal * np.log(factor_marginal), 0.0)
    entropy = entropy.sum(axis=1)
    top = np.sort(mutual_info, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / entropy))


def compute_mig(ground_truth_data, encode_fn, rng, num_samples=10_000, num_bins=20):
    """MIG of the mean codes of num_samples random observations (disentanglement_lib's way)."""
    factors, codes = _encode_samples(ground_truth_data, encode_fn, num_samples, rng)
    return mig(codes, factors, num_bins)


# --- L_I: the stage-2 lower bound of I(c; G(s)) on fresh samples (paper Eq. 7, Table 3) ---
def _posterior(encoder, images):
    """(mu, logvar) as float64 arrays; the encoder returns concat([mu, logvar]) and sees the
    images average-pooled to its input size, as in stage-2 training."""
    stats = encoder(_resized(images, encoder), training=False)
    return np.split(np.asarray(stats, np.float64), 2, axis=-1)


def _sample_code(encoder, images, rng):
    """c ~ q(c|x) = N(mu, exp(logvar)): on real batches, samples of the aggregated posterior."""
    mu, logvar = _posterior(encoder, images)
    return mu + np.exp(logvar / 2) * rng.standard_normal(mu.shape)


def _codes(encoder, images, rng, code_prior=None):
    """c for a batch of real images: the encoder's posterior samples, or, for a run whose c
    has a fixed prior (InfoGAN's code_prior, "uniform" U(-1, 1) or "normal"), the prior's."""
    if code_prior is None:
        return _sample_code(encoder, images, rng)
    shape = (len(images), encoder.output_shape[-1] // 2)
    return rng.uniform(-1, 1, shape) if code_prior == "uniform" else rng.standard_normal(shape)


def _generate(generator, c, rng):
    """G([z, c]) mapped from [-1, 1] to [0, 1], with z ~ N(0, I) of the generator's width."""
    z = rng.standard_normal((len(c), generator.inputs[0].shape[-1]))
    images = generator([z.astype(np.float32), c.astype(np.float32)], training=False)
    return (images + 1) / 2


def generator_sampler(generator, encoder, real_batches, rng, code_prior=None):
    """generate(n) -> n images in [0, 1] of G([z, c]), c drawn as in stage-2 training: from
    the aggregated posterior on the next batch of real_batches (or the run's fixed prior);
    width-0 c for a generator without one (the plain GAN), which needs no encoder."""
    uses_codes = generator.inputs[1].shape[-1] > 0

    def generate(n):
        c = _codes(encoder, next(real_batches)[:n], rng, code_prior) if uses_codes else (
            np.zeros((n, 0)))
        return _generate(generator, c, rng)
    return generate


def distill_lower_bound(generator, encoder, real_batches, num_samples=10_000, seed=0,
                        code_prior=None):
    """L_I = -E[NLL of c under Encoder(G(z, c))]; higher means G(s) keeps more of c.

    c ~ q(c|x) on `real_batches` (images in [0, 1]; or code_prior's samples, see _codes),
    z ~ N(0, I); the encoder sees G's output mapped to [0, 1] (SPEC.md "Stage 2 objective").
    """
    rng = np.random.default_rng(seed)
    total, count = 0.0, 0
    for real in real_batches:
        c = _codes(encoder, real[:num_samples - count], rng, code_prior)
        mu_hat, logvar_hat = _posterior(encoder, _generate(generator, c, rng))
        nll = 0.5 * (np.log(2 * np.pi) + logvar_hat + (c - mu_hat) ** 2 / np.exp(logvar_hat))
        total, count = total + nll.sum(), count + len(c)
        if count >= num_samples:
            break
    if count == 0:
        raise ValueError("distill_lower_bound got no real images.")
    return -total / count


# --- GILBO (Alemi & Fischer 2018; paper Table 3 and its footnotes 3 to 5) -----------------
def gilbo(generator, encoder, real_batches, num_samples=10_000, train_steps=2_000,
          learning_rate=1e-3, seed=0, code_prior=None, auxiliary=None):
    """GILBO without H(c): E[log e(c | G(z, c))] for an auxiliary encoder e trained, with G
    frozen, to maximise it; higher means G(s) keeps more of c (nats).

    e is a fresh copy of the encoder's architecture (keras.models.clone_model: the same
    layers, newly initialised weights), or `auxiliary` (a model of the same contract, e.g.
    already trained). It sees G's output mapped to [0, 1] and resized bilinearly to its input
    (the paper's footnote 5). c is drawn as for L_I: the encoder's posterior samples on
    `real_batches`, or code_prior's (see _codes). e takes train_steps Adam(learning_rate)
    steps, one real batch of fresh (c, G(z, c)) pairs each; the bound is then averaged over
    num_samples fresh pairs. Like the paper (footnote 3), H(c) is not added: a generator
    that ignores c scores about -H(c) (for a Gaussian c, -sum_j log(2 pi e var_j) / 2) at
    best, whatever e learns; one whose images carry c scores far above it.
    """
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    auxiliary = auxiliary or keras.models.clone_model(encoder)
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(auxiliary.trainable_weights)
    size = tuple(auxiliary.input_shape[1:3])
    view = lambda images: (images if tuple(images.shape[1:3]) == size  # noqa: E731
                           else tf.image.resize(images, size, "bilinear"))

    @tf.function(reduce_retracing=True)
    def train_step(images, c):
        with tf.GradientTape() as tape:
            mu, logvar = tf.split(auxiliary(view(images), training=True), 2, axis=-1)
            loss = tf.reduce_mean(tf.reduce_sum(
                logvar + tf.square(c - mu) * tf.exp(-logvar), axis=-1)) / 2
        weights = auxiliary.trainable_weights
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))

    batches = iter(real_batches)

    def pairs(n=None):
        """(c, G(z, c) in [0, 1]) for up to n images of the next real batch."""
        real = next(batches, None)
        if real is None:
            raise ValueError("gilbo ran out of real images.")
        c = _codes(encoder, real if n is None else real[:n], rng, code_prior)
        return c, tf.convert_to_tensor(_generate(generator, c, rng), tf.float32)

    for _ in range(train_steps):
        c, images = pairs()
        train_step(images, tf.convert_to_tensor(c, tf.float32))
    total, count = 0.0, 0
    while count < num_samples:
        c, images = pairs(num_samples - count)
        mu, logvar = np.split(np.asarray(auxiliary(view(images)), np.float64), 2, axis=-1)
        log_e = -0.5 * (np.log(2 * np.pi) + logvar + (c - mu) ** 2 / np.exp(logvar))
        total, count = total + log_e.sum(), count + len(c)
    return total / count


# ==========================================================================================
# Evaluating run directories: sizes, time estimates, progress, `evaluate` and the command line.
# Only this part imports the project's data.py (lazily).

# Rough seconds per unit on our 2-core CPU (benchmarks/metrics.py --stages): a classifier step
# (batch 64), an encoded sprite, a real / VAE / ID-GAN image to classifier features and an L_I
# sample (64 px sprites), InceptionV3 features, a ResNet generator image at 64 px.
SECONDS = dict(classifier_step=0.026, encode=2.2e-4, real=3.5e-4, vae=8e-4, idgan=1.1e-3,
               l_i=8e-4, inception=0.057, resnet_64=0.0085)
FVM_STAGES = {"factor_vae_score": "FactorVAE metric, disentanglement_lib's protocol",
              "factor_vae_score_paper": "FactorVAE metric, the paper's protocol"}


# Images per generator and feature-network call when --batch_size is not given. Larger
# batches pay on a CPU too: metrics.py on the sprites ID-GAN, our 2-core CPU, batch 100 ->
# 500: VAE samples 1,186 -> 2,163 images/s, ID-GAN samples 934 -> 1,597, L_I 1,208 -> 1,842.
# InceptionV3 at 299 px needs far more memory per image, so 100 there. GILBO's auxiliary
# encoder trains on GILBO_BATCH pairs per step whatever the batch size, so that its bound
# does not depend on it.
CLASSIFIER_BATCH, INCEPTION_BATCH = 500, 100
GILBO_BATCH = 64


def _gilbo_steps(num_samples):
    """GILBO's auxiliary encoder trains min(2000, num_samples / 10) steps (one batch each)."""
    return min(2000, max(1, num_samples // 10))


def sample_size_error(num_samples, ground_truth, flag="num_samples"):
    """None when num_samples makes every metric well-defined, else the one-line reason."""
    minimum, why = ((32, "MIG needs every factor to vary among the samples") if ground_truth
                    else (2, "FID needs two samples for a covariance"))
    if num_samples < minimum:  # a 3-valued factor stays constant in 32 samples w.p. 3^-31
        return f"{flag}={num_samples} must be at least {minimum} ({why})"
    return None


def _fvm_sizes(name, num_samples):
    """The protocol's sizes capped by num_samples (not its batch size), and images encoded."""
    sizes = {k: v if k == "batch_size" else min(v, num_samples)
             for k, v in FVM_PROTOCOLS[name].items()}
    return sizes, sizes["num_variance"] + sizes["batch_size"] * (sizes["num_train"] +
                                                                 sizes["num_eval"])


def _duration(seconds):
    return (f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400
            else f"{seconds / 3600:.1f} h")


def evaluation_stages(num_samples, ground_truth, has_idgan, res=64, disentanglement=True,
                      classifier_steps=5000):
    """[(stage, count, unit, seconds on an idle 2-core CPU)] of evaluate(), in order (res:
    the ID-GAN's; the estimate scales generators with it)."""
    n, s, scale = num_samples, SECONDS, (res / 64) ** 2
    stages = []  # (stage, count, unit, seconds)
    if ground_truth:
        steps = min(classifier_steps, n)
        stages.append(("factor classifier training", steps, "steps", steps * s["classifier_step"]))
        for name in FVM_STAGES if disentanglement else ():
            images = _fvm_sizes(name, n)[1]
            stages.append((FVM_STAGES[name], images, "images", images * s["encode"]))
        if disentanglement:
            stages.append(("MIG", min(10_000, n), "images", min(10_000, n) * s["encode"]))
        real, vae, idgan, l_i = s["real"], s["vae"], s["idgan"] * scale, s["l_i"] * scale
    else:
        generator, inception = s["resnet_64"] * scale ** 1.1, s["inception"]
        real, vae, idgan, l_i = inception, inception, inception + generator, generator
    stages += [("FID, real images", n, "images", n * real),
               ("FID, VAE samples", n, "images", n * vae)]
    if has_idgan:
        stages += [(f"FID, real images at {res} px", n, "images", n * real)] if res != 64 else []
        stages += [("FID, ID-GAN samples", n, "images", n * idgan), ("L_I", n, "samples", n * l_i),
                   ("GILBO", n, "samples",  # training: batches of 100 pairs, ~2x L_I's cost each
                    (n + 200 * _gilbo_steps(n)) * l_i)]
    return stages


def describe_evaluation(num_samples, ground_truth, has_idgan, res=64, disentanglement=True,
                        classifier_steps=5000):
    """One paragraph: what evaluate() computes, in order, and roughly how long it takes."""
    n = num_samples
    stages = evaluation_stages(n, ground_truth, has_idgan, res, disentanglement,
                               classifier_steps)
    parts = [f"{stage} ({count:,} {unit}, ~{_duration(seconds)})"
             for stage, count, unit, seconds in stages]
    return (f"Evaluation on {n:,} samples: {', '.join(parts)}; roughly "
            f"{_duration(sum(stage[-1] for stage in stages))} on an idle 2-core CPU"
            + (" (less with a cached factor classifier)." if ground_truth else "."))


class _Progress:
    """Counts work done; logs 'stage: done/total unit, elapsed, ~left' at most every 30 s,
    and a last line at end()."""

    def __init__(self, log, stage, total, unit="images"):
        self.log, self.stage, self.total, self.unit = log, stage, total, unit
        self.start = self.last = time.monotonic()
        self.done = 0

    def __call__(self, done):
        self.done, now = done, time.monotonic()
        if 0 < done < self.total and now - self.last >= 30:
            self.last, spent = now, now - self.start
            self.log(f"  {self.stage}: {done:,}/{self.total:,} {self.unit}, {_duration(spent)} "
                     f"elapsed, ~{_duration(spent * (self.total - done) / done)} left")

    def counting(self, fn):
        """fn, counting len(batch) done per call fn(batch)."""
        return lambda batch: (fn(batch), self(self.done + len(batch)))[0]

    def end(self, note=""):
        """The last line, with the stage's throughput (of what was done, or of the total)."""
        done = f"{self.done:,}/" if 0 < self.done < self.total else ""
        seconds = max(time.monotonic() - self.start, 1e-9)
        rate = (self.done or self.total) / seconds
        rate = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"
        self.log(f"  {self.stage}: {done}{self.total:,} {self.unit} in {_duration(seconds)} "
                 f"({rate} {self.unit}/s){note}")


def _load_run(run, names, keys):
    """The run's flags.json, after checking that it holds the files `names` and flags `keys`."""
    for name in ("flags.json",) + names:
        if not os.path.isfile(os.path.join(run, name)):
            raise FileNotFoundError(f"run directory {run!r} has no {name}")
    with open(os.path.join(run, "flags.json")) as f:
        run_flags = json.load(f)
    missing = [key for key in keys if key not in run_flags]
    if missing:
        raise ValueError(f"{os.path.join(run, 'flags.json')} lacks {', '.join(missing)}")
    return run_flags


def _load_runs(vae_run, idgan_run):
    """[(flags, (dataset, data_dir, painting))] of the VAE run and the ID-GAN run if any; the
    ID-GAN's data is its own, fields it lacks taken from stage 1 (as train_idgan.py does)."""
    # decoder.keras is optional: a run without one (InfoGAN's) has no VAE samples to score.
    vae = _load_run(vae_run, ("encoder.keras",), ("dataset", "res", "c_dim"))
    runs = [vae] + ([_load_run(idgan_run, ("generator.keras",), ("res",))] if idgan_run else [])
    return [(run, tuple(run.get(k, vae.get(k)) for k in ("dataset", "data_dir", "painting")))
            for run in runs]


def _size_error(runs, num_samples, flag="num_samples"):
    has_ground_truth = importlib.import_module("data").has_ground_truth
    return sample_size_error(num_samples, any(has_ground_truth(s[0]) for _, s in runs), flag)


def fid_feature_network(data, source, path, steps, seed, inception_weights, log):
    """(features_fn, description, classifier record or None) for FID on one dataset."""
    name, data_dir, painting = source
    if not data.has_ground_truth(name):
        return (inception_features_fn(inception_weights), INCEPTION_GRAPH
                if is_inception_graph(inception_weights) else KERAS_INCEPTION, None)
    progress = _Progress(log, f"factor classifier training ({name})", steps, "steps")
    classifier, record = load_or_train_factor_classifier(
        path, data.ground_truth_data(name, data_dir=data_dir, painting=painting), steps,
        seed=seed, dataset=name + (f" (painting {painting})" if painting else ""),
        progress=progress)
    progress.end() if not record["cached"] else log(f"  factor classifier: cached {path}")
    return classifier_features_fn(classifier), "factor classifier", dict(record, path=path)


def _disentanglement(truth, encode, rng, num_samples, log):
    """FVM under both protocols and MIG, their sizes capped by num_samples."""
    results = {}
    for name, stage in FVM_STAGES.items():
        sizes, images = _fvm_sizes(name, num_samples)
        progress = _Progress(log, stage, images)
        score = factor_vae_score(truth, progress.counting(encode), rng, **sizes)
        progress.end("" if score["num_active_dims"] else " (no code dim has std >= 0.05: 0)")
        results[name] = dict(score, score=score.get("eval_accuracy", score["train_accuracy"]),
                             **sizes)
    progress = _Progress(log, "MIG", min(10_000, num_samples))
    results["mig"] = compute_mig(truth, progress.counting(encode), rng, progress.total)
    progress.end()
    return results


def evaluate(vae_run, idgan_run=None, num_samples=50_000, batch_size=None, out=None,
             classifier_path=None, classifier_steps=5000, inception_weights="imagenet", seed=0,
             disentanglement=True, log=print):
    """FVM (both protocols) and MIG on the encoder's dataset, FIDs of VAE and ID-GAN samples,
    L_I and GILBO, written to `out` (default: metrics.json in the ID-GAN run, else the VAE
    run). GILBO trains its auxiliary encoder for min(2000, num_samples / 10) steps of
    GILBO_BATCH pairs. batch_size: images per generator and feature call (default
    CLASSIFIER_BATCH or INCEPTION_BATCH, by the FID network); it changes speed, not what
    is estimated.

    The ID-GAN may have another dataset than the encoder (CelebA -> CelebA-HQ) with the
    encoder's channels: its FID and its codes c then come from its flags.json's data, resized
    to the encoder's input as in training. num_samples counts FID and L_I samples and caps
    FVM, MIG and classifier sizes. The factor classifier is cached at classifier_path
    (default VAE_RUN/factor_classifier.keras; another dataset's as ..._<dataset>.keras).
    disentanglement=False skips FVM and MIG. log(line) gets the plan with a time estimate
    and progress lines (lambda line: None for quiet).
    """
    data = importlib.import_module("data")  # the project's datasets; nothing above needs it
    runs = _load_runs(vae_run, idgan_run)
    (vae_flags, source), (idgan_flags, idgan_source) = runs[0], (runs + [({}, None)])[1]
    error = _size_error(runs, num_samples)
    if error or (batch_size is not None and batch_size < 1) or classifier_steps < 1:
        raise ValueError(error or f"batch_size={batch_size} and classifier_steps="
                         f"{classifier_steps} must be positive")
    load = lambda run, name: keras.models.load_model(os.path.join(run, name), compile=False)  # noqa
    encoder = load(vae_run, "encoder.keras")
    has_decoder = os.path.isfile(os.path.join(vae_run, "decoder.keras"))
    decoder = load(vae_run, "decoder.keras") if has_decoder else None
    generator = load(idgan_run, "generator.keras") if idgan_run else None
    if generator is not None and generator.output_shape[-1] != encoder.input_shape[-1]:
        raise ValueError(f"{idgan_run} makes {generator.output_shape[-1]}-channel images "
                         f"({idgan_source[0]}) but the encoder of {vae_run} takes "
                         f"{encoder.input_shape[-1]} channels ({source[0]})")
    ground_truth, vae_res = data.has_ground_truth(source[0]), vae_flags["res"]
    res = idgan_flags.get("res", vae_res)
    log(describe_evaluation(num_samples, ground_truth, bool(idgan_run), res, disentanglement,
                            classifier_steps))
    rng, steps = np.random.default_rng(seed), min(classifier_steps, num_samples)
    classifier_path = classifier_path or os.path.join(vae_run, "factor_classifier.keras")
    features_fn, fid_features, record = fid_feature_network(
        data, source, classifier_path, steps, seed, inception_weights, log)
    batch_size = batch_size or (
        CLASSIFIER_BATCH if fid_features == "factor classifier" else INCEPTION_BATCH)
    results = dict(dataset=source[0], vae=vae_run, idgan=idgan_run, num_samples=num_samples,
                   fid_features=fid_features, batch_size=batch_size)
    if record:
        results["factor_classifier"] = record
    if ground_truth and disentanglement:  # on the encoder's own dataset
        truth = data.ground_truth_data(source[0], data_dir=source[1], painting=source[2])
        results.update(_disentanglement(truth, lambda images: _posterior(encoder, images)[0],
                                        rng, num_samples, log))

    def statistics(stage, features_fn, real_batches=None, generate=None):
        progress = _Progress(log, stage, num_samples)
        counted = progress.counting(features_fn)
        stats = (generated_statistics(generate, counted, num_samples, batch_size) if generate
                 else real_statistics(real_batches, counted, num_samples))
        progress.end()
        return stats

    def dataset(source, res, shift=0, batch=None):
        name, data_dir, painting = source
        return data.make_dataset(name, res, batch or batch_size, data_dir=data_dir,
                                 seed=seed + shift, painting=painting)

    real = statistics("FID, real images", features_fn, dataset(source, vae_res))
    if decoder is not None:
        results["fid_vae"] = frechet_distance(*real, *statistics(
            "FID, VAE samples", features_fn, generate=lambda n: decoder(
                rng.standard_normal((n, vae_flags["c_dim"])).astype(np.float32), training=False)))
    if not idgan_run:
        _save(out or os.path.join(vae_run, "metrics.json"), results)
        return results
    name, _, painting = idgan_source
    results["idgan_dataset"] = name
    if (name, painting) != (source[0], source[2]) and (
            ground_truth or data.has_ground_truth(name)):  # else the same network serves
        path = f"{os.path.splitext(classifier_path)[0]}_{name}.keras"
        features_fn, fid_features, record = fid_feature_network(
            data, idgan_source, path, steps, seed, inception_weights, log)
        if record:
            results["idgan_factor_classifier"] = record
    results["fid_idgan_features"] = fid_features
    if (idgan_source, res) != (source, vae_res):
        real = statistics(f"FID, real images at {res} px ({name})", features_fn,
                          dataset(idgan_source, res))
    posterior_images = iter(dataset(idgan_source, res, shift=1))  # endless, as in training
    code_prior = idgan_flags.get("code_prior")  # InfoGAN's fixed prior of c, else None
    generate = generator_sampler(generator, encoder, posterior_images, rng, code_prior)
    results["fid_idgan"] = frechet_distance(
        *real, *statistics("FID, ID-GAN samples", features_fn, generate=generate))
    if generator.inputs[1].shape[-1] > 0:  # L_I and GILBO need c
        progress = _Progress(log, "L_I", num_samples, "samples")
        batches = map(progress.counting(lambda batch: batch), posterior_images)
        results["l_i"] = distill_lower_bound(generator, encoder, batches, num_samples, seed,
                                             code_prior)
        progress.end()
        gilbo_steps = _gilbo_steps(num_samples)  # of GILBO_BATCH fresh pairs each
        progress = _Progress(log, "GILBO", num_samples, "samples")
        gilbo_images = iter(dataset(idgan_source, res, shift=2, batch=GILBO_BATCH))
        results["gilbo"] = gilbo(generator, encoder, gilbo_images, num_samples,
                                 gilbo_steps, seed=seed, code_prior=code_prior)
        results["gilbo_train_steps"] = gilbo_steps
        progress.end(f" (its encoder trained {gilbo_steps:,} steps first)")
    _save(out or os.path.join(idgan_run, "metrics.json"), results)
    return results


def _define_flags():
    """Defined only when run as a script, so importing metrics registers no flags."""
    flags.DEFINE_string("vae", None, "Stage-1 run: flags.json, encoder.keras, decoder.keras.")
    flags.DEFINE_string("idgan", None, "Optional stage-2 run: flags.json, generator.keras.")
    flags.DEFINE_integer("num_samples", 50_000, "Real and generated images for FID and L_I; "
                         "also caps FVM / MIG / factor classifier sizes.")
    flags.DEFINE_integer("batch_size", None, "Images per call of a generator or feature "
                         "network (FID, L_I); default 500 with the sprites family's factor "
                         "classifier, 100 with InceptionV3. Raise it as far as memory allows.")
    flags.DEFINE_string("out", None, "Output JSON (default: metrics.json in the last run given).")
    flags.DEFINE_string("classifier", None,
                        "Factor classifier cache (default: VAE_RUN/factor_classifier.keras).")
    flags.DEFINE_string("inception_weights", "imagenet",
                        "FID network on natural images: imagenet (Keras' InceptionV3), a local "
                        "Keras .h5 file, or the 2015 graph of published FIDs: a local "
                        "inception-2015-12-05.tgz or its classify_image_graph_def.pb.")
    flags.mark_flag_as_required("vae")


def _fail(message):
    """Exits with one line on stderr, no traceback, and status 2 (as train_vae.py's fail)."""
    line = (str(message).strip().splitlines() or ["failed"])[0]
    sys.stderr.write(f"metrics.py: error: {line}\n")
    sys.exit(2)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        _fail(error)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}")
    FLAGS = flags.FLAGS
    try:  # sizes first, named by the flag; progress on stderr, the JSON alone on stdout
        error = _size_error(_load_runs(FLAGS.vae, FLAGS.idgan), FLAGS.num_samples, "--num_samples")
        if error or (FLAGS.batch_size is not None and FLAGS.batch_size < 1):
            _fail(error or f"--batch_size={FLAGS.batch_size} must be positive")
        results = evaluate(FLAGS.vae, FLAGS.idgan, num_samples=FLAGS.num_samples,
                           batch_size=FLAGS.batch_size, out=FLAGS.out,
                           classifier_path=FLAGS.classifier,
                           inception_weights=FLAGS.inception_weights,
                           log=lambda line: print(line, file=sys.stderr))
    except (ImportError, OSError, ValueError, RuntimeError) as error:
        _fail(error)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=_parse_flags)
