"""Datasets for ID-GAN: procedural sprites, dSprites and its variants, natural images.

Every dataset comes out of `make_dataset` as an endless, shuffled, batched, prefetched
`tf.data.Dataset` of float32 images in [0, 1] with shape (batch, res, res, channels).

Datasets with known generative factors (the sprites family) also have a ground-truth
interface (`ground_truth_data`) that the disentanglement metrics use: factor names and
sizes, sampling factors, and rendering observations from factors (SPEC.md "Data").
"""
import dataclasses
import functools
import os
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

    @property
    def observation_shape(self):
        return (64, 64, self.channels)

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
# Procedural sprites: dSprites' factor grid, drawn here. Not DeepMind's images: shapes,
# sizes and the position range are our own, so numbers on `sprites` and `dsprites` differ.
#
# Each (shape, scale, orientation) is drawn once as a binary template centred on a pixel;
# the 32 x 32 positions are 1-pixel shifts of it (centres 16..47, +x right, +y down).
# Rendering is then a gather of 64 x 64 windows from a padded canvas: no per-image maths.

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
    """Binary sprites (N, 64, 64) uint8 for integer factors (N, 5): one gather, no loops."""
    windows = np.lib.stride_tricks.sliding_window_view(templates, (64, 64), axis=(3, 4))
    shape, scale, orientation, pos_x, pos_y = factors.T
    return windows[shape, scale, orientation, 31 - pos_y, 31 - pos_x]


# ---------------------------------------------------------------------------------------
# Variants (SPEC.md "Data"; Locatello et al. 2019): colour, noise and painting backgrounds
# are random per image and are not factors, as in disentanglement_lib.


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
    top = rng.integers(0, painting.shape[0] - 64, n)
    left = rng.integers(0, painting.shape[1] - 64, n)
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


def load_painting(path):
    """An RGB painting in [0, 1], resized to 274 x 350 as in disentanglement_lib."""
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as error:
        raise DataError(f"--painting {path} is not a readable image ({error.message})") from None
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (274, 350), antialias=True)
    return np.clip(image.numpy(), 0.0, 1.0)


# ---------------------------------------------------------------------------------------
# Real dSprites: DeepMind's npz (in --data_dir) or TFDS `dsprites`, indexed by factors.

DSPRITES_NPZ = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
_FACTOR_STRIDES = np.cumprod((1,) + FACTOR_SIZES[:0:-1])[::-1]  # row-major index of factors


def load_dsprites_images(data_dir=None):
    """All 737,280 binary images (uint8, (N, 64, 64)) in factor order."""
    npz = os.path.join(data_dir, DSPRITES_NPZ) if data_dir else None
    if npz and os.path.exists(npz):
        with np.load(npz) as archive:
            return archive["imgs"].astype(np.uint8)
    import tensorflow_datasets as tfds

    try:
        split = tfds.load("dsprites", split="train", data_dir=data_dir)
    except Exception as error:  # TFDS raises many types for a missing download
        raise DataError(f"cannot load TFDS dsprites ({type(error).__name__}); put "
                        f"{DSPRITES_NPZ} in --data_dir") from None
    images = np.zeros((int(np.prod(FACTOR_SIZES)), 64, 64), np.uint8)
    keys = ["label_" + k for k in ("shape", "scale", "orientation", "x_position", "y_position")]
    for batch in tfds.as_numpy(split.batch(4096)):
        index = np.stack([batch[k] for k in keys], axis=1) @ _FACTOR_STRIDES
        images[index] = batch["image"][..., 0]
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
    if variant == "":
        render = lambda f, rng: binary(f)[..., None].astype(np.float32)  # noqa: E731
    elif variant == "color_":
        render = lambda f, rng: color_images(binary(f), rng)  # noqa: E731
    elif variant == "noisy_":
        render = lambda f, rng: noisy_images(binary(f), rng)  # noqa: E731
    else:
        if painting is None:
            print(f"{name}: no --painting given, using a procedural texture instead of The Scream")
        texture = procedural_painting() if painting is None else load_painting(painting)
        render = lambda f, rng: scream_images(binary(f), rng, texture)  # noqa: E731
    return GroundTruthData(name, FACTOR_NAMES, FACTOR_SIZES, num_channels(name), render)


# ---------------------------------------------------------------------------------------
# Natural images: TFDS where it has them, else a folder of images (--data_dir).

