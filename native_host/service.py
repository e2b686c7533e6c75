"""What the host does, once, for both front doors: HTTP (routes.py) and native messaging (native.py).

    state = build_state(config)              # models, samples, pairing, demo
    health(state)   models(state)   solve(state, image_bytes, model=None)
    save_sample(state, image_bytes, text, site, model=None)   reload(state)
    sites(state)   train_start(state, site, from_previous)   train_status(state, id)   train_cancel(state, id)
    model_files(state, name, file=None, offset=0, length=None)     # jobs.py: a site's model

Each operation takes plain values and returns a JSON-able dict, or raises
ServiceError with a message for the user and the HTTP status it maps to (the
native host sends the same status in its error frames). The front doors only
read their transport (a form, a frame) and decide who may call what; nothing
about solving, models or samples is written twice.
"""
from __future__ import annotations

import base64
import binascii
import logging
import math
import time
from dataclasses import dataclass

from captchalens import __version__
from captchalens.alphabet import MAX_ALPHABET
from captchalens.images import ImageError, read_rgba

from .demo import DemoChallenges
from .jobs import JobError, Jobs
from .registry import Registry, fixed_folders
from .samples import SampleError, SampleLimits, SampleStore, check_text, fits_model
from .security import Pairing, ensure_token

API_VERSION = 1  # of both front doors: GET /health says it, every native frame carries it
log = logging.getLogger("captchalens.host")


