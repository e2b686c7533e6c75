"""Reading a model folder's files without running anything they contain.

A model folder someone shares is data, not a program.  Yet a Keras file can
hold code: a ``Lambda`` layer keeps the marshalled bytecode of a Python
function and runs it while the model is being rebuilt, a ``TFOpLambda``
calls any TensorFlow op by name (``tf.io.write_file`` included), and a
custom object names a class to import.  A TFLite file can hold "Flex" ops
that run TensorFlow kernels such as ``WriteFile`` when it is invoked.  So
every reader of a model folder — the solver, the local host's hot reload of
``~/.captchalens/models/``, the converter, ``train --base`` and fine-tuning —
loads its files through this module, which reads each file into memory once,
checks what it describes against an allowlist *before* anything is
deserialised, and builds the model from exactly the bytes it checked:

* ``model.h5``: the architecture JSON (the file's ``model_config``
  attribute) may name only the plain layers below, with built-in
  initializers, regularizers and constraints and activations by name; a
  nested model, ``Lambda``, ``TFOpLambda``, any custom or unknown class is
  refused with a ContractError naming the layer.  The weights are arrays.
* ``model.tflite``: one graph of the builtin ops below; a custom or Flex op,
  or control flow (more than one subgraph), is refused.

What is left is the attack surface of the parsers (HDF5, flatbuffers) and of
the kernels of plain layers, as with any data file.
"""
from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import Any

from .contract import ContractError

MAX_MODEL_BYTES = 256 * 1024 * 1024  # a captcha model is a few MB; refuse absurd files before reading

# Layers the project's architectures use (training/networks.py), and a few more
# plain ones a user's own network might: each is a fixed tensor function of
# its weights, with no code or op names in its config.
LAYERS = frozenset({
    "InputLayer", "Conv1D", "Conv2D", "SeparableConv2D", "DepthwiseConv2D", "BatchNormalization",
    "ReLU", "Activation", "Softmax", "MaxPooling2D", "AveragePooling2D", "Flatten", "Dropout",
    "Dense", "Reshape", "Permute", "ZeroPadding2D", "Add", "Concatenate",
})
MODELS = frozenset({"Functional", "Model", "Sequential"})  # the top level only; never nested
# Objects a plain layer's config may name (built-in initializers, regularizers,
# constraints, dtype policies).
NESTED = frozenset({
    "Zeros", "Ones", "Constant", "RandomUniform", "RandomNormal", "TruncatedNormal", "GlorotUniform",
    "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform", "LecunNormal", "VarianceScaling",
    "Orthogonal", "Identity", "L1", "L2", "L1L2", "MaxNorm", "NonNeg", "UnitNorm", "MinMaxNorm",
    "Policy", "DTypePolicy",
})
NESTED_MODULES = frozenset({None, "keras", "keras.initializers", "keras.regularizers", "keras.constraints",
                            "keras.mixed_precision", "keras.layers"})
ACTIVATIONS = frozenset({"linear", "relu", "relu6", "softmax", "sigmoid", "hard_sigmoid", "tanh", "elu",
                         "selu", "gelu", "swish", "silu", "softplus", "softsign", "exponential"})
# Why a refused class is dangerous, for the message.
CODE_LAYERS = {
    "Lambda": "runs Python bytecode stored in the file",
    "TFOpLambda": "calls a TensorFlow op named in the file",
    "SlicingOpLambda": "calls a TensorFlow op named in the file",
}

