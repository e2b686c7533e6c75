"""Calibrated confidence: one temperature, fitted on captchas the model did not
train on, so that "N% sure" means N% right (training/calibrate.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from captchalens.cli import main
from captchalens.contract import META_FILE, load_meta
from captchalens.decode import confidence
from captchalens.training.calibrate import MIN_HELD_OUT, CalibrationError, ece, fit_temperature, on_probs, on_validation


def _overconfident(n=6000, positions=4, classes=10, sharpen=2.0, seed=1):
    """Captchas whose true per-position probabilities are softmax(z), read by a
    model that says softmax(sharpen * z): the temperature that undoes it is sharpen."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, positions, classes)) * 1.5
    z[..., 0] += 2.5  # class 0 usually on top, as a good reader's
    truth = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    labels = (rng.random((n, positions, 1)) > truth.cumsum(-1)).sum(-1)  # one sample per position
    model = np.exp(sharpen * z) / np.exp(sharpen * z).sum(-1, keepdims=True)
    right = (model.argmax(-1) == labels).all(-1)
    return model.astype(np.float32), right


@pytest.mark.parametrize("sharpen", [0.5, 2.0])
def test_the_fitted_temperature_undoes_a_known_miscalibration(sharpen):
    probs, right = _overconfident(sharpen=sharpen)
    fit = fit_temperature(probs, right)
    assert fit.temperature == pytest.approx(sharpen, rel=0.12)
    assert fit.log_loss[1] < fit.log_loss[0]
    assert fit.ece[1] < 0.02 < fit.ece[0]  # the raw confidence was off, the calibrated one is not
    assert abs(fit.mean_confidence[1] - right.mean()) < 0.02


def test_fitting_needs_both_right_and_wrong_answers():
    probs, right = _overconfident(n=50)
    with pytest.raises(CalibrationError, match="all 50 answers are right"):
        fit_temperature(probs, np.ones(50, bool))
    with pytest.raises(CalibrationError, match="all 50 answers are wrong"):
        fit_temperature(probs, np.zeros(50, bool))


def test_calibration_at_training_time_is_fitted_on_the_validation_set(capsys):
    probs, right = _overconfident(n=2000, classes=6)

    class Model:  # what train.py hands over: predict() on its uint8 validation inputs
        def predict(self, x, batch_size, verbose):
            assert x.dtype == np.float32 and x.max() <= 1.0
            return probs

    from captchalens.contract import ModelMeta
    from captchalens.decode import decode

    meta = ModelMeta(name="m", charset="abcdef", input_height=8, input_width=8, input_channels=1,
                     decoding="fixed", output_shape=[4, 6], length=4)
    texts = [t if ok else "zzzz" for (t, _), ok in zip(decode(probs, meta), right)]
    record = on_validation(Model(), meta, np.full((2000, 8, 8, 1), 255, np.uint8), texts)
    assert record["temperature"] == pytest.approx(2.0, rel=0.15)
    assert record["n"] == 2000 and record["right"] == int(right.sum())
    assert "validation set" in record["fitted_on"]
    assert on_validation(Model(), meta, np.zeros((2000, 8, 8, 1), np.uint8), ["zzzz"] * 2000) is None
    assert "confidence left uncalibrated: cannot fit a temperature: all 2000 answers are wrong" in \
        capsys.readouterr().err


def test_too_few_held_out_captchas_leave_a_model_uncalibrated(capsys):
    """A site model trained on a few dozen labelled captchas validates on a handful: no fit on those."""
    probs, right = _overconfident(n=MIN_HELD_OUT - 1, classes=6)
    from captchalens.contract import ModelMeta

    meta = ModelMeta(name="m", charset="abcdef", input_height=8, input_width=8, input_channels=1,
                     decoding="fixed", output_shape=[4, 6], length=4)
    assert on_probs(probs, meta, ["abcd"] * len(probs)) is None
    assert f"{MIN_HELD_OUT - 1} held-out captchas are too few" in capsys.readouterr().err


@pytest.fixture()
def default_copy(default_model_dir, tmp_path):
    folder = tmp_path / "default"
    shutil.copytree(default_model_dir, folder)
    meta = load_meta(folder)
    meta.calibration = None  # as it was before calibration
    meta.save(folder)
    return folder


def _solve(model, image):
    from captchalens.solver import Solver

    return Solver(model).solve_files([image])[0]  # a new reader of the folder, as a new process is


