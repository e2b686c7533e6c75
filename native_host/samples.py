"""Labelled captchas sent by the extension, kept for retraining.

Each sample is the PNG of the decoded pixels (never the raw upload) at
``samples_dir(site)/<text>.png`` — or ``<text>_2.png``, ``<text>_3.png`` ...
when that name is taken.  Files appear whole (written to a temp file, then
hard-linked to a name that must not exist yet) and are never overwritten.
"""
from __future__ import annotations

import io
import os
import re
import tempfile

import numpy as np
from PIL import Image

from captchalens.contract import ModelMeta
from captchalens.home import safe_name, samples_dir
from captchalens.images import IMAGE_SUFFIXES

MAX_COPIES = 10_000  # x7kq.png ... x7kq_10000.png; past that something is wrong


class SampleError(ValueError):
    """The sample cannot be stored; the message says why."""


MAX_LABEL = 64  # characters in one sample's answer


def check_text(text, meta: ModelMeta | None = None) -> str:
    """The label, checked as a training label (the folder loader's rules).

    It is NOT checked against the model in use: a correction for a site with
    its own scheme (other characters, another length) is exactly what a new
    model for that site is trained from."""
    if text is not None and not isinstance(text, str):
        raise SampleError("'text' must be a string")
    if not text or not text.strip():
        raise SampleError("a sample needs its answer: the field 'text' is missing or empty")
    text = text.strip()
    if len(text) > MAX_LABEL:
        raise SampleError(f"text has {len(text)} characters; a captcha answer has at most {MAX_LABEL}")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise SampleError(f"text {text!r} contains spaces or control characters")
    bad = sorted({c for c in text if c in "/\\_.\0"})
    if bad:  # the folder loader reads the label from the file name up to the first '_' or '.'
        raise SampleError(f"text {text!r} cannot be a file name (it contains {', '.join(map(repr, bad))})")
    return text


def fits_model(text: str, meta: ModelMeta) -> bool:
    """Whether the model in use could give this answer (same characters, a length it reads)."""
    lo, hi = meta.lengths
    return set(text) <= set(meta.charset) and lo <= len(text) <= hi


def site_folder_name(site: str | None) -> str | None:
    """A page's host name as a samples folder name: 'Shop.Example.com:8443' -> 'shop.example.com'.

    Whatever the extension sends stays one folder inside samples/ (no '/', no '..')."""
    if site is None or not site.strip():
        return None
    name = site.strip().lower()
    name = re.sub(r"^\[(.*)\](:\d+)?$", r"\1", name)  # [::1]:8080 -> ::1
    name = re.sub(r"^([^:]*):\d+$", r"\1", name)  # host:port -> host
    name = re.sub(r"[^a-z0-9._-]+", "-", name)
    name = re.sub(r"\.{2,}", ".", name).strip("-._")[:64].rstrip("-._")
    try:
        return safe_name(name, "site")
    except ValueError:
        raise SampleError(f"site {site!r} cannot be a folder name: send the page's host name, "
                          f"e.g. shop.example.com") from None


def png_bytes(rgba: np.ndarray) -> bytes:
    """Re-encode decoded pixels: RGB when fully opaque, else RGBA."""
    im = Image.fromarray(rgba, "RGBA")
    if int(rgba[..., 3].min()) == 255:
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=False)
    return buf.getvalue()


def save_sample(rgba: np.ndarray, text: str, site: str | None) -> tuple[str, int]:
    """Store one labelled captcha; returns (file name, number of samples in that folder)."""
    folder = samples_dir(site_folder_name(site))  # raises ValueError for a hopeless site name
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sample.", suffix=".png", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(png_bytes(rgba))
            f.flush()
            os.fsync(f.fileno())
        for n in range(1, MAX_COPIES + 1):
            name = f"{text}.png" if n == 1 else f"{text}_{n}.png"
            try:
                os.link(tmp, folder / name)  # atomic, and fails instead of overwriting
                break
            except FileExistsError:
                continue
        else:
            raise SampleError(f"{folder} already holds {MAX_COPIES} samples labelled {text!r}")
    finally:
        os.unlink(tmp)
    count = sum(1 for p in folder.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    return name, count
