"""The local host's API through Flask's test client: what the extension (and a curious
user with curl) sees — answers, stored samples, models appearing, and clear errors."""
from __future__ import annotations

import io
import json
import re
import shutil
import threading

import numpy as np
import pytest
from PIL import Image
from support_host import TOKEN_HEADER, b64, captcha, extension_id, extension_origin, garbage, loopback_client

from captchalens.contract import META_FILE, load_meta
from captchalens.home import samples_dir
from captchalens.images import read_rgba
from captchalens.native_host import create_app
from captchalens.solver import Solver

TOKEN = "test-token-" + "x" * 32


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("home")
        mp.setenv("CAPTCHALENS_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def app(home, model):
    return create_app({"PORT": 8765, "MODEL_DIRS": [str(model)], "EXTENSION_ID": extension_id(),
                       "TOKEN": TOKEN, "RELOAD_INTERVAL": 0,
                       "SAMPLE_LIMITS": {"burst": 1000}})  # the rate limit: test_host_samples.py


@pytest.fixture(scope="module")
def expected(model):
    """What the Python solver says about the first captchas: the host must say the same."""
    solver = Solver(model)
    return {i: solver.solve_pixels([read_rgba(captcha(i)[0])])[0] for i in range(3)}


# ---- solving ----------------------------------------------------------------------
def test_health_names_the_models_and_models_gives_their_metadata(client, model):
    health = client.get("/health").json
    assert health["ok"] is True and health["api"] == 1 and health["models"] == ["random"]
    models = client.get("/models").json
    assert models["default"] == "random" and models["errors"] == []
    (served,) = models["models"]
    meta = load_meta(model).to_json()
    assert {k: served[k] for k in meta if k != "name"} == {k: v for k, v in meta.items() if k != "name"}


def test_solve_reads_multipart_raw_and_json_and_answers_like_the_solver(client, expected):
    png, _ = captcha(0)
    answers = [
        client.post("/solve", data={"image": (io.BytesIO(png), "c.png")}),
        client.post("/solve", data=png, content_type="image/png"),
        client.post("/solve", json={"image": b64(png)}),
        client.post("/solve", json={"image": "data:image/png;base64," + b64(png)}),
        client.post("/solve", data={"image": b64(png).rstrip("=").replace("+", "-").replace("/", "_")}),
    ]
    for r in answers:
        assert r.status_code == 200, r.json
        assert set(r.json) == {"text", "confidence", "model", "ms"}
        assert r.json["text"] == expected[0].text and r.json["model"] == "random"
        assert r.json["confidence"] == pytest.approx(expected[0].confidence, rel=1e-3)
        assert r.json["ms"] > 0


def test_each_captcha_gets_its_own_answer(client, expected):
    confidences = [client.post("/solve", data=captcha(i)[0], content_type="image/png").json["confidence"]
                   for i in range(3)]
    assert confidences == [pytest.approx(expected[i].confidence, rel=1e-4) for i in range(3)]
    assert len({round(c, 5) for c in confidences}) == 3  # the model does tell these apart


def test_every_model_is_micro_batched_unless_told_otherwise(home, model, tmp_path):
    """bench/results/host.md: under load, batching served 1.5-2x more on one CPU, 12% less on another."""
    from captchalens.native_host.registry import BatchRunner, LockedRunner, Registry
    from support_tflite import copy_without_fast_path

    slow = copy_without_fast_path(model, tmp_path / "slow")

    def runner(folder, **kw):
        (entry,) = Registry([folder], **kw).reload().entries.values()
        return entry.runner

    assert isinstance(runner(model), BatchRunner) and isinstance(runner(slow), BatchRunner)
    assert isinstance(runner(model, batching=False), LockedRunner)
    assert isinstance(runner(slow, batching=False), LockedRunner)


def test_a_model_is_chosen_by_name_and_an_unknown_one_is_named(client):
    png, _ = captcha(1)
    assert client.post("/solve?model=random", data=png, content_type="image/png").status_code == 200
    r = client.post("/solve", json={"image": b64(png), "model": "nope"})
    assert r.status_code == 404 and r.json == {"error": "no model named 'nope'; this host serves: random"}


def test_the_alphabet_comes_as_the_model_does_query_form_or_json(client, model):
    """The extension sends a site's characters as ?alphabet= (a PNG body, like its model)."""
    from urllib.parse import quote

    png, _ = captcha(2)
    want = Solver(model).solve_pixels([read_rgba(png)], "xyz")[0].text
    answers = [
        client.post("/solve?alphabet=" + quote("xyz"), data=png, content_type="image/png"),
        client.post("/solve", data={"image": (io.BytesIO(png), "c.png"), "alphabet": "xyz"}),
        client.post("/solve", json={"image": b64(png), "alphabet": "xyz"}),
    ]
    for r in answers:
        assert r.status_code == 200, r.json
        assert r.json["text"] == want and set(want) <= set("abcdefghijklmnopqrstuvwxyz")
    r = client.post("/solve?alphabet=" + quote("a b"), data=png, content_type="image/png")
    assert r.status_code == 400 and "'alphabet' must be at most 256 printable characters" in r.json["error"]


@pytest.mark.parametrize("case", garbage(), ids=lambda c: c[0])
def test_bad_input_gets_a_clear_json_error_never_a_500(client, case):
    _, body, kind, status, words = case
    r = client.post("/solve", data=body, content_type=kind or None)
    assert r.status_code == status and r.is_json, (r.status_code, r.data[:200])
    assert re.search(words, r.json["error"]), r.json
    assert client.get("/health").status_code == 200


def _encoded(fmt: str, convert: str | None = None, **kw) -> bytes:
    im = Image.open(io.BytesIO(captcha(0)[0]))
    im = im.convert(convert) if convert else im
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, convert, kw", [
    ("JPEG", "CMYK", {}), ("PNG", "LA", {}), ("PNG", "I;16", {}), ("GIF", "P", {"transparency": 0}),
    ("GIF", "P", {"save_all": True, "append_images": [Image.new("P", (160, 60))]}), ("WEBP", None, {}),
    ("BMP", None, {}),
], ids=["cmyk-jpeg", "la-png", "16bit-png", "transparent-gif", "animated-gif", "webp", "bmp"])
def test_odd_but_real_captcha_files_are_solved(client, fmt, convert, kw):
    r = client.post("/solve", data=_encoded(fmt, convert, **kw), content_type="image/png")
    assert r.status_code == 200 and r.json["model"] == "random"


