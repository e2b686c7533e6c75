"""Training inputs at the widths a reader reads them at.

A reader with a width rule (contract WIDTH_RULES) reads each image at a width of its own, a
multiple of 8 from the rule's min to its max.  It is trained the same way: every image is
preprocessed at its rule width (preprocess.Preprocessor.wide) and kept in a `WideImages`,
padded on the right to the rule's max, with its width beside it.  Batches take images of one
width (tf.data bucket_by_sequence_length, one bucket per width in the set) and are cropped to it, so the
padding is never read; predictions are made width by width and laid out as the solver lays
them out (decode.padded_probs).

Arrays of one fixed width (a reader without a rule) go through the same functions unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captchalens.decode import padded_probs  # numpy only: generate.py's workers import this


@dataclass(frozen=True, eq=False)
class WideImages:
    """uint8 model inputs [N, H, W_max, C], each image in its first widths[i] columns."""

    pixels: np.ndarray
    widths: np.ndarray  # int32 [N]

    def __post_init__(self):
        if len(self.pixels) != len(self.widths):
            raise ValueError(f"{len(self.pixels)} images but {len(self.widths)} widths")

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index) -> "WideImages":
        """A subset (a slice, an index array or a mask), as numpy would take it."""
        return WideImages(self.pixels[index], self.widths[index])

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape


def concat(parts: list):
    """np.concatenate for plain arrays or for WideImages (all of one kind)."""
    if all(isinstance(p, WideImages) for p in parts):
        return WideImages(np.concatenate([p.pixels for p in parts]),
                          np.concatenate([p.widths for p in parts]))
    if any(isinstance(p, WideImages) for p in parts):
        raise TypeError("cannot join images at their rule widths with images of one width")
    return np.concatenate(parts)


def floats(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x


def predict(model, meta, x, batch: int = 512) -> np.ndarray:
    """The model's outputs on uint8 (or 0..1 float) inputs.  For WideImages each image is read
    at its own width, batch by batch in this process: rows of its steps, padded with sure blanks
    to the most steps (decode.padded_probs), the solver's layout."""
    if not isinstance(x, WideImages):
        return model.predict(floats(x), batch_size=batch, verbose=0)
    ref = meta.input_width
    steps = (x.widths.astype(np.int64) * meta.output_shape[0]) // ref
    out = padded_probs(meta, len(x), int(steps.max(initial=meta.output_shape[0])))
    for w in np.unique(x.widths):
        idx = np.flatnonzero(x.widths == w)
        p = int(w) * meta.output_shape[0] // ref
        for s in range(0, len(idx), batch):
            part = idx[s:s + batch]
            out[part, :p] = model(floats(x.pixels[part, :, :int(w)]), training=False).numpy()
    return out


def batches(x: WideImages, y: np.ndarray, batch: int, shuffle: bool, seed: int):
    """(uint8 [B, H, w, C], labels) batches of one width each, cropped to it.  Shuffled: drawn
    through a shuffle buffer, full batches only (as for one-width training)."""
    from captchalens._tf import tf

    ds = tf.data.Dataset.from_tensor_slices((x.pixels, x.widths.astype(np.int32), y))
    if shuffle:
        ds = ds.shuffle(min(len(x), 50_000), seed=seed, reshuffle_each_iteration=True)
    bounds = [int(w) for w in np.unique(x.widths)[1:]]  # one bucket per width in the set
    ds = ds.bucket_by_sequence_length(
        lambda px, w, lab: w, bounds, [batch] * (len(bounds) + 1), no_padding=True,
        drop_remainder=shuffle)
    return ds.map(lambda px, w, lab: (px[:, :, :w[0]], lab), num_parallel_calls=tf.data.AUTOTUNE)
