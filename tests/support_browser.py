"""Helpers for the browser tests and the browser benchmark: Chromium with the
unpacked extension (Playwright), small local web servers, captcha images.

The extension may read a page only after a user gesture (activeTab). Tests get
that grant the way a user does, by clicking the toolbar button: the DevTools
protocol's Extensions.triggerAction (needs --enable-unsafe-extension-debugging,
which Playwright's pipe connection allows). Then they call the very function
the context menu calls, `self.solveFromMenu(info, tab)`, in the service worker.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import time
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from captchalens.files import sha256_file

ROOT = Path(__file__).resolve().parent.parent
EXTENSION_DIR = Path(os.environ.get("CAPTCHALENS_EXTENSION_DIR") or ROOT / "extension")
CHROMIUM = os.environ.get("CAPTCHALENS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
SW_PATH = "background/service_worker.js"
CAPTCHA_SIZE = (160, 60)  # the size the tests draw captchas at (WxH)


# ---- the extension ---------------------------------------------------------------
def extension_id(ext_dir: Path = EXTENSION_DIR) -> str:
    """Chromium's ID for the manifest "key": sha256 of the DER key, first 32 hex digits as a-p."""
    key = json.loads((ext_dir / "manifest.json").read_text())["key"]
    digest = hashlib.sha256(base64.b64decode(key)).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def missing_parts(ext_dir: Path = EXTENSION_DIR) -> list[str]:
    """Files the extension needs that other steps produce (vendor step, converter)."""
    need = ["vendor/tf.es2017.min.js", "vendor/tf-backend-wasm.es2017.min.js", "vendor/tfjs-backend-wasm.wasm",
            "lib/engine.js", "models/index.json"]
    return [p for p in need if not (ext_dir / p).is_file()]


def niced_chromium(folder: Path) -> str:
    """A wrapper that runs Chromium at lower priority (the machine is shared); exec keeps the pid."""
    path = Path(folder) / "chromium-nice"
    path.write_text(f'#!/bin/sh\nexec nice -n 10 "{CHROMIUM}" "$@"\n')
    path.chmod(0o755)
    return str(path)


def launch(playwright, user_data_dir: str | os.PathLike, ext_dir: Path = EXTENSION_DIR, extra_args=()):
    """Chromium with the unpacked extension, headless, in a fresh profile (user_data_dir)."""
    user_data_dir = Path(user_data_dir)
    user_data_dir.mkdir(parents=True, exist_ok=True)
    wrapper_dir = user_data_dir.parent / f"{user_data_dir.name}-bin"
    wrapper_dir.mkdir(exist_ok=True)
    args = CHROMIUM_FLAGS + [f"--disable-extensions-except={ext_dir}", f"--load-extension={ext_dir}",
                             "--enable-unsafe-extension-debugging", *extra_args]
    if any(a.startswith("--force-device-scale-factor") for a in extra_args):
        screen = {"no_viewport": True}  # a real scale factor: Playwright must not emulate one
    else:
        screen = {"viewport": {"width": 1000, "height": 700}, "device_scale_factor": 1}
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=niced_chromium(wrapper_dir), headless=True, args=args, **screen)


def service_worker(ctx, ext_id: str, timeout_ms: float = 15000):
    """The extension's service worker (waits for it to start)."""
    url = f"chrome-extension://{ext_id}/{SW_PATH}"
    for w in ctx.service_workers:
        if w.url == url:
            return w
    try:
        return ctx.wait_for_event("serviceworker", predicate=lambda w: w.url == url, timeout=timeout_ms)
    except Exception as e:
        raise RuntimeError(f"the extension's service worker did not start: the extension did not load "
                           f"(check manifest.json and that every file it names exists); {e}") from None


