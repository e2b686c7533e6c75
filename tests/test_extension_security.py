"""The extension against a hostile page and a hostile "local host" (issue 14), in real Chromium.

Each test first runs the attack as the page (or the other host) would, then checks that the
user's own way still works: typing and clicking with Playwright's trusted input, the options
page, the context menu's handler. Storage is never written to set up a case.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from playwright.sync_api import expect, sync_playwright

import support_browser as sb
from test_extension_e2e import (Browser, host_home, open_page, options_page, overlay, page, pair_in_options,  # noqa: F401
                                set_host_address, setup, sw)

CORRECTIONS_PER_SITE = 10  # background/solves.js


REMOTE = "evil.test"  # a name that is not this computer's (Chromium resolves it to a test server here)


@pytest.fixture(scope="module")
def browser(setup, tmp_path_factory):  # noqa: F811 (this module's own Chromium)
    with sync_playwright() as p:
        ctx = sb.launch(p, tmp_path_factory.mktemp("chromium") / "profile", setup.ext_dir,
                        extra_args=[f"--host-resolver-rules=MAP {REMOTE} 127.0.0.1"])
        sb.service_worker(ctx, setup.ext_id)
        yield Browser(ctx, setup.ext_id, p)
        ctx.close()


def paste_token(browser, sw, url: str) -> None:
    """The way without /pair: `captchalens token`, pasted into the options' Token field."""
    token = sb.captchalens_cli("token")
    options = options_page(browser)
    try:
        set_host_address(options, url, sw)
        options.fill("#token", token)
        options.locator("#token").dispatch_event("change")
        expect(options.locator("#hostStatus")).to_have_text("Token saved.")
    finally:
        options.close()


def captcha_page(png: bytes) -> dict:
    body = "<form><img id=cap src='/c.png'><input id=answer name=captcha></form>"
    return {"/": sb.html(sb.page_html("captcha", body)), "/c.png": sb.png(png)}


def samples_of(host_home, site="127.0.0.1") -> list[str]:
    folder = host_home / "samples" / site
    return sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []


# ---- (1) corrections come only from the user, in UI the page cannot touch ----------------------------
FORGE_IN_SHADOW_ROOT = """(text) => {
    try {
        const r = document.getElementById('captchalens-overlay').shadowRoot;
        r.querySelector('[data-cl=correct-input]').value = text;
        r.querySelector('form').requestSubmit();
        return 'submitted';
    } catch (e) {
        return 'refused: ' + e.message;
    }
}"""

FORGE_WITH_EVENTS = """(text) => {
    const host = document.getElementById('captchalens-overlay');
    for (const target of [host, document, document.activeElement]) {
        target.dispatchEvent(new MouseEvent('click', {bubbles: true, composed: true}));
        target.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true, composed: true}));
    }
    // messages: to every frame the page can reach, and to itself as if from the note ("close")
    for (let i = 0; i < frames.length; i++) {
        frames[i].postMessage({type: 'correction', text, captchalensNote: true}, '*');
    }
    window.postMessage({captchalensNote: true, type: 'close'}, '*');
    window.postMessage({captchalensNote: true, type: 'size', width: 1, height: 1}, '*');
    return {reachableFrames: frames.length, noteInPage: document.querySelectorAll('iframe').length};
}"""


