"""Pairing the extension with the local host: the token is handed out only for a one-time
code that the host shows on its own terminal (and in a 0600 file), never for a header.

The user's story: Options -> "Pair with local host" -> the host's terminal says
"Pairing code for the CaptchaLens extension: 482 913 (valid 5 min)" -> the user types it ->
the extension holds the token. A local process or another extension can fake the Origin
header; it cannot read the code."""
from __future__ import annotations

import io
import json
import re
import stat

import pytest
from support_host import TOKEN_HEADER, extension_id, extension_origin, loopback_client

from captchalens.native_host import create_app
from captchalens.native_host.security import (PAIR_CODE_TRIES, PAIR_CODE_TTL, Pairing, ensure_token,
                                              pending_code, rotate_token)

TOKEN = "test-token-" + "p" * 32
ANNOUNCE = re.compile(r"Pairing code for the CaptchaLens extension: (\d{3}) (\d{3}) \(valid 5 min\)")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture()
def clock():
    return Clock()


@pytest.fixture()
def app(home, tmp_path, clock):
    """A host without a working model: pairing does not need one, and it starts at once."""
    app = create_app({"PORT": 8765, "MODEL_DIRS": [str(tmp_path / "no-model")], "EXTENSION_ID": extension_id(),
                      "TOKEN": TOKEN})
    app.extensions["captchalens"].pairing = Pairing(clock=clock)
    return app


def ask(client, body=None, origin="ours", **kw):
    """POST /pair as the extension's options page does (origin="ours"), or as someone else."""
    headers = {"Origin": extension_origin() if origin == "ours" else origin} if origin else {}
    data = b"" if body is None else json.dumps(body).encode()
    return client.post("/pair", data=data, headers=headers, content_type="application/json", **kw)


def shown_code(capsys) -> str:
    """The code the host printed on its terminal (stderr), as the user reads it."""
    found = ANNOUNCE.findall(capsys.readouterr().err)
    assert found, "the host did not show a pairing code"
    return "".join(found[-1])


def other_code(code: str, k: int = 1) -> str:
    return f"{(int(code) + k) % 1_000_000:06d}"


# ---- the user's story ----------------------------------------------------------------
def test_the_token_is_given_for_the_code_shown_on_the_hosts_terminal_once(client, home, capsys):
    r = ask(client, {})
    assert r.status_code == 202 and r.json == {"pending": True, "expires_in": PAIR_CODE_TTL}
    assert r.headers["Access-Control-Allow-Origin"] == extension_origin()
    code = shown_code(capsys)
    assert code not in r.get_data(as_text=True) and TOKEN not in r.get_data(as_text=True)

    # a host started in the background: the code is in a private file, and the CLI prints it
    code_file = home / "pair-code"
    assert stat.S_IMODE(code_file.stat().st_mode) == 0o600 and stat.S_IMODE(home.stat().st_mode) == 0o700
    assert pending_code()[0] == code and 0 < pending_code()[1] <= PAIR_CODE_TTL

    r = ask(client, {"code": f"{code[:3]} {code[3:]}"})  # typed as shown: spaces are ignored
    assert r.status_code == 200 and r.json == {"token": TOKEN}
    assert not code_file.exists() and pending_code() is None  # used up
    again = ask(client, {"code": code})
    assert again.status_code == 409 and "ask for a new code" in again.json["error"]
    assert TOKEN not in again.get_data(as_text=True)


@pytest.mark.parametrize("typed", ["{a}{b}", "{a}-{b}", " {a} - {b} ", "{a}\t{b}"])
def test_spaces_and_dashes_in_the_typed_code_are_ignored(client, capsys, typed):
    ask(client, {})
    code = shown_code(capsys)
    r = ask(client, {"code": typed.format(a=code[:3], b=code[3:])})
    assert r.status_code == 200 and r.json == {"token": TOKEN}


