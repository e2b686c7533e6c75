"""Reading images safely: every image is treated as hostile.

Decoding gives RGBA uint8 pixels, exactly what a browser canvas gives the
extension, so that both sides start preprocessing from the same numbers.
"""
from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# The limits are the extension's too (extension/shared/image_limits.json, read by contract.py).
from .contract import IMAGE_FORMATS as FORMATS  # only these decoders run: no EPS (Ghostscript) and the like
_NAMES = [{"WEBP": "WebP"}.get(f, f) for f in FORMATS]
FORMAT_NAMES = ", ".join(_NAMES[:-1]) + " and " + _NAMES[-1]  # "PNG, JPEG, GIF, BMP and WebP", for messages
from .contract import IMAGE_SUFFIXES, MAX_PIXELS, MAX_SIDE, image_size_problem  # noqa: F401 (re-exported)
from .errors import UserError

# A progressive JPEG's decoder passes over the whole image once per scan: 20,006 scans
# in a 288 KB file took 56 s. Encoders write at most ~10-20 scans; refuse beyond this.
MAX_JPEG_SCANS = 64
MAX_FILE_BYTES = 16 * 1024 * 1024  # an uncompressed 2048x1024 RGBA BMP is 8 MB

# Pillow's own bomb guard: raise (not warn) above this many pixels.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(UserError, ValueError):
    """An image cannot be used; the message names it and says why."""


_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def read_file(path: str | os.PathLike, name: str | None = None) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES.

    Anything else (a FIFO, a device, a socket, a folder) is named and never
    opened for reading: its type is checked before opening, and the open
    itself cannot block (O_NONBLOCK) should it have been swapped meanwhile."""
    name = str(path) if name is None else name
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{name}: cannot read it ({e.strerror})") from None
    _check_regular(st, name)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{name}: cannot read it ({e.strerror})") from None
    try:
        _check_regular(os.fstat(fd), name)  # the file opened is the file checked
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise ImageError(f"{name}: cannot read it ({e.strerror})") from None
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{name}: file is over {MAX_FILE_BYTES} bytes; a captcha image is not")
    return b"".join(chunks)


def _check_regular(st: os.stat_result, name: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{name}: is a folder, not an image")
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise ImageError(f"{name}: is {kind}, not an image file; not opened")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageError(f"{name}: file is {st.st_size} bytes; a captcha image is at most "
                         f"{MAX_FILE_BYTES} bytes")


def _open(data: bytes | str | os.PathLike, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
            im = Image.open(src, formats=FORMATS)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: image is too large to be a captcha (at most {MAX_SIDE}x{MAX_SIDE} "
                         f"and {MAX_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image (unknown or corrupt format; CaptchaLens reads "
                         f"{FORMAT_NAMES})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{name}: not a readable image ({_why(e)})") from None
    w, h = im.size  # read from the header, before any pixel is decoded
    problem = image_size_problem(w, h)
    if problem:
        im.close()
        raise ImageError(f"{name}: {problem}")
    return im


def jpeg_scans(data: bytes, limit: int = MAX_JPEG_SCANS) -> int:
    """Count the scans (SOS markers) of a JPEG byte stream, without decoding it;
    stops counting at limit + 1.

    Walks markers the way libjpeg finds them: a segment's payload is skipped by
    its length; entropy-coded data runs to the next 0xFF that is not stuffing
    (FF00), a restart marker (FFD0-FFD7) or fill (FFFF); bytes between
    segments are skipped to the next 0xFF.  The first EOI ends the image."""
    n, i, scans = len(data), 2, 0
    while i < n:
        j = data.find(b"\xff", i)
        if j < 0:
            break
        k = j + 1
        while k < n and data[k] == 0xFF:  # fill bytes before a marker
            k += 1
        if k >= n:
            break
        m = data[k]
        if m == 0x00 or 0xD0 <= m <= 0xD7 or m == 0x01:  # stuffing, restart, TEM: no segment
            i = k + 1
            continue
        if m == 0xD9:  # EOI
            break
        if k + 3 > n:
            break
        length = (data[k + 1] << 8) | data[k + 2]
        if m == 0xDA:
            scans += 1
            if scans > limit:
                break
        i = k + 1 + max(length, 2)  # the decoder itself refuses a length below 2
    return scans


def _check_cost(data: bytes, name: str) -> None:
    """Refuse images whose decoding would cost far more than their size suggests."""
    if data[:2] == b"\xff\xd8":
        scans = jpeg_scans(data)
        if scans > MAX_JPEG_SCANS:
            raise ImageError(f"{name}: JPEG with more than {MAX_JPEG_SCANS} scans; a captcha needs a "
                             f"handful, and each one makes decoding pass over the whole image again")


def _why(e: BaseException) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "unknown or corrupt format"
    text = str(e).strip() or type(e).__name__
    return text.split("\n")[0][:200]


def read_rgba(src: bytes | str | os.PathLike, name: str | None = None) -> np.ndarray:
    """Decode an image file or bytes to an (H, W, 4) uint8 RGBA array.

    Raises ImageError, naming the image, for anything that is not a whole,
    reasonably sized image (missing, truncated, corrupt, too large, a bomb, a
    JPEG of more than MAX_JPEG_SCANS scans) or not a regular file (a FIFO or a
    device is named, never opened for reading).
    """
    if name is None:
        name = "image" if isinstance(src, (bytes, bytearray)) else str(src)
    data = bytes(src) if isinstance(src, (bytes, bytearray)) else read_file(src, name)
    if len(data) == 0:
        raise ImageError(f"{name}: empty file")
    _check_cost(data, name)
    im = _open(data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.seek(0)  # first frame of an animation
            rgba = im.convert("RGBA")
            arr = np.asarray(rgba, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: image is too large to be a captcha") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"{name}: not a readable image ({_why(e)})") from None
    finally:
        im.close()
    if arr.ndim != 3 or arr.shape[2] != 4:
        raise ImageError(f"{name}: could not be converted to RGBA pixels")
    return arr


def to_rgba(pixels: np.ndarray, name: str = "array") -> np.ndarray:
    """Accept (H,W), (H,W,1), (H,W,3) or (H,W,4) uint8 pixels; return RGBA."""
    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        raise ImageError(f"{name}: pixels must be uint8, not {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name}: pixels must be HxW, HxWx1, HxWx3 or HxWx4, not {a.shape}")
    h, w = a.shape[:2]
    problem = image_size_problem(w, h)
    if problem:
        raise ImageError(f"{name}: {problem}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.shape[2] == 3:
        a = np.concatenate([a, np.full((h, w, 1), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(a)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Entries named like images directly in folder (sub-folders aside), sorted by
    name for a stable order.  A FIFO or a device named like an image is listed
    too, so that reading it names it (read_file never opens it)."""
    folder = Path(folder)
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries
                      if Path(e.name).suffix.lower() in IMAGE_SUFFIXES and not _is_dir(e))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
