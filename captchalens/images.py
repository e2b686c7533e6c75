"""Reading images safely: every image is treated as hostile.

Decoding gives RGBA uint8 pixels, exactly what a browser canvas gives the
extension, so that both sides start preprocessing from the same numbers.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_SIDE = 2048  # a captcha is small; refuse anything larger before decoding it
MAX_PIXELS = 2048 * 1024  # and anything whose area could be a decompression bomb
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}
# Only these decoders run: no EPS (Ghostscript), no exotic formats with a large attack surface.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")

# Pillow's own bomb guard: raise (not warn) above this many pixels.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(ValueError):
    """An image cannot be used; the message names it and says why."""


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
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a readable image ({_why(e)})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{name}: not a readable image ({_why(e)})") from None
    w, h = im.size  # read from the header, before any pixel is decoded
    if w < 1 or h < 1 or w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        im.close()
        raise ImageError(f"{name}: image is {w}x{h} pixels; a captcha must be at most "
                         f"{MAX_SIDE}x{MAX_SIDE} and {MAX_PIXELS} pixels")
    return im


def _why(e: BaseException) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "unknown or corrupt format"
    text = str(e).strip() or type(e).__name__
    return text.split("\n")[0][:200]


def read_rgba(src: bytes | str | os.PathLike, name: str | None = None) -> np.ndarray:
    """Decode an image file or bytes to an (H, W, 4) uint8 RGBA array.

    Raises ImageError, naming the image, for anything that is not a whole,
    reasonably sized image (missing, truncated, corrupt, too large, a bomb).
    """
    if name is None:
        name = "image" if isinstance(src, (bytes, bytearray)) else str(src)
    if isinstance(src, (bytes, bytearray)) and len(src) == 0:
        raise ImageError(f"{name}: empty file")
    im = _open(src, name)
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
    if h < 1 or w < 1 or h > MAX_SIDE or w > MAX_SIDE:
        raise ImageError(f"{name}: image is {w}x{h} pixels; at most {MAX_SIDE}x{MAX_SIDE}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.shape[2] == 3:
        a = np.concatenate([a, np.full((h, w, 1), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(a)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in folder, sorted by name (for stable order)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
