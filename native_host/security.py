"""Who may talk to the local host: loopback only, our extension only, writes with a token.

Threat model in one paragraph: any web page the user visits can make the
browser send requests to 127.0.0.1.  Such requests either carry the page's
Origin (refused here unless it is our extension or the host's own pages) or
use a rebound DNS name (refused by the Host check).  Local processes without
an Origin may solve captchas, as the CLI can; changing anything on disk
(samples, model reload) needs the per-install token from a 0600 file.  Any
local process (and any extension that rewrites headers) can fake the Origin,
so the token is never handed out on a header: pairing needs a one-time code
that only the host's terminal and its 0600 pair-code file show, checked in
constant time, 5 tries per code and a throttle on wrong codes overall.  Not
defended: a process running as the same user (it can read the token file),
and a local process flooding the host with work (it slows, it does not lose
data: samples have quotas and a rate limit).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

from captchalens import paths
from captchalens.errors import UserError
from captchalens.files import write_atomic
from captchalens.home import home, token_path

TOKEN_HEADER = "X-CaptchaLens-Token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")  # how a browser may name this host
EXPOSE_FLAG = "--i-understand-this-exposes-the-solver"
PAIR_CODE_FILE = "pair-code"  # in the CaptchaLens home: the pending pairing code (0600)
PAIR_CODE_TTL = 300  # seconds a pairing code stays valid
PAIR_CODE_TRIES = 5  # wrong codes before the pending code is void
PAIR_CODE_DIGITS = 6


class HostError(UserError, RuntimeError):
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


def extension_id_from_manifest(path: str | os.PathLike | None = None) -> str | None:
    """The extension's fixed ID from its manifest "key" (default: the checkout's
    extension/manifest.json); None if there is no such manifest or key."""
    path = path or paths.extension_manifest(required=False)
    if path is None:
        return None
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


def _private_folder(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.parent == home():
        os.chmod(path.parent, 0o700)


def _write_token(path: Path, replace: bool) -> str:
    _private_folder(path)
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


def write_private(path: Path, text: str) -> None:
    """Write a small secret file atomically, mode 0600, in a 0700 folder."""
    _private_folder(path)
    write_atomic(path, text, 0o600)


# ---- throttles -----------------------------------------------------------------
class TokenBucket:
    """`burst` actions at once, then `rate` per second. Thread-safe; the clock is replaceable for tests."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._level, self._at = float(burst), None
        self._lock = threading.Lock()

    def _refill(self) -> float:
        now = self.clock()
        if self._at is not None:
            self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        return self._level

    def take(self) -> float:
        """0.0 when the action may go ahead (and it is counted), else the seconds to wait."""
        with self._lock:
            if self._refill() >= 1.0:
                self._level -= 1.0
                return 0.0
            return (1.0 - self._level) / self.rate

    def wait_time(self) -> float:
        """Seconds until one action would be allowed (0.0 = now); counts nothing."""
        with self._lock:
            level = self._refill()
            return 0.0 if level >= 1.0 else (1.0 - level) / self.rate


# ---- pairing: a code the user confirms ---------------------------------------------
def pair_code_path() -> Path:
    return home() / PAIR_CODE_FILE


