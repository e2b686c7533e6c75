"""Augmentation for small training sets, as TF ops inside tf.data.

It works on what the model reads — the preprocessed float input in [0, 1],
a batch [B, H, W, C] — so the model-input contract is untouched: the saved
model has no augmentation layers and sees, at solve time, exactly what the
preprocessing of captchalens.json gives it.

Each captcha of a batch gets its own random:

* affine warp: shift, scale, rotation and shear about the centre (edge
  pixels repeat into the uncovered border, so no black bars appear);
* brightness and contrast;
* Gaussian noise;
* for a reader whose width follows the image, a stretch of the whole batch's width.

    ds = ds.map(make_augment(), num_parallel_calls=tf.data.AUTOTUNE)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from captchalens._tf import tf


@dataclass(frozen=True)
class AugmentSpec:
    """Largest change of each kind; every captcha draws uniformly below it."""

    shift_x: float = 0.04  # share of the width
    shift_y: float = 0.08  # share of the height
    scale: float = 0.08  # zoom in or out by up to 8 %
    rotate_deg: float = 4.0
    shear: float = 0.15  # horizontal shear (slanted glyphs)
    brightness: float = 0.12  # added to every pixel
    contrast: float = 0.35  # contrast factor in [1 - c, 1 + c]
    noise: float = 0.04  # largest Gaussian noise standard deviation
    keep_share: float = 0.1  # captchas left untouched, so clean inputs stay familiar
    stretch: float = 0.0  # a batch's width stretched by up to this share (a reader whose width
    #                        follows the image only: its width rule's multiple); 0: off
    multiple: int = 8  # the width rule's multiple the stretched width is rounded to

    def to_json(self) -> dict:
        return asdict(self)


def _uniform(n, limit):
    return tf.random.uniform([n], -limit, limit)


def affine(x: tf.Tensor, spec: AugmentSpec) -> tf.Tensor:
    """Random shift/scale/rotation/shear of each image of a batch [B, H, W, C]."""
    b = tf.shape(x)[0]
    h = tf.cast(tf.shape(x)[1], tf.float32)
    w = tf.cast(tf.shape(x)[2], tf.float32)
    angle = _uniform(b, spec.rotate_deg * math.pi / 180.0)
    zoom = 1.0 + _uniform(b, spec.scale)
    shear = _uniform(b, spec.shear)
    tx = _uniform(b, spec.shift_x) * w
    ty = _uniform(b, spec.shift_y) * h
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # Output pixel p reads input q = A (p - c) + c + t, with A = rotation/zoom then shear.
    a0, a1 = cos, -sin + shear * cos
    b0, b1 = sin, cos + shear * sin
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    a2 = cx - a0 * cx - a1 * cy + tx
    b2 = cy - b0 * cx - b1 * cy + ty
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="NEAREST")


def photometric(x: tf.Tensor, spec: AugmentSpec) -> tf.Tensor:
    """Random brightness, contrast and Gaussian noise per image of a batch."""
    b = tf.shape(x)[0]
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    contrast = tf.reshape(1.0 + _uniform(b, spec.contrast), [-1, 1, 1, 1])
    bright = tf.reshape(_uniform(b, spec.brightness), [-1, 1, 1, 1])
    x = (x - mean) * contrast + mean + bright
    sigma = tf.reshape(tf.random.uniform([b], 0.0, spec.noise), [-1, 1, 1, 1])
    return x + tf.random.normal(tf.shape(x)) * sigma


def stretch(x: tf.Tensor, y: tf.Tensor, spec: AugmentSpec) -> tf.Tensor:
    """A batch [B, H, W, C] of one width, resized to W times a random factor in
    1 +- spec.stretch, rounded to spec.multiple: the same captchas a little wider or narrower,
    as the reader meets them when a site's captchas are not drawn at the aspect its width rule
    expects (the rule's scales read them so too).  Never narrower than its labels need: CTC
    needs two steps (8 columns at 4 a step) a character; y: labels padded with -1."""
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    m = spec.multiple
    factor = 1.0 + tf.random.uniform([], -spec.stretch, spec.stretch)
    want = tf.cast(tf.round(tf.cast(w, tf.float32) * factor / m), tf.int32) * m
    longest = tf.reduce_max(tf.reduce_sum(tf.cast(y >= 0, tf.int32), axis=1))
    need = tf.minimum(w, (8 * longest + m - 1) // m * m)
    return tf.image.resize(x, tf.stack([h, tf.maximum(want, need)]), method="bilinear")


def stretch_problem(share: float, augment: bool, width_follows: bool) -> str | None:
    """Why `--stretch share` cannot be used (None: it can): it needs augmentation and a reader
    whose width follows the image (a width rule: --arch general), and a share in (0, 0.5)."""
    if not share or (augment and width_follows and 0 < share < 0.5):
        return None
    return (f"--stretch {share:g} needs a share between 0 and 0.5, --augment and --arch general "
            "(a reader whose width follows the image)")


def make_augment(spec: AugmentSpec | None = None):
    """A tf.data map function (x [B,H,W,C] float in [0,1], y) -> (augmented x, y)."""
    spec = spec or AugmentSpec()

    def augment(x, y):
        if spec.stretch:
            x = stretch(x, y, spec)
        out = tf.clip_by_value(photometric(affine(x, spec), spec), 0.0, 1.0)
        keep = tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < spec.keep_share
        return tf.where(keep, x, out), y

    return augment
