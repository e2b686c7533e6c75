"""Every image is hostile: bad files get a clear error naming them."""
import io
import os
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from captchalens.images import MAX_FILE_BYTES, ImageError, read_rgba, to_rgba


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


# ---- decode cost: a progressive JPEG is decoded once per scan ------------------------

def _segments(jpeg: bytes):
    """(marker, start, end) of each segment; a scan's end includes its entropy-coded data."""
    out, i = [], 2
    while jpeg[i + 1] != 0xD9:
        m, end = jpeg[i + 1], i + 2 + struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if m == 0xDA:
            while jpeg[end] != 0xFF or jpeg[end + 1] == 0 or 0xD0 <= jpeg[end + 1] <= 0xD7:
                end += 1
        out.append((m, i, end))
        i = end
    return out


def _many_scans(n, side=1024, between=b""):
    """A small progressive JPEG whose last scan is repeated n times (libjpeg only warns
    about the bogus progression, then passes over the whole image again for each)."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 128).save(buf, "JPEG", progressive=True)
    jpeg = buf.getvalue()
    _, start, end = [s for s in _segments(jpeg) if s[0] == 0xDA][-1]
    return jpeg[:end] + (between + jpeg[start:end]) * n + jpeg[end:]


@pytest.mark.parametrize("between", [b"", b"\x00garbage\x00"])  # junk a naive marker walk would stop at
def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding(between):
    data = _many_scans(3000, between=between)
    assert len(data) < 200_000  # small file, huge decode: ~2 s before the limit (20,006 scans: 56 s)
    with pytest.raises(ImageError, match="more than 64 scans"):
        read_rgba(data, "upload.jpg")


def test_ordinary_jpegs_still_decode():
    for kw in ({}, {"progressive": True}, {"progressive": True, "optimize": True}):
        buf = io.BytesIO()
        Image.new("RGB", (160, 60), (10, 200, 30)).save(buf, "JPEG", quality=90, **kw)
        assert read_rgba(buf.getvalue()).shape == (60, 160, 4)
    # A comment full of SOS-marker bytes is not scans: segment payloads are skipped by length.
    buf = io.BytesIO()
    Image.new("RGB", (160, 60)).save(buf, "JPEG", progressive=True, comment=b"\xff\xda" * 2000)
    assert read_rgba(buf.getvalue()).shape == (60, 160, 4)
    assert read_rgba(_many_scans(40, side=64)).shape == (64, 64, 4)  # under the limit


# ---- files that are not regular files ------------------------------------------------

def test_a_fifo_is_named_and_never_opened(tmp_path):
    fifo = tmp_path / "captcha.png"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            read_rgba(fifo)
        except ImageError as e:
            outcome.append(str(e))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():  # it blocked in open(): release it so the suite goes on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail("reading a FIFO blocked, waiting for a writer")
    assert outcome == [f"{fifo}: is a FIFO (named pipe), not an image file; not opened"]


def test_devices_and_oversized_files_are_refused_before_reading(tmp_path):
    with pytest.raises(ImageError, match="character device"):
        read_rgba("/dev/zero")
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ImageError, match="big.png: file is .* bytes"):
        read_rgba(big)
