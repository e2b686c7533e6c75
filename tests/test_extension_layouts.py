"""The extension on real page layouts: the answer goes into the right box, or the note asks.

Each test serves a layout on a loopback port with a new captcha per request (as sites do),
grants the tab the way a user does (toolbar button: activeTab) and calls the context menu's
own handler (`self.solveFromMenu`), the shortcut's (`self.solveActiveTab`) or clicks in the
note and the options page. The answer is checked in the box it belongs in, and the other
boxes keep what the user typed.

Per-layout results (right answers in the right box / solves) and the median time from the
menu click to the filled box are printed (run with -s to see them).
"""
from __future__ import annotations

import math
import statistics

import pytest
from playwright.sync_api import expect

import support_browser as sb
from test_extension_e2e import agreed, browser, open_page, overlay, page, setup, sw  # noqa: F401 (fixtures)

ROUNDS = 4  # fresh captchas solved per layout
LAYOUT_CSS = "<style>label{display:block;margin:6px 0} .box{margin:8px 0}</style>"
EMAIL = "someone@example.com"


def report(name: str, right: int, total: int, times_ms: list[float]) -> None:
    print(f"\nlayout {name}: {right}/{total} right in the right box; "
          f"median {statistics.median(times_ms):.0f} ms from the menu to the filled box")


def solve_rounds(setup, browser, sw, page, server, captchas, path, fill_first=None, right_box="#code",
                 others=None):
    """Load the layout ROUNDS times (a new captcha each time), let the user type into fill_first
    ({selector: text}), solve from the image's menu: the answer must be in right_box, the other
    boxes unchanged. Returns (right, total, times)."""
    right = 0
    times = []
    for _ in range(ROUNDS):
        open_page(browser, page, server, path)
        for selector, text in (fill_first or {}).items():
            page.fill(selector, text)
        result = sb.solve_from_menu(sw, page, page.evaluate("document.querySelector('#cap').src"))
        label, rgba = captchas.last
        assert result["ok"] and result["filled"] and not result["asked"], result
        assert result["pixelsHash"] == sb.fnv1a(rgba.tobytes()), "the extension read other pixels than the page shows"
        want = agreed(setup, rgba, label, result["text"])
        expect(page.locator(right_box)).to_have_value(want)
        for selector, text in {**(others or {}), **(fill_first or {})}.items():
            expect(page.locator(selector)).to_have_value(text)
        right += want == label
        times.append(result["ms"])
    return right, ROUNDS, times


def solve_layout(setup, browser, sw, page, server, captchas, before=None):
    """Open the layout (a new captcha), let the user act on it (before(page)), right-click the
    captcha, Solve captcha: (the result, the answer TF gives for the pixels shown)."""
    open_page(browser, page, server)
    if before:
        before(page)
    result = sb.solve_from_menu(sw, page, server.url("/cap.png"))
    assert result["ok"], result
    label, rgba = captchas.last
    return result, agreed(setup, rgba, label, result["text"])


def site_memory(sw) -> dict:
    return sb.get_storage(sw, "sites").get("sites", {}).get("127.0.0.1", {})


def record_remembered_boxes(sw) -> None:
    """From now on, list every box the site's memory takes (self.rememberedBoxes in the worker)."""
    sw.evaluate("""() => {
        self.rememberedBoxes = [];
        if (self.boxRecorder) { chrome.storage.onChanged.removeListener(self.boxRecorder); }
        self.boxRecorder = (changes) => {
            const site = changes.sites && changes.sites.newValue && changes.sites.newValue['127.0.0.1'];
            const old = changes.sites && changes.sites.oldValue && changes.sites.oldValue['127.0.0.1'];
            if (site && site.input && (!old || old.input !== site.input)) { self.rememberedBoxes.push(site.input); }
        };
        chrome.storage.onChanged.addListener(self.boxRecorder);
    }""")


def remembered_boxes(sw) -> list:
    return sw.evaluate("self.rememberedBoxes")


def wait_remembered(sw, selector: str) -> None:
    """Wait until the site's memory holds this box."""
    sb.wait_site_memory(sw, "127.0.0.1", {"input": selector})


