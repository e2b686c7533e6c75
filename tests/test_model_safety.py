"""A model folder someone shares is data, not a program: no reader of a model
folder runs code stored in it (captchalens/modelfile.py).

The attack: a model.h5 whose Lambda layer creates a marker file when Keras
rebuilds the model, and a model.tflite whose Flex ops write one when invoked.
Every way a model folder gets loaded — `captchalens solve --model`, the local
host's hot reload of ~/.captchalens/models/, the converter, `train --base` —
must refuse the folder, say which layer, and leave no marker behind."""
from __future__ import annotations

import copy
import json
import os
import shutil

import h5py
import pytest

from captchalens._tf import keras, tf
from captchalens.cli import main
from captchalens.contract import KERAS_FILE, ContractError, ModelMeta, load_meta
from captchalens.tflite import TFLITE_FILE, export_tflite
from captchalens.modelfile import UnsafeModelError, check_keras_config, check_tflite, load_keras
from captchalens.paths import DEFAULT_MODEL
from captchalens.solver import Solver
from captchalens.training.generate import GenSpec, draw

L = keras.layers


def _lambda_model(meta: ModelMeta, marker: str):
    """A model with the contract's shapes whose Lambda layer creates `marker` when built."""
    inp = L.Input((meta.input_height, meta.input_width, meta.input_channels), name="image")
    touch = lambda t, p=marker: (__import__("os").close(__import__("os").open(p, 0o101)), t)[1]  # noqa: E731
    x = L.Lambda(touch, name="innocent_looking")(inp)
    x = L.Flatten()(x)
    x = L.Dense(meta.output_shape[0] * meta.output_shape[1])(x)
    x = L.Reshape(tuple(meta.output_shape))(x)
    return keras.Model(inp, L.Softmax()(x))


@pytest.fixture
def evil(tiny_model, tmp_path):
    """(model folder with a code-running model.h5, the marker it would create)."""
    folder, marker = tmp_path / "shared-model", tmp_path / "PWNED"
    shutil.copytree(tiny_model, folder)
    _lambda_model(load_meta(folder), str(marker)).save(folder / KERAS_FILE)
    marker.unlink()  # building it to save it ran the function once
    return folder, marker


@pytest.fixture
def captcha(tmp_path):
    im, _ = draw(GenSpec(), seed=3, index=0)
    im.save(tmp_path / "c.png")
    return tmp_path / "c.png"


def test_the_crafted_folder_really_runs_code_when_keras_loads_it(evil):
    folder, marker = evil
    keras.models.load_model(folder / KERAS_FILE, compile=False)  # what every reader used to do
    assert marker.exists()


def test_solve_refuses_a_model_that_would_run_code(evil, captcha, capsys):
    folder, marker = evil
    assert main(["solve", "--model", str(folder), str(captcha)]) == 1
    err = capsys.readouterr().err
    assert "layer 'innocent_looking' is a Lambda layer" in err and "refusing" in err
    assert not marker.exists()


def test_the_host_does_not_load_a_model_that_would_run_code(evil, tiny_model, tmp_path, monkeypatch):
    from captchalens.native_host.registry import Registry

    folder, marker = evil
    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "models").mkdir(parents=True)
    registry = Registry([tiny_model]).reload()
    assert registry.names() == ["tiny"]
    shutil.copytree(folder, tmp_path / "home" / "models" / "shared")  # dropped in while it runs
    registry.reload()
    assert registry.names() == ["tiny"]  # the good model is still served
    (error,) = registry.describe()["errors"]
    assert error["name"] == "shared" and "'innocent_looking' is a Lambda layer" in error["error"]
    assert not marker.exists()


def test_the_converter_refuses_a_model_that_would_run_code(evil, tmp_path):
    from captchalens.converter import ConvertError, convert

    folder, marker = evil
    with pytest.raises(ConvertError, match="'innocent_looking' is a Lambda layer"):
        convert(folder, name="shared", out=tmp_path / "ext", vendor=False, install=False)
    assert not marker.exists() and not (tmp_path / "ext" / "shared").exists()


def test_training_from_a_base_that_would_run_code_is_refused(evil, tmp_path):
    from captchalens.training.retrain import RetrainConfig, choose_init

    folder, marker = evil
    meta = load_meta(folder)
    with pytest.raises(ContractError, match="'innocent_looking' is a Lambda layer"):
        choose_init(RetrainConfig(data="", out="", base=str(folder)), meta)
    assert not marker.exists()


def test_continuing_from_a_base_that_would_run_code_is_refused(evil):
    from captchalens.training import networks
    from captchalens.training.train import continue_from

    folder, marker = evil
    meta = load_meta(folder)
    with pytest.raises(ContractError, match="'innocent_looking' is a Lambda layer"):
        continue_from(networks.build("small", meta, width=0.25), meta, folder)
    assert not marker.exists()


def _flex_tflite(meta: ModelMeta, marker: str) -> bytes:
    """A fast-path file with the right signature whose Flex ops write `marker` when invoked."""
    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 4], tf.uint8)])
    def solve(rgba):
        tf.io.write_file(marker, tf.strings.as_string(tf.reduce_sum(tf.cast(rgba, tf.int32))))
        return tf.fill([1, *meta.output_shape], 1.0 / meta.output_shape[1])

    conv = tf.lite.TFLiteConverter.from_concrete_functions([solve.get_concrete_function()], solve)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    return conv.convert()


