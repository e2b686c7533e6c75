"""Labelled captchas sent by the extension, kept for retraining.

Each sample is the PNG of the decoded pixels (never the raw upload) at
``samples/<site>/<text>.png`` in the CaptchaLens home — or ``<text>_2.png``,
``<text>_3.png`` ... when that name is taken.

The site's folder is the page's host name, one folder per site and never one for two:
lower case, Unicode labels as IDNA ASCII (``é.com`` -> ``xn--9ca.com``), a port after
``+`` (``example.com:8443`` -> ``example.com+8443``), an IPv6 address in brackets with
``-`` for ``:`` (``[::1]`` -> ``[--1]``); without a site, ``unsorted``.  Anything that
is not a host name[:port] is refused rather than squeezed into a name.

Nothing below the CaptchaLens home is followed if it is a symbolic link: each folder
and file is opened relative to its parent with O_NOFOLLOW.  Files appear whole (a
temp file, fsync, then a hard link to a name that must not exist yet) and are never
overwritten; temp files left by a killed host are swept when the host starts.

Whoever holds the token could fill the disk, so: images far larger than a captcha are
refused, each site folder and samples/ as a whole have quotas (507 when full), POST
/samples is rate-limited (429), and samples are stored as compact PNGs (greyscale or
a palette when that loses nothing, zlib at its best).
"""
from __future__ import annotations

import errno
import io
import ipaddress
import logging
import os
import re
import secrets
import stat
import threading
import time
import unicodedata
from pathlib import Path

from dataclasses import dataclass

import numpy as np
from PIL import Image

from captchalens.contract import ModelMeta
from captchalens.home import home
from captchalens.images import IMAGE_SUFFIXES

from .security import TokenBucket

log = logging.getLogger("captchalens.host")

MAX_COPIES = 10_000  # x7kq.png ... x7kq_10000.png; past that something is wrong
MAX_LABEL = 64  # characters in one sample's answer
UNSORTED = "unsorted"  # the folder for samples sent without a site
TEMP_PREFIX = ".sample."  # temp files: .sample.<random>.tmp (older hosts: .sample.<random>.png)
STALE_TEMP = 60.0  # seconds after which a temp file is a killed writer's leftover
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
MB = 1000 * 1000


@dataclass(frozen=True)
class SampleLimits:
    """How much one token holder may store. A captcha sample is a few KB (160x60: 5-15 KB)."""

    max_side: int = 1024  # px; text captchas are 100-400 px wide
    max_pixels: int = 256 * 1024  # e.g. 1024x256 or 512x512; the 2048x1024 pictures of an attack are refused
    per_site: int = 5000  # samples in one site's folder
    per_site_bytes: int = 50 * MB
    total_bytes: int = 500 * MB  # all of samples/: many sites must not add up to a full disk
    per_second: float = 2.0  # sustained POST /samples rate (a person corrects one every few seconds)
    burst: int = 30  # at once, e.g. the extension sending its queue of corrections


