"""Model output -> text.  Mirrored line for line in extension/lib/engine.js (decode()).

* fixed:      argmax at each position; confidence = product of the maxima.
* ctc_greedy: argmax at each step, collapse repeats, drop blanks;
              confidence = product of the maxima over all steps.
"""
from __future__ import annotations

import numpy as np

from .contract import ModelMeta


def decode(probs: np.ndarray, meta: ModelMeta) -> list[tuple[str, float]]:
    """probs: [N, positions, classes] -> [(text, confidence)] per captcha."""
    probs = np.asarray(probs, np.float32)
    best = probs.argmax(axis=-1)
    conf = np.prod(probs.max(axis=-1).astype(np.float64), axis=-1)
    out = []
    for row, c in zip(best, conf):
        if meta.decoding == "fixed":
            text = "".join(meta.charset[i] for i in row)
        else:
            blank, chars, prev = meta.blank_index, [], -1
            for i in row:
                if i != prev and i != blank:
                    chars.append(meta.charset[i])
                prev = i
            text = "".join(chars)
        out.append((text, float(c)))
    return out
