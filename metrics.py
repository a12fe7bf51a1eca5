"""Metrics of ID-GAN (Lee et al. 2020, appendix C.1 and Table 3), in two parts.

Part 1, the metric library, one function per metric as in disentanglement_lib: FID (Heusel
et al. 2017) in Keras' InceptionV3, the 2015 Inception graph (TTUR's fid.py) or a factor
classifier, its spread and real-vs-real floor; the FactorVAE metric (Kim & Mnih 2018), both
protocols; MIG (Chen et al. 2018); L_I (Eq. 7); GILBO (Alemi & Fischer 2018); FIDCurve.
Part 2 evaluates run directories. The file needs only tensorflow, keras, numpy and scipy.
"""
import json
import os
import pathlib
import tarfile
import time

import keras
import numpy as np
import scipy.linalg
import tensorflow as tf

# ==========================================================================================
# Part 1: the metric library. ground_truth_data: disentanglement_lib's GroundTruthData
# (factor_sizes, sample_factors(n, rng), sample_observations_from_factors(factors, rng) ->
# images in [0, 1], sample(n, rng) -> (factors, images)) with factor_names. Encoders map
# images in [0, 1] to concat([mu, logvar]) of q(c|x); generators [z, c] to images in [-1, 1].


# --- FID: the Frechet distance of feature statistics (Heusel et al. 2017) ------------------
def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)), in float64, with
    two symmetric eigendecompositions (sigma1 sigma2 is similar to A sigma2 A, A = sigma1^(1/2))."""
    mu1, sigma1, mu2, sigma2 = (np.asarray(x, np.float64) for x in (mu1, sigma1, mu2, sigma2))
    d, shapes = mu1.size, [tuple(x.shape) for x in (mu1, sigma1, mu2, sigma2)]
    if shapes != [(d,), (d, d), (d,), (d, d)]:
        raise ValueError(f"frechet_distance needs means (d,) and covariances (d, d) of one d, "
                         f"got shapes {shapes}.")
    eigenvalues, eigenvectors = _eigh(sigma1)  # rounding-negative eigenvalues clipped to 0
    sqrt_sigma1 = (eigenvectors * np.sqrt(np.maximum(eigenvalues, 0.0))) @ eigenvectors.T
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    product = (product + product.T) / 2  # symmetric up to rounding
    trace_sqrt = np.sum(np.sqrt(np.maximum(_eigh(product, vectors=False), 0.0)))
    return float(np.sum(np.square(mu1 - mu2)) + np.trace(sigma1) + np.trace(sigma2)
                 - 2.0 * trace_sqrt)


def _eigh(matrix, vectors=True):
    """Symmetric eigendecomposition: LAPACK's (scipy, the faster) on a CPU, else TensorFlow's."""
    if not tf.config.list_logical_devices("GPU"):
        return scipy.linalg.eigh(matrix, eigvals_only=not vectors)
    return [np.asarray(x) for x in tf.linalg.eigh(matrix)] if vectors else np.asarray(
        tf.linalg.eigvalsh(matrix))


def feature_statistics(feature_batches):
    """Mean and covariance (ddof=1) of an iterable of (n, d) feature batches, from running
    float64 sums around the first batch's mean: O(d^2) memory, no cancellation."""
    count, shift, total, total_outer = 0, None, 0.0, 0.0
    for batch in feature_batches:
        batch = np.asarray(batch, np.float64)
        if batch.ndim != 2 or not np.all(np.isfinite(batch)):
            raise ValueError(f"feature batches must be (n, d) arrays without NaN or infinite "
                             f"values, got one of shape {batch.shape}.")
        if not len(batch):
            continue
        shift = batch.mean(axis=0) if shift is None else shift
        if batch.shape[1] != len(shift):
            raise ValueError(f"feature batches have mismatched dimensions "
                             f"{len(shift)} and {batch.shape[1]}.")
        centred = batch - shift
        total, total_outer = total + centred.sum(axis=0), total_outer + centred.T @ centred
        count += len(batch)
    if count < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {count}.")
    mean = total / count
    return shift + mean, (total_outer - count * np.outer(mean, mean)) / (count - 1)


def real_features(image_batches, features_fn, num_samples):
    """[features_fn(batch)] of the next num_samples images of an iterable of image batches."""
    features, remaining = [], num_samples
    for images in image_batches:
        features.append(features_fn(images[:remaining]))
        remaining -= len(features[-1])
        if remaining <= 0:
            break
    return features


def generated_batches(generate_fn, num_samples, batch_size):
    """num_samples images from generate_fn(n) -> n images in [0, 1], batch_size a call."""
    return (generate_fn(min(batch_size, num_samples - start))
            for start in range(0, num_samples, batch_size))


def real_statistics(real_dataset, features_fn, num_samples):
    return feature_statistics(real_features(real_dataset, features_fn, num_samples))


def generated_statistics(generate_fn, features_fn, num_samples, batch_size):
    return real_statistics(generated_batches(generate_fn, num_samples, batch_size), features_fn,
                           num_samples)


def fid(real_dataset, generate_fn, features_fn, num_samples=50_000, batch_size=100):
    """FID of num_samples real images (fewer if the dataset is shorter) and generated ones."""
    fake = generated_statistics(generate_fn, features_fn, num_samples, batch_size)
    return frechet_distance(*real_statistics(real_dataset, features_fn, num_samples), *fake)


