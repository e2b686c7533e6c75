"""A broad synthetic captcha renderer: many fonts, styles and distortions.

The `captcha` package draws one scheme.  This renderer draws text captchas
the way many sites do, so that a reader trained on them reads schemes it has
never seen (the `general` model):

* text: 3-8 characters of ``0-9A-Za-z`` (case kept in the label), drawn from
  a per-captcha alphabet (digits only, upper case, mixed, ...);
* fonts: every font the project's setup installs (`make fonts`: Debian
  ``fonts-*`` packages under free licences, see FONT_PACKAGES in the
  Makefile), picked family first so no family dominates;
* dark on light and light on dark, solid, gradient, noise, blob, stripe and
  grid backgrounds in any colour;
* per-character font size, rotation, vertical jitter and overlap, outlined and
  shadowed text, per-character colours;
* noise lines, curves through the text, arcs and dots, and strike-through
  polylines across the whole text;
* scattered ("hairy") glyph edges, where each text pixel is moved a pixel or two,
  and smeared strokes, where the text is stamped several times a pixel or three
  apart (at random or along one direction, like motion blur);
* lead lines: a polyline that starts at the canvas's left edge with a hook and
  runs through the text to the right edge;
* sine-wave and perspective warps, blur and JPEG artefacts;
* sizes from about 60x20 to 300x100.

Schemes named in HELD_OUT are rendered with fonts that the training mix never
uses and with fixed styles: they measure how a model does on a scheme it was
not trained on (bench/label_curve.py).  Like training/generate.py, image *i*
of seed *s* is the same picture whatever the number of worker processes.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from captchalens.alphabet import DIGITS, LOWER, UPPER  # the families sites draw from
from captchalens.errors import UserError

GENERAL_CHARSET = DIGITS + UPPER + LOWER  # the general model reads case

FONT_DIRS = ("/usr/share/fonts",)
# Fonts whose code points do not draw Latin letters (symbols, dingbats).
NOT_TEXT = ("D050000L", "StandardSymbolsPS")
# Font families (folders under /usr/share/fonts/*/) kept out of the training mix:
# the held-out schemes below are drawn with them only.
HELD_OUT_FAMILIES = ("courier-prime", "comic-neue", "averia-gwf")

# Alphabets a captcha's text is drawn from, with how often each is picked.
ALPHABETS = (
    (DIGITS + UPPER + LOWER, 0.30),
    (DIGITS + LOWER, 0.22),
    (DIGITS + UPPER, 0.16),
    (LOWER, 0.10),
    (UPPER, 0.10),
    (DIGITS, 0.12),
)
LENGTHS = {3: 0.06, 4: 0.22, 5: 0.26, 6: 0.24, 7: 0.12, 8: 0.10}
# Bumped whenever the drawing changes, so no cache holds pictures of an older mix.
# 2: strike-through polylines and scattered glyph edges; 3: packed text; 4: smeared strokes,
# grey ramp backgrounds and hooked lead lines
RENDER_VERSION = 4


@dataclass(frozen=True)
class RenderSpec:
    """What to render: the training mix ("mix") or one held-out scheme."""

    scheme: str = "mix"
    min_length: int = 3
    max_length: int = 8

    def key(self) -> str:
        return hashlib.sha1(json.dumps({"render": asdict(self), "fonts": font_key(),
                                                   "version": RENDER_VERSION},
                                       sort_keys=True).encode()).hexdigest()[:12]

    def draw(self, seed: int, index: int):
        return draw(self, seed, index)

    def describe(self) -> dict:
        return {"renderer": "captchalens render", "scheme": self.scheme,
                "length": [self.min_length, self.max_length], "fonts": len(fonts(self.scheme != "mix"))}


# ---- fonts ------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _all_fonts() -> dict[str, list[str]]:
    """Installed fonts that draw all of 0-9A-Za-z, grouped by family folder."""
    from fontTools.ttLib import TTFont

    need = set(map(ord, GENERAL_CHARSET))
    families: dict[str, list[str]] = {}
    for root in FONT_DIRS:
        for path in sorted(Path(root).glob("**/*.[ot]tf")):
            if any(n in path.name for n in NOT_TEXT):
                continue
            try:
                with TTFont(path, lazy=True) as t:
                    if not need <= set(t.getBestCmap() or {}):
                        continue
            except Exception:  # noqa: BLE001 - a broken font file is simply not used
                continue
            families.setdefault(path.parent.name, []).append(str(path))
    return families


def fonts(held_out: bool = False) -> dict[str, list[str]]:
    """Training fonts (or the held-out families), by family."""
    fams = _all_fonts()
    return {k: v for k, v in fams.items() if (k in HELD_OUT_FAMILIES) == held_out}


def font_key() -> list[str]:
    return sorted(fonts(False))


class FontsMissing(UserError, RuntimeError):
    pass


@functools.lru_cache(maxsize=4096)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


# ---- colours ----------------------------------------------------------------

def _grey(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _colour(rng: random.Random, lo: int, hi: int) -> tuple[int, int, int]:
    """A random colour whose grey level lies in [lo, hi]."""
    for _ in range(20):
        if rng.random() < 0.35:  # greys
            v = rng.randint(lo, hi)
            c = (v, v, v)
        else:
            c = tuple(rng.randint(0, 255) for _ in range(3))
        if lo <= _grey(c) <= hi:
            return c
    v = rng.randint(lo, hi)
    return (v, v, v)


def _jitter(rng, c, amount=30):
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in c)


# ---- background ---------------------------------------------------------------

def _background(rng: random.Random, w: int, h: int, light: bool) -> Image.Image:
    lo, hi = (175, 255) if light else (0, 95)
    base = _colour(rng, lo, hi)
    kind = rng.choices(["solid", "gradient", "noise", "blobs", "stripes", "grid"],
                       [0.28, 0.18, 0.2, 0.16, 0.09, 0.09])[0]
    if kind == "gradient":
        other = _colour(rng, lo, hi)
        t = np.linspace(0, 1, w if rng.random() < 0.6 else h, dtype=np.float32)
        ramp = np.outer(1 - t, base) + np.outer(t, other)
        if len(t) == w:
            arr = np.broadcast_to(ramp[None], (h, w, 3))
        else:
            arr = np.broadcast_to(ramp[:, None], (h, w, 3))
        return Image.fromarray(arr.astype(np.uint8))
    im = Image.new("RGB", (w, h), base)
    if kind == "noise":
        nrng = np.random.default_rng(rng.getrandbits(32))
        amp = rng.uniform(10, 45)
        n = nrng.normal(0, amp, (h, w, 1 if rng.random() < 0.5 else 3))
        arr = np.clip(np.asarray(im, np.float32) + n, 0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
        if rng.random() < 0.6:
            im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    elif kind == "blobs":
        d = ImageDraw.Draw(im)
        for _ in range(rng.randint(3, 14)):
            r = rng.uniform(0.1, 0.6) * h
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            d.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, _colour(rng, lo, hi), 10))
        if rng.random() < 0.5:
            im = im.filter(ImageFilter.GaussianBlur(rng.uniform(1, 4)))
    elif kind in ("stripes", "grid"):
        d = ImageDraw.Draw(im)
        step = rng.randint(4, 14)
        col = _jitter(rng, base, 40)
        for x in range(rng.randint(0, step), w, step):
            d.line([(x, 0), (x + rng.randint(-h, h) // 3, h)], fill=col, width=1)
        if kind == "grid":
            for y in range(rng.randint(0, step), h, step):
                d.line([(0, y), (w, y)], fill=col, width=1)
    return im


# ---- text -----------------------------------------------------------------

def _text(rng: random.Random, spec: RenderSpec, alphabet: str | None = None) -> str:
    if alphabet is None:
        alphabet = rng.choices([a for a, _ in ALPHABETS], [p for _, p in ALPHABETS])[0]
    lengths = [n for n in LENGTHS if spec.min_length <= n <= spec.max_length] or [spec.min_length]
    n = rng.choices(lengths, [LENGTHS.get(k, 0.1) for k in lengths])[0]
    return "".join(rng.choice(alphabet) for _ in range(n))


def _glyph(rng, ch: str, font_path: str, size: int, colour, angle: float, style: str, bg):
    """One character on a transparent layer, rotated."""
    font = _font(font_path, max(6, size))
    l, t, r, b = font.getbbox(ch)
    pad = max(2, size // 6)
    layer = Image.new("RGBA", (r - l + 2 * pad, b - t + 2 * pad), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    xy = (pad - l, pad - t)
    if style == "outline":
        d.text(xy, ch, font=font, fill=bg + (255,), stroke_width=max(1, size // 14), stroke_fill=colour + (255,))
    elif style == "bold":
        d.text(xy, ch, font=font, fill=colour + (255,), stroke_width=max(1, size // 22), stroke_fill=colour + (255,))
    else:
        d.text(xy, ch, font=font, fill=colour + (255,))
    if angle:
        layer = layer.rotate(angle, resample=Image.BILINEAR, expand=True)
    return layer


def _text_layer(rng, text: str, font_paths: list[str], colours: list, size: int, p: dict, bg):
    """The whole text on a transparent layer, glyph by glyph (overlap, jitter)."""
    glyphs = []
    for i, ch in enumerate(text):
        s = int(size * rng.uniform(1 - p["scale"], 1 + p["scale"]))
        a = rng.uniform(-p["rotate"], p["rotate"])
        glyphs.append(_glyph(rng, ch, font_paths[i], s, colours[i], a, p["style"], bg))
    xs, x = [], 4
    for g in glyphs:
        xs.append(x)
        x += max(1, int(g.width * p["advance"] * rng.uniform(0.92, 1.08)))
    height = max(g.height for g in glyphs) + int(size * p["jitter"]) + 4
    width = max(x0 + g.width for x0, g in zip(xs, glyphs)) + 4
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    for x0, g in zip(xs, glyphs):
        y = (height - g.height) // 2 + int(rng.uniform(-p["jitter"], p["jitter"]) * size / 2)
        layer.alpha_composite(g, (x0, max(0, min(height - g.height, y))))
    box = layer.getbbox()
    return layer.crop(box) if box else layer


# ---- distortions --------------------------------------------------------------

def _scatter(rng, layer: Image.Image, radius: int) -> Image.Image:
    """Move every pixel of the text layer by up to `radius` pixels at random:
    glyph edges turn hairy and smeared, the way many captcha generators draw them."""
    arr = np.asarray(layer)
    h, w = arr.shape[:2]
    nrng = np.random.default_rng(rng.getrandbits(32))
    ys = np.clip(np.arange(h)[:, None] + nrng.integers(-radius, radius + 1, (h, w)), 0, h - 1)
    xs = np.clip(np.arange(w)[None, :] + nrng.integers(-radius, radius + 1, (h, w)), 0, w - 1)
    return Image.fromarray(np.ascontiguousarray(arr[ys, xs]), layer.mode)


def _strike(rng, im: Image.Image, box: tuple[int, int, int, int], colour, width: int) -> None:
    """A polyline of 2-5 segments from left of the text to right of it, through
    the text's band: the strike-through line most text captchas carry."""
    w, h = im.size
    x0, y0, x1, y1 = box
    n = rng.randint(2, 5)
    xs = np.linspace(rng.uniform(0, max(1, x0 + 0.1 * (x1 - x0))), rng.uniform(min(w - 1, x1 - 0.1 * (x1 - x0)), w),
                     n + 1)
    ys = [rng.uniform(y0 + 0.15 * (y1 - y0), y1 - 0.15 * (y1 - y0)) for _ in xs]
    ImageDraw.Draw(im).line(list(zip(xs.tolist(), ys)), fill=colour, width=width, joint="curve")


