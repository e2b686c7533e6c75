"""`captchalens train --data DIR --out DIR`: a user's own labelled captchas in,
a model out — the scheme read from the labels, and every bad folder named."""
import argparse
import csv
import re

import numpy as np
import pytest
from PIL import Image

from captchalens._tf import keras, tf
from captchalens.contract import ContractError, load_meta
from captchalens.solver import Solver
from captchalens.training import cli, networks
from captchalens.training.augment import AugmentSpec, make_augment
from captchalens.training.folder import DataError
from captchalens.training.generate import GenSpec, draw
from captchalens.training.retrain import RetrainConfig, choose_input, make_meta, plan, retrain, transfer

TINY = ["--width-mult", "0.25", "--epochs", "2"]  # seconds, not minutes


def captchalens(*argv):
    """`captchalens train|gen ...` as typed, through the training commands' own parser."""
    p = argparse.ArgumentParser(prog="captchalens")
    cli.register(p.add_subparsers())
    args = p.parse_args(list(argv))
    return args.func(args)


def write_captchas(folder, n, charset="abc12", length=(4, 4), size=(120, 40), seed=3):
    folder.mkdir(parents=True, exist_ok=True)
    spec = GenSpec(charset=charset, min_length=length[0], max_length=length[1],
                   width=(size[0],) * 2, height=(size[1],) * 2)
    texts = []
    for i in range(n):
        im, text = draw(spec, seed, i)
        im.save(folder / f"{text}_{i}.png")
        texts.append(text)
    return texts


def test_a_folder_becomes_a_model_the_solver_uses(tmp_path, capsys):
    texts = write_captchas(tmp_path / "mine", 40, length=(3, 5))
    out = tmp_path / "models" / "mysite"
    assert captchalens("train", "--data", str(tmp_path / "mine"), "--out", str(out), "--from-scratch",
                       *TINY) == 0
    printed = capsys.readouterr().out
    charset = "".join(sorted(set("".join(texts))))
    # The start summary states what the data says and what will be trained ...
    assert "40 labelled captchas read" in printed
    assert f"charset ({len(charset)}): {charset}" in printed
    counts = {n: sum(len(t) == n for t in texts) for n in (3, 4, 5)}
    assert f"lengths: 3 chars: {counts[3]}, 4 chars: {counts[4]}, 5 chars: {counts[5]}" in printed
    assert "decoding: CTC, 3-5 characters, 36 steps" in printed  # variable lengths need CTC
    assert "input: 144x48 grayscale (images are typically 120x40)" in printed
    meta = load_meta(out)
    tr, va = meta.trained_on["split"]["train"], meta.trained_on["split"]["val"]
    assert f"split: {tr} train / {va} validation" in printed and tr + va == 40 and va >= 1
    # ... and the end gives the honest figure, the time and the next command.
    assert f"validation whole-captcha accuracy: {100 * meta.metrics['val_captcha_acc']:.1f}%" in printed
    assert f"of {va} held-back captchas" in printed and "time " in printed
    assert printed.rstrip().endswith(f"next: captchalens convert --model {out} --name mysite")
    # The metadata carries the scheme, so every reader follows it.
    assert (meta.name, meta.charset, meta.decoding, meta.lengths) == ("mysite", charset, "ctc_greedy", (3, 5))
    assert (meta.input_width, meta.input_height, meta.output_shape) == (144, 48, [36, len(charset) + 1])
    assert meta.trained_on["folder"] == str((tmp_path / "mine").resolve())
    assert meta.trained_on["images_used"] == 40 and meta.trained_on["init"]["mode"] == "scratch"
    assert meta.trained_on["seed"] == 1 and meta.trained_on["split"]["seed"] == 0
    assert not (tmp_path / "models" / "mysite.work").exists()  # no clutter left beside it
    im = np.asarray(Image.open(next((tmp_path / "mine").iterdir())).convert("RGBA"))
    answer = Solver(out).solve_pixels([im])[0]
    assert len(answer.text) <= 36 and set(answer.text) <= set(charset)