def feature_distance(x_batches, y_batches, statistics=None):
    """frechet_distance of two lists of (n, d) feature batches (`statistics`: theirs, if known).
    With no more samples than dimensions (few samples of wide features), from the centred
    samples X, Y: Sigma_x Sigma_y has the nonzero eigenvalues of M M^T, M = X Y^T /
    sqrt((n_x - 1)(n_y - 1)), so tr((Sigma_x Sigma_y)^(1/2)) is the sum of M's singular
    values, an (n_x, n_y) SVD instead of two (d, d) eigendecompositions."""
    if statistics is None:
        statistics = feature_statistics(x_batches), feature_statistics(y_batches)
    (mu_x, sigma_x), (mu_y, sigma_y) = statistics
    n_x, n_y = sum(map(len, x_batches)), sum(map(len, y_batches))
    if max(n_x, n_y) > len(mu_x) or mu_x.shape != mu_y.shape:
        return frechet_distance(mu_x, sigma_x, mu_y, sigma_y)
    x, y = (np.concatenate(b).astype(np.float64) for b in (x_batches, y_batches))
    singular_values = np.linalg.svd((x - mu_x) @ (y - mu_y).T, compute_uv=False)
    return float(np.sum(np.square(mu_x - mu_y)) + np.trace(sigma_x) + np.trace(sigma_y)
                 - 2.0 * np.sum(singular_values) / np.sqrt((n_x - 1) * (n_y - 1)))


# --- FID's own noise: its spread at the sample size, and what a collapsed generator scores --
def fid_spread(real_features, fake_features, rounds=20, seed=0):
    """FID's sampling spread: its standard deviation over `rounds` bootstraps of both feature sets
    (lists of batches; each drawn anew with replacement at its size). It follows independent
    full-size draws where the sets differ, overstates it near the floor (tests/test_metrics.py)."""
    rng = np.random.default_rng(seed)
    real, fake = np.concatenate(real_features), np.concatenate(fake_features)

    def resampled(x):  # len(x) rows drawn with replacement, in batches of 1000
        rows = rng.integers(len(x), size=len(x))
        return [x[rows[i:i + 1000]] for i in range(0, len(x), 1000)]
    return float(np.std([feature_distance(resampled(real), resampled(fake))
                         for _ in range(rounds)], ddof=1))


def fid_scores(key, real_features, fake_features, floor):
    """metrics.json's fields of one FID (README "metrics.json"): `key`, the FID; key_spread,
    fid_spread's; key_floor, `floor`, the FID of two disjoint real sets this size; key_trace,
    tr(Sigma_real), the FID of one point at the real mean, the least any fully collapsed
    generator scores; key_diversity, tr(Sigma_gen) / tr(Sigma_real)."""
    (mu, sigma), fake = feature_statistics(real_features), feature_statistics(fake_features)
    return {key: feature_distance(real_features, fake_features, ((mu, sigma), fake)),
            f"{key}_spread": fid_spread(real_features, fake_features), f"{key}_floor": floor,
            f"{key}_trace": np.trace(sigma),  # diversity: None for real images all alike
            f"{key}_diversity": np.trace(fake[1]) / np.trace(sigma) if np.trace(sigma) else None}


# --- FID features: Keras' InceptionV3, the 2015 Inception graph, a factor classifier --------
INCEPTION_GRAPH = "inception-2015-12-05 (TTUR, comparable to published FIDs)"
KERAS_INCEPTION = "Keras InceptionV3: ranks models, not pytorch-fid's values"
_GRAPH_INPUT, _GRAPH_FEATURES = "ExpandDims:0", "pool_3:0"  # TTUR's feed and fetch
_GRAPH_FILES = (".pb", ".tgz", ".tar.gz")  # the 2015 graph's .pb, or its archive


def inception_features_fn(weights="imagenet"):
    """Images in [0, 1] (any size, 1 or 3 channels) -> 2048-d InceptionV3 pool features, whose
    FIDs rank models as the 2015 graph's do but differ (README "Metrics"). weights: "imagenet",
    a local .h5 / .weights.h5 file, None, or that graph (inception_graph_features_fn)."""
    if str(weights).endswith(_GRAPH_FILES):
        return inception_graph_features_fn(weights)
    try:
        inception = keras.applications.InceptionV3(
            include_top=False, weights=weights, input_shape=(299, 299, 3), pooling="avg")
    except Exception as error:  # no network, a missing file, or not InceptionV3's weights
        raise RuntimeError(f"cannot load InceptionV3 weights {weights!r}; download them where "
                           "there is internet and pass the local .h5 / .weights.h5 file") from error

    @tf.function(reduce_retracing=True)
    def features(images):
        if images.shape[-1] == 1:
            images = tf.image.grayscale_to_rgb(images)
        images = tf.image.resize(images, (299, 299), method="bilinear")
        return inception(keras.applications.inception_v3.preprocess_input(images * 255.0),
                         training=False)
    return lambda images: features(tf.convert_to_tensor(images, tf.float32)).numpy()


