"""A site's alphabet in the Python solver (the contract cases hold alphabet.py and engine.js to
the same characters): one call may read each image with its own alphabet, as the host's
micro-batches do, and a restricted answer never holds a character outside it."""
import numpy as np
import pytest

from captchalens.alphabet import read_with
from captchalens.decode import decode, restrict
from captchalens.solver import Solver
from captchalens.training.generate import GenSpec, generate


@pytest.fixture(scope="module")
def solver(random_model):
    return Solver(random_model)


def test_each_image_may_have_its_own_alphabet_in_one_call(solver):
    images, _ = generate(GenSpec(), 6, seed=12, workers=1, progress=False)
    alphabets = [None, "12", "xy", None, "12", "Q"]  # "Q": no character of 0-9a-z, read whole
    together = solver.solve_images(images, alphabets)
    alone = [solver.solve_images([im], a)[0] for im, a in zip(images, alphabets)]
    # the same texts; confidences as a batch and one at a time (the TFLite fast path) agree closely
    assert [t for t, _ in together] == [t for t, _ in alone]
    np.testing.assert_allclose([c for _, c in together], [c for _, c in alone], rtol=1e-3)
    for (text, _), a in zip(together, alphabets):
        assert set(text) <= set(read_with(solver.meta.charset, a) if a else solver.meta.charset)
    assert together[1][0].isdigit() and together[2][0].isalpha()
    assert together[5][0] == solver.solve_images([images[5]])[0][0]
    with pytest.raises(ValueError, match="6 images but 2 alphabets"):
        solver.solve_images(images, ["1", "2"])


def test_restricting_zeroes_the_characters_left_out_and_keeps_the_blank():
    from captchalens.contract import ModelMeta

    meta = ModelMeta(name="m", charset="aA1", input_height=8, input_width=16, input_channels=1,
                     decoding="ctc_greedy", output_shape=[4, 4], min_length=1, max_length=4)
    probs = np.array([[[0.1, 0.6, 0.2, 0.1], [0.0, 0.1, 0.1, 0.8], [0.3, 0.5, 0.1, 0.1], [0.2, 0.2, 0.5, 0.1]]],
                     np.float32)
    cut = restrict(probs, meta, "a1")
    assert np.all(cut[..., 1] == 0) and np.array_equal(cut[..., [0, 2, 3]], probs[..., [0, 2, 3]])
    assert decode(probs, meta) == [(t, c) for t, c in decode(probs, meta, "aA1")]  # nothing cut: the same
    assert decode(probs, meta)[0][0] == "AA1"
    assert decode(probs, meta, "a1")[0][0] == "1a1"  # the 'A' steps read '1' and 'a', the blank stays
