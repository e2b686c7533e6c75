"""The native messaging front door: the browser starts this process and talks over its pipes.

Framing (Chromium's): each message is a 32-bit length in native byte order, then that
many bytes of UTF-8 JSON. The browser may send up to 4 GB; this host reads at most
MAX_REQUEST (a captcha is a few KB) and answers at most MAX_ANSWER (the browser's own
limit, 1 MB). Protocol, version API_VERSION:

    request  {"api": 1, "id": 7, "type": "solve", "data": {"image": "<base64>", "model": null, "alphabet": null}}
    answer   {"api": 1, "id": 7, "type": "solve", "ok": true, "result": {"text": ..., ...}}
    error    {"api": 1, "id": 7, "type": "solve", "ok": false, "status": 400, "error": "..."}

Types: ping (answers at once, also while the models load), health, models, solve,
samples ({image, text, site, model}), reload, and a site's model (jobs.py): sites,
train_start ({site, from_previous}), train_status ({id}: a job's, or "latest"), train_cancel ({id}),
model_files ({name}: the list; {name, file, offset, length}: a base64 chunk of one file).
Every request gets exactly one answer with its id; answers may come out of order (requests run on a few threads). A frame that
cannot be read (too large, not UTF-8, not JSON, not an object) gets an error with
"id": null and the host keeps reading. stdout carries nothing but frames: fd 1 is
pointed at stderr at start, and logs go to stderr and <CaptchaLens home>/native-host.log.

Threat model. No port is opened, so no web page can reach this host. Only the browser
starts it, and only for the extension IDs in the host manifest's allowed_origins (our
fixed ID: `captchalens native install` writes it), so other extensions cannot connect.
Web pages reach it only through our extension's background, which decides what to send
(samples only from corrections the user typed, as for HTTP). So no token is asked for on
this channel: every operation is open to its one caller. What else can start it: a local
process running as the user, which can already run `captchalens` itself and read the
token file — it gains nothing. Writes keep their limits (sample sizes, quotas, rate) so
a compromised extension could fill the samples folder only up to its quota. The origin
Chromium passes as our first argument is logged, not trusted (any local process can pass
one); the manifest is the gate.
"""
from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from captchalens import __version__
from captchalens.home import home

from . import service
from .service import API_VERSION, ServiceError

HOST_NAME = "io.captchalens.host"  # the native messaging host's name (its manifest's file name)
HEADER = struct.Struct("=I")  # the 32-bit length before each frame, in native byte order
MAX_REQUEST = 4 * 1024 * 1024  # bytes of one request; a 2 MB image is 2.7 MB as base64 JSON
MAX_ANSWER = 1024 * 1024  # bytes of one answer: Chromium refuses larger ones from a host
WORKERS = 4  # requests run at once (solves share model calls through the batching runner)
IN_FLIGHT = 16  # requests read but not yet answered; past that the host stops reading
LOAD_TIMEOUT = 300.0  # seconds a request waits for the models to load at start
LOG_FILE = "native-host.log"  # in the CaptchaLens home, rotated at LOG_BYTES
LOG_BYTES = 1024 * 1024
log = logging.getLogger("captchalens.host")