class PairingError(Exception):
    """A pairing step refused; status is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def format_code(code: str) -> str:
    return f"{code[:3]} {code[3:]}"


class Pairing:
    """One-time 6-digit codes: the extension asks for one, the host shows it where only the user
    sees it (its terminal, and the 0600 pair-code file for a host started in the background),
    and the user types it into the extension. Anyone can fake an Origin header; nobody without
    the user's terminal or files can read the code.

    A new code replaces the pending one. A code is used once, lasts PAIR_CODE_TTL seconds and
    is void after PAIR_CODE_TRIES wrong tries; wrong codes overall and new codes are throttled,
    so guessing one in a million takes months of very visible attempts."""

    def __init__(self, path: Path | None = None, clock=time.monotonic, wall=time.time, out=None):
        self.path = path
        self.clock, self.wall = clock, wall
        self.out = out  # where the code is shown (default: the host's stderr)
        self._lock = threading.Lock()
        self._code: str | None = None
        self._expires = 0.0
        self._tries = 0
        self._ended = ""  # why there is no pending code (for the next answer)
        # 5 new codes at once, then one every 20 s; 20 wrong codes at once, then one every 30 s
        self.new_codes = TokenBucket(1 / 20, 5, clock=lambda: self.clock())
        self.wrong_codes = TokenBucket(1 / 30, 20, clock=lambda: self.clock())

    def _file(self) -> Path:
        return self.path or pair_code_path()

    def new_code(self) -> int:
        """Make and show a fresh code; returns its lifetime in seconds."""
        wait = self.new_codes.take()
        if wait:
            raise PairingError(429, f"too many pairing codes asked for: wait {wait:.0f} s, then "
                                    f"ask again", retry_after=wait)
        code = "".join(secrets.choice("0123456789") for _ in range(PAIR_CODE_DIGITS))
        with self._lock:
            self._code, self._tries, self._ended = code, 0, ""
            self._expires = self.clock() + PAIR_CODE_TTL
            write_private(self._file(), json.dumps({"code": code, "expires": self.wall() + PAIR_CODE_TTL}) + "\n")
        print(f"Pairing code for the CaptchaLens extension: {format_code(code)} "
              f"(valid {PAIR_CODE_TTL // 60} min)", file=self.out or sys.stderr, flush=True)
        return PAIR_CODE_TTL

    def redeem(self, given) -> None:
        """Accept the pending code (once) or raise PairingError saying what to do."""
        if not isinstance(given, str):
            raise PairingError(400, "'code' must be a string: the 6 digits the host shows")
        digits = "".join(given.replace("-", " ").split())
        if not (len(digits) == PAIR_CODE_DIGITS and digits.isascii() and digits.isdigit()):
            raise PairingError(400, f"a pairing code is {PAIR_CODE_DIGITS} digits, like 482 913: "
                                    f"type the code the host shows")
        with self._lock:
            if self._code is None:
                why = self._ended or "no pairing code is pending"
                raise PairingError(409, f"{why}: ask for a new code (press \"Pair with local host\" "
                                        f"again)")
            if self.clock() >= self._expires:
                self._end("the pairing code has expired")
                raise PairingError(403, f"the pairing code has expired (codes last "
                                        f"{PAIR_CODE_TTL // 60} min): ask for a new one")
            wait = self.wrong_codes.wait_time()
            if wait:
                raise PairingError(429, f"too many wrong pairing codes: wait {wait:.0f} s before "
                                        f"trying again", retry_after=wait)
            if hmac.compare_digest(digits.encode(), self._code.encode()):
                self._end("the pairing code was used")
                return
            self.wrong_codes.take()
            self._tries += 1
            left = PAIR_CODE_TRIES - self._tries
            if left > 0:
                raise PairingError(403, f"wrong pairing code: {left} {'try' if left == 1 else 'tries'} "
                                        f"left for this code")
            self._end(f"the pairing code was void after {PAIR_CODE_TRIES} wrong tries")
            raise PairingError(403, "wrong pairing code, and that was the last try: the code is "
                                    "void, ask for a new one")

    def _end(self, why: str) -> None:
        """Forget the pending code (and its file, if it still holds this code)."""
        code, self._code, self._ended = self._code, None, why
        try:
            if json.loads(self._file().read_text(encoding="utf-8")).get("code") == code:
                self._file().unlink()
        except (OSError, ValueError, AttributeError):
            pass


def pending_code(path: Path | None = None, wall=time.time) -> tuple[str, float] | None:
    """(code, seconds left) of the pending pairing code in the pair-code file, or None."""
    try:
        data = json.loads((path or pair_code_path()).read_text(encoding="utf-8"))
        code, left = str(data["code"]), float(data["expires"]) - wall()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return (code, left) if left > 0 and len(code) == PAIR_CODE_DIGITS and code.isdigit() else None


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