class ServiceError(Exception):
    """An answer other than success, with a message for the user (and, for 429, when to try again)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


@dataclass
class HostState:
    registry: Registry
    demo: DemoChallenges
    pairing: Pairing
    samples: SampleStore
    fixed_token: str | None = None
    jobs: Jobs | None = None

    def token(self) -> str:
        """The per-install token, read from its file each time (so `captchalens token --rotate` works)."""
        return self.fixed_token or ensure_token()


def build_state(model_dirs=None, batching: bool = True, reload_interval: float = 1.0,
                sample_limits: dict | None = None, token: str | None = None) -> HostState:
    """Load the models and open the sample store (sweeping a killed writer's temp files)."""
    folders, source = fixed_folders(model_dirs)
    registry = Registry(folders, fixed_source=source, batching=batching,
                        check_interval=reload_interval).reload()
    samples = SampleStore(limits=SampleLimits(**(sample_limits or {})))
    samples.sweep()
    return HostState(registry, DemoChallenges(), Pairing(), samples, token, Jobs(on_installed=registry.reload))


# ---- reading what was sent -------------------------------------------------------
def from_base64(text) -> bytes:
    """The bytes of a base64 string or a base64 data: URL (standard or URL-safe alphabet)."""
    if not isinstance(text, str):
        raise ServiceError(400, "'image' must be a string: base64 or a data: URL")
    text = text.strip()
    if text[:5].lower() == "data:":
        head, sep, text = text.partition(",")
        if not sep or ";base64" not in head.lower():
            raise ServiceError(400, "a data: URL image must be base64-encoded (data:image/png;base64,...)")
    text = "".join(text.split())
    if not text:
        raise ServiceError(400, "'image' is empty")
    try:
        alt = b"-_" if ("-" in text or "_" in text) else None
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=alt, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(400, "'image' is not valid base64 (send the file's bytes base64-encoded, "
                                "or a data: URL)") from None


def decode_image(data: bytes):
    """RGBA pixels of an uploaded PNG, JPEG, GIF, WebP or BMP (no other Pillow decoders run)."""
    try:
        return read_rgba(data, "uploaded image")
    except ImageError as e:
        raise ServiceError(400, str(e)) from None


def text_field(fields: dict, key: str) -> str | None:
    """An optional string field ('model', 'site'); None when absent or empty."""
    value = fields.get(key)
    if value is not None and not isinstance(value, str):
        raise ServiceError(400, f"'{key}' must be a string")
    return value or None


def pick_model(state: HostState, name: str | None):
    """The registry entry to solve with: the named model, else the default."""
    registry = state.registry
    name = name or registry.default
    if name is None:
        problems = "; ".join(e.error for e in registry.entries.values() if e.error) or "none found"
        raise ServiceError(503, f"no model is loaded ({problems})")
    entry = registry.entries.get(name)
    if entry is None:
        raise ServiceError(404, f"no model named {name!r}; this host serves: "
                                f"{', '.join(registry.names()) or 'none'}")
    if entry.error:
        raise ServiceError(503, f"model {name!r} could not be loaded: {entry.error}")
    return entry


# ---- operations ----------------------------------------------------------------------
def health(state: HostState) -> dict:
    registry = state.registry
    return {"ok": True, "version": __version__, "api": API_VERSION, "models": registry.names(),
            "default": registry.default}


def models(state: HostState) -> dict:
    return state.registry.describe()


def alphabet_field(value) -> str | None:
    """The optional 'alphabet' of a solve: the characters a site's corrections showed
    (captchalens/alphabet.py: the captcha is read with their families only)."""
    value = text_field({"alphabet": value}, "alphabet")
    if value is None:
        return None
    if len(value) > MAX_ALPHABET or any(c.isspace() or not c.isprintable() for c in value):
        raise ServiceError(400, f"'alphabet' must be at most {MAX_ALPHABET} printable characters "
                                f"without spaces: the characters the site's captchas showed")
    return value


def solve(state: HostState, data: bytes, model: str | None = None, alphabet: str | None = None) -> dict:
    """{text, confidence, model, ms} for one captcha image's bytes; with a site's `alphabet`,
    read with its character families only."""
    start = time.perf_counter()
    entry = pick_model(state, text_field({"model": model}, "model"))
    alphabet = alphabet_field(alphabet)
    rgba = decode_image(data)
    try:
        text, confidence = entry.runner.solve(rgba, alphabet)
    except TimeoutError as e:
        raise ServiceError(503, str(e)) from None
    return {"text": text, "confidence": float(f"{confidence:.6g}"), "model": entry.name,
            "ms": round((time.perf_counter() - start) * 1000, 2)}


def check_sample_rate(state: HostState) -> None:
    """Count one sample against the rate limit; 429 when over it (before the body is read)."""
    store = state.samples
    wait = store.rate.take()
    if wait:
        lim = store.limits
        raise ServiceError(429, f"too many samples: at most {lim.burst} at once, then "
                                f"{lim.per_second:g} a second; try again in {math.ceil(wait)} s",
                           retry_after=wait)


def save_sample(state: HostState, data: bytes, text, site=None, model=None) -> dict:
    """Store a labelled captcha for training: {saved, count, fits_model}. Rate-limit it first
    (check_sample_rate): the HTTP door does so before reading the body."""
    entry = pick_model(state, text_field({"model": model}, "model"))
    rgba = decode_image(data)
    try:
        text = check_text(text)
        saved, count = state.samples.save(rgba, text, text_field({"site": site}, "site"))
    except SampleError as e:
        raise ServiceError(e.status, str(e)) from None
    # A label the current model cannot give is kept too: it is what a site model is trained from.
    return {"saved": saved, "count": count, "fits_model": fits_model(text, entry.meta)}


def reload(state: HostState) -> dict:
    return state.registry.reload().describe()


# ---- a site's model, trained in the host (jobs.py) ----------------------------------------
def _jobs(state: HostState, op: str, *args):
    try:
        return getattr(state.jobs, op)(*args)
    except JobError as e:
        raise ServiceError(e.status, e.message) from None


def sites(state: HostState) -> dict:
    """Each site's sample count and model name: {sites: [{site, samples, model, has_model}], ...}."""
    return _jobs(state, "sites")


def train_start(state: HostState, site, from_previous=None) -> dict:
    """Start training the site's model (409 while another job runs); the new job's state.

    from_previous says what the caller was shown: True, the job goes on from the site's model
    (a retrain); False, the site has none yet. When the host would do otherwise (the site was
    trained, or its model removed, since), the job is refused (409) rather than started from
    another version than the user meant. None: whatever the host has."""
    if from_previous is not None:
        if not isinstance(from_previous, bool):
            raise ServiceError(400, "'from_previous' must be true or false")
        listed = next((s for s in sites(state)["sites"] if s["site"] == site), None)
        if listed is not None and listed["has_model"] != from_previous:
            if from_previous:
                raise ServiceError(409, f"site {site!r} has no model in the host to go on from any more: "
                                        f"reload the Sites list and train it again")
            raise ServiceError(409, f"site {site!r} has a model in the host now, which a new job would go on "
                                    f"from: reload the Sites list and retrain it")
    return _jobs(state, "start", site)


def train_status(state: HostState, job_id=None) -> dict:
    return _jobs(state, "status", job_id)


def train_cancel(state: HostState, job_id) -> dict:
    return _jobs(state, "cancel", job_id)


def model_files(state: HostState, name, file=None, offset=0, length=None) -> dict:
    """A site model's TF.js files: the list, or a chunk of one file (base64)."""
    return _jobs(state, "model_files", name, file, offset, length)
