"""Helpers for the local host's tests: captchas and hostile uploads, a loopback test
client, and a real `captchalens serve` process on a free port."""
from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from flask.testing import FlaskClient
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "extension" / "manifest.json"
CAPTCHALENS = Path(sys.executable).parent / "captchalens"
TOKEN_HEADER = "X-CaptchaLens-Token"


# ---- the extension's identity, computed the way Chromium does ----------------
def extension_key() -> str:
    """The manifest's "key", which fixes the extension's ID."""
    return json.loads(MANIFEST.read_text())["key"]


def extension_id() -> str:
    digest = hashlib.sha256(base64.b64decode(extension_key())).hexdigest()[:32]
    return digest.translate(str.maketrans("0123456789abcdef", "abcdefghijklmnop"))


def extension_origin() -> str:
    return f"chrome-extension://{extension_id()}"


# ---- images ---------------------------------------------------------------------
def captcha(index: int, seed: int = 7, size: tuple[int, int] | None = None, fmt: str = "PNG"):
    """(image bytes, label) of a generated captcha."""
    from captchalens.training.generate import GenSpec, draw

    spec = GenSpec() if size is None else GenSpec(width=(size[0], size[0]), height=(size[1], size[1]))
    im, text = draw(spec, seed=seed, index=index)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, fmt)
    return buf.getvalue(), text