def test_a_page_cannot_forge_a_correction(setup, browser, sw, page, host_home):
    png, label, rgba = sb.captcha(seed=40)
    with sb.local_host(setup.keras_dir, setup.ext_dir) as url, sb.serving(captcha_page(png)) as server:
        paste_token(browser, sw, url)
        open_page(browser, page, server)
        result = sb.solve_from_menu(sw, page, server.url("/c.png"))
        assert result["ok"], result
        # the reviewer's attack: reach the note's shadow root, fill the box, submit the form
        assert page.evaluate(FORGE_IN_SHADOW_ROOT, "FORGED0").startswith("refused: ")
        note = sb.note_frame(page, result["solveId"])
        expect(note.locator("[data-cl=answer]")).to_have_text(result["text"])
        # synthetic clicks and Enter keys, messages: the page cannot even reach the note's window
        assert page.evaluate(FORGE_WITH_EVENTS, "FORGED1") == {"reachableFrames": 0, "noteInPage": 0}
        expect(note.locator("[data-cl=answer]")).to_be_visible()  # a forged "close" did not close it
        # a script inside the note itself: clicks and keys that are not the user's (isTrusted false)
        note.evaluate("""() => {
            document.querySelector('[data-cl=correct-input]').value = 'FORGED2';
            document.querySelector('[data-cl=correct-send]').click();
            document.querySelector('[data-cl=correct-input]').dispatchEvent(
                new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));
        }""")
        expect(note.locator("[data-cl=correct-status]")).to_have_text("")
        # clickjacking: the page makes the note all but transparent; the user's real click lands on it
        page.evaluate("document.getElementById('captchalens-overlay').style.setProperty('opacity', '0.02', 'important')")
        note.locator("[data-cl=correct-input]").fill("FORGED3")
        note.locator("[data-cl=correct-send]").click(force=True)
        expect(note.locator("[data-cl=correct-status]")).to_contain_text("the page covers or hides this note")
        # a note the page made itself, naming a solve it guessed: the user's real click sends nothing
        page.evaluate("""(src) => { const f = document.createElement('iframe'); f.id = 'fake';
            f.src = src + '#' + encodeURIComponent(JSON.stringify({text: 'abcd', solveId: 'guessed'}));
            f.style.cssText = 'position:absolute;left:560px;top:360px;width:320px;height:120px';
            document.body.appendChild(f); }""",
                      f"chrome-extension://{browser.ext_id}/note/note.html")
        fake = page.frame_locator("#fake")
        fake.locator("[data-cl=correct-input]").fill("FORGED4")
        fake.locator("[data-cl=correct-send]").click()
        expect(fake.locator("[data-cl=correct-status]")).to_contain_text("Not sent")
        assert server.hits("/c.png") == 1
        assert samples_of(host_home) == [], "a page forged a correction"

        # the user: types the right answer into the (visible again) note and clicks Send
        page.evaluate("document.getElementById('captchalens-overlay').style.removeProperty('opacity')")
        right = "ab12" if result["text"] != "ab12" else "cd34"
        sb.note_seen(note)
        note.locator("[data-cl=correct-input]").fill(right)
        note.locator("[data-cl=correct-send]").click()
        expect(note.locator("[data-cl=correct-status]")).to_contain_text("saved for retraining")
        expect(page.locator("#answer")).to_have_value(right)
        # one correction per solve: the box is done, and Enter sends nothing more
        expect(note.locator("[data-cl=correct-input]")).to_be_disabled()
        expect(note.locator("[data-cl=correct-send]")).to_be_disabled()
    assert samples_of(host_home) == [f"{right}.png"]
    saved = np.asarray(Image.open(host_home / "samples" / "127.0.0.1" / f"{right}.png").convert("RGBA"))
    assert np.array_equal(saved, rgba), "the sample holds other pixels than the ones solved"


def test_enter_sends_and_corrections_per_site_are_limited(browser, sw, page):
    """The user's Enter key sends; a site gets at most CORRECTIONS_PER_SITE corrections in 10 minutes
    (here the host is down, so they wait in the queue the options page shows)."""
    png, _, _ = sb.captcha(seed=41)
    with sb.serving(captcha_page(png)) as server:
        open_page(browser, page, server)
        for i in range(CORRECTIONS_PER_SITE + 1):
            result = sb.solve_from_menu(sw, page, server.url("/c.png"))
            assert result["ok"], result
            note = sb.note_seen(sb.note_frame(page, result["solveId"]))
            note.locator("[data-cl=correct-input]").fill(f"zz{i:02d}")
            note.locator("[data-cl=correct-input]").press("Enter")
            status = note.locator("[data-cl=correct-status]")
            if i < CORRECTIONS_PER_SITE:
                expect(status).to_contain_text("will be sent when the local host is reachable")
            else:
                expect(status).to_contain_text(f"at most {CORRECTIONS_PER_SITE} corrections from one site")
                expect(note.locator("[data-cl=correct-send]")).to_be_enabled()  # the user may try later
    options = options_page(browser)
    try:
        expect(options.locator("#queued")).to_have_text(f"{CORRECTIONS_PER_SITE} correction(s) wait for the local host.")
    finally:
        options.close()