def test_a_fast_path_file_with_flex_ops_is_refused(tiny_model, captcha, tmp_path, capsys):
    folder, marker = tmp_path / "m", tmp_path / "PWNED"
    shutil.copytree(tiny_model, folder)
    data = _flex_tflite(load_meta(folder), str(marker))
    (folder / TFLITE_FILE).write_bytes(data)
    # It is live: TensorFlow's interpreter runs Flex ops when it is invoked (the host
    # warms every model it loads with one image, which goes through this file).
    it = tf.lite.Interpreter(model_content=data)
    it.resize_tensor_input(it.get_input_details()[0]["index"], [1, 10, 10, 4])
    it.allocate_tensors()
    it.invoke()
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeModelError, match="FlexWriteFile"):
        Solver(folder)
    assert main(["solve", "--model", str(folder), str(captcha)]) == 1
    assert "FlexWriteFile" in capsys.readouterr().err
    assert not marker.exists()


# ---- the allowlist, case by case, on a real model's architecture ------------------

def _config(model_dir):
    with h5py.File(model_dir / KERAS_FILE, "r") as f:
        return json.loads(f.attrs["model_config"])


def _layer(cfg, name):
    return next(lay for lay in cfg["config"]["layers"] if lay["config"]["name"] == name)


def _tfoplambda(cfg):
    _layer(cfg, "columns").update(class_name="TFOpLambda")
    _layer(cfg, "columns")["config"]["function"] = "io.write_file"


def _nested_model(cfg):
    _layer(cfg, "dropout").update(class_name="Functional")


def _custom_layer(cfg):
    _layer(cfg, "dropout").update(class_name="MyDropout")


def _custom_module(cfg):
    _layer(cfg, "dropout")["module"] = "os"


def _registered(cfg):
    _layer(cfg, "dropout")["registered_name"] = "mypkg>MyDropout"


def _activation(cfg):
    _layer(cfg, "logits")["config"]["activation"] = "tf"


def _activation_object(cfg):
    _layer(cfg, "logits")["config"]["activation"] = {"class_name": "function", "config": "system",
                                                     "module": "os"}


def _initializer(cfg):
    _layer(cfg, "logits")["config"]["kernel_initializer"]["class_name"] = "MyInit"


def _function_key(cfg):
    _layer(cfg, "dropout")["config"]["function"] = ["4wEAAA==", None, None]


@pytest.mark.parametrize("attack, says", [
    (_tfoplambda, "'columns' is a TFOpLambda layer, which calls a TensorFlow op"),
    (_nested_model, "'dropout' is a nested model"),
    (_custom_layer, "'dropout' is a MyDropout layer, not one of the plain layers"),
    (_custom_module, "comes from module 'os'"),
    (_registered, "registered custom object 'mypkg>MyDropout'"),
    (_activation, "the activation 'tf'"),
    (_activation_object, "uses 'function'"),
    (_initializer, "uses 'MyInit'"),
    (_function_key, "carries a function"),
])
def test_anything_but_plain_layers_is_refused_by_name(tiny_model, attack, says):
    cfg = _config(tiny_model)
    check_keras_config(copy.deepcopy(cfg))  # the real architecture passes
    attack(cfg)
    with pytest.raises(UnsafeModelError, match=says):
        check_keras_config(cfg)


def test_a_file_swapped_after_the_check_is_not_what_gets_built(evil, tiny_model, tmp_path, monkeypatch):
    # The file is read once: the bytes that are checked are the bytes that are built.
    from captchalens import modelfile

    folder, marker = evil
    target = tmp_path / "m"
    shutil.copytree(tiny_model, target)
    check = modelfile.check_keras_config

    def check_then_swap(config, where):
        check(config, where)
        shutil.copyfile(folder / KERAS_FILE, target / KERAS_FILE)  # the race an attacker would run

    monkeypatch.setattr(modelfile, "check_keras_config", check_then_swap)
    model = load_keras(target / KERAS_FILE)
    assert "innocent_looking" not in [lay.name for lay in model.layers]
    assert not marker.exists()


def test_weights_without_an_architecture_or_a_non_file_are_refused(tiny_model, tmp_path):
    weights_only = tmp_path / "w.h5"
    keras.models.load_model(tiny_model / KERAS_FILE, compile=False).save_weights(weights_only)
    with pytest.raises(ContractError, match="no architecture"):
        load_keras(weights_only)
    os.mkfifo(tmp_path / "fifo.h5")
    with pytest.raises(ContractError, match="not a regular file"):
        load_keras(tmp_path / "fifo.h5")


@pytest.mark.parametrize("arch", ["small", "baseline", "ctc", "general"])
def test_every_architecture_the_project_trains_still_loads(arch, tmp_path):
    from captchalens.training import networks

    if arch not in networks.ARCHITECTURES:
        pytest.skip(f"no {arch!r} architecture in this version")
    ctc = arch in getattr(networks, "CTC_ARCHITECTURES", ("ctc",))
    meta = ModelMeta(name="m", charset="0123456789", input_height=48, input_width=128, input_channels=1,
                     decoding="ctc_greedy" if ctc else "fixed", output_shape=[32, 11] if ctc else [4, 10],
                     **({"min_length": 3, "max_length": 6} if ctc else {"length": 4}))
    model = networks.build(arch, meta)
    model.save(tmp_path / KERAS_FILE)
    assert load_keras(tmp_path / KERAS_FILE).count_params() == model.count_params()
    check_tflite(export_tflite(model, meta, tmp_path / TFLITE_FILE).read_bytes())


def test_the_shipped_model_loads_through_the_checks():
    assert load_keras(DEFAULT_MODEL / KERAS_FILE).output_shape[1:] == tuple(load_meta(DEFAULT_MODEL).output_shape)
    check_tflite((DEFAULT_MODEL / TFLITE_FILE).read_bytes())
