"""A real `captchalens serve` on a random loopback port, attacked the way a web page,
a rebound DNS name or a careless user would: each defence has its test."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from support_host import CAPTCHALENS, TOKEN_HEADER, b64, captcha, extension_origin, free_port, garbage

from captchalens.native_host.security import HostError, check_bind

EVIL = "https://evil.example"


def solve(server, **kw):
    png, _ = captcha(0)
    return server.call("POST", "/solve", png, headers={"Content-Type": "image/png", **kw.pop("headers", {})}, **kw)


# ---- listening ---------------------------------------------------------------------
def test_serve_refuses_a_non_loopback_address_without_the_loud_flag(tmp_path):
    r = subprocess.run([str(CAPTCHALENS), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
                       env=dict(os.environ, CAPTCHALENS_HOME=str(tmp_path)), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert "refusing to listen on 0.0.0.0" in r.stderr and "--i-understand-this-exposes-the-solver" in r.stderr
    assert not (tmp_path / "token").exists()  # refused before doing anything


@pytest.mark.parametrize("address", ["::", "192.168.1.10", "10.0.0.1", "example.com", "localhost.evil.example"])
def test_only_loopback_addresses_pass_without_the_flag(address):
    with pytest.raises(HostError, match="refusing"):
        check_bind(address, exposed=False)
    check_bind(address, exposed=True)
    for loopback in ("127.0.0.1", "127.0.0.5", "::1", "localhost"):
        check_bind(loopback, exposed=False)


def test_the_host_listens_on_loopback_only(host):
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    listening = [r.split()[1] for r in rows if r.split()[3] == "0A"]  # state 0A = LISTEN
    ours = [a for a in listening if int(a.split(":")[1], 16) == host.port]
    assert ours == ["0100007F:%04X" % host.port]  # 127.0.0.1, nothing else


def test_first_run_creates_a_private_token(host):
    token_file = host.home / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(host.home.stat().st_mode) == 0o700
    assert len(host.token()) >= 40


def test_a_busy_port_is_a_clear_error(host, tmp_path):
    r = subprocess.run([str(CAPTCHALENS), "serve", "--port", str(host.port)],
                       env=dict(os.environ, CAPTCHALENS_HOME=str(tmp_path)), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and f"cannot listen on 127.0.0.1:{host.port}" in r.stderr


# ---- DNS rebinding ---------------------------------------------------------------------
def test_only_loopback_host_names_with_our_port_are_answered(host):
    p = host.port
    for name in (f"127.0.0.1:{p}", f"localhost:{p}", f"LOCALHOST:{p}", f"[::1]:{p}"):
        assert solve(host, host=name).status == 200, name
    for name in (f"evil.example:{p}", "evil.example", f"127.0.0.1:{p + 1}", "localhost", f"127.0.0.2:{p}",
                 f"attacker.localhost:{p}", None):
        r = solve(host, host=name)
        assert r.status == 403 and "DNS rebinding" in r.json["error"], name


# ---- origins and CORS -----------------------------------------------------------------
@pytest.mark.parametrize("origin", [EVIL, "null", "chrome-extension://" + "a" * 32, "http://localhost",
                                    "http://127.0.0.1:1"])
def test_pages_and_other_extensions_are_refused(host, origin):
    for r in (solve(host, headers={"Origin": origin}), host.call("GET", "/health", headers={"Origin": origin}),
              host.call("OPTIONS", "/solve", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})):
        assert r.status == 403 and "access-control-allow-origin" not in r.headers
        assert "not allowed" in r.json["error"]


def test_cors_answers_our_extension_only(host):
    ours = extension_origin()
    r = solve(host, headers={"Origin": ours})
    assert r.status == 200 and r.headers["access-control-allow-origin"] == ours
    pre = host.call("OPTIONS", "/samples", headers={
        "Origin": ours, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-captchalens-token",
        "Access-Control-Request-Private-Network": "true"})
    assert pre.status == 200 and pre.headers["access-control-allow-origin"] == ours
    assert TOKEN_HEADER in pre.headers["access-control-allow-headers"]
    assert pre.headers["access-control-allow-private-network"] == "true"


def test_local_tools_without_origin_and_the_hosts_own_pages_may_solve(host):
    assert solve(host).status == 200
    own = solve(host, headers={"Origin": f"http://127.0.0.1:{host.port}"})
    assert own.status == 200 and "access-control-allow-origin" not in own.headers


def test_in_a_real_browser_the_demo_page_asks_the_host_and_checks_the_answer(host):
    """What Chromium sends (Origin, referrer policy, CSP) is what the host must accept from its own page."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            failures = []
            page.on("console", lambda m: failures.append(m.text) if m.type == "error" else None)
            page.goto(f"http://127.0.0.1:{host.port}/demo")
            page.click("#ask-host")
            expect(page.locator("#answer")).to_have_value(re.compile(r"^\w+$"), timeout=20_000)
            assert "model random" in page.inner_text("#host-answer")
            page.click("button[type=submit]")
            expect(page.locator("#result")).to_contain_text(re.compile("Right|Not quite"), timeout=20_000)
            assert failures == []
        finally:
            browser.close()


