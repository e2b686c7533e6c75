"""The local host: a small Flask app on 127.0.0.1 serving the full TF models.

    from captchalens.native_host import create_app
    app = create_app({"PORT": 8765})          # `captchalens serve` runs it under waitress

The extension falls back to it when in-browser solving is not possible; the
/demo page lets a new user try the extension at once.
"""
from __future__ import annotations

import logging

from flask import Flask

from .security import HostError, ensure_token, extension_id_from_manifest
from .service import HostState, build_state

__all__ = ["create_app", "HostError", "HostState"]
log = logging.getLogger("captchalens.host")

MAX_BODY = 2 * 1024 * 1024  # a captcha is a few KB; anything past this is refused with 413


def create_app(test_config: dict | None = None) -> Flask:
    """The app, with its models loaded. Config keys are listed in from_mapping below."""
    app = Flask(__name__)
    app.config.from_mapping(
        PORT=8765,  # the port the host listens on: Host headers and own origins include it
        EXPOSED=False,  # True only with --i-understand-this-exposes-the-solver
        MODEL_DIRS=None,  # --model folders; None = the shipped default model
        EXTENSION_ID=None,  # None = computed from EXTENSION_MANIFEST's "key"
        EXTENSION_MANIFEST=None,  # None = the checkout's extension/manifest.json
        TOKEN=None,  # None = the token file in the CaptchaLens home (created on first run)
        PAIRING=True,  # POST /pair: the extension gets the token for a code shown on the host's terminal
        BATCHING=True,  # micro-batch concurrent requests (False: one model call per request)
        RELOAD_INTERVAL=1.0,  # seconds between looks at the model folders
        SAMPLE_LIMITS=None,  # {field of samples.SampleLimits: value}: sizes, quotas, rate of POST /samples
        MAX_CONTENT_LENGTH=MAX_BODY,
        MAX_FORM_MEMORY_SIZE=MAX_BODY,
    )
    if test_config:
        app.config.from_mapping(test_config)
    app.json.sort_keys = False

    if not app.config["EXTENSION_ID"]:
        app.config["EXTENSION_ID"] = extension_id_from_manifest(app.config["EXTENSION_MANIFEST"])
    if not app.config["EXTENSION_ID"]:
        log.warning("no extension ID (no key in %s): the extension cannot call this host; "
                    "pass --extension-id", app.config["EXTENSION_MANIFEST"] or "the checkout's extension/manifest.json")
    if not app.config["TOKEN"]:
        ensure_token()

    app.extensions["captchalens"] = build_state(
        app.config["MODEL_DIRS"], batching=app.config["BATCHING"],
        reload_interval=app.config["RELOAD_INTERVAL"], sample_limits=app.config["SAMPLE_LIMITS"],
        token=app.config["TOKEN"])

    from . import routes

    app.register_blueprint(routes.bp)
    return app
