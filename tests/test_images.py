"""Every image is hostile: bad files get a clear error naming them."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from captchalens.images import ImageError, read_rgba, to_rgba


def _png(w=20, h=10, mode="RGB", noise=False):
    buf = io.BytesIO()
    if noise:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)).save(buf, "PNG")
    else:
        Image.new(mode, (w, h), 128 if mode == "L" else (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


def _png_header_claiming(w, h):
    """A PNG whose header claims w x h pixels, with almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_png_grayscale_and_transparent_images_become_rgba(tmp_path):
    assert read_rgba(_png()).shape == (10, 20, 4)
    gray = read_rgba(_png(mode="L"))
    assert (gray[..., 0] == 128).all() and (gray[..., 3] == 255).all()
    rgba = Image.new("RGBA", (5, 5), (255, 0, 0, 0))
    p = tmp_path / "t.png"
    rgba.save(p)
    assert (read_rgba(p)[..., 3] == 0).all()


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (b"hello, I am text", "not a readable image"),
    (_png(160, 60, noise=True)[:3000], "not a readable image"),  # truncated
    (_png_header_claiming(100_000, 100_000), "too large|at most"),  # dimensions checked before decoding
    (_png_header_claiming(3000, 10), "at most"),
])
def test_bad_bytes_are_refused_clearly(data, why):
    with pytest.raises(ImageError, match=why):
        read_rgba(data, "upload.png")


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nrubbish")
    with pytest.raises(ImageError, match="broken.png"):
        read_rgba(bad)
    with pytest.raises(ImageError, match="no such file"):
        read_rgba(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="folder"):
        read_rgba(tmp_path)


def test_arrays_of_any_channel_count_are_accepted_and_checked():
    assert to_rgba(np.zeros((4, 6), np.uint8)).shape == (4, 6, 4)
    assert to_rgba(np.zeros((4, 6, 3), np.uint8))[..., 3].min() == 255
    with pytest.raises(ImageError, match="uint8"):
        to_rgba(np.zeros((4, 6), np.float32))
    with pytest.raises(ImageError, match="HxW"):
        to_rgba(np.zeros((4, 6, 2), np.uint8))