# ---- writes need the token ----------------------------------------------------------------
def test_writes_need_the_token_even_from_the_extension(host):
    png, _ = captcha(1)
    body = json.dumps({"image": b64(png), "text": "ab12", "site": "sec.example"}).encode()
    json_h = {"Content-Type": "application/json"}
    for path, data in (("/samples", body), ("/reload", b"")):
        assert host.call("POST", path, data, headers=json_h).status == 401
        assert host.call("POST", path, data, headers={**json_h, "Origin": extension_origin()}).status == 401
        assert host.call("POST", path, data, headers={**json_h, TOKEN_HEADER: "x" * 43}).status == 403
    assert not (host.home / "samples").exists()
    ok = host.call("POST", "/samples", body, headers={**json_h, TOKEN_HEADER: host.token(),
                                                     "Origin": extension_origin()})
    assert ok.status == 201 and ok.json == {"saved": "ab12.png", "count": 1, "fits_model": True}
    assert (host.home / "samples" / "sec.example" / "ab12.png").is_file()
    assert host.call("POST", "/reload", b"", headers={TOKEN_HEADER: host.token()}).status == 200


def test_a_local_process_faking_the_extensions_origin_gets_no_token(host):
    """`curl -X POST -H 'Origin: chrome-extension://<id>' .../pair` (or an extension rewriting
    Origin) used to get the token. Now it only makes the host show a code on its terminal."""
    forged = {"Origin": extension_origin(), "Content-Type": "application/json"}
    for body in (b"", b"{}"):
        r = host.call("POST", "/pair", body, headers=forged)
        assert r.status == 202, r
        assert r.json == {"pending": True, "expires_in": 300} and host.token() not in r.body.decode()
    codes = re.findall(r"Pairing code for the CaptchaLens extension: (\d{3}) (\d{3}) \(valid 5 min\)",
                       host.output())
    code = "".join(codes[-1])
    assert code not in r.body.decode()
    guess = f"{(int(code) + 1) % 1_000_000:06d}"
    r = host.call("POST", "/pair", json.dumps({"code": guess}).encode(), headers=forged)
    assert r.status == 403 and "wrong pairing code" in r.json["error"] and host.token() not in r.body.decode()

    # the user reads the code off the host's terminal, or with `captchalens token --pair-code`
    cli = subprocess.run([str(CAPTCHALENS), "token", "--pair-code"], capture_output=True, text=True,
                         env=dict(os.environ, CAPTCHALENS_HOME=str(host.home)), timeout=60)
    assert cli.returncode == 0 and cli.stdout.strip() == f"{code[:3]} {code[3:]}"
    r = host.call("POST", "/pair", json.dumps({"code": cli.stdout.strip()}).encode(), headers=forged)
    assert r.status == 200 and r.json == {"token": host.token()}
    assert r.headers["access-control-allow-origin"] == extension_origin()
    for h in ({}, {"Origin": f"http://127.0.0.1:{host.port}"}, {"Origin": EVIL}):
        r = host.call("POST", "/pair", b"{}", headers=h)
        assert r.status == 403 and host.token() not in r.body.decode()


# ---- hostile bodies -------------------------------------------------------------------
def test_bodies_over_2_mb_get_413_json_plain_or_chunked(host):
    big = b"\x89PNG" + os.urandom(3 * 1024 * 1024)
    for chunked in (False, True):
        r = host.call("POST", "/solve", big, headers={"Content-Type": "image/png"}, chunked=chunked)
        assert r.status == 413 and "at most 2 MB" in r.json["error"], (chunked, r)
    assert host.call("GET", "/health").status == 200


def test_garbage_of_every_kind_gets_json_errors_and_the_host_stays_up(host):
    for name, body, kind, status, words in garbage():
        r = host.call("POST", "/solve", body, headers={"Content-Type": kind} if kind else {})
        assert r.status == status and r.headers["content-type"] == "application/json", (name, r)
        assert re.search(words, r.json["error"]), (name, r.json)
    assert solve(host).status == 200
    assert "Traceback" not in host.output()


# ---- `captchalens token` -----------------------------------------------------------------
def _token_cli(*argv: str) -> int:
    import argparse

    from captchalens.native_host.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["token", *argv])
    return args.func(args)


def test_the_token_command_prints_creates_and_rotates_the_token(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    assert _token_cli() == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token == (tmp_path / "home" / "token").read_text().strip() and len(token) >= 40
    assert stat.S_IMODE((tmp_path / "home" / "token").stat().st_mode) == 0o600
    assert "Pair with local host" in out.err
    assert _token_cli() == 0 and capsys.readouterr().out.strip() == token  # the same on every run
    (tmp_path / "home" / "token").chmod(0o644)
    assert _token_cli() == 0 and capsys.readouterr().out.strip() == token
    assert stat.S_IMODE((tmp_path / "home" / "token").stat().st_mode) == 0o600  # tightened again
    assert _token_cli("--rotate") == 0
    assert capsys.readouterr().out.strip() not in ("", token)
    assert _token_cli("--path") == 0 and capsys.readouterr().out.strip() == str(tmp_path / "home" / "token")
