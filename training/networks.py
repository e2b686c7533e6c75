"""The networks, built with tf_keras so the tensorflowjs converter reads them.

Every model has one input [H, W, C] and ONE output tensor (a graph model
returns several outputs in a surprising order; one stacked tensor avoids it):

* fixed-length models: softmax probabilities [length, len(charset)];
* CTC models: softmax probabilities [steps, len(charset) + 1], blank last,
  decoded greedily (collapse repeats, drop blanks) — simple enough to write
  once in JS, since TF.js has no CTC decoder.

Architectures:

* ``baseline`` — the seed's design: five plain 3x3 conv layers, a dense layer
  and one softmax head per character.
* ``small`` (default) — a compact conv net: a full 3x3 stem, then depthwise-
  separable blocks, a height-collapsing conv, and one dense layer that reads
  the whole column sequence into the per-position heads.
* ``ctc`` — the same trunk keeping 32 columns as time steps, with a 1-D conv
  for context and a per-step softmax (variable-length captchas).
"""
from __future__ import annotations

from captchalens._tf import keras, tf

L = keras.layers


def _conv(x, filters, kernel=3, strides=1, name=None):
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = L.BatchNormalization(name=None if name is None else name + "_bn")(x)
    return L.ReLU(name=None if name is None else name + "_relu")(x)


def _sep(x, filters, name):
    x = L.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    x = L.BatchNormalization(name=name + "_bn")(x)
    return L.ReLU(name=name + "_relu")(x)


def _trunk(inp, width: float = 1.0, keep_columns: bool = False):
    """Shared trunk: [H, W] -> [H/8, W/8 (or W/4), c]."""
    c = lambda n: max(8, int(round(n * width)))  # noqa: E731
    x = _conv(inp, c(32), name="stem")
    x = L.MaxPool2D(2, name="pool1")(x)
    x = _sep(x, c(64), "sep2a")
    x = _sep(x, c(64), "sep2b")
    x = L.MaxPool2D(2, name="pool2")(x)
    x = _sep(x, c(128), "sep3a")
    x = _sep(x, c(128), "sep3b")
    x = L.MaxPool2D((2, 1) if keep_columns else 2, name="pool3")(x)
    x = _sep(x, c(192), "sep4a")
    x = _sep(x, c(192), "sep4b")
    return x


def build_small(meta, width: float = 1.0, dropout: float = 0.25):
    """The default fixed-length model (about 0.6 M params, 30 M MACs at 48x128)."""
    inp = L.Input((meta.input_height, meta.input_width, meta.input_channels), name="image")
    x = _trunk(inp, width)
    h = x.shape[1]
    x = L.Conv2D(int(128 * width), (h, 1), padding="valid", use_bias=False, name="collapse")(x)
    x = L.BatchNormalization(name="collapse_bn")(x)
    x = L.ReLU(name="collapse_relu")(x)
    x = L.Flatten(name="columns")(x)
    x = L.Dropout(dropout, name="dropout")(x)
    return _fixed_head(x, inp, meta, "small")


def build_baseline(meta, dropout: float = 0.3):
    """The seed's design: 5 conv layers, dense, one softmax head per character."""
    inp = L.Input((meta.input_height, meta.input_width, meta.input_channels), name="image")
    x = inp
    for i, f in enumerate((32, 64, 128, 128, 256)):
        x = _conv(x, f, name=f"conv{i + 1}")
        if i < 4:
            x = L.MaxPool2D(2, name=f"pool{i + 1}")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dropout(dropout, name="dropout")(x)
    x = L.Dense(128, activation="relu", name="fc")(x)
    return _fixed_head(x, inp, meta, "baseline")


def _fixed_head(x, inp, meta, arch):
    n, k = meta.length, len(meta.charset)
    x = L.Dense(n * k, name="logits")(x)
    x = L.Reshape((n, k), name="positions")(x)
    out = L.Softmax(axis=-1, name="probs")(x)
    return keras.Model(inp, out, name=f"captchalens_{arch}")