# ---- (2) pairing: a code printed by the host, typed by the user -----------------------------------------
def test_pairing_needs_the_code_the_host_printed(setup, browser, sw, host_home, capsys):
    with sb.local_host(setup.keras_dir, setup.ext_dir) as url:
        options = options_page(browser)
        try:
            set_host_address(options, url, sw)
            options.click("#pair")
            status = options.locator("#hostStatus")
            expect(status).to_have_text(f"The local host at {url} printed a 6-digit code: type it below (within 5 minutes).")
            printed = capsys.readouterr().err  # the host's terminal
            code = next(line for line in printed.splitlines() if "Pairing code" in line).split(": ")[1][:7]
            assert code == sb.captchalens_cli("token", "--pair-code")

            options.fill("#pairCode", "12 34")
            options.click("#pairConfirm")
            expect(status).to_have_text("Not paired: Type the 6 digits the local host printed (like 482 913).")
            wrong = f"{(int(code.replace(' ', '')) + 1) % 1000000:06d}"
            options.fill("#pairCode", wrong)
            options.locator("#pairCode").press("Enter")
            expect(status).to_have_text("Not paired: The local host refused: wrong pairing code: 4 tries left for this code")
            expect(options.locator("#token")).to_have_attribute("placeholder", "not paired")

            options.fill("#pairCode", code)
            options.click("#pairConfirm")
            expect(status).to_have_text(f"Paired with the local host at {url}.")
            expect(options.locator("#pairForm")).to_be_hidden()
            expect(options.locator("#token")).to_have_attribute("placeholder", "paired (token stored)")
            # a code is used once
            options.click("#pair")
            expect(status).to_contain_text("printed a 6-digit code")
            options.fill("#pairCode", code)
            options.click("#pairConfirm")
            expect(status).to_contain_text("Not paired: The local host refused: wrong pairing code")
        finally:
            options.close()


def test_pairing_errors_are_clear(setup, browser, sw, host_home):
    """No host, a host with pairing off, a code typed before asking for one."""
    options = options_page(browser)
    try:
        status = options.locator("#hostStatus")
        down = sb.closed_port_url()
        set_host_address(options, down, sw)
        options.click("#pair")
        expect(status).to_have_text(f"Not paired: The local host is not running at {down} (start it with `make run`).")
        expect(options.locator("#pairForm")).to_be_hidden()
        with sb.local_host(setup.keras_dir, setup.ext_dir, PAIRING=False) as url:
            set_host_address(options, url, sw)
            options.click("#pair")
            expect(status).to_contain_text("Not paired: The local host refused: pairing is turned off (--no-pairing)")
        with sb.local_host(setup.keras_dir, setup.ext_dir) as url:
            set_host_address(options, url, sw)
            options.click("#pair")
            expect(status).to_contain_text("printed a 6-digit code")
            set_host_address(options, down, sw)  # the address changed before the code was typed
            options.fill("#pairCode", sb.captchalens_cli("token", "--pair-code"))
            options.click("#pairConfirm")
            expect(status).to_have_text('Not paired: Click "Pair with local host" first (the address changed, '
                                        'or no code was asked for).')
    finally:
        options.close()


# ---- (6) a host address on another computer --------------------------------------------------------------
def remote_host(ext_id: str) -> sb.Server:
    """A CaptchaLens look-alike on another computer: answers like a host, pairs with any code,
    and records every request (to see what it was sent)."""
    cors = {"Access-Control-Allow-Origin": f"chrome-extension://{ext_id}",
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, X-CaptchaLens-Token",
            "Access-Control-Allow-Private-Network": "true"}

    def answer(status, body):
        return lambda req: ((204, cors, b"") if req.method == "OPTIONS" else
                            (status(req) if callable(status) else status,
                             {"Content-Type": "application/json", **cors}, json.dumps(body(req)).encode()))

    pair_status = lambda req: 200 if b"code" in req.body else 202  # noqa: E731
    pair_body = lambda req: {"token": "remote-token-0123456789"} if b"code" in req.body else {"pending": True, "expires_in": 300}  # noqa: E731,E501
    routes = {
        "/health": answer(200, lambda req: {"ok": True, "version": "0.1.0", "api": 1, "models": ["default"],
                                            "default": "default"}),
        "/models": answer(200, lambda req: {"default": "default", "models": [{"name": "default"}]}),
        "/pair": answer(pair_status, pair_body),
        "/solve": answer(200, lambda req: {"text": "remote", "confidence": 0.99, "model": "default", "ms": 1}),
        "/samples": answer(201, lambda req: {"saved": "x.png", "count": 1}),
    }
    server = sb.Server(routes).start()
    server.remote_url = f"http://{REMOTE}:{server.port}"
    return server


