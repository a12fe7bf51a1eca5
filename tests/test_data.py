"""data.py: the sprites renderer, its variants, TFDS loading (mocked) and image folders."""
import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets import testing as tfds_testing  # not an attribute in TFDS 4.9.7

import data


@pytest.fixture(scope="module")
def sprites():
    return data.ground_truth_data("sprites")


def render(gt, *factors):
    return gt.sample_observations_from_factors(np.array(factors), np.random.default_rng(0))[..., 0]


def centroid(image):
    rows, cols = np.nonzero(image)
    return rows.mean(), cols.mean()


def test_factor_grid_is_dsprites_grid(sprites):
    assert sprites.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert sprites.factor_sizes == (3, 6, 40, 32, 32)
    assert np.prod(sprites.factor_sizes) == 737_280
    factors = sprites.sample_factors(5000, np.random.default_rng(1))
    assert factors.shape == (5000, 5)
    assert (factors.min(axis=0) == 0).all()
    assert (factors.max(axis=0) == np.array(sprites.factor_sizes) - 1).all()


def test_observations_are_binary_64px_and_deterministic(sprites):
    factors = sprites.sample_factors(64, np.random.default_rng(2))
    a = sprites.sample_observations_from_factors(factors, np.random.default_rng(3))
    b = sprites.sample_observations_from_factors(factors, np.random.default_rng(4))
    assert a.shape == (64, 64, 64, 1) and a.dtype == np.float32
    assert set(np.unique(a)) == {0.0, 1.0}
    np.testing.assert_array_equal(a, b)
    assert (a.sum(axis=(1, 2, 3)) > 0).all()  # every sprite is visible


def test_shapes_differ_and_scale_grows_area(sprites):
    square, ellipse, heart = render(sprites, [0, 5, 0, 16, 16], [1, 5, 0, 16, 16], [2, 5, 0, 16, 16])
    assert (square != ellipse).sum() > 20
    assert (square != heart).sum() > 20
    assert (ellipse != heart).sum() > 20
    areas = render(sprites, *[[2, s, 0, 16, 16] for s in range(6)]).sum(axis=(1, 2))
    assert (np.diff(areas) > 0).all()


def test_position_shifts_the_sprite_by_whole_pixels(sprites):
    base, right, down = render(sprites, [2, 3, 7, 10, 10], [2, 3, 7, 11, 10], [2, 3, 7, 10, 11])
    np.testing.assert_array_equal(np.roll(base, 1, axis=1), right)
    np.testing.assert_array_equal(np.roll(base, 1, axis=0), down)
    far = render(sprites, [2, 3, 7, 31, 31])[0]
    r0, c0 = centroid(base)
    r1, c1 = centroid(far)
    assert c1 - c0 == pytest.approx(21.0) and r1 - r0 == pytest.approx(21.0)


def test_orientation_turns_the_ellipse(sprites):
    # orientation 0: the ellipse lies along x; index 10 of linspace(0, 2 pi, 40) is ~92 deg.
    flat, upright = render(sprites, [1, 5, 0, 16, 16], [1, 5, 10, 16, 16])
    for image, wide in ((flat, True), (upright, False)):
        rows, cols = np.nonzero(image)
        assert (cols.var() > 2 * rows.var()) == wide
    first, last = render(sprites, [0, 5, 0, 16, 16], [0, 5, 39, 16, 16])
    np.testing.assert_array_equal(first, last)  # 0 and 2 pi, as in dSprites


def test_color_variant_colours_only_the_sprite():
    gt = data.ground_truth_data("color_sprites")
    factors = gt.sample_factors(32, np.random.default_rng(0))
    images = gt.sample_observations_from_factors(factors, np.random.default_rng(1))
    mask = data.ground_truth_data("sprites").sample_observations_from_factors(factors, None) > 0
    assert images.shape == (32, 64, 64, 3)
    assert (images[~mask[..., 0]] == 0).all()
    for image, m in zip(images, mask[..., 0]):
        colours = np.unique(image[m], axis=0)
        assert len(colours) == 1
        np.testing.assert_allclose(colours[0] * 7, np.round(colours[0] * 7), atol=1e-6)


def test_noisy_variant_keeps_sprite_white_and_background_uniform():
    gt = data.ground_truth_data("noisy_sprites")
    factors = gt.sample_factors(16, np.random.default_rng(0))
    images = gt.sample_observations_from_factors(factors, np.random.default_rng(1))
    mask = data.ground_truth_data("sprites").sample_observations_from_factors(factors, None)[..., 0] > 0
    assert (images[mask] == 1.0).all()
    background = images[~mask]
    assert 0.0 <= background.min() and background.max() < 1.0
    assert background.mean() == pytest.approx(0.5, abs=0.01)