# ---- the two failing layouts -------------------------------------------------------
def test_email_box_before_the_image_is_never_filled_nor_remembered(setup, browser, sw, page):
    """<label>E-mail <input name=mail></label><img><label>Code <input></label>, labels display:block,
    the e-mail typed in: the answer goes into Code; only the box the user accepts is remembered,
    and a later page of the site fills its name=captcha box, not the e-mail box."""
    captchas = sb.FreshCaptchas(seed=101)
    login = (LAYOUT_CSS + "<form><label>E-mail <input name=mail id=mail></label><img id=cap src='/cap.png'>"
             "<label>Code <input id=code></label></form>")
    later = (LAYOUT_CSS + "<form><label>E-mail <input name=mail id=mail2></label><img id=cap src='/cap.png'>"
             "<input name=captcha id=captcha2></form>")
    routes = {"/": sb.html(sb.page_html("login", login)), "/later": sb.html(sb.page_html("later", later)),
              "/cap.png": captchas}
    record_remembered_boxes(sw)
    with sb.serving(routes) as server:
        right, total, times = solve_rounds(setup, browser, sw, page, server, captchas, "/",
                                           fill_first={"#mail": EMAIL}, right_box="#code")
        report("e-mail box before the image", right, total, times)
        assert site_memory(sw)["image"] == "#cap"
        page.press("#code", "Enter")  # the user sends the form: the box is accepted
        wait_remembered(sw, "#code")

        right, total, times = solve_rounds(setup, browser, sw, page, server, captchas, "/later",
                                           fill_first={"#mail2": EMAIL}, right_box="#captcha2")
        report("a later page of the same site (name=captcha)", right, total, times)
    assert remembered_boxes(sw) == ["#code"], "only the box the user accepted is remembered"


def test_image_above_a_form_with_account_password_and_code(setup, browser, sw, page):
    captchas = sb.FreshCaptchas(seed=102)
    body = ("<div class=box><img id=cap src='/cap.png'></div>"
            "<form onsubmit='event.preventDefault()'><input name=account id=account placeholder='Account'>"
            "<input type=password name=password id=password placeholder='Password'>"
            "<input name=code id=code placeholder='Code'><button>Sign in</button></form>")
    with sb.serving({"/": sb.html(sb.page_html("account", LAYOUT_CSS + body)), "/cap.png": captchas}) as server:
        right, total, times = solve_rounds(setup, browser, sw, page, server, captchas, "/",
                                           fill_first={"#account": "alice", "#password": "secret"},
                                           right_box="#code")
        report("image in a div above account/password/code", right, total, times)
        page.click("text=Sign in")  # accepted: the user's own click on the form's button
        wait_remembered(sw, "#code")


def test_email_box_typed_into_the_options_is_still_not_filled(setup, browser, sw, page):
    """Memory from elsewhere (here the user typed the e-mail box's selector into the Sites table)
    never makes CaptchaLens type into a box that says e-mail."""
    captchas = sb.FreshCaptchas(seed=103)
    body = (LAYOUT_CSS + "<form><label>E-mail <input name=mail id=mail></label><img id=cap src='/cap.png'>"
            "<label>Code <input id=code></label></form>")
    with sb.serving({"/": sb.html(sb.page_html("login", body)), "/cap.png": captchas}) as server:
        open_page(browser, page, server)
        assert sb.solve_from_menu(sw, page, server.url("/cap.png"))["ok"]
        page.press("#code", "Enter")
        wait_remembered(sw, "#code")
        options = browser.ctx.new_page()
        try:
            options.goto(f"chrome-extension://{browser.ext_id}/options/options.html")
            expect(options.locator("body")).to_have_attribute("data-ready", "true")
            box = options.get_by_label("input selector for 127.0.0.1")
            box.fill('input[name="mail"]')
            box.dispatch_event("change")
            wait_remembered(sw, 'input[name="mail"]')
        finally:
            options.close()
        right, total, times = solve_rounds(setup, browser, sw, page, server, captchas, "/",
                                           fill_first={"#mail": EMAIL}, right_box="#code")
        report("a remembered e-mail box", right, total, times)


# ---- unsure: the note asks; "Wrong box?" ------------------------------------------------------
def test_two_unnamed_boxes_the_note_asks_and_remembers_the_pick(setup, browser, sw, page):
    captchas = sb.FreshCaptchas(seed=104)
    body = "<form><img id=cap src='/cap.png'><input id=first_box><input id=second_box></form>"
    with sb.serving({"/": sb.html(sb.page_html("two boxes", LAYOUT_CSS + body)), "/cap.png": captchas}) as server:
        result, want = solve_layout(setup, browser, sw, page, server, captchas)
        assert result["asked"] and not result["filled"], result
        expect(overlay(page, "message", result["solveId"])).to_contain_text("not sure which box")
        expect(page.locator("#first_box")).to_have_value("")
        expect(page.locator("#second_box")).to_have_value("")
        # the user points at a box's name (the page's box is outlined), then clicks it
        choice = sb.note_frame(page, result["solveId"]).locator("[data-cl=box]", has_text="second_box")
        choice.hover()
        expect(page.locator("#second_box")).to_have_css("outline-style", "solid")
        choice.click()
        expect(page.locator("#second_box")).to_have_value(want)
        expect(page.locator("#first_box")).to_have_value("")
        expect(page.locator("#second_box")).not_to_have_css("outline-style", "solid")
        wait_remembered(sw, "#second_box")
        expect(overlay(page, "box-status")).to_have_text('Typed into "second_box".')

        # the next captcha of the site (page reloaded): the picked box, without asking
        open_page(browser, page, server)
        tab = sb.tab_of(sw, page)
        again = sw.evaluate("(tab) => self.solveActiveTab(tab, 'shortcut')", tab)
        assert again["ok"] and again["filled"] and not again["asked"], again
        label, rgba = captchas.last
        expect(page.locator("#second_box")).to_have_value(agreed(setup, rgba, label, again["text"]))
        expect(page.locator("#first_box")).to_have_value("")


