"""Fold inference-time BatchNormalization (and a following ReLU) into the layer
before it, for the TF.js copy of a model.

In TF.js a layers model runs every Keras layer as its own op: a conv, then a
batch norm over its whole output, then a ReLU over it again. Folding the batch
norm's scale and shift into the conv's kernel and bias, and the ReLU into the
conv's activation, leaves one op per block with the same arithmetic (up to
float rounding). TensorFlow's own runtime and the TFLite converter do this
already; the TF.js layers runtime does not.

Measured with bench/browser_bench.py, the shipped default before/after, two
alternating rounds on an AMD EPYC (AVX2): wasm backend 8.85 / 7.30 ms ->
6.10 / 5.70 ms per captcha (median). The cpu backend, which the extension only
falls back to, got slower (best run 76 -> 105 ms): its bias add costs more than
its batch-norm kernel did.

Only chains are rebuilt (every layer reads the one before it, as every
CaptchaLens architecture does); anything else is returned unchanged.
"""
from __future__ import annotations

import numpy as np

from captchalens._tf import keras

L = keras.layers
_FOLDABLE = (L.SeparableConv2D, L.DepthwiseConv2D, L.Conv2D, L.Conv1D, L.Dense)


def _is_chain(model) -> bool:
    layers = model.layers
    if len(model.inputs) != 1 or len(model.outputs) != 1 or not isinstance(layers[0], L.InputLayer):
        return False
    return all(len(layer._inbound_nodes) == 1 and layer.input is prev.output
               for prev, layer in zip(layers, layers[1:])) and model.outputs[0] is layers[-1].output


def _plain_relu(layer) -> bool:
    if not isinstance(layer, L.ReLU):
        return False
    c = layer.get_config()
    return c.get("max_value") is None and not c.get("negative_slope") and not c.get("threshold")


def _bn_scale_shift(bn, channels: int):
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    if axis not in (-1, len(bn.input.shape) - 1):
        return None
    w = list(bn.get_weights())
    gamma = w.pop(0) if bn.scale else np.ones(channels, np.float32)
    beta = w.pop(0) if bn.center else np.zeros(channels, np.float32)
    mean, var = w
    s = gamma / np.sqrt(var + bn.epsilon)
    return s.astype(np.float32), (beta - mean * s).astype(np.float32)


def _folded(layer, bn, relu: bool):
    """A copy of `layer` with `bn` (and a ReLU) folded in, or None if it cannot be."""
    if layer.get_config().get("activation") not in ("linear", None):
        return None
    w = layer.get_weights()
    out_channels = layer.output.shape[-1]
    ss = _bn_scale_shift(bn, out_channels)
    if ss is None:
        return None
    s, t = ss
    bias = w[-1] if layer.use_bias else np.zeros(out_channels, np.float32)
    kernels = w[:-1] if layer.use_bias else w
    if isinstance(layer, L.SeparableConv2D):  # depthwise stays; the pointwise kernel takes the scale
        kernels = [kernels[0], kernels[1] * s]
    elif isinstance(layer, L.DepthwiseConv2D):  # [kh, kw, in, mult]: out channel = in * mult + m
        k = kernels[0]
        kernels = [k * s.reshape(k.shape[2], k.shape[3])]
    else:  # Conv2D [kh, kw, in, out], Conv1D [k, in, out], Dense [in, out]
        kernels = [kernels[0] * s]
    cfg = layer.get_config()
    cfg["use_bias"] = True
    if relu:
        cfg["activation"] = "relu"
    new = type(layer).from_config(cfg)
    return new, [*kernels, bias * s + t]


def fold_batchnorm(model):
    """(an equivalent model with BatchNormalization (+ ReLU) folded into the layer
    before, how many batch norms were folded); (model, 0) when none can be."""
    if not _is_chain(model):
        return model, 0
    layers = model.layers
    x = inp = L.Input(batch_shape=model.input_shape, name=layers[0].name)
    pending = []  # (layer, weights): set once the layer is built
    i, folded = 1, 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        after = layers[i + 2] if i + 2 < len(layers) else None
        made = None
        if isinstance(layer, _FOLDABLE) and isinstance(nxt, L.BatchNormalization):
            made = _folded(layer, nxt, relu=_plain_relu(after))
        if made:
            new, weights = made
            i += 3 if new.get_config()["activation"] == "relu" else 2
            folded += 1
        else:
            new, weights = type(layer).from_config(layer.get_config()), layer.get_weights()
            i += 1
        x = new(x)
        pending.append((new, weights))
    if not folded:
        return model, 0
    for new, weights in pending:
        new.set_weights(weights)
    return keras.Model(inp, x, name=model.name), folded
