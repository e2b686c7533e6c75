"""The host's HTTP front door: one blueprint, JSON everywhere (the /demo page aside).
What each operation does is in service.py, shared with native messaging (native.py);
here are the HTTP-only parts: reading forms and bodies, Host/Origin checks, the token.

    GET  /health    GET /models    POST /solve
    POST /samples   POST /reload   (both need the token)
    GET  /sites     POST /train {site}   GET /train/<id|latest>   POST /train/<id>/cancel
    GET  /models/<name>/files[/<file>?offset=&length=]    (a site's model; all need the token)
    POST /pair      (the extension's options page only): {} asks for a code, {"code"} gets the token
    GET|POST /demo  a fresh captcha to try the extension on
"""
from __future__ import annotations

import functools
import json
import logging
import math

from flask import Blueprint, current_app, jsonify, render_template, request
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from captchalens import __version__

from . import service
from .security import TOKEN_HEADER, PairingError, host_ok, own_origins, token_matches
from .service import ServiceError, from_base64

log = logging.getLogger("captchalens.host")
bp = Blueprint("host", __name__)

HOW_TO_SEND = ("send the image as multipart field 'image', as a raw image/* body, "
               "or as JSON {\"image\": \"<base64 or data: URL>\"}")


ApiError = ServiceError  # raised by the service layer and by the checks below


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
FIELDS = ("model", "text", "site", "alphabet")  # what an upload may carry besides the image


def read_upload() -> tuple[bytes, dict]:
    """The image bytes and the other fields (model, text, site, alphabet) of /solve or /samples."""
    fields = {k: v for k, v in request.args.items() if k in FIELDS}
    kind = request.mimetype
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = request.form
        fields.update({k: v for k, v in form.items() if k in FIELDS})
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
        fields.update({k: body[k] for k in FIELDS if k in body})
        return from_base64(body["image"]), fields
    if kind.startswith("image/") or kind == "application/octet-stream":
        return request.get_data(), fields
    if not kind and not request.content_length:
        raise ApiError(400, f"no image was sent: {HOW_TO_SEND}")
    raise ApiError(415, f"cannot read a {kind or 'typeless'} body: {HOW_TO_SEND}")


# ---- endpoints -----------------------------------------------------------------
@bp.get("/health")
def health():
    return service.health(state())


@bp.get("/models")
def models():
    return service.models(state())


@bp.post("/solve")
def solve():
    data, fields = read_upload()
    return service.solve(state(), data, fields.get("model"), fields.get("alphabet"))


@bp.post("/samples")
@needs_token
def samples():
    service.check_sample_rate(state())  # before the body is read
    data, fields = read_upload()
    return service.save_sample(state(), data, fields.get("text"), fields.get("site"),
                               fields.get("model")), 201


@bp.post("/reload")
@needs_token
def reload():
    return service.reload(state())


@bp.get("/sites")
@needs_token  # site names are the user's browsing
def sites():
    return service.sites(state())


def json_body() -> dict:
    """A JSON object body ({} when there is none)."""
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


@bp.post("/train")
@needs_token
def train_start():
    body = json_body()
    return service.train_start(state(), body.get("site"), body.get("from_previous")), 202


@bp.get("/train/<job_id>")
@needs_token
def train_status(job_id):
    return service.train_status(state(), job_id)


@bp.post("/train/<job_id>/cancel")
@needs_token
def train_cancel(job_id):
    return service.train_cancel(state(), job_id)


@bp.get("/models/<name>/files")
@bp.get("/models/<name>/files/<file>")
@needs_token
def model_files(name, file=None):
    try:
        offset = int(request.args.get("offset", 0))
        length = int(request.args["length"]) if "length" in request.args else None
    except ValueError:
        raise ApiError(400, "'offset' and 'length' must be whole numbers") from None
    return service.model_files(state(), name, file, offset, length)


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
