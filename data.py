"""Datasets for ID-GAN: procedural sprites, dSprites and its variants, natural images.

`make_dataset` gives an endless, shuffled, batched `tf.data.Dataset` of float32 images in
[0, 1], (batch, res, res, channels). The sprites family also has `ground_truth_data`, the
factors and renderer the disentanglement metrics use (disentanglement_lib's GroundTruthData).
"""
import dataclasses
import functools
import math
import os
import socket
import threading
import urllib.parse
import urllib.request
from typing import Callable

import numpy as np
import tensorflow as tf

GROUND_TRUTH_BASES = ("sprites", "dsprites")
VARIANTS = ("", "color_", "noisy_", "scream_")
NATURAL = ("celeba", "celeba_hq", "chairs", "cars")
DATASETS = tuple(v + b for b in GROUND_TRUTH_BASES for v in VARIANTS) + NATURAL
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


class DataError(ValueError):
    """A dataset cannot be loaded as asked; the message says why in one line."""


def first_line(error):
    """The first line of an exception's message, or its type's name when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def has_ground_truth(name):
    return name in DATASETS and name not in NATURAL


def num_channels(name):
    """Binary sprites are grey; every variant and natural image set is RGB."""
    return 1 if name in GROUND_TRUTH_BASES else 3


# ---------------------------------------------------------------------------------------
# The ground-truth interface (shared by sprites and dSprites, used by metrics.py).
@dataclasses.dataclass(frozen=True)
class GroundTruthData:
    """Factors of variation and a renderer: numpy RNG in, arrays out."""

    name: str
    factor_names: tuple
    factor_sizes: tuple
    channels: int
    render: Callable  # (int factors (N, k), rng) -> float32 images (N, 64, 64, channels)

    def sample_factors(self, num, rng):
        return np.stack([rng.integers(0, n, num) for n in self.factor_sizes], axis=1)

    def sample_observations_from_factors(self, factors, rng):
        return self.render(np.asarray(factors, dtype=np.int64), rng)

    def sample(self, num, rng):
        factors = self.sample_factors(num, rng)
        return factors, self.sample_observations_from_factors(factors, rng)


FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)  # dSprites' grid: 737,280 images

# ---------------------------------------------------------------------------------------
# Procedural sprites: dSprites' factor grid, drawn here (our own shapes and sizes, so numbers
# on `sprites` and `dsprites` differ). Each (shape, scale, orientation) is drawn once as a
# binary template; the 32 x 32 positions are 1-pixel shifts of it (centres 16..47, +x right,
# +y down), so rendering is a gather of 64 x 64 windows from a padded canvas.
SPRITE_RADIUS = 14.0  # pixels at scale 1; the sprite stays inside the frame at any position
_PAD_CENTRE = 47  # template centre in the padded canvas; window offset = 47 - position centre
_CANVAS = 95  # 64 + 31 positions
_HALF = 16  # half-size of a template


def _shape_mask(shape, u, v):
    """Inside-test of the unit-size shapes: 0 square, 1 ellipse, 2 heart (v points up)."""
    if shape == 0:
        return np.maximum(np.abs(u), np.abs(v)) <= 0.6
    if shape == 1:
        return u**2 + (v / 0.5) ** 2 <= 1.0
    x, y = 1.1 * u, 1.1 * v + 0.2
    return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


@functools.lru_cache(maxsize=1)
def sprite_templates(supersample=4):
    """Binary canvases of shape (3, 6, 40, 95, 95), sprite centred at (47, 47)."""
    scales = np.linspace(0.5, 1.0, 6)
    orientations = np.linspace(0.0, 2 * np.pi, 40)  # 0 and 2 pi both, as in dSprites
    size = 2 * _HALF + 1  # sprites fit in 33 x 33 around their centre pixel
    offsets = (np.arange(size * supersample) + 0.5) / supersample - _HALF - 0.5
    rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
    x, y = cols, -rows
    canvas = np.zeros((3, 6, 40, _CANVAS, _CANVAS), np.uint8)
    centre = slice(_PAD_CENTRE - _HALF, _PAD_CENTRE + _HALF + 1)
    for k, theta in enumerate(orientations):
        u = np.cos(theta) * x + np.sin(theta) * y  # rotate the pixel grid by -theta
        v = -np.sin(theta) * x + np.cos(theta) * y
        for j, scale in enumerate(scales):
            r = SPRITE_RADIUS * scale
            for shape in range(3):
                inside = _shape_mask(shape, u / r, v / r).astype(np.float32)
                coverage = inside.reshape(size, supersample, size, supersample).mean((1, 3))
                canvas[shape, j, k, centre, centre] = coverage >= 0.5
    canvas.flags.writeable = False
    return canvas


def render_sprites(templates, factors):
    """Binary sprites (N, 64, 64) uint8 for integer factors (N, 5): one gather."""
    windows = np.lib.stride_tricks.sliding_window_view(templates, (64, 64), axis=(3, 4))
    shape, scale, orientation, pos_x, pos_y = factors.T
    return windows[shape, scale, orientation, 31 - pos_y, 31 - pos_x]


# ---------------------------------------------------------------------------------------
# Variants (Locatello et al. 2019, disentanglement_lib): colour, noise and painting
# backgrounds are random per image and are not factors.
def binary_images(binary, rng):  # the plain variant: one channel, no randomness
    return binary[..., None].astype(np.float32)


def color_images(binary, rng):
    levels = rng.integers(0, 8, (len(binary), 1, 1, 3)) / 7.0  # 8 levels per channel in [0, 1]
    return (binary[..., None] * levels).astype(np.float32)


def noisy_images(binary, rng):
    noise = rng.uniform(0.0, 1.0, binary.shape + (3,))
    return np.minimum(binary[..., None] + noise, 1.0).astype(np.float32)


def scream_images(binary, rng, painting):
    """Background: a random 64 x 64 crop of the painting averaged with a random colour;
    sprite pixels take the inverted background colour."""
    n = len(binary)
    top = rng.integers(0, painting.shape[0] - 64 + 1, n)  # every 64 x 64 window, edges too
    left = rng.integers(0, painting.shape[1] - 64 + 1, n)
    windows = np.lib.stride_tricks.sliding_window_view(painting, (64, 64), axis=(0, 1))
    crops = windows[top, left].transpose(0, 2, 3, 1)  # (n, 64, 64, 3)
    background = (crops + rng.uniform(0.0, 1.0, (n, 1, 1, 3))) / 2.0
    mask = binary[..., None].astype(bool)
    return np.where(mask, 1.0 - background, background).astype(np.float32)


def procedural_painting(height=274, width=350):
    """A fixed swirly colour texture standing in for The Scream when no painting is given."""
    y, x = np.mgrid[0:height, 0:width] / 40.0
    swirl = np.sin(x + 2.0 * np.sin(y * 0.7)) + np.cos(y * 1.3 + np.sin(x * 0.5))
    rgb = [np.sin(swirl * 1.5 + phase) for phase in (0.0, 2.1, 4.2)]
    return ((np.stack(rgb, axis=-1) + 1.0) / 2.0).astype(np.float32)


PAINTING_BOX = (350, 274)  # disentanglement_lib's and the authors' inputs.py's thumbnail


def thumbnail_size(width, height, box=PAINTING_BOX):
    """(width, height) of PIL's Image.thumbnail(box): shrunk to fit, never enlarged, the
    shrunk side the floor or ceiling of its length whose aspect is closer (floor on a tie)."""
    if width <= box[0] and height <= box[1]:
        return width, height
    aspect = width / height
    closest = lambda side, aspect_of: max(1, min(  # noqa: E731
        math.floor(side), math.ceil(side), key=lambda n: abs(aspect_of(n) - aspect) if n else 1e9))
    if box[0] / box[1] >= aspect:  # the height is the limit
        return closest(box[1] * aspect, lambda w: w / box[1]), box[1]
    return box[0], closest(box[0] / aspect, lambda h: box[0] / h)


# JPEGs decoded as PIL does (the authors' data/preprocess.py, disentanglement_lib): libjpeg's
# accurate integer DCT, not TF's default fast one, whose pixels differ.
decode_jpeg = functools.partial(tf.io.decode_jpeg, channels=3, dct_method="INTEGER_ACCURATE")


def decode(encoded):
    """8-bit RGB (h, w, 3) of an encoded PNG, JPEG, GIF (first frame) or BMP file."""
    return tf.cond(tf.io.is_jpeg(encoded), lambda: decode_jpeg(encoded),
                   lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))


def load_painting(path):
    """An RGB painting in [0, 1], shrunk to fit 350 x 274 keeping its aspect (PAINTING_BOX)."""
    if not tf.io.gfile.exists(path):
        raise DataError(f"--painting {path} does not exist")
    try:
        image = decode(tf.io.read_file(path))
    except tf.errors.InvalidArgumentError:
        raise DataError(f"--painting {path} is not a readable image "
                        "(not a PNG, JPEG, GIF or BMP file)") from None
    except tf.errors.OpError as error:  # a directory, no permission, ...
        raise DataError(f"--painting {path} cannot be read ({type(error).__name__})") from None
    height, width = image.shape[:2]
    new_width, new_height = thumbnail_size(width, height)
    if min(new_width, new_height) < 64:
        raise DataError(f"--painting {path} is too small: {new_width} x {new_height} after "
                        f"fitting into 350 x 274, and the backgrounds are 64 x 64 crops of it")
    image = tf.cast(image, tf.float32) / 255.0
    if (new_width, new_height) != (width, height):  # PIL's thumbnail resamples bicubic
        image = tf.image.resize(image, (new_height, new_width), method="bicubic", antialias=True)
    return np.clip(image.numpy(), 0.0, 1.0)


# ---------------------------------------------------------------------------------------
# TFDS: a prepared dataset, or a download. Offline, TFDS would retry for minutes; instead a
# quick connection to the download host decides, and the error names the ways in.
DOWNLOAD_PROBE_SECONDS = 5.0


def download_blocker(builder):
    """Why TFDS cannot download `builder`, or None when its host (or proxy) answers within
    DOWNLOAD_PROBE_SECONDS. In a daemon thread, so that a hanging name lookup counts too."""
    if not builder.url_infos:  # a manual download (celeb_a_hq): TFDS says at once what is missing
        return None
    timeout = DOWNLOAD_PROBE_SECONDS
    url = urllib.parse.urlsplit(min(builder.url_infos))  # each of ours has a single host
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname):
        url = urllib.parse.urlsplit(proxy if "//" in proxy else "//" + proxy)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    reason = [f"cannot connect to {host}:{port}: no answer within {timeout:g} s"]

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            reason[0] = None
        except OSError as error:
            reason[0] = f"cannot connect to {host}:{port}: {first_line(error)}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return reason[0]


def load_tfds(config, split, data_dir, seed, ways_in, encoded_images=False):
    """Examples of TFDS `config` (files in a seeded shuffled order; "image" decoded by TFDS,
    with TF's fast DCT, or its bytes with encoded_images), prepared in data_dir (None: TFDS'
    default) or downloaded now. `ways_in` ends the error message."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(config, data_dir=data_dir)
        if not builder.is_prepared():
            blocker = download_blocker(builder)
            if blocker:
                raise DataError(f"TFDS has nothing prepared for {config} in "
                                f"{builder.data_dir_root} and the download cannot start "
                                f"({blocker}); pass {ways_in}")
            builder.download_and_prepare()
        return builder.as_dataset(
            split=split, shuffle_files=True, read_config=tfds.ReadConfig(shuffle_seed=seed),
            decoders={"image": tfds.decode.SkipDecoding()} if encoded_images else None)
    except DataError:
        raise
    except Exception as error:  # TFDS raises many types for a missing or broken download
        raise DataError(f"cannot load TFDS {config} ({type(error).__name__}: "
                        f"{first_line(error)[:160]}); pass {ways_in}") from None