def test_a_box_outside_the_captchas_form_is_only_offered(setup, browser, sw, page):
    """The captcha's form holds only an e-mail box; a plain box outside the form is near: it is
    offered in the note, not filled."""
    captchas = sb.FreshCaptchas(seed=111)
    body = ("<form><label>E-mail <input type=email id=mail></label><img id=cap src='/cap.png'></form>"
            "<label>Newsletter <input id=news></label>")
    with sb.serving({"/": sb.html(sb.page_html("outside", LAYOUT_CSS + body)), "/cap.png": captchas}) as server:
        result, want = solve_layout(setup, browser, sw, page, server, captchas)
        assert result["asked"] and not result["filled"], result
        expect(page.locator("#news")).to_have_value("")
        sb.note_frame(page, result["solveId"]).locator("[data-cl=box]", has_text="Newsletter").click()
        expect(page.locator("#news")).to_have_value(want)
        expect(page.locator("#mail")).to_have_value("")


def test_wrong_box_moves_the_answer_and_the_memory(setup, browser, sw, page):
    """The chooser is sure of the box labelled Code, but the captcha's box is the other one:
    "Wrong box?" in the note moves the answer there, and the site remembers that box."""
    captchas = sb.FreshCaptchas(seed=105)
    body = ("<form><img id=cap src='/cap.png'><label>Code <input id=promo></label>"
            "<label>Type what you see <input id=real></label></form>")
    with sb.serving({"/": sb.html(sb.page_html("wrong box", LAYOUT_CSS + body)), "/cap.png": captchas}) as server:
        result, want = solve_layout(setup, browser, sw, page, server, captchas)
        assert result["filled"] and result["inputSelector"] == "#promo", result
        expect(page.locator("#promo")).to_have_value(want)
        note = sb.note_frame(page, result["solveId"])
        expect(note.locator("[data-cl=box-status]")).to_have_text('Typed into "Code".')
        expect(note.locator("[data-cl=box]")).to_be_hidden()
        note.locator("[data-cl=wrong-box]").click()
        note.locator("[data-cl=box]", has_text="Type what you see").click()
        expect(page.locator("#real")).to_have_value(want)
        expect(page.locator("#promo")).to_have_value("")
        wait_remembered(sw, "#real")


def test_a_box_holding_the_users_text_is_not_overwritten(setup, browser, sw, page):
    captchas = sb.FreshCaptchas(seed=106)
    body = "<form><img id=cap src='/cap.png'><input id=answer name=captcha></form>"
    with sb.serving({"/": sb.html(sb.page_html("typed", LAYOUT_CSS + body)), "/cap.png": captchas}) as server:
        result, want = solve_layout(setup, browser, sw, page, server, captchas,
                                    before=lambda p: p.fill("#answer", "my guess"))
        assert not result["filled"] and result["asked"], result
        expect(page.locator("#answer")).to_have_value("my guess")
        expect(overlay(page, "message", result["solveId"])).to_contain_text("holds text you typed")
        # the user's own choice may replace it
        sb.note_frame(page, result["solveId"]).locator("[data-cl=box]", has_text="captcha").click()
        expect(page.locator("#answer")).to_have_value(want)