def read_inception_graph(path):
    """The GraphDef of inception-2015-12-05.tgz or its classify_image_graph_def.pb, made to
    run on today's TensorFlow; ValueError (one line) for any other file."""
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
        node.attr.pop("_output_shapes", None)
    # TensorFlow refuses BatchNormWithGlobalNormalization (the graph's batch norm) from
    # GraphDef version 9, and a tf.function runs at today's version: each such node becomes
    # the same arithmetic, and the graph today's version, so any other removed op is refused.
    nodes = [new for node in graph_def.node for new in (
        _batch_norm_arithmetic(node, names) if node.op == "BatchNormWithGlobalNormalization"
        else [node])]
    del graph_def.node[:]
    graph_def.node.extend(nodes)
    graph_def.versions.producer = max(graph_def.versions.producer, tf.version.GRAPH_DEF_VERSION)
    return graph_def


def _batch_norm_arithmetic(batch_norm, names):
    """Nodes computing a BatchNormWithGlobalNormalization node as its kernel did, the last under
    its name and control inputs: (t - mean) * (rsqrt(variance + epsilon) * gamma) + beta."""
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
    """Images in [0, 1] (1 or 3 channels) -> the 2015 graph's 2048-d pool_3 features, fed as
    TTUR feeds it: RGB in 0..255 rounded as 8-bit files, into 'ExpandDims:0' (any batch size
    here), which resizes to 299 px. A batch the graph fails on: a one-line ValueError."""
    graph_def = read_inception_graph(path)

    def network(pixels):
        pool_3, = tf.graph_util.import_graph_def(graph_def, {_GRAPH_INPUT: pixels},
                                                 [_GRAPH_FEATURES], name="FID_Inception_Net")
        return tf.reshape(pool_3, [-1, 2048])
    try:
        network = tf.compat.v1.wrap_function(
            network, [tf.TensorSpec([None, None, None, 3], tf.float32)])
    except (ValueError, TypeError, tf.errors.OpError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"cannot import the graph of {path}: {reason}") from error

    def features(images):
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape[-1] == 1:
            images = tf.image.grayscale_to_rgb(images)
        try:
            return network(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0)).numpy()
        except tf.errors.OpError as error:  # e.g. a CheckNumerics node: the line saying what
            lines = [x for x in map(str.strip, error.message.splitlines()) if x and x[:2] != "[["]
            raise ValueError(f"the graph of {path} fails: "
                             f"{lines[-1] if lines else type(error).__name__}") from error
    return features