def _smear(rng, layer: Image.Image, radius: int, copies: int, motion: bool) -> Image.Image:
    """Stamp the text layer `copies` times, each up to `radius` pixels from where it was
    drawn -- at random, or spread along one direction like a motion blur: strokes turn
    thick and streaky, neighbouring glyphs run into each other.  The layer keeps its size."""
    w, h = layer.size
    out = Image.new("RGBA", (w + 2 * radius, h + 2 * radius), (0, 0, 0, 0))
    angle = rng.uniform(0, math.pi)
    for k in range(copies):
        if motion:
            t = radius * (2 * k / max(1, copies - 1) - 1)
            dx, dy = round(t * math.cos(angle)), round(t * math.sin(angle))
        else:
            dx, dy = rng.randint(-radius, radius), rng.randint(-radius, radius)
        stamp = layer
        if k and rng.random() < 0.5:  # some stamps fainter
            stamp = layer.copy()
            stamp.putalpha(layer.getchannel("A").point(lambda a, f=rng.uniform(0.4, 0.9): int(a * f)))
        out.alpha_composite(stamp, (radius + dx, radius + dy))
    return out.resize((w, h), Image.BILINEAR)


def _lead(rng, im: Image.Image, box: tuple[int, int, int, int], colour, width: int) -> None:
    """A line from the canvas's left edge to near its right edge: it starts with a short
    hook above or below the text, enters the text's band at its left and runs through it in
    2-4 segments."""
    w, h = im.size
    x0, y0, x1, y1 = box
    band = lambda: rng.uniform(y0 + 0.2 * (y1 - y0), y1 - 0.2 * (y1 - y0))  # noqa: E731
    start = (rng.uniform(0, 0.04 * w), rng.choice((rng.uniform(0, y0 + 0.1 * h), rng.uniform(y1 - 0.1 * h, h))))
    entry = (rng.uniform(max(start[0] + 2, x0 - 0.08 * w), x0 + 0.12 * (x1 - x0) + 2), band())
    n = rng.randint(2, 4)
    xs = np.linspace(entry[0], rng.uniform(max(entry[0] + 1, min(w - 1, x1 + 0.1 * w)), w), n + 1)[1:]
    pts = [start, entry] + [(float(x), band()) for x in xs]
    ImageDraw.Draw(im).line(pts, fill=colour, width=width, joint="curve")


