"""`captchalens` — one command, with subcommands.

    captchalens solve captcha.png           # the answer
    captchalens train / eval / gen          # training/cli.py
    captchalens calibrate MODEL             # training/calibrate.py
    captchalens convert                     # converter/cli.py
    captchalens serve                       # native_host/cli.py
    captchalens native install              # native_host/native_cli.py
"""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import UserError

# Each module registers its own subcommands: register(subparsers).
COMMAND_MODULES = [
    "captchalens.cli_solve",
    "captchalens.training.cli",
    "captchalens.training.calibrate",
    "captchalens.converter.cli",
    "captchalens.native_host.cli",
    "captchalens.native_host.native_cli",
]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    p = argparse.ArgumentParser(prog="captchalens", description="Open text-captcha solver.")
    p.add_argument("--version", action="version", version=f"captchalens {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:  # a message for a person (errors.py); anything else is a bug: traceback
        print(f"captchalens: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ncaptchalens: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