# ---------------------------------------------------------------------------------------
# Real dSprites: DeepMind's npz (in --data_dir) or TFDS `dsprites`, indexed by factors.
DSPRITES_NPZ = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
_FACTOR_STRIDES = np.cumprod((1,) + FACTOR_SIZES[:0:-1])[::-1]  # row-major index of factors
TFDS_FACTORS = ("label_shape", "label_scale", "label_orientation", "label_x_position",
                "label_y_position")


@functools.lru_cache(maxsize=1)
def load_dsprites_images(data_dir=None):
    """All 737,280 binary images (read-only uint8, (N, 64, 64)) in factor order, loaded once
    per process (2.8 GiB): training and the evaluation after it share them."""
    npz = os.path.join(data_dir, DSPRITES_NPZ) if data_dir else None
    if npz and os.path.exists(npz):
        try:
            with np.load(npz) as archive:
                images = archive["imgs"] if "imgs" in archive.files else None
        except Exception as error:  # numpy and zipfile raise many types for a broken file
            raise DataError(f"{npz} is not a readable npz file ({first_line(error)})") from None
        if images is None:
            raise DataError(f"{npz} has no 'imgs' array (is it DeepMind's dSprites file?)")
        images = np.asarray(images, dtype=np.uint8)  # uint8 already in DeepMind's file: no copy
    else:
        import tensorflow_datasets as tfds

        split = load_tfds("dsprites", "train", data_dir, 0, ways_in=(
            f"--data_dir= a folder holding {DSPRITES_NPZ}, or a prepared TFDS data_dir "
            "(holding dsprites/...)"))
        images = np.zeros((int(np.prod(FACTOR_SIZES)), 64, 64), np.uint8)
        for batch in tfds.as_numpy(split.batch(4096)):
            index = np.stack([batch[k] for k in TFDS_FACTORS], axis=1) @ _FACTOR_STRIDES
            images[index] = batch["image"][..., 0]
    images.flags.writeable = False
    return images


