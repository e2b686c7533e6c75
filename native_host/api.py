"""The host's HTTP API: one blueprint, JSON everywhere (the /demo page aside).

    GET  /health    GET /models    POST /solve
    POST /samples   POST /reload   (both need the token)
    POST /pair      (the extension's options page only): {} asks for a code, {"code"} gets the token
    GET|POST /demo  a fresh captcha to try the extension on
"""
from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import logging
import math
import time

from flask import Blueprint, current_app, jsonify, render_template, request
from PIL import Image, UnidentifiedImageError
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from captchalens import __version__
from captchalens.images import ImageError, read_rgba

from .samples import SampleError, check_text, fits_model
from .security import TOKEN_HEADER, PairingError, host_ok, own_origins, token_matches

API_VERSION = 1
log = logging.getLogger("captchalens.host")
bp = Blueprint("host", __name__)

# Formats a captcha comes in. Pillow's other decoders (EPS runs Ghostscript, TIFF, PSD,
# ...) are never offered to an upload.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
HOW_TO_SEND = ("send the image as multipart field 'image', as a raw image/* body, "
               "or as JSON {\"image\": \"<base64 or data: URL>\"}")


class ApiError(Exception):
    """An answer other than 2xx, with a message for the user (and, for 429, when to try again)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def state():
    return current_app.extensions["captchalens"]


# ---- checks on every request -----------------------------------------------
def extension_origin() -> str | None:
    ext = current_app.config.get("EXTENSION_ID")
    return f"chrome-extension://{ext}" if ext else None


def origin_allowed(origin: str) -> bool:
    own = own_origins(current_app.config["PORT"]) | {f"http://{request.host.lower()}"}
    return origin == extension_origin() or origin in own


@bp.before_app_request
def guard():
    cfg = current_app.config
    if not host_ok(request.environ.get("HTTP_HOST"), cfg["PORT"], cfg["EXPOSED"]):
        raise ApiError(403, f"Host {request.environ.get('HTTP_HOST', '')!r} is not allowed: this host "
                            f"answers only as 127.0.0.1:{cfg['PORT']} or localhost:{cfg['PORT']} "
                            f"(protection against DNS rebinding)")
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin):
        raise ApiError(403, f"requests from {origin!r} are not allowed: only the CaptchaLens extension "
                            f"and this host's own pages may call it")
    state().registry.maybe_reload()


@bp.after_app_request
def headers(response):
    origin = request.headers.get("Origin")
    if origin and origin == extension_origin():  # CORS answers only the extension
        response.headers["Access-Control-Allow-Origin"] = origin
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = f"Content-Type, {TOKEN_HEADER}"
            response.headers["Access-Control-Max-Age"] = "600"
            if request.headers.get("Access-Control-Request-Private-Network") == "true":
                response.headers["Access-Control-Allow-Private-Network"] = "true"
    response.vary.add("Origin")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "same-origin"  # "no-referrer" makes form posts send Origin: null
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    return response


def needs_token(view):
    """Writes need the per-install token (the file `captchalens token` prints)."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        given = request.headers.get(TOKEN_HEADER)
        if not given:
            raise ApiError(401, f"this request changes files, so it needs the host's token in the "
                                f"{TOKEN_HEADER} header: pair the extension in its options page, "
                                f"or run `captchalens token`")
        if not token_matches(given, state().token()):
            raise ApiError(403, f"wrong {TOKEN_HEADER}: pair the extension again, or run "
                                f"`captchalens token` for the current one")
        return view(*args, **kwargs)
    return wrapped


# ---- errors: always JSON -----------------------------------------------------
@bp.app_errorhandler(ApiError)
def api_error(e: ApiError):
    response = jsonify(error=e.message)
    if e.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(e.retry_after)))
    return response, e.status


@bp.app_errorhandler(HTTPException)
def http_error(e: HTTPException):
    if isinstance(e, RequestEntityTooLarge):
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message = f"request body is too large: at most {limit // (1024 * 1024)} MB (a captcha is a few KB)"
    else:
        message = e.description or e.name
    response = e.get_response()
    response.data = jsonify(error=message).get_data()
    response.mimetype = "application/json"
    return response


@bp.app_errorhandler(Exception)
def unexpected(e: Exception):
    log.exception("unexpected error on %s %s", request.method, request.path)
    return jsonify(error=f"internal error ({type(e).__name__}); the host keeps running"), 500


# ---- reading what was sent -----------------------------------------------------
def from_base64(text) -> bytes:
    if not isinstance(text, str):
        raise ApiError(400, "'image' must be a string: base64 or a data: URL")
    text = text.strip()
    if text[:5].lower() == "data:":
        head, sep, text = text.partition(",")
        if not sep or ";base64" not in head.lower():
            raise ApiError(400, "a data: URL image must be base64-encoded (data:image/png;base64,...)")
    text = "".join(text.split())
    if not text:
        raise ApiError(400, "'image' is empty")
    try:
        alt = b"-_" if ("-" in text or "_" in text) else None
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=alt, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "'image' is not valid base64 (send the file's bytes base64-encoded, "
                            "or a data: URL)") from None


