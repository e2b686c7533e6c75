"""Training a reader with a width rule at the widths it reads at (training/wide.py): the arrays
hold each image as the solver reads it, batches are of one width and never read the padding,
predictions are laid out as the solver's, and a generated set keeps its widths through the cache."""
import numpy as np
import pytest

from captchalens.contract import ModelMeta
from captchalens.preprocess import Preprocessor
from captchalens.solver import Solver
from captchalens.training import networks, wide
from captchalens.training.generate import GenSpec, cached, generate
from captchalens.training.render import RenderSpec
from captchalens.training.train import TrainConfig, dataset, encode_labels, make_meta


@pytest.fixture(scope="module")
def meta() -> ModelMeta:
    return make_meta(TrainConfig(arch="general", charset="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", length=3,
                                 max_length=6))


def _images(n=24, seed=11):
    images, texts = generate(RenderSpec(min_length=3, max_length=6), n, seed, workers=1, progress=False)
    return images, texts


def test_each_image_is_kept_as_the_solver_reads_it_at_its_rule_width(meta):
    images, _ = _images()
    pre = Preprocessor(meta)
    x, widths = pre.wide(images)
    rule = meta.width_rule
    assert x.shape[2] == rule["max"] and len(set(widths.tolist())) > 3  # the mix has many widths
    white = 255.0 * pre.scale + pre.offset
    for im, row, w in zip(images, x, widths):
        assert w == meta.input_width_for(im.shape[1], im.shape[0])
        alone = pre._batch(np.asarray(im)[None]).numpy()[0]  # what the solver reads
        np.testing.assert_array_equal(row[:, :w], alone)
        assert np.all(row[:, w:] == white)


def test_a_reader_without_a_rule_is_told_to_use_its_one_width():
    meta = make_meta(TrainConfig(arch="ctc", length=4, max_length=6))
    with pytest.raises(ValueError, match="no width rule"):
        Preprocessor(meta).wide([np.zeros((50, 150, 4), np.uint8)])


def test_batches_are_of_one_width_cropped_to_it_and_hold_every_image_once(meta):
    images, texts = _images(40)
    px, widths = Preprocessor(meta).wide(images)
    x = wide.WideImages(np.rint(px * 255).astype(np.uint8), widths)
    y = encode_labels(texts, meta)
    assert len({tuple(r) for r in y.tolist()}) == len(y)  # a batch's rows are found by their labels
    seen = []
    for xb, yb in dataset(x, y, 4, False, 0):
        xb, yb = xb.numpy(), yb.numpy()
        rows = [int(np.flatnonzero((y == r).all(1))[0]) for r in yb]
        assert {int(widths[r]) for r in rows} == {xb.shape[2]}  # one width, theirs: no padding read
        np.testing.assert_array_equal(xb, x.pixels[rows, :, :xb.shape[2]] / np.float32(255))
        seen += rows
    assert sorted(seen) == list(range(len(x)))  # not shuffled: every image once, partial batches too
    shuffled = [r for xb, yb in dataset(x, y, 4, True, 0) for r in yb.numpy().tolist()]
    assert len(shuffled) % 4 == 0 and len(shuffled) <= len(x)


def test_predictions_are_laid_out_as_the_solvers(meta, tmp_path):
    from captchalens._tf import keras
    from captchalens.training.train import save_model

    keras.utils.set_random_seed(2)
    model = networks.build("general", meta, width=0.25)
    path = save_model(model, meta, tmp_path / "m")
    images, _ = _images(12)
    px, widths = Preprocessor(meta).wide(images)
    x = wide.WideImages(np.clip(np.rint(px * 255), 0, 255).astype(np.uint8), widths)
    got = wide.predict(model, meta, x, batch=5)
    want = Solver(path).probs(images)  # the solver reads floats; these are stored as uint8
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=0.02)
    steps = [meta.steps_for(im.shape[1], im.shape[0]) for im in images]
    for row, p in zip(got, steps):
        assert np.all(row[p:, meta.blank_index] == 1.0)


def test_a_generated_set_keeps_its_widths_through_the_cache(meta, tmp_path):
    spec = GenSpec(charset=meta.charset, min_length=3, max_length=6, width=(100, 220), height=(40, 80))
    x, texts = cached(spec, 10, 3, meta, tmp_path, workers=1, progress=False)
    again, texts2 = cached(spec, 10, 3, meta, tmp_path, workers=1, progress=False)  # from the file
    assert isinstance(x, wide.WideImages) and isinstance(again, wide.WideImages)
    assert texts == texts2 and len(set(x.widths.tolist())) > 1
    np.testing.assert_array_equal(x.pixels, again.pixels)
    np.testing.assert_array_equal(x.widths, again.widths)
    both = wide.concat([x, again[::2]])
    assert len(both) == 15 and both.widths[10] == x.widths[0]
    with pytest.raises(TypeError, match="one width"):
        wide.concat([x, x.pixels])


def test_a_stretch_keeps_a_batch_of_one_width_on_the_rules_multiple_and_wide_enough_for_its_labels(meta):
    from captchalens._tf import tf
    from captchalens.training.augment import AugmentSpec, stretch

    spec = AugmentSpec(stretch=0.3, multiple=meta.width_rule["multiple"])
    x = tf.random.uniform([3, 48, 160, 1])
    y = tf.constant([[1, 2, 3, -1], [4, 5, -1, -1], [6, -1, -1, -1]])
    tf.random.set_seed(5)
    widths = {int(stretch(x, y, spec).shape[2]) for _ in range(40)}
    assert all(w % 8 == 0 and 112 <= w <= 208 for w in widths) and len(widths) > 5  # 160 +- 30 %
    narrow = tf.random.uniform([2, 48, 72, 1])  # 8 characters need 16 steps: 64 columns
    long_labels = tf.constant([[1] * 8, [2] * 8])
    assert min(int(stretch(narrow, long_labels, spec).shape[2]) for _ in range(40)) == 64
    # 0 (the default): no stretch, so fixed-width readers' inputs keep their shape
    from captchalens.training.augment import make_augment

    out, _ = make_augment()(x, y)
    assert out.shape == x.shape


def test_stretch_is_refused_without_augment_or_for_a_reader_of_one_width(tmp_path, capsys):
    from captchalens.cli import main

    for argv in (["--arch", "general", "--stretch", "0.1"], ["--arch", "ctc", "--augment", "--stretch", "0.1"],
                 ["--arch", "general", "--augment", "--stretch", "0.7"]):
        assert main(["train", "--out", str(tmp_path / "m"), *argv]) == 2
        assert "--stretch" in capsys.readouterr().err and not (tmp_path / "m").exists()