@pytest.mark.parametrize("fmt", ["TIFF", "EPS", "ICO"])
def test_formats_no_captcha_uses_are_not_decoded(client, fmt):
    r = client.post("/solve", data=_encoded(fmt, "RGB"), content_type="application/octet-stream")
    assert r.status_code == 400 and "CaptchaLens reads PNG, JPEG, GIF, BMP and WebP" in r.json["error"]


def test_a_body_over_2_mb_is_refused_with_413(client):
    r = client.post("/solve", data=b"\x89PNG" + b"\0" * (2 * 1024 * 1024), content_type="image/png")
    assert r.status_code == 413 and "at most 2 MB" in r.json["error"]
    r = client.post("/solve", json={"image": "A" * (3 * 1024 * 1024)})
    assert r.status_code == 413 and r.is_json


def test_a_failure_inside_the_host_is_a_json_500_and_the_next_request_works(client, app, monkeypatch):
    runner = app.extensions["captchalens"].registry.entries["random"].runner

    def broken(rgba, alphabet=None):
        raise RuntimeError("/secret/path exploded")
    monkeypatch.setattr(runner, "solve", broken)
    r = client.post("/solve", data=captcha(0)[0], content_type="image/png")
    assert r.status_code == 500 and r.json == {"error": "internal error (RuntimeError); the host keeps running"}
    monkeypatch.undo()
    assert client.post("/solve", data=captcha(0)[0], content_type="image/png").status_code == 200


def test_unknown_paths_and_methods_answer_json(client):
    r = client.get("/nothing-here")
    assert r.status_code == 404 and r.is_json and "error" in r.json
    r = client.get("/solve")
    assert r.status_code == 405 and r.is_json


# ---- samples ----------------------------------------------------------------------
def test_samples_need_the_token(client, home):
    png, _ = captcha(2)
    assert client.post("/samples", json={"image": b64(png), "text": "ab12"}).status_code == 401
    r = client.post("/samples", json={"image": b64(png), "text": "ab12"}, headers={TOKEN_HEADER: "guess"})
    assert r.status_code == 403 and "wrong" in r.json["error"]
    assert not (home / "samples").exists()


