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
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

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


def launch(playwright, user_data_dir: str | os.PathLike, ext_dir: Path = EXTENSION_DIR, extra_args=()):
    """Chromium with the unpacked extension, headless, in a fresh profile."""
    args = CHROMIUM_FLAGS + [f"--disable-extensions-except={ext_dir}", f"--load-extension={ext_dir}",
                             "--enable-unsafe-extension-debugging", *extra_args]
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=CHROMIUM, headless=True, args=args,
        viewport={"width": 1000, "height": 700}, device_scale_factor=1)


def service_worker(ctx, ext_id: str, timeout_ms: float = 15000):
    """The extension's service worker (waits for it to start)."""
    url = f"chrome-extension://{ext_id}/{SW_PATH}"
    for w in ctx.service_workers:
        if w.url == url:
            return w
    return ctx.wait_for_event("serviceworker", predicate=lambda w: w.url == url, timeout=timeout_ms)


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


def click_toolbar_button(ctx, page, ext_id: str) -> None:
    """Click the extension's toolbar button on this page's tab: opens the popup and
    grants activeTab for the tab, as a user's click does."""
    page.bring_to_front()
    target = tab_target_id(ctx, page)
    cdp = ctx.browser.new_browser_cdp_session()
    try:
        cdp.send("Extensions.triggerAction", {"id": ext_id, "targetId": target})
    finally:
        cdp.detach()


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


def solve_from_menu(sw, page, src_url: str | None = None, frame_id: int = 0) -> dict:
    """Call the context menu's own handler as Chromium would for a right-click on src_url."""
    tab = tab_of(sw, page)
    info = {"menuItemId": "solve-captcha-image" if src_url else "solve-captcha-page",
            "frameId": frame_id, "pageUrl": page.url, "editable": False}
    if src_url:
        info.update(srcUrl=src_url, mediaType="image")
    return sw.evaluate("([info, tab]) => self.solveFromMenu(info, tab)", [info, tab])


def set_storage(sw, values: dict) -> None:
    sw.evaluate("(v) => chrome.storage.local.set(v)", values)


def get_storage(sw, keys=None) -> dict:
    return sw.evaluate("(k) => chrome.storage.local.get(k)", keys)


def reset_storage(sw) -> None:
    sw.evaluate("() => chrome.storage.local.clear()")


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


# ---- a stand-in for the local host (API of native_host, see INTERFACES.md) ---------------
class FakeHost:
    """The local host's HTTP API with answers chosen by the test; CORS for the extension."""

    TOKEN = "test-token-123"

    def __init__(self, ext_id: str, answer: tuple[str, float] = ("h0st", 0.99)):
        self.ext_origin = f"chrome-extension://{ext_id}"
        self.answer = answer
        self.samples: list[dict] = []
        self.server = Server({"/health": self._health, "/models": self._models, "/solve": self._solve,
                              "/samples": self._samples, "/pair": self._pair})

    def _json(self, req: Request, status: int, obj) -> tuple[int, dict, bytes]:
        headers = {"Content-Type": "application/json"}
        if req.headers.get("origin") == self.ext_origin:
            headers.update({"Access-Control-Allow-Origin": self.ext_origin,
                            "Access-Control-Allow-Headers": "Content-Type, X-CaptchaLens-Token",
                            "Access-Control-Allow-Methods": "GET, POST", "Vary": "Origin"})
        return status, headers, json.dumps(obj).encode()

    def _preflight(self, req: Request):
        return self._json(req, 204, {}) if req.method == "OPTIONS" else None

    def _health(self, req):
        return self._preflight(req) or self._json(req, 200, {"ok": True, "version": "test", "api": 1,
                                                             "models": ["default"]})

    def _models(self, req):
        return self._preflight(req) or self._json(req, 200, {"default": "default", "models": []})

    def _solve(self, req):
        if req.method == "OPTIONS":
            return self._json(req, 204, {})
        if not req.body:
            return self._json(req, 400, {"error": "no image"})
        return self._json(req, 200, {"text": self.answer[0], "confidence": self.answer[1],
                                     "model": "default", "ms": 1.0})

    def _samples(self, req):
        if req.method == "OPTIONS":
            return self._json(req, 204, {})
        if req.headers.get("x-captchalens-token") != self.TOKEN:
            return self._json(req, 403, {"error": "missing or wrong token"})
        sample = json.loads(req.body)
        self.samples.append(sample)
        return self._json(req, 201, {"saved": f"{sample['text']}.png", "count": len(self.samples)})

    def _pair(self, req):
        if req.method == "OPTIONS":
            return self._json(req, 204, {})
        if req.headers.get("origin") != self.ext_origin:
            return self._json(req, 403, {"error": "pairing is only for the CaptchaLens extension"})
        return self._json(req, 200, {"token": self.TOKEN})

    def start(self) -> "FakeHost":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.origin