def test_a_remote_host_address_gets_neither_pixels_nor_the_token(setup, browser, sw, page, host_home):
    png, label, rgba = sb.captcha(seed=42)
    remote = remote_host(browser.ext_id)
    try:
        with sb.local_host(setup.keras_dir, setup.ext_dir) as url, sb.serving(captcha_page(png)) as server:
            pair_in_options(browser, sw, url)
            options = options_page(browser)
            status = options.locator("#hostStatus")
            # the attack: point the extension at another computer
            options.select_option("#engine", "host")
            sb.wait_storage(sw, {"engine": "host"})
            set_host_address(options, remote.remote_url)
            expect(options.locator("#settingsError")).to_have_text(
                f"{remote.remote_url} is not on this computer: the captchas you solve (and your corrections) "
                f"would go over the network to it. The local host address must be 127.0.0.1, localhost or "
                f"[::1], unless you tick \"Allow an address that is not on this computer\" first.")
            options.reload()
            expect(options.locator("body")).to_have_attribute("data-ready", "true")
            expect(options.locator("#hostUrl")).to_have_value(url)
            options.click("#testHost")
            expect(status).to_contain_text(f"is running at {url}")
            open_page(browser, page, server)
            result = sb.solve_from_menu(sw, page, server.url("/c.png"))
            assert result["ok"] and result["source"] == "host" and result["text"] != "remote", result
            assert remote.requests == [], "the other computer was contacted"

            # the user insists: the box, then the address; Test connection says what it is
            options.check("#allowRemoteHost")
            sb.wait_storage(sw, {"allowRemoteHost": True})
            set_host_address(options, remote.remote_url, sw)
            options.click("#testHost")
            expect(status).to_have_text(
                f"A CaptchaLens host 0.1.0 answers at {remote.remote_url}, which is NOT on this computer: the "
                f"captchas you solve and your corrections go over the network to it, unencrypted (http). "
                f"Keep this address only if that computer is yours.")
            expect(options.locator("#token")).to_have_attribute("placeholder", "not paired")
            # a solve goes there now (the user said so), and a correction: never with the local token
            result = sb.solve_from_menu(sw, page, server.url("/c.png"))
            assert result["ok"] and result["text"] == "remote", result
            sb.note_seen(sb.note_frame(page, result["solveId"]))
            overlay(page, "correct-input", result["solveId"]).fill("zz42")
            overlay(page, "correct-send", result["solveId"]).click()
            expect(overlay(page, "correct-status", result["solveId"])).to_contain_text(
                f"not paired with the local host at {remote.remote_url}")
            # its own pairing gives a token for it alone
            options.click("#pair")
            expect(status).to_contain_text(f"The local host at {remote.remote_url} printed a 6-digit code")
            options.fill("#pairCode", "000000")
            options.click("#pairConfirm")
            expect(status).to_have_text(f"Paired with the local host at {remote.remote_url}.")
            assert not any("x-captchalens-token" in r.headers for r in remote.requests), \
                "the local host's token went to another computer"
            assert remote.hits("/samples", "POST") == 0

            # back to this computer: unticking the box brings the address back, the local token still works
            options.uncheck("#allowRemoteHost")
            expect(options.locator("#hostUrl")).to_have_value("http://127.0.0.1:8765")
            set_host_address(options, url, sw)
            expect(options.locator("#token")).to_have_attribute("placeholder", "paired (token stored)")
            options.click("#flush")  # the correction kept while unpaired goes to this computer's host
            expect(status).to_have_text("Sent 1 correction(s).")
            options.close()
        assert samples_of(host_home) == ["zz42.png"]
        assert not any(r.headers.get("x-captchalens-token") == (host_home / "token").read_text().strip()
                       for r in remote.requests)
    finally:
        remote.stop()