def ground_truth_data(name, data_dir=None, painting=None):
    """The ground-truth interface of a sprites-family dataset (see DATASETS)."""
    if not has_ground_truth(name):
        raise DataError(f"dataset {name} has no ground-truth factors")
    base = name.split("_")[-1]
    if base == "sprites":
        templates = sprite_templates()
        binary = lambda factors: render_sprites(templates, factors)  # noqa: E731
    else:
        images = load_dsprites_images(data_dir)
        binary = lambda factors: images[factors @ _FACTOR_STRIDES]  # noqa: E731
    variant = name[: -len(base)]
    if variant == "scream_":
        if painting is None:
            print(f"{name}: no --painting given, using a procedural texture instead of The Scream")
        texture = procedural_painting() if painting is None else load_painting(painting)
        paint = functools.partial(scream_images, painting=texture)
    else:
        paint = {"": binary_images, "color_": color_images, "noisy_": noisy_images}[variant]
    render = lambda factors, rng: paint(binary(factors), rng)  # noqa: E731
    return GroundTruthData(name, FACTOR_NAMES, FACTOR_SIZES, num_channels(name), render)


# ---------------------------------------------------------------------------------------
# Natural images: TFDS where it has them, else a folder of images (--data_dir), as the
# authors' data/preprocess.py: every image (CelebA's 202,599 are all three TFDS splits, Cars'
# 16,185 both), centre crops (Cars' box squashed to res x res), CelebA and Cars as .jpg at
# PIL's default quality 75, which TF's encoder with the accurate integer DCT reproduces.
TFDS_NAMES = {"celeba": "celeb_a", "celeba_hq": "celeb_a_hq", "cars": "cars196"}
TFDS_SPLITS = {"celeba": "train+validation+test", "celeba_hq": "train", "cars": "train+test"}
FOLDER_EXAMPLES = {"celeba": " such as img_align_celeba", "cars": " of cropped cars"}
CENTRE_CROP = {"celeba": 160, "chairs": 450}
JPEG_QUALITY = {"celeba": 75, "cars": 75}
SHUFFLE_BUFFER_BYTES = 1 << 30


