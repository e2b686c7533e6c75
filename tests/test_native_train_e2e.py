"""Training a site's model from the options page, end to end in Chromium (issue 11, "Done when"):
a fresh profile with `captchalens native install --profile-dir` and no HTTP host; captchas of a
scheme the shipped model cannot read are solved through native messaging and corrected in the
note, as a user does; "Train a model for this site" in the real options page (the host's jobs run
a tiny schedule here: $CAPTCHALENS_TRAIN_ARGS); then the site's next captcha is read in the page by
the new model with the native host gone, and again after the browser restarted. Plus the bad
states: host not installed, too few corrections, a job already running, cancel, a failed job
(its log kept), a model missing from the browser's storage.

As in test_native_e2e.py, the extension is a copy whose manifest lists nativeMessaging as
required (headless Chromium cannot answer the permission prompt).
"""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

import support_browser as sb
from captchalens.training.generate import GenSpec, draw

TINY = "--width-mult 0.25 --epochs 2"  # the host's train jobs here: about a minute, not an hour
SCHEME = GenSpec(charset="abc12", min_length=4, max_length=4, width=(120, 120), height=(40, 40))
SITE = "127.0.0.1"  # the test pages' host name: the site the corrections and the model are for
MIN_SAMPLES = 10  # training/retrain.py MIN_IMAGES; also the note's 10 corrections per site per 10 min
STARTUP_S = 90  # the first native request waits for Python, TensorFlow and the model to load
JOB_S = 300  # a tiny job took 74 s on 2 busy cores; the whole run of the suite loads them more


def scheme_captcha(seed: int, index: int):
    """(PNG bytes, label, RGBA array) of the new scheme."""
    import numpy as np

    im, label = draw(SCHEME, seed, index)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue(), label, np.asarray(im.convert("RGBA"), dtype=np.uint8)


class Browser:
    """The module's Chromium, which a test may restart with the same profile."""

    def __init__(self, playwright, profile: Path, ext_dir: Path):
        self.playwright, self.profile, self.ext_dir = playwright, profile, ext_dir
        self.ext_id = sb.extension_id(ext_dir)
        self.ctx = None
        self.start()

    def start(self):
        self.ctx = sb.launch(self.playwright, self.profile, self.ext_dir)
        sb.service_worker(self.ctx, self.ext_id)

    def restart(self):
        self.ctx.close()
        self.start()

    @property
    def sw(self):
        return sb.service_worker(self.ctx, self.ext_id)

    def options(self):
        """The options page, loaded (its form filled from storage)."""
        page = self.ctx.new_page()
        page.goto(f"chrome-extension://{self.ext_id}/options/options.html")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        return page


@pytest.fixture(scope="module")
def home(module_home):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAPTCHALENS_TRAIN_ARGS", TINY)  # the browser passes its environment to the host
        yield module_home


@pytest.fixture(scope="module")
def playwright(home):
    """Started after $CAPTCHALENS_TRAIN_ARGS is set: the browsers it launches (and the native hosts
    they start) get the environment of its driver process."""
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright, home, tmp_path_factory):
    from support_host import extension_with_native_granted

    ext_dir = extension_with_native_granted(tmp_path_factory.mktemp("ext") / "extension")
    profile = tmp_path_factory.mktemp("chromium") / "profile"
    profile.mkdir()
    sb.captchalens_cli("native", "install", "--profile-dir", str(profile))
    b = Browser(playwright, profile, ext_dir)
    yield b
    b.ctx.close()


def host_starts(home: Path) -> int:
    """How many times the browser started the native host (its log says so at each start)."""
    log = home / "native-host.log"
    return log.read_text().count("started by chrome-extension://") if log.exists() else 0


def site_row(options, site: str):
    return options.locator(f'#sites tbody tr[data-site="{site}"]')


def solve_here(b: Browser, server, page, path: str, src: str) -> dict:
    page.goto(server.url(path))
    sb.click_toolbar_button(b.ctx, page, b.ext_id)
    return sb.solve_from_menu(b.sw, page, server.url(src))


def options_on_host(b: Browser, url: str, token: str):
    """The options page set to a `captchalens serve` host over HTTP with its token pasted (what
    `captchalens token` prints), as a user does."""
    options = b.options()
    options.fill("#hostUrl", url)
    options.locator("#hostUrl").dispatch_event("change")
    sb.wait_storage(b.sw, {"hostUrl": url})
    options.fill("#token", token)
    options.locator("#token").dispatch_event("change")
    expect(options.locator("#hostStatus")).to_have_text("Token saved.")
    return options