def stop_service_worker(ctx, ext_id: str, attempts: int = 5) -> None:
    """Stop the extension's service worker, as Chromium does to an idle one (DevTools
    ServiceWorker.stopAllWorkers from an extension page), and wait until it is gone. A message
    still on its way (say, from the popup) may start it again at once: then stop it again."""
    page = ctx.new_page()
    try:
        page.goto(f"chrome-extension://{ext_id}/options/options.html")
        page.wait_for_selector("body[data-ready=true]")  # its own messages to the worker are answered
        for _ in range(attempts):
            cdp = ctx.new_cdp_session(page)
            try:
                cdp.send("ServiceWorker.enable")
                cdp.send("ServiceWorker.stopAllWorkers")
            finally:
                cdp.detach()
            running = page.evaluate("""() => new Promise((resolve) => {
                const t0 = Date.now();
                const check = async () => {
                    const n = (await chrome.runtime.getContexts({contextTypes: ['BACKGROUND']})).length;
                    if (n === 0 || Date.now() - t0 > 2000) { resolve(n); } else { setTimeout(check, 50); }
                };
                check();
            })""")
            if not running:
                return
        raise RuntimeError("the service worker did not stop")
    finally:
        page.close()


def wake_service_worker(ctx, ext_id: str):
    """Start the stopped service worker the way a user does (the options page asks it for
    its status) and return it."""
    page = ctx.new_page()
    try:
        page.goto(f"chrome-extension://{ext_id}/options/options.html")
        page.wait_for_selector("body[data-ready=true]")
    finally:
        page.close()
    return service_worker(ctx, ext_id)


def tab_target_id(ctx, page) -> str:
    """The DevTools "tab" target holding this page (Extensions.triggerAction needs it)."""
    cdp = ctx.browser.new_browser_cdp_session()
    try:
        pages = cdp.send("Target.getTargets", {"filter": [{"type": "page"}]})["targetInfos"]
        tabs = cdp.send("Target.getTargets", {"filter": [{"type": "tab"}]})["targetInfos"]
    finally:
        cdp.detach()
    page_cdp = ctx.new_cdp_session(page)
    try:
        me = page_cdp.send("Target.getTargetInfo")["targetInfo"]["targetId"]
    finally:
        page_cdp.detach()
    info = next(t for t in pages if t["targetId"] == me)
    candidates = [t for t in tabs if t["url"] == info["url"]]
    if len(candidates) != 1:
        raise RuntimeError(f"cannot tell which tab holds {info['url']}: {len(candidates)} tabs show it")
    return candidates[0]["targetId"]


def click_toolbar_button(ctx, page, ext_id: str, attempts: int = 3) -> None:
    """Click the extension's toolbar button on this page's tab: opens the popup and grants
    activeTab for the tab, as a user's click does. Waits until the grant shows (the extension
    sees the tab's URL); a click that only closed a popup still open is made again."""
    page.bring_to_front()
    target = tab_target_id(ctx, page)
    for _ in range(attempts):
        cdp = ctx.browser.new_browser_cdp_session()
        try:
            cdp.send("Extensions.triggerAction", {"id": ext_id, "targetId": target})
        finally:
            cdp.detach()
        if service_worker(ctx, ext_id).evaluate("""(url) => new Promise((resolve) => {
                const t0 = Date.now();
                const check = async () => {
                    const seen = (await chrome.tabs.query({})).some((t) => t.url === url);
                    if (seen || Date.now() - t0 > 2000) { resolve(seen); } else { setTimeout(check, 50); }
                };
                check();
            })""", page.url):
            return
    raise RuntimeError(f"clicking the toolbar button did not grant access to {page.url}")


def grant_site_access(ctx, ext_id: str, pattern: str) -> None:
    """Give the extension access to a site on Chromium's own Extensions page, as a user can there
    (chrome://extensions calls chrome.developerPrivate.addHostPermission).

    Why: chrome.permissions.request's prompt cannot be answered in headless Chromium. It opens (the
    request stays pending) in a window that nothing reaches: no DevTools command answers it
    (Browser.grantPermissions / setPermission are for web permissions, the Extensions domain has none),
    and --apps-gallery-install-auto-confirm-for-tests no longer applies to it. Chromium does not
    prompt again for hosts the user has already granted, so after this the extension's real request
    (from the options page's click) resolves true at once, and the rest of the path is the user's."""
    page = ctx.new_page()
    try:
        page.goto(f"chrome://extensions/?id={ext_id}")
        error = page.evaluate("""([id, host]) => chrome.developerPrivate.addHostPermission(id, host)
            .then(() => '', (e) => e.message || String(e))""", [ext_id, pattern])
    finally:
        page.close()
    if error:
        raise RuntimeError(f"chrome://extensions did not grant {pattern}: {error}")