def test_fixed_length_heads_fine_tuned_from_a_base_model(tmp_path, tiny_model, capsys):
    write_captchas(tmp_path / "mine", 36, charset="xyz789", length=(5, 5), size=(150, 50))
    out = tmp_path / "fixed"
    assert captchalens("train", "--data", str(tmp_path / "mine"), "--out", str(out), "--arch", "small",
                       "--base", str(tiny_model), "--epochs", "1") == 0
    printed = capsys.readouterr().out
    meta = load_meta(out)
    assert meta.decoding == "fixed" and meta.length == 5 and meta.charset == "789xyz"
    assert meta.output_shape == [5, 6] and meta.input_width == 144
    assert "decoding: fixed length, 5 output heads" in printed and "start: fine-tuning" in printed
    init = meta.trained_on["init"]
    assert init["mode"] == "finetune" and init["layers_copied"] == 16  # 8 trunk layers + their norms
    assert meta.trained_on["width_mult"] == 0.25  # the base's width, so its trunk fits
    assert len(Solver(out).solve_files([next((tmp_path / "mine").iterdir())])[0].text) == 5


def test_with_no_flags_the_shipped_general_reader_is_fine_tuned(tmp_path, capsys):
    from captchalens.paths import GENERAL_MODEL

    write_captchas(tmp_path / "mine", 24, charset="pq34", length=(5, 5), size=(160, 50))
    assert captchalens("train", "--data", str(tmp_path / "mine"), "--out", str(tmp_path / "m"),
                       "--epochs", "1") == 0
    printed = capsys.readouterr().out
    assert ("start: fine-tuning the general model (general, its trunk, and its classifier for the "
            "characters in common)") in printed
    assert "decoding: CTC, 5 characters, 38 steps (--arch small for fixed-length heads)" in printed
    before = re.search(r"start +validation +([0-9.]+)% \(before training\)", printed)
    assert before and float(before.group(1)) > 0  # it reads some of them before any step: its classifier came along
    meta = load_meta(tmp_path / "m")
    assert meta.trained_on["init"]["base"] == str(GENERAL_MODEL) and meta.architecture == "general"
    # it reads a site as the general reader does: its width rule and scales
    assert meta.width_rule == load_meta(GENERAL_MODEL).width_rule and len(meta.width_scales) == 9
    from captchalens.training.retrain import GENERAL_LR, LR, STEM_FILTERS

    assert meta.trained_on["lr"] == GENERAL_LR < LR  # gentler on the general reader: it keeps what it reads
    assert f"peak learning rate {GENERAL_LR:g}," in printed

    base = Solver(GENERAL_MODEL).model
    stem = base.get_layer("stem").filters
    assert abs(meta.trained_on["width_mult"] - stem / STEM_FILTERS["general"]) < 0.5 / STEM_FILTERS["general"]
    assert meta.trained_on["init"]["layers_copied"] == len([la for la in base.layers if la.weights])  # all
    # labels of digits and lower-case letters: every digit and lower-case letter, no upper case
    assert meta.charset == "0123456789abcdefghijklmnopqrstuvwxyz"
    assert "charset widened from the 4 characters in the labels to every digit and lower-case letter" in printed
    # beside its own figure, what the base reads of the same held-back captchas, as it reads a site
    said = re.search(r"the base it started from \(general\) reads (\d+) of the same (\d+) with the labels' "
                     r"characters", printed)
    assert said and int(said.group(2)) == meta.metrics["val_n"]
    assert meta.metrics["base_val_captcha_acc"] == round(int(said.group(1)) / meta.metrics["val_n"], 5)
    errors = re.search(r"character errors: ([0-9.]+)% of the held-back characters, the base's ([0-9.]+)%", printed)
    assert errors and float(errors.group(2)) == round(100 * meta.metrics["base_val_cer"], 1)
    assert isinstance(meta.metrics["beats_base"], bool)
    assert ("does not read them better than its base" in printed) == (not meta.metrics["beats_base"])