def build_ctc(meta, width: float = 1.0, dropout: float = 0.25):
    """Variable-length model: per-column softmax over charset + blank."""
    inp = L.Input((meta.input_height, meta.input_width, meta.input_channels), name="image")
    x = _trunk(inp, width, keep_columns=True)
    h = x.shape[1]
    x = L.Conv2D(int(128 * width), (h, 1), padding="valid", use_bias=False, name="collapse")(x)
    x = L.BatchNormalization(name="collapse_bn")(x)
    x = L.ReLU(name="collapse_relu")(x)
    x = L.Reshape((x.shape[2], x.shape[3]), name="steps")(x)
    x = L.Conv1D(int(128 * width), 5, padding="same", activation="relu", name="context")(x)
    x = L.Dropout(dropout, name="dropout")(x)
    x = L.Dense(len(meta.charset) + 1, name="logits")(x)
    out = L.Softmax(axis=-1, name="probs")(x)
    return keras.Model(inp, out, name="captchalens_ctc")


def build_general(meta, width: float = 1.0, dropout: float = 0.2):
    """The universal reader (CTC): a slimmer trunk than ``ctc`` keeping W/4
    columns, and more of its capacity in two 1-D context convolutions, where
    it is cheap (columns are few) and where reading a word happens.  About
    0.45 M params and 40 M MACs at 48x160.  With a width rule in the metadata
    (preprocessing.resize.width) it takes any width: the same weights, as many
    steps as the image's width gives."""
    c = lambda n: max(8, int(round(n * width)))  # noqa: E731
    flexible = meta.width_rule is not None
    inp = L.Input((meta.input_height, None if flexible else meta.input_width, meta.input_channels), name="image")
    x = _conv(inp, c(24), name="stem")
    x = L.MaxPool2D(2, name="pool1")(x)
    x = _sep(x, c(48), "sep2a")
    x = _sep(x, c(48), "sep2b")
    x = L.MaxPool2D(2, name="pool2")(x)
    x = _sep(x, c(96), "sep3a")
    x = _sep(x, c(96), "sep3b")
    x = L.MaxPool2D((2, 1), name="pool3")(x)
    x = _sep(x, c(128), "sep4a")
    x = _sep(x, c(128), "sep4b")
    h = x.shape[1]
    x = L.Conv2D(c(160), (h, 1), padding="valid", use_bias=False, name="collapse")(x)
    x = L.BatchNormalization(name="collapse_bn")(x)
    x = L.ReLU(name="collapse_relu")(x)
    x = L.Reshape((-1 if flexible else x.shape[2], x.shape[3]), name="steps")(x)
    x = L.Conv1D(c(160), 5, padding="same", activation="relu", name="context")(x)
    x = L.Conv1D(c(160), 5, padding="same", dilation_rate=2, activation="relu", name="context2")(x)
    x = L.Dropout(dropout, name="dropout")(x)
    x = L.Dense(len(meta.charset) + 1, name="logits")(x)
    out = L.Softmax(axis=-1, name="probs")(x)
    return keras.Model(inp, out, name="captchalens_general")


ARCHITECTURES = {"small": build_small, "baseline": build_baseline, "ctc": build_ctc,
                 "general": build_general}
CTC_ARCHITECTURES = ("ctc", "general")


def build(arch: str, meta, **kw):
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](meta, **kw)


def ctc_steps(meta, arch: str = "ctc") -> int:
    """Time steps of a CTC model for this input width (pools: 2, 2, then (2,1))."""
    return meta.input_width // 4


# ---- losses ------------------------------------------------------------------

def smoothed_ce(smoothing: float = 0.1):
    """The seed's loss: label-smoothed cross-entropy per position, summed over
    positions; Keras averages the per-sample sums over the batch."""

    def loss(y_true, y_prob):
        k = tf.shape(y_prob)[-1]
        y = tf.one_hot(tf.cast(y_true, tf.int32), k)
        y = y * (1.0 - smoothing) + smoothing / tf.cast(k, tf.float32)
        p = tf.clip_by_value(y_prob, 1e-7, 1.0)
        return -tf.reduce_sum(y * tf.math.log(p), axis=[1, 2])

    loss.__name__ = "smoothed_ce"
    return loss