def test_scripted_events_neither_pick_nor_accept_a_box(setup, browser, sw, page):
    """The page cannot choose the box CaptchaLens remembers: its own Enter keys, clicks and
    submits (not isTrusted), and messages it posts as if from the note, count for nothing."""
    captchas = sb.FreshCaptchas(seed=107)
    body = ("<form id=f onsubmit='event.preventDefault()'><img id=cap src='/cap.png'><input id=first_box>"
            "<input id=second_box><button id=go>Go</button></form>")
    with sb.serving({"/": sb.html(sb.page_html("scripted", LAYOUT_CSS + body)), "/cap.png": captchas}) as server:
        open_page(browser, page, server)
        result = sb.solve_from_menu(sw, page, server.url("/cap.png"))
        assert result["ok"] and result["asked"], result
        record_remembered_boxes(sw)
        page.evaluate("""() => {
            const box = document.getElementById('first_box');
            box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));
            document.getElementById('go').click();
            document.getElementById('f').requestSubmit();
            window.postMessage({captchalensNote: true, type: 'pick', box: 0}, '*');
            for (let i = 0; i < window.frames.length; i++) { window.frames[i].postMessage({captchalensNote: true, type: 'pick', box: 0}, '*'); }
        }""")
        expect(page.locator("#first_box")).to_have_value("")
        # a real pick afterwards is remembered: nothing scripted came before it
        sb.note_frame(page, result["solveId"]).locator("[data-cl=box]", has_text="second_box").click()
        wait_remembered(sw, "#second_box")
        assert remembered_boxes(sw) == ["#second_box"]
        page.press("#second_box", "Enter")  # the user's own Enter after the pick changes nothing
        expect(page.locator("#first_box")).to_have_value("")


@pytest.mark.parametrize("kind", ["email", "password", "tel", "search"])
def test_boxes_whose_type_says_otherwise_are_never_offered(setup, browser, sw, page, kind):
    captchas = sb.FreshCaptchas(seed=108)
    body = f"<form><img id=cap src='/cap.png'><input id=other type={kind} name=captcha></form>"
    with sb.serving({"/": sb.html(sb.page_html(kind, body)), "/cap.png": captchas}) as server:
        open_page(browser, page, server)
        result = sb.solve_from_menu(sw, page, server.url("/cap.png"))
    assert result["ok"] and not result["filled"] and not result["asked"], result
    expect(overlay(page, "message", result["solveId"])).to_contain_text("No input found")
    expect(page.locator("#other")).to_have_value("")


# ---- auto-solve switched on in the options' Sites table -------------------------------------------
def test_auto_solve_switched_on_in_the_options_solves_on_page_load(setup, browser, sw, page):
    """Solve once and accept the box, tick the master switch and the site's auto-solve in the
    options (Chromium accepts the site's permission request), then the site's next page is
    solved as it loads, without any click. Unticking gives the access back."""
    captchas = sb.FreshCaptchas(seed=109)
    body = "<form onsubmit='event.preventDefault()'><img id=cap src='/cap.png'><input id=answer name=captcha></form>"
    with sb.serving({"/": sb.html(sb.page_html("auto", body)), "/cap.png": captchas}) as server:
        result, _ = solve_layout(setup, browser, sw, page, server, captchas)
        page.press("#answer", "Enter")
        wait_remembered(sw, "#answer")

        sb.grant_site_access(browser.ctx, browser.ext_id, "*://127.0.0.1/*")  # see its docstring
        options = browser.ctx.new_page()
        try:
            options.goto(f"chrome-extension://{browser.ext_id}/options/options.html")
            expect(options.locator("body")).to_have_attribute("data-ready", "true")
            options.fill("#threshold", "0")  # type every answer in (the model's confidence is not the point)
            options.locator("#threshold").dispatch_event("change")
            tick = options.get_by_label("auto-solve 127.0.0.1")
            tick.check()
            expect(options.locator("#sitesStatus")).to_contain_text('once "Auto-solve remembered sites" above')
            expect(tick).to_be_checked()
            options.check("#autoSolve")
            sb.wait_site_memory(sw, "127.0.0.1", {"autoSolve": True})
            sb.wait_storage(sw, {"autoSolve": True, "threshold": 0})
            assert "*://127.0.0.1/*" in sw.evaluate("chrome.permissions.getAll()")["origins"]
            sb.wait_auto_solve_matches(sw, ["*://127.0.0.1/*"])

            page.goto(server.url("/"))  # no toolbar click, no menu: the page's load solves it
            label, rgba = captchas.last
            filled = page.locator("#answer")
            expect(filled).not_to_have_value("")
            assert agreed(setup, rgba, label, filled.input_value())

            tick.uncheck()
            expect(options.locator("#sitesStatus")).to_contain_text("its access was given back")
            sb.wait_site_memory(sw, "127.0.0.1", {"autoSolve": False})
            assert "*://127.0.0.1/*" not in sw.evaluate("chrome.permissions.getAll()")["origins"]
            sb.wait_auto_solve_matches(sw, [])
        finally:
            options.close()