TFDS_NAMES = {"celeba": "celeb_a", "celeba_hq": "celeb_a_hq", "cars": "cars196"}
# The authors' centre crops before resizing (SPEC.md "Data"); elsewhere the central square.
CENTRE_CROP = {"celeba": 160, "chairs": 450}


def image_files(data_dir):
    """Image paths under data_dir (recursive, sorted), or a DataError saying why there are none."""
    if not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir} does not exist or is not a directory")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(data_dir) for f in names)
    if not files:
        raise DataError(f"--data_dir {data_dir} is empty")
    images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not images:
        raise DataError(f"--data_dir {data_dir} holds no image files "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    return images


def crop_and_resize(image, res, crop):
    """Central crop (at most `crop` pixels a side), then an antialiased Lanczos resize."""
    shape = tf.shape(image)
    size = tf.minimum(tf.minimum(shape[0], shape[1]), crop)
    image = tf.image.crop_to_bounding_box(
        image, (shape[0] - size) // 2, (shape[1] - size) // 2, size, size)
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (res, res),
                            method="lanczos3", antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def crop_to_box(example):
    """Cars196: crop to the bounding box (normalised ymin, xmin, ymax, xmax)."""
    image, box = example["image"], example["bbox"]
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    top, left = tf.cast(box[0] * h, tf.int32), tf.cast(box[1] * w, tf.int32)
    height = tf.maximum(tf.cast((box[2] - box[0]) * h, tf.int32), 1)
    width = tf.maximum(tf.cast((box[3] - box[1]) * w, tf.int32), 1)
    return tf.image.crop_to_bounding_box(image, top, left, height, width)


def natural_images(name, res, data_dir, seed):
    """Unbatched images in [0, 1], shuffled each pass, unreadable files skipped."""
    crop = CENTRE_CROP.get(name, 1 << 30)
    tfds_name = TFDS_NAMES.get(name)
    use_folder = data_dir is not None and not (
        tfds_name and os.path.isdir(os.path.join(data_dir, tfds_name.split("/")[0])))
    if use_folder:
        files = image_files(data_dir)
        paths = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
        decode = lambda p: tf.io.decode_image(  # noqa: E731
            tf.io.read_file(p), channels=3, expand_animations=False)
        images = paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        # A corrupt file is skipped with a logged warning, not fatal hours into a run.
        return images.ignore_errors(log_warning=True).map(
            lambda im: crop_and_resize(im, res, crop), num_parallel_calls=tf.data.AUTOTUNE)
    if tfds_name is None:
        raise DataError(f"dataset {name} is not in TFDS: pass --data_dir=<folder of images>")
    import tensorflow_datasets as tfds

    config = f"{tfds_name}/{res}" if name == "celeba_hq" else tfds_name
    try:
        split = tfds.load(config, split="train", data_dir=data_dir, shuffle_files=True,
                          read_config=tfds.ReadConfig(shuffle_seed=seed))
    except Exception as error:  # TFDS raises many types for a missing download
        raise DataError(f"cannot load TFDS {config} ({type(error).__name__}: "
                        f"{str(error).splitlines()[0][:120]}); pass --data_dir") from None
    split = split.shuffle(10_000, seed=seed)
    if name == "cars":  # SPEC.md: boxes under 64 px on a side are dropped
        split = split.map(crop_to_box).filter(
            lambda im: tf.reduce_min(tf.shape(im)[:2]) >= 64)
    else:
        split = split.map(lambda example: example["image"])
    return split.map(lambda im: crop_and_resize(im, res, crop),
                     num_parallel_calls=tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------
# The one entry point for training.


def make_dataset(name, res, batch_size, data_dir=None, seed=0, painting=None, start=0):
    """Endless, shuffled, batched, prefetched float32 images in [0, 1]: (B, res, res, C).

    The stream is a function of (seed, start): a run resumed at step `start` continues with
    new batches (the sprites family's batch `start` onwards; a fresh shuffle otherwise)."""
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
        images = natural_images(name, res, data_dir, seed + start)
        batches = images.repeat().batch(batch_size, drop_remainder=True)
        batches = batches.map(lambda x: tf.ensure_shape(x, (batch_size, res, res, channels)))
    return batches.prefetch(tf.data.AUTOTUNE)
