"""Where corrections are stored, attacked: sites that must not share a folder, links planted
inside samples/, a file where a folder should be, a writer killed mid-sample."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from support_host import TOKEN_HEADER, b64, captcha, extension_id, loopback_client, untrained_model

from captchalens.native_host import create_app

TOKEN = "test-token-" + "s" * 32


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return untrained_model(tmp_path_factory.mktemp("model") / "random")


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture()
def app(home, model):
    return create_app({"PORT": 8765, "MODEL_DIRS": [str(model)], "EXTENSION_ID": extension_id(), "TOKEN": TOKEN})


@pytest.fixture()
def client(app):
    return loopback_client(app)


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
