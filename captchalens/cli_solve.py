"""`captchalens solve [--model DIR] [--json] PATH...`"""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("solve", help="read the text of captcha images (files or folders)",
                       description="Print the answer for each captcha image; folders are read "
                                   "file by file in name order.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    p.add_argument("--model", default=None, help="model folder (default: the shipped model, or "
                                                 "$CAPTCHALENS_MODEL)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per line: {"path": ..., "text": ..., "confidence": ...}')
    p.add_argument("--engine", choices=["tf", "tfjs"], default="tf",
                   help="tf: TensorFlow (default); tfjs: the extension's own JS inference in Node")
    p.set_defaults(func=run)


def run(args) -> int:
    from .solver import expand_paths

    paths = expand_paths(args.paths)
    if args.engine == "tfjs":
        from .tfjs_engine import solve_files_tfjs

        answers = solve_files_tfjs(paths, args.model)
    else:
        from .solver import get_solver

        answers = get_solver(args.model).solve_files(paths)
    for a in answers:
        if args.json:
            print(json.dumps({"path": a.path, "text": a.text, "confidence": round(a.confidence, 6)}))
        elif len(answers) == 1:
            print(a.text)
        else:
            print(f"{a.path}\t{a.text}\t{a.confidence:.3f}")
    sys.stdout.flush()
    return 0