def read_upload() -> tuple[bytes, dict]:
    """The image bytes and the other fields (model, text, site) of /solve or /samples."""
    fields = {k: v for k, v in request.args.items() if k in ("model", "text", "site")}
    kind = request.mimetype
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = request.form
        fields.update({k: v for k, v in form.items() if k in ("model", "text", "site")})
        upload = request.files.get("image")
        if upload is not None:
            return upload.read(), fields
        if "image" in form:
            return from_base64(form["image"]), fields
        raise ApiError(400, f"the form has no field 'image': {HOW_TO_SEND}")
    if kind == "application/json" or kind.endswith("+json"):
        try:
            body = request.get_json(force=True)
        except (BadRequest, RecursionError):  # RecursionError: "[[[[..." nested past Python's limit
            raise ApiError(400, f"the body is not valid JSON: {HOW_TO_SEND}") from None
        if not isinstance(body, dict) or "image" not in body:
            raise ApiError(400, f"the JSON body must be an object with an 'image' key: {HOW_TO_SEND}")
        fields.update({k: body[k] for k in ("model", "text", "site") if k in body})
        return from_base64(body["image"]), fields
    if kind.startswith("image/") or kind == "application/octet-stream":
        return request.get_data(), fields
    if not kind and not request.content_length:
        raise ApiError(400, f"no image was sent: {HOW_TO_SEND}")
    raise ApiError(415, f"cannot read a {kind or 'typeless'} body: {HOW_TO_SEND}")


def decode_image(data: bytes):
    """RGBA pixels of an uploaded PNG, JPEG, GIF, WebP or BMP (no other Pillow decoders run)."""
    if data:
        try:
            Image.open(io.BytesIO(data), formats=IMAGE_FORMATS).close()  # reads the header only
        except UnidentifiedImageError:
            raise ApiError(400, "uploaded image: not a readable image (the host reads "
                                "PNG, JPEG, GIF, WebP and BMP)") from None
        except Exception:  # noqa: BLE001 - too large, truncated...: read_rgba says which
            pass
    try:
        return read_rgba(data, "uploaded image")
    except ImageError as e:
        raise ApiError(400, str(e)) from None


def text_field(fields: dict, key: str) -> str | None:
    value = fields.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"'{key}' must be a string")
    return value or None


def pick_model(name: str | None):
    registry = state().registry
    name = name or registry.default
    if name is None:
        problems = "; ".join(e.error for e in registry.entries.values() if e.error) or "none found"
        raise ApiError(503, f"no model is loaded ({problems})")
    entry = registry.entries.get(name)
    if entry is None:
        raise ApiError(404, f"no model named {name!r}; this host serves: "
                            f"{', '.join(registry.names()) or 'none'}")
    if entry.error:
        raise ApiError(503, f"model {name!r} could not be loaded: {entry.error}")
    return entry


# ---- endpoints -----------------------------------------------------------------
@bp.get("/health")
def health():
    registry = state().registry
    return {"ok": True, "version": __version__, "api": API_VERSION, "models": registry.names(),
            "default": registry.default}


@bp.get("/models")
def models():
    return state().registry.describe()


@bp.post("/solve")
def solve():
    start = time.perf_counter()
    data, fields = read_upload()
    entry = pick_model(text_field(fields, "model"))
    rgba = decode_image(data)
    try:
        text, confidence = entry.runner.solve(rgba)
    except TimeoutError as e:
        raise ApiError(503, str(e)) from None
    return {"text": text, "confidence": float(f"{confidence:.6g}"), "model": entry.name,
            "ms": round((time.perf_counter() - start) * 1000, 2)}


@bp.post("/samples")
@needs_token
def samples():
    store = state().samples
    wait = store.rate.take()
    if wait:
        lim = store.limits
        raise ApiError(429, f"too many samples: at most {lim.burst} at once, then {lim.per_second:g} a "
                            f"second; try again in {math.ceil(wait)} s", retry_after=wait)
    data, fields = read_upload()
    entry = pick_model(text_field(fields, "model"))
    rgba = decode_image(data)
    try:
        text = check_text(fields.get("text"))
        saved, count = store.save(rgba, text, text_field(fields, "site"))
    except SampleError as e:
        raise ApiError(e.status, str(e)) from None
    # A label the current model cannot give is kept too: it is what a site model is trained from.
    return {"saved": saved, "count": count, "fits_model": fits_model(text, entry.meta)}, 201


@bp.post("/reload")
@needs_token
def reload():
    return state().registry.reload().describe()


PAIR_HOW = 'send {} to ask for a pairing code, then {"code": "<the 6 digits the host shows>"}'


@bp.post("/pair")
def pair():
    """Two steps: {} makes the host show a one-time code on its terminal (and in the 0600
    pair-code file); {"code"} with that code answers the token. The Origin check only keeps
    web pages out: a local process can fake the header, but cannot read the code."""
    ext = extension_origin()
    if not current_app.config["PAIRING"]:
        raise ApiError(403, "pairing is turned off (--no-pairing): paste the output of "
                            "`captchalens token` into the extension's options instead")
    if not ext or request.headers.get("Origin") != ext:
        raise ApiError(403, "only the CaptchaLens extension's options page can pair with this host")
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        raise ApiError(400, f"the body is not valid JSON: {PAIR_HOW}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object: {PAIR_HOW}")
    pairing = state().pairing
    try:
        if "code" not in body:
            return {"pending": True, "expires_in": pairing.new_code()}, 202
        pairing.redeem(body["code"])
    except PairingError as e:
        raise ApiError(e.status, e.message, e.retry_after) from None
    return {"token": state().token()}


@bp.get("/favicon.ico")
def favicon():
    return "", 204


@bp.route("/demo", methods=["GET", "POST"])
def demo():
    challenges = state().demo
    result = None
    if request.method == "POST":
        right, answer = challenges.check(request.form.get("challenge", ""), request.form.get("answer", ""))
        result = {"right": right, "answer": answer, "guess": request.form.get("answer", "")}
    challenge, image = challenges.new()
    return render_template("demo.html", challenge=challenge, image=image, result=result,
                           version=__version__)
