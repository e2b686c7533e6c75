"""Native messaging in real Chromium: `captchalens native install --profile-dir` into the
profile, no HTTP host running, "Use native messaging" in the options, then right-click the
captcha -> the field holds the host's answer, and a correction is kept without pairing.

The permission prompt of chrome.permissions.request cannot be answered in headless
Chromium, so the extension loaded here is a copy whose manifest lists nativeMessaging as
a required permission (granted at load) instead of an optional one: the options page
shows it on, and everything past the "Use native messaging" click runs as for a user.
That click's request() itself is not driven here.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from playwright.sync_api import expect, sync_playwright

import support_browser as sb

STARTUP_S = 90  # the first native request waits for Python, TensorFlow and the model to load


@pytest.fixture(scope="module")
def ext_dir(tmp_path_factory):
    from support_host import extension_with_native_granted

    return extension_with_native_granted(tmp_path_factory.mktemp("ext") / "extension")


@pytest.fixture(scope="module")
def home(module_home):
    return module_home


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright, ext_dir, home, tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium") / "profile"
    profile.mkdir()
    out = sb.captchalens_cli("native", "install", "--profile-dir", str(profile))
    assert f"profile {profile}: " in out
    ctx = sb.launch(playwright, profile, ext_dir)
    sb.service_worker(ctx, sb.extension_id(ext_dir))
    ctx.profile = profile
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def ext_id(ext_dir):
    return sb.extension_id(ext_dir)


@pytest.fixture(scope="module")
def solver():
    from captchalens.paths import default_model_dir
    from captchalens.solver import Solver

    return Solver(default_model_dir())  # what the native host serves without --model


def options_page(ctx, ext_id):
    """The options page, loaded: its form filled from storage (typing before that is overwritten)."""
    page = ctx.new_page()
    page.goto(f"chrome-extension://{ext_id}/options/options.html")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page


def use_host_engine(ctx, ext_id, options, url):
    """Options: engine "Local host", the HTTP address set to `url` (as a user types them);
    waits until they are stored."""
    options.select_option("#engine", "host")
    options.fill("#hostUrl", url)
    options.locator("#hostUrl").dispatch_event("change")
    sb.wait_storage(sb.service_worker(ctx, ext_id), {"engine": "host", "hostUrl": url})


def captcha_routes(png):
    body = "<img id='cap' src='/c.png' alt='captcha'><input id='answer' name='captcha'>"
    return {"/": sb.html(sb.page_html("native", body)), "/c.png": sb.png(png)}


def test_right_click_is_solved_through_native_messaging_with_no_http_host(browser, ext_id, home, solver):
    options = options_page(browser, ext_id)
    use_host_engine(browser, ext_id, options, sb.closed_port_url())  # nothing answers HTTP
    status = options.locator("#nativeStatus")
    expect(status).to_contain_text("On: the native host answers (CaptchaLens ", timeout=STARTUP_S * 1000)
    expect(status).to_contain_text("models: default")
    expect(options.locator("#nativeOn")).to_be_hidden()
    expect(options.locator("#nativeOff")).to_be_visible()
    options.close()

    sw = sb.service_worker(browser, ext_id)
    png, label, rgba = sb.captcha(seed=41)
    want = solver.solve_pixels([rgba])[0].text
    page = browser.new_page()
    with sb.serving(captcha_routes(png)) as server:
        page.goto(server.url("/"))
        sb.click_toolbar_button(browser, page, ext_id)
        result = sb.solve_from_menu(sw, page, server.url("/c.png"))
        assert result["ok"] and result["source"] == "host", result
        assert result["text"] == want
        expect(page.locator("#answer")).to_have_value(want)
        # The host's automatic reader answered (default when sure, else general): like the
        # browser's, it is not pinned to the site, whose next captcha it reads afresh.
        assert result["model"] == "auto", result
        assert sb.get_storage(sw, "sites")["sites"]["127.0.0.1"]["model"] == ""

        # A correction goes to the native host's samples: no pairing, no token.
        right = "ab12" if want != "ab12" else "cd34"
        note = sb.note_seen(sb.note_frame(page, result["solveId"]))
        note.locator("[data-cl=correct-input]").fill(right)
        note.locator("[data-cl=correct-send]").click()
        expect(note.locator("[data-cl=correct-status]")).to_contain_text("saved for retraining")
    page.close()
    saved = home / "samples" / "127.0.0.1" / f"{right}.png"
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGBA")), rgba)
    assert "started by chrome-extension://" in (home / "native-host.log").read_text()


def test_without_the_native_host_solving_falls_back_to_http_and_the_options_say_why(browser, ext_id, home,
                                                                                  solver):
    sb.captchalens_cli("native", "uninstall", "--profile-dir", str(browser.profile))
    sb.stop_service_worker(browser, ext_id)  # the open port goes with the worker
    png, label, rgba = sb.captcha(seed=42)
    want = solver.solve_pixels([rgba])[0].text
    from captchalens.paths import default_model_dir

    with sb.local_host(default_model_dir(), sb.EXTENSION_DIR) as url, sb.serving(captcha_routes(png)) as server:
        options = options_page(browser, ext_id)
        use_host_engine(browser, ext_id, options, url)
        expect(options.locator("#nativeStatus")).to_have_text(
            "The CaptchaLens native host is not installed for this browser: run `captchalens native install`, "
            "then restart the browser.")
        options.close()
        sw = sb.wake_service_worker(browser, ext_id)
        page = browser.new_page()
        page.goto(server.url("/"))
        sb.click_toolbar_button(browser, page, ext_id)
        result = sb.solve_from_menu(sw, page, server.url("/c.png"))
        assert result["ok"] and result["source"] == "host" and result["text"] == want, result
        page.close()
    # and with neither, the message names both
    with sb.serving(captcha_routes(png)) as server:
        options = options_page(browser, ext_id)
        use_host_engine(browser, ext_id, options, sb.closed_port_url())
        options.close()
        page = browser.new_page()
        page.goto(server.url("/"))
        sb.click_toolbar_button(browser, page, ext_id)
        result = sb.solve_from_menu(sb.service_worker(browser, ext_id), page, server.url("/c.png"))
        assert not result["ok"] and result["code"] == "host_down", result
        assert "native host is not installed" in result["message"] and "Over HTTP:" in result["message"]
        page.close()


def test_as_shipped_native_messaging_stays_off_until_the_user_asks(playwright, tmp_path, monkeypatch, solver):
    """The extension as users load it: the host installed, but no permission asked for yet, so
    the options say Off and solving goes over HTTP without ever starting the native host."""
    from captchalens.paths import default_model_dir

    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    profile = tmp_path / "profile"
    profile.mkdir()
    sb.captchalens_cli("native", "install", "--profile-dir", str(profile))
    ext_id = sb.extension_id(sb.EXTENSION_DIR)
    png, label, rgba = sb.captcha(seed=43)
    want = solver.solve_pixels([rgba])[0].text
    with sb.local_host(default_model_dir(), sb.EXTENSION_DIR) as url, sb.serving(captcha_routes(png)) as server:
        ctx = sb.launch(playwright, profile, sb.EXTENSION_DIR)
        try:
            sb.service_worker(ctx, ext_id)
            options = options_page(ctx, ext_id)
            expect(options.locator("#nativeStatus")).to_have_text("Off: solving uses the local host over HTTP.")
            expect(options.locator("#nativeOn")).to_be_visible()
            use_host_engine(ctx, ext_id, options, url)
            options.close()
            page = ctx.new_page()
            page.goto(server.url("/"))
            sb.click_toolbar_button(ctx, page, ext_id)
            result = sb.solve_from_menu(sb.service_worker(ctx, ext_id), page, server.url("/c.png"))
            assert result["ok"] and result["source"] == "host" and result["text"] == want, result
        finally:
            ctx.close()
    assert not (tmp_path / "home" / "native-host.log").exists()  # the native host never started