def png_header_claiming(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels, with almost no data (a decompression bomb's shape)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def gif_bomb() -> bytes:
    """A tiny GIF whose screen and frame claim 65535 x 65535 pixels."""
    buf = io.BytesIO()
    Image.new("P", (8, 8), 0).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = b"\xff\xff\xff\xff"  # logical screen width, height
    frame = data.index(b"\x2c")  # image descriptor: left, top, width, height
    data[frame + 5:frame + 9] = b"\xff\xff\xff\xff"
    return bytes(data)


def noise_png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def garbage() -> list[tuple[str, bytes, str, int, str]]:
    """Hostile /solve bodies: (id, body, content type, status, words the error must contain)."""
    png, _ = captcha(0)
    return [
        ("empty", b"", "image/png", 400, "empty"),
        ("text-as-png", b"hello, I am text", "image/png", 400, "not a readable image"),
        ("truncated-png", noise_png(160, 60)[:2000], "image/png", 400, "not a readable image"),
        ("huge-dimensions", png_header_claiming(100_000, 100_000), "image/png", 400, "too large|at most"),
        ("gif-bomb", gif_bomb(), "image/gif", 400, "too large|at most"),
        ("no-body", b"", "", 400, "no image"),
        ("plain-text", b"x7kq", "text/plain", 415, "multipart field 'image'"),
        ("broken-json", b'{"image": ', "application/json", 400, "not valid JSON"),
        ("deeply-nested-json", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "not valid JSON"),
        ("json-array", b"[1, 2]", "application/json", 400, "'image' key"),
        ("json-number", json.dumps({"image": 42}).encode(), "application/json", 400, "must be a string"),
        ("json-empty", json.dumps({"image": ""}).encode(), "application/json", 400, "empty"),
        ("bad-base64", json.dumps({"image": "!!not base64!!"}).encode(), "application/json", 400,
         "not valid base64"),
        ("svg-data-url", json.dumps({"image": "data:image/svg+xml,<svg/>"}).encode(), "application/json",
         400, "base64-encoded"),
        ("base64-of-text", json.dumps({"image": b64(b"just words")}).encode(), "application/json", 400,
         "not a readable image"),
        ("json-model-number", json.dumps({"image": b64(png), "model": 3}).encode(), "application/json",
         400, "'model' must be a string"),
        ("multipart-without-image", b"--XX\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nab\r\n"
                                    b"--XX--\r\n", "multipart/form-data; boundary=XX", 400, "no field 'image'"),
    ]


# ---- in-process: Flask's test client, addressed as the browser would -----------
class LoopbackClient(FlaskClient):
    """Requests go to http://127.0.0.1:<PORT> unless told otherwise (the host checks Host)."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("base_url", f"http://127.0.0.1:{self.application.config['PORT']}")
        return super().open(*args, **kwargs)


def loopback_client(app) -> LoopbackClient:
    app.test_client_class = LoopbackClient
    return app.test_client()


# ---- a real `captchalens serve` ----------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:200]!r}>"


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            host: str | None = "default", timeout: float = 30.0, chunked: bool = False) -> Response:
    """One HTTP request with full control of the Host header (None = no Host header at all)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host == "default":
            host = f"127.0.0.1:{port}"
        if host is not None:
            conn.putheader("Host", host)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            step = 64 * 1024
            for i in range(0, len(body or b""), step):
                part = body[i:i + step]
                try:
                    conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    break
            else:
                conn.send(b"0\r\n\r\n")
        else:
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            if body:
                try:
                    conn.send(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server answered early (e.g. 413) and closed; read its answer
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


class HostProcess:
    """`captchalens serve --port P ...` with CAPTCHALENS_HOME = home; ready when /health answers."""

    def __init__(self, home: Path, model_dirs: list[Path], *extra: str, port: int | None = None,
                 env: dict | None = None):
        """env: extra environment (bench/host_bench.py --baseline runs older code via PYTHONPATH)."""
        self.home, self.port = Path(home), port or free_port()
        self.log = self.home.parent / f"serve-{self.port}.log"
        cmd = [str(CAPTCHALENS), "serve", "--port", str(self.port)]
        if env:  # else the host computes the ID from the manifest itself, as it does for users
            cmd += ["--extension-id", extension_id()]
        for m in model_dirs:
            cmd += ["--model", str(m)]
        env = dict(os.environ, CAPTCHALENS_HOME=str(self.home), TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd + list(extra), env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, deadline_s: float = 120.0) -> "HostProcess":
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"captchalens serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if request(self.port, "GET", "/health", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)  # poll interval, bounded by the deadline above
        raise RuntimeError(f"captchalens serve not ready after {deadline_s} s:\n{self.output()}")

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    def call(self, method: str, path: str, body: bytes | None = None, **kw) -> Response:
        return request(self.port, method, path, body, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._out.close()


# ---- crowds and slow clients (tests/test_host_stress.py, bench/host_bench.py) ----------------
def slow_clients(port: int, n: int) -> list[socket.socket]:
    """n connections that each send half a request header and then nothing (slowloris)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(f"POST /solve HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\nX-Sl".encode())
        socks.append(s)
    return socks


def timed(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30.0,
          **kw) -> tuple[float, Response | Exception]:
    """(seconds, answer or the exception) of one request on a new connection."""
    t = time.perf_counter()
    try:
        r = request(port, method, path, body, timeout=timeout, **kw)
    except Exception as e:  # noqa: BLE001 - a timeout is the finding, not a crash
        r = e
    return time.perf_counter() - t, r


def crowd(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """`clients` clients start together, each on its own keep-alive connection, and POST /solve
    captchas one after another for `seconds`. Returns every latency, each client's wait for its
    first answer (which includes waiting for a connection), errors and answers per second."""
    import threading

    gate = threading.Barrier(clients + 1)
    lock = threading.Lock()
    out = {"latencies": [], "first": [], "errors": [], "answers": 0}

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine, first, errors = [], None, []
        gate.wait()
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            try:
                conn.request("POST", "/solve", bodies[(k + i) % len(bodies)],
                             {"Host": f"127.0.0.1:{port}", "Content-Type": "image/png"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                continue
            finally:
                i += 1
            now = time.perf_counter()
            mine.append(now - t)
            if first is None:
                first = now - start
        conn.close()
        with lock:
            out["latencies"] += mine
            out["first"].append(first if first is not None else float("inf"))
            out["errors"] += errors

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    out["wall"] = time.perf_counter() - t0
    out["answers"] = len(out["latencies"])
    return out


def untrained_model(out: Path, name: str = "random") -> Path:
    """A model folder with seeded random weights: the right contract, and answers that differ from
    captcha to captcha (a trained-for-seconds model answers nearly the same for all)."""
    from captchalens._tf import keras
    from captchalens.training.networks import build
    from captchalens.training.train import TrainConfig, make_meta, save_model

    keras.utils.set_random_seed(5)
    meta = make_meta(TrainConfig(name=name))
    model = build("small", meta, width=0.25)
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel * 1e5, bias])  # decisive, input-dependent softmax outputs
    return save_model(model, meta, out)


# ---- the native messaging host, started the way the browser starts it ----------------------
class NativeProcess:
    """Runs a host manifest's `path` with the extension's origin as its argument, as Chromium
    does, and speaks frames over its pipes. stderr goes to a log file beside the manifest."""

    def __init__(self, manifest: Path, env: dict | None = None, cwd: Path | None = None):
        import queue
        import threading

        self.manifest = Path(manifest)
        spec = json.loads(self.manifest.read_text())
        self.log = self.manifest.parent / "native-stderr.log"
        self._err = open(self.log, "wb")
        origin = spec["allowed_origins"][0]
        self.proc = subprocess.Popen([spec["path"], origin], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, env=dict(os.environ, **(env or {})), cwd=cwd,
                                     start_new_session=True)
        self.frames: queue.Queue = queue.Queue()  # every frame read, in order; None at EOF
        self.garbage: list[bytes] = []  # anything on stdout that is not a frame
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        import struct

        out = self.proc.stdout
        while True:
            head = out.read(4)
            if len(head) < 4:
                if head:
                    self.garbage.append(head)
                self.frames.put(None)
                return
            (size,) = struct.unpack("=I", head)
            body = out.read(size)
            try:
                self.frames.put(json.loads(body.decode("utf-8")))
            except ValueError:
                self.garbage.append(head + body)

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: dict) -> None:
        import struct

        body = json.dumps(message).encode("utf-8")
        self.send_raw(struct.pack("=I", len(body)) + body)

    def next_frame(self, timeout: float = 120.0):
        import queue

        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no frame from the native host in {timeout} s:\n{self.output()}") from None

    def call(self, msg_type: str, data: dict | None = None, timeout: float = 120.0) -> dict:
        """One request and its answer (frames are read in order: one request at a time here)."""
        self._next_id += 1
        self.send({"api": 1, "id": self._next_id, "type": msg_type, "data": data or {}})
        frame = self.next_frame(timeout)
        assert frame is not None, f"the native host closed its stdout:\n{self.output()}"
        assert frame["id"] == self._next_id, frame
        return frame

    def output(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.log.read_text(errors="replace")

    def close(self, timeout: float = 30.0) -> int:
        """Close stdin as the browser does; the host's exit code."""
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=timeout)
        self._err.close()
        return code


def extension_with_native_granted(dest: Path) -> Path:
    """A copy of extension/ whose manifest lists nativeMessaging as required rather than optional,
    so Chromium grants it at load: headless Chromium cannot answer the permission prompt."""
    import shutil

    shutil.copytree(ROOT / "extension", dest, ignore=shutil.ignore_patterns("node"))
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["optional_permissions"] == ["nativeMessaging"]  # what users get
    manifest["optional_permissions"] = []
    manifest["permissions"].append("nativeMessaging")
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


# ---- the host's operations through either front door (test_native_host.py, test_host_jobs.py) ----
ROUTES = {  # native message type -> (HTTP method, path of its route for the data sent)
    "health": ("GET", lambda d: "/health"),
    "models": ("GET", lambda d: "/models"),
    "solve": ("POST", lambda d: "/solve"),
    "samples": ("POST", lambda d: "/samples"),
    "sites": ("GET", lambda d: "/sites"),
    "train_start": ("POST", lambda d: "/train"),
    "train_status": ("GET", lambda d: f"/train/{d.get('id') or 'latest'}"),
    "train_cancel": ("POST", lambda d: f"/train/{d.get('id')}/cancel"),
    "model_files": ("GET", lambda d: f"/models/{d['name']}/files" + (f"/{d['file']}" if d.get("file") else "")),
}


PATH_KEYS = ("id", "name", "file")  # sent in the route's path over HTTP
QUERY_KEYS = ("offset", "length")  # sent as its query string


class DoorAnswer:
    def __init__(self, ok: bool, status: int, body):
        self.ok, self.status, self.body = ok, status, body

    def __repr__(self):
        return f"<{self.status} {self.body!r}>"


class HttpOps:
    """Operations as the extension sends them over HTTP, with the token (Flask test client)."""

    name = "http"

    def __init__(self, app, home: Path, token: str):
        self.client, self.home, self.token = loopback_client(app), Path(home), token

    def call(self, op: str, data: dict | None = None, token: str | None = "default") -> DoorAnswer:
        data = dict(data or {})
        headers = {} if token is None else {TOKEN_HEADER: self.token if token == "default" else token}
        method, path = ROUTES[op]
        query = {k: data[k] for k in QUERY_KEYS if k in data}
        body = {k: v for k, v in data.items() if k not in PATH_KEYS + QUERY_KEYS}
        r = self.client.open(path(data), method=method, headers=headers, query_string=query,
                             json=body if method == "POST" else None)
        ok = r.status_code < 300
        return DoorAnswer(ok, r.status_code, r.json if ok else r.json["error"])


class NativeOps:
    """The same operations as native messaging frames to a launcher's process."""

    name = "native"

    def __init__(self, proc: "NativeProcess", home: Path | None = None):
        self.proc, self.home = proc, Path(home or proc.home)

    def call(self, op: str, data: dict | None = None) -> DoorAnswer:
        frame = self.proc.call(op, data)
        assert frame["api"] == 1 and frame["type"] == op
        return DoorAnswer(frame["ok"], frame.get("status", 200),
                          frame["result"] if frame["ok"] else frame["error"])
