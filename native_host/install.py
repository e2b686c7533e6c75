"""Registering the native messaging host with the browsers of the current user.

    install(...)     the launcher script + a host manifest in each browser's NativeMessagingHosts
    uninstall(...)   removes what install wrote (a manifest that is not ours is left alone)
    status(...)      which browsers have it, and whether its launcher and Python still work

The launcher (<CaptchaLens home>/native/<HOST_NAME>) is a small sh script that runs this
project's own Python (sys.executable at install time, venv and all) on native.py; the
manifests point at it, and allow only the extension's fixed ID (from the manifest key).
Every manifest written is recorded in <home>/native/installed.json, so uninstall and
status also find the --profile-dir ones. Linux and macOS; Windows keeps host manifests in
the registry, which is not done here.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from captchalens.home import home

from .native import HOST_NAME
from captchalens import paths
from captchalens.files import write_atomic

from .security import HostError, extension_id_from_manifest

HOSTS_FOLDER = "NativeMessagingHosts"  # inside a browser's config dir or a --profile-dir
RECORD = "installed.json"  # in <home>/native: the manifests this install wrote
PYTHON_VAR = "CAPTCHALENS_PYTHON"  # the launcher's line naming the Python it runs
IMPORT_CHECK_S = 60.0  # seconds `status` gives the launcher's Python to import the host
# browser -> its config dir under $XDG_CONFIG_HOME (Linux) and ~/Library/Application Support (macOS)
BROWSERS = {
    "Chromium": ("chromium", "Chromium"),
    "Google Chrome": ("google-chrome", "Google/Chrome"),
    "Microsoft Edge": ("microsoft-edge", "Microsoft Edge"),
    "Brave": ("BraveSoftware/Brave-Browser", "BraveSoftware/Brave-Browser"),
}


@dataclass
class Place:
    """Where one manifest goes: a browser's own folder or a --profile-dir."""

    label: str  # "Chromium", or "profile /path"
    config: Path  # the browser's config dir (or the profile dir): it must exist
    profile: bool = False

    @property
    def manifest(self) -> Path:
        return self.config / HOSTS_FOLDER / f"{HOST_NAME}.json"


def folder() -> Path:
    return home() / "native"


def launcher_path() -> Path:
    return folder() / HOST_NAME


def browser_places() -> list[Place]:
    """Every known browser's config dir for this user and OS (present or not)."""
    if sys.platform == "darwin":
        base, pick = Path.home() / "Library" / "Application Support", 1
    elif sys.platform.startswith("linux") or "bsd" in sys.platform:
        base, pick = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"), 0
    else:
        raise HostError(f"native messaging hosts are registered in the Windows registry on "
                        f"{sys.platform}, which `captchalens native` does not do yet: use the HTTP host "
                        f"(`captchalens serve`)")
    return [Place(name, base / dirs[pick]) for name, dirs in BROWSERS.items()]


def profile_place(path: str | os.PathLike) -> Place:
    path = Path(path).expanduser().absolute()
    return Place(f"profile {path}", path, profile=True)


# ---- what is written ----------------------------------------------------------------------
def launcher_text(python: str, model_dirs: list[str] | None) -> str:
    """The sh script the browser runs. CAPTCHALENS_HOME is kept if it was set at install."""
    q = shlex.quote
    lines = ["#!/bin/sh",
             "# CaptchaLens native messaging host, written by `captchalens native install`.",
             "# The browser runs this for the CaptchaLens extension; it runs the project's Python.",
             f"{PYTHON_VAR}={q(python)}",
             f'if [ ! -x "${PYTHON_VAR}" ]; then',
             f'  echo "CaptchaLens native host: ${PYTHON_VAR} is gone; run \'captchalens native '
             f'install\' again with the Python that has CaptchaLens" >&2',
             "  exit 127",
             "fi"]
    if os.environ.get("CAPTCHALENS_HOME"):
        lines.append(f"export CAPTCHALENS_HOME={q(str(home().absolute()))}")
    lines.append("export TF_CPP_MIN_LOG_LEVEL=3")
    models = "".join(f" --model {q(str(Path(m).expanduser().absolute()))}" for m in model_dirs or [])
    # -P: the folder the browser starts it in is not put on sys.path (no module there can shadow ours)
    lines.append(f'exec "${PYTHON_VAR}" -P -m captchalens.native_host.native{models} "$@"')
    return "\n".join(lines) + "\n"


