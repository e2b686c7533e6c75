"""The native messaging host: Chromium's framing, the versioned protocol, every request
answered (a result or a JSON error) and the host still running after bad input."""
from __future__ import annotations

import io
import json
import os
import struct
import sys
from pathlib import Path

import pytest
from support_host import HttpOps, NativeOps, b64, captcha, extension_origin

from captchalens.native_host.native import (HEADER, MAX_ANSWER, MAX_REQUEST, TYPES, FrameError,
                                            NativeHost, encode_frame, read_frame)


def frame(payload: bytes) -> bytes:
    return struct.pack("=I", len(payload)) + payload


def frames_of(data: bytes) -> list:
    stream, out = io.BytesIO(data), []
    while (m := read_frame(stream)) is not None:
        out.append(m)
    return out


class Stub:
    """Stands in for the host state where only the protocol is under test."""

    class registry:  # noqa: N801 - an attribute namespace, like HostState.registry
        @staticmethod
        def maybe_reload():
            return False


def run_host(data: bytes, state=Stub) -> list[dict]:
    """Feed `data` to a host's serve loop; its answers, sorted by id where they have one."""
    host = NativeHost(lambda: state)
    out = io.BytesIO()
    out.close = lambda: None
    assert host.serve(io.BytesIO(data), out) == 0
    return frames_of(out.getvalue())


# ---- framing ---------------------------------------------------------------------------
@pytest.mark.parametrize("message", [{}, {"a": "é ✓ 日本"}, {"n": list(range(1000))}, {"s": "x" * 70_000}])
def test_frames_round_trip_with_a_native_endian_length(message):
    data = encode_frame(message)
    (size,) = struct.unpack("=I", data[:4])
    assert size == len(data) - 4 and HEADER.size == 4
    assert json.loads(data[4:].decode("utf-8")) == message
    assert frames_of(data + encode_frame({"next": 1})) == [message, {"next": 1}]


def test_an_answer_over_1_mb_becomes_an_error_frame_the_browser_accepts():
    data = encode_frame({"api": 1, "id": 9, "type": "models", "ok": True, "result": "x" * MAX_ANSWER})
    assert len(data) - 4 <= MAX_ANSWER
    answer = frames_of(data)[0]
    assert answer["id"] == 9 and answer["ok"] is False and "1048576" in answer["error"]


def test_an_oversize_frame_is_skipped_whole_so_the_next_one_is_read():
    stream = io.BytesIO(frame(b"x" * (MAX_REQUEST + 1)) + frame(b'{"after": true}'))
    with pytest.raises(FrameError, match="too large"):
        read_frame(stream)
    assert read_frame(stream) == {"after": True}
    assert read_frame(stream) is None


@pytest.mark.parametrize("payload, words", [
    (b"{nope", "not valid JSON"), (b"", "not valid JSON"), (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 100_000, "not valid JSON")])
def test_a_malformed_frame_is_a_clear_error(payload, words):
    with pytest.raises(FrameError, match=words):
        read_frame(io.BytesIO(frame(payload)))


def test_a_pipe_closed_inside_a_frame_is_an_eof_error_and_at_a_boundary_the_end():
    assert read_frame(io.BytesIO(b"")) is None
    for cut in (b"\x05\x00", frame(b'{"a": 1}')[:-2]):
        with pytest.raises(EOFError):
            read_frame(io.BytesIO(cut))


# ---- the protocol ------------------------------------------------------------------------
def request(msg_id, msg_type, data=None, api=1) -> bytes:
    message = {"api": api, "id": msg_id, "type": msg_type}
    if data is not None:
        message["data"] = data
    return frame(json.dumps(message).encode())


def test_every_request_gets_one_answer_and_bad_ones_do_not_stop_the_host():
    answers = run_host(request(1, "ping") + frame(b"{broken") + request(2, "teleport")
                       + frame(b"x" * (MAX_REQUEST + 10)) + request(3, "ping", api=2)
                       + frame(b"[1, 2]") + request(4, "ping", data=[1]) + request(5, "ping"))
    by_id = {a["id"]: a for a in answers if a["id"] is not None}
    anonymous = [a for a in answers if a["id"] is None]
    assert len(answers) == 8 and sorted(by_id) == [1, 2, 3, 4, 5]
    assert by_id[1]["ok"] and by_id[1]["result"]["pong"] and by_id[5]["ok"]
    assert all(a["api"] == 1 for a in answers)
    assert by_id[2] == {"api": 1, "id": 2, "type": "teleport", "ok": False, "status": 400,
                        "error": "unknown message type 'teleport'; this host knows " + ", ".join(TYPES)}
    assert "speaks api 1" in by_id[3]["error"] and "says 2" in by_id[3]["error"]
    assert by_id[4]["error"] == "'data' must be a JSON object"
    assert sorted(a["status"] for a in anonymous) == [400, 400, 413]
    assert {w for a in anonymous for w in ("JSON object", "not valid JSON", "too large") if w in a["error"]} \
        == {"JSON object", "not valid JSON", "too large"}