def test_a_sample_is_stored_as_png_pixels_and_never_overwritten(client):
    jpeg, _ = captcha(3, fmt="JPEG")
    h = {TOKEN_HEADER: TOKEN}
    r1 = client.post("/samples", json={"image": b64(jpeg), "text": "q7k2", "site": "shop.example"}, headers=h)
    assert r1.status_code == 201 and r1.json == {"saved": "q7k2.png", "count": 1, "fits_model": True}
    folder = samples_dir("shop.example")
    first = (folder / "q7k2.png").read_bytes()
    assert first.startswith(b"\x89PNG")  # re-encoded, not the uploaded JPEG
    assert np.array_equal(read_rgba(first), read_rgba(jpeg))
    other, _ = captcha(4)
    r2 = client.post("/samples", data={"image": (io.BytesIO(other), "x.png"), "text": "q7k2",
                                       "site": "shop.example"}, headers=h)
    assert r2.status_code == 201 and r2.json == {"saved": "q7k2_2.png", "count": 2, "fits_model": True}
    assert (folder / "q7k2.png").read_bytes() == first
    assert sorted(p.name for p in folder.iterdir()) == ["q7k2.png", "q7k2_2.png"]  # no temp files left


def test_samples_saved_at_once_all_get_their_own_file(client):
    png, _ = captcha(5)
    results = []

    def post():
        c = loopback_client(client.application)
        results.append(c.post("/samples", json={"image": b64(png), "text": "zz99", "site": "race.example"},
                              headers={TOKEN_HEADER: TOKEN}).json["saved"])
    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(["zz99.png"] + [f"zz99_{n}.png" for n in range(2, 9)])
    assert len(list(samples_dir("race.example").iterdir())) == 8


def test_a_sample_of_another_scheme_is_kept_for_training_a_site_model(client, home):
    """Corrections for a site with its own captchas (capitals, 6 characters) must be stored:
    they are what `captchalens train --data samples/<site>` learns the new scheme from."""
    png, _ = captcha(7)
    r = client.post("/samples", json={"image": b64(png), "text": "AB!Q9Z", "site": "other.example"},
                    headers={TOKEN_HEADER: TOKEN})
    assert r.status_code == 201 and r.json["saved"] == "AB!Q9Z.png" and r.json["fits_model"] is False
    assert (samples_dir("other.example") / "AB!Q9Z.png").is_file()
    r = client.post("/samples", json={"image": b64(png), "text": "cd34", "site": "other.example"},
                    headers={TOKEN_HEADER: TOKEN})
    assert r.json["fits_model"] is True


@pytest.mark.parametrize("fields, words", [
    ({"text": "ab 12"}, "spaces or control characters"),
    ({"text": "ab_12"}, "cannot be a file name"),
    ({"text": "x" * 65}, "at most 64"),
    ({}, "'text' is missing"),
    ({"text": 1234}, "'text' must be a string"),
    ({"text": "ab12", "site": "/../"}, "site '/../' is not a host name"),
    ({"text": "ab12", "model": "nope"}, "no model named 'nope'"),
])
def test_bad_samples_are_refused_and_nothing_is_written(client, home, fields, words):
    png, _ = captcha(6)
    r = client.post("/samples", json={"image": b64(png), **fields}, headers={TOKEN_HEADER: TOKEN})
    assert r.status_code in (400, 404) and re.search(words, r.json["error"]), r.json
    assert not list((home / "samples").glob("*/ab12*"))


# ---- tokens, origins (pairing: test_host_pairing.py) ---------------------------------------
def test_the_token_file_is_read_on_each_write_so_rotating_needs_no_restart(home, model):
    from captchalens.native_host.security import ensure_token, rotate_token

    app = create_app({"MODEL_DIRS": [str(model)], "EXTENSION_ID": extension_id()})  # token from the file
    c = loopback_client(app)
    old = ensure_token()
    assert c.post("/reload", headers={TOKEN_HEADER: old}).status_code == 200
    new = rotate_token()
    assert c.post("/reload", headers={TOKEN_HEADER: old}).status_code == 403
    assert c.post("/reload", headers={TOKEN_HEADER: new}).status_code == 200