# model.tflite: the builtin ops of the fast path (captchalens/tflite.py: the fused
# preprocessing and a network of the layers above) and a few more plain ones.
TFLITE_OPS = frozenset({
    "ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "CAST", "CONV_2D", "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "EXPAND_DIMS", "SQUEEZE",
    "RESIZE_BILINEAR", "SOFTMAX", "STRIDED_SLICE", "SLICE", "RELU", "RELU6", "LOGISTIC", "TANH",
    "MEAN", "PAD", "CONCATENATION", "TRANSPOSE", "QUANTIZE", "DEQUANTIZE", "SPACE_TO_BATCH_ND",
    "BATCH_TO_SPACE_ND",
    # Whole-number shape arithmetic of a reader whose width follows the image
    # (preprocess.tf_input_width; the reshape and dilated convolution of a free width).
    "SHAPE", "PACK", "GATHER", "REDUCE_PROD", "FLOOR", "FLOOR_MOD", "SQRT", "SQUARED_DIFFERENCE",
    "GREATER", "LESS_EQUAL",
})


class UnsafeModelError(ContractError):
    """A model file describes something that would run code; it was not loaded."""


def read_model_file(path: str | os.PathLike) -> bytes:
    """A model file's bytes: a regular file of sane size, read once."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ContractError(f"{path}: no such file") from None
    except OSError as e:
        raise ContractError(f"{path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ContractError(f"{path}: not a regular file")
    if st.st_size > MAX_MODEL_BYTES:
        raise ContractError(f"{path}: {st.st_size} bytes; a model file may be at most {MAX_MODEL_BYTES}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MODEL_BYTES + 1)
    except OSError as e:
        raise ContractError(f"{path}: cannot read it ({e.strerror})") from None
    if len(data) > MAX_MODEL_BYTES:
        raise ContractError(f"{path}: larger than {MAX_MODEL_BYTES} bytes")
    return data


# ---- model.h5 ------------------------------------------------------------------

def check_keras_config(config: Any, where: str = "model.h5") -> None:
    """Refuse (UnsafeModelError) an architecture that names anything but plain layers."""
    if not isinstance(config, dict) or config.get("class_name") not in MODELS:
        kind = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise UnsafeModelError(f"{where}: the model is a {kind!r}, not a plain Keras model "
                               f"({', '.join(sorted(MODELS))}); refusing to load it")
    _check_module(config, where, "the model")
    body = config.get("config")
    if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
        raise UnsafeModelError(f"{where}: the architecture lists no layers; refusing to load it")
    for key, value in body.items():
        if key != "layers":
            _check_nested(value, where, "the model's config")
    for layer in body["layers"]:
        if not isinstance(layer, dict):
            raise UnsafeModelError(f"{where}: a layer entry is not an object; refusing to load it")
        cls = layer.get("class_name")
        lconf = layer.get("config") if isinstance(layer.get("config"), dict) else {}
        name = lconf.get("name") or layer.get("name") or "?"
        if cls not in LAYERS:
            if cls in CODE_LAYERS:
                why = f"is a {cls} layer, which {CODE_LAYERS[cls]}"
            elif cls in MODELS:
                why = f"is a nested model ({cls})"
            else:
                why = f"is a {cls} layer, not one of the plain layers CaptchaLens loads"
            raise UnsafeModelError(f"{where}: layer {name!r} {why}; refusing to load the model "
                                   f"(allowed: {', '.join(sorted(LAYERS))})")
        what = f"layer {name!r} ({cls})"
        _check_module(layer, where, what, {None, "keras.layers"})
        for key, value in layer.items():
            if key not in ("class_name", "module", "registered_name"):
                _check_nested(value, where, what)


def _check_module(obj: dict, where: str, what: str, allowed=NESTED_MODULES) -> None:
    module, registered = obj.get("module"), obj.get("registered_name")
    if module not in allowed:
        raise UnsafeModelError(f"{where}: {what} comes from module {module!r}; refusing to load it")
    if registered not in (None, obj.get("class_name")):
        raise UnsafeModelError(f"{where}: {what} is a registered custom object {registered!r}; "
                               f"refusing to load it")


def _check_nested(value: Any, where: str, what: str, key: str | None = None) -> None:
    """Walk a layer's config: named objects must be built-in, activations named plainly."""
    if isinstance(value, dict):
        if "class_name" in value:
            cls = value["class_name"]
            if cls == "__keras_tensor__" and key is None:
                pass  # a node's input reference (newer tf_keras node format)
            elif cls not in NESTED:
                raise UnsafeModelError(f"{where}: {what} uses {cls!r} ({key or 'config'}), which is not a "
                                       f"built-in initializer, regularizer or constraint; refusing to load it")
            _check_module(value, where, what)
        for k, v in value.items():
            if k in ("function", "function_type", "output_shape_type", "fn"):
                raise UnsafeModelError(f"{where}: {what} carries a function ({k}); refusing to load it")
            if k in ("module", "registered_name"):
                continue
            _check_nested(v, where, what, k if isinstance(k, str) else None)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_nested(v, where, what, None)
    elif key == "activation" and value is not None and value not in ACTIVATIONS:
        raise UnsafeModelError(f"{where}: {what} uses the activation {value!r}, which is not a built-in "
                               f"one ({', '.join(sorted(ACTIVATIONS))}); refusing to load it")