def scheme_routes(captchas) -> dict:
    routes = {}
    for i, (png, _, _) in enumerate(captchas):
        body = f"<img id='cap' src='/c{i}.png' alt='captcha'><input id='answer' name='captcha'>"
        routes[f"/p{i}"] = sb.html(sb.page_html(f"shop {i}", body))
        routes[f"/c{i}.png"] = sb.png(png)
    return routes


def test_corrections_then_train_from_the_options_page_then_the_site_is_read_in_the_page(browser, home):
    b = browser
    options = b.options()
    options.select_option("#engine", "host")  # the local host reads every captcha until the site has a model
    options.fill("#hostUrl", sb.closed_port_url())  # nothing answers HTTP
    options.locator("#hostUrl").dispatch_event("change")
    expect(options.locator("#nativeStatus")).to_contain_text("On: the native host answers",
                                                             timeout=STARTUP_S * 1000)
    options.close()

    # Captchas of a scheme the shipped model cannot read, solved through native messaging and
    # corrected in the note, one correction per solve.
    captchas = [scheme_captcha(21, i) for i in range(MIN_SAMPLES + 2)]
    with sb.serving(scheme_routes(captchas)) as server:
        page = b.ctx.new_page()
        for i, (_, label, _) in enumerate(captchas[:MIN_SAMPLES]):
            result = solve_here(b, server, page, f"/p{i}", f"/c{i}.png")
            assert result["ok"] and result["source"] == "host" and result["model"] != SITE, result  # a shipped reader
            note = sb.note_seen(sb.note_frame(page, result["solveId"]))
            note.locator("[data-cl=correct-input]").fill(label)
            note.locator("[data-cl=correct-send]").click()
            expect(note.locator("[data-cl=correct-status]")).to_contain_text("saved for retraining")
        assert len(list((home / "samples" / SITE).glob("*.png"))) == MIN_SAMPLES

        # The options page: the site's corrections, and Train.
        options = b.options()
        row = site_row(options, SITE)
        expect(row.locator("td[data-cl=count]")).to_have_text(str(MIN_SAMPLES), timeout=STARTUP_S * 1000)
        expect(row.locator("[data-cl=installed]")).to_have_text("none yet")
        train = row.locator("button[data-cl=train]")
        expect(train).to_have_text("Train a model for this site")
        expect(train).to_be_enabled()
        t0 = time.monotonic()
        train.click()
        expect(options.locator("#trainJob")).to_be_visible()
        expect(options.locator("#trainCancel")).to_be_visible()
        expect(train).to_be_disabled()  # one job at a time
        progress = options.locator("#trainProgress")
        expect(progress).to_contain_text(re.compile(r"Training 127\.0\.0\.1: epoch \d of 2, validation accuracy"),
                                         timeout=JOB_S * 1000)
        result_line = options.locator("#trainResult")
        expect(result_line).to_contain_text("It is installed in your browser", timeout=JOB_S * 1000)
        took = time.monotonic() - t0
        expect(result_line).to_contain_text(f"Done: {SITE}'s model (version 1)")
        expect(options.locator("#trainJob")).to_be_hidden()
        expect(row.locator("[data-cl=installed]")).to_have_text(f"{SITE}, version 1, in your browser")
        expect(row.locator("button[data-cl=train]")).to_have_text("Retrain (goes on from its model)")
        options.close()

        record = sb.get_storage(b.sw, "siteModels")["siteModels"][SITE]
        assert record["site"] == SITE and record["url"] == f"indexeddb://captchalens-site-{SITE}"
        assert record["meta"]["charset"] == "12abc" and record["version"] == 1
        host_meta = json.loads((home / "models" / SITE / "captchalens.json").read_text())
        assert record["meta"] == host_meta  # the contract it was trained with, as the host keeps it
        job = json.loads((home / "jobs" / record["job"] / "job.json").read_text())
        assert job["phase"] == "done" and job["base"] is None and job["samples"] == MIN_SAMPLES
        print(f"\ntrain job: {job['elapsed_s']} s in the host ({job['samples']} corrections, {job['epochs']} "
              f"epochs), {took:.1f} s from the click to installed in the browser")

        # No host any more: the native host cannot be started, nothing answers HTTP.
        sb.captchalens_cli("native", "uninstall", "--profile-dir", str(b.profile))
        sb.stop_service_worker(b.ctx, b.ext_id)  # its port goes with it: the host exits
        from captchalens.solver import Solver

        model = Solver(home / "models" / SITE)  # the very model, to know its answers
        starts = host_starts(home)
        for restarted in (False, True):
            if restarted:
                b.restart()
                page = b.ctx.new_page()
            i = MIN_SAMPLES + int(restarted)
            png, label, rgba = captchas[i]
            result = solve_here(b, server, page, f"/p{i}", f"/c{i}.png")
            assert result["ok"] and result["source"] == "browser" and result["model"] == SITE, result
            assert result["text"] == model.solve_pixels([rgba])[0].text
            expect(page.locator("#answer")).to_have_value(result["text"])
        assert host_starts(home) == starts  # no host call: not started again