def test_a_failure_inside_an_operation_is_a_500_frame_and_the_next_request_works():
    class Exploding(Stub):
        class registry(Stub.registry):  # noqa: N801
            @staticmethod
            def describe():
                raise RuntimeError("/secret/path exploded")

            names = staticmethod(lambda: [])
            default = None

    answers = {a["id"]: a for a in run_host(request(1, "models") + request(2, "health"), Exploding)}
    assert answers[1] == {"api": 1, "id": 1, "type": "models", "ok": False, "status": 500,
                          "error": "internal error (RuntimeError); the host keeps running"}
    assert answers[2]["ok"] and answers[2]["result"]["models"] == []


def test_ping_answers_while_the_models_are_still_loading():
    import threading

    release = threading.Event()

    def slow_state():
        release.wait(30)
        return Stub

    host = NativeHost(slow_state)
    try:
        answer = host.handle({"api": 1, "id": "p", "type": "ping"})
        assert answer["ok"] and answer["result"]["ready"] is False
    finally:
        release.set()


def test_a_host_that_cannot_load_says_why_on_each_request_but_still_pings():
    def broken():
        raise OSError("model folder vanished")

    host = NativeHost(broken)
    solve = host.handle({"api": 1, "id": 1, "type": "solve", "data": {"image": b64(captcha(0)[0])}})
    assert solve["status"] == 500 and "model folder vanished" in solve["error"]
    ping = host.handle({"api": 1, "id": 2, "type": "ping"})
    assert ping["ok"] and ping["result"]["ready"] is False


