"""The single-captcha fast path (TFLite, captchalens/tflite.py) gives the answers
the TensorFlow path gives, and a damaged fast file costs speed, not answers."""
from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from captchalens.contract import KERAS_FILE, ContractError, load_meta
from captchalens.tflite import TFLITE_FILE
from captchalens.solver import Solver
from captchalens.training.generate import GenSpec, generate
from support_tflite import copy_without_fast_path


def _captchas(meta, n, seed):
    lo, hi = meta.lengths
    spec = GenSpec(charset=meta.charset, min_length=lo, max_length=hi, width=(100, 220),
                   height=(50, 80), preferred=(160, 60), preferred_share=0.3)
    return generate(spec, n, seed, workers=1, progress=False)


def _one_by_one(solver, images):
    return np.concatenate([solver.probs([im]) for im in images])


def test_a_trained_model_is_saved_with_its_fast_path(tiny_model):
    meta = load_meta(tiny_model)
    assert meta.files["tflite"] == TFLITE_FILE and (tiny_model / TFLITE_FILE).is_file()
    assert Solver(tiny_model).fast is not None


def test_the_fast_path_matches_tensorflow_on_any_size(tiny_model):
    images, _ = _captchas(load_meta(tiny_model), 40, seed=71)
    assert len({im.shape for im in images}) > 10  # the interpreter is resized between sizes
    fast, slow = Solver(tiny_model), Solver(tiny_model, fast=False)
    assert slow.fast is None
    p_fast, p_slow = _one_by_one(fast, images), _one_by_one(slow, images)
    assert np.abs(p_fast - p_slow).max() < 1e-4


def test_the_shipped_model_answers_the_same_through_both_paths(default_model_dir):
    fast, slow = Solver(default_model_dir), Solver(default_model_dir, fast=False)
    assert fast.fast is not None, "the shipped model must carry its fast path (model.tflite)"
    images, texts = _captchas(fast.meta, 60, seed=72)
    a_fast = [fast.solve_pixels([im])[0] for im in images]
    a_slow = [slow.solve_pixels([im])[0] for im in images]
    assert [a.text for a in a_fast] == [a.text for a in a_slow]
    assert np.allclose([a.confidence for a in a_fast], [a.confidence for a in a_slow], atol=1e-5)
    assert sum(a.text == t for a, t in zip(a_fast, texts)) >= 57  # and they are right


def test_a_lone_image_through_tensorflow_answers_as_it_does_in_a_batch(tiny_model):
    # The TF path runs a lone image as a pair (oneDNN is ~30x slower at batch 1 on
    # some CPUs); its answer must be the one it gets among others of its size.
    meta = load_meta(tiny_model)
    spec = GenSpec(charset=meta.charset, min_length=meta.lengths[0], max_length=meta.lengths[1])
    images, _ = generate(spec, 6, 75, workers=1, progress=False)
    slow = Solver(tiny_model, fast=False)
    together = slow.probs(images)
    assert together.shape == (6, *meta.output_shape)
    assert np.abs(_one_by_one(slow, images) - together).max() < 1e-5


def test_a_damaged_fast_file_costs_speed_not_answers(tiny_model, tmp_path, capsys):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    (model / TFLITE_FILE).write_bytes(b"not a flatbuffer")
    images, _ = _captchas(load_meta(model), 5, seed=73)
    solver = Solver(model)
    err = capsys.readouterr().err
    assert solver.fast is None
    assert str(model / TFLITE_FILE) in err and "TensorFlow instead" in err
    expected = _one_by_one(Solver(tiny_model, fast=False), images)
    assert np.abs(_one_by_one(solver, images) - expected).max() < 1e-6


def test_a_missing_fast_file_is_named_and_tensorflow_answers(tiny_model, tmp_path, capsys):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    (model / TFLITE_FILE).unlink()
    solver = Solver(model)
    assert solver.fast is None and str(model / TFLITE_FILE) in capsys.readouterr().err
    images, _ = _captchas(load_meta(model), 2, seed=74)
    assert solver.solve_pixels(images[:1])[0].text


def test_a_model_from_before_the_fast_path_still_solves(tiny_model, tmp_path, capsys):
    model = copy_without_fast_path(tiny_model, tmp_path / "m")
    solver = Solver(model)
    assert solver.fast is None and capsys.readouterr().err == ""  # nothing to complain about
    images, _ = _captchas(load_meta(model), 2, seed=75)
    assert len(solver.solve_pixels(images)) == 2


def test_threads_sharing_one_solver_get_their_own_answers(tiny_model):
    solver = Solver(tiny_model)
    images, _ = _captchas(solver.meta, 24, seed=76)
    expected = _one_by_one(solver, images)
    got = [None] * len(images)

    def work(k):
        for i in range(k, len(images), 4):
            got[i] = solver.probs([images[i]])[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(np.stack(got), expected)


def test_the_fast_path_does_not_replace_the_weights_file(tiny_model, tmp_path):

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    (model / KERAS_FILE).unlink()
    with pytest.raises(ContractError, match="no weights file"):
        Solver(model)