def _ramp(rng, w: int, h: int) -> Image.Image:
    """A light grey-ish background darkest at one side: a horizontal ramp."""
    dark, bright = rng.uniform(150, 215), rng.uniform(228, 255)
    tint = np.array([rng.uniform(-12, 12) for _ in range(3)], np.float32)
    t = np.linspace(0, 1, w, dtype=np.float32) ** rng.uniform(0.5, 1.5)
    if rng.random() < 0.3:
        t = t[::-1]
    row = np.clip(dark + (bright - dark) * t[:, None] + tint[None], 0, 255)
    return Image.fromarray(np.broadcast_to(row[None], (h, w, 3)).astype(np.uint8))


def _wave(rng, im: Image.Image, amp: float, axis: str) -> Image.Image:
    arr = np.asarray(im)
    h, w = arr.shape[:2]
    period = rng.uniform(0.4, 1.6) * (w if axis == "y" else h)
    phase = rng.uniform(0, 2 * math.pi)
    if axis == "y":  # columns move up and down
        shifts = np.rint(amp * np.sin(2 * math.pi * np.arange(w) / period + phase)).astype(int)
        rows = np.clip(np.arange(h)[:, None] - shifts[None, :], 0, h - 1)
        out = arr[rows, np.arange(w)[None, :]]
    else:  # rows move left and right
        shifts = np.rint(amp * np.sin(2 * math.pi * np.arange(h) / period + phase)).astype(int)
        cols = np.clip(np.arange(w)[None, :] - shifts[:, None], 0, w - 1)
        out = arr[np.arange(h)[:, None], cols]
    return Image.fromarray(np.ascontiguousarray(out), im.mode)