def test_a_wrong_code_is_refused_and_five_make_the_code_void(client, capsys):
    ask(client, {})
    code = shown_code(capsys)
    for k in range(1, PAIR_CODE_TRIES):
        r = ask(client, {"code": other_code(code, k)})
        left = PAIR_CODE_TRIES - k
        assert r.status_code == 403 and r.json["error"].startswith("wrong pairing code: ")
        assert f"{left} {'try' if left == 1 else 'tries'} left" in r.json["error"] and "token" not in r.json
    last = ask(client, {"code": other_code(code, PAIR_CODE_TRIES)})
    assert last.status_code == 403 and "void" in last.json["error"]
    r = ask(client, {"code": code})  # the right code, too late
    assert r.status_code == 409 and "ask for a new code" in r.json["error"] and "5 wrong tries" in r.json["error"]
    assert pending_code() is None


def test_an_expired_code_is_refused(client, clock, capsys):
    ask(client, {})
    code = shown_code(capsys)
    clock.now += PAIR_CODE_TTL + 1
    r = ask(client, {"code": code})
    assert r.status_code == 403 and "expired" in r.json["error"] and "token" not in r.json
    assert ask(client, {"code": code}).status_code == 409


def test_a_new_code_replaces_the_pending_one(client, capsys):
    ask(client, {})
    first = shown_code(capsys)
    ask(client, {})
    second = shown_code(capsys)
    assert pending_code()[0] == second
    if first != second:  # one in a million they are equal
        r = ask(client, {"code": first})
        assert r.status_code == 403 and "wrong pairing code" in r.json["error"]
    assert ask(client, {"code": second}).json == {"token": TOKEN}


def test_without_a_pending_code_pairing_says_to_ask_for_one(client):
    r = ask(client, {"code": "482913"})
    assert r.status_code == 409 and r.json == {
        "error": 'no pairing code is pending: ask for a new code (press "Pair with local host" again)'}


@pytest.mark.parametrize("body, status, words", [
    ({"code": "12345"}, 400, "6 digits"),
    ({"code": "1234567"}, 400, "6 digits"),
    ({"code": "abcdef"}, 400, "6 digits"),
    ({"code": "\uff11\uff12\uff13\uff14\uff15\uff16"}, 400, "6 digits"),  # full-width digits
    ({"code": 482913}, 400, "must be a string"),
    ([1, 2], 400, "JSON object"),
    ("not json", 400, "not valid JSON"),
])
def test_a_malformed_pairing_request_is_a_clear_error_and_costs_no_try(client, capsys, body, status, words):
    ask(client, {})
    code = shown_code(capsys)
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    r = client.post("/pair", data=data, headers={"Origin": extension_origin()})
    assert r.status_code == status and re.search(words, r.json["error"]), r.json
    assert ask(client, {"code": code}).json == {"token": TOKEN}


def test_wrong_codes_are_throttled_across_codes(client, clock, capsys):
    """Asking for a new code after each 5 wrong tries must not open a million guesses."""
    wrong = 0
    while wrong < 20:  # 4 codes, 5 wrong tries each
        assert ask(client, {}).status_code == 202
        code = shown_code(capsys)
        for k in range(1, PAIR_CODE_TRIES + 1):
            if wrong == 20:
                break
            assert ask(client, {"code": other_code(code, k)}).status_code == 403
            wrong += 1
    assert ask(client, {}).status_code == 202  # a fifth code (the fourth is void)
    code = shown_code(capsys)
    r = ask(client, {"code": code})  # even the right code is not checked now
    assert r.status_code == 429 and "too many wrong pairing codes" in r.json["error"]
    assert int(r.headers["Retry-After"]) >= 1
    clock.now += 31
    assert ask(client, {"code": code}).json == {"token": TOKEN}


def test_asking_for_codes_is_throttled(client, clock):
    for _ in range(5):
        assert ask(client, {}).status_code == 202
    r = ask(client, {})
    assert r.status_code == 429 and "too many pairing codes" in r.json["error"]
    clock.now += 21
    assert ask(client, {}).status_code == 202


