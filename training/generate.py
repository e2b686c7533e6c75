"""Synthetic captchas from the `captcha` package: seeded, parallel, cacheable.

`captcha` 0.7.1 draws every random number from the `secrets` module, which
cannot be seeded.  Each image gets its own `random.Random(seed, index)`
stand-in for that module, so image *i* of seed *s* is the same picture
whatever the number of worker processes or the order they run in.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from captchalens.files import replacing

from .wide import WideImages, concat

DEFAULT_CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class GenSpec:
    """What to generate. Sizes are inclusive ranges; equal ends = fixed size."""

    charset: str = DEFAULT_CHARSET
    min_length: int = 4
    max_length: int = 4
    width: tuple[int, int] = (160, 160)
    height: tuple[int, int] = (60, 60)
    # Share of images drawn at the preferred size (width[2], height[2] style
    # defaults are awkward in argparse, so it is a separate field).
    preferred: tuple[int, int] | None = None  # (w, h) drawn with probability preferred_share
    preferred_share: float = 0.0

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def draw(self, seed: int, index: int):
        return draw(self, seed, index)


def spec_record(spec: GenSpec) -> dict:
    """How train.py records the scheme it generated (a model's trained_on["spec"]); read back
    by trained_spec, the one reader of this layout."""
    return {"charset": spec.charset, "length": [spec.min_length, spec.max_length],
            "width": list(spec.width), "height": list(spec.height),
            "preferred": list(spec.preferred) if spec.preferred else None,
            "preferred_share": spec.preferred_share}


def trained_spec(meta) -> GenSpec | None:
    """The `captcha`-package scheme a model was trained on (spec_record), or None for a model
    trained on other captchas only (a labelled folder)."""
    rec = meta.trained_on.get("spec") if isinstance(meta.trained_on, dict) else None
    if not isinstance(rec, dict):
        return None
    lo, hi = rec.get("length") or meta.lengths
    pref = rec.get("preferred")
    return GenSpec(charset=rec.get("charset", meta.charset), min_length=int(lo), max_length=int(hi),
                   width=tuple(rec.get("width", (160, 160))), height=tuple(rec.get("height", (60, 60))),
                   preferred=tuple(pref) if pref else None, preferred_share=float(rec.get("preferred_share", 0.0)))


class _SeededSecrets:
    """The subset of `secrets` that captcha.image calls, from a seeded PRNG."""

    def __init__(self, rng: random.Random):
        self._rng = rng

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def choice(self, seq):
        return self._rng.choice(seq)


_CAPTCHAS: dict[tuple[int, int], object] = {}


def _captcha(width: int, height: int):
    from captcha.image import ImageCaptcha

    c = _CAPTCHAS.get((width, height))
    if c is None:
        c = _CAPTCHAS[(width, height)] = ImageCaptcha(width=width, height=height)
    return c


def image_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"{seed}:{index}")


def draw(spec: GenSpec, seed: int, index: int):
    """Draw captcha number `index` of `seed`: returns (PIL RGB image, text)."""
    import captcha.image as ci

    rng = image_rng(seed, index)
    n = rng.randint(spec.min_length, spec.max_length)
    text = "".join(rng.choice(spec.charset) for _ in range(n))
    if spec.preferred and rng.random() < spec.preferred_share:
        w, h = spec.preferred
    else:
        w = rng.randint(*spec.width)
        h = rng.randint(*spec.height)
    saved = ci.secrets
    ci.secrets = _SeededSecrets(rng)
    try:
        im = _captcha(w, h).generate_image(text)
    finally:
        ci.secrets = saved
    return im, text


def _rgba(im) -> np.ndarray:
    return np.asarray(im.convert("RGBA"), dtype=np.uint8)


def _chunk(args):
    spec, seed, start, stop, meta_json = args
    out_x, texts = [], []
    pre = _worker_preprocessor(meta_json) if meta_json else None
    for i in range(start, stop):
        im, text = spec.draw(seed, i)  # GenSpec, or render.RenderSpec
        texts.append(text)
        out_x.append(_rgba(im))
    if pre is not None and pre.meta.width_rule is not None:  # each at its rule width (wide.py)
        x, widths = pre.wide(out_x)
        out_x = WideImages(_to_uint8(x), widths)
    elif pre is not None:
        out_x = _to_uint8(pre(out_x))
    return start, out_x, texts


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


_PRE = {}


def _worker_preprocessor(meta_json: str):
    """One Preprocessor per worker process (TF is imported lazily in workers)."""
    pre = _PRE.get(meta_json)
    if pre is None:
        from captchalens.contract import ModelMeta
        from captchalens.preprocess import Preprocessor

        pre = _PRE[meta_json] = Preprocessor(ModelMeta.from_json(json.loads(meta_json)))
    return pre


class Progress:
    """A small progress bar on stderr (silent when stderr is not a terminal
    unless forced), so long generation and training runs show they live."""

    def __init__(self, total: int, label: str, enabled: bool | None = None):
        self.total, self.label, self.done = total, label, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = -1

    def update(self, n: int) -> None:
        self.done += n
        pct = int(100 * self.done / max(1, self.total))
        if self.enabled and pct != self._last:
            self._last = pct
            bar = "#" * (pct // 4) + "." * (25 - pct // 4)
            sys.stderr.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def generate(spec: GenSpec, n: int, seed: int, meta=None, workers: int | None = None,
             progress: bool | None = None, chunk: int = 500, start: int = 0):
    """Generate n captchas: images start .. start+n-1 of `seed` (a shard of a
    bigger set when start > 0: training/distribute.py).

    Without `meta`: returns (list of RGBA uint8 arrays, list of texts).
    With `meta` (a ModelMeta): images are preprocessed to the model input and
    stored as uint8 (value*255, rounded) to keep big sets in memory: returns
    (uint8 array [n, H, W, C], texts); for a reader with a width rule, each image at
    its rule width, (wide.WideImages, texts).
    """
    workers = workers or os.cpu_count() or 1
    meta_json = json.dumps(meta.to_json()) if meta is not None else None
    jobs = [(spec, seed, start + s, start + min(n, s + chunk), meta_json) for s in range(0, n, chunk)]
    bar = Progress(n, "generating", progress)
    xs: list = [None] * len(jobs)
    texts: list = [None] * len(jobs)
    if workers <= 1 or len(jobs) == 1:
        results = map(_chunk, jobs)
        for first, x, t in results:
            xs[(first - start) // chunk], texts[(first - start) // chunk] = x, t
            bar.update(len(t))
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # TF is not fork-safe
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for first, x, t in pool.map(_chunk, jobs):
                xs[(first - start) // chunk], texts[(first - start) // chunk] = x, t
                bar.update(len(t))
    all_texts = [t for ts in texts for t in ts]
    if meta is None:
        return [x for xx in xs for x in xx], all_texts
    return concat(xs), all_texts


def cached(spec: GenSpec, n: int, seed: int, meta, cache_dir: str | os.PathLike | None,
           **kw):
    """generate(..., meta) through an on-disk cache keyed by everything that
    changes the pixels (spec, n, seed, input size and preprocessing)."""
    if not cache_dir:
        return generate(spec, n, seed, meta, **kw)
    pre_key = hashlib.sha1(json.dumps(
        [meta.input_height, meta.input_width, meta.input_channels, meta.preprocessing],
        sort_keys=True).encode()).hexdigest()[:8]
    start = kw.get("start", 0)
    shard = f"-from{start}" if start else ""  # a worker's shard (training/distribute.py)
    path = Path(cache_dir) / f"gen-{spec.key()}-{pre_key}-{seed}-{n}{shard}.npz"
    if path.is_file():
        with np.load(path) as z:
            x = WideImages(z["x"], z["widths"]) if "widths" in z.files else z["x"]
            return x, [str(t) for t in z["texts"]]
    x, texts = generate(spec, n, seed, meta, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x": x.pixels, "widths": x.widths} if isinstance(x, WideImages) else {"x": x}
    with replacing(path) as tmp:  # cluster workers fill the same validation file at once
        np.savez(tmp, **arrays, texts=np.array(texts))
    return x, texts