# ---- install / uninstall / status -------------------------------------------------------------
@pytest.fixture()
def user(tmp_path, monkeypatch):
    """A user with Chromium and Brave profiles (no Chrome, no Edge) and their own CaptchaLens home."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "user" / ".config"))
    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "clhome"))
    config = tmp_path / "user" / ".config"
    for d in ("chromium", "BraveSoftware/Brave-Browser"):
        (config / d).mkdir(parents=True)
    return config


def cli(*argv) -> int:
    from captchalens.cli import main

    return main(["native", *argv])


def manifest_at(config_dir) -> Path:
    return Path(config_dir) / "NativeMessagingHosts" / "io.captchalens.host.json"


def test_install_registers_the_host_with_each_browser_present_and_only_for_our_extension(user, capsys):
    from captchalens.native_host.install import launcher_path

    assert cli("install") == 0
    assert sorted(p.relative_to(user).as_posix() for p in user.rglob("*.json")) == [
        "BraveSoftware/Brave-Browser/NativeMessagingHosts/io.captchalens.host.json",
        "chromium/NativeMessagingHosts/io.captchalens.host.json"]
    assert not (user / "google-chrome").exists() and not (user / "microsoft-edge").exists()
    spec = json.loads(manifest_at(user / "chromium").read_text())
    assert spec == {"name": "io.captchalens.host", "description": spec["description"],
                    "path": str(launcher_path()), "type": "stdio",
                    "allowed_origins": [extension_origin() + "/"]}
    assert extension_origin() == "chrome-extension://deneooikjilffcjpiknglfocffppmiag"
    launcher = launcher_path()
    assert os.access(launcher, os.X_OK) and f"CAPTCHALENS_PYTHON={sys.executable}\n" in launcher.read_text()
    assert "Chromium" in capsys.readouterr().out
    assert not [p for p in user.rglob(".*") if p.is_file()]  # no temp files left


def test_without_any_browser_profile_install_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "clhome"))
    assert cli("install") == 1
    err = capsys.readouterr().err
    assert "no profile of Chromium, Google Chrome, Microsoft Edge, Brave found" in err and "--profile-dir" in err
    assert cli("install", "--profile-dir", str(tmp_path / "nope")) == 1
    assert "nope: not a folder" in capsys.readouterr().err
    assert not (tmp_path / "clhome" / "native").exists()


def test_a_profile_dir_gets_its_own_manifest_and_status_finds_it(user, tmp_path, capsys):
    profile = tmp_path / "profile"
    profile.mkdir()
    assert cli("install", "--profile-dir", str(profile)) == 0
    assert manifest_at(profile).is_file() and not manifest_at(user / "chromium").exists()
    capsys.readouterr()
    assert cli("status") == 0
    out = capsys.readouterr().out
    assert f"profile {profile}: installed" in out and "Chromium: not installed" in out
    assert "wrong Python" not in out


def test_uninstall_removes_only_what_install_wrote(user, tmp_path, capsys):
    profile = tmp_path / "profile"
    profile.mkdir()
    assert cli("install") == 0 and cli("install", "--profile-dir", str(profile)) == 0
    hosts = user / "chromium" / "NativeMessagingHosts"
    other = hosts / "com.other.host.json"
    other.write_text('{"name": "com.other.host"}')
    theirs = manifest_at(user / "BraveSoftware/Brave-Browser")
    theirs.write_text(json.dumps({"name": "io.captchalens.host", "path": "/opt/elsewhere/host"}))
    capsys.readouterr()

    assert cli("uninstall", "--profile-dir", str(profile)) == 0
    assert not manifest_at(profile).exists() and manifest_at(user / "chromium").exists()
    from captchalens.native_host.install import launcher_path
    assert launcher_path().exists()  # Chromium still uses it

    assert cli("uninstall") == 0
    out = capsys.readouterr().out
    assert not manifest_at(user / "chromium").exists() and other.read_text() == '{"name": "com.other.host"}'
    assert json.loads(theirs.read_text())["path"] == "/opt/elsewhere/host"
    assert "left" in out and "not written by this install" in out
    assert not launcher_path().exists()
    assert cli("status") == 1


def test_status_says_wrong_python_when_the_launchers_python_is_gone_or_another(user, tmp_path, capsys):
    from captchalens.native_host import install

    install.install(python=str(tmp_path / "old-venv" / "bin" / "python"))
    ok, lines = install.status()
    assert not ok
    assert any(ln.startswith("wrong Python: the launcher runs ") and "no longer exists" in ln for ln in lines)

    bare = tmp_path / "bare-python"
    bare.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named captchalens' >&2\nexit 1\n")
    bare.chmod(0o755)
    install.install(python=str(bare))
    assert cli("status") == 1
    out = capsys.readouterr().out
    assert f"wrong Python: the launcher runs {bare}, this command runs {sys.executable}" in out
    assert "cannot run the host (ModuleNotFoundError: No module named captchalens)" in out

    install.install()
    ok, lines = install.status()
    assert ok and not any("wrong Python" in ln for ln in lines)


def test_a_write_that_fails_half_way_leaves_the_old_manifest_whole(user, monkeypatch):
    from captchalens.native_host import install

    install.install()
    before = manifest_at(user / "chromium").read_bytes()

    calls, real_fsync = [], os.fsync

    def crash(fd):  # the launcher is written, then the first manifest fails
        calls.append(fd)
        if len(calls) > 1:
            raise OSError("disk full")
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        install.install(extension_id="a" * 32)
    monkeypatch.undo()
    assert len(calls) == 2
    assert manifest_at(user / "chromium").read_bytes() == before
    assert not [p for p in user.rglob(".*") if p.is_file()]


# ---- one set of operation tests for both front doors -------------------------------------------
TOKEN = "native-test-token-" + "x" * 32


@pytest.fixture(scope="module")
def expected(model):
    """The Python solver's answers for the first captchas: both doors must give the same."""
    from captchalens.images import read_rgba
    from captchalens.solver import Solver

    solver = Solver(model)
    return {i: solver.solve_pixels([read_rgba(captcha(i)[0])])[0] for i in range(4)}


@pytest.fixture(scope="module")
def native(tmp_path_factory, model):
    """`captchalens native install --profile-dir P --model M`, then the manifest's launcher run
    as Chromium runs it, with its own CaptchaLens home."""
    from support_host import NativeProcess

    from captchalens.native_host import install

    base = tmp_path_factory.mktemp("native")
    (base / "profile").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAPTCHALENS_HOME", str(base / "home"))
        install.install([base / "profile"], [str(model)])
    proc = NativeProcess(manifest_at(base / "profile"), env={"CAPTCHALENS_HOME": "/nonexistent"})
    proc.home = base / "home"  # the launcher set it, whatever the browser's environment says
    try:
        yield proc
    finally:
        code = proc.close()
        assert code == 0, proc.output()
        assert proc.garbage == [], "something other than frames was written to stdout"