def test_calibrate_command_on_fresh_captchas_makes_confidence_match_accuracy(default_copy, tmp_path, capsys):
    assert main(["gen", str(tmp_path / "one"), "-n", "1", "--seed", "4"]) == 0
    image = next((tmp_path / "one").glob("*.png"))
    before = _solve(default_copy, image)
    assert main(["calibrate", str(default_copy), "-n", "600", "--seed", "31"]) == 0
    out = capsys.readouterr().out
    assert "temperature" in out and f"captchalens convert --model {default_copy}" in out
    cal = load_meta(default_copy).calibration
    assert 0.05 <= cal["temperature"] < 1  # label smoothing made the raw maxima too low: sharpen
    assert cal["n"] == 600 and "fresh generated captchas (seed 31)" in cal["fitted_on"]
    assert cal["ece"][1] < cal["ece"][0]
    after = _solve(default_copy, image)
    assert after.text == before.text  # the same answer...
    assert after.confidence > before.confidence  # ... said with the confidence it has earned


def test_calibrate_command_on_a_labelled_folder(default_copy, tmp_path, capsys):
    data = tmp_path / "labelled"
    assert main(["gen", str(data), "-n", "400", "--size", "100x60", "--seed", "8"]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(default_copy), "--data", str(data)]) == 0
    cal = json.loads((default_copy / META_FILE).read_text())["calibration"]
    assert cal["n"] == 400 and "labelled captchas of labelled/" in cal["fitted_on"]
    assert 0 < cal["right"] < 400


def test_calibrate_command_refuses_what_it_cannot_fit_on(tiny_model, tmp_path, capsys):
    model = tmp_path / "tiny"
    shutil.copytree(tiny_model, model)
    meta = load_meta(model)
    meta.trained_on = {"source": "a folder of labelled captchas"}
    meta.save(model)
    assert main(["calibrate", str(model)]) == 1
    assert "was not trained on generated captchas: calibrate it on labelled captchas" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["calibrate", str(model), "--data", str(empty)]) == 1
    assert "error" in capsys.readouterr().err
    assert load_meta(model).calibration is None  # nothing written by a failed fit


def test_ece_is_zero_for_a_perfectly_calibrated_bin():
    conf = np.full(100, 0.75)
    right = np.arange(100) < 75
    assert ece(conf, right) == pytest.approx(0.0)
    assert confidence(np.array([[[0.5, 0.25, 0.25]]]), 1.0)[0] == 0.5


def test_a_person_reads_the_confidence_rounded_down():
    """percentSure (extension/shared/constants.js), what the note, the page's messages and the popup
    show: 99.9% right is "99% sure", never "100% sure" unless it is 1; 0.29 is 29, not 28."""
    import subprocess

    from captchalens.paths import checkout

    constants = checkout() / "extension" / "shared" / "constants.js"
    script = (f"require('vm').runInThisContext(require('fs').readFileSync({json.dumps(str(constants))}, 'utf8'));"
              "console.log(JSON.stringify([0.999, 0.9, 0.29, 1, 0, 0.62, -1, 2, NaN, '0.5'].map(percentSure)));")
    out = subprocess.run([shutil.which("node"), "-e", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [99, 90, 29, 100, 0, 62, 0, 100, 0, 50]


def test_fresh_captchas_follow_a_models_training_mix_of_rendered_and_generated(default_copy):
    """The general reader trained on 80% rendered captchas: it is calibrated on that mix, not on
    `captcha`-package captchas only (which would fit its temperature to a fifth of what it reads)."""
    from captchalens.training.calibrate import fresh_captchas
    from captchalens.training.generate import generate, trained_spec
    from captchalens.training.render import RenderSpec

    meta = load_meta(default_copy)
    plain, _ = fresh_captchas(meta, 10, seed=5, workers=1)
    assert len(plain) == 10
    meta.trained_on["shares"] = {"captcha 0.7.1": 0.2, "captchalens render (mix)": 0.8}
    images, texts = fresh_captchas(meta, 10, seed=5, workers=1)
    spec = trained_spec(meta)
    rendered = RenderSpec(min_length=spec.min_length, max_length=spec.max_length)
    want = generate(spec, 2, 5, workers=1, progress=False)[1] + generate(rendered, 8, 6, workers=1, progress=False)[1]
    assert texts == want and len(images) == 10
