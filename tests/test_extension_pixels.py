"""The last solve's pixels stay in the extension (issue 10): a solve keeps the
raw RGBA it read in chrome.storage.session and encodes no PNG; the note gets
only the solve's id; a correction typed into the note sends exactly those
pixels, encoded as PNG once, when it is sent.

The PNG encodes are counted in the service worker by wrapping
OffscreenCanvas.prototype.convertToBlob (pngBlob's only encoder) before the
solve: the worker stays up for the test (a restart would lose the counter and
the count would read as missing, not as zero)."""
from __future__ import annotations

import base64
from urllib.parse import unquote

import numpy as np
import pytest
from playwright.sync_api import expect

import support_browser as sb
from test_extension_e2e import (agreed, browser, decode_data_url, open_page, overlay, page,  # noqa: F401 (fixtures)
                                setup, sw)

COUNT_PNG_ENCODES = """() => {
    if (self.__pngEncodes === undefined) {
        const encode = OffscreenCanvas.prototype.convertToBlob;
        OffscreenCanvas.prototype.convertToBlob = function (...args) {
            self.__pngEncodes += 1;
            return encode.apply(this, args);
        };
    }
    self.__pngEncodes = 0;
}"""


def _kept_solve(sw, tab_id: int) -> dict:
    return sw.evaluate("(key) => chrome.storage.session.get(key).then((r) => r[key])", f"solve:{tab_id}")


@pytest.mark.parametrize("origin", ["same", "cross"])
def test_a_correction_sends_the_solved_pixels_encoded_once(setup, browser, sw, page, origin):
    png, label, rgba = sb.captcha(seed=61 if origin == "same" else 62)
    with sb.serving({"/c.png": sb.png(png)}) as images:  # "cross": another origin without CORS: a screen crop
        src = "/c.png" if origin == "same" else images.url("/c.png")
        body = f"<form><img id=cap src='{src}'><input id=answer name=captcha></form>"
        routes = {"/": sb.html(sb.page_html("pixels", body)), "/c.png": sb.png(png)}
        with sb.serving(routes) as server:
            open_page(browser, page, server)
            sw.evaluate(COUNT_PNG_ENCODES)
            result = sb.solve_from_menu(sw, page, server.url("/c.png") if origin == "same" else src)
            assert result["ok"] and result["via"] == ("canvas" if origin == "same" else "screenshot"), result
            want = agreed(setup, rgba, label, result["text"])
            expect(page.locator("#answer")).to_have_value(want)
            assert sw.evaluate("self.__pngEncodes") == 0, "a solve encoded a PNG"

            # the tab's last solve holds the raw pixels read, and no PNG
            kept = _kept_solve(sw, sb.tab_of(sw, page)["id"])
            assert kept["id"] == result["solveId"] and "image" not in kept
            raw = base64.b64decode(kept["pixels"]["data"])
            assert (kept["pixels"]["width"], kept["pixels"]["height"]) == (160, 60)
            assert raw == rgba.tobytes() and sb.fnv1a(raw) == result["pixelsHash"]
            # the note gets the answer and the solve's id: no pixels, no image
            note = sb.note_frame(page, result["solveId"])
            shown = unquote(note.url.partition("#")[2])
            assert "data:image" not in shown and kept["pixels"]["data"][:64] not in shown and len(shown) < 2000

            # "Wrong answer? Type the right one", as a user does: no local host is paired, so it is kept
            right = "ab12" if want != "ab12" else "cd34"
            sb.note_seen(note)
            overlay(page, "correct-input", result["solveId"]).fill(right)
            overlay(page, "correct-send", result["solveId"]).click()
            expect(overlay(page, "correct-status", result["solveId"])).to_contain_text(
                "will be sent when the local host is reachable")
            expect(page.locator("#answer")).to_have_value(right)
        assert images.hits("/c.png") == (0 if origin == "same" else 1)
    assert sw.evaluate("self.__pngEncodes") == 1, "the correction was not encoded exactly once"
    queue = sb.get_storage(sw, "sampleQueue")["sampleQueue"]
    assert [(q["text"], q["site"]) for q in queue] == [(right, "127.0.0.1")]
    assert np.array_equal(decode_data_url(queue[0]["image"]), rgba), "the correction holds other pixels"
    assert _kept_solve(sw, sb.tab_of(sw, page)["id"]) is None  # one correction per solve: the pixels are gone


def test_a_later_solve_in_the_tab_replaces_the_kept_pixels(setup, browser, sw, page):
    first, _, rgba1 = sb.captcha(seed=63)
    second, _, rgba2 = sb.captcha(seed=64)
    body = "<form><img id=cap src='/c.png'><input id=answer name=captcha></form>"
    with sb.serving({"/": sb.html(sb.page_html("pixels", body)), "/c.png": sb.png(first)}) as server:
        open_page(browser, page, server)
        one = sb.solve_from_menu(sw, page, server.url("/c.png"))
    with sb.serving({"/": sb.html(sb.page_html("pixels", body)), "/c.png": sb.png(second)}) as server:
        open_page(browser, page, server)
        two = sb.solve_from_menu(sw, page, server.url("/c.png"))
    assert one["ok"] and two["ok"] and one["solveId"] != two["solveId"]
    kept = _kept_solve(sw, sb.tab_of(sw, page)["id"])
    assert kept["id"] == two["solveId"]
    assert base64.b64decode(kept["pixels"]["data"]) == rgba2.tobytes() != rgba1.tobytes()