def tab_of(sw, page) -> dict:
    """{id, windowId} of the tab showing page.url (visible to the extension once activeTab is granted)."""
    tab = sw.evaluate("""async (url) => {
        const tabs = await chrome.tabs.query({});
        const t = tabs.find((t) => t.url === url);
        return t ? {id: t.id, windowId: t.windowId, active: t.active} : null;
    }""", page.url)
    if tab is None:
        raise RuntimeError(f"the extension cannot see the tab of {page.url}: was activeTab granted?")
    return tab


def solve_from_menu(sw, page, src_url: str | None = None, frame_id: int = 0, frame_url: str | None = None) -> dict:
    """Call the context menu's own handler as Chromium would for a right-click on src_url
    (in the frame frame_id, whose address Chromium gives as frameUrl)."""
    tab = tab_of(sw, page)
    info = {"menuItemId": "solve-captcha-image" if src_url else "solve-captcha-page",
            "frameId": frame_id, "pageUrl": page.url, "editable": False}
    if frame_url:
        info["frameUrl"] = frame_url
    if src_url:
        info.update(srcUrl=src_url, mediaType="image")
    return sw.evaluate("([info, tab]) => self.solveFromMenu(info, tab)", [info, tab])


NOTE_PAGE = "/note/note.html#"  # the note under a solved captcha: an extension page in an iframe


def note_seen(note, timeout_ms: float = 10000):
    """Wait until the note knows it is on screen and uncovered (IntersectionObserver v2 reports it
    after 100 ms of being seen; later on a busy machine), as it is when a person reads it before
    typing: a Send before that is refused as if the page hid the note."""
    from playwright.sync_api import expect

    expect(note.locator(".box")).to_have_attribute("data-visible", "true", timeout=timeout_ms)
    return note


def new_note_frame(page, before: list, timeout_ms: float = 5000):
    """The note shown after `before` (page.frames then): a failed solve's note has no solve id, and
    the previous note may still be attached when the new one comes."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        frames = [f for f in page.frames if f.url.startswith("chrome-extension://") and NOTE_PAGE in f.url
                  and not f.is_detached() and f not in before]
        if frames:
            return frames[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no new CaptchaLens note in {page.url}")
        page.wait_for_timeout(50)


def note_frame(page, solve_id: str = "", timeout_ms: float = 5000):
    """The CaptchaLens note shown in this page (the newest; the one of solve_id when given). It is an
    iframe in a closed shadow root: Playwright reaches it as a frame, as the user's mouse does."""
    import time

    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        frames = [f for f in page.frames if f.url.startswith("chrome-extension://") and NOTE_PAGE in f.url
                  and solve_id in f.url and not f.is_detached()]
        if frames:
            return frames[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no CaptchaLens note{' for solve ' + solve_id if solve_id else ''} "
                                 f"in {page.url}; frames: {[f.url[:80] for f in page.frames]}")
        page.wait_for_timeout(50)  # the frame is attached and navigated asynchronously


def set_storage(sw, values: dict) -> None:
    sw.evaluate("(v) => chrome.storage.local.set(v)", values)


def get_storage(sw, keys=None) -> dict:
    return sw.evaluate("(k) => chrome.storage.local.get(k)", keys)