def _perspective(rng, im: Image.Image, k: float) -> Image.Image:
    w, h = im.size
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    # Corners move inwards only, so nothing is pushed out of the frame.
    dst = [(x + (1 if x == 0 else -1) * rng.uniform(0, k) * w, y + (1 if y == 0 else -1) * rng.uniform(0, k) * h)
           for x, y in src]
    a = []
    b = []
    for (x, y), (u, v) in zip(src, dst):
        a.append([u, v, 1, 0, 0, 0, -x * u, -x * v]); b.append(x)  # noqa: E702
        a.append([0, 0, 0, u, v, 1, -y * u, -y * v]); b.append(y)  # noqa: E702
    coeffs = np.linalg.solve(np.array(a, float), np.array(b, float))
    return im.transform(im.size, Image.PERSPECTIVE, tuple(coeffs), Image.BICUBIC)


def _noise(rng, im: Image.Image, p: dict, text_colour, light: bool):
    d = ImageDraw.Draw(im)
    w, h = im.size
    lo, hi = (0, 130) if light else (125, 255)
    for _ in range(p["lines"]):
        col = text_colour if rng.random() < 0.5 else _colour(rng, lo, hi)
        width = rng.randint(1, max(1, h // 18))
        kind = rng.random()
        if kind < 0.4:
            d.line([(rng.uniform(0, w), rng.uniform(0, h)), (rng.uniform(0, w), rng.uniform(0, h))],
                   fill=col, width=width)
        elif kind < 0.75:  # a curve across the text
            y0, amp = rng.uniform(0.3, 0.7) * h, rng.uniform(0.05, 0.3) * h
            per, ph = rng.uniform(0.5, 2) * w, rng.uniform(0, 6.3)
            x0, x1 = rng.uniform(0, 0.3) * w, rng.uniform(0.7, 1) * w
            pts = [(x, y0 + amp * math.sin(2 * math.pi * x / per + ph))
                   for x in np.linspace(x0, x1, 24)]
            d.line(pts, fill=col, width=width)
        else:
            r = rng.uniform(0.2, 1.2) * h
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            a0 = rng.uniform(0, 360)
            d.arc([cx - r, cy - r, cx + r, cy + r], a0, a0 + rng.uniform(40, 200), fill=col, width=width)
    if p["dots"]:
        _dots(rng, im, p["dots"], text_colour)


def _dots(rng, im: Image.Image, density: float, text_colour) -> None:
    """Salt-and-pepper specks, some in the text's colour, drawn with numpy."""
    arr = np.asarray(im).copy()
    h, w = arr.shape[:2]
    nrng = np.random.default_rng(rng.getrandbits(32))
    n = int(density * w * h)
    ys, xs = nrng.integers(0, h, n), nrng.integers(0, w, n)
    cols = nrng.integers(0, 256, (n, 3))
    cols[nrng.random(n) < 0.3] = text_colour
    arr[ys, xs] = cols
    big = nrng.random(n) < 0.3  # some specks are 2x2
    arr[np.minimum(ys[big] + 1, h - 1), xs[big]] = cols[big]
    arr[ys[big], np.minimum(xs[big] + 1, w - 1)] = cols[big]
    im.paste(Image.fromarray(arr))


# ---- the mix and the held-out schemes ------------------------------------------

def _mix_params(rng: random.Random) -> dict:
    hard = rng.random()
    return {
        "light": rng.random() < 0.68,  # dark text on a light background
        "font_per_char": rng.random() < 0.15,
        "colour_per_char": rng.random() < 0.3,
        "style": rng.choices(["plain", "bold", "outline"], [0.78, 0.14, 0.08])[0],
        "size": rng.uniform(0.55, 0.95),  # glyph size / canvas height
        "scale": rng.choice((0.0, 0.08, 0.18)),
        "rotate": rng.choice((0, 6, 15, 28, 40)) * (1 if hard > 0.15 else 0),
        "jitter": rng.choice((0.0, 0.1, 0.25)),
        "advance": rng.choice((1.0, 0.92, 0.85, 0.78, 1.1, 1.25)),
        "lines": rng.choices([0, 1, 2, 3, 5, 8], [0.34, 0.22, 0.18, 0.13, 0.08, 0.05])[0],
        "dots": rng.choice((0, 0, 0, 0.004, 0.012, 0.03)),
        "wave": rng.random() < 0.3,
        "perspective": rng.random() < 0.22,
        "blur": rng.uniform(0.3, 1.4) if rng.random() < 0.3 else 0.0,
        "jpeg": rng.randint(12, 75) if rng.random() < 0.3 else 0,
        "fill": rng.uniform(0.6, 0.92),  # text width / canvas width (at most)
        "shadow": rng.random() < 0.05,
    }


def _mix_extras(rng: random.Random) -> dict:
    """Distortions added to the mix since RENDER_VERSION 2, drawn from their own stream
    so that every held-out picture stays as it was.

    Version 3 adds packed text to a third of the mix: large glyphs that touch or
    overlap, often bold, filling the canvas's height, with a line through them more
    often than not -- the style of most server-side captcha libraries, which
    version 2's mostly spaced-out glyphs rarely drew."""
    e = {"strike": rng.random() < 0.25, "scatter": rng.choice((1, 1, 2)) if rng.random() < 0.15 else 0,
         "packed": rng.random() < 0.35}
    if e["packed"]:
        e.update(advance=rng.uniform(0.5, 0.75), style=rng.choice(("bold", "bold", "plain")),
                 fill=rng.uniform(0.85, 0.97), height=rng.uniform(0.78, 0.97),
                 rotate=rng.choice((0, 5, 10, 15, 25)), jitter=rng.choice((0.0, 0.1, 0.2)),
                 lines=rng.choice((0, 0, 1, 2)))
        e["strike"] = e["strike"] or rng.random() < 0.45
        e["scatter"] = e["scatter"] or (rng.choice((1, 1, 2)) if rng.random() < 0.3 else 0)
        e["strike_width"] = rng.uniform(0.03, 0.09)  # of the canvas's height
    return e


def _mix_v4(rng: random.Random) -> dict:
    """Distortions added by RENDER_VERSION 4, from a stream of their own so that every
    picture of version 3's mix that they leave alone stays as it was: smeared strokes
    (a fifth of the mix), grey ramp backgrounds (an eighth) and hooked lead lines (a fifth)."""
    e = {"smear": 0, "ramp": rng.random() < 0.12, "lead": rng.random() < 0.2}
    if rng.random() < 0.2:  # radius as a share of the canvas's height; with scattered edges 40 % of the time
        e.update(smear=rng.uniform(0.012, 0.045), smear_copies=rng.randint(3, 7), smear_motion=rng.random() < 0.5,
                 smear_scatter=rng.random() < 0.4)
    e["lead_width"] = rng.uniform(0.025, 0.07)  # of the canvas's height
    return e


def _mix_size(rng) -> tuple[int, int]:
    h = int(min(100, max(20, rng.gauss(52, 16))))
    aspect = rng.uniform(1.8, 5.0)
    w = int(min(300, max(60, h * aspect)))
    return w, h


# Held-out schemes: fixed styles, drawn only with HELD_OUT_FAMILIES fonts.
HELD_OUT = {
    # Six upper-case letters, light on dark, clean: the hard case.
    "mono-dark": {"size": (180, 50), "alphabet": UPPER, "length": 6, "family": "courier-prime",
                  "params": {"light": False, "style": "plain", "rotate": 6, "lines": 1, "dots": 0.0,
                             "wave": False, "perspective": False, "blur": 0.0, "jpeg": 0,
                             "colour_per_char": False, "advance": 1.0, "jitter": 0.1}},
    # Lower case and digits in per-character colours on a noisy background, rotated.
    "casual-colour": {"size": (160, 60), "alphabet": DIGITS + LOWER, "length": 5, "family": "comic-neue",
                      "params": {"light": True, "style": "plain", "rotate": 25, "lines": 2, "dots": 0.02,
                                 "wave": False, "perspective": False, "blur": 0.0, "jpeg": 0,
                                 "colour_per_char": True, "advance": 0.9, "jitter": 0.25,
                                 "bg": "noise"}},
    # Mixed case, wavy, JPEG-compressed serif text with a curve through it.
    "serif-wave": {"size": (200, 70), "alphabet": DIGITS + UPPER + LOWER, "length": (4, 7),
                   "family": "averia-gwf",
                   "params": {"light": True, "style": "bold", "rotate": 10, "lines": 1, "dots": 0.0,
                              "wave": True, "perspective": False, "blur": 0.6, "jpeg": 40,
                              "colour_per_char": False, "advance": 0.85, "jitter": 0.1}},
}


def draw(spec: RenderSpec, seed: int, index: int):
    """Render captcha number `index` of `seed`: returns (PIL RGB image, text)."""
    rng = random.Random(f"render:{spec.scheme}:{seed}:{index}")
    if spec.scheme == "mix":
        fams = fonts(False)
        if not fams:
            raise FontsMissing("no fonts found under /usr/share/fonts: run `make fonts`")
        p = _mix_params(rng)
        extra = random.Random(f"render-extras:{seed}:{index}")
        p.update(_mix_extras(extra))
        v4 = random.Random(f"render-v4:{seed}:{index}")
        p.update(_mix_v4(v4))
        w, h = _mix_size(rng)
        text = _text(rng, spec)
        names = sorted(fams)
        fam = rng.choice(names)
        paths = [rng.choice(fams[rng.choice(names)] if p["font_per_char"] else fams[fam]) for _ in text]
        if not p["font_per_char"]:
            paths = [paths[0]] * len(text)
        bg_kind = None
    else:
        s = HELD_OUT[spec.scheme]
        fams = fonts(True)
        if s["family"] not in fams:
            raise FontsMissing(f"font family {s['family']!r} is not installed: run `make fonts`")
        p = {**_mix_params(rng), **s["params"], "size": 0.8, "scale": 0.05, "fill": 0.85, "shadow": False,
             "strike": False, "scatter": 0, "packed": False, "smear": 0, "ramp": False, "lead": False}
        extra = v4 = None
        w, h = s["size"]
        n = s["length"] if isinstance(s["length"], int) else rng.randint(*s["length"])
        text = "".join(rng.choice(s["alphabet"]) for _ in range(n))
        paths = [rng.choice(fams[s["family"]])] * len(text)
        bg_kind = s["params"].get("bg")
    light = p["light"]
    if bg_kind == "noise":
        bg = Image.new("RGB", (w, h), _colour(rng, 190, 255))
        nrng = np.random.default_rng(rng.getrandbits(32))
        arr = np.clip(np.asarray(bg, np.float32) + nrng.normal(0, 28, (h, w, 3)), 0, 255).astype(np.uint8)
        bg = Image.fromarray(arr)
    else:
        bg = _background(rng, w, h, light)
        if p["ramp"] and light:  # drawn after, so the main stream stays as it was
            bg = _ramp(v4, w, h)
    bg_mean = tuple(int(v) for v in np.asarray(bg).reshape(-1, 3).mean(0))
    # Text colours: far enough from the background in grey level to be read.
    g = _grey(bg_mean)
    lo, hi = (0, max(0, min(110, int(g) - 90))) if light else (min(255, max(150, int(g) + 90)), 255)
    base_col = _colour(rng, lo, hi)
    colours = [(_colour(rng, lo, hi) if p["colour_per_char"] else base_col) for _ in text]
    size = max(8, int(h * p["size"]) * 2)  # drawn at twice the size, then scaled down
    layer = _text_layer(rng, text, paths, colours, size, p, bg_mean)
    # Fit the text into the canvas: keep its aspect within +-20 %, leave a margin.
    max_w, max_h = w * p["fill"], h * rng.uniform(0.6, 0.92)
    if p["packed"]:
        max_h = h * p["height"]
    stretch = rng.uniform(0.8, 1.2)
    sx = max_w / layer.width
    sy = max_h / layer.height
    k = min(sx, sy / stretch) if sx * stretch > sy else min(sx, sy)
    tw, th = max(1, int(layer.width * k)), max(1, int(layer.height * k * stretch))
    tw, th = min(tw, w), min(th, h)
    layer = layer.resize((tw, th), Image.LANCZOS)
    if p["smear"]:
        layer = _smear(v4, layer, max(1, round(h * p["smear"])), p["smear_copies"], p["smear_motion"])
        if p["smear_scatter"] and not p["scatter"]:
            p["scatter"] = 1
    if p["scatter"]:
        layer = _scatter(extra, layer, p["scatter"])
    x = rng.randint(0, max(0, w - tw))
    y = rng.randint(0, max(0, h - th))
    im = bg.convert("RGBA")
    if p.get("shadow"):
        sh = Image.new("RGBA", layer.size, (0, 0, 0, 0))
        sh.putalpha(layer.getchannel("A").point(lambda a: a // 2))
        im.alpha_composite(sh, (min(w - tw, x + 2), min(h - th, y + 2)))
    im.alpha_composite(layer, (x, y))
    im = im.convert("RGB")
    _noise(rng, im, p, base_col, light)
    if p["strike"]:
        width = (max(1, round(h * p["strike_width"])) if p["packed"] else extra.randint(1, max(1, h // 16)))
        _strike(extra, im, (x, y, x + tw, y + th), base_col, width)
    if p["lead"]:
        _lead(v4, im, (x, y, x + tw, y + th), base_col, max(1, round(h * p["lead_width"])))
    if p["wave"]:
        im = _wave(rng, im, rng.uniform(0.03, 0.09) * h, rng.choice("yyx"))
    if p["perspective"]:
        bgc = Image.new("RGB", im.size, bg_mean)
        warped = _perspective(rng, im.convert("RGBA"), 0.035)
        bgc.paste(warped, (0, 0), warped)
        im = bgc
    if p["blur"]:
        im = im.filter(ImageFilter.GaussianBlur(p["blur"]))
    if p["jpeg"]:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=p["jpeg"])
        buf.seek(0)
        im = Image.open(buf).convert("RGB")
    return im, text