def host_manifest(launcher: Path, extension_id: str) -> dict:
    return {"name": HOST_NAME, "description": "CaptchaLens local solver (native messaging host)",
            "path": str(launcher), "type": "stdio",
            "allowed_origins": [f"chrome-extension://{extension_id}/"]}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError):
        return "unreadable"


def _is_ours(data) -> bool:
    return isinstance(data, dict) and data.get("name") == HOST_NAME and data.get("path") == str(launcher_path())


def _record() -> list[str]:
    data = _read_json(folder() / RECORD)
    return [p for p in data if isinstance(p, str)] if isinstance(data, list) else []


def _save_record(paths: list[str]) -> None:
    if paths:
        folder().mkdir(parents=True, exist_ok=True)
        write_atomic(folder() / RECORD, json.dumps(sorted(set(paths)), indent=1) + "\n", 0o644)
    else:
        (folder() / RECORD).unlink(missing_ok=True)


def _recorded_places() -> list[Place]:
    return [profile_place(Path(p).parent.parent) for p in _record()
            if Path(p).parent.parent not in {b.config for b in browser_places()}]


# ---- the three commands ----------------------------------------------------------------------
def install(profile_dirs=None, model_dirs=None, extension_id: str | None = None,
            python: str | None = None) -> list[str]:
    """Write the launcher and the manifests; lines saying what was written."""
    extension_id = extension_id or extension_id_from_manifest()
    if not extension_id:
        raise HostError(f"no extension ID: {paths.extension_manifest(required=False) or 'no extension/manifest.json'} "
                        f"has no \"key\"; pass --extension-id")
    python = python or sys.executable
    if not python or not os.path.isabs(python):
        raise HostError("cannot tell which Python runs CaptchaLens (sys.executable is empty)")
    for m in model_dirs or []:
        if not Path(m).expanduser().is_dir():
            raise HostError(f"--model {m}: not a folder")
    if profile_dirs:
        places = [profile_place(p) for p in profile_dirs]
        missing = [str(p.config) for p in places if not p.config.is_dir()]
        if missing:
            raise HostError(f"--profile-dir {missing[0]}: not a folder (give the browser's "
                            f"user-data dir, e.g. ~/.config/chromium)")
    else:
        places = [p for p in browser_places() if p.config.is_dir()]
        if not places:
            raise HostError(f"no profile of {', '.join(BROWSERS)} found (looked in "
                            f"{browser_places()[0].config.parent}): start the browser once, or pass "
                            f"--profile-dir DIR")
    launcher = launcher_path()
    launcher.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(launcher, launcher_text(python, model_dirs), 0o755)
    text = json.dumps(host_manifest(launcher, extension_id), indent=2) + "\n"
    lines, written = [f"launcher: {launcher} (runs {python})"], []
    for place in places:
        existing = _read_json(place.manifest)
        if existing is not None and not _is_ours(existing) and not (
                isinstance(existing, dict) and existing.get("name") == HOST_NAME):
            lines.append(f"{place.label}: skipped, {place.manifest} is not a CaptchaLens manifest")
            continue
        place.manifest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(place.manifest, text, 0o644)
        written.append(str(place.manifest))
        lines.append(f"{place.label}: {place.manifest}")
    _save_record(_record() + written)
    return lines


