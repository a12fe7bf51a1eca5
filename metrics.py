"""Metrics of ID-GAN (paper appendix C.1 and Table 3; SPEC.md "Metrics").

FID compares Gaussians fitted to features of real and generated images; the FactorVAE
metric (FVM) and the mutual information gap (MIG) score how axis-aligned an encoder's codes
are with the ground-truth factors (disentanglement_lib's definitions); L_I is the stage-2
lower bound of I(c; G(s)). Everything up to `evaluate` needs only tensorflow, keras and numpy.

    python metrics.py --vae=RUN [--idgan=RUN] [--num_samples=50000] [--out=PATH]
        [--classifier=PATH] [--inception_weights=imagenet|PATH]
"""
import importlib
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging


# --- Frechet distance and streaming feature statistics (FID, Heusel et al. 2017) ----------
def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)), in float64.

    sigma1 sigma2 has the spectrum of the symmetric A sigma2 A, A = sigma1^(1/2), so the
    trace of its square root is the sum of square roots of A sigma2 A's eigenvalues: two
    symmetric eigendecompositions replace a general matrix square root.
    """
    mu1, sigma1, mu2, sigma2 = (tf.convert_to_tensor(np.asarray(x, np.float64))
                                for x in (mu1, sigma1, mu2, sigma2))
    d = int(tf.size(mu1))
    shapes = [tuple(x.shape) for x in (mu1, sigma1, mu2, sigma2)]
    if shapes != [(d,), (d, d), (d,), (d, d)]:
        raise ValueError(f"frechet_distance needs means (d,) and covariances (d, d) of one d, "
                         f"got shapes {shapes}.")
    eigenvalues, eigenvectors = tf.linalg.eigh(sigma1)
    root = tf.sqrt(tf.maximum(eigenvalues, 0.0))  # clip rounding-negative eigenvalues
    sqrt_sigma1 = (eigenvectors * root) @ tf.transpose(eigenvectors)
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    product = (product + tf.transpose(product)) / 2  # symmetric up to rounding
    trace_sqrt = tf.reduce_sum(tf.sqrt(tf.maximum(tf.linalg.eigvalsh(product), 0.0)))
    distance = (tf.reduce_sum(tf.square(mu1 - mu2)) + tf.linalg.trace(sigma1)
                + tf.linalg.trace(sigma2) - 2.0 * trace_sqrt)
    return float(distance)


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
    `weights`: "imagenet" (downloaded once), a local .h5 / .weights.h5 file, or None.
    """
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


def train_factor_classifier(ground_truth_data, steps=5000, batch_size=64, seed=0):
    """The classifier whose penultimate features define FID on ground-truth data, and
    {factor name: its accuracy on 1024 fresh samples}."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    names = ground_truth_data.factor_names
    _, example = ground_truth_data.sample(1, rng)
    classifier = build_factor_classifier(example.shape[1:], names, ground_truth_data.factor_sizes)
    classifier.compile(keras.optimizers.Adam(1e-3),
                       loss={name: "sparse_categorical_crossentropy" for name in names})
    for _ in range(steps):
        factors, images = ground_truth_data.sample(batch_size, rng)
        classifier.train_on_batch(images, dict(zip(names, factors.T)))
    return classifier, factor_classifier_accuracy(classifier, ground_truth_data, rng)


def factor_classifier_accuracy(classifier, ground_truth_data, rng, num_samples=1024):
    """{factor name: accuracy on num_samples fresh samples}."""
    factors, images = ground_truth_data.sample(num_samples, rng)
    predictions = classifier.predict(images, batch_size=256, verbose=0)
    return {name: float(np.mean(np.argmax(predictions[name], -1) == factors[:, k]))
            for k, name in enumerate(ground_truth_data.factor_names)}


def load_or_train_factor_classifier(path, ground_truth_data, steps=5000, batch_size=64, seed=0):
    """Loads the classifier saved at `path`, else trains it and saves it there (atomically)."""
    if os.path.exists(path):
        return keras.models.load_model(path, compile=False)
    classifier, accuracy = train_factor_classifier(ground_truth_data, steps, batch_size, seed)
    logging.info("factor classifier accuracy on fresh samples: %s", accuracy)
    temporary = f"{path}.tmp{os.getpid()}.keras"
    classifier.save(temporary)
    os.replace(temporary, path)
    return classifier


def _resized(images, model):
    """Images area-resized (average pooling, for whole factors) to a model's input size."""
    images, size = tf.convert_to_tensor(images, tf.float32), tuple(model.input_shape[1:3])
    return images if tuple(images.shape[1:3]) == size else tf.image.resize(images, size, "area")


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

    Defaults follow disentanglement_lib; the paper's text uses batches of 100 and 800
    training votes. encode_fn maps observations to mean codes (n, d).
    """
    _, codes = _encode_samples(ground_truth_data, encode_fn, num_variance, rng)
    global_variances = np.var(codes, axis=0, ddof=1)
    active = np.flatnonzero(np.sqrt(global_variances) >= 0.05)  # collapsed dims cast no vote
    if active.size == 0:
        return dict(train_accuracy=0.0, eval_accuracy=0.0, num_active_dims=0)
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
    eval_votes = votes(num_eval)
    dims = np.arange(active.size)
    return dict(train_accuracy=float(train_votes[dims, classifier].sum() / num_train),
                eval_accuracy=float(eval_votes[dims, classifier].sum() / num_eval),
                num_active_dims=int(active.size))


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


def _generate(generator, c, rng):
    """G([z, c]) mapped from [-1, 1] to [0, 1], with z ~ N(0, I) of the generator's width."""
    z = rng.standard_normal((len(c), generator.inputs[0].shape[-1]))
    images = generator([z.astype(np.float32), c.astype(np.float32)], training=False)
    return (images + 1) / 2