def test_scream_variant_inverts_the_painting_under_the_sprite(tmp_path, capsys):
    painting = np.tile(np.linspace(0, 255, 400, dtype=np.uint8)[None, :, None], (300, 1, 3))
    path = str(tmp_path / "painting.png")
    tf.io.write_file(path, tf.io.encode_png(painting))
    gt = data.ground_truth_data("scream_sprites", painting=path)
    assert "procedural" not in capsys.readouterr().out
    factors = np.array([[0, 5, 0, 16, 16]])
    image = gt.sample_observations_from_factors(factors, np.random.default_rng(0))[0]
    mask = data.ground_truth_data("sprites").sample_observations_from_factors(factors, None)[0, ..., 0] > 0
    # Each row of this painting is one gradient, so a pixel under the sprite equals one minus
    # the background pixel in the same column just above the sprite.
    rows, cols = np.nonzero(mask)
    above = image[rows.min() - 1, cols]
    np.testing.assert_allclose(image[rows.min(), cols], 1.0 - above, atol=0.02)
    data.ground_truth_data("scream_sprites")
    assert "procedural texture" in capsys.readouterr().out


def write_png(path, pixels):
    tf.io.write_file(str(path), tf.io.encode_png(pixels))
    return str(path)


@pytest.mark.parametrize("height,width,expected", [
    (500, 300, (274, 164)),  # portrait, like The Scream: 274 * 0.6 = 164.4 wide
    (400, 1000, (140, 350)),  # wide: 350 / 2.5 = 140 high
    (100, 80, (100, 80)),  # small: never enlarged
])
def test_painting_is_shrunk_to_fit_keeping_its_aspect(tmp_path, height, width, expected):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    painting = data.load_painting(write_png(tmp_path / "painting.png", pixels))
    assert painting.shape == expected + (3,)
    if expected == (height, width):
        np.testing.assert_allclose(painting, pixels / 255.0, atol=1e-6)
    gt = data.ground_truth_data("scream_sprites", painting=str(tmp_path / "painting.png"))
    assert gt.sample(4, rng)[1].shape == (4, 64, 64, 3)


def test_thumbnail_size_is_pils():
    image = pytest.importorskip("PIL.Image")
    for size in [(300, 500), (1000, 400), (400, 300), (3661, 4582), (351, 1), (80, 100)]:
        thumbnail = image.new("RGB", size)
        thumbnail.thumbnail(data.PAINTING_BOX)
        assert data.thumbnail_size(*size) == thumbnail.size, size


def test_unreadable_painting_is_named_in_words(tmp_path):
    (tmp_path / "scream.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(data.DataError) as raised:
        data.load_painting(str(tmp_path / "scream.jpg"))
    message = str(raised.value)
    assert message == (f"--painting {tmp_path / 'scream.jpg'} is not a readable image "
                       "(not a PNG, JPEG, GIF or BMP file)")
    with pytest.raises(data.DataError, match="missing.png does not exist"):
        data.load_painting(str(tmp_path / "missing.png"))
    tiny = write_png(tmp_path / "tiny.png", np.zeros((60, 300, 3), np.uint8))
    with pytest.raises(data.DataError, match="too small: 300 x 60"):
        data.load_painting(tiny)


def test_make_dataset_yields_batches_in_unit_range():
    batch = next(iter(data.make_dataset("noisy_sprites", 32, 8, seed=3)))
    assert batch.shape == (8, 32, 32, 3) and batch.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(batch)) and float(tf.reduce_max(batch)) <= 1.0
    again = next(iter(data.make_dataset("noisy_sprites", 32, 8, seed=3)))
    np.testing.assert_array_equal(batch, again)


def test_unknown_dataset_is_refused():
    with pytest.raises(data.DataError, match="unknown dataset mnist"):
        data.make_dataset("mnist", 64, 8)


MOCK = dict(num_examples=12, policy=tfds_testing.MockPolicy.USE_CODE)


@pytest.fixture
def online(monkeypatch):
    """Mocked TFDS datasets are never prepared: let data.py's download check pass."""
    monkeypatch.setattr(data, "download_blocker", lambda builder: None)


@pytest.fixture
def fresh_dsprites_cache():
    data.load_dsprites_images.cache_clear()
    yield
    data.load_dsprites_images.cache_clear()