def load_keras(path: str | os.PathLike):
    """Load a tf_keras model file (model.h5) without running anything it holds.

    Raises ContractError for a missing or damaged file and UnsafeModelError
    (a ContractError) for an architecture outside the allowlist; the model is
    built from the very bytes that were checked."""
    import h5py

    path = Path(path)
    data = read_model_file(path)
    try:
        h5 = h5py.File(io.BytesIO(data), "r")
    except Exception as e:  # noqa: BLE001 - h5py raises many types for a damaged file
        raise ContractError(f"{path}: cannot load the model ({_first_line(e)})") from None
    with h5:
        raw = h5.attrs.get("model_config")
        if raw is None:
            raise ContractError(f"{path}: cannot load the model (the file holds no architecture, only "
                                f"weights; save it with model.save)")
        try:
            config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
        except (UnicodeDecodeError, ValueError) as e:
            raise ContractError(f"{path}: cannot load the model (its architecture is not JSON: "
                                f"{_first_line(e)})") from None
        check_keras_config(config, str(path))
        from ._tf import keras

        try:
            return keras.models.load_model(h5, compile=False)
        except Exception as e:  # noqa: BLE001 - keras raises many types for a damaged file
            raise ContractError(f"{path}: cannot load the model ({_first_line(e)})") from None


# ---- model.tflite --------------------------------------------------------------

def tflite_ops(data: bytes) -> tuple[list[str], int]:
    """(operator names, subgraph count) of a TFLite flatbuffer, read without running it.
    Custom ops are named 'CUSTOM:<code>'. Raises ValueError for a damaged file."""
    from ._tf import tf  # noqa: F401 - imported quietly before TF's lite modules
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    try:
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ValueError("not a TFLite file")
        model = schema.Model.GetRootAsModel(data, 0)
        ops = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            name = names.get(code, f"#{code}")
            if name == "CUSTOM" or oc.CustomCode():
                name = "CUSTOM:" + (oc.CustomCode() or b"").decode("utf-8", "replace")
            ops.append(name)
        return ops, model.SubgraphsLength()
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - the flatbuffer reader fails in many ways on rubbish
        raise ValueError(f"not a readable TFLite file ({_first_line(e)})") from None


def check_tflite(data: bytes, where: str = "model.tflite") -> None:
    """Refuse (UnsafeModelError) a TFLite graph with custom/Flex ops or control flow;
    ValueError for a damaged file."""
    ops, subgraphs = tflite_ops(data)
    bad = sorted({op for op in ops if op not in TFLITE_OPS})
    if bad:
        flex = [op for op in bad if op.startswith("CUSTOM:Flex")]
        why = ("Flex ops run TensorFlow kernels (file writes included)" if flex
               else "only the plain builtin ops of a CaptchaLens network are run")
        raise UnsafeModelError(f"{where}: uses the op(s) {', '.join(bad)}; {why}; refusing to load it")
    if subgraphs != 1:
        raise UnsafeModelError(f"{where}: has {subgraphs} subgraphs (control flow); a CaptchaLens network "
                               f"has one; refusing to load it")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