def distill_lower_bound(generator, encoder, real_batches, num_samples=10_000, seed=0):
    """L_I = -E[NLL of c under Encoder(G(z, c))]; higher means G(s) keeps more of c.

    c ~ q(c|x) on `real_batches` (images in [0, 1]), z ~ N(0, I); the encoder sees G's
    output mapped to [0, 1] (SPEC.md "Stage 2 objective").
    """
    rng = np.random.default_rng(seed)
    total, count = 0.0, 0
    for real in real_batches:
        c = _sample_code(encoder, real[:num_samples - count], rng)
        mu_hat, logvar_hat = _posterior(encoder, _generate(generator, c, rng))
        nll = 0.5 * (np.log(2 * np.pi) + logvar_hat + (c - mu_hat) ** 2 / np.exp(logvar_hat))
        total, count = total + nll.sum(), count + len(c)
        if count >= num_samples:
            break
    if count == 0:
        raise ValueError("distill_lower_bound got no real images.")
    return -total / count


# --- Evaluating stage-1 / stage-2 run directories -----------------------------------------
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


def evaluate(vae_run, idgan_run=None, num_samples=50_000, batch_size=100, out=None,
             classifier_path=None, classifier_steps=5000, inception_weights="imagenet", seed=0,
             disentanglement=True):
    """FVM and MIG (ground-truth datasets), FIDs of VAE and ID-GAN samples, and L_I, written
    to `out` (default: metrics.json in the ID-GAN run, else the VAE run).

    num_samples counts FID and L_I samples and caps the other sizes (FVM, MIG, classifier
    steps; their defaults are the paper's). The factor classifier is cached at
    classifier_path (default VAE_RUN/factor_classifier.keras): share one to compare runs.
    disentanglement=False skips FVM and MIG (when comparing generators on one encoder).
    """
    vae_flags = _load_run(vae_run, ("encoder.keras", "decoder.keras"), ("dataset", "res", "c_dim"))
    name, vae_res = vae_flags["dataset"], vae_flags["res"]
    if idgan_run:
        idgan_flags = _load_run(idgan_run, ("generator.keras",), ("res",))
        if idgan_flags.get("dataset", name) != name:
            raise ValueError(f"{idgan_run} and {vae_run} were trained on different datasets")
    data = importlib.import_module("data")  # the project's datasets; nothing above needs it
    data_dir, painting = vae_flags.get("data_dir"), vae_flags.get("painting")
    rng = np.random.default_rng(seed)
    encoder = keras.models.load_model(os.path.join(vae_run, "encoder.keras"), compile=False)
    decoder = keras.models.load_model(os.path.join(vae_run, "decoder.keras"), compile=False)
    results = dict(dataset=name, vae=vae_run, idgan=idgan_run, num_samples=num_samples)

    def dataset(res, shift=0):
        return data.make_dataset(name, res, batch_size, data_dir=data_dir, seed=seed + shift,
                                 painting=painting)

    if data.has_ground_truth(name):
        ground_truth = data.ground_truth_data(name, data_dir=data_dir, painting=painting)
        encode = lambda images: _posterior(encoder, images)[0]  # noqa: E731
        cap = lambda default: min(default, num_samples)  # noqa: E731
        if disentanglement:
            results["factor_vae_score"] = factor_vae_score(
                ground_truth, encode, rng, num_variance=cap(10_000), num_train=cap(10_000),
                num_eval=cap(5_000))
            results["mig"] = compute_mig(ground_truth, encode, rng, num_samples=cap(10_000))
        classifier = load_or_train_factor_classifier(
            classifier_path or os.path.join(vae_run, "factor_classifier.keras"), ground_truth,
            steps=cap(classifier_steps), seed=seed)
        features_fn = classifier_features_fn(classifier)
        results["fid_features"] = "factor classifier"
    else:
        features_fn = inception_features_fn(inception_weights)
        results["fid_features"] = "Keras InceptionV3: ranks models, not pytorch-fid's values"
    real = {vae_res: real_statistics(dataset(vae_res), features_fn, num_samples)}
    c_dim = vae_flags["c_dim"]
    vae_samples = generated_statistics(
        lambda n: decoder(rng.standard_normal((n, c_dim)).astype(np.float32), training=False),
        features_fn, num_samples, batch_size)
    results["fid_vae"] = frechet_distance(*real[vae_res], *vae_samples)
    if idgan_run:
        generator = keras.models.load_model(os.path.join(idgan_run, "generator.keras"),
                                            compile=False)
        res = idgan_flags["res"]
        if res not in real:
            real[res] = real_statistics(dataset(res), features_fn, num_samples)
        posterior_images = iter(dataset(vae_res, shift=1))  # endless batches
        uses_codes = generator.inputs[1].shape[-1] > 0  # c of width 0: the plain GAN

        def generate(n):  # c from the aggregated posterior, as in stage-2 training
            c = _sample_code(encoder, next(posterior_images)[:n], rng)
            return _generate(generator, c if uses_codes else np.zeros((n, 0)), rng)

        idgan_samples = generated_statistics(generate, features_fn, num_samples, batch_size)
        results["fid_idgan"] = frechet_distance(*real[res], *idgan_samples)
        if uses_codes:
            results["l_i"] = distill_lower_bound(generator, encoder, posterior_images,
                                                 num_samples, seed)
    path = out or os.path.join(idgan_run or vae_run, "metrics.json")
    with open(path + ".tmp", "w") as f:  # write, then rename: never a half-written file
        json.dump(results, f, indent=2)
    os.replace(path + ".tmp", path)
    return results