class FrameError(ValueError):
    """A frame that cannot be read; the stream is still in step (its bytes were consumed)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ---- framing ------------------------------------------------------------------------
def encode_frame(message: dict) -> bytes:
    """Length + UTF-8 JSON. An answer too large for the browser becomes an error frame."""
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_ANSWER:
        log.warning("answer to %s is %d bytes, over the %d limit", message.get("type"), len(body), MAX_ANSWER)
        body = json.dumps(error_frame(message.get("id"), message.get("type"), ServiceError(
            500, f"the answer is {len(body)} bytes, more than the {MAX_ANSWER} a browser accepts "
                 f"from a native host"))).encode("utf-8")
    return HEADER.pack(len(body)) + body


def _read_exact(stream, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream, limit: int = MAX_REQUEST):
    """The next message (any JSON value), or None when the browser closed the pipe.

    Raises FrameError for a frame that is too large (its bytes are read and dropped, so the
    next frame is read correctly) or is not UTF-8 JSON; EOFError if the pipe ends mid-frame."""
    head = _read_exact(stream, HEADER.size)
    if not head:
        return None
    if len(head) < HEADER.size:
        raise EOFError("the pipe closed inside a frame's length")
    (size,) = HEADER.unpack(head)
    if size > limit:
        left = size
        while left:
            got = len(stream.read(min(left, 64 * 1024)))
            if not got:
                raise EOFError("the pipe closed inside a frame")
            left -= got
        raise FrameError(f"a message of {size} bytes is too large: this host reads at most "
                         f"{limit // (1024 * 1024)} MB (a captcha is a few KB)", 413)
    body = _read_exact(stream, size)
    if len(body) < size:
        raise EOFError("the pipe closed inside a frame")
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise FrameError("the message is not UTF-8 text (native messaging frames are UTF-8 JSON)") from None
    except (ValueError, RecursionError):
        raise FrameError("the message is not valid JSON") from None


def error_frame(msg_id, msg_type, e: ServiceError) -> dict:
    frame = {"api": API_VERSION, "id": msg_id, "type": msg_type, "ok": False, "status": e.status,
             "error": e.message}
    if e.retry_after is not None:
        frame["retry_after"] = round(e.retry_after, 3)
    return frame


# ---- the operations ---------------------------------------------------------------------
def _image(data: dict) -> bytes:
    if "image" not in data:
        raise ServiceError(400, "'data' needs an 'image': the captcha's bytes as base64 or a data: URL")
    return service.from_base64(data["image"])


def _samples(state, data: dict) -> dict:
    service.check_sample_rate(state)
    return service.save_sample(state, _image(data), data.get("text"), data.get("site"), data.get("model"))


# type -> operation(state, data). "ping" is answered before the models are needed.
OPERATIONS = {
    "health": lambda state, data: service.health(state),
    "models": lambda state, data: service.models(state),
    "solve": lambda state, data: service.solve(state, _image(data), data.get("model"), data.get("alphabet")),
    "samples": _samples,
    "reload": lambda state, data: service.reload(state),
    "sites": lambda state, data: service.sites(state),
    "train_start": lambda state, data: service.train_start(state, data.get("site"), data.get("from_previous")),
    "train_status": lambda state, data: service.train_status(state, data.get("id")),
    "train_cancel": lambda state, data: service.train_cancel(state, data.get("id")),
    "model_files": lambda state, data: service.model_files(state, data.get("name"), data.get("file"),
                                                           data.get("offset", 0), data.get("length")),
}
TYPES = ("ping", *OPERATIONS)


class NativeHost:
    """Answers messages; the host state is built on a thread so that ping answers at once."""

    def __init__(self, make_state):
        self._state, self._error = None, None
        self._ready = threading.Event()
        threading.Thread(target=self._load, args=(make_state,), name="captchalens-load", daemon=True).start()

    def _load(self, make_state) -> None:
        try:
            self._state = make_state()
        except Exception as e:  # noqa: BLE001 - reported to every request instead
            log.exception("the host could not start")
            self._error = f"the host could not load its models: {type(e).__name__}: {e}"
        self._ready.set()

    def state(self):
        if not self._ready.wait(LOAD_TIMEOUT):
            raise ServiceError(503, f"the models are still loading after {LOAD_TIMEOUT:.0f} s")
        if self._error:
            raise ServiceError(500, self._error)
        self._state.registry.maybe_reload()
        return self._state

    def handle(self, message) -> dict:
        """The one message switch: a request in, its answer out (never raises)."""
        if not isinstance(message, dict):
            return error_frame(None, None, ServiceError(400, 'a message must be a JSON object: '
                                                             '{"api": 1, "id": ..., "type": ..., "data": {...}}'))
        msg_id, msg_type = message.get("id"), message.get("type")
        try:
            if message.get("api") != API_VERSION:
                raise ServiceError(400, f"this host speaks api {API_VERSION}, the message says "
                                        f"{message.get('api')!r}: update the extension or the host "
                                        f"(`captchalens native install` again) so they match")
            data = message.get("data", {})
            data = {} if data is None else data
            if not isinstance(data, dict):
                raise ServiceError(400, "'data' must be a JSON object")
            if msg_type == "ping":
                result = {"pong": True, "version": __version__, "api": API_VERSION,
                          "ready": self._ready.is_set() and not self._error}
            elif msg_type in OPERATIONS:
                result = OPERATIONS[msg_type](self.state(), data)
            else:
                log.warning("unknown message type %r", msg_type)
                raise ServiceError(400, f"unknown message type {msg_type!r}; this host knows "
                                        f"{', '.join(TYPES)}")
        except ServiceError as e:
            return error_frame(msg_id, msg_type, e)
        except Exception as e:  # noqa: BLE001 - one bad request must never end the host
            log.exception("unexpected error on %r", msg_type)
            return error_frame(msg_id, msg_type, ServiceError(
                500, f"internal error ({type(e).__name__}); the host keeps running"))
        return {"api": API_VERSION, "id": msg_id, "type": msg_type, "ok": True, "result": result}

    def serve(self, stdin, stdout) -> int:
        """Read frames until the browser closes the pipe; answer each one. Returns the exit code."""
        write_lock, slots = threading.Lock(), threading.BoundedSemaphore(IN_FLIGHT)

        def send(frame: dict) -> None:
            data = encode_frame(frame)
            with write_lock:
                stdout.write(data)
                stdout.flush()

        def run(message) -> None:
            try:
                send(self.handle(message))
            except OSError:
                log.warning("the browser closed the pipe before an answer could be sent")
            finally:
                slots.release()

        with ThreadPoolExecutor(WORKERS, thread_name_prefix="captchalens-native") as pool:
            while True:
                try:
                    message = read_frame(stdin)
                except FrameError as e:
                    send(error_frame(None, None, ServiceError(e.status, str(e))))
                    continue
                except EOFError as e:
                    log.warning("stopping: %s", e)
                    return 1
                if message is None:
                    return 0
                slots.acquire()
                pool.submit(run, message)


# ---- the process the browser starts -------------------------------------------------------
def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s captchalens-native %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    try:
        folder = home()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = logging.handlers.RotatingFileHandler(folder / LOG_FILE, maxBytes=LOG_BYTES, backupCount=1)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
    except OSError as e:
        log.warning("no log file: %s", e)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="captchalens-native-host",
                                description="CaptchaLens native messaging host (started by the browser).")
    p.add_argument("--model", action="append", metavar="DIR", help="model folder to serve (repeatable)")
    p.add_argument("caller", nargs="?", help="the extension's origin, passed by the browser")
    args, _ = p.parse_known_args(argv)  # Windows Chrome adds --parent-window=...
    frames = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything printed (a library, TensorFlow) goes to stderr, never into the frames
    sys.stdout = sys.stderr
    _setup_logging()
    log.info("started by %s (pid %d, api %d)", args.caller or "no browser", os.getpid(), API_VERSION)
    host = NativeHost(lambda: service.build_state(args.model))
    code = host.serve(sys.stdin.buffer, frames)
    log.info("stopped (%d)", code)
    return code


if __name__ == "__main__":  # pragma: no cover - the launcher runs `python -m ...native`
    status = main()
    logging.shutdown()
    os._exit(status)  # daemon threads (batching, loading) must not hold the exit