@pytest.fixture(scope="module", params=["http", "native"])
def door(request, tmp_path_factory, model):
    if request.param == "native":
        yield NativeOps(request.getfixturevalue("native"))
        return
    from support_host import extension_id

    from captchalens.native_host import create_app

    home = tmp_path_factory.mktemp("http-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAPTCHALENS_HOME", str(home))
        yield HttpOps(create_app({"PORT": 8765, "MODEL_DIRS": [str(model)], "TOKEN": TOKEN,
                                  "EXTENSION_ID": extension_id()}), home, TOKEN)


def test_health_names_the_model_and_the_api_version(door):
    from captchalens import __version__

    r = door.call("health")
    assert r.ok and r.body == {"ok": True, "version": __version__, "api": 1, "models": ["random"],
                               "default": "random"}


def test_models_gives_the_metadata_beside_the_weights(door, model):
    from captchalens.contract import load_meta

    r = door.call("models")
    meta = load_meta(model)
    assert r.ok and r.body["default"] == "random" and r.body["errors"] == []
    (m,) = r.body["models"]
    assert m["name"] == "random" and m["charset"] == meta.charset and m["input_width"] == meta.input_width


def test_solve_gives_the_solvers_answer_for_each_captcha(door, expected):
    for i, answer in expected.items():
        text, confidence = answer.text, answer.confidence
        image = b64(captcha(i)[0])
        r = door.call("solve", {"image": image if i % 2 else "data:image/png;base64," + image})
        assert r.ok, r
        assert r.body["text"] == text and r.body["model"] == "random"
        assert r.body["confidence"] == pytest.approx(confidence, rel=1e-4)
    assert len({a.text for a in expected.values()}) > 1  # the answers tell the captchas apart


@pytest.mark.parametrize("data, status, words", [
    ({"image": "!!not base64!!"}, 400, "'image' is not valid base64"),
    ({"image": b64(b"just words")}, 400, "not a readable image"),
    ({"image": ""}, 400, "'image' is empty"),
    ({"image": 42}, 400, "'image' must be a string"),
    ({"model": "nope"}, 404, "no model named 'nope'; this host serves: random"),
    ({"model": 3}, 400, "'model' must be a string"),
    ({"alphabet": ["a", "b"]}, 400, "'alphabet' must be a string"),
    ({"alphabet": "ab cd"}, 400, "'alphabet' must be at most 256 printable characters without spaces"),
    ({"alphabet": "ab\x00"}, 400, "'alphabet' must be at most 256 printable characters without spaces"),
    ({"alphabet": "x" * 257}, 400, "'alphabet' must be at most 256 printable characters without spaces"),
    ({}, 400, "'image'"),
])
def test_bad_solves_get_the_same_clear_error_on_both_doors(door, data, status, words):
    if "model" in data or "alphabet" in data:
        data = dict(data, image=b64(captcha(0)[0]))
    r = door.call("solve", data)
    assert not r.ok and r.status == status and words in r.body


def test_a_sites_alphabet_reads_with_its_families_on_both_doors(door, model):
    """The characters a site's corrections showed (the extension sends them from the third):
    digits seen, digits read, as the Python solver reads with the same alphabet."""
    from captchalens.images import read_rgba
    from captchalens.solver import Solver

    solver = Solver(model)
    answers = []
    for i in range(4):
        png = captcha(i)[0]
        want = solver.solve_pixels([read_rgba(png)], "907")[0]
        r = door.call("solve", {"image": b64(png), "alphabet": "907"})
        assert r.ok, r
        assert r.body["text"] == want.text and r.body["text"].isdigit(), (r.body, want)
        assert r.body["confidence"] == pytest.approx(want.confidence, rel=1e-4)
        answers.append((r.body["text"], solver.solve_pixels([read_rgba(png)])[0].text))
    assert any(not whole.isdigit() for _, whole in answers)  # read whole, these captchas hold letters


