"""Where corrections are stored, attacked: sites that must not share a folder, links planted
inside samples/, a file where a folder should be, a writer killed mid-sample; and how much a
token holder may store: images far larger than a captcha, full folders, floods."""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from support_host import TOKEN_HEADER, b64, captcha, extension_id, loopback_client

from captchalens.images import read_rgba
from captchalens.native_host import create_app

TOKEN = "test-token-" + "s" * 32


@pytest.fixture()
def app(home, model):
    return create_app({"PORT": 8765, "MODEL_DIRS": [str(model)], "EXTENSION_ID": extension_id(), "TOKEN": TOKEN})


def post(client, site, text="ab12", index=7, **extra):
    body = {"image": b64(captcha(index)[0]), "text": text, **({"site": site} if site is not None else {}), **extra}
    return client.post("/samples", json=body, headers={TOKEN_HEADER: TOKEN})


def stored(home) -> dict[str, list[str]]:
    """{folder: [files]} under samples/, links and all, nothing followed."""
    root = home / "samples"
    return {d.name: sorted(os.listdir(d)) for d in sorted(root.iterdir()) if d.is_dir() and not d.is_symlink()}


# ---- one folder per site, and never one for two ------------------------------------------
@pytest.mark.parametrize("site, folder", [
    ("shop.example.com", "shop.example.com"),
    ("Shop.Example.COM", "shop.example.com"),
    ("shop.example.com.", "shop.example.com"),
    ("é.com", "xn--9ca.com"),  # what the browser's location.hostname says for it
    ("xn--9ca.com", "xn--9ca.com"),
    ("straße.de", "xn--strae-oqa.de"),  # not strasse.de, another site
    ("shop.example.com:8443", "shop.example.com+8443"),
    ("127.0.0.1", "127.0.0.1"),
    ("127.0.0.1:8080", "127.0.0.1+8080"),
    ("[::1]", "[--1]"),
    ("[::1]:8080", "[--1]+8080"),
    ("[2001:DB8::1]", "[2001-db8--1]"),
    ("localhost", "localhost"),
    ("my_host.example", "my_host.example"),
    ("", "unsorted"),
    (None, "unsorted"),
])
def test_a_site_is_stored_in_its_own_readable_folder(client, home, site, folder):
    r = post(client, site)
    assert r.status_code == 201, r.json
    assert stored(home) == {folder: ["ab12.png"]}


def test_sites_that_used_to_share_a_folder_get_one_each(client, home):
    """Before: 'é.com' and 'com' both went to samples/com; 'a-b' took what 'a/b' and 'a b' sent."""
    sites = ["é.com", "com", "a-b", "a.b", "ab", "example.com", "example.com:8443", "straße.de",
             "strasse.de", "[::1]", "1.2.3.4", "xn--9ca.com"]
    for i, site in enumerate(sites):
        assert post(client, site, text=f"s{i}").status_code == 201, site
    folders = stored(home)
    assert len(folders) == len(sites) - 1  # 'xn--9ca.com' is how a browser names 'é.com': one site
    assert sorted(folders["xn--9ca.com"]) == ["s0.png", "s11.png"]


@pytest.mark.parametrize("site", ["a/b", "a b", "a\\b", "../../etc", "..", ".", "a..b", "/../", "*.example.com",
                                  "a:b:c", "[::1", "::1", "example.com:0", "example.com:99999",
                                  "example.com:http", "ex%41mple.com", "x" * 64 + ".com", "256.1.1.1",
                                  "a\x00b", "unsorted"])
def test_anything_that_is_not_a_host_name_is_refused_and_nothing_is_written(client, home, site):
    r = post(client, site)
    assert r.status_code == 400 and r.is_json, r.data
    assert re.search("is not a host name|is reserved", r.json["error"]), r.json
    assert not (home / "samples").exists() or not any(stored(home).values())