def test_without_the_host_train_is_disabled_and_a_model_gone_from_the_browser_says_so(browser, home):
    """Runs after the test above: the site has a model in the browser, and the host is uninstalled."""
    b = browser
    options = b.options()
    expect(options.locator("#trainHost")).to_contain_text(
        "Training a site's model needs the local host: The CaptchaLens native host is not installed for this "
        "browser: run `captchalens native install`, then restart the browser.", timeout=STARTUP_S * 1000)
    row = site_row(options, SITE)
    expect(row.locator("td[data-cl=count]")).to_have_text("?")
    expect(row.locator("button[data-cl=train]")).to_be_disabled()
    expect(row.locator("[data-cl=why]")).to_have_text("The local host cannot be reached (see below the table).")
    expect(row.locator("[data-cl=installed]")).to_have_text(f"{SITE}, version 1, in your browser")
    # The user clears the extension's site data (IndexedDB): the record stays, the model is gone.
    cdp = b.ctx.new_cdp_session(options)
    try:
        cdp.send("Storage.clearDataForOrigin", {"origin": f"chrome-extension://{b.ext_id}",
                                                "storageTypes": "indexeddb"})
    finally:
        cdp.detach()
    options.close()
    sb.stop_service_worker(b.ctx, b.ext_id)  # a fresh worker, which has not loaded the model yet
    png, _, _ = scheme_captcha(21, 0)
    with sb.serving(scheme_routes([(png, "", None)])) as server:
        page = b.ctx.new_page()
        result = solve_here(b, server, page, "/p0", "/c0.png")
    assert not result["ok"] and result["code"] == "model_missing", result
    assert result["message"].startswith(f"The model trained for {SITE} ('{SITE}') is not installed in this "
                                        "browser any more"), result
    assert "train it again from the CaptchaLens options" in result["message"]
    assert "Fallback: " in result["message"]  # the host was asked (it has the model) and could not answer


def add_samples(home: Path, site: str, n: int, seed: int = 3) -> None:
    """n corrections of the scheme for a site, as the host keeps them (its samples folder)."""
    folder = home / "samples" / site
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im, text = draw(SCHEME, seed, i)
        im.save(folder / f"{text}_{i}.png")