@pytest.mark.parametrize("answers, base, wins", [
    (["ab12", "cd34"], ["ab12", "cd34"], False),  # a tie keeps the base
    (["ab12", "cd35"], ["ab12", "cx55"], True),   # the same whole captchas, fewer character errors
    (["ab12", "cd34"], ["ab12", "cd3"], True),    # a missing character is an error too
    (["ab12", "xxxx"], ["ab13", "cd34"], False),  # more character errors, however many whole
    (["ab13", "cd35"], ["ab12", "cxxx"], False),  # fewer character errors but fewer whole captchas
])
def test_a_site_model_beats_its_base_only_with_fewer_character_errors_and_no_fewer_whole(answers, base, wins):
    from captchalens.training.retrain import beats_base

    truths = ["ab12", "cd34"]
    assert beats_base(answers, base, truths) is wins
    for nll, base_nll in ((0.1, 2.0), (2.0, 0.1)):  # surer only breaks a tie (the first case)
        tie = answers == base
        assert beats_base(answers, base, truths, nll, base_nll) is ((nll < base_nll) if tie else wins)


def test_a_tie_goes_to_the_reader_surer_of_the_right_answers():
    from captchalens.training.retrain import NLL_MARGIN, beats_base, truth_nll

    meta = make_meta_for("ab")
    sure = np.zeros((1, 4, 3), np.float32)
    sure[0, :, :] = [[0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]
    unsure = np.full((1, 4, 3), 0.2, np.float32)
    unsure[0, [0, 2], [0, 1]] = 0.6
    unsure[0, [1, 3], [2, 2]] = 0.6
    assert truth_nll(sure, meta, ["ab"]) < truth_nll(unsure, meta, ["ab"])  # both decode to "ab"
    assert truth_nll(unsure * 5, meta, ["ab"]) == pytest.approx(truth_nll(unsure, meta, ["ab"]), abs=1e-5)
    assert truth_nll(sure, meta, ["ax"]) is None  # a character it cannot read
    nll, base_nll = truth_nll(sure, meta, ["ab"]), truth_nll(unsure, meta, ["ab"])
    assert beats_base(["ab"], ["ab"], ["ab"], nll, base_nll) and not beats_base(["ab"], ["ab"], ["ab"], base_nll, nll)
    assert not beats_base(["ab"], ["ab"], ["ab"])  # no likelihoods: the tie keeps the base
    # the same weights read through a head cut to the site's characters differ only by rounding
    assert not beats_base(["ab"], ["ab"], ["ab"], base_nll - NLL_MARGIN / 2, base_nll)


def make_meta_for(charset: str):
    from captchalens.training.train import TrainConfig, make_meta

    return make_meta(TrainConfig(arch="ctc", charset=charset, length=2, max_length=2))


@pytest.mark.parametrize("width", [0.5, 0.75, 0.875, 1.0, 1.1, 1.2, 1.25])
def test_the_base_width_is_the_one_that_rebuilds_every_layer(width):
    """The stem alone is ambiguous: 29 stem filters are width 1.2 (115 filters in sep3)
    and 1.2083 (116); fine-tuning at the wrong one copied less than half of stage 10."""
    from captchalens.training.retrain import SEQUENCE, TRUNK, base_width

    p = plan(RetrainConfig(data="x", out="y", arch="general"), [np.zeros((48, 160, 4), np.uint8)] * 2,
             ["ab1", "cd2"])
    meta = make_meta(p, "g")
    base = networks.build("general", meta, width=width)
    w = base_width(base, meta)
    rebuilt = networks.build("general", meta, width=w)
    for name in TRUNK + SEQUENCE:
        assert rebuilt.get_layer(name).get_weights()[0].shape == base.get_layer(name).get_weights()[0].shape
    assert w == width  # the round multiplier it was built with, not another that rounds alike


@pytest.mark.parametrize("seen, want", [
    ("pq34", "0123456789abcdefghijklmnopqrstuvwxyz"),  # digits and lower case: all of both
    ("ABC", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),  # upper case only: answers stay upper case
    ("7a-", "0123456789abcdefghijklmnopqrstuvwxyz-"),  # a character the base lacks is kept, last
    ("", ""),
])
def test_a_few_labels_widen_the_charset_to_the_families_they_use(seen, want):
    from captchalens.training.render import GENERAL_CHARSET
    from captchalens.training.retrain import widen_charset

    assert widen_charset(seen, GENERAL_CHARSET) == want


def test_fine_tuning_from_the_default_model_takes_its_trunk(tmp_path, default_model_dir, capsys):
    write_captchas(tmp_path / "mine", 24, charset="pq34", length=(5, 5), size=(160, 50))
    assert captchalens("train", "--data", str(tmp_path / "mine"), "--out", str(tmp_path / "m"),
                       "--base", str(default_model_dir), "--epochs", "1") == 0
    printed = capsys.readouterr().out
    assert f"start: fine-tuning {default_model_dir} (default, its trunk; new output heads)" in printed
    meta = load_meta(tmp_path / "m")
    assert meta.trained_on["init"]["base"] == str(default_model_dir)
    stem = Solver(default_model_dir).model.get_layer("stem").filters
    assert meta.trained_on["width_mult"] == stem / 32  # the default model's width, so its trunk fits
    assert meta.trained_on["init"]["layers_copied"] == 16
    from captchalens.training.retrain import LR

    assert meta.trained_on["lr"] == LR  # a new head to learn: the full rate


def test_a_learning_rate_given_is_the_one_used_whatever_the_base(tmp_path, capsys):
    write_captchas(tmp_path / "mine", 24, charset="pq34", length=(5, 5), size=(160, 50))
    assert captchalens("train", "--data", str(tmp_path / "mine"), "--out", str(tmp_path / "m"),
                       "--epochs", "1", "--lr", "3e-3") == 0
    assert "peak learning rate 0.003," in capsys.readouterr().out
    assert load_meta(tmp_path / "m").trained_on["lr"] == 3e-3


def test_fine_tuning_copies_the_trunk_and_never_a_head_for_another_charset(tiny_model):
    base = keras.models.load_model(tiny_model / "model.h5", compile=False)
    images = [np.zeros((50, 200, 4), np.uint8)]
    p = plan(RetrainConfig(data="", out="", arch="small"), images, ["abcde", "bcdef"])
    model = networks.build("small", make_meta(p, "x"), width=0.25)
    copied = transfer(model, base)
    assert "stem" in copied and "collapse_bn" in copied and "logits" not in copied
    assert all(np.array_equal(a, b) for a, b in zip(model.get_layer("sep3a").get_weights(),
                                                     base.get_layer("sep3a").get_weights()))


@pytest.mark.parametrize("sizes, width", [([(200, 50)], 192), ([(160, 60), (150, 60), (170, 60)], 128),
                                          ([(900, 50)], 256), ([(40, 40)], 64)])
def test_input_width_follows_the_images_typical_shape(sizes, width):
    images = [np.zeros((h, w, 4), np.uint8) for w, h in sizes]
    assert choose_input(images)[:2] == (width, 48)


def test_labels_give_the_charset_lengths_and_decoding():
    img = [np.zeros((50, 200, 4), np.uint8)]
    one = plan(RetrainConfig(data="", out=""), img, ["b2x7k", "77bbq"])
    assert (one.charset, one.min_len, one.max_len, one.decoding) == ("27bkqx", 5, 5, "ctc_greedy")
    fixed = plan(RetrainConfig(data="", out="", arch="small"), img, ["b2x7k", "77bbq"])
    assert (fixed.decoding, fixed.max_len) == ("fixed", 5)
    var = plan(RetrainConfig(data="", out=""), img, ["ab", "abcd", "ABC"])
    assert (var.charset, var.min_len, var.max_len, var.decoding) == ("ABCabcd", 2, 4, "ctc_greedy")
    assert var.input_width // 4 >= 2 * 4 + 1  # CTC has room for blanks between repeats
    mostly = plan(RetrainConfig(data="", out=""), img, ["abcde"] * 40 + ["abcd"])
    assert mostly.decoding == "ctc_greedy" and "fix them" in mostly.notes[0]  # a typo is pointed out


def test_mixed_lengths_without_ctc_say_what_to_do(tmp_path):
    write_captchas(tmp_path / "mine", 20, length=(4, 6))
    with pytest.raises(DataError, match=r"different lengths \(4 chars: \d+, 5 chars.*--arch ctc"):
        captchalens("train", "--data", str(tmp_path / "mine"), "--out", str(tmp_path / "m"),
                    "--arch", "small", *TINY)
    assert not (tmp_path / "m").exists()


def test_unknown_characters_and_bad_labels_are_skipped_and_named(tmp_path, capsys):
    write_captchas(tmp_path / "mine", 14, charset="ab12")
    Image.new("RGB", (120, 40), "white").save(tmp_path / "mine" / "abZ1.png")  # Z: not in --charset
    Image.new("RGB", (120, 40), "white").save(tmp_path / "mine" / "a b1.png")  # a space
    assert captchalens("train", "--data", str(tmp_path / "mine"), "--out", str(tmp_path / "m"),
                       "--charset", "ab12", "--epochs", "1", "--width-mult", "0.25", "--from-scratch") == 0
    printed = capsys.readouterr().out
    assert "14 labelled captchas read" in printed and "2 file(s) with unusable labels skipped" in printed
    assert "abZ1.png (characters 'Z' not in the --charset you gave)" in printed
    assert "a b1.png (label contains a space" in printed
    # One length and no model to start from: fixed-length heads (CTC from random weights idles).
    assert "decoding: fixed length, 4 output heads (--arch ctc for CTC)" in printed
    with pytest.raises(DataError, match="not in the --charset you gave"):
        captchalens("train", "--data", str(tmp_path / "mine"), "--out", str(tmp_path / "m2"),
                    "--charset", "xyz", *TINY)


def test_unreadable_files_are_skipped_by_name_and_a_folder_of_them_is_an_error(tmp_path, capsys):
    write_captchas(tmp_path / "mine", 12)
    (tmp_path / "mine" / "ab12_x.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "mine" / "notes.txt").write_text("my labels")
    assert captchalens("train", "--data", str(tmp_path / "mine"), "--out", str(tmp_path / "m"),
                       "--epochs", "1", "--width-mult", "0.25", "--from-scratch") == 0
    printed = capsys.readouterr().out
    assert "1 unreadable image(s) skipped, e.g. ab12_x.png (not a readable image" in printed
    assert "1 non-image file(s) ignored, e.g. notes.txt" in printed
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"ab12_{i}.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="3 unreadable"):
        captchalens("train", "--data", str(bad), "--out", str(tmp_path / "m3"), *TINY)


def test_too_few_images_bad_names_or_places_stop_before_training(tmp_path):
    write_captchas(tmp_path / "few", 5)
    with pytest.raises(DataError, match="only 5 usable labelled captcha.*too few"):
        captchalens("train", "--data", str(tmp_path / "few"), "--out", str(tmp_path / "m"), *TINY)
    write_captchas(tmp_path / "ok", 12)
    with pytest.raises(DataError, match="model name 'my site!'.*--name"):
        captchalens("train", "--data", str(tmp_path / "ok"), "--out", str(tmp_path / "m"),
                    "--name", "my site!", *TINY)
    with pytest.raises(ContractError, match="cannot fine-tune from .*nowhere"):
        captchalens("train", "--data", str(tmp_path / "ok"), "--out", str(tmp_path / "m"),
                    "--finetune", "--base", str(tmp_path / "nowhere"), *TINY)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.txt").write_text("years of work")
    with pytest.raises(DataError, match="docs exists and is not a model folder: refusing to replace it"):
        captchalens("train", "--data", str(tmp_path / "ok"), "--out", str(tmp_path / "docs"), *TINY)
    assert (tmp_path / "docs" / "thesis.txt").is_file()
    for bad_anchor in ("-0.1", "nan"):
        with pytest.raises(DataError, match=f"--anchor {bad_anchor}: must be 0 .off. or a positive strength"):
            captchalens("train", "--data", str(tmp_path / "ok"), "--out", str(tmp_path / "m"),
                        "--anchor", bad_anchor, *TINY)
    with pytest.raises(DataError, match="no such folder"):
        captchalens("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m"), *TINY)
    assert not (tmp_path / "m").exists()


class _Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("simulated crash after the first epoch")


def test_an_interrupted_folder_run_resumes(tmp_path):
    write_captchas(tmp_path / "mine", 16)
    cfg = dict(data=str(tmp_path / "mine"), out=str(tmp_path / "m"), init="scratch", width_mult=0.25,
               epochs=2, verbose=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        retrain(RetrainConfig(**cfg, extra_callbacks=[_Crash()]))
    assert not (tmp_path / "m").exists()
    _, meta = retrain(RetrainConfig(**cfg))
    with open(tmp_path / "m" / "log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1]  # epoch 0 not trained again
    assert meta.trained_on["epochs_run"] == 2


def test_augmentation_keeps_the_input_contract():
    x = tf.random.uniform([8, 48, 144, 1])
    y = tf.zeros([8, 4], tf.int32)
    out, y2 = make_augment()(x, y)
    assert out.shape == x.shape and out.dtype == tf.float32 and y2 is y
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0
    assert not np.allclose(out.numpy(), x.numpy())
    none = AugmentSpec(shift_x=0, shift_y=0, scale=0, rotate_deg=0, shear=0, brightness=0, contrast=0,
                       noise=0)
    same, _ = make_augment(none)(x, y)
    np.testing.assert_allclose(same.numpy(), x.numpy(), atol=1e-5)


def test_generated_training_keeps_its_defaults():
    from captchalens.training.config import TrainConfig

    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers())
    d = TrainConfig()
    args = p.parse_args(["train"])
    cli._generated_defaults(args, d)
    assert (args.arch, args.epochs, args.batch_size, args.lr, args.charset) == \
        ("small", d.epochs, d.batch_size, d.lr, d.charset)
    assert (args.length, args.input) == ((d.length, d.length), (d.input_width, d.input_height))
    args = p.parse_args(["train", "--length", "4-6"])
    cli._generated_defaults(args, d)
    assert args.arch == "ctc"


@pytest.fixture(scope="module")
def tiny_general(tmp_path_factory):
    """A tiny reader of the general architecture (CTC over a wide charset), trained for seconds."""
    from captchalens.training.train import TrainConfig, train_generated

    out = tmp_path_factory.mktemp("general") / "general"
    path, _ = train_generated(TrainConfig(out=str(out), name="general", arch="general", width_mult=0.5,
                                          charset="0123456789abcdefghijklmnopqrstuvwxyzABCDEF", length=3,
                                          max_length=5, input_width=96, train_size=256, val_size=32,
                                          epochs=1, verbose=0, workers=1))
    return path


def test_a_general_base_carries_over_whole_and_its_classifier_for_the_site_charset(tmp_path, tiny_general,
                                                                                  capsys):
    write_captchas(tmp_path / "mine", 24, charset="pq34", length=(4, 5), size=(160, 50))
    assert captchalens("train", "--data", str(tmp_path / "mine"), "--out", str(tmp_path / "m"),
                       "--base", str(tiny_general), "--epochs", "1") == 0
    printed = capsys.readouterr().out
    assert "start      validation" in printed  # the starting weights are scored, and may be kept
    meta = load_meta(tmp_path / "m")
    assert meta.architecture == "general" and meta.decoding == "ctc_greedy"
    site, base = Solver(tmp_path / "m").model, keras.models.load_model(tiny_general / "model.h5", compile=False)
    n_layers = len([w for w in base.layers if w.weights])
    assert meta.trained_on["init"]["layers_copied"] == n_layers  # every layer, the classifier by column


def test_the_classifier_starts_as_the_base_restricted_to_the_site_charset(tiny_general):
    from dataclasses import replace

    base = keras.models.load_model(tiny_general / "model.h5", compile=False)
    bmeta = load_meta(tiny_general)
    images = [np.zeros((50, 160, 4), np.uint8)]
    p = plan(RetrainConfig(data="", out="", arch="general"), images, ["p3q4", "q43p"])
    meta = make_meta(p, "site")
    model = networks.build("general", meta, width=0.5)
    copied = transfer(model, base, charsets=(bmeta.charset, meta.charset))
    assert "context2" in copied and any(c.startswith("logits") for c in copied)
    # The base at the site's input width (its layers do not depend on the width) reads the same columns.
    wide = networks.build("general", replace(bmeta, input_width=meta.input_width,
                                           output_shape=[meta.input_width // 4, len(bmeta.charset) + 1]), width=0.5)
    wide.set_weights(base.get_weights())
    x = np.random.default_rng(1).random((3, 48, meta.input_width, 1), np.float32)
    base_logits = keras.Model(wide.input, wide.get_layer("logits").output).predict(x, verbose=0)
    site_logits = keras.Model(model.input, model.get_layer("logits").output).predict(x, verbose=0)
    cols = [bmeta.charset.index(c) for c in meta.charset] + [len(bmeta.charset)]
    np.testing.assert_allclose(site_logits, base_logits[..., cols], rtol=1e-5, atol=1e-5)


def test_the_fine_tune_base_is_named_by_the_same_settings_as_everywhere(tmp_path, monkeypatch):
    """--base, else $CAPTCHALENS_MODEL (as for solve, the host, convert), else general when the
    package ships it, else the default."""
    from captchalens.paths import DEFAULT_MODEL, GENERAL_MODEL
    from captchalens.training.retrain import RetrainConfig, base_dir

    monkeypatch.delenv("CAPTCHALENS_MODEL", raising=False)
    shipped = GENERAL_MODEL if (GENERAL_MODEL / "captchalens.json").is_file() else DEFAULT_MODEL
    assert base_dir(RetrainConfig(data="d", out="o")) == shipped
    monkeypatch.setenv("CAPTCHALENS_MODEL", str(tmp_path / "mine"))
    assert base_dir(RetrainConfig(data="d", out="o")) == tmp_path / "mine"
    assert base_dir(RetrainConfig(data="d", out="o", base=str(tmp_path / "named"))) == tmp_path / "named"


@pytest.mark.parametrize("a, b, d", [
    ("", "", 0), ("abc", "abc", 0), ("abc", "", 3), ("", "ab", 2),
    ("nh5x", "hh5x", 1),  # one replaced
    ("2bg48", "2bg4", 1),  # one dropped
    ("87nym", "87mnym", 1),  # one inserted
    ("kitten", "sitting", 3),
])
def test_edit_distance_counts_characters_replaced_dropped_or_inserted(a, b, d):
    from captchalens.training.retrain import edit_distance

    assert edit_distance(a, b) == edit_distance(b, a) == d


def test_answer_scores_are_whole_captchas_right_and_characters_wrong_per_character():
    from captchalens.training.retrain import answer_scores

    acc, cer = answer_scores(["ab12", "ab1", "xy12", "ab12"], ["ab12", "ab12", "ab12", "ab12"])
    assert acc == 0.5 and cer == (0 + 1 + 2 + 0) / 16


def _judge(n_held_back, epochs, tmp_path):
    """Run Validate over scripted epochs of (answers for the held-back captchas, loss); the epoch kept."""
    from captchalens.training.retrain import Validate, answer_scores

    tmp_path.mkdir()
    truths = ["ab12"] * n_held_back
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    v = Validate(None, None, None, truths, None, patience=100, work=tmp_path, say=None)
    v.set_model(model)
    v.params = {"epochs": len(epochs)}
    script = iter(epochs)

    def score():
        answers, loss = next(script)
        return (*answer_scores(answers, truths), loss)

    v._score = score
    v.on_train_begin()
    for e in range(len(epochs)):
        v.on_epoch_end(e, {})
    return v.best_epoch, v.best_acc


@pytest.mark.parametrize("n", [8, 60])
def test_few_held_back_captchas_judge_epochs_by_character_errors_many_by_whole_captchas(n, tmp_path):
    from captchalens.training.retrain import FEW_HELD_BACK

    # epoch 0: one captcha more right, but every other one wrong in two characters;
    # epoch 1: one captcha fewer right, the others one character off at most
    lucky = ["ab12", "ab12"] + ["xy12"] * (n - 2)
    steady = ["ab12"] + ["ab13"] * (n - 1)
    best, acc = _judge(n, [(lucky, 1.0), (steady, 2.0)], tmp_path / "lucky")
    if n < FEW_HELD_BACK:
        assert best == 1 and acc == 1 / n  # fewer character errors win, though one fewer whole captcha
    else:
        assert best == 0 and acc == 2 / n  # enough captchas: whole-captcha accuracy decides
    # ties go to the lower loss either way; and a later epoch no better is not kept
    assert _judge(n, [(steady, 2.0), (steady, 1.5), (steady, 3.0)], tmp_path / "ties")[0] == 1


def test_the_anchor_holds_fine_tuned_weights_near_the_base(tmp_path, capsys):
    """L2-SP: the same fine-tune (same data, seed, a learning rate that moves weights far),
    with and without the pull toward the base's weights; with it, every copied layer stays
    nearer its start while training, and the run says and records what was anchored."""
    from captchalens.paths import GENERAL_MODEL

    write_captchas(tmp_path / "mine", 24, charset="pq34", length=(5, 5), size=(160, 50))
    base = Solver(GENERAL_MODEL).model
    layers = ("stem", "sep3a", "context")
    start = {name: base.get_layer(name).get_weights()[0] for name in layers}

    def drift(anchor):
        seen = {}

        def measure(epoch, logs):  # after the last epoch: how far each kernel has moved
            for name in layers:
                seen[name] = float(np.sum((cb.model.get_layer(name).get_weights()[0] - start[name]) ** 2))

        cb = keras.callbacks.LambdaCallback(on_epoch_end=measure)
        out = tmp_path / f"a{anchor}"
        retrain(RetrainConfig(data=str(tmp_path / "mine"), out=str(out), epochs=8, lr=1e-2, anchor=anchor,
                              augment=False, extra_callbacks=[cb]))
        return seen, load_meta(out), capsys.readouterr().out

    free, meta_free, printed_free = drift(0.0)
    held, meta_held, printed_held = drift(10.0)
    for name in layers:  # (the pull starts at zero: the first steps move both runs alike)
        assert 0 < held[name] < 0.7 * free[name], (name, held, free)
    assert meta_free.trained_on["anchor"] is None and "L2-SP" not in printed_free
    assert meta_held.trained_on["anchor"]["strength"] == 10.0
    assert meta_held.trained_on["anchor"]["weights"] == sum(  # every trainable weight: all were copied
        int(np.prod(v.shape)) for v in Solver(tmp_path / "a10.0").model.trainable_weights)
    assert "weights pulled toward the base's (L2-SP 10)" in printed_held
