"""A user's folder of labelled captchas: labels from names or labels.csv,
and nothing dropped without saying so."""
import pytest
from PIL import Image

from captchalens.training.folder import DataError, infer_scheme, label_from_name, load_folder, split


def _img(path, size=(40, 20)):
    Image.new("RGB", size, (200, 200, 200)).save(path)


@pytest.mark.parametrize("name, label", [("x7kq.png", "x7kq"), ("x7kq_2.png", "x7kq"),
                                         ("x7kq.site.jpeg", "x7kq"), ("AB12_.png", "AB12")])
def test_label_is_the_stem_up_to_the_first_underscore_or_dot(name, label):
    assert label_from_name(name) == label


def test_folder_reports_every_skipped_file_with_its_reason(tmp_path):
    _img(tmp_path / "ab12.png")
    _img(tmp_path / "ab12_2.png")
    _img(tmp_path / "zz!9.png")  # '!' is not in the charset
    (tmp_path / "cd34.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("hello")
    images, texts, report = load_folder(tmp_path, charset="abcdz0123456789")
    assert texts == ["ab12", "ab12"] and len(images) == 2
    assert report.used == 2
    assert [f for f, _ in report.unreadable] == ["cd34.png"]
    assert report.bad_label[0][0] == "zz!9.png" and "'!'" in report.bad_label[0][1]
    assert report.not_images == ["notes.txt"]
    summary = report.summary()
    assert "2 labelled" in summary and "1 unreadable" in summary and "cd34.png" in summary


def test_labels_csv_overrides_file_names_and_missing_files_are_reported(tmp_path):
    _img(tmp_path / "img001.png")
    _img(tmp_path / "img002.png")
    (tmp_path / "labels.csv").write_text("file,text\nimg001.png,qw12\nimg003.png,zz99\n")
    images, texts, report = load_folder(tmp_path)
    assert texts == ["qw12"]
    assert ("img002.png", "not listed in labels.csv") in report.bad_label
    assert report.unreadable[0][0] == "img003.png"


def test_wrong_lengths_are_reported_not_dropped(tmp_path):
    _img(tmp_path / "abcd.png")
    _img(tmp_path / "abcde.png")
    _, texts, report = load_folder(tmp_path, lengths=(4, 4))
    assert texts == ["abcd"]
    assert "length 5" in report.bad_label[0][1]


def test_empty_or_useless_folders_are_errors(tmp_path):
    with pytest.raises(DataError, match="no labelled captcha images"):
        load_folder(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        load_folder(tmp_path / "missing")
    (tmp_path / "ab12.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="1 unreadable"):
        load_folder(tmp_path)


def test_scheme_inference_and_deterministic_split():
    assert infer_scheme(["ab1", "b2c4"]) == ("124abc", 3, 4)
    names = [f"f{i}.png" for i in range(200)]
    tr, va = split(200, names, 0.2)
    tr2, va2 = split(200, names, 0.2)
    assert (tr == tr2).all() and (va == va2).all()
    assert 20 < len(va) < 60 and len(tr) + len(va) == 200
