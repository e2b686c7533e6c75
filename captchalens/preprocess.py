"""Pixels -> model input, with the tensor ops the extension uses too.

The order and the ops are fixed by the model contract (metadata
``preprocessing``) and mirrored line for line in extension/lib/engine.js (preprocess()):

    x    = float32(rgba)
    rgb  = x[..., :3] * a + 255 * (1 - a),  a = x[..., 3:] / 255
    gray = sum(rgb * gray_weights, -1)          (1-channel models)
    y    = gray * scale + offset
    y    = resize_bilinear(y, [H, W], half_pixel_centers=True)

W is the metadata's input_width, or, with a width rule (preprocessing.resize.width), the
width the rule gives the image's shape (tf_input_width; ModelMeta.input_width_for).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ._tf import tf
from .contract import ModelMeta


def tf_input_width(meta: ModelMeta, height: tf.Tensor, width: tf.Tensor, percent: int = 100) -> tf.Tensor:
    """ModelMeta.scaled_width as int32 graph ops (the TF solver's and the TFLite file's):
    the float estimate of k, then the same whole-number corrections."""
    rule = meta.width_rule
    m, ref, rows = rule["multiple"], meta.input_width, meta.input_height
    h, w = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    bound = 4 * ref * rows * w  # < 2**31 for every image within the size limits
    est = tf.sqrt(tf.cast(ref * rows, tf.float32) * tf.cast(w, tf.float32) / tf.cast(h, tf.float32))
    k = tf.cast(tf.floor(est / m + 0.5), tf.int32)
    k = k - tf.cast(tf.square(2 * m * k - m) * h > bound, tf.int32)
    k = k + tf.cast(tf.square(2 * m * (k + 1) - m) * h <= bound, tf.int32)
    base = tf.clip_by_value(m * k, rule["min"], rule["max"])
    if percent == 100:
        return base
    return tf.clip_by_value(m * ((base // m * percent + 50) // 100), rule["min"], rule["max"])


def tf_input_size(meta: ModelMeta, images: tf.Tensor, percent: int = 100):
    """[H, W] to resize a batch [N, h, w, C] of one image size to (read at `percent`)."""
    if meta.width_rule is None:
        return (meta.input_height, meta.input_width)
    shape = tf.shape(images)
    return tf.stack([tf.constant(meta.input_height, tf.int32), tf_input_width(meta, shape[1], shape[2], percent)])


class Preprocessor:
    """Turns RGBA uint8 images of any size into a model's input batch."""

    def __init__(self, meta: ModelMeta):
        self.meta = meta
        p = meta.preprocessing
        self.size = (meta.input_height, meta.input_width)
        self.gray = meta.input_channels == 1
        self.weights = tf.constant(p["gray_weights"], tf.float32)
        self.scale = float(p["scale"])
        self.offset = float(p["offset"])
        self._fn = tf.function(
            self._fixed, input_signature=[tf.TensorSpec([None, None, None, 4], tf.uint8)],
            reduce_retracing=True)
        self._at_rule = tf.function(
            self._batch, input_signature=[tf.TensorSpec([None, None, None, 4], tf.uint8)],
            reduce_retracing=True)

    def _pixels(self, rgba: tf.Tensor) -> tf.Tensor:
        x = tf.cast(rgba, tf.float32)
        a = x[..., 3:4] / 255.0
        rgb = x[..., :3] * a + 255.0 * (1.0 - a)
        if self.gray:
            y = tf.reduce_sum(rgb * self.weights, axis=-1, keepdims=True)
        else:
            y = rgb
        return y * self.scale + self.offset

    def _batch(self, rgba: tf.Tensor, percent: int = 100) -> tf.Tensor:
        """What the solver reads: resized to the width the rule gives (input_width without one),
        at `percent` of it (the rule's scales)."""
        return tf.image.resize(self._pixels(rgba), tf_input_size(self.meta, rgba, percent), method="bilinear",
                               antialias=False)

    def _fixed(self, rgba: tf.Tensor) -> tf.Tensor:
        return tf.image.resize(self._pixels(rgba), self.size, method="bilinear", antialias=False)

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """images: RGBA uint8 arrays, sizes may differ. Returns float32 [N, H, W, C] at the
        metadata's input_height x input_width, whatever its width rule: the arrays training
        and fine-tuning feed the network (a reader with a width rule is trained at its
        reference width; the solver reads through _batch, which follows the rule)."""
        out = np.empty((len(images), *self.size, 1 if self.gray else 3), np.float32)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            by_size[im.shape[:2]].append(i)
        for idx in by_size.values():
            batch = np.stack([images[i] for i in idx])
            out[idx] = self._fn(tf.constant(batch)).numpy()
        return out

    def wide(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """images: RGBA uint8 arrays, sizes may differ, for a reader with a width rule. Returns
        (float32 [N, H, max, C], int32 [N]): each image as the solver reads it (_batch, at the
        width the rule gives it) in its first widths[i] columns, the rest what a white pixel
        preprocesses to; max is the rule's. The arrays a reader with a width rule trains on."""
        rule = self.meta.width_rule
        if rule is None:
            raise ValueError(f"{self.meta.name}: reads every image {self.meta.input_width} wide "
                             f"(no width rule): its inputs are Preprocessor(meta)(images)")
        white = 255.0 * self.scale + self.offset
        out = np.full((len(images), self.size[0], rule["max"], 1 if self.gray else 3), white, np.float32)
        widths = np.empty(len(images), np.int32)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            by_size[im.shape[:2]].append(i)
        for (h, w), idx in by_size.items():
            width = self.meta.input_width_for(w, h)
            batch = self._at_rule(tf.constant(np.stack([images[i] for i in idx]))).numpy()
            if batch.shape[2] != width:  # the graph's rule and the contract's must agree
                raise AssertionError(f"{w}x{h}: read {batch.shape[2]} wide, the contract says {width}")
            out[idx, :, :width] = batch
            widths[idx] = width
        return out, widths