# ---- what covers the captcha ------------------------------------------------------------------------
@pytest.mark.parametrize("clicks", ["stop", "pass_through"])
@pytest.mark.parametrize("covered_px", [8, 25])
def test_a_fixed_header_over_a_cross_origin_captcha_is_not_in_the_crop(setup, browser, sw, page, covered_px,
                                                                        clicks):
    """A position:fixed header drawn over the top of a captcha from another site (read from a
    screenshot): it is hidden for the capture, so the crop is exactly the image, and shown again.
    Also when clicks pass through it (pointer-events: none, which hit tests skip: it is drawn all
    the same)."""
    captchas = sb.FreshCaptchas(seed=110 + covered_px + (50 if clicks == "pass_through" else 0))
    pointer = "pointer-events:none;" if clicks == "pass_through" else ""
    with sb.serving({"/cap.png": captchas}) as images:
        body = (f"<header id=bar style='position:fixed;top:0;left:0;right:0;height:{60 + covered_px}px;"
                f"background:#234;color:#fff;z-index:5;{pointer}'><b>Site</b> <nav><a href='#'>Home</a></nav></header>"
                f"<form style='margin-top:60px'><img id=cap src='{images.url('/cap.png')}'>"
                "<input id=answer name=captcha></form>")
        with sb.serving({"/": sb.html(sb.page_html("header", body))}) as server:
            right, times = 0, []
            for _ in range(ROUNDS):
                open_page(browser, page, server)
                cap_top = page.evaluate("document.getElementById('cap').getBoundingClientRect().top")
                assert cap_top == 60, "the layout moved: the header must cover the captcha's top"
                result = sb.solve_from_menu(sw, page, images.url("/cap.png"))
                label, rgba = captchas.last
                assert result["ok"] and result["via"] == "screenshot", result
                assert result["uncovered"] >= 1, result
                assert result["pixelsHash"] == sb.fnv1a(rgba.tobytes()), "the crop holds the header"
                want = agreed(setup, rgba, label, result["text"])
                expect(page.locator("#answer")).to_have_value(want)
                expect(page.locator("#bar")).to_have_css("visibility", "visible")
                expect(page.locator("#bar")).to_have_css("pointer-events", "none" if pointer else "auto")
                own = page.evaluate("(s => [s.getPropertyValue('pointer-events'), s.getPropertyPriority("
                                    "'pointer-events')])(document.getElementById('bar').style)")
                assert own == ["none" if pointer else "", ""]  # the page's own style, put back as it was
                assert page.evaluate("scrollY") == 0
                right += want == label
                times.append(result["ms"])
        assert images.hits("/cap.png") == ROUNDS, "each captcha is fetched exactly once, by the page"
    report(f"fixed header{' (pointer-events: none)' if pointer else ''} over {covered_px} px of a "
           f"cross-origin captcha", right, ROUNDS, times)


def test_a_cover_that_comes_back_at_once_is_named_in_the_note(setup, browser, sw, page):
    """A page that puts its banner back as soon as it is hidden (a framework re-rendering it): the
    crop cannot be clean, and the note says so beside the answer."""
    captchas = sb.FreshCaptchas(seed=120)
    with sb.serving({"/cap.png": captchas}) as images:
        body = ("<div id=banner style='position:fixed;top:0;left:0;right:0;height:75px;background:#234;z-index:5'>"
                f"Cookies!</div><form style='margin-top:60px'><img id=cap src='{images.url('/cap.png')}'>"
                "<input id=answer name=captcha></form><script>"
                "const b = document.getElementById('banner');"
                "new MutationObserver(() => { if (b.style.visibility) { b.style.removeProperty('visibility'); } })"
                ".observe(b, {attributes: true});</script>")
        with sb.serving({"/": sb.html(sb.page_html("stubborn", body))}) as server:
            open_page(browser, page, server)
            result = sb.solve_from_menu(sw, page, images.url("/cap.png"))
    assert result["ok"] and result["via"] == "screenshot", result
    expect(overlay(page, "message", result["solveId"])).to_contain_text("Part of the captcha is covered by the page")


def test_an_answer_below_the_threshold_is_typed_in_only_with_a_warning(setup, browser, sw, page):
    captchas = sb.FreshCaptchas(seed=121)
    body = "<form><img id=cap src='/cap.png'><input id=answer name=captcha></form>"
    with sb.serving({"/": sb.html(sb.page_html("unsure", body)), "/cap.png": captchas}) as server:
        options = browser.ctx.new_page()
        try:
            options.goto(f"chrome-extension://{browser.ext_id}/options/options.html")
            expect(options.locator("body")).to_have_attribute("data-ready", "true")
            options.fill("#threshold", "1")  # every answer is below it
            options.locator("#threshold").dispatch_event("change")
            sb.wait_storage(sw, {"threshold": 1})
        finally:
            options.close()
        result, want = solve_layout(setup, browser, sw, page, server, captchas)
    assert result["filled"] and result["confidence"] < 1, result
    expect(page.locator("#answer")).to_have_value(want)
    pct = math.floor(100 * result["confidence"] + 1e-9)  # percentSure: rounded down, never "100% sure"
    assert pct < 100
    expect(overlay(page, "message", result["solveId"])).to_contain_text(
        f"Unsure answer ({pct}% sure, below your threshold of 100%): check it before sending the form.")


