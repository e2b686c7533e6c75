"""captchalens eval's figures: whole-captcha accuracy exact and ignoring case."""
import numpy as np

from captchalens.contract import ModelMeta
from captchalens.training.evaluate import evaluate


class _Reads:
    """A solver that reads every captcha as the same text (probabilities one-hot)."""

    def __init__(self, text: str, charset: str):
        self.meta = ModelMeta(name="t", charset=charset, input_height=8, input_width=8, input_channels=1,
                              decoding="fixed", output_shape=[len(text), len(charset)], length=len(text))
        self.p = np.zeros((len(text), len(charset)), np.float32)
        self.p[np.arange(len(text)), [charset.index(c) for c in text]] = 1.0

    def solve_images(self, images):
        from captchalens.decode import decode

        return decode(np.stack([self.p] * len(images)), self.meta)


def test_case_insensitive_accuracy_is_reported_beside_exact():
    r = evaluate(_Reads("aB", "abAB"), [np.zeros((8, 8, 4), np.uint8)] * 4, ["aB", "ab", "AB", "ba"],
                 single_runs=1)
    assert r.captcha_acc == 0.25 and r.captcha_acc_nocase == 0.75
    assert r.to_json()["captcha_acc_nocase"] == 0.75
    assert "75.00% ignoring case" in r.report()