def wait_storage(sw, values: dict, timeout_ms: int = 5000) -> None:
    """Wait until chrome.storage.local holds these values (a storage.onChanged listener, not polling)."""
    ok = sw.evaluate("""([want, timeoutMs]) => new Promise((resolve) => {
        const keys = Object.keys(want);
        const same = (s) => keys.every((k) => JSON.stringify(s[k]) === JSON.stringify(want[k]));
        const timer = setTimeout(() => { chrome.storage.onChanged.removeListener(check); resolve(false); }, timeoutMs);
        async function check() {
            if (same(await chrome.storage.local.get(keys))) {
                clearTimeout(timer);
                chrome.storage.onChanged.removeListener(check);
                resolve(true);
            }
        }
        chrome.storage.onChanged.addListener(check);
        check();
    })""", [values, timeout_ms])
    if not ok:
        raise AssertionError(f"storage never held {values}: {get_storage(sw, list(values))}")


def wait_auto_solve_matches(sw, matches: list[str], timeout_ms: int = 5000) -> list:
    """Wait until the registered content scripts are one auto-solve script for exactly `matches`
    (none for []): the worker registers them after the options page has saved, so a check right
    after the storage write races it. Chromium has no event for it: polled every 50 ms."""
    scripts = sw.evaluate("""async ([want, timeoutMs]) => {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
            const scripts = await chrome.scripting.getRegisteredContentScripts();
            const got = JSON.stringify(scripts.map((s) => s.matches));
            if (got === JSON.stringify(want.length ? [want] : []) || Date.now() > deadline) return scripts;
            await new Promise((r) => setTimeout(r, 50));
        }
    }""", [matches, timeout_ms])
    assert [s["matches"] for s in scripts] == ([matches] if matches else []), scripts
    return scripts


def wait_site_memory(sw, site: str, values: dict, timeout_ms: int = 5000) -> None:
    """Wait until the memory of one site (storage "sites"[site]) holds these values (the rest of it,
    such as its solve count and time, may be anything); a storage.onChanged listener, not polling."""
    ok = sw.evaluate("""([site, want, timeoutMs]) => new Promise((resolve) => {
        const same = (m) => Object.keys(want).every((k) => JSON.stringify(m[k]) === JSON.stringify(want[k]));
        const timer = setTimeout(() => { chrome.storage.onChanged.removeListener(check); resolve(false); }, timeoutMs);
        async function check() {
            if (same(((await chrome.storage.local.get('sites')).sites || {})[site] || {})) {
                clearTimeout(timer);
                chrome.storage.onChanged.removeListener(check);
                resolve(true);
            }
        }
        chrome.storage.onChanged.addListener(check);
        check();
    })""", [site, values, timeout_ms])
    if not ok:
        raise AssertionError(f"the memory of {site} never held {values}: {get_storage(sw, 'sites')}")


def reset_storage(sw) -> None:
    """A fresh start between tests: options, memory, tokens, queue, and the session's solves and counts."""
    sw.evaluate("() => Promise.all([chrome.storage.local.clear(), chrome.storage.session.clear()])")


# ---- captchas ----------------------------------------------------------------------
def captcha(seed: int, index: int = 0, size: tuple[int, int] = CAPTCHA_SIZE):
    """A generated captcha: (PNG bytes, label, RGBA uint8 array)."""
    import numpy as np

    from captchalens.training.generate import GenSpec, draw

    spec = GenSpec(width=(size[0], size[0]), height=(size[1], size[1]))
    im, label = draw(spec, seed, index)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue(), label, np.asarray(im.convert("RGBA"), dtype=np.uint8)


@dataclass
class FreshCaptchas:
    """A route serving a new captcha on every request, as sites do; keeps what it served."""

    seed: int
    size: tuple[int, int] = CAPTCHA_SIZE
    served: list = field(default_factory=list)  # (label, RGBA array) per request, in order

    def __call__(self, req: "Request") -> tuple[int, dict, bytes]:
        data, label, rgba = captcha(self.seed, len(self.served), self.size)
        self.served.append((label, rgba))
        return 200, {"Content-Type": "image/png", "Cache-Control": "no-store"}, data

    @property
    def last(self):
        """(label, RGBA) of the captcha served last (the one the page shows)."""
        return self.served[-1]


