"""Where things live: the one module that knows.

* The shipped models are package data (`captchalens/models/`): found from an
  installed package as well as from the checkout.
* The extension (`extension/`), its Node runner and `node_modules/` belong to
  the project checkout, not to the Python package.  From an editable install or
  the checkout itself they are beside the package; from any other install, set
  ``CAPTCHALENS_CHECKOUT`` to the checkout.  The commands that need them say so
  when they cannot find them (CheckoutMissing), and only those commands.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_MODELS = PACKAGE_DIR / "models"  # the shipped Keras models, one folder each
DEFAULT_MODEL = PACKAGE_MODELS / "default"  # reads the `captcha` package's scheme
GENERAL_MODEL = PACKAGE_MODELS / "general"  # the universal reader (issue 9): schemes never seen
MODEL_ENV = "CAPTCHALENS_MODEL"
CHECKOUT_ENV = "CAPTCHALENS_CHECKOUT"


def default_model_dir() -> Path:
    """The model used wherever none is named (solve, the host, convert, the demo page):
    $CAPTCHALENS_MODEL if set, else the shipped default model."""
    env = os.environ.get(MODEL_ENV)
    return Path(env).expanduser() if env else DEFAULT_MODEL


class CheckoutMissing(UserError):
    """The project checkout (extension/, node_modules/) is not where we looked."""


def checkout(required: bool = True) -> Path | None:
    """The project checkout: $CAPTCHALENS_CHECKOUT, else the folder above the package when it
    holds extension/manifest.json (editable install, running from the checkout)."""
    env = os.environ.get(CHECKOUT_ENV)
    root = Path(env).expanduser().resolve() if env else PACKAGE_DIR.parent
    if (root / "extension" / "manifest.json").is_file():
        return root
    if not required:
        return None
    where = f"${CHECKOUT_ENV}={env}" if env else f"{root} (the folder above the installed package)"
    raise CheckoutMissing(f"the CaptchaLens checkout (extension/, node_modules/) is not at {where}: "
                          f"run this from the project checkout or set {CHECKOUT_ENV} to it")


def extension_dir(required: bool = True) -> Path | None:
    root = checkout(required)
    return root / "extension" if root else None


def extension_models() -> Path:
    """The converted TF.js models the extension ships (`captchalens convert`'s default --out)."""
    return extension_dir() / "models"


def extension_manifest(required: bool = True) -> Path | None:
    """extension/manifest.json (its "key" fixes the extension's ID); None when not required and
    there is no checkout."""
    ext = extension_dir(required)
    return ext / "manifest.json" if ext else None


def node_modules() -> Path:
    return checkout() / "node_modules"


def node_solver() -> Path:
    """extension/node/node_solver.js: the extension's engine run in Node."""
    return extension_dir() / "node" / "node_solver.js"
