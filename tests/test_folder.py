"""A user's folder of labelled captchas: labels from names or labels.csv,
and nothing dropped without saying so."""
import zlib

import numpy as np
import pytest
from PIL import Image

from captchalens.training.folder import DataError, infer_scheme, label_from_name, load_folder, split


def _img(path, size=(40, 20)):
    """A small image of its own: every file name draws different pixels."""
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(path)


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


def test_labels_differing_only_in_unicode_form_are_one_label(tmp_path):
    _img(tmp_path / "\u00e9x.png")  # é as one code point (NFC) ...
    _img(tmp_path / "e\u0301x_2.png")  # ... and as e + combining acute (NFD)
    _, texts, _ = load_folder(tmp_path)
    assert texts == ["\u00e9x", "\u00e9x"]
    assert infer_scheme(texts)[0] == "x\u00e9"  # two characters, not three
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    _img(csv_dir / "a.png")
    _img(csv_dir / "b.png")
    (csv_dir / "labels.csv").write_text("file,text\na.png,e\u0301x\nb.png,\u00e9x\n", encoding="utf-8")
    assert load_folder(csv_dir)[1] == ["\u00e9x", "\u00e9x"]


def test_one_image_under_two_labels_is_dropped_and_both_files_named(tmp_path):
    _img(tmp_path / "ab12.png")
    pixels = Image.open(tmp_path / "ab12.png")
    pixels.save(tmp_path / "cd34.bmp")  # the same pixels in another file and format
    _img(tmp_path / "ef56.png")
    images, texts, report = load_folder(tmp_path)
    assert texts == ["ef56"] and len(images) == 1 and report.used == 1
    why = dict(report.bad_label)
    assert set(why) == {"ab12.png", "cd34.bmp"}
    assert "same image as cd34.bmp ('cd34')" in why["ab12.png"] and "conflicting labels" in why["ab12.png"]
    assert "same image as ab12.png ('ab12')" in why["cd34.bmp"]
    assert "2 file(s) with unusable labels skipped" in report.summary()


def test_one_image_twice_under_its_label_is_used_once_and_named(tmp_path):
    _img(tmp_path / "ab12.png")
    (tmp_path / "ab12_2.png").write_bytes((tmp_path / "ab12.png").read_bytes())
    _img(tmp_path / "ab12_3.png")  # another captcha with the same answer: kept
    _, texts, report = load_folder(tmp_path)
    assert texts == ["ab12", "ab12"] and report.files == ["ab12.png", "ab12_3.png"]
    assert report.duplicates == [("ab12_2.png", "the same image as ab12.png")]
    assert "1 duplicate image(s) skipped" in report.summary()


def test_the_split_is_by_image_content_not_file_name(tmp_path):
    for i in range(80):
        _img(tmp_path / f"ab{i:02d}.png")
    _, texts, report = load_folder(tmp_path)
    assert len(set(report.keys)) == len(report.keys) == 80  # a content hash per image used
    tr, va = split(len(texts), report.keys, 0.25)
    held_back = {report.keys[i] for i in va}
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for p in sorted(tmp_path.glob("*.png")):
        p.rename(renamed / f"zz_{p.stem[::-1]}.png")  # other names, other name order
    _, _, again = load_folder(renamed)
    tr2, va2 = split(len(again.keys), again.keys, 0.25)
    assert {again.keys[i] for i in va2} == held_back and 5 < len(va) < 40
    tr3, va3 = split(3, ["same", "same", "other"], 0.5, seed=1)  # copies fall on one side
    assert set(va3) in ({0, 1}, {2}, set(), {0, 1, 2})


def test_a_file_listed_twice_in_labels_csv_is_an_error_or_a_note(tmp_path):
    _img(tmp_path / "img001.png")
    _img(tmp_path / "img002.png")
    (tmp_path / "labels.csv").write_text("file,text\nimg001.png,qw12\nimg002.png,as34\nimg001.png,zz99\n")
    with pytest.raises(DataError, match=r"img001.png is listed twice with different labels: "
                                        r"line 2 says 'qw12', line 4 says 'zz99'"):
        load_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("file,text\nimg001.png,qw12\nimg002.png,as34\nimg001.png,qw12\n")
    _, texts, report = load_folder(tmp_path)
    assert texts == ["qw12", "as34"]
    assert report.notes == ["labels.csv lists img001.png twice (lines 2 and 4, same label 'qw12')"]
    assert "lists img001.png twice" in report.summary()


def test_a_fifo_named_like_an_image_is_named_not_opened(tmp_path):
    import os

    _img(tmp_path / "ab12.png")
    os.mkfifo(tmp_path / "cd34.png")
    _, texts, report = load_folder(tmp_path)  # a hang here is the bug
    assert texts == ["ab12"] and report.unreadable == [("cd34.png", "not a regular file (a FIFO)")]