def test_host_addresses_on_this_computer_are_accepted(browser, sw):
    options = options_page(browser)
    try:
        for url in ["http://localhost:8765", "http://[::1]:8765", "http://127.0.0.2:8765", "http://127.0.0.1:9"]:
            set_host_address(options, url, sw)
            expect(options.locator("#settingsError")).to_have_text("")
        for url in ["http://127.0.0.1.evil.test:8765", "http://10.0.0.2:8765", "https://example.com"]:
            set_host_address(options, url)
            expect(options.locator("#settingsError")).to_contain_text("is not on this computer")
        assert sb.get_storage(sw, "hostUrl")["hostUrl"] == "http://127.0.0.1:9"
    finally:
        options.close()


# ---- (8) the token is out of the content scripts' reach --------------------------------------------------
READ_STORAGE_AS_CONTENT_SCRIPT = """async (tabId) => (await chrome.scripting.executeScript({target: {tabId}, func: async () => {
    const out = {};
    for (const area of ['local', 'sync', 'session']) {
        try {
            out[area] = JSON.stringify(await chrome.storage[area].get(null));
        } catch (e) {
            out[area] = 'error: ' + e.message;
        }
    }
    try {
        await chrome.storage.local.set({hostUrl: 'http://evil.test:1', allowRemoteHost: true});
        out.write = 'written';
    } catch (e) {
        out.write = 'error: ' + e.message;
    }
    return out;
}}))[0].result"""


def test_content_scripts_cannot_read_the_token(setup, browser, sw, page, host_home):
    """The extension's content scripts run in web pages' processes: from their context (the world
    CaptchaLens injects its own scripts into) storage can be neither read nor written."""
    png, _, _ = sb.captcha(seed=43)
    with sb.local_host(setup.keras_dir, setup.ext_dir) as url, sb.serving(captcha_page(png)) as server:
        pair_in_options(browser, sw, url)
        token = (host_home / "token").read_text().strip()
        open_page(browser, page, server)
        assert sb.solve_from_menu(sw, page, server.url("/c.png"))["ok"]  # the content scripts have run here
        found = sw.evaluate(READ_STORAGE_AS_CONTENT_SCRIPT, sb.tab_of(sw, page)["id"])
    refused = "error: Access to storage is not allowed from this context."
    assert found == {"local": refused, "sync": refused, "session": refused, "write": refused}
    assert token not in str(found)
    assert sb.get_storage(sw, ["hostUrl", "allowRemoteHost"]) == {"hostUrl": url}


def test_a_redirect_does_not_carry_pixels_or_the_token_elsewhere(browser, sw, page):
    """Whatever listens on the local host's address may answer with a redirect to another computer:
    the extension does not follow it, so neither the pixels nor the token go there."""
    png, _, _ = sb.captcha(seed=44)
    remote = remote_host(browser.ext_id)

    def bounce(req):
        cors = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "*",
                "Access-Control-Allow-Methods": "GET, POST"}
        if req.method == "OPTIONS":  # lets the preflight through, so the POST itself comes here
            return 204, cors, b""
        return 307, {"Location": f"{remote.remote_url}{req.path}", **cors}, b""

    try:
        routes = {path: bounce for path in ["/health", "/models", "/solve", "/samples", "/pair"]}
        with sb.serving(routes) as loopback, sb.serving(captcha_page(png)) as server:
            options = options_page(browser)
            try:
                set_host_address(options, loopback.origin, sw)
                options.fill("#token", "a-token-pasted-for-this-address")
                options.locator("#token").dispatch_event("change")
                expect(options.locator("#hostStatus")).to_have_text("Token saved.")
                options.select_option("#engine", "host")
                sb.wait_storage(sw, {"engine": "host"})
                options.click("#testHost")
                expect(options.locator("#hostStatus")).to_have_text(
                    f"The local host at {loopback.origin} answered with a redirect to another address: "
                    f"CaptchaLens does not follow it. Is CaptchaLens running there?")
            finally:
                options.close()
            open_page(browser, page, server)
            result = sb.solve_from_menu(sw, page, server.url("/c.png"))
            assert not result["ok"] and "redirect" in result["message"], result
            assert loopback.hits("/solve", "POST") == 1
        assert remote.requests == [], "a redirect carried the request to another computer"
    finally:
        remote.stop()