def uninstall(profile_dirs=None) -> list[str]:
    """Remove our manifests (all of them, or those of the given profiles); the launcher goes
    with the last one."""
    if profile_dirs:
        places = [profile_place(p) for p in profile_dirs]
    else:
        places = browser_places() + _recorded_places()
    lines, removed = [], set()
    for place in places:
        data = _read_json(place.manifest)
        if data is None:
            continue
        if not _is_ours(data):
            lines.append(f"{place.label}: left {place.manifest} alone (not written by this install)")
            continue
        place.manifest.unlink()
        removed.add(str(place.manifest))
        lines.append(f"{place.label}: removed {place.manifest}")
        try:
            place.manifest.parent.rmdir()  # only if it is empty now
        except OSError:
            pass
    left = [p for p in _record() if p not in removed and _is_ours(_read_json(Path(p)))]
    _save_record(left)
    if not left and launcher_path().exists():
        launcher_path().unlink()
        lines.append(f"removed the launcher {launcher_path()}")
    return lines or ["nothing to remove: the native host was not installed"]


def launcher_python(launcher: Path) -> str | None:
    """The Python a launcher runs (its CAPTCHALENS_PYTHON= line)."""
    try:
        for line in launcher.read_text(encoding="utf-8").splitlines():
            if line.startswith(f"{PYTHON_VAR}="):
                return shlex.split(line.partition("=")[2])[0]
    except (OSError, UnicodeDecodeError, ValueError, IndexError):
        return None
    return None


def check_launcher() -> list[str]:
    """Problems with the launcher and its Python, each a sentence; [] when it works."""
    launcher = launcher_path()
    if not launcher.is_file():
        return [f"the launcher {launcher} is missing: run `captchalens native install`"]
    if not os.access(launcher, os.X_OK):
        return [f"the launcher {launcher} is not executable: run `captchalens native install`"]
    python = launcher_python(launcher)
    if python is None:
        return [f"the launcher {launcher} names no Python: run `captchalens native install`"]
    if not os.access(python, os.X_OK):
        return [f"wrong Python: the launcher runs {python}, which no longer exists; run "
                f"`captchalens native install` with the Python that has CaptchaLens"]
    problems = []
    if python != sys.executable:
        problems.append(f"wrong Python: the launcher runs {python}, this command runs "
                        f"{sys.executable}; run `captchalens native install` to point it here")
    try:
        check = subprocess.run([python, "-c", "import captchalens.native_host.native"],
                               capture_output=True, text=True, timeout=IMPORT_CHECK_S)
        if check.returncode:
            last = (check.stderr.strip().splitlines() or ["no output"])[-1]
            problems.append(f"wrong Python: {python} cannot run the host ({last})")
    except (OSError, subprocess.TimeoutExpired) as e:
        problems.append(f"wrong Python: {python} did not start ({e})")
    return problems


def status(profile_dirs=None) -> tuple[bool, list[str]]:
    """(installed and working somewhere, report lines)."""
    places = [profile_place(p) for p in profile_dirs] if profile_dirs else browser_places() + _recorded_places()
    lines, found = [], False
    for place in places:
        data = _read_json(place.manifest)
        if data is None:
            if place.profile or place.config.is_dir():
                lines.append(f"{place.label}: not installed")
            continue
        if not _is_ours(data):
            lines.append(f"{place.label}: {place.manifest} is not this install's (its path: "
                         f"{data.get('path') if isinstance(data, dict) else data})")
            continue
        found = True
        lines.append(f"{place.label}: installed ({place.manifest}), allows "
                     f"{', '.join(data.get('allowed_origins') or ['nobody'])}")
    if not lines:
        lines.append(f"no browser profile found ({', '.join(BROWSERS)}) and nothing installed")
    problems = check_launcher() if found else []
    if found:
        lines.append(f"launcher: {launcher_path()} runs {launcher_python(launcher_path())}")
    lines += problems
    return found and not problems, lines