def test_tfds_dsprites_is_indexed_by_its_labels(online, fresh_dsprites_cache):
    with tfds_testing.mock_data(**MOCK):
        gt = data.ground_truth_data("dsprites")
        examples = list(tfds.as_numpy(tfds.load("dsprites", split="train")))
        batch = next(iter(data.make_dataset("dsprites", 64, 4)))
    keys = ["label_shape", "label_scale", "label_orientation", "label_x_position", "label_y_position"]
    expected = {tuple(int(e[k]) for k in keys): e["image"][..., 0] for e in examples}
    factors = np.array(list(expected))
    images = gt.sample_observations_from_factors(factors, None)[..., 0]
    for image, factor in zip(images, expected):
        np.testing.assert_array_equal(image, expected[factor])
    assert batch.shape == (4, 64, 64, 1)


@pytest.mark.parametrize("name", ["celeba", "celeba_hq"])
def test_tfds_natural_images_load_through_tfds(name, online):
    with tfds_testing.mock_data(**MOCK):
        batch = next(iter(data.make_dataset(name, 32, 4)))
    assert batch.shape == (4, 32, 32, 3)
    assert 0.0 <= float(tf.reduce_min(batch)) and float(tf.reduce_max(batch)) <= 1.0


def test_tfds_cars_read_their_boxes_and_drop_small_ones(online):
    # TFDS' own mock cannot give the images undecoded (tfds.decode.SkipDecoding) with its
    # random boxes (min > max): our examples under cars196's feature names, every box
    # under 64 px a side.
    assert {"image", "bbox"} <= set(tfds.builder("cars196").info.features)
    small, box = car(True, box_width=200, box_height=50)
    with fake_tfds(dict.fromkeys(("train", "test"), {"image": [small], "bbox": [box]})):
        with pytest.raises(StopIteration):  # all dropped: the stream ends, it does not hang
            next(iter(data.make_dataset("cars", 32, 4)))


def write_images(folder, count, size=(40, 50)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(pixels))


def test_image_folder_skips_a_corrupt_file(tmp_path):
    write_images(tmp_path / "faces", 3)
    (tmp_path / "faces" / "broken.jpg").write_bytes(b"not a jpeg at all")
    batches = data.make_dataset("chairs", 32, 2, data_dir=str(tmp_path / "faces"))
    seen = [b for _, b in zip(range(6), batches)]  # 12 images: every readable one, repeatedly
    assert all(b.shape == (2, 32, 32, 3) for b in seen)


