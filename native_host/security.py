"""Who may talk to the local host: loopback only, our extension only, writes with a token.

Threat model in one paragraph: any web page the user visits can make the
browser send requests to 127.0.0.1.  Such requests either carry the page's
Origin (refused here unless it is our extension or the host's own pages) or
use a rebound DNS name (refused by the Host check).  Local processes without
an Origin may solve captchas, as the CLI can; changing anything on disk
(samples, model reload) needs the per-install token from a 0600 file.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import tempfile
from pathlib import Path

from captchalens.home import home, token_path

REPO = Path(__file__).resolve().parent.parent  # the checkout, when installed editable
MANIFEST = REPO / "extension" / "manifest.json"
TOKEN_HEADER = "X-CaptchaLens-Token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")  # how a browser may name this host
EXPOSE_FLAG = "--i-understand-this-exposes-the-solver"


class HostError(RuntimeError):
    """The host cannot start or run as asked; the message says why (printed by the CLI)."""


# ---- extension identity ----------------------------------------------------
def extension_id_from_key(key_b64: str) -> str:
    """Chromium's ID for a manifest "key": sha256 of the DER key, first 32 hex digits mapped 0-f -> a-p."""
    try:
        der = base64.b64decode("".join(key_b64.split()), validate=True)
    except ValueError as e:
        raise HostError(f"manifest key is not valid base64: {e}") from None
    digest = hashlib.sha256(der).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def extension_id_from_manifest(path: str | os.PathLike = MANIFEST) -> str | None:
    """The extension's fixed ID from its manifest "key"; None if there is no such manifest or key."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HostError(f"{path} is not readable JSON: {e}") from None
    key = manifest.get("key") if isinstance(manifest, dict) else None
    return extension_id_from_key(key) if isinstance(key, str) and key.strip() else None


# ---- the per-install token ---------------------------------------------------
def ensure_token(path: Path | None = None) -> str:
    """Read the token, creating it (0600, in a 0700 folder) on first use. Never overwrites a good one."""
    path = path or token_path()
    try:
        existing = read_token(path)
    except FileNotFoundError:
        existing = None
    if existing:
        return existing
    return _write_token(path, replace=path.exists())


def rotate_token(path: Path | None = None) -> str:
    """A fresh token replacing the old one (paired extensions must pair again)."""
    return _write_token(path or token_path(), replace=True)


def read_token(path: Path | None = None) -> str:
    """The token in path (stripped); tightens loose permissions on the way. Raises FileNotFoundError."""
    path = path or token_path()
    st = path.stat()
    if st.st_mode & 0o077:
        os.chmod(path, 0o600)  # someone loosened it; the token is a secret
    return path.read_text(encoding="utf-8").strip()


def _write_token(path: Path, replace: bool) -> str:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.parent == home():
        os.chmod(path.parent, 0o700)
    token = secrets.token_urlsafe(32)
    fd, tmp = tempfile.mkstemp(prefix=".token.", dir=path.parent)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if another process created it meanwhile: keep theirs
            except FileExistsError:
                return read_token(path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return token


def token_matches(given: str | None, expected: str) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


# ---- binding and request checks -------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, exposed: bool) -> None:
    """Refuse a non-loopback address unless the user said, loudly, that they mean it."""
    if not is_loopback(host) and not exposed:
        raise HostError(f"refusing to listen on {host}: anyone who can reach that address could use "
                        f"your solver. Use 127.0.0.1 (the default), or add "
                        f"{EXPOSE_FLAG} if you really mean it")


def allowed_hosts(port: int) -> set[str]:
    """Host header values a loopback host answers to (DNS rebinding protection)."""
    names = {f"{n}:{port}" for n in LOOPBACK_NAMES}
    if port == 80:
        names |= set(LOOPBACK_NAMES)
    return names


def host_ok(host_header: str | None, port: int, exposed: bool) -> bool:
    """Loopback names with our port; when deliberately exposed, also any IP literal (no DNS name
    can be rebound to an IP literal)."""
    if not host_header:
        return False
    host_header = host_header.strip().lower()
    if host_header in allowed_hosts(port):
        return True
    if exposed:
        name, _, p = host_header.rpartition(":")
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return False
        return p == str(port)
    return False


def own_origins(port: int) -> set[str]:
    return {f"http://{h}" for h in allowed_hosts(port)}