def test_too_few_corrections_a_running_job_cancel_and_a_failed_job_each_say_so(browser, home):
    b = browser
    sb.captchalens_cli("native", "install", "--profile-dir", str(b.profile))
    add_samples(home, "few.example", 3)
    add_samples(home, "shop.example", 30, seed=5)
    broken = home / "samples" / "broken.example"
    broken.mkdir(parents=True)
    for i in range(12):  # image names, but not images: the trainer reads none of them
        (broken / f"ab1{i % 10}_{i}.png").write_bytes(b"not a png at all")

    first, second = b.options(), b.options()
    for options in (first, second):
        row = site_row(options, "few.example")
        expect(row.locator("td[data-cl=count]")).to_have_text("3", timeout=STARTUP_S * 1000)
        expect(row.locator("button[data-cl=train]")).to_be_disabled()
        expect(row.locator("[data-cl=why]")).to_have_text(
            "3 of 10 corrections: correct 7 more of its captchas first (a few hundred train a better model).")
        expect(site_row(options, "broken.example").locator("button[data-cl=train]")).to_be_enabled()
    # Sites the extension does not remember (the host's corrections only) are listed too.
    expect(site_row(first, "shop.example").locator("td.hint")).to_have_text("not remembered here")

    site_row(first, "shop.example").locator("button[data-cl=train]").click()
    expect(first.locator("#trainProgress")).to_contain_text("shop.example", timeout=30000)
    expect(site_row(first, "broken.example").locator("[data-cl=why]")).to_have_text(
        "A train job is running for shop.example: one at a time.")
    # The second page was drawn before the job started: its button is still enabled, the host refuses.
    site_row(second, "broken.example").locator("button[data-cl=train]").click()
    expect(second.locator("#trainResult")).to_contain_text(
        re.compile(r"Not started: The local host refused: a train job is already running: \S+ for "
                   r"'shop\.example' \(\w+\); wait for it or cancel it first"))
    second.close()
    first.locator("#trainCancel").click()
    expect(first.locator("#trainResult")).to_have_text(
        "Cancelled: nothing was installed; shop.example is solved as before.", timeout=60000)
    assert not (home / "models" / "shop.example").exists()

    site_row(first, "broken.example").locator("button[data-cl=train]").click()
    result_line = first.locator("#trainResult")
    expect(result_line).to_contain_text("The train job for broken.example failed, and nothing was installed: "
                                        f"training failed: nothing usable in {broken}", timeout=JOB_S * 1000)
    text = result_line.text_content()
    log = Path(text.split("Its log is kept: ", 1)[1])
    assert log.parent.parent == home / "jobs" and f"nothing usable in {broken}" in log.read_text()
    stored = sb.get_storage(b.sw, "siteModels")["siteModels"]
    assert set(stored) == {SITE}  # nothing new installed
    first.close()


def test_retrain_goes_on_from_the_previous_version_and_installs_it_again(browser, home):
    """Runs after the tests above: the host is installed again, the site's model is in the host but
    gone from the browser's IndexedDB; a retrain continues from it and is read in the page again."""
    b = browser
    options = b.options()
    row = site_row(options, SITE)
    train = row.locator("button[data-cl=train]")
    expect(train).to_have_text("Retrain (goes on from its model)", timeout=STARTUP_S * 1000)
    expect(train).to_be_enabled()
    t0 = time.monotonic()
    train.click()
    expect(options.locator("#trainProgress")).to_contain_text(f"{SITE}, going on from its previous model")
    expect(options.locator("#trainResult")).to_contain_text(
        f"Done: {SITE}'s model (version 2, gone on from the previous one)", timeout=JOB_S * 1000)
    # beside its own figure, what the version it went on from reads of the same held-back corrections
    meta = json.loads((home / "models" / SITE / "captchalens.json").read_text())
    expect(options.locator("#trainResult")).to_contain_text(
        f"(the previous version: {100 * meta['metrics']['base_val_captcha_acc']:.1f}%)")
    took = time.monotonic() - t0
    expect(row.locator("[data-cl=installed]")).to_have_text(f"{SITE}, version 2, in your browser")
    options.close()
    meta = json.loads((home / "models" / SITE / "captchalens.json").read_text())
    assert meta["trained_on"]["init"]["base"] == str(home / "models" / SITE)
    assert meta["trained_on"]["init"]["mode"] == "finetune"
    record = sb.get_storage(b.sw, "siteModels")["siteModels"][SITE]
    assert record["version"] == 2 and record["meta"] == meta and record["base"] == str(home / "models" / SITE)
    print(f"\nretrain: {took:.1f} s from the click to installed in the browser")

    from captchalens.solver import Solver

    png, _, rgba = scheme_captcha(21, 0)
    with sb.serving(scheme_routes([(png, "", None)])) as server:
        page = b.ctx.new_page()
        result = solve_here(b, server, page, "/p0", "/c0.png")
    assert result["ok"] and result["source"] == "browser" and result["model"] == SITE, result  # engine "host"
    assert result["text"] == Solver(home / "models" / SITE).solve_pixels([rgba])[0].text