def train_factor_classifier(ground_truth_data, steps=5000, batch_size=64, seed=0, progress=None):
    """A ConvNet predicting every factor (Table A.2's encoder trunk, a softmax head each),
    whose penultimate features define FID on ground-truth data (appendix C.1), and {factor
    name: its accuracy on 1024 fresh samples}; progress(step) after each step."""
    rng, names = np.random.default_rng(seed), ground_truth_data.factor_names
    keras.utils.set_random_seed(seed)
    x = images = keras.Input(ground_truth_data.sample(1, rng)[1].shape[1:])
    for filters in (32, 32, 64, 64):
        x = keras.layers.Conv2D(filters, 4, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Dense(256, activation="relu", name="features")(keras.layers.Flatten()(x))
    classifier = keras.Model(images, {name: keras.layers.Dense(
        size, activation="softmax", name=f"factor_{name}")(x) for name, size in zip(
            names, ground_truth_data.factor_sizes)}, name="factor_classifier")
    classifier.compile(keras.optimizers.Adam(1e-3),
                       loss={name: "sparse_categorical_crossentropy" for name in names})
    for step in range(steps):
        factors, images = ground_truth_data.sample(batch_size, rng)
        classifier.train_on_batch(images, dict(zip(names, factors.T)))
        progress and progress(step + 1)
    factors, images = ground_truth_data.sample(1024, rng)
    predictions = classifier.predict(images, batch_size=256, verbose=0)
    return classifier, {name: float(np.mean(np.argmax(predictions[name], -1) == factors[:, k]))
                        for k, name in enumerate(names)}


def load_or_train_factor_classifier(path, ground_truth_data, steps=5000, batch_size=64, seed=0,
                                    dataset=None, progress=None):
    """(classifier, record), cached at `path` with a sidecar .json of its training arguments
    and accuracy: loaded if trained as asked, else retrained and overwritten."""
    key, sidecar = dict(dataset=dataset, steps=steps, batch_size=batch_size, seed=seed), (
        os.path.splitext(path)[0] + ".json")
    try:
        record = json.loads(pathlib.Path(sidecar).read_text())
    except (OSError, ValueError):
        record = {}
    if os.path.exists(path) and all(record.get(name) == value for name, value in key.items()):
        return keras.models.load_model(path, compile=False), dict(record, cached=True)
    classifier, accuracy = train_factor_classifier(ground_truth_data, steps, batch_size, seed,
                                                   progress)
    pathlib.Path(sidecar).unlink(missing_ok=True)  # first: no stale sidecar beside the new model
    _save(path, classifier.save)
    _save(sidecar, dict(key, accuracy=accuracy))
    return classifier, dict(key, accuracy=accuracy, cached=False)


def classifier_features_fn(classifier):
    """Images in [0, 1] -> the classifier's penultimate ("features") activations."""
    features = keras.Model(classifier.inputs, classifier.get_layer("features").output)
    return lambda images: features(_resized(images, classifier), training=False).numpy()


def _resized(images, model):
    """Images at a model's input size as the encoder sees generated images in stage 2:
    average pooling ("area") by whole factors, else antialiased bilinear."""
    images, size = tf.convert_to_tensor(images, tf.float32), tuple(model.input_shape[1:3])
    if tuple(images.shape[1:3]) == size:
        return images
    whole = images.shape[1] % size[0] == 0 and images.shape[2] % size[1] == 0
    return tf.image.resize(images, size, "area" if whole else "bilinear", antialias=not whole)


def _save(path, value):
    """value(path) or `value` as JSON, written beside and renamed: never a half-written file."""
    temporary = f"{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}"  # Keras needs .keras
    value(temporary) if callable(value) else pathlib.Path(temporary).write_text(
        json.dumps(value, indent=2))
    os.replace(temporary, path)


def _duration(seconds):
    return (f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400
            else f"{seconds / 3600:.1f} h")


class FIDCurve(keras.callbacks.Callback):
    """Every `every` steps, FID of num_samples images of generate_fn(n) against real_stats
    (mu, sigma): TensorBoard scalar `fid` in log_dir, row "step,fid" of csv_path. Steps count
    from start_step (a resumed run's); rows after it (a run stopped before backing up) go."""

    def __init__(self, every, generate_fn, features_fn, real_stats, num_samples, csv_path,
                 log_dir, start_step=0, batch_size=100, log=print):
        super().__init__()
        self.fid = lambda: float(frechet_distance(*real_stats, *generated_statistics(
            generate_fn, features_fn, num_samples, batch_size)))
        self.every, self.num_samples, self.csv_path, self.log_dir, self.start_step, self.log = (
            every, num_samples, csv_path, log_dir, start_step, log)

    def on_train_begin(self, logs=None):
        rows = read_fid_curve(self.csv_path) if os.path.exists(self.csv_path) else []
        kept = "".join(f"{step},{value!r}\n" for step, value in rows if step <= self.start_step)
        _save(self.csv_path, lambda path: pathlib.Path(path).write_text("step,fid\n" + kept))
        self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        step = self.start_step + batch + 1  # as the run's monitor counts, no device read
        if step % self.every:
            return
        start, value = time.monotonic(), self.fid()
        with open(self.csv_path, "a") as f:
            f.write(f"{step},{value!r}\n")
        with self.writer.as_default(step=step):
            tf.summary.scalar("fid", value)
        self.writer.flush()
        self.log(f"step {step}: FID {value:.2f} ({self.num_samples:,} samples, "
                 f"{_duration(time.monotonic() - start)})")


def read_fid_curve(path):
    """[(step, fid)] from a FIDCurve csv file."""
    rows = pathlib.Path(path).read_text().split()[1:]  # after the header "step,fid"
    return [(int(step), float(value)) for step, value in (row.split(",") for row in rows)]


# --- FactorVAE metric (Kim & Mnih 2018) and MIG (Chen et al. 2018), disentanglement_lib's way
# The FVM's two protocols: disentanglement_lib's (score: eval accuracy) and the paper's
# appendix C.1 (score: train accuracy; no held-out votes).
FVM_PROTOCOLS = {
    "factor_vae_score": dict(num_variance=10_000, batch_size=64, num_train=10_000, num_eval=5_000),
    "factor_vae_score_paper": dict(num_variance=10_000, batch_size=100, num_train=800, num_eval=0)}


def _encode_samples(ground_truth_data, encode_fn, num_samples, rng, chunk=1024):
    """(factors, mean codes) of num_samples random observations, encoded chunk by chunk."""
    factors = ground_truth_data.sample_factors(num_samples, rng)
    observe = ground_truth_data.sample_observations_from_factors
    codes = [encode_fn(observe(factors[i:i + chunk], rng)) for i in range(0, num_samples, chunk)]
    return factors, np.concatenate(codes).astype(np.float64)


def factor_vae_score(ground_truth_data, encode_fn, rng, num_variance=10_000, batch_size=64,
                     num_train=10_000, num_eval=5_000):
    """FVM: accuracy of a majority-vote classifier from (argmin code dim -> fixed factor) votes,
    encode_fn: observations -> mean codes; defaults: disentanglement_lib's (FVM_PROTOCOLS)."""
    _, codes = _encode_samples(ground_truth_data, encode_fn, num_variance, rng)
    global_variances = np.var(codes, axis=0, ddof=1)
    active = np.flatnonzero(np.sqrt(global_variances) >= 0.05)  # collapsed dims cast no vote
    if active.size == 0:
        return dict(train_accuracy=0.0, **({"eval_accuracy": 0.0} if num_eval else {}),
                    num_active_dims=0)
    num_factors, votes_per_chunk = len(ground_truth_data.factor_sizes), max(1, 1024 // batch_size)

    def votes(num_votes):  # (active dim x factor) counts; many votes' batches encoded together
        table = np.zeros((active.size, num_factors), np.int64)
        for start in range(0, num_votes, votes_per_chunk):
            n = min(votes_per_chunk, num_votes - start)
            fixed = rng.integers(num_factors, size=n)
            factors = ground_truth_data.sample_factors(n * batch_size, rng).reshape(
                n, batch_size, num_factors)
            factors[np.arange(n), :, fixed] = factors[np.arange(n), 0, fixed][:, None]  # fix k
            observations = ground_truth_data.sample_observations_from_factors(
                factors.reshape(n * batch_size, num_factors), rng)
            codes = np.asarray(encode_fn(observations), np.float64).reshape(n, batch_size, -1)
            ratios = np.var(codes[:, :, active], axis=1, ddof=1) / global_variances[active]
            np.add.at(table, (np.argmin(ratios, axis=1), fixed), 1)
        return table
    train_votes = votes(num_train)
    classifier = np.argmax(train_votes, axis=1)  # each code dim -> its most voted factor
    accuracy = lambda table, n: float(table[np.arange(active.size), classifier].sum() / n)  # noqa
    scores = dict(train_accuracy=accuracy(train_votes, num_train))
    if num_eval:
        scores["eval_accuracy"] = accuracy(votes(num_eval), num_eval)
    return dict(scores, num_active_dims=int(active.size))


def mig(codes, factors, num_bins=20):
    """Mean over factors of (largest - second largest I(code_i; factor_k)) / H(factor_k),
    each code dim discretised into num_bins equal-width bins (disentanglement_lib's)."""
    codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or codes.shape[1] < 2:
        raise ValueError(f"mig needs codes (N, d >= 2) and factors (N, k), "
                         f"got {codes.shape} and {factors.shape}.")
    if not np.all(np.isfinite(codes)):
        raise ValueError("codes contain NaN or infinite values.")

    def one_hot(values):  # (N, m) ints -> (N, m, V), values relabelled 0..V-1 per column
        labels = np.stack([np.unique(column, return_inverse=True)[1].ravel()
                           for column in values.T], axis=1)
        return np.eye(labels.max() + 1)[labels], labels
    code_hot, _ = one_hot(np.stack([np.digitize(column, np.histogram(column, num_bins)[1][:-1])
                                    - 1 for column in codes.T], axis=1))
    factor_hot, factor_labels = one_hot(factors)
    if np.any(factor_labels.max(axis=0) == 0):
        raise ValueError("mig needs every factor to take at least two values.")
    (n, d, num_code_values), (_, k, num_factor_values) = code_hot.shape, factor_hot.shape
    # Joint distribution of every (code dim, factor) pair in one matmul: (d, bins, k, values).
    joint = (code_hot.reshape(n, -1).T @ factor_hot.reshape(n, -1)).reshape(
        d, num_code_values, k, num_factor_values) / n
    code_marginal, factor_marginal = joint.sum(axis=3)[:, :, 0], joint.sum(axis=1)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = joint / (code_marginal[:, :, None, None] * factor_marginal[None, None])
        mutual_info = np.where(joint > 0, joint * np.log(ratio), 0.0).sum(axis=(1, 3))  # (d, k)
        entropy = -np.where(factor_marginal > 0, factor_marginal * np.log(factor_marginal), 0.0)
    top = np.sort(mutual_info, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / entropy.sum(axis=1)))


def compute_mig(ground_truth_data, encode_fn, rng, num_samples=10_000, num_bins=20):
    """MIG of the mean codes of num_samples random observations (disentanglement_lib's way)."""
    factors, codes = _encode_samples(ground_truth_data, encode_fn, num_samples, rng)
    return mig(codes, factors, num_bins)


# --- Generator samples, L_I (Eq. 7, Table 3), GILBO (Alemi & Fischer 2018) -----------------
# c for a batch of real images is codes_fn(images, rng) -> (n, c_dim), by default (None)
# c ~ q(c|x), the encoder's posterior on them: samples of the aggregated posterior, as in
# stage-2 training. A model whose c has a fixed prior passes a codes_fn drawing from it.
# G sees at most `chunk` images a call (its training batch: bounded memory; None: all at once).
def _posterior(encoder, images):
    """(mu, logvar) as float64 arrays, the images resized to the encoder's input."""
    return np.split(np.asarray(encoder(_resized(images, encoder), training=False), np.float64),
                    2, axis=-1)


def _codes(encoder, images, rng, codes_fn):
    if codes_fn is not None:
        return codes_fn(images, rng)
    mu, logvar = _posterior(encoder, images)
    return mu + np.exp(logvar / 2) * rng.standard_normal(mu.shape)


def _in_chunks(model, inputs, chunk=None):
    """model(inputs, training=False) on at most `chunk` rows (None: all) a call, concatenated."""
    n = len(tf.nest.flatten(inputs)[0])
    if chunk is None or n <= chunk:
        return model(inputs, training=False)
    return tf.concat([model(tf.nest.map_structure(lambda x: x[start:start + chunk], inputs),
                            training=False) for start in range(0, n, chunk)], axis=0)


def _generate(generator, c, rng, chunk=None):
    """G([z, c]) mapped from [-1, 1] to [0, 1], with z ~ N(0, I) of the generator's width."""
    z = rng.standard_normal((len(c), generator.inputs[0].shape[-1]))
    return (_in_chunks(generator, [z.astype(np.float32), c.astype(np.float32)], chunk) + 1) / 2


def generator_sampler(generator, encoder, real_batches, rng, codes_fn=None, chunk=None):
    """generate(n) -> n images in [0, 1] of G([z, c]), c drawn for the next batch of the
    iterator real_batches; width-0 c for a generator without one (a plain GAN)."""
    uses_codes = generator.inputs[1].shape[-1] > 0
    return lambda n: _generate(generator, _codes(encoder, next(real_batches)[:n], rng, codes_fn)
                               if uses_codes else np.zeros((n, 0)), rng, chunk)


def distill_lower_bound(generator, encoder, real_batches, num_samples=10_000, seed=0,
                        codes_fn=None, chunk=None):
    """L_I = -E[NLL of c under Encoder(G(z, c))] over num_samples samples, c drawn for
    `real_batches`, as in the stage-2 objective (Eq. 7); higher means G(s) keeps more of c."""
    rng, total, count = np.random.default_rng(seed), 0.0, 0
    for real in real_batches:
        c = _codes(encoder, real[:num_samples - count], rng, codes_fn)
        mu_hat, logvar_hat = _posterior(encoder, _generate(generator, c, rng, chunk))
        nll = 0.5 * (np.log(2 * np.pi) + logvar_hat + (c - mu_hat) ** 2 / np.exp(logvar_hat))
        total, count = total + nll.sum(), count + len(c)
        if count >= num_samples:
            break
    if count == 0:
        raise ValueError("distill_lower_bound got no real images.")
    return -total / count


def gilbo(generator, encoder, real_batches, num_samples=10_000, train_steps=2_000,
          learning_rate=1e-3, seed=0, codes_fn=None, auxiliary=None, chunk=None):
    """GILBO without H(c) (Table 3, footnotes 3 to 5): E[log e(c | G(z, c))] in nats over
    num_samples fresh pairs, e (a fresh copy of the encoder, or `auxiliary`) first trained
    train_steps Adam steps with G frozen on a real batch's fresh (c, G(z, c)) each, c drawn as
    for L_I. A G that ignores c scores about -H(c) at best; one whose images carry c, above."""
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

    def pairs(n=None):  # (c, G(z, c) in [0, 1]) for up to n images of the next real batch
        real = next(batches, None)
        if real is None:
            raise ValueError("gilbo ran out of real images.")
        c = _codes(encoder, real if n is None else real[:n], rng, codes_fn)
        return c, tf.convert_to_tensor(_generate(generator, c, rng, chunk), tf.float32)
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
# Part 2: evaluating run directories, on `datasets`: data.py, or any object with its
# has_ground_truth, ground_truth_data and make_dataset. Command line: benchmarks/evaluate.py.
FVM_STAGES = {"factor_vae_score": "FactorVAE metric, disentanglement_lib's protocol",
              "factor_vae_score_paper": "FactorVAE metric, the paper's protocol"}
# Images per generator and feature call without batch_size (InceptionV3 at 299 px needs far
# more memory per image); GILBO's encoder trains on GILBO_BATCH pairs whatever the batch.
CLASSIFIER_BATCH, INCEPTION_BATCH, GILBO_BATCH = 500, 100, 64


def evaluation_sizes(num_samples):
    """The sizes of evaluate() on num_samples: ({FVM protocol: (its sizes capped by
    num_samples, not its batch size; images it encodes)}, GILBO's training steps)."""
    fvm = {name: {k: v if k == "batch_size" else min(v, num_samples) for k, v in p.items()}
           for name, p in FVM_PROTOCOLS.items()}
    return {name: (s, s["num_variance"] + s["batch_size"] * (s["num_train"] + s["num_eval"]))
            for name, s in fvm.items()}, min(2000, max(1, num_samples // 10))


class _Progress:
    """progress(done) logs done/total, elapsed and ETA at most every 30 s; end(), the rate."""

    def __init__(self, log, stage, total, unit="images"):
        self.log, self.stage, self.total, self.unit, self.done = log, stage, total, unit, 0
        self.start = self.last = time.monotonic()

    def __call__(self, done):
        self.done, now = done, time.monotonic()
        if 0 < done < self.total and now - self.last >= 30:
            self.last, spent = now, now - self.start
            self.log(f"  {self.stage}: {done:,}/{self.total:,} {self.unit}, {_duration(spent)} "
                     f"elapsed, ~{_duration(spent * (self.total - done) / done)} left")

    def end(self, note=""):
        seconds, done = max(time.monotonic() - self.start, 1e-9), self.done or self.total
        rate = f"{done / seconds:,.0f}" if done >= 10 * seconds else f"{done / seconds:.2g}"
        self.log(f"  {self.stage}: {f'{done:,}/' if done < self.total else ''}{self.total:,} "
                 f"{self.unit} in {_duration(seconds)} ({rate} {self.unit}/s){note}")

    def counting(self, fn):  # fn(batch), each call advancing self.done by len(batch)
        return lambda batch: (fn(batch), self(self.done + len(batch)))[0]


def load_runs(vae_run, idgan_run):
    """[(flags, (dataset, data_dir, painting))] of the VAE run and the ID-GAN run if any, files
    and flags checked (decoder.keras is optional); the ID-GAN's data fields default to stage 1's."""
    runs = []
    for run, names, keys in [(vae_run, ("encoder.keras",), ("dataset", "res", "c_dim"))] + (
            [(idgan_run, ("generator.keras",), ("res",))] if idgan_run else []):
        for name in ("flags.json",) + names:
            if not os.path.isfile(os.path.join(run, name)):
                raise FileNotFoundError(f"run directory {run!r} has no {name}")
        runs.append(json.loads(pathlib.Path(run, "flags.json").read_text()))
        missing = [key for key in keys if key not in runs[-1]]
        if missing:
            raise ValueError(f"{os.path.join(run, 'flags.json')} lacks {', '.join(missing)}")
    return [(run, tuple(run.get(k, runs[0].get(k)) for k in ("dataset", "data_dir", "painting")))
            for run in runs]


def fid_feature_network(source, path, steps, seed, inception_weights, log, datasets):
    """(features_fn, description, classifier record or None) for FID on source = (dataset,
    data_dir, painting): on ground truth the factor classifier cached at `path`, else Inception."""
    name, data_dir, painting = source
    if not datasets.has_ground_truth(name):
        return (inception_features_fn(inception_weights), INCEPTION_GRAPH
                if str(inception_weights).endswith(_GRAPH_FILES) else KERAS_INCEPTION, None)
    progress = _Progress(log, f"factor classifier training ({name})", steps, "steps")
    classifier, record = load_or_train_factor_classifier(
        path, datasets.ground_truth_data(name, data_dir=data_dir, painting=painting), steps,
        seed=seed, dataset=name + (f" (painting {painting})" * bool(painting)), progress=progress)
    progress.end() if not record["cached"] else log(f"  factor classifier: cached {path}")
    return classifier_features_fn(classifier), "factor classifier", dict(record, path=path)


def _open_runs(vae_run, idgan_run, num_samples, batch_size, classifier_steps, datasets):
    """(load_runs' runs, encoder, decoder or None, generator or None), every size checked."""
    runs = load_runs(vae_run, idgan_run)
    minimum, why = (32, "MIG needs every factor to vary among the samples") if any(  # 3^-31
        datasets.has_ground_truth(s[0]) for _, s in runs) else (2, "FID needs a covariance")
    if num_samples < minimum:
        raise ValueError(f"num_samples={num_samples} must be at least {minimum} ({why})")
    if (batch_size is not None and batch_size < 1) or classifier_steps < 1:
        raise ValueError(f"batch_size={batch_size} and classifier_steps={classifier_steps} "
                         "must be positive")
    load = lambda run, name: keras.models.load_model(os.path.join(run, name), compile=False)  # noqa
    encoder = load(vae_run, "encoder.keras")
    generator = load(idgan_run, "generator.keras") if idgan_run else None
    decoder = load(vae_run, "decoder.keras") if os.path.isfile(
        os.path.join(vae_run, "decoder.keras")) else None
    if generator is not None and generator.output_shape[-1] != encoder.input_shape[-1]:
        raise ValueError(f"{idgan_run} makes {generator.output_shape[-1]}-channel images "
                         f"({runs[1][1][0]}) but the encoder of {vae_run} takes "
                         f"{encoder.input_shape[-1]} channels ({runs[0][1][0]})")
    return runs, encoder, decoder, generator


def encoder_scores(encoder, ground_truth_data, rng, num_samples, log=print):
    """{name: score} of the encoder's mean codes, each stage logged: FVM (both protocols), MIG."""
    encode, results = lambda images: _posterior(encoder, images)[0], {}  # noqa: E731
    for name, (sizes, images) in evaluation_sizes(num_samples)[0].items():
        progress = _Progress(log, FVM_STAGES[name], images)
        score = factor_vae_score(ground_truth_data, progress.counting(encode), rng, **sizes)
        progress.end("" if score["num_active_dims"] else " (no code dim has std >= 0.05: 0)")
        results[name] = dict(score, score=score.get("eval_accuracy", score["train_accuracy"]),
                             **sizes)
    progress = _Progress(log, "MIG", min(10_000, num_samples))
    results["mig"] = compute_mig(ground_truth_data, progress.counting(encode), rng,
                                 progress.total)
    progress.end()
    return results


def stage_features(stage, features_fn, num_samples, log, image_batches):
    """FID features (real_features) of num_samples images of image_batches, logged."""
    progress = _Progress(log, stage, num_samples)
    features = real_features(image_batches, progress.counting(features_fn), num_samples)
    progress.end()
    return features


def real_reference(stage, features_fn, num_samples, log, real_images, natural):
    """(FID features of num_samples real images, the floor): the FID between them and the next
    num_samples of the stream, a disjoint set. Natural images come in passes, each a
    permutation of the data: a repeat means fewer than 2 x num_samples images, and a note."""
    seen = []

    def stream():  # natural images hashed (sprites are drawn afresh: equal ones are no repeat)
        for images in real_images:
            seen.extend(hash(x.tobytes()) for x in np.asarray(images) if natural)
            yield images
    images = stream()
    real = stage_features(stage, features_fn, num_samples, log, images)
    second = stage_features(stage + ", second set", features_fn, num_samples, log, images)
    if len(set(seen)) < len(seen):
        return real, f"not measured: the data has fewer than {2 * num_samples:,} images"
    return real, feature_distance(real, second)


def idgan_scores(generator, encoder, runs, reference, network, classifier_path, num_samples,
                 batch_size, rng, seed=0, codes_fn=None, log=print, *, datasets):
    """{name: score} of the ID-GAN run runs[1] on its own data, each stage logged: FID in the
    stage-1 reference (features_fn, description, (real features, floor)) where it serves, else
    in network(source, path) and a real reference of its own; L_I and GILBO if G takes c (real
    streams seed + 1 and seed + 2). G sees at most its training batch a call."""
    (vae_flags, source), (idgan_flags, idgan_source) = runs
    (features_fn, fid_features, real), name = reference, idgan_source[0]
    res, chunk = idgan_flags["res"], idgan_flags.get("batch_size")  # load_runs checked "res"
    images = lambda batch, seed: datasets.make_dataset(  # noqa: E731  endless
        name, res, batch, data_dir=idgan_source[1], seed=seed, painting=idgan_source[2])
    results = dict(idgan_dataset=name)
    if (name, idgan_source[2]) != (source[0], source[2]) and (datasets.has_ground_truth(
            source[0]) or datasets.has_ground_truth(name)):  # else the same network serves
        features_fn, fid_features, record = network(
            idgan_source, f"{os.path.splitext(classifier_path)[0]}_{name}.keras")
        results.update({"idgan_factor_classifier": record} if record else {})
    results["fid_idgan_features"] = fid_features
    if (idgan_source, res) != (source, vae_flags["res"]):
        real = real_reference(f"FID, real images at {res} px ({name})", features_fn,
                              num_samples, log, images(batch_size, seed),
                              not datasets.has_ground_truth(name))
    posterior_images = iter(images(batch_size, seed + 1))  # endless, as in training
    results.update(fid_scores("fid_idgan", real[0], stage_features(
        "FID, ID-GAN samples", features_fn, num_samples, log, generated_batches(generator_sampler(
            generator, encoder, posterior_images, rng, codes_fn, chunk), num_samples, batch_size)),
        real[1]))
    if generator.inputs[1].shape[-1] == 0:  # L_I and GILBO need c
        return results
    progress = _Progress(log, "L_I", num_samples, "samples")
    results["l_i"] = distill_lower_bound(generator, encoder, map(progress.counting(
        lambda batch: batch), posterior_images), num_samples, seed, codes_fn, chunk)
    progress.end()
    steps = evaluation_sizes(num_samples)[1]
    progress = _Progress(log, "GILBO", num_samples, "samples")
    results["gilbo"] = gilbo(generator, encoder, iter(images(GILBO_BATCH, seed + 2)),
                             num_samples, steps, seed=seed, codes_fn=codes_fn, chunk=chunk)
    progress.end(f" (its encoder trained {steps:,} steps first)")
    return dict(results, gilbo_train_steps=steps)


def evaluate(vae_run, idgan_run=None, num_samples=50_000, batch_size=None, out=None,
             classifier_path=None, classifier_steps=5000, inception_weights="imagenet", seed=0,
             disentanglement=True, codes_fn=None, log=print, *, datasets):
    """FVM (both protocols) and MIG on the encoder's dataset, FIDs of VAE and ID-GAN samples with
    their noise (fid_scores), L_I and GILBO (README "Metrics"), written to `out` (default: the last
    run's metrics.json). num_samples counts FID and L_I samples and caps the other sizes; batch_size
    changes speed only. disentanglement=False skips FVM and MIG; codes_fn: see generator_sampler."""
    runs, encoder, decoder, generator = _open_runs(vae_run, idgan_run, num_samples, batch_size,
                                                   classifier_steps, datasets)
    vae_flags, source = runs[0]
    rng = np.random.default_rng(seed)
    classifier_path = classifier_path or os.path.join(vae_run, "factor_classifier.keras")
    network = lambda source, path: fid_feature_network(  # noqa: E731
        source, path, min(classifier_steps, num_samples), seed, inception_weights, log, datasets)
    features_fn, fid_features, record = network(source, classifier_path)
    batch_size = batch_size or (CLASSIFIER_BATCH if record else INCEPTION_BATCH)
    results = dict(dataset=source[0], vae=vae_run, idgan=idgan_run, num_samples=num_samples,
                   fid_features=fid_features, batch_size=batch_size)
    results.update({"factor_classifier": record} if record else {})
    if datasets.has_ground_truth(source[0]) and disentanglement:  # the encoder's own dataset
        results.update(encoder_scores(encoder, datasets.ground_truth_data(
            source[0], data_dir=source[1], painting=source[2]), rng, num_samples, log))
    real_images = datasets.make_dataset(source[0], vae_flags["res"], batch_size,
                                        data_dir=source[1], seed=seed, painting=source[2])
    real = real_reference("FID, real images", features_fn, num_samples, log, real_images,
                          not datasets.has_ground_truth(source[0]))
    if decoder is not None:
        results.update(fid_scores("fid_vae", real[0], stage_features(
            "FID, VAE samples", features_fn, num_samples, log, generated_batches(
                lambda n: _in_chunks(decoder, rng.standard_normal((n, vae_flags["c_dim"])).astype(
                    np.float32), vae_flags.get("batch_size")), num_samples, batch_size)), real[1]))
    if idgan_run:
        results.update(idgan_scores(
            generator, encoder, runs, (features_fn, fid_features, real), network, classifier_path,
            num_samples, batch_size, rng, seed, codes_fn, log, datasets=datasets))
    _save(out or os.path.join(idgan_run or vae_run, "metrics.json"), results)
    return results