# ---- links and files planted in samples/ ---------------------------------------------------------
def test_a_folder_link_planted_in_samples_is_not_followed(client, home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (home / "samples").mkdir(parents=True)
    (home / "samples" / "evil.example").symlink_to(outside)
    r = post(client, "evil.example")
    assert r.status_code == 409 and "symbolic link" in r.json["error"], r.json
    assert list(outside.iterdir()) == []


def test_samples_itself_as_a_link_is_not_followed(client, home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    home.mkdir(parents=True, exist_ok=True)
    (home / "samples").symlink_to(outside)
    r = post(client, "shop.example")
    assert r.status_code == 409 and "symbolic link" in r.json["error"]
    assert list(outside.iterdir()) == []


def test_a_file_link_planted_where_a_sample_would_go_is_never_written_through(client, home, tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    site = home / "samples" / "shop.example"
    site.mkdir(parents=True)
    (site / "ab12.png").symlink_to(target)
    (site / "ab12_2.png").symlink_to(tmp_path / "dangling")
    r = post(client, "shop.example")
    assert r.status_code == 201 and r.json["saved"] == "ab12_3.png"
    assert target.read_text() == "keep me" and not (tmp_path / "dangling").exists()
    assert r.json["count"] == 1  # links are not samples


def test_a_file_where_the_site_folder_should_be_is_a_clear_409(client, home):
    (home / "samples").mkdir(parents=True)
    (home / "samples" / "shop.example").write_text("not a folder")
    r = post(client, "shop.example")
    assert r.status_code == 409 and r.is_json and "is a file, not a folder" in r.json["error"], r.json
    assert (home / "samples" / "shop.example").read_text() == "not a folder"
    assert post(client, "other.example").status_code == 201  # the host keeps working


# ---- a writer killed mid-sample -----------------------------------------------------------------
KILLED_WRITER = """
import os, sys, time, json
os.fsync = lambda fd: time.sleep(600)  # stuck writing: the test kills this process here
from captchalens.native_host import create_app
app = create_app({"MODEL_DIRS": [sys.argv[1]], "TOKEN": "t" * 40, "EXTENSION_ID": "a" * 32})
body = json.loads(sys.stdin.read())
app.test_client().post("/samples", json=body, headers={"X-CaptchaLens-Token": "t" * 40},
                       base_url="http://127.0.0.1:8765")
"""


def test_temp_files_of_a_killed_writer_are_swept_when_the_host_starts(home, model):
    body = json.dumps({"image": b64(captcha(3)[0]), "text": "ab12", "site": "shop.example"})
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(model)], stdin=subprocess.PIPE,
                            env=dict(os.environ, CAPTCHALENS_HOME=str(home)), text=True)
    proc.stdin.write(body)
    proc.stdin.close()
    site = home / "samples" / "shop.example"
    deadline = time.monotonic() + 120
    while not (site.is_dir() and os.listdir(site)):
        assert proc.poll() is None and time.monotonic() < deadline, "the writer never started writing"
        time.sleep(0.1)  # polling for the temp file, bounded by the deadline
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (left,) = os.listdir(site)
    assert left.startswith(".sample.")  # what a killed writer leaves
    old = time.time() - 3600
    os.utime(site / left, (old, old))  # an hour later, the host starts again
    fresh = site / ".sample.in-use-by-another-host.tmp"
    fresh.write_bytes(b"")

    create_app({"MODEL_DIRS": [str(model)], "TOKEN": TOKEN, "EXTENSION_ID": extension_id()})
    assert os.listdir(site) == [fresh.name]  # the stale one is gone; a fresh one may be in use


# ---- limits: size, quotas, rate, compact files -----------------------------------------------
def limited_app(home, model, **limits):
    return create_app({"PORT": 8765, "MODEL_DIRS": [str(model)], "EXTENSION_ID": extension_id(), "TOKEN": TOKEN,
                       "SAMPLE_LIMITS": limits})


def encoded(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_an_image_far_larger_than_a_captcha_is_refused_as_a_sample(client, home):
    """A 0.99 MB 2048x1024 JPEG used to be stored as a 6.3 MB PNG."""
    noise = np.random.default_rng(0).integers(0, 255, (1024, 2048, 3), np.uint8)
    jpeg = encoded(Image.fromarray(noise), "JPEG", quality=60)
    assert 0.5e6 < len(jpeg) < 2e6
    r = client.post("/samples", data={"image": (io.BytesIO(jpeg), "big.jpg"), "text": "ab12", "site": "big.example"},
                    headers={TOKEN_HEADER: TOKEN})
    assert r.status_code == 413 and "2048x1024 pixels, far larger than a captcha" in r.json["error"], r.json
    assert not (home / "samples" / "big.example").exists()
    assert client.post("/solve", data=jpeg, content_type="image/jpeg").status_code == 200  # solving is not limited


def _kinds():
    from captchalens.training.generate import GenSpec, draw

    colour, _ = draw(GenSpec(), seed=3, index=0)  # a generated captcha: noise, many colours
    grey = colour.convert("L")
    ink = (np.asarray(grey) > 128)[..., None]
    two = Image.fromarray(np.where(ink, [200, 30, 30], [20, 40, 220]).astype(np.uint8), "RGB")  # red on blue
    clear = colour.convert("RGBA")
    clear.putalpha(Image.fromarray(np.where(np.asarray(grey) > 128, 0, 255).astype(np.uint8)))
    grey_clear = grey.convert("LA")
    grey_clear.putalpha(clear.getchannel("A"))
    palette_clear = two.convert("RGBA")
    palette_clear.putalpha(clear.getchannel("A"))
    return [("colour", colour.convert("RGB"), "RGB"), ("grey", grey, "L"), ("two-colour", two, "P"),
            ("transparent", clear, "RGBA"), ("grey-transparent", grey_clear, "LA"),
            ("palette-transparent", palette_clear, "P")]


@pytest.mark.parametrize("name, im, mode", _kinds(), ids=[k[0] for k in _kinds()])
def test_samples_are_stored_as_compact_lossless_pngs(client, home, name, im, mode):
    upload = encoded(im)
    r = client.post("/samples", data={"image": (io.BytesIO(upload), "c.png"), "text": "ab12", "site": "kinds.example"},
                    headers={TOKEN_HEADER: TOKEN})
    assert r.status_code == 201, r.json
    saved = (home / "samples" / "kinds.example" / "ab12.png").read_bytes()
    with Image.open(io.BytesIO(saved)) as stored_im:
        assert stored_im.format == "PNG" and stored_im.mode == mode
    assert np.array_equal(read_rgba(saved), read_rgba(upload))  # not a pixel lost
    as_before = encoded(Image.fromarray(read_rgba(upload)).convert("RGB" if mode in ("RGB", "L", "P") and
                                                                   "transparent" not in name else "RGBA"))
    assert len(saved) < len(as_before), (len(saved), len(as_before))


def test_a_full_site_folder_gets_507_and_room_made_is_used_again(home, model):
    c = loopback_client(limited_app(home, model, per_site=3))
    for i in range(3):
        assert post(c, "full.example", text=f"ab{i}").status_code == 201
    r = post(c, "full.example", text="ab3")
    assert r.status_code == 507 and r.is_json, r.json
    assert "already holds 3 samples, the most one site may hold" in r.json["error"]
    assert "captchalens train --data" in r.json["error"] and "make room" in r.json["error"]
    assert sorted(os.listdir(home / "samples" / "full.example")) == ["ab0.png", "ab1.png", "ab2.png"]
    assert post(c, "other.example").status_code == 201  # another site is not affected
    (home / "samples" / "full.example" / "ab0.png").unlink()  # the user trained and moved one away
    r = post(c, "full.example", text="ab3")
    assert r.status_code == 201 and r.json["count"] == 3


def test_site_and_total_byte_quotas_get_507(home, model):
    one = len((lambda c: (post(c, "size.example"), (home / "samples" / "size.example" / "ab12.png").read_bytes())[1])(
        loopback_client(limited_app(home, model))))
    c = loopback_client(limited_app(home, model, per_site_bytes=int(2.5 * one), total_bytes=int(4.5 * one)))
    assert post(c, "size.example", text="cd34").status_code == 201  # 2 samples of this size
    r = post(c, "size.example", text="ef56")
    assert r.status_code == 507 and "MB of samples (at most" in r.json["error"] and "per site" in r.json["error"]
    assert post(c, "more.example").status_code == 201
    assert post(c, "more.example", text="cd34").status_code == 201  # 4 in all
    r = post(c, "third.example")
    assert r.status_code == 507 and "in all" in r.json["error"], r.json
    assert not (home / "samples" / "third.example" / "ab12.png").exists()


def test_posting_samples_is_rate_limited_with_429(home, model):
    from captchalens.native_host.security import TokenBucket

    app = limited_app(home, model)
    clock = [100.0]
    app.extensions["captchalens"].samples.rate = TokenBucket(0.5, 3, clock=lambda: clock[0])
    c = loopback_client(app)
    for i in range(3):
        assert post(c, "rate.example", text=f"ab{i}").status_code == 201
    r = post(c, "rate.example", text="ab3")
    assert r.status_code == 429 and "too many samples" in r.json["error"] and r.headers["Retry-After"] == "2"
    assert not (home / "samples" / "rate.example" / "ab3.png").exists()
    clock[0] += 2
    assert post(c, "rate.example", text="ab3").status_code == 201