def test_over_http_with_native_messaging_off_the_same_page_trains_and_installs(playwright, tmp_path, monkeypatch):
    """The extension as shipped (native messaging not turned on) and a `captchalens serve` host whose
    token the user pasted: the table, Train and the install go over HTTP (model_files in chunks);
    the options page is closed while the job runs, and the background's alarm installs the model."""
    from captchalens.paths import default_model_dir

    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CAPTCHALENS_TRAIN_ARGS", TINY)
    add_samples(tmp_path / "home", "shop.example", 12)
    add_samples(tmp_path / "home", "few.example", 3)
    token = "train-e2e-http-token-" + "x" * 32
    with sb.local_host(default_model_dir(), sb.EXTENSION_DIR, TOKEN=token) as url:
        b = Browser(playwright, tmp_path / "profile", sb.EXTENSION_DIR)
        try:
            options = options_on_host(b, url, token)
            expect(options.locator("#nativeStatus")).to_have_text("Off: solving uses the local host over HTTP.")
            options.reload()
            expect(site_row(options, "few.example").locator("button[data-cl=train]")).to_be_disabled()
            row = site_row(options, "shop.example")
            expect(row.locator("td[data-cl=count]")).to_have_text("12")
            row.locator("button[data-cl=train]").click()
            expect(options.locator("#trainJob")).to_be_visible()
            options.close()  # nobody polls the job now but the background's alarm, which installs it
            record = b.sw.evaluate("""(timeoutMs) => new Promise((resolve) => {
                const timer = setTimeout(() => resolve(null), timeoutMs);
                async function check() {
                    const m = ((await chrome.storage.local.get('siteModels')).siteModels || {})['shop.example'];
                    if (m) { clearTimeout(timer); chrome.storage.onChanged.removeListener(check); resolve(m); }
                }
                chrome.storage.onChanged.addListener(check);
                check();
            })""", JOB_S * 1000)
            assert record and record["version"] == 1, sb.get_storage(b.sw)
            options = b.options()
            expect(site_row(options, "shop.example").locator("[data-cl=installed]")).to_have_text(
                "shop.example, version 1, in your browser", timeout=30000)
            assert record["bytes"] == sum(f.stat().st_size for f in (tmp_path / "home" / "tfjs" / "shop.example").iterdir())
        finally:
            b.ctx.close()
    assert not (tmp_path / "home" / "native-host.log").exists()  # the native host never started


def test_a_first_model_no_better_than_the_general_reader_is_kept_back_and_the_page_says_why(
        playwright, tmp_path, monkeypatch):
    """Corrections of captchas the general reader reads already: Train fine-tunes it, the new model
    reads the held-back ones no better, and the options page says so with both figures; nothing
    is installed in the host or the browser, and the site stays read as before."""
    from test_host_jobs import clean_samples

    from captchalens.paths import default_model_dir

    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CAPTCHALENS_TRAIN_ARGS", "--epochs 1 --lr 0.5")  # see test_host_jobs.py
    clean_samples(tmp_path / "home", "clean.example", 30)
    token = "train-e2e-kept-token-" + "x" * 32
    with sb.local_host(default_model_dir(), sb.EXTENSION_DIR, TOKEN=token) as url:
        b = Browser(playwright, tmp_path / "profile", sb.EXTENSION_DIR)
        try:
            options = options_on_host(b, url, token)
            options.reload()
            row = site_row(options, "clean.example")
            expect(row.locator("td[data-cl=count]")).to_have_text("30")
            row.locator("button[data-cl=train]").click()
            result_line = options.locator("#trainResult")
            expect(result_line).to_contain_text("Kept the general reader for clean.example: of the ",
                                                timeout=JOB_S * 1000)
            text = result_line.inner_text()
            said = re.search(r"of the (\d+) corrections held back from training, the new model \(trained on 30\) "
                             r"read (\d+) \(([0-9.]+)% of the characters wrong\) and the general reader (\d+) "
                             r"\(0\.0% of the characters wrong\)", text)
            assert said and said.group(1) == said.group(4), text  # the general reader read them all
            assert "Nothing was installed and clean.example is read as before" in text
            expect(row.locator("[data-cl=installed]")).to_have_text("none yet")
            expect(row.locator("button[data-cl=train]")).to_have_text("Train a model for this site")
            assert "clean.example" not in (sb.get_storage(b.sw, "siteModels").get("siteModels") or {})
            assert not (tmp_path / "home" / "models" / "clean.example").exists()
        finally:
            b.ctx.close()


