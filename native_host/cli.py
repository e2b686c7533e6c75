"""`captchalens serve` (the local host under waitress) and `captchalens token`.

Nothing here imports TensorFlow or Flask at import time: the models load
inside `serve`, after the port is known to be free.
"""
from __future__ import annotations

import logging
import sys

from captchalens import paths

from .security import EXPOSE_FLAG

BODY_BACKSTOP = 16 * 1024 * 1024  # waitress's own cap; Flask answers 413 (JSON) from 2 MB


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="run the local host the extension falls back to (http://127.0.0.1:8765)",
        description="Serve the full TensorFlow models on 127.0.0.1 for the CaptchaLens extension, "
                    "with a /demo page to try it. Model folders in $CAPTCHALENS_HOME/models are "
                    "served too and picked up without a restart.")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 = any free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; only loopback addresses (127.0.0.1, ::1) are allowed "
                        f"unless {EXPOSE_FLAG} is given")
    p.add_argument("--model", action="append", metavar="DIR",
                   help="model folder to serve (repeatable; the first is the default model). "
                        "Default: the shipped model")
    p.add_argument("--threads", type=int, default=16,
                   help="request threads (default 16; concurrent requests share model calls)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batching", dest="batching", action="store_true", default=True,
                       help="micro-batch concurrent requests into one model call (the default)")
    batch.add_argument("--no-batching", dest="batching", action="store_false",
                       help="run the model once per request")
    p.add_argument("--extension-id", default=None, metavar="ID",
                   help="the extension allowed to call the host (default: computed from the key "
                        "in extension/manifest.json)")
    p.add_argument("--no-pairing", action="store_true",
                   help="turn off POST /pair (pairing with a code shown here); paste `captchalens "
                        "token` into the extension's options instead")
    p.add_argument(EXPOSE_FLAG, dest="exposed", action="store_true",
                   help="allow a non-loopback --host: anyone who can reach it can use the solver")
    p.set_defaults(func=run_serve)

    t = sub.add_parser("token", help="print the local host's token (to paste into the extension's options)",
                       description="Print the per-install token that the local host asks for on "
                                   "writes (POST /samples, /reload). Creates it on first use.")
    what = t.add_mutually_exclusive_group()
    what.add_argument("--rotate", action="store_true",
                      help="replace it with a new token (paired extensions must pair again)")
    what.add_argument("--path", action="store_true", help="print the token file's path instead")
    what.add_argument("--pair-code", action="store_true",
                      help="print the pending pairing code (for a host started in the background) "
                           "instead; exits with 1 when none is pending")
    t.set_defaults(func=run_token)


def run_serve(args) -> int:
    from .security import HostError, check_bind

    check_bind(args.host, args.exposed)
    if not 0 <= args.port <= 65535:
        raise HostError(f"--port must be 0-65535, not {args.port}")
    if args.threads < 1:
        raise HostError("--threads must be at least 1")
    if args.exposed:
        print(f"WARNING: listening on {args.host}: anyone who can reach this address can use the "
              f"solver.", file=sys.stderr)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("captchalens.host").setLevel(logging.INFO)

    from .server import make_server

    app_box = []  # the app, once its models are loaded

    def dispatch(environ, start_response):
        return app_box[0](environ, start_response)

    host = "127.0.0.1" if args.host == "localhost" else args.host
    try:  # bind first: a busy port fails in a second, not after loading TensorFlow
        server = make_server(dispatch, host, args.port, args.threads, max_body=BODY_BACKSTOP)
    except OSError as e:
        raise HostError(f"cannot listen on {host}:{args.port}: {e.strerror or e} (is another "
                        f"`captchalens serve` running? try --port)") from None
    port = server.effective_port
    try:
        print("loading models ...", file=sys.stderr, flush=True)
        from . import create_app
        from .security import ensure_token

        ensure_token()
        app = create_app({"PORT": port, "EXPOSED": args.exposed, "MODEL_DIRS": args.model,
                          "EXTENSION_ID": args.extension_id, "PAIRING": not args.no_pairing,
                          "BATCHING": args.batching})
        app_box.append(app)
        print(banner(app, host, port), flush=True)
        server.run()
    finally:
        server.close()
    return 0


def banner(app, host: str, port: int) -> str:
    from captchalens import __version__
    from captchalens.home import token_path

    registry = app.extensions["captchalens"].registry
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    lines = [f"CaptchaLens local host {__version__} on {url}",
             f"  models:     {', '.join(registry.names()) or 'none loaded'}"
             + (f" (default: {registry.default})" if registry.default else "")]
    for e in registry.entries.values():
        if e.error:
            lines.append(f"  not loaded: {e.name}: {e.error}")
    ext = paths.extension_dir(required=False)
    lines += [f"  try it:     {url}/demo",
              f"  token file: {token_path()}  (`captchalens token` prints it)",
              f"  extension:  chrome://extensions -> Developer mode -> Load unpacked -> "
              f"{ext or 'the extension/ folder of the CaptchaLens sources'}",
              ("              then, in its options, \"Pair with local host\" and type the code "
               "shown here" if app.config["PAIRING"] else
               "              then paste `captchalens token` into its options (pairing is off)"),
              f"  extension ID allowed: {app.config['EXTENSION_ID'] or 'none (pass --extension-id)'}",
              "Press Ctrl+C to stop."]
    return "\n".join(lines)


def run_token(args) -> int:
    from captchalens.home import token_path

    from .security import ensure_token, format_code, pending_code, rotate_token

    if args.path:
        print(token_path())
        return 0
    if args.pair_code:
        pending = pending_code()
        if pending is None:
            print("no pairing code is pending: press \"Pair with local host\" in the extension's "
                  "options while `captchalens serve` runs, then run this again", file=sys.stderr)
            return 1
        code, left = pending
        print(format_code(code))
        still = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
        print(f"(valid {still} more) Type it into the extension's options.", file=sys.stderr)
        return 0
    print(rotate_token() if args.rotate else ensure_token())
    print(f"(from {token_path()}) Paste it into the extension's options, or press \"Pair with local "
          f"host\" there while `captchalens serve` runs." + (" Restarting is not needed; paired "
          "extensions must pair again." if args.rotate else ""), file=sys.stderr)
    return 0
