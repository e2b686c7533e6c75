"""Where CaptchaLens keeps the user's own things: $CAPTCHALENS_HOME (default ~/.captchalens).

    token              the local host's per-install secret (0600)
    models/<name>/     Keras model folders served by the host besides the shipped default
    samples/<site>/    labelled captchas collected for retraining (file name = label)
"""
from __future__ import annotations

import os
import re
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("CAPTCHALENS_HOME") or Path.home() / ".captchalens")


def token_path() -> Path:
    return home() / "token"


def models_dir() -> Path:
    return home() / "models"


def safe_name(name: str, what: str = "name") -> str:
    """A model or site name safe as one folder name (letters, digits, . _ -)."""
    name = (name or "").strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name) or ".." in name:
        raise ValueError(f"{what} {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return name


def samples_dir(site: str | None = None) -> Path:
    base = home() / "samples"
    return base / safe_name(site, "site") if site else base / "unsorted"