@pytest.fixture(params=["http", "native"])
def start_job(request, tmp_path, monkeypatch, random_model):
    """train_start through one front door: (call(data) -> (status, body), the host's home)."""
    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    if request.param == "http":
        from support_host import TOKEN_HEADER, extension_id, loopback_client

        from captchalens.native_host import create_app

        token = "train-e2e-token-" + "x" * 32
        client = loopback_client(create_app({"PORT": 8765, "MODEL_DIRS": [str(random_model)], "TOKEN": token,
                                             "EXTENSION_ID": extension_id()}))

        def call(data):
            r = client.post("/train", json=data, headers={TOKEN_HEADER: token})
            return r.status_code, r.json if r.status_code < 300 else r.json["error"]

        yield call, tmp_path / "home"
        return
    from support_host import NativeProcess

    from captchalens.native_host import install

    (tmp_path / "profile").mkdir()
    install.install([tmp_path / "profile"], [str(random_model)])
    proc = NativeProcess(tmp_path / "profile" / "NativeMessagingHosts" / "io.captchalens.host.json")

    def call(data):
        frame = proc.call("train_start", data)
        return (200, frame["result"]) if frame["ok"] else (frame["status"], frame["error"])

    try:
        yield call, tmp_path / "home"
    finally:
        assert proc.close() == 0, proc.output()


def test_a_retrain_request_that_does_not_match_the_hosts_model_is_refused(start_job):
    """The request says whether it goes on from the site's model; the host refuses a mismatch
    (the page showed an older state) instead of training from another version."""
    call, home = start_job
    add_samples(home, "shop.example", 12)
    assert call({"site": "shop.example", "from_previous": True}) == (
        409, "site 'shop.example' has no model in the host to go on from any more: reload the Sites list and "
             "train it again")
    assert call({"site": "shop.example", "from_previous": "yes"}) == (400, "'from_previous' must be true or false")
    (home / "models" / "shop.example").mkdir(parents=True)
    (home / "models" / "shop.example" / "captchalens.json").write_text("{}")
    status, body = call({"site": "shop.example", "from_previous": False})
    assert status == 409 and "has a model in the host now" in body
    assert not (home / "jobs").exists()  # no job was started


def test_the_sample_minimum_is_read_safely_by_requests_at_once():
    """Two options pages asked for `sites` at once: CPython 3.11's ast.parse on two threads failed
    with "SystemError: AST constructor recursion depth mismatch". The minimum is parsed once, locked."""
    import threading

    from captchalens.native_host import jobs

    jobs._MIN_IMAGES.clear()
    start, got = threading.Barrier(8), []

    def ask():
        start.wait()
        got.append(jobs.min_images())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [MIN_SAMPLES] * 8


def test_a_trained_model_that_does_not_load_in_the_browser_is_not_installed(browser, home):
    """Runs last in the browser's tests: the latest job is one whose TF.js files in the host were
    damaged after it finished (model.json no longer a layers model). The options page fetches them,
    the engine refuses them, nothing is stored, and the page says why."""
    import shutil

    b = browser
    job_id = "99991231-000000-abcdef"  # later than any real job: train_status "latest" answers it
    tfjs = home / "tfjs" / "damaged.example"
    shutil.copytree(home / "tfjs" / SITE, tfjs)
    meta = json.loads((tfjs / "captchalens.json").read_text())
    (tfjs / "captchalens.json").write_text(json.dumps({**meta, "name": "damaged.example"}))
    (tfjs / "model.json").write_text('{"format": "layers-model"}')
    (home / "jobs" / job_id).mkdir(parents=True)
    (home / "jobs" / job_id / "job.json").write_text(json.dumps({
        "id": job_id, "site": "damaged.example", "model": "damaged.example", "samples": 12, "phase": "done",
        "elapsed_s": 20.0, "result": {"model": "damaged.example"}}))
    sb.stop_service_worker(b.ctx, b.ext_id)  # a new worker starts a new host, which reads the jobs on disk
    options = b.options()
    expect(options.locator("#trainResult")).to_have_text(
        "The model was trained, but it was not installed in your browser: model 'damaged.example' failed to "
        "load: model.json is not a TF.js layers model (no modelTopology/weightsManifest). The site is solved "
        "as before.", timeout=STARTUP_S * 1000)
    options.close()
    assert "damaged.example" not in sb.get_storage(b.sw, "siteModels")["siteModels"]