def test_image_folder_without_images_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="is empty"):
        data.make_dataset("chairs", 32, 2, data_dir=str(tmp_path / "empty"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("hello")
    with pytest.raises(data.DataError, match="no image files"):
        data.make_dataset("chairs", 32, 2, data_dir=str(tmp_path / "text"))
    with pytest.raises(data.DataError, match="does not exist"):
        data.make_dataset("chairs", 32, 2, data_dir=str(tmp_path / "missing"))


def test_folder_of_only_corrupt_images_ends_instead_of_hanging(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"garbage")
    with pytest.raises(StopIteration):
        next(iter(data.make_dataset("chairs", 32, 2, data_dir=str(tmp_path / "bad"))))


# --- dSprites' npz: loaded once, not copied ---------------------------------------------


def test_dsprites_npz_is_loaded_once_without_a_copy(tmp_path, fresh_dsprites_cache):
    images = np.random.default_rng(0).integers(0, 2, (2000, 64, 64), dtype=np.uint8)  # 8 MB
    np.savez(tmp_path / data.DSPRITES_NPZ, imgs=images)
    tracemalloc.start()  # numpy reports its array buffers to tracemalloc
    loaded = data.load_dsprites_images(str(tmp_path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Reading the archive needs one array of images.nbytes; a copy would need a second.
    assert peak < 1.5 * images.nbytes
    np.testing.assert_array_equal(loaded, images)
    assert loaded.dtype == np.uint8 and not loaded.flags.writeable
    assert data.load_dsprites_images(str(tmp_path)) is loaded


def test_dsprites_npz_without_images_is_refused(tmp_path, fresh_dsprites_cache):
    np.savez(tmp_path / data.DSPRITES_NPZ, latents=np.zeros(3))
    with pytest.raises(data.DataError, match="has no 'imgs' array"):
        data.load_dsprites_images(str(tmp_path))
    (tmp_path / data.DSPRITES_NPZ).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(data.DataError, match="is not a readable npz file"):
        data.load_dsprites_images(str(tmp_path))


# --- TFDS: the real builders, splits, boxes, and failing fast offline ------------------


TFDS_DATASETS = sorted({"dsprites", *data.TFDS_NAMES.values()})


@pytest.mark.parametrize("name", TFDS_DATASETS)
def test_tfds_builders_know_where_to_download_from(name):
    # The real tfds.builder path, as a fresh install takes it: url_infos needs
    # importlib_resources, which etils imports without declaring it (requirements.txt).
    builder = tfds.builder(name + "/64" if name == "celeb_a_hq" else name)
    assert "image" in builder.info.features
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:  # celeb_a_hq: no URLs, a manual download
        assert name == "celeb_a_hq" and not builder.url_infos
    else:
        urls = list(builder.url_infos)
        assert urls and all(url.startswith(("http://", "https://")) for url in urls)


def fake_tfds(splits, generated=None):
    """TFDS mocked with our own examples per split; "a+b" reads a then b, as TFDS does.
    Images are held as files' bytes (an array as PNG) and decoded as TFDS' Image feature
    does (tf.image.decode_image), unless the decoders skip it (tfds.decode.SkipDecoding).
    `generated` counts the examples produced, to see when images are made."""
    def as_dataset(builder, split, decoders=None, read_config=None, shuffle_files=False):
        examples = [splits[name] for name in split.split("+")]  # KeyError: no such split
        merged = {k: [e for part in examples for e in part[k]] for k in examples[0]}
        merged["image"] = [image if isinstance(image, bytes) else tf.io.encode_png(image).numpy()
                           for image in merged["image"]]

        def generate():
            for i in range(len(merged["image"])):
                if generated is not None:
                    generated.append(i)
                yield {k: v[i] for k, v in merged.items()}

        signature = {k: tf.TensorSpec(np.shape(v[0]) if k == "bbox" else (),
                                      tf.float32 if k == "bbox" else tf.string)
                     for k, v in merged.items()}
        examples = tf.data.Dataset.from_generator(generate, output_signature=signature)
        if isinstance((decoders or {}).get("image"), tfds.decode.SkipDecoding):
            return examples
        return examples.map(lambda example: dict(example, image=tf.io.decode_image(
            example["image"], channels=3, expand_animations=False)))
    return tfds_testing.mock_data(as_dataset_fn=as_dataset)


def constant_images(count, value, shape=(218, 178, 3)):
    return {"image": [np.full(shape, value, np.uint8)] * count}


def test_celeba_uses_every_split_and_building_decodes_nothing(online):
    generated = []
    splits = {"train": constant_images(3, 10), "validation": constant_images(3, 100),
              "test": constant_images(3, 200)}
    with fake_tfds(splits, generated):
        batches = data.make_dataset("celeba", 16, 9)
        assert not generated  # building the stream made no image
        batch = next(iter(batches))
    values = np.round(np.asarray(batch).mean(axis=(1, 2, 3)) * 255)
    assert sorted(values) == [10] * 3 + [100] * 3 + [200] * 3  # one pass: every split


def car(ramp_up, box_width=280, box_height=80):
    """A 120 x 300 image whose box (20 px down, 10 px in) holds a left-right ramp."""
    image = np.zeros((120, 300, 3), np.uint8)
    ramp = (np.arange(box_width) + 0.5) / box_width * 255
    image[20:20 + box_height, 10:10 + box_width] = np.round(ramp if ramp_up else ramp[::-1])[
        None, :, None]
    box = np.array([20, 10, 20 + box_height, 10 + box_width], np.float32) / [120, 300, 120, 300]
    return image, box.astype(np.float32)


def test_cars_squash_the_whole_box_and_use_train_and_test(online):
    (up, up_box), (down, down_box) = car(True), car(False)
    small, small_box = car(True, box_width=200, box_height=50)  # under 64 px high: dropped
    splits = {"train": {"image": [up, small], "bbox": [up_box, small_box]},
              "test": {"image": [down], "bbox": [down_box]}}
    with fake_tfds(splits):
        batches = data.make_dataset("cars", 32, 2)
        images = np.concatenate([b for _, b in zip(range(3), batches)])  # three passes
    # The whole 280 x 80 box squashed to 32 x 32: column j shows the ramp at (j + 0.5) / 32,
    # from one end of the car to the other (a central square would span 0.36 .. 0.64 only).
    expected = (np.arange(32) + 0.5) / 32
    directions = []
    for image in images:
        profile = image.mean(axis=(0, 2))
        directions.append(profile[-1] > profile[0])
        target = expected if directions[-1] else expected[::-1]
        np.testing.assert_allclose(profile[2:-2], target[2:-2], atol=0.01)
        assert np.ptp(image, axis=0).max() < 0.01  # rows alike: the box's black margins are gone
    assert directions.count(True) == 3 and directions.count(False) == 3  # train's and test's


def test_first_line_of_an_error():
    assert data.first_line(OSError("no route\nto host")) == "no route"
    assert data.first_line(TimeoutError()) == "TimeoutError"
    assert data.first_line(ValueError("  ")) == "ValueError"


def refuse(address, timeout=None):
    raise socket.gaierror(-3, "Temporary failure in name resolution")


def test_offline_tfds_download_fails_in_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(data.socket, "create_connection", refuse)
    (tmp_path / "celeb_a").mkdir()  # a TFDS data_dir with nothing prepared in it
    began = time.monotonic()
    with pytest.raises(data.DataError) as raised:
        data.make_dataset("celeba", 64, 8, data_dir=str(tmp_path))
    assert time.monotonic() - began < 10  # TFDS' own retries take minutes
    message = str(raised.value)
    assert "\n" not in message
    for words in [f"TFDS has nothing prepared for celeb_a in {tmp_path}",
                  "the download cannot start (cannot connect to drive.google.com:443: "
                  "[Errno -3] Temporary failure in name resolution)",
                  "--data_dir= a prepared TFDS data_dir (holding celeb_a/...)",
                  "--data_dir= a folder of images such as img_align_celeba"]:
        assert words in message


def test_hanging_download_check_gives_up_at_its_deadline(tmp_path, monkeypatch):
    def hang(*args, **kwargs):  # a name lookup with no DNS answer can take this long
        time.sleep(10)
        raise TimeoutError()

    monkeypatch.setattr(data.socket, "create_connection", hang)
    monkeypatch.setattr(data, "DOWNLOAD_PROBE_SECONDS", 1.0)
    (tmp_path / "cars196").mkdir()
    began = time.monotonic()
    with pytest.raises(data.DataError, match="ai.stanford.edu:.*no answer within 1 s"):
        data.make_dataset("cars", 64, 8, data_dir=str(tmp_path))
    assert time.monotonic() - began < 5


def test_offline_dsprites_and_manual_celeba_hq_say_how_to_get_them(
        tmp_path, monkeypatch, fresh_dsprites_cache):
    monkeypatch.setattr(data.socket, "create_connection", refuse)
    with pytest.raises(data.DataError, match=f"start.*github.com.*holding {data.DSPRITES_NPZ}"):
        data.ground_truth_data("dsprites", data_dir=str(tmp_path))
    (tmp_path / "celeb_a_hq").mkdir()
    manual = tmp_path / "downloads" / "manual"
    began = time.monotonic()
    with pytest.raises(data.DataError) as raised:  # TFDS' own check, no probe: no hosts
        data.make_dataset("celeba_hq", 64, 8, data_dir=str(tmp_path))
    assert time.monotonic() - began < 10
    message = str(raised.value)
    assert "\n" not in message
    for words in [f"Manual directory {manual} does not exist or is empty",
                  "--data_dir= a prepared TFDS data_dir (holding celeb_a_hq/...) or "
                  "--data_dir= a folder of images"]:
        assert words in message


# --- Memory: the natural-image stream holds small images, not decoded originals ---------

SIDE, COUNT = 1500, 40
PEAK_SCRIPT = f"""
import os, sys
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])  # tf.data parallelism <= 2
import tensorflow as tf
from tensorflow_datasets import testing as tfds_testing
import data

def originals(builder, split, decoders=None, read_config=None, shuffle_files=False):
    index = tf.data.Dataset.range({COUNT})  # the files' bytes: data.py decodes them itself
    return index.map(lambda i: {{"image": tf.io.encode_png(
        tf.fill([{SIDE}, {SIDE}, 3], tf.cast(i, tf.uint8)))}})

def memory_kib(field):  # this process's own (not its parent's, as ru_maxrss may be) RSS
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith(field)))

data.download_blocker = lambda builder: None
if sys.argv[1] == "tfds":
    with tfds_testing.mock_data(as_dataset_fn=originals):
        batches = data.make_dataset("celeba_hq", 32, 8)
else:
    batches = data.make_dataset("chairs", 32, 8, data_dir=sys.argv[1])
with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")  # restart the peak (VmHWM) from the current RSS
before = memory_kib("VmRSS:")
for _, batch in zip(range(6), batches):  # more than a pass
    assert batch.shape == (8, 32, 32, 3)
print(memory_kib("VmHWM:") - before)
"""


def test_shuffle_buffer_holds_at_most_a_gib_of_training_images():
    assert data.shuffle_buffer_size(64) == 10_000  # 10,000 * 64 * 64 * 3 * 4 B = 0.49 GB
    assert data.shuffle_buffer_size(256) == 2**30 // (256 * 256 * 3 * 4) == 1365
    assert data.shuffle_buffer_size(1024) == 85  # not 10,000 images of 12.6 MB


@pytest.fixture(scope="module")
def large_pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("large")
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    for i in range(COUNT):  # smooth pictures: quick to encode and decode
        pixels = np.stack([(cols + i) % 256, (2 * rows) % 256, np.full_like(rows, 5 * i)], -1)
        write_png(folder / f"{i}.png", pixels.astype(np.uint8))
    return str(folder)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux /proc only")
@pytest.mark.parametrize("source", ["tfds", "folder"])
def test_pulling_batches_of_large_images_keeps_memory_bounded(source, large_pngs):
    # A pass of decoded originals is COUNT * SIDE^2 * 3 bytes = 270 MB; shuffling them before
    # resizing (a 10,000-image buffer) holds all of them at once. Resized to 32 px they are
    # 12 KB each, and with two CPUs only a few originals are in flight. Bound: peak RSS grows
    # by less than half a pass of originals.
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, large_pngs if source == "folder" else "tfds"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    growth = int(result.stdout.split()[-1]) * 1024
    assert growth < 0.5 * COUNT * SIDE * SIDE * 3, f"peak RSS grew by {growth / 1e6:.0f} MB"


# --- The GAN's flip and dequantisation noise ---------------------------------------------


def pull(batches, count):
    return np.concatenate([b for _, b in zip(range(count), batches)])


def test_augment_flips_half_the_images_and_adds_noise_under_1_over_256(tmp_path):
    write_images(tmp_path / "faces", 64, size=(32, 32))
    folder = str(tmp_path / "faces")
    plain = pull(data.make_dataset("celeba", 32, 16, data_dir=folder, seed=5), 8)  # two passes
    noisy = pull(data.make_dataset("celeba", 32, 16, data_dir=folder, seed=5, augment=True), 8)
    flipped = []
    for image, original in zip(noisy, plain):
        as_is, mirrored = image - original, image - original[:, ::-1]
        noise = mirrored if np.abs(mirrored).max() < np.abs(as_is).max() else as_is
        flipped.append(noise is mirrored)
        # U(0, 1/256) on [0, 1] is the authors' U(0, 1/128) on [-1, 1]; float32 rounding aside
        assert noise.min() >= -1e-6 and noise.max() < 1 / 256 + 1e-6
        assert noise.mean() == pytest.approx(1 / 512, rel=0.1)  # 3,072 uniform draws
    assert 40 <= sum(flipped) <= 88  # of 128 fair coins: 64 +- 4 standard deviations
    again = pull(data.make_dataset("celeba", 32, 16, data_dir=folder, seed=5, augment=True), 8)
    np.testing.assert_array_equal(noisy, again)


# --- Natural images are 8-bit, as the authors' preprocessed files -------------------------
# Their data/preprocess.py crops, resizes with PIL's Lanczos and saves 8-bit files (.jpg at
# PIL's default quality for CelebA and Cars, .png for Chairs); gan_training/inputs.py reads
# those, flips, maps to [-1, 1] and adds U(0, 1/128).


def centre_square(image, largest):
    height, width = image.shape[:2]
    size = min(height, width, largest)
    top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


def authors_8bit(name, crop, res):
    """What the authors' file of `crop` holds, as float32 in [0, 1], and the resize before
    rounding. Written here, not with data.py: tf.image's antialiased Lanczos, the nearest
    8-bit value, and for CelebA and Cars PIL's own JPEG encoder and decoder."""
    resized = np.clip(tf.image.resize(crop, (res, res), "lanczos3", antialias=True), 0, 255)
    pixels = np.round(resized).astype(np.uint8)
    if name in ("celeba", "cars"):
        pixels = pil_jpeg_round_trip(pixels)
    return pixels.astype(np.float32) / 255, resized / 255


def pil_jpeg_round_trip(pixels, decode=None):
    """PIL's JPEG of pixels at its default quality (75), the authors' file, decoded by PIL
    or by decode(the file's bytes)."""
    pil = pytest.importorskip("PIL.Image")
    encoded = io.BytesIO()
    pil.fromarray(pixels).save(encoded, format="JPEG")
    return decode(encoded.getvalue()) if decode else np.asarray(pil.open(encoded))


NATURAL_SOURCES = ["celeba-tfds", "celeba_hq-tfds", "cars-tfds", "chairs-folder",
                   "celeba-folder", "cars-folder"]


def natural_source(source, folder):
    """(name, data_dir, a context to pull the stream in, the authors' crops) for four random
    images of `source`: TFDS (mocked) or a folder of PNG files."""
    name, where = source.split("-")
    shape = {"celeba": (218, 178), "celeba_hq": (48, 48), "cars": (100, 130),
             "chairs": (60, 50)}[name] + (3,)
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(4)]
    if name != "cars":
        crops = [centre_square(image, {"celeba": 160, "chairs": 450}.get(name, max(shape)))
                 for image in images]
    else:  # TFDS: the 80 x 100 box at (10, 15); a folder holds cropped cars already
        crops = [image[10:90, 15:115] for image in images] if where == "tfds" else images
    if where == "folder":
        folder.mkdir()
        for i, image in enumerate(images):
            write_png(folder / f"{i}.png", image)
        return name, str(folder), contextlib.nullcontext(), crops
    examples = [{"image": image} for image in images]
    if name == "cars":
        box = np.array([10 / 100, 15 / 130, 90 / 100, 115 / 130], np.float32)
        examples = [dict(example, bbox=box) for example in examples]
    parts = {"celeba": {"train": examples[:2], "validation": examples[2:3],
                        "test": examples[3:]},
             "celeba_hq": {"train": examples},
             "cars": {"train": examples[:2], "test": examples[2:]}}[name]
    splits = {split: {k: [e[k] for e in part] for k in part[0]} for split, part in parts.items()}
    return name, None, fake_tfds(splits), crops


def nearest(image, candidates):
    return int(np.argmin([np.abs(image - c).max() for c in candidates]))


@pytest.mark.parametrize("source", NATURAL_SOURCES)
def test_natural_images_are_the_authors_8bit_values_and_noise_is_their_only_rest(
        source, tmp_path, online):
    res = 32
    name, data_dir, mocked, crops = natural_source(source, tmp_path / "images")
    expected, unrounded = zip(*(authors_8bit(name, crop, res) for crop in crops))
    with mocked:
        plain = pull(data.make_dataset(name, res, 4, data_dir=data_dir, seed=1), 1)
        noisy = pull(data.make_dataset(name, res, 4, data_dir=data_dir, seed=1, augment=True), 1)
    np.testing.assert_allclose(plain * 255, np.round(plain * 255), rtol=0, atol=1e-4)
    order = [nearest(image, expected) for image in plain]
    assert sorted(order) == [0, 1, 2, 3]  # one pass: every image once
    for image, i in zip(plain, order):
        np.testing.assert_allclose(image, expected[i], rtol=0, atol=1e-7)
        if name not in ("celeba", "cars"):  # no JPEG: the nearest 8-bit value of the resize
            assert np.abs(image - unrounded[i]).max() <= 0.5 / 255 + 1e-6
    # Augmented: the authors' x * 2 - 1 + U(0, 1/128), x the 8-bit image or its mirror.
    candidates = [c for e in expected for c in (e, e[:, ::-1])]
    matched = []
    for image in noisy:
        matched.append(np.argmin([np.abs(image - c - 1 / 512).max() for c in candidates]))
        noise = (image * 2 - 1) - (candidates[matched[-1]] * 2 - 1)
        assert noise.min() >= -1e-6 and noise.max() < 1 / 128 + 1e-6
        assert noise.mean() == pytest.approx(1 / 256, rel=0.1)  # 3,072 uniform draws
    assert sorted(i // 2 for i in matched) == [0, 1, 2, 3]


# --- JPEGs are decoded as PIL decodes them (libjpeg's accurate integer DCT) --------------


@pytest.fixture(scope="module")
def textured_jpeg(tmp_path_factory):
    """A 64 x 64 JPEG PIL wrote at quality 75 from gradients plus noise, and PIL's decode."""
    pil = pytest.importorskip("PIL.Image")
    rows, cols = np.mgrid[0:64, 0:64]
    noise = np.random.default_rng(3).integers(-40, 41, (64, 64, 3))
    pixels = np.stack([4 * cols, 4 * rows, 2 * (rows + cols)], axis=-1) + noise
    path = tmp_path_factory.mktemp("jpeg") / "face.jpg"
    pil.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=75)
    return path, np.asarray(pil.open(path))


@pytest.mark.parametrize("source", ["painting", "chairs-folder", "celeba-folder",
                                    "celeba_hq-tfds", "cars-tfds"])
def test_jpegs_are_decoded_as_pil_decodes_them(source, textured_jpeg, tmp_path, online):
    # At 64 px no crop or resize changes the image: what data.py gives is the decode, and
    # for CelebA and Cars the authors' JPEG round trip of it.
    path, decoded = textured_jpeg
    fast_decode = lambda encoded: tf.io.decode_jpeg(encoded).numpy()  # noqa: E731 TF's default
    assert (fast_decode(path.read_bytes()) != decoded).any()  # the two DCTs differ here
    name, where = (source.split("-") + [None])[:2]
    expected = decoded
    if name in ("celeba", "cars"):  # either decode with the fast DCT would show
        expected = pil_jpeg_round_trip(decoded)
        assert (pil_jpeg_round_trip(fast_decode(path.read_bytes())) != expected).any()
        assert (pil_jpeg_round_trip(decoded, fast_decode) != expected).any()
    if name == "painting":
        image = data.load_painting(str(path))
    elif where == "folder":
        (tmp_path / "images").mkdir()
        (tmp_path / "images" / path.name).write_bytes(path.read_bytes())
        image = pull(data.make_dataset(name, 64, 1, data_dir=str(tmp_path / "images")), 1)[0]
    else:
        example = {"image": [path.read_bytes()]}
        if name == "cars":  # the box is the whole image
            example["bbox"] = [np.array([0, 0, 1, 1], np.float32)]
        splits = dict.fromkeys(("train", "test") if name == "cars" else ("train",), example)
        with fake_tfds(splits):
            image = pull(data.make_dataset(name, 64, 1), 1)[0]
    np.testing.assert_array_equal(np.round(image * 255).astype(np.uint8), expected)


# --- Resumed streams ---------------------------------------------------------------------


@pytest.mark.parametrize("name,res", [("sprites", 64), ("noisy_sprites", 32),
                                      ("color_sprites", 64)])
def test_resumed_sprites_stream_is_the_uninterrupted_one_from_batch_start(name, res):
    uninterrupted = pull(data.make_dataset(name, res, 4, seed=3), 6)
    resumed = pull(data.make_dataset(name, res, 4, seed=3, start=4), 2)
    np.testing.assert_array_equal(resumed, uninterrupted[4 * 4:])  # batches 4 and 5
    assert not np.array_equal(resumed, uninterrupted[:2 * 4])


@pytest.fixture
def one_pass(tmp_path):
    """The first shuffle of a folder of 8 images, in 2 batches of 4, for (seed, start)."""
    write_images(tmp_path / "chairs", 8, size=(16, 16))
    return lambda seed, start, augment=False: pull(data.make_dataset(
        "chairs", 16, 4, data_dir=str(tmp_path / "chairs"), seed=seed, start=start,
        augment=augment), 2)


def test_resumed_natural_stream_is_a_fresh_shuffle_of_the_same_images(one_pass):
    uninterrupted, resumed = one_pass(5, 0), one_pass(5, 3)
    assert sorted(x.tobytes() for x in resumed) == sorted(x.tobytes() for x in uninterrupted)
    assert not np.array_equal(resumed, uninterrupted)  # the same images in another order
    np.testing.assert_array_equal(resumed, one_pass(5, 3))  # a function of (seed, start)
    np.testing.assert_array_equal(one_pass(5, 3, augment=True), one_pass(5, 3, augment=True))


def test_natural_shuffle_is_keyed_by_the_pair_seed_start(one_pass):
    # Keyed by seed + start, seed 0 resumed at step 3 replayed seed 3's run from step 0.
    assert not np.array_equal(one_pass(0, 3), one_pass(3, 0))
    assert not np.array_equal(one_pass(1, 2), one_pass(2, 1))


def test_augment_leaves_the_sprites_family_alone():
    for name in ("sprites", "noisy_sprites"):
        plain = next(iter(data.make_dataset(name, 64, 8, seed=2)))
        np.testing.assert_array_equal(
            plain, next(iter(data.make_dataset(name, 64, 8, seed=2, augment=True))))


def test_training_streams_run_without_tf_data_autotuning():
    # With the autotuner on, a fit() call can train at one core's speed
    # (data.without_autotuning); every stream the scripts train on has it off.
    for name in ("sprites", "color_sprites"):
        assert data.make_dataset(name, 32, 4).options().autotune.enabled is False