def image_files(data_dir):
    """Image paths under data_dir (recursive, sorted), or a DataError saying why there are none."""
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(data_dir) for f in names)
    if not files:
        raise DataError(f"--data_dir {data_dir} is empty")
    images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not images:
        raise DataError(f"--data_dir {data_dir} holds no image files "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    return images


def preprocess(name, image, res):
    """The authors' data/preprocess.py: the central square, at most CENTRE_CROP a side (cars:
    the whole box, squashed); PIL's antialiased LANCZOS resize to res x res; 8 bits; a JPEG
    round trip for CelebA and Cars. Out: float32 k / 255, what gan_training/inputs.py reads."""
    if name != "cars":
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        size = tf.minimum(tf.minimum(height, width), CENTRE_CROP.get(name, 1 << 30))
        image = tf.image.crop_to_bounding_box(
            image, (height - size) // 2, (width - size) // 2, size, size)
    image = tf.image.resize(image, (res, res), method="lanczos3", antialias=True)
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
    if name in JPEG_QUALITY:
        encoded = tf.io.encode_jpeg(image, quality=JPEG_QUALITY[name])
        image = decode_jpeg(encoded)
    return tf.ensure_shape(tf.cast(image, tf.float32) / 255.0, (res, res, 3))


def crop_to_box(example):
    """Cars196: the image inside its bounding box (normalised ymin, xmin, ymax, xmax)."""
    image, size = example["image"], tf.cast(tf.shape(example["image"])[:2], tf.float32)
    pixels = tf.cast(tf.round(example["bbox"] * tf.tile(size, [2])), tf.int32)
    top, left, bottom, right = tf.unstack(pixels)
    return tf.image.crop_to_bounding_box(
        image, top, left, tf.maximum(bottom - top, 1), tf.maximum(right - left, 1))


def shuffle_buffer_size(res, channels=3):
    """Images in the shuffle buffer: up to 10,000, but no more than ~1 GiB of them at res."""
    return max(1, min(10_000, SHUFFLE_BUFFER_BYTES // (res * res * channels * 4)))


def tfds_images(name, res, data_dir, seed):
    tfds_name = TFDS_NAMES[name]
    config = f"{tfds_name}/{res}" if name == "celeba_hq" else tfds_name
    examples = load_tfds(config, TFDS_SPLITS[name], data_dir, seed, ways_in=(
        f"--data_dir= a prepared TFDS data_dir (holding {tfds_name}/...) or --data_dir= a "
        f"folder of images{FOLDER_EXAMPLES.get(name, '')}"), encoded_images=True)
    examples = examples.map(lambda example: dict(example, image=decode(example["image"])),
                            num_parallel_calls=tf.data.AUTOTUNE)
    if name == "cars":  # as in their data/preprocess.py, boxes under 64 px a side are dropped
        images = examples.map(crop_to_box).filter(
            lambda image: tf.reduce_min(tf.shape(image)[:2]) >= 64)
    else:
        images = examples.map(lambda example: example["image"])
    # Resize, then shuffle: the buffer holds training-size images, not decoded originals.
    images = images.map(lambda image: preprocess(name, image, res),
                        num_parallel_calls=tf.data.AUTOTUNE)
    return images.shuffle(shuffle_buffer_size(res), seed=seed)


def folder_images(name, res, data_dir, seed):
    files = image_files(data_dir)
    paths = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
    images = paths.map(lambda path: decode(tf.io.read_file(path)),
                       num_parallel_calls=tf.data.AUTOTUNE)
    # A corrupt file is skipped with a logged warning, not fatal hours into a run.
    return images.ignore_errors(log_warning=True).map(
        lambda image: preprocess(name, image, res), num_parallel_calls=tf.data.AUTOTUNE)


def natural_images(name, res, data_dir, seed):
    """Unbatched 8-bit images (k / 255, see preprocess), shuffled each pass, from a TFDS
    data_dir when it holds a `<tfds name>` folder, else from a folder of images."""
    tfds_name = TFDS_NAMES.get(name)
    tfds_dir = data_dir is None or (tfds_name and os.path.isdir(os.path.join(data_dir, tfds_name)))
    if not tfds_dir:
        return folder_images(name, res, data_dir, seed)
    if tfds_name is None:
        raise DataError(f"dataset {name} is not in TFDS: pass --data_dir=<folder of images>")
    return tfds_images(name, res, data_dir, seed)


# ---------------------------------------------------------------------------------------
# The GAN's input noise (the authors' gan_training/inputs.py: a random horizontal flip, then
# x + U(0, 1) / 128 in [-1, 1]): U(0, 1/256) on our [0, 1] images, unclipped as theirs.
# Stateless ops keyed by (seed, start, element): a resumed run repeats.
def augment_image(image, stream_key, index):
    """Flip an 8-bit image left-right with probability 1/2, then add dequantisation noise
    in [0, 1/256)."""
    key = tf.random.experimental.stateless_fold_in(stream_key, index)
    flip_key, noise_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    image = tf.image.stateless_random_flip_left_right(image, flip_key)
    return image + tf.random.stateless_uniform(tf.shape(image), noise_key, 0.0, 1.0 / 256)


# ---------------------------------------------------------------------------------------
def make_dataset(name, res, batch_size, data_dir=None, seed=0, painting=None, start=0,
                 augment=False):
    """Endless, shuffled, batched, prefetched float32 images in [0, 1]: (B, res, res, C);
    natural images are 8-bit values k / 255 (preprocess). The stream is a function of (seed,
    start): a run resumed at step `start` gets new batches. `augment` adds the GAN's flip
    and noise to natural images; the sprites family ignores it. Building decodes no image."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name}; choose from {', '.join(DATASETS)}")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir} does not exist or is not a directory")
    channels = num_channels(name)
    if has_ground_truth(name):
        gt = ground_truth_data(name, data_dir, painting)

        def render_batch(index):  # i.i.d. factors = shuffling the full grid with replacement
            rng = np.random.default_rng([seed, int(index)])
            return gt.sample(batch_size, rng)[1]

        batches = tf.data.Dataset.counter(start).map(
            lambda i: tf.numpy_function(render_batch, [i], tf.float32, stateful=False),
            num_parallel_calls=tf.data.AUTOTUNE)
        batches = batches.map(lambda x: tf.ensure_shape(x, (batch_size, 64, 64, channels)))
        if res != 64:
            method = "area" if res < 64 else "bilinear"
            batches = batches.map(lambda x: tf.image.resize(x, (res, res), method=method))
    else:
        # A seed of the pair: seed + start would give (seed 0, start 3) seed 3's shuffle.
        shuffle_seed = int(np.random.default_rng([seed, start]).integers(2**31))
        images = natural_images(name, res, data_dir, shuffle_seed).repeat()
        if augment:  # keyed by (seed, start, index of the image in this stream)
            stream_key = tf.constant([seed, start], tf.int64)
            images = tf.data.Dataset.zip((images, tf.data.Dataset.counter())).map(
                lambda image, i: augment_image(image, stream_key, i),
                num_parallel_calls=tf.data.AUTOTUNE)
        batches = images.batch(batch_size, drop_remainder=True)
        batches = batches.map(lambda x: tf.ensure_shape(x, (batch_size, res, res, channels)))
    return without_autotuning(batches.prefetch(tf.data.AUTOTUNE))


def without_autotuning(dataset):
    """tf.data's autotuner off: on, a whole fit() can run at one core's speed
    (benchmarks/results/speed/README.md)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