def fnv1a(data: bytes) -> str:
    """The extension's pixelsHash (FNV-1a 32) of RGBA bytes."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


# ---- local web servers ----------------------------------------------------------------
Route = Callable[["Request"], tuple[int, dict, bytes]]


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict
    body: bytes


@dataclass
class Server:
    """A tiny HTTP server on a random loopback port; routes: path -> handler."""

    routes: dict[str, Route]
    requests: list[Request] = field(default_factory=list)
    host: str = "127.0.0.1"

    def start(self) -> "Server":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                path, _, query = self.path.partition("?")
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                req = Request(self.command, path, query, {k.lower(): v for k, v in self.headers.items()}, body)
                server.requests.append(req)
                route = server.routes.get(path)
                if route is None:
                    status, headers, payload = 404, {"Content-Type": "text/plain"}, b"not found"
                else:
                    status, headers, payload = route(req)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_OPTIONS = _handle

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return self._httpd.server_port

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def hits(self, path: str, method: str = "GET") -> int:
        return sum(1 for r in self.requests if r.path == path and r.method == method)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def serving(routes: dict[str, Route]):
    server = Server(routes).start()
    try:
        yield server
    finally:
        server.stop()


def html(text: str, status: int = 200) -> Route:
    body = text.encode()
    return lambda req: (status, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}, body)


def png(data: bytes, extra: dict | None = None) -> Route:
    headers = {"Content-Type": "image/png", "Cache-Control": "no-store", **(extra or {})}
    return lambda req: (200, headers, data)


def page_html(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>body{{font:14px sans-serif;margin:20px}} img{{display:block}}</style></head>"
            f"<body>{body}</body></html>")


# ---- which Keras model the converted one came from ------------------------------------------
def converted_source_sha(ext_dir: Path = EXTENSION_DIR) -> str | None:
    """sha256 of the Keras file the extension's default model was converted from (the converter
    records it in model.json), or None when there is no converted default model."""
    try:
        index = json.loads((ext_dir / "models" / "index.json").read_text())
        entry = next(m for m in index["models"] if m["name"] == index["default"])
        model_json = json.loads((ext_dir / entry["dir"] / "model.json").read_text())
        return model_json["userDefinedMetadata"]["captchalens"]["source_sha256"]
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return None


def keras_source(ext_dir: Path, candidates: list[Path]) -> Path | None:
    """The candidate Keras model folder whose model.h5 the extension's default model was made from."""
    sha = converted_source_sha(ext_dir)
    for folder in candidates:
        weights = Path(folder) / "model.h5"
        if sha and weights.is_file() and sha256_file(weights) == sha:
            return Path(folder)
    return None


def build_extension_copy(dest: Path, keras_dir: Path) -> Path:
    """extension/ copied to dest with keras_dir converted as its default model (captchalens convert)."""
    import shutil

    from captchalens.converter.core import convert

    shutil.copytree(EXTENSION_DIR, dest, ignore=shutil.ignore_patterns("models", "node"))
    convert(keras_dir, name="default", out=dest / "models", vendor=True, install=False)
    return dest


# ---- the real local host, in this process --------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_host(model_dir: Path, ext_dir: Path, port: int | None = None, **config):
    """The CaptchaLens local host (native_host.create_app) on a loopback port, serving model_dir.
    Set $CAPTCHALENS_HOME first: its token and samples go there. Yields its base URL."""
    from werkzeug.serving import make_server

    from captchalens.native_host import create_app

    port = port or free_port()
    app = create_app({"PORT": port, "MODEL_DIRS": [str(model_dir)], "EXTENSION_MANIFEST": str(ext_dir / "manifest.json"),
                      "RELOAD_INTERVAL": 3600.0, **config})
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def captchalens_cli(*args: str) -> str:
    """What `captchalens ...` prints, run as the user runs it (the venv's console script, this
    process's environment: the same $CAPTCHALENS_HOME as a local_host() under test)."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "captchalens"
    done = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60, env=os.environ)
    if done.returncode != 0:
        raise AssertionError(f"captchalens {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout.strip()


@contextmanager
def silent_port():
    """A loopback port that accepts connections and never answers (a hung host). Yields its URL."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"