# ---- the note leaves the form usable ----------------------------------------------------------------
NOTE_RECT = "() => { const r = document.getElementById('captchalens-overlay').getBoundingClientRect();" \
            " return [r.left, r.top, r.right, r.bottom]; }"
CONTROL_RECTS = "() => Array.from(document.querySelectorAll('form input, form button, form a, #cap'))" \
                ".map((el) => { const r = el.getBoundingClientRect(); return [el.id, r.left, r.top, r.right, r.bottom]; })"


@pytest.mark.parametrize("where", ["right edge", "narrow column"])
def test_the_note_never_covers_the_forms_controls(setup, browser, sw, page, where):
    """A sign-in form against the right edge of the window (no room right of the captcha) or in a
    narrow column: the note sits where it covers no box, button or link of the form, inside the
    window, and "Sign in" takes the user's click while the note is shown."""
    captchas = sb.FreshCaptchas(seed=130)
    place = "position:absolute;right:8px;top:150px;width:180px" if where == "right edge" else "width:170px"
    body = (f"<form style='{place}' onsubmit='event.preventDefault(); document.title = \"sent\"'>"
            "<label>User <input id=user name=username></label><img id=cap src='/cap.png'>"
            "<label>Code <input id=code name=captcha></label><button id=signin>Sign in</button>"
            "<a id=forgot href='#'>Forgot?</a></form>")
    with sb.serving({"/": sb.html(sb.page_html("edge", LAYOUT_CSS + body)), "/cap.png": captchas}) as server:
        result, want = solve_layout(setup, browser, sw, page, server, captchas,
                                    before=lambda p: p.fill("#user", "alice"))
        expect(page.locator("#code")).to_have_value(want)
        sb.note_frame(page, result["solveId"]).locator("[data-cl=answer]").wait_for()
        # the note has told its size (its frame starts 40 px high, overlay.js FIRST_SIZE) and is placed
        page.wait_for_function("document.getElementById('captchalens-overlay').getBoundingClientRect().height > 40")
        note = page.evaluate(NOTE_RECT)
        viewport = page.viewport_size
        assert note[0] >= 0 and note[1] >= 0 and note[2] <= viewport["width"] and note[3] <= viewport["height"], note
        for name, left, top, right, bottom in page.evaluate(CONTROL_RECTS):
            assert right <= note[0] or note[2] <= left or bottom <= note[1] or note[3] <= top, \
                f"the note {note} covers #{name} {(left, top, right, bottom)}"
        page.click("#signin", timeout=3000)  # fails if the note intercepts the click
        expect(page).to_have_title("sent")


# ---- dead ends that are not any more ------------------------------------------------------------------
def test_a_captcha_in_an_open_shadow_root(setup, browser, sw, page):
    """A web component holding the captcha and its box in an open shadow root: the clicked image
    is found there, the answer goes into the box next to it, and the site's memory finds both
    again (the shortcut on the next captcha)."""
    captchas = sb.FreshCaptchas(seed=140)
    body = ("<login-box id=login></login-box><script>"
            "const root = document.getElementById('login').attachShadow({mode: 'open'});"
            "root.innerHTML = \"<form onsubmit='event.preventDefault()'><label>E-mail <input id=mail name=mail></label>"
            "<img id=cap src='/cap.png'><label>Code <input id=code name=captcha></label><button>Go</button></form>\";"
            "</script>")
    code = page.locator("#login").locator("#code")  # Playwright's CSS pierces open shadow roots
    with sb.serving({"/": sb.html(sb.page_html("shadow", LAYOUT_CSS + body)), "/cap.png": captchas}) as server:
        result, want = solve_layout(setup, browser, sw, page, server, captchas,
                                    before=lambda p: p.locator("#mail").fill(EMAIL))
        assert result["filled"], result
        expect(code).to_have_value(want)
        expect(page.locator("#mail")).to_have_value(EMAIL)
        code.press("Enter")
        wait_remembered(sw, "#login >>> #code")
        assert site_memory(sw)["image"] == "#login >>> #cap"

        open_page(browser, page, server)
        again = sw.evaluate("(tab) => self.solveActiveTab(tab, 'shortcut')", sb.tab_of(sw, page))
        label, rgba = captchas.last
        assert again["ok"] and again["imageSelector"] == "#login >>> #cap", again
        expect(code).to_have_value(agreed(setup, rgba, label, again["text"]))
    assert server.hits("/cap.png") == 2, "each captcha is fetched once, by the page"


