"""`captchalens` — one command, with subcommands.

    captchalens solve captcha.png           # the answer
    captchalens train / eval / gen          # training/cli.py
    captchalens convert                     # converter/cli.py
    captchalens serve                       # native_host/cli.py
    captchalens native install              # native_host/native_cli.py
"""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .contract import ContractError
from .images import ImageError

# Each module registers its own subcommands: register(subparsers).
COMMAND_MODULES = [
    "captchalens.cli_solve",
    "captchalens.training.cli",
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
    except (ContractError, ImageError) as e:
        print(f"captchalens: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ncaptchalens: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # user-facing errors from the data loaders, converter, host
        if type(e).__name__ in {"DataError", "ConvertError", "HostError"}:
            print(f"captchalens: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
