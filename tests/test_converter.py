"""`captchalens convert`: a trained model becomes the extension's TF.js model.

A user trains a model, runs `captchalens convert`, and finds it in
extension/models/<name>/ (listed in index.json, TF.js vendored beside it, the
Keras copy installed for the local host); `captchalens solve --engine tfjs`
then gives the same answers as the TensorFlow solver.  Models the extension
cannot read are refused with a message saying why.
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest

from captchalens.cli import main
from captchalens.contract import KERAS_FILE, META_FILE
from captchalens.converter import ConvertError, convert
from captchalens.converter import core
from captchalens.converter.core import VENDOR_FILES
from captchalens.paths import node_modules
from captchalens.training.generate import GenSpec, draw


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def ext(tmp_path):
    """A stand-in for the extension folder: ext/models (the --out) and ext/vendor."""
    return tmp_path / "ext"


def _copy_model(src, dest, **meta_changes):
    dest.mkdir(parents=True)
    shutil.copy2(src / KERAS_FILE, dest / KERAS_FILE)
    meta = json.loads((src / META_FILE).read_text())
    meta.update(meta_changes)
    (dest / META_FILE).write_text(json.dumps(meta, indent=2))
    return dest


def test_convert_writes_the_model_index_vendor_and_host_copy(tiny_model, ext, home, capsys):
    assert main(["convert", "--model", str(tiny_model), "--out", str(ext / "models")]) == 0
    out = capsys.readouterr().out
    folder = ext / "models" / "tiny"  # named after its metadata
    assert f"-> {folder}" in out and "installed for the local host" in out
    model_json = json.loads((folder / "model.json").read_text())
    assert model_json["format"] == "layers-model" and "TensorFlow.js Converter" in model_json["convertedBy"]
    shards = [p for g in model_json["weightsManifest"] for p in g["paths"]]
    assert shards and all((folder / p).is_file() for p in shards)
    assert (folder / META_FILE).read_bytes() == (tiny_model / META_FILE).read_bytes()  # verbatim
    meta = json.loads((tiny_model / META_FILE).read_text())
    index = json.loads((ext / "models" / "index.json").read_text())
    assert index == {"default": "tiny", "models": [{
        "name": "tiny", "dir": "models/tiny/", "charset": meta["charset"], "decoding": "fixed",
        "length": 4, "min_length": None, "max_length": None, "version": meta["version"],
        "metrics": meta["metrics"]}]}
    for name, rel in VENDOR_FILES.items():
        assert (ext / "vendor" / name).read_bytes() == (node_modules() / rel).read_bytes()
    installed = home / "models" / "tiny"
    assert (installed / KERAS_FILE).read_bytes() == (tiny_model / KERAS_FILE).read_bytes()
    assert (installed / META_FILE).read_bytes() == (tiny_model / META_FILE).read_bytes()
    assert not [p for p in (ext / "models").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_index_lists_every_converted_model_and_quantized_weights_are_marked(tiny_model, ext, home):
    convert(tiny_model, out=ext / "models", vendor=False)
    (ext / "models" / "notes").mkdir()  # a stray folder is not a model
    r = convert(tiny_model, name="tiny-f16", out=ext / "models", quantize="float16", vendor=False, install=False)
    index = json.loads((ext / "models" / "index.json").read_text())
    assert [m["name"] for m in index["models"]] == ["tiny", "tiny-f16"]
    assert index["models"][1]["dir"] == "models/tiny-f16/"
    assert index["default"] == "tiny"  # no model is called "default": the first one
    weights = json.loads((r.folder / "model.json").read_text())["weightsManifest"][0]["weights"]
    assert {w["quantization"]["dtype"] for w in weights} == {"float16"}
    assert not (home / "models" / "tiny-f16").exists()  # install=False
    plain = sum(p.stat().st_size for p in (ext / "models" / "tiny").glob("*.bin"))
    assert sum(p.stat().st_size for p in r.folder.glob("*.bin")) < 0.6 * plain


def test_a_failed_conversion_leaves_the_installed_model_untouched(tiny_model, ext, home, monkeypatch):
    first = convert(tiny_model, out=ext / "models", vendor=False, install=False)
    before = {p.name: p.read_bytes() for p in first.folder.iterdir()}
    def broken(model, folder, *a, **kw):
        (folder / "model.json").write_text("{half")
        raise OSError("disk full")

    monkeypatch.setattr(core, "write_tfjs", broken)
    with pytest.raises(OSError, match="disk full"):
        convert(tiny_model, out=ext / "models", vendor=False, install=False)
    assert {p.name: p.read_bytes() for p in first.folder.iterdir()} == before
    assert not [p for p in (ext / "models").iterdir() if p.name.startswith(".")]


def test_engine_tfjs_answers_equal_engine_tf_answers(request, tmp_path, capsys):
    from captchalens.paths import DEFAULT_MODEL

    # the shipped model (and its shipped conversion) once it exists: real, varied answers
    model = DEFAULT_MODEL if (DEFAULT_MODEL / META_FILE).is_file() else request.getfixturevalue("tiny_model")
    folder = tmp_path / "captchas"
    folder.mkdir()
    for i in range(6):
        im, text = draw(GenSpec(width=(120, 200), height=(50, 70)), seed=4, index=i)
        im.save(folder / f"{i}_{text}.png")
    answers = {}
    for engine in ("tf", "tfjs"):
        assert main(["solve", "--json", "--engine", engine, "--model", str(model), str(folder)]) == 0
        answers[engine] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(answers["tfjs"]) == 6
    assert [(a["path"], a["text"]) for a in answers["tfjs"]] == [(a["path"], a["text"]) for a in answers["tf"]]
    for a, b in zip(answers["tfjs"], answers["tf"]):
        assert a["confidence"] == pytest.approx(b["confidence"], rel=1e-3, abs=1e-6)


# ---- refusals ------------------------------------------------------------------------------------

def _refused(capsys, *argv) -> str:
    assert main(["convert", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("captchalens: error: ")
    return err


def test_a_folder_without_metadata_is_refused(tmp_path, ext, capsys):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / KERAS_FILE).write_bytes(b"\x89HDF")
    err = _refused(capsys, "--model", str(tmp_path / "weights"), "--out", str(ext / "models"))
    assert "has no captchalens.json: it is not a CaptchaLens model folder" in err
    assert "does not exist" in _refused(capsys, "--model", str(tmp_path / "gone"), "--out", str(ext / "models"))
    assert not (ext / "models").exists()


def test_a_model_whose_output_does_not_match_its_metadata_is_refused(tiny_model, tmp_path, ext, capsys):
    bad = _copy_model(tiny_model, tmp_path / "five", length=5, output_shape=[5, 36])
    err = _refused(capsys, "--model", str(bad), "--out", str(ext / "models"))
    assert "output (None, 4, 36) does not match its metadata [5, 36]" in err


def test_a_decoding_the_extension_cannot_read_is_refused(tiny_model, tmp_path, ext, capsys):
    bad = _copy_model(tiny_model, tmp_path / "beam", decoding="beam_search")
    err = _refused(capsys, "--model", str(bad), "--out", str(ext / "models"))
    assert "cannot convert" in err and "decoding must be one of ('fixed', 'ctc_greedy')" in err


def test_a_model_with_two_outputs_is_refused(tiny_model, tmp_path, ext):
    from captchalens._tf import keras

    L = keras.layers
    inp = L.Input((48, 128, 1))
    flat = L.Flatten()(inp)
    heads = [L.Softmax()(L.Reshape((4, 36))(L.Dense(144)(flat))) for _ in range(2)]
    folder = tmp_path / "two"
    folder.mkdir()
    keras.Model(inp, heads).save(folder / KERAS_FILE)
    shutil.copy2(tiny_model / META_FILE, folder / META_FILE)
    with pytest.raises(ConvertError, match="the model has 2 outputs; the extension reads one output tensor"):
        convert(folder, name="two", out=ext / "models", vendor=False, install=False)


@pytest.mark.parametrize("name", ["../escape", "a/b", "Tiny", "", ".hidden", "x" * 65])
def test_unsafe_names_are_refused(tiny_model, ext, name):
    with pytest.raises(ConvertError, match="unsafe model name"):
        convert(tiny_model, name=name, out=ext / "models", vendor=False, install=False)
    assert not (ext / "models").exists()


def test_an_unsafe_metadata_name_asks_for_name(tiny_model, tmp_path, ext):
    bad = _copy_model(tiny_model, tmp_path / "spaces", name="My Model")
    with pytest.raises(ConvertError, match="cannot be a folder name; give one with --name"):
        convert(bad, out=ext / "models", vendor=False, install=False)


def test_missing_node_modules_says_run_npm_ci_before_converting(tiny_model, tmp_path, ext):
    with pytest.raises(ConvertError, match=r"lacks @tensorflow/tfjs/dist/tf.es2017.min.js and 3 more: run `npm ci`"):
        convert(tiny_model, out=ext / "models", node_modules=tmp_path / "node_modules", install=False)
    assert not (ext / "models").exists()


# ---- the Node engine's own errors ----------------------------------------------------------------

def test_engine_tfjs_errors_say_what_to_do(tmp_path, monkeypatch):
    from captchalens.converter import node_engine

    with pytest.raises(node_engine.NodeError, match="has no model.json: run `captchalens convert` first"):
        node_engine.run_node(tmp_path, [])
    monkeypatch.setattr(node_engine.shutil, "which", lambda name: None)
    with pytest.raises(node_engine.NodeError, match="Node.js is not installed"):
        node_engine.run_node(tmp_path, [])


def test_solve_js_rejects_truncated_pixels(tiny_model, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.json").write_text("{}")
    data = struct.pack("<III", 1, 10, 10) + b"\0" * 100  # needs 400 bytes
    from captchalens.paths import node_solver

    proc = subprocess.run([shutil.which("node"), str(node_solver()), "--model", str(folder)], input=data,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == "node_solver.js: error: pixel input ends inside image 0 (10x10)"


# ---- what the repository ships ---------------------------------------------------------------------

def test_the_shipped_conversion_is_the_shipped_model_and_index_and_vendor_are_regenerated(root, tmp_path):
    """extension/models/default is the converted package default (same metadata byte for byte,
    converted from the same weights), index.json is what the converter writes, vendor/ is node_modules'."""
    from captchalens.converter.core import write_index
    from captchalens.files import sha256_file
    from captchalens.paths import DEFAULT_MODEL

    shipped = root / "extension" / "models"
    assert (shipped / "default" / META_FILE).read_bytes() == (DEFAULT_MODEL / META_FILE).read_bytes(), \
        "extension/models/default is stale: run `captchalens convert`"
    source = json.loads((shipped / "default" / "model.json").read_text())["userDefinedMetadata"]["captchalens"]
    assert source["source_sha256"] == sha256_file(DEFAULT_MODEL / KERAS_FILE)
    assert source["quantize"] == "none"  # float32: see bench/results/convert.md
    # converted with every batch norm of the shipped model folded into its conv
    from captchalens._tf import keras

    keras_model = keras.models.load_model(DEFAULT_MODEL / KERAS_FILE, compile=False)
    batch_norms = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in keras_model.layers)
    assert source["folded_batchnorms"] == batch_norms > 0
    copy = tmp_path / "models"
    shutil.copytree(shipped, copy)
    (copy / "index.json").unlink()
    assert write_index(copy).read_text() == (shipped / "index.json").read_text()
    for name, rel in VENDOR_FILES.items():
        assert (root / "extension" / "vendor" / name).read_bytes() == (node_modules() / rel).read_bytes()