def test_a_sample_is_stored_as_the_decoded_pixels_in_its_sites_folder(door):
    import numpy as np

    from captchalens.images import read_rgba

    png, label = captcha(3)
    r = door.call("samples", {"image": b64(png), "text": label, "site": "Shop.Example"})
    assert r.ok and r.body == {"saved": f"{label}.png", "count": 1, "fits_model": True}
    stored = door.home / "samples" / "shop.example" / f"{label}.png"
    assert np.array_equal(read_rgba(stored.read_bytes(), "stored"), read_rgba(png, "sent"))
    again = door.call("samples", {"image": b64(png), "text": label, "site": "shop.example"})
    assert again.body["saved"] == f"{label}_2.png" and again.body["count"] == 2


@pytest.mark.parametrize("fields, words", [({"text": ""}, "needs its answer"), ({"text": "a/b"}, "file name"),
                                           ({"text": "ab", "site": "../x"}, "site")])
def test_a_bad_sample_is_refused_and_nothing_is_written(door, fields, words):
    before = sorted(p for p in (door.home / "samples").rglob("*")) if (door.home / "samples").exists() else []
    r = door.call("samples", {"image": b64(captcha(1)[0]), **fields})
    assert not r.ok and r.status == 400 and words in r.body
    after = sorted(p for p in (door.home / "samples").rglob("*")) if (door.home / "samples").exists() else []
    assert after == before


# ---- the launcher as the browser runs it ------------------------------------------------------
def test_the_launcher_answers_ping_and_survives_bad_frames_over_real_pipes(native):
    ping = native.call("ping")
    assert ping["ok"] and ping["result"]["pong"] is True and ping["result"]["api"] == 1
    native.send_raw(struct.pack("=I", 7) + b"{broken")
    native.send_raw(struct.pack("=I", MAX_REQUEST + 5) + b"\0" * (MAX_REQUEST + 5))
    native.send({"api": 1, "id": "x", "type": "teleport"})
    answers = [native.next_frame() for _ in range(3)]
    assert [(a["id"], a["status"]) for a in answers] == [(None, 400), (None, 413), ("x", 400)]
    assert "not valid JSON" in answers[0]["error"] and "too large" in answers[1]["error"]
    assert native.call("solve", {"image": b64(captcha(0)[0])})["ok"]
    assert (native.home / "native-host.log").is_file()
    assert "started by chrome-extension://deneooikjilffcjpiknglfocffppmiag/" in native.output()


def test_a_module_in_the_folder_the_browser_starts_it_in_cannot_shadow_the_hosts(tmp_path, monkeypatch):
    from support_host import NativeProcess

    from captchalens.native_host import install

    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    (tmp_path / "p").mkdir()
    install.install([tmp_path / "p"])
    planted = tmp_path / "cwd"
    planted.mkdir()
    (planted / "struct.py").write_text("raise SystemExit('planted struct.py was imported')\n")
    proc = NativeProcess(manifest_at(tmp_path / "p"), cwd=planted)
    try:
        assert proc.call("ping", timeout=60)["ok"]
    finally:
        assert proc.close() == 0, proc.output()
    assert "planted" not in proc.output()


def test_the_launcher_with_its_python_gone_says_so_on_stderr(tmp_path, monkeypatch):
    import subprocess

    from captchalens.native_host import install

    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    (tmp_path / "p").mkdir()
    install.install([tmp_path / "p"], python=str(tmp_path / "gone" / "python"))
    run = subprocess.run([str(install.launcher_path()), extension_origin() + "/"], input=b"",
                         capture_output=True, timeout=30)
    assert run.returncode == 127 and run.stdout == b""
    assert b"is gone; run 'captchalens native install' again" in run.stderr


def test_on_macos_the_browsers_application_support_folders_are_used(tmp_path, monkeypatch):
    from captchalens.native_host import install

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "clhome"))
    support = tmp_path / "Library" / "Application Support"
    (support / "Google" / "Chrome").mkdir(parents=True)
    (support / "Microsoft Edge").mkdir(parents=True)
    install.install()
    assert sorted(p.relative_to(support).as_posix() for p in support.rglob("*.json")) == [
        "Google/Chrome/NativeMessagingHosts/io.captchalens.host.json",
        "Microsoft Edge/NativeMessagingHosts/io.captchalens.host.json"]


def test_on_windows_install_says_to_use_the_http_host(monkeypatch):
    from captchalens.native_host import install
    from captchalens.native_host.security import HostError

    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(HostError, match="Windows registry.*captchalens serve"):
        install.install()