class SampleError(ValueError):
    """The sample cannot be stored; the message says why, status is the HTTP answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


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


# ---- site -> folder -------------------------------------------------------------------
_ASCII_LABEL = re.compile(r"[a-z0-9_-]{1,63}")


def _label(label: str) -> str | None:
    """One host-name label in ASCII (Punycode for Unicode labels), or None if it cannot be one."""
    if label.isascii():
        return label if _ASCII_LABEL.fullmatch(label) else None
    if not all(unicodedata.category(c)[0] in "LMN" or c in "-_" for c in label):
        return None
    ascii_label = "xn--" + label.encode("punycode").decode("ascii")
    return ascii_label if len(ascii_label) <= 63 else None


def site_folder_name(site: str | None) -> str:
    """The samples folder of a page's host[:port]: different sites never share a folder.

    'Shop.Example.com' -> 'shop.example.com', 'é.com' -> 'xn--9ca.com',
    'example.com:8443' -> 'example.com+8443', '127.0.0.1' -> '127.0.0.1', '[::1]:80' -> '[--1]+80',
    None or '' -> 'unsorted'. Raises SampleError for anything that is not a host name[:port]."""
    if site is None or not site.strip():
        return UNSORTED
    refused = SampleError(f"site {site!r} is not a host name (send the page's host, e.g. "
                          f"shop.example.com or shop.example.com:8443)")
    name = unicodedata.normalize("NFC", site.strip()).lower()
    port = None
    v6 = re.fullmatch(r"\[([0-9a-f:.]+)\](?::(\d{1,5}))?", name)
    if v6:
        name, port = v6.group(1), v6.group(2)
    elif name.count(":") == 1:
        name, port = name.split(":")
        if not re.fullmatch(r"\d{1,5}", port):
            raise refused
    elif ":" in name:
        raise refused  # an IPv6 address must be in brackets, as in a URL
    if port is not None:
        port = int(port)
        if not 1 <= port <= 65535:
            raise refused
    if v6:
        try:
            folder = "[" + ipaddress.IPv6Address(name).compressed.replace(":", "-") + "]"
        except ValueError:
            raise refused from None
    else:
        name = name[:-1] if name.endswith(".") else name  # 'example.com.' is 'example.com'
        labels = [_label(lb) for lb in name.split(".")]
        if not name or None in labels:
            raise refused
        folder = ".".join(labels)
        if folder.rsplit(".", 1)[-1].isdigit():  # ends in a number: it must be an IPv4 address
            try:
                folder = str(ipaddress.IPv4Address(folder))
            except ValueError:
                raise refused from None
        if len(folder) > 253:
            raise refused
    if folder == UNSORTED and port is None:
        raise SampleError(f"site {site!r} is reserved: samples without a site go to '{UNSORTED}'")
    return folder if port is None else f"{folder}+{port}"


# ---- pixels -> PNG ----------------------------------------------------------------------
def compact_image(rgba: np.ndarray) -> Image.Image:
    """The smallest lossless PNG mode for these pixels: L or LA for grey, P (a palette, with
    alpha in it when needed) for at most 256 colours, else RGB or RGBA."""
    opaque = bool((rgba[..., 3] == 255).all())
    rgb = rgba[..., :3]
    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    if grey:
        return Image.fromarray(np.ascontiguousarray(rgba[..., 0]), "L") if opaque else \
            Image.fromarray(np.ascontiguousarray(rgba[..., [0, 3]]), "LA")
    channels = 3 if opaque else 4
    packed = np.zeros(rgba.shape[:2], np.uint32)
    for c in range(channels):
        packed = (packed << 8) | rgba[..., c]
    colours, index = np.unique(packed.ravel(), return_inverse=True)
    if len(colours) <= 256:
        im = Image.fromarray(index.reshape(rgba.shape[:2]).astype(np.uint8), "P")
        palette = np.stack([(colours >> (8 * (channels - 1 - c))) & 0xFF for c in range(channels)], axis=1)
        im.putpalette(palette.astype(np.uint8).tobytes(), "RGB" if opaque else "RGBA")
        return im
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB") if opaque else Image.fromarray(rgba, "RGBA")


def png_bytes(rgba: np.ndarray) -> bytes:
    """Decoded pixels as a compact, lossless PNG."""
    buf = io.BytesIO()
    compact_image(rgba).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def check_size(rgba: np.ndarray, limits: SampleLimits) -> None:
    h, w = rgba.shape[:2]
    if w > limits.max_side or h > limits.max_side or w * h > limits.max_pixels:
        raise SampleError(f"the image is {w}x{h} pixels, far larger than a captcha: a sample may be at most "
                          f"{limits.max_side} px a side and {limits.max_pixels} pixels", 413)


# ---- the store ----------------------------------------------------------------------------
def _is_sample(entry: os.DirEntry) -> bool:
    return (not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
            and entry.is_file(follow_symlinks=False))


@dataclass
class _Usage:
    stamp: tuple  # the folder's (inode, mtime): when it changes, the folder is counted again
    count: int
    bytes: int


class SampleStore:
    """samples/ in the CaptchaLens home, written without following any link below the home,
    within SampleLimits."""

    def __init__(self, root_home: Path | None = None, limits: SampleLimits | None = None):
        self.home = Path(root_home or home())
        self.limits = limits or SampleLimits()
        self.rate = TokenBucket(self.limits.per_second, self.limits.burst)
        self._lock = threading.Lock()  # quota check and link, one sample at a time
        self._usage: dict[str, _Usage] = {}

    @property
    def root(self) -> Path:
        return self.home / "samples"

    def _open_dir(self, parent_fd: int, name: str, shown: str, create: bool = True) -> int:
        """Open (creating if asked) the folder `name` inside parent_fd; never through a link."""
        if create:
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            except FileExistsError:
                pass
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise
            kind = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
        if stat.S_ISLNK(kind):
            raise SampleError(f"{shown} is a symbolic link: the host never follows links inside its "
                              f"home folder (remove the link; to keep samples elsewhere, set "
                              f"CAPTCHALENS_HOME)", 409)
        raise SampleError(f"{shown} is a file, not a folder: move it away so that samples can be "
                          f"stored there", 409)

    def _root_fd(self) -> int:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        home_fd = os.open(self.home, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        try:
            return self._open_dir(home_fd, "samples", str(self.root))
        finally:
            os.close(home_fd)

    def _folder_usage(self, dir_fd: int, name: str) -> _Usage:
        st = os.fstat(dir_fd)
        stamp = (st.st_ino, st.st_mtime_ns)
        usage = self._usage.get(name)
        if usage is None or usage.stamp != stamp:
            count = size = 0
            for entry in os.scandir(dir_fd):
                if _is_sample(entry):
                    count += 1
                    size += entry.stat(follow_symlinks=False).st_size
            usage = self._usage[name] = _Usage(stamp, count, size)
        return usage

    def _total_bytes(self, root_fd: int) -> int:
        total = 0
        for entry in os.scandir(root_fd):
            if entry.is_dir(follow_symlinks=False):
                try:
                    fd = os.open(entry.name, DIR_FLAGS, dir_fd=root_fd)
                except OSError:
                    continue  # gone meanwhile, or replaced by a link: not ours to count
                try:
                    total += self._folder_usage(fd, entry.name).bytes
                finally:
                    os.close(fd)
        return total

    def _check_quota(self, root_fd: int, dir_fd: int, folder: str, size: int) -> _Usage:
        lim, usage = self.limits, self._folder_usage(dir_fd, folder)
        where = self.root / folder
        make_room = (f"train on them (captchalens train --data {where}), then move them out of "
                     f"samples/ to make room")
        if usage.count + 1 > lim.per_site:
            raise SampleError(f"{where} already holds {usage.count} samples, the most one site may "
                              f"hold: {make_room}", 507)
        if usage.bytes + size > lim.per_site_bytes:
            raise SampleError(f"{where} already holds {usage.bytes / MB:.1f} MB of samples (at most "
                              f"{lim.per_site_bytes / MB:.0f} MB per site): {make_room}", 507)
        total = self._total_bytes(root_fd)
        if total + size > lim.total_bytes:
            raise SampleError(f"{self.root} already holds {total / MB:.1f} MB of samples (at most "
                              f"{lim.total_bytes / MB:.0f} MB in all): train on them, then move them "
                              f"out of samples/ to make room", 507)
        return usage

    def save(self, rgba: np.ndarray, text: str, site: str | None) -> tuple[str, int]:
        """Store one labelled captcha; returns (file name, number of samples in that folder)."""
        folder = site_folder_name(site)
        check_size(rgba, self.limits)
        data = png_bytes(rgba)
        root_fd = self._root_fd()
        try:
            dir_fd = self._open_dir(root_fd, folder, str(self.root / folder))
            try:
                with self._lock:
                    usage = self._check_quota(root_fd, dir_fd, folder, len(data))
                    name = self._write(dir_fd, folder, text, data)
                    st = os.fstat(dir_fd)
                    usage.stamp = (st.st_ino, st.st_mtime_ns)
                    usage.count, usage.bytes = usage.count + 1, usage.bytes + len(data)
                    return name, usage.count
            finally:
                os.close(dir_fd)
        finally:
            os.close(root_fd)

    def _write(self, dir_fd: int, folder: str, text: str, data: bytes) -> str:
        tmp = f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, FILE_FLAGS, 0o600, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                return self._link(dir_fd, tmp, text, folder)
            finally:
                os.unlink(tmp, dir_fd=dir_fd)
        except OSError as e:
            raise SampleError(f"cannot store the sample in {self.root / folder}: {e.strerror or e}",
                              507 if e.errno == errno.ENOSPC else 500) from None

    def _link(self, dir_fd: int, tmp: str, text: str, folder: str) -> str:
        for n in range(1, MAX_COPIES + 1):
            name = f"{text}.png" if n == 1 else f"{text}_{n}.png"
            try:  # atomic; fails instead of overwriting (or following) whatever has that name
                os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                return name
            except FileExistsError:
                continue
        raise SampleError(f"{self.root / folder} already holds {MAX_COPIES} samples labelled {text!r}", 409)

    def sweep(self, older_than: float = STALE_TEMP) -> int:
        """Remove temp files that writers killed mid-sample left behind; returns how many."""
        removed = 0
        if self.root.is_symlink():
            return 0  # never followed: saving says so
        try:
            sites = [e for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return 0
        cutoff = time.time() - older_than
        for site in sites:
            try:
                for entry in os.scandir(site.path):
                    if (entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False)
                            and entry.stat(follow_symlinks=False).st_mtime < cutoff):
                        os.unlink(entry.path)
                        removed += 1
            except OSError as e:
                log.warning("could not sweep %s: %s", site.path, e)
        if removed:
            log.info("removed %d unfinished sample file(s) left by an interrupted host", removed)
        return removed
