"""Pixels -> model input, with the tensor ops the extension uses too.

The order and the ops are fixed by the model contract (metadata
``preprocessing``) and mirrored line for line in extension/lib/engine.js (preprocess()):

    x    = float32(rgba)
    rgb  = x[..., :3] * a + 255 * (1 - a),  a = x[..., 3:] / 255
    gray = sum(rgb * gray_weights, -1)          (1-channel models)
    y    = gray * scale + offset
    y    = resize_bilinear(y, [H, W], half_pixel_centers=True)
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ._tf import tf
from .contract import ModelMeta


class Preprocessor:
    """Turns RGBA uint8 images of any size into a model's input batch."""

    def __init__(self, meta: ModelMeta):
        p = meta.preprocessing
        self.size = (meta.input_height, meta.input_width)
        self.gray = meta.input_channels == 1
        self.weights = tf.constant(p["gray_weights"], tf.float32)
        self.scale = float(p["scale"])
        self.offset = float(p["offset"])
        self._fn = tf.function(
            self._batch, input_signature=[tf.TensorSpec([None, None, None, 4], tf.uint8)],
            reduce_retracing=True)

    def _batch(self, rgba: tf.Tensor) -> tf.Tensor:
        x = tf.cast(rgba, tf.float32)
        a = x[..., 3:4] / 255.0
        rgb = x[..., :3] * a + 255.0 * (1.0 - a)
        if self.gray:
            y = tf.reduce_sum(rgb * self.weights, axis=-1, keepdims=True)
        else:
            y = rgb
        y = y * self.scale + self.offset
        return tf.image.resize(y, self.size, method="bilinear", antialias=False)

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """images: RGBA uint8 arrays, sizes may differ. Returns float32 [N, H, W, C]."""
        out = np.empty((len(images), *self.size, 1 if self.gray else 3), np.float32)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            by_size[im.shape[:2]].append(i)
        for idx in by_size.values():
            batch = np.stack([images[i] for i in idx])
            out[idx] = self._fn(tf.constant(batch)).numpy()
        return out