def test_a_css_background_image_captcha_from_the_page_menu(setup, browser, sw, page):
    """<div style="background-image: url(/cap.png)">: Chromium's menu has no image item for it,
    so the user right-clicks it and chooses "Solve captcha on this page" (or, the first time,
    the toolbar button). Its pixels are read from
    the screen (the URL is never requested again: a new request would be a new captcha)."""
    captchas = sb.FreshCaptchas(seed=141)
    body = ("<form><div id=cap class=captcha-image style='width:160px;height:60px;"
            "background:url(/cap.png) no-repeat 0 0'></div><input id=answer name=code></form>")
    with sb.serving({"/": sb.html(sb.page_html("background", body)), "/cap.png": captchas}) as server:
        right, times = 0, []
        for _ in range(ROUNDS):
            open_page(browser, page, server)
            page.wait_for_function("performance.getEntriesByType('resource')"
                                   ".some((e) => e.name.endsWith('/cap.png') && e.responseEnd > 0)")
            if times:
                page.hover("#cap")  # the right-click's pointer
                result = sb.solve_from_menu(sw, page)
            else:  # first, nothing remembered, the toolbar button: found by its words and its box
                page.mouse.move(900, 600)
                result = sw.evaluate("(tab) => self.solveActiveTab(tab, 'popup')", sb.tab_of(sw, page))
            label, rgba = captchas.last
            assert result["ok"] and result["via"] == "screenshot" and result["imageSelector"] == "#cap", result
            assert result["pixelsHash"] == sb.fnv1a(rgba.tobytes()), "the crop is not the background image"
            want = agreed(setup, rgba, label, result["text"])
            expect(page.locator("#answer")).to_have_value(want)
            right += want == label
            times.append(result["ms"])
        assert server.hits("/cap.png") == ROUNDS, "the background's URL was requested again"
    report("CSS background-image captcha (page menu)", right, ROUNDS, times)


def frame_id_of(browser, sw, page, frame_url: str, pattern: str) -> int:
    """The id Chromium gives the frame showing frame_url (what the context menu reports as frameId).
    The extension cannot list a frame of another site, so it is given access to the frame's site
    (as in grant_site_access, then the options page's own request), lists the frames, and gives the
    access back: afterwards it holds exactly what a user's click on the toolbar gives."""
    sb.grant_site_access(browser.ctx, browser.ext_id, pattern)
    options = browser.ctx.new_page()
    try:
        options.goto(f"chrome-extension://{browser.ext_id}/options/options.html")
        options.evaluate("""(origins) => { const b = document.createElement('button'); b.id = 'grant';
            b.onclick = () => chrome.permissions.request({origins}).then((ok) => { window.granted = ok; });
            document.body.prepend(b); }""", [pattern])
        options.click("#grant")
        options.wait_for_function("window.granted === true")
    finally:
        options.close()
    frames = sw.evaluate("""async (tabId) => (await chrome.scripting.executeScript({
        target: {tabId, allFrames: true}, func: () => location.href})).map((r) => [r.frameId, r.result])""",
                         sb.tab_of(sw, page)["id"])
    assert sw.evaluate("(origins) => chrome.permissions.remove({origins})", [pattern])
    assert pattern not in sw.evaluate("chrome.permissions.getAll()")["origins"]
    return next(fid for fid, url in frames if url == frame_url)


