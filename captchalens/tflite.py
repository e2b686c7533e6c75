"""The single-captcha fast path: the model *and* its preprocessing as one
TFLite file (``model.tflite``) beside ``model.h5``.

One captcha through TensorFlow costs ~2.3 ms, almost all of it per-call
overhead (tf.function dispatch, oneDNN at batch size 1); the same graph in the
TFLite interpreter (XNNPACK) takes well under 1 ms.  The TFLite graph is
traced from the very same ops as the TF path (``Preprocessor._batch`` followed
by the Keras model), so the two give the same probabilities to float rounding
— ``tests/test_tflite.py`` holds them to it.  Batches keep going through TF,
which is faster per captcha there.

In the TFLite graph the alpha composite and the grey weighting are folded
into one 1x1 convolution, which XNNPACK runs in a tenth of the time of the
element-wise ops (0.10 vs 0.33 ms).  It is the same function, rearranged:
with ``g = rgb · w`` and ``a = alpha / 255``,

    sum_c w_c * (rgb_c * a + 255 * (1 - a))  =  S + a * (g - S),   S = 255 * sum(w)

so the two differ by float rounding only (measured ≤ 1.2e-7 on the input).

The file takes one RGBA uint8 image ``[1, H, W, 4]`` of any size; the
interpreter is resized when the size changes.  For a reader with a width rule
the graph computes the width from the image's shape (preprocess.tf_input_width),
so its output has as many steps as that width gives.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np

from .files import replacing

TFLITE_FILE = "model.tflite"


def export_tflite(model, meta, path: str | os.PathLike) -> Path:
    """Write `model` with `meta`'s preprocessing in front of it as a TFLite file."""
    from ._tf import _quiet_stderr, tf

    pre = fused_preprocess(meta)

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 4], tf.uint8, name="rgba")])
    def solve(rgba):
        return model(pre(rgba), training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([solve.get_concrete_function()], model)
    with _quiet_stderr():  # the MLIR passes log to fd 2
        data = converter.convert()  # float32 throughout: no quantisation, same answers as TF
    path = Path(path)
    path.write_bytes(data)
    return path


def fused_preprocess(meta):
    """preprocess.Preprocessor._batch with its per-pixel arithmetic as one 1x1
    convolution (see the module notes): RGBA uint8 [N, H, W, 4] -> model input."""
    from ._tf import tf
    from .preprocess import tf_input_size

    p = meta.preprocessing
    c = meta.input_channels
    mix = np.asarray(p["gray_weights"], np.float32)[:, None] if c == 1 else np.eye(3, dtype=np.float32)
    kernel = np.zeros((1, 1, 4, c + 1), np.float32)
    kernel[0, 0, :3, :c] = mix  # g = rgb · w
    kernel[0, 0, 3, c] = 1.0 / 255.0  # a = alpha / 255
    white = (255.0 * mix.sum(axis=0)).astype(np.float32)  # S: what white gives
    scale, offset = float(p["scale"]), float(p["offset"])

    def pre(rgba):
        y = tf.nn.conv2d(tf.cast(rgba, tf.float32), kernel, 1, "VALID")
        g, a = y[..., :c], y[..., c:]
        x = (white + a * (g - white)) * scale + offset
        return tf.image.resize(x, tf_input_size(meta, rgba), method="bilinear", antialias=False)

    return pre


class FastRunner:
    """A TFLite interpreter for one image at a time; thread-safe."""

    def __init__(self, path: str | os.PathLike, output_shape: list[int]):
        """output_shape: [steps, classes]; steps -1 for a reader whose width follows the image."""
        from ._tf import _quiet_stderr, tf
        from .modelfile import check_tflite, read_model_file

        self.path = Path(path)
        data = read_model_file(self.path)  # read once: the bytes checked are the bytes run
        check_tflite(data, str(self.path))  # UnsafeModelError for custom/Flex ops (modelfile.py)
        with warnings.catch_warnings(), _quiet_stderr():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            self._it = tf.lite.Interpreter(model_content=data, num_threads=1)
            # The first allocation applies the XNNPACK delegate, which logs an INFO
            # line to fd 2; do it here, quietly, rather than on the first image.
            self._it.allocate_tensors()
        inp, out = self._it.get_input_details(), self._it.get_output_details()
        if (len(inp) != 1 or len(out) != 1 or inp[0]["dtype"] != np.uint8
                or list(inp[0]["shape_signature"]) != [1, -1, -1, 4]
                or list(out[0]["shape_signature"][1:]) != list(output_shape)):
            raise ValueError(f"{self.path.name} does not take one RGBA image and give "
                             f"probabilities {output_shape}")
        self._in, self._out = inp[0]["index"], out[0]["index"]
        self._shape: tuple | None = None
        self._lock = threading.Lock()

    def probs(self, rgba: np.ndarray) -> np.ndarray:
        """One RGBA uint8 image [H, W, 4] -> probabilities [1, steps, classes]."""
        with self._lock:
            if rgba.shape != self._shape:
                self._it.resize_tensor_input(self._in, [1, *rgba.shape], strict=True)
                self._it.allocate_tensors()
                self._shape = rgba.shape
            self._it.set_tensor(self._in, rgba[None])
            self._it.invoke()
            return self._it.get_tensor(self._out).copy()


def add_tflite(model_dir: str | os.PathLike) -> Path:
    """Give an existing model folder its fast path (models saved before tflite.py
    existed): write model.tflite and list it in the metadata."""
    from .contract import KERAS_FILE, load_meta
    from .modelfile import load_keras

    model_dir = Path(model_dir)
    meta = load_meta(model_dir)
    model = load_keras(model_dir / meta.files.get("keras", KERAS_FILE))
    with replacing(model_dir / TFLITE_FILE) as tmp:
        export_tflite(model, meta, tmp)
    meta.files = {**meta.files, "tflite": TFLITE_FILE}
    meta.save(model_dir)
    return model_dir / TFLITE_FILE
