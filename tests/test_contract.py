"""The model contract: written once, read back identically, refused when wrong."""
import json

import pytest

from captchalens.contract import META_FILE, ContractError, ModelMeta, load_meta


def _meta(**kw):
    base = dict(name="m", charset="abc123", input_height=48, input_width=128, input_channels=1,
                decoding="fixed", output_shape=[4, 6], length=4)
    base.update(kw)
    return ModelMeta(**base)


def test_metadata_round_trips_through_the_file(tmp_path):
    meta = _meta(metrics={"val_captcha_acc": 0.99}, trained_on={"source": "x"})
    meta.save(tmp_path)
    again = load_meta(tmp_path)
    assert again == meta
    on_disk = json.loads((tmp_path / META_FILE).read_text())
    assert on_disk["blank_index"] is None  # derived facts are written for JS readers
    assert on_disk["preprocessing"]["resize"]["half_pixel_centers"] is True


def test_ctc_metadata_states_its_blank_and_lengths(tmp_path):
    meta = _meta(decoding="ctc_greedy", output_shape=[32, 7], length=None, min_length=3, max_length=6)
    meta.save(tmp_path)
    again = load_meta(tmp_path)
    assert again.blank_index == 6 and again.lengths == (3, 6)
    assert json.loads((tmp_path / META_FILE).read_text())["blank_index"] == 6


@pytest.mark.parametrize("change, message", [
    ({"charset": "aab"}, "repeated"),
    ({"decoding": "beam"}, "decoding"),
    ({"output_shape": [5, 6]}, "output"),
    ({"input_channels": 2}, "input_channels"),
    ({"decoding": "ctc_greedy", "output_shape": [32, 6]}, "blank"),
])
def test_inconsistent_metadata_is_refused_with_the_reason(change, message):
    with pytest.raises(ContractError, match=message):
        _meta(**change).validate()


def test_folder_without_metadata_says_it_is_not_a_model(tmp_path):
    with pytest.raises(ContractError, match="not a CaptchaLens model folder"):
        load_meta(tmp_path)
    with pytest.raises(ContractError, match="does not exist"):
        load_meta(tmp_path / "nope")


def test_corrupt_metadata_names_the_file(tmp_path):
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(ContractError, match=META_FILE):
        load_meta(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"name": "x"}))
    with pytest.raises(ContractError, match="lacks charset"):
        load_meta(tmp_path)


def test_calibration_is_optional_and_kept_when_present(tmp_path):
    meta = _meta()
    assert meta.temperature == 1.0  # a model from before calibration: the raw confidence
    meta.save(tmp_path)
    assert "calibration" not in json.loads((tmp_path / META_FILE).read_text())  # old files read the same
    meta.calibration = {"temperature": 0.45, "fitted_on": "somewhere", "n": 10}
    meta.save(tmp_path)
    again = load_meta(tmp_path)
    assert again.temperature == 0.45 and again.calibration["fitted_on"] == "somewhere"


@pytest.mark.parametrize("calibration", [{}, {"temperature": "0.5"}, {"temperature": 0}, {"temperature": -1},
                                         {"temperature": float("nan")}, {"temperature": True},
                                         {"temperature": 50}, [0.5], 0.5])
def test_a_calibration_without_a_usable_temperature_is_refused(calibration):
    with pytest.raises(ContractError, match="calibration must be an object whose temperature is a number"):
        _meta(calibration=calibration).validate()