def test_a_captcha_in_a_frame_of_another_site_gets_a_correct_message(setup, browser, sw, page):
    """A shop (127.0.0.1) showing a sign-in frame from localhost: CaptchaLens may not read it. The
    note, in the shop's page, names the frame's site (not the shop's) and does not send the user
    to open the frame alone (that would load a new captcha); the page menu says the same. The
    note's "Allow CaptchaLens to read localhost" asks Chromium for that site; then it is solved."""
    captchas = sb.FreshCaptchas(seed=142)
    inner = sb.Server({"/frame": sb.html(sb.page_html("sign in", "<form><img id=cap src='/cap.png'>"
                                                                 "<input id=answer name=captcha></form>")),
                       "/cap.png": captchas}, host="localhost").start()
    try:
        outer_body = f"<h1>Shop</h1><iframe id=fr src='{inner.url('/frame')}' width=400 height=200></iframe>"
        with sb.serving({"/": sb.html(sb.page_html("shop", outer_body))}) as server:
            open_page(browser, page, server)
            frame = page.frame_locator("#fr")
            expect(frame.locator("#cap")).to_be_visible()
            frame_id = frame_id_of(browser, sw, page, inner.url("/frame"), "*://localhost/*")
            result = sb.solve_from_menu(sw, page, inner.url("/cap.png"), frame_id=frame_id,
                                        frame_url=inner.url("/frame"))
            assert not result["ok"] and result["code"] == "no_access", result
            message = overlay(page, "message")
            expect(message).to_contain_text("The captcha is inside a frame from localhost, not from 127.0.0.1.")
            expect(message).to_contain_text("type it yourself")
            expect(message).not_to_contain_text("Open that frame")
            allow = overlay(page, "allow-site")
            expect(allow).to_have_text("Allow CaptchaLens to read localhost")

            # the page menu (or the toolbar button) on the shop: the frame is named too
            before = list(page.frames)
            result = sb.solve_from_menu(sw, page)
            assert not result["ok"] and result["code"] == "no_image", result
            note = sb.new_note_frame(page, before)  # the earlier note may still be attached
            expect(note.locator("[data-cl=message]")).to_contain_text("This page shows a frame from localhost")
            expect(frame.locator("#answer")).to_have_value("")

            # the user allows CaptchaLens to read localhost from the note, then solves again: the
            # captcha (the same one: never requested again) is read and its box filled
            before = list(page.frames)
            sb.solve_from_menu(sw, page, inner.url("/cap.png"), frame_id=frame_id, frame_url=inner.url("/frame"))
            note = sb.new_note_frame(page, before)
            sb.grant_site_access(browser.ctx, browser.ext_id, "*://localhost/*")  # headless: see its docstring
            note.locator("[data-cl=allow-site]").click()
            expect(note.locator("[data-cl=allow-status]")).to_contain_text("CaptchaLens may read localhost now")
            result = sb.solve_from_menu(sw, page, inner.url("/cap.png"), frame_id=frame_id,
                                        frame_url=inner.url("/frame"))
            assert result["ok"] and result["site"] == "localhost", result
            label, rgba = captchas.last
            expect(frame.locator("#answer")).to_have_value(agreed(setup, rgba, label, result["text"]))
            assert sw.evaluate("(o) => chrome.permissions.remove({origins: o})", ["*://localhost/*"])
        assert inner.hits("/cap.png") == 1, "the captcha was requested again"
    finally:
        inner.stop()


# ---- bursts of screenshot crops -------------------------------------------------------------------
BURST = 6  # cross-origin solves in a row, as fast as they come


def test_a_burst_of_screenshot_solves_waits_for_the_quota_instead_of_hitting_it(setup, browser, sw, page):
    """Chromium allows two tab captures a second. Six cross-origin solves in a row: each capture
    waits just until the quota allows it; none is refused (before: refused, then a blind 600 ms retry)."""
    captchas = sb.FreshCaptchas(seed=150)
    sw.evaluate("""() => {
        self.captureLog = [];
        if (!self.realCapture) { self.realCapture = chrome.tabs.captureVisibleTab; }
        chrome.tabs.captureVisibleTab = async (...args) => {
            try {
                const shot = await self.realCapture.apply(chrome.tabs, args);
                self.captureLog.push('ok');
                return shot;
            } catch (e) {
                self.captureLog.push(e.message);
                throw e;
            }
        };
    }""")
    try:
        with sb.serving({"/cap.png": captchas}) as images:
            body = f"<form><img id=cap src='{images.url('/cap.png')}'><input id=answer name=captcha></form>"
            with sb.serving({"/": sb.html(sb.page_html("burst", body))}) as server:
                open_page(browser, page, server)
                results = [sb.solve_from_menu(sw, page, images.url("/cap.png")) for _ in range(BURST)]
            assert images.hits("/cap.png") == 1
        log = sw.evaluate("self.captureLog")
    finally:
        sw.evaluate("() => { chrome.tabs.captureVisibleTab = self.realCapture; }")
    label, rgba = captchas.last
    assert all(r["ok"] and r["via"] == "screenshot" for r in results), results
    assert {r["pixelsHash"] for r in results} == {sb.fnv1a(rgba.tobytes())}
    assert log == ["ok"] * BURST, f"Chromium refused captures: {log}"
    times = [r["ms"] for r in results]
    right = sum(agreed(setup, rgba, label, r["text"]) == label for r in results)
    print(f"\nburst of {BURST} cross-origin solves: each {', '.join(f'{t:.0f}' for t in times)} ms")
    report(f"burst of {BURST} cross-origin solves", right, BURST, times)