def ctc_loss(y_true, y_prob):
    """CTC on softmax outputs. y_true: [B, max_len] int, padded with -1."""
    y_true = tf.cast(y_true, tf.int32)
    label_len = tf.reduce_sum(tf.cast(y_true >= 0, tf.int32), axis=1, keepdims=True)
    b = tf.shape(y_prob)[0]
    steps = tf.fill([b, 1], tf.shape(y_prob)[1])
    labels = tf.where(y_true >= 0, y_true, 0)
    return keras.backend.ctc_batch_cost(labels, y_prob, steps, label_len)[:, 0]


def count_macs(model, input_shape: tuple | None = None) -> int:
    """Multiply-adds of one forward pass (conv, separable conv, dense, 1-D conv); for a
    model whose input width is free, at `input_shape` (H, W, C), its reference size."""
    if None in model.input_shape[1:]:
        if input_shape is None:
            raise ValueError("the model's input size is free: count its multiply-adds at an input_shape")
        model = keras.models.clone_model(model, input_tensors=L.Input(input_shape))
    total = 0
    for layer in model.layers:
        if isinstance(layer, L.SeparableConv2D):
            _, h, w, c_out = layer.output.shape
            c_in = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += h * w * c_in * kh * kw * layer.depth_multiplier + h * w * c_in * layer.depth_multiplier * c_out
        elif isinstance(layer, L.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * kh * kw * layer.input.shape[-1] * c_out
        elif isinstance(layer, L.Conv1D):
            _, t, c_out = layer.output.shape
            total += t * layer.kernel_size[0] * layer.input.shape[-1] * c_out
        elif isinstance(layer, L.Dense):
            total += int(tf.reduce_prod(layer.kernel.shape))
    return int(total)


# ---- widening --------------------------------------------------------------

def widen_from(model, base) -> list[str]:
    """Copy a narrower `base` of the same architecture into `model` (built with a
    larger width multiplier) so that `model` computes exactly what `base` does:
    every old weight kept in the leading slice of its tensor; weights that read a
    new input channel are zero, so the new channels change nothing until training
    gives them a use; the rest (what writes the new channels) keeps `model`'s own
    random initialization, so they start out different from one another.
    Returns the names of the widened layers; ValueError when the two differ in
    anything but channel counts."""
    if any(isinstance(layer, L.Flatten) for layer in model.layers) and \
            [w.shape for w in model.get_weights()] != [w.shape for w in base.get_weights()]:
        # Its dense layer reads columns x channels interleaved: new channels land between old ones.
        raise ValueError(f"{model.name} flattens its features before a dense layer, so it cannot be widened")
    grown = []
    for layer in model.layers:
        new = layer.get_weights()
        if not new:
            continue
        try:
            old = base.get_layer(layer.name).get_weights()
        except ValueError:
            raise ValueError(f"the base model has no layer {layer.name!r}") from None
        if len(old) != len(new) or any(o.ndim != n.ndim or any(a > b for a, b in zip(o.shape, n.shape))
                                       for o, n in zip(old, new)):
            raise ValueError(f"layer {layer.name!r}: {[o.shape for o in old]} does not fit in "
                             f"{[n.shape for n in new]}")
        if all(o.shape == n.shape for o, n in zip(old, new)):
            layer.set_weights(old)
            continue
        out = []
        for i, (o, n) in enumerate(zip(old, new)):
            w = n.copy()
            w[tuple(slice(0, s) for s in o.shape)] = o
            axis = _input_axis(layer, i, w.ndim)
            if axis is not None and w.shape[axis] > o.shape[axis]:
                cut = [slice(None)] * w.ndim
                cut[axis] = slice(o.shape[axis], None)
                w[tuple(cut)] = 0.0
            out.append(w)
        layer.set_weights(out)
        grown.append(layer.name)
    return grown


def _input_axis(layer, index: int, ndim: int) -> int | None:
    """The axis of weight `index` of `layer` that runs over the layer's input channels,
    for the weights through which a new input channel would reach the output."""
    if isinstance(layer, L.SeparableConv2D):
        # depthwise [kh, kw, cin, mult] reads one channel each: it stays random, and the
        # pointwise [1, 1, cin * mult, cout] rows of new channels are zero.
        return 2 if index == 1 else None
    if isinstance(layer, (L.Conv2D, L.Conv1D, L.Dense)) and index == 0:
        return ndim - 2
    return None  # biases, batch-norm statistics: per output channel