def _define_flags():
    """Defined only when run as a script, so importing metrics registers no flags."""
    flags.DEFINE_string("vae", None, "Stage-1 run: flags.json, encoder.keras, decoder.keras.")
    flags.DEFINE_string("idgan", None, "Optional stage-2 run: flags.json, generator.keras.")
    flags.DEFINE_integer("num_samples", 50_000, "Real and generated images for FID and L_I.")
    flags.DEFINE_string("out", None, "Output JSON (default: metrics.json in the last run given).")
    flags.DEFINE_string("classifier", None,
                        "Factor classifier cache (default: VAE_RUN/factor_classifier.keras).")
    flags.DEFINE_string("inception_weights", "imagenet",
                        "InceptionV3 weights for FID on natural images: imagenet or a local file.")
    flags.mark_flag_as_required("vae")


def _fail(message):
    """Exits with one line on stderr, no traceback."""
    sys.exit(f"metrics.py: error: {(str(message).strip().splitlines() or ['failed'])[0]}")


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        _fail(error)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}")
    FLAGS = flags.FLAGS
    try:
        results = evaluate(FLAGS.vae, FLAGS.idgan, num_samples=FLAGS.num_samples, out=FLAGS.out,
                           classifier_path=FLAGS.classifier,
                           inception_weights=FLAGS.inception_weights)
    except (ImportError, OSError, ValueError, RuntimeError) as error:
        _fail(error)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=_parse_flags)