# ---- who may pair ----------------------------------------------------------------------
@pytest.mark.parametrize("origin", [None, "http://127.0.0.1:8765", "chrome-extension://" + "a" * 32,
                                    "https://evil.example", "null",
                                    extension_origin() + ", https://evil.example"])
def test_only_the_extensions_origin_is_answered_and_nothing_else_gets_a_code_or_token(client, home,
                                                                                       capsys, origin):
    for body in ({}, {"code": "123456"}, None):
        r = ask(client, body, origin=origin)
        assert r.status_code == 403 and set(r.json) == {"error"}, r.json
        assert "Access-Control-Allow-Origin" not in r.headers
        assert TOKEN not in r.get_data(as_text=True)
    pre = client.options("/pair", headers={"Origin": origin or "", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in pre.headers
    assert not ANNOUNCE.search(capsys.readouterr().err) and not (home / "pair-code").exists()


def test_with_pairing_off_the_token_is_pasted_instead(home, tmp_path, capsys):
    app = create_app({"MODEL_DIRS": [str(tmp_path / "no-model")], "EXTENSION_ID": extension_id(),
                      "TOKEN": TOKEN, "PAIRING": False})
    c = loopback_client(app)
    for body in ({}, {"code": "123456"}):
        r = ask(c, body)
        assert r.status_code == 403 and "--no-pairing" in r.json["error"] and "captchalens token" in r.json["error"]
    assert not ANNOUNCE.search(capsys.readouterr().err)


def test_the_token_header_is_never_echoed(client):
    secret = "echo-me-not-" + "z" * 30
    requests = [("get", "/health"), ("post", "/solve"), ("post", "/samples"), ("post", "/reload"),
                ("post", "/pair"), ("options", "/samples"), ("get", "/nothing"), ("get", "/demo")]
    for origin in (None, extension_origin(), "https://evil.example"):
        for method, path in requests:
            headers = {TOKEN_HEADER: secret, **({"Origin": origin} if origin else {})}
            r = getattr(client, method)(path, headers=headers)
            assert secret not in r.get_data(as_text=True), (origin, method, path)
            assert all(secret not in v for _, v in r.headers.items()), (origin, method, path)


def test_after_rotating_the_token_pairing_gives_the_new_one(home, tmp_path, capsys):
    app = create_app({"MODEL_DIRS": [str(tmp_path / "no-model")], "EXTENSION_ID": extension_id()})
    c = loopback_client(app)
    old = ensure_token()
    new = rotate_token()
    ask(c, {})
    r = ask(c, {"code": shown_code(capsys)})
    assert r.json == {"token": new} and new != old


# ---- `captchalens token --pair-code` ----------------------------------------------------
def _token_cli(*argv: str) -> int:
    import argparse

    from captchalens.native_host.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["token", *argv])
    return args.func(args)


def test_the_token_command_prints_the_pending_code_or_says_none_is_pending(client, capsys):
    assert _token_cli("--pair-code") == 1
    out = capsys.readouterr()
    assert out.out == "" and "no pairing code is pending" in out.err and "Pair with local host" in out.err
    ask(client, {})
    code = shown_code(capsys)
    assert _token_cli("--pair-code") == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"{code[:3]} {code[3:]}" and "valid 5 min more" in out.err
    ask(client, {"code": code})
    assert _token_cli("--pair-code") == 1 and "no pairing code is pending" in capsys.readouterr().err


def test_an_expired_code_in_the_file_is_not_printed(home):
    from captchalens.native_host.security import write_private

    write_private(home / "pair-code", json.dumps({"code": "482913", "expires": 1.0}))
    assert pending_code() is None
    (home / "pair-code").write_text("{broken")
    assert pending_code() is None


def test_the_code_is_printed_on_the_hosts_stderr_in_the_documented_words(tmp_path):
    out = io.StringIO()
    p = Pairing(path=tmp_path / "pair-code", out=out)
    assert p.new_code() == PAIR_CODE_TTL
    assert ANNOUNCE.fullmatch(out.getvalue().strip())