def test_the_extension_id_comes_from_the_manifest_key(home, model, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"manifest_version": 3, "name": "x", "version": "1",
                                    "key": __import__("support_host").extension_key()}))
    app = create_app({"MODEL_DIRS": [str(model)], "EXTENSION_MANIFEST": str(manifest), "TOKEN": TOKEN})
    assert app.config["EXTENSION_ID"] == extension_id()
    assert re.fullmatch(r"[a-p]{32}", extension_id())
    c = loopback_client(app)
    assert c.get("/health", headers={"Origin": extension_origin()}).status_code == 200
    assert c.get("/health", headers={"Origin": "chrome-extension://" + "b" * 32}).status_code == 403


# ---- models appear, change and break without a restart ---------------------------------
def test_a_new_model_folder_is_served_without_restart_and_a_broken_one_is_reported(client, home, model):
    models = home / "models"
    models.mkdir(exist_ok=True)
    shutil.copytree(model, models / "shop")
    broken = models / "broken"
    broken.mkdir()
    (broken / META_FILE).write_text("{not json")
    assert client.get("/health").json["models"] == ["random", "shop"]
    listing = client.get("/models").json
    assert [m["name"] for m in listing["models"]] == ["random", "shop"]
    (err,) = listing["errors"]
    assert err["name"] == "broken" and "not readable JSON" in err["error"]
    r = client.post("/solve?model=shop", data=captcha(0)[0], content_type="image/png")
    assert r.status_code == 200 and r.json["model"] == "shop"
    r = client.post("/solve?model=broken", data=captcha(0)[0], content_type="image/png")
    assert r.status_code == 503 and "could not be loaded" in r.json["error"]
    shutil.rmtree(broken)
    shutil.rmtree(models / "shop")
    assert client.get("/health").json["models"] == ["random"]


def test_reload_needs_the_token_and_rescans(home, model):
    app = create_app({"MODEL_DIRS": [str(model)], "TOKEN": TOKEN, "RELOAD_INTERVAL": 3600})
    c = loopback_client(app)
    (home / "models").mkdir(exist_ok=True)
    shutil.copytree(model, home / "models" / "late")
    try:
        assert c.get("/health").json["models"] == ["random"]  # not looked at again yet
        assert c.post("/reload").status_code == 401
        r = c.post("/reload", headers={TOKEN_HEADER: TOKEN})
        assert r.status_code == 200 and [m["name"] for m in r.json["models"]] == ["random", "late"]
        assert c.get("/health").json["models"] == ["random", "late"]
    finally:
        shutil.rmtree(home / "models" / "late")


def test_without_any_working_model_solve_says_why(home, tmp_path):
    app = create_app({"MODEL_DIRS": [str(tmp_path / "missing")], "TOKEN": TOKEN})
    c = loopback_client(app)
    assert c.get("/health").json["models"] == []
    r = c.post("/solve", data=captcha(0)[0], content_type="image/png")
    assert r.status_code == 503 and "does not exist" in r.json["error"]


# ---- the demo page ------------------------------------------------------------------------
def test_the_demo_page_shows_a_fresh_captcha_and_checks_the_answer(client, app):
    page = client.get("/demo")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    image = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    assert read_rgba(__import__("base64").b64decode(image)).shape == (60, 160, 4)
    challenge = re.search(r'name="challenge" value="([^"]+)"', html).group(1)
    assert client.get("/demo").get_data(as_text=True) != html  # a new captcha per view

    answer = app.extensions["captchalens"].demo._answers[challenge]  # what the picture says
    right = client.post("/demo", data={"challenge": challenge, "answer": answer.upper()},
                        headers={"Origin": "http://127.0.0.1:8765"}).get_data(as_text=True)
    assert "Right" in right
    again = client.post("/demo", data={"challenge": challenge, "answer": answer}).get_data(as_text=True)
    assert "expired" in again  # each captcha is checked once

    html = client.get("/demo").get_data(as_text=True)
    challenge = re.search(r'name="challenge" value="([^"]+)"', html).group(1)
    wrong = client.post("/demo", data={"challenge": challenge, "answer": "<b>no</b>"}).get_data(as_text=True)
    assert "Not quite" in wrong and "&lt;b&gt;no&lt;/b&gt;" in wrong and "<b>no</b>" not in wrong


def test_the_demo_page_itself_may_ask_the_host_to_solve(client):
    png, _ = captcha(0)
    r = client.post("/solve", json={"image": "data:image/png;base64," + b64(png)},
                    headers={"Origin": "http://127.0.0.1:8765"})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    assert client.get("/static/demo.js").status_code == 200
