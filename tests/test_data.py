"""data.py: the sprites renderer, its variants, TFDS loading (mocked) and image folders."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

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


def test_make_dataset_yields_batches_in_unit_range():
    batch = next(iter(data.make_dataset("noisy_sprites", 32, 8, seed=3)))
    assert batch.shape == (8, 32, 32, 3) and batch.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(batch)) and float(tf.reduce_max(batch)) <= 1.0
    again = next(iter(data.make_dataset("noisy_sprites", 32, 8, seed=3)))
    np.testing.assert_array_equal(batch, again)


def test_unknown_dataset_is_refused():
    with pytest.raises(data.DataError, match="unknown dataset mnist"):
        data.make_dataset("mnist", 64, 8)


MOCK = dict(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE)


def test_tfds_dsprites_is_indexed_by_its_labels():
    with tfds.testing.mock_data(**MOCK):
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


def test_tfds_celeb_a_is_cropped_and_resized():
    with tfds.testing.mock_data(**MOCK):
        batch = next(iter(data.make_dataset("celeba", 32, 4)))
    assert batch.shape == (4, 32, 32, 3)
    assert 0.0 <= float(tf.reduce_min(batch)) and float(tf.reduce_max(batch)) <= 1.0


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
