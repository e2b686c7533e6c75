"""Model output -> text.  Mirrored line for line in extension/lib/engine.js (decode()).

* fixed:      argmax at each position.
* ctc_greedy: argmax at each step, collapse repeats, drop blanks.

Confidence is the product over all positions (or steps) of the top class's
probability after temperature scaling (Guo et al. 2017): the model's softmax
p is re-scaled to softmax(log(p) / T), the same as dividing its logits by T.
T is fitted on held-out captchas (training/calibrate.py) and kept in the
model's metadata (``calibration.temperature``; absent = 1, the raw maxima).
Scaling never changes the argmax, so it changes the confidence, not the text.
Per position, with r = p / max(p):  top = 1 / sum(r ** (1 / T)).
"""
from __future__ import annotations

import numpy as np

from .contract import ModelMeta


def confidence(probs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """probs: [N, positions, classes] -> [N] whole-answer confidence at `temperature`."""
    probs = np.asarray(probs)
    top = probs.max(axis=-1).astype(np.float64)
    if temperature == 1.0:
        return np.prod(top, axis=-1)  # the raw maxima, as models without calibration always had
    ratio = probs.astype(np.float64) / np.maximum(top, np.finfo(np.float64).tiny)[..., None]
    return np.prod(1.0 / np.power(ratio, 1.0 / temperature).sum(axis=-1), axis=-1)


def padded_probs(meta: ModelMeta, n: int, steps: int) -> np.ndarray:
    """An [n, steps, classes] array to fill row by row with probabilities of up to `steps`
    steps each: zeros, and for a reader whose width follows the image (rows of different
    lengths) every step the sure blank, so that a shorter row's tail decodes to nothing and
    leaves its confidence as it is (a one-hot maximum of 1 at any temperature)."""
    out = np.zeros((n, steps, meta.num_classes), np.float32)
    if meta.width_rule is not None:
        out[..., meta.blank_index] = 1.0
    return out


def restrict(probs: np.ndarray, meta: ModelMeta, allowed: str) -> np.ndarray:
    """probs with every character not in `allowed` (a site's alphabet: alphabet.site_charset)
    at probability 0, the blank kept: such a character is never chosen, and the confidence is
    the answer's among the characters allowed (at any temperature but 1, where it stays the
    raw maxima)."""
    keep = np.array([c in allowed for c in meta.charset] + [True] * (meta.num_classes - len(meta.charset)))
    return np.where(keep, np.asarray(probs, np.float32), np.float32(0.0))


def decode(probs: np.ndarray, meta: ModelMeta, allowed: str | None = None) -> list[tuple[str, float]]:
    """probs: [N, positions, classes] -> [(text, confidence)] per captcha; with `allowed`, only
    those characters of the charset are read (restrict)."""
    probs = np.asarray(probs, np.float32)
    if allowed is not None and set(meta.charset) - set(allowed):
        probs = restrict(probs, meta, allowed)
    best = probs.argmax(axis=-1)
    conf = confidence(probs, meta.temperature)
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


# ---- one answer from the reads at a width rule's scales (contract.py COMBINES) ----------------
# The same two functions are engine.js settled() and answering(); tests/contract_cases.json
# (answer_cases) holds both to the same verdicts.

def _votes(answers: list[tuple[str, float]]) -> dict[str, list]:
    """text -> [reads giving it, its surest read's confidence, that read's index], in the order
    the texts first came."""
    votes: dict[str, list] = {}
    for i, (text, conf) in enumerate(answers):
        v = votes.setdefault(text, [0, conf, i])
        v[0] += 1
        if conf > v[1]:
            v[1], v[2] = conf, i
    return votes


def settled(answers: list[tuple[str, float]], total: int, combine: str = "surest") -> bool:
    """After the first len(answers) of `total` reads (text, confidence) of one image: is its
    answer known? "surest" needs every read; "vote" stops once the text most reads gave has more
    than the next one could reach with every read left."""
    left = total - len(answers)
    if left <= 0:
        return True
    if combine != "vote":
        return False
    counts = sorted((v[0] for v in _votes(answers).values()), reverse=True) + [0]
    return counts[0] > counts[1] + left


def answering(answers: list[tuple[str, float]], combine: str = "surest") -> int:
    """The index of the read that answers: "surest": the highest confidence, the earliest on a
    tie; "vote": the surest read of the text most reads gave (a tie of votes: the text whose
    surest read is surer, then the text that came first)."""
    if combine != "vote":
        best = 0
        for i, (_, conf) in enumerate(answers):
            if conf > answers[best][1]:
                best = i
        return best
    top = None
    for count, conf, i in _votes(answers).values():
        if top is None or (count, conf) > (top[0], top[1]):
            top = (count, conf, i)
    return top[2]
