"""`captchalens solve [--model DIR] [--json] PATH...`

Streams: files are read and solved a chunk at a time and each answer is
printed as it comes, so memory stays flat over any number of files. A file
that cannot be read (missing, not an image, a FIFO or device, too costly to
decode) is named on stderr with the reason and the others go on; the exit
code is 1 if any file failed.
"""
from __future__ import annotations

import json
import os
import sys

TFJS_CHUNK = 2048  # images per Node run with --engine tfjs (each run starts Node and TF.js)


def register(sub) -> None:
    p = sub.add_parser("solve", help="read the text of captcha images (files or folders)",
                       description="Print the answer for each captcha image; folders are read "
                                   "file by file in name order. Files that cannot be read are "
                                   "named on stderr and skipped (exit code 1).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    p.add_argument("--model", default=None, help="model folder (default: the shipped model, or "
                                                 "$CAPTCHALENS_MODEL); 'auto': the shipped default "
                                                 "model when it is sure, else the general reader")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per line: {"path": ..., "text": ..., "confidence": ...}')
    p.add_argument("--engine", choices=["tf", "tfjs"], default="tf",
                   help="tf: TensorFlow (default); tfjs: the extension's own JS inference in Node")
    p.set_defaults(func=run)


def run(args) -> int:
    from .images import ImageError
    from .solver import STREAM_CHUNK, iter_inputs, solve_in_chunks

    items = list(iter_inputs(args.paths))  # names only: nothing is read yet
    if args.engine == "tfjs":
        from captchalens.converter.node_engine import converted_model, run_node

        model = converted_model(args.model)

        def solve(images):
            return [(r["text"], float(r["confidence"]))
                    for r in run_node(model, images, probs=False)["results"]]
        chunk = TFJS_CHUNK
    elif args.model == "auto":
        from .auto import AutoSolver

        solve, chunk = AutoSolver.shipped().solve_images, STREAM_CHUNK
    else:
        from .solver import get_solver

        solve, chunk = get_solver(args.model).solve_images, STREAM_CHUNK
    failed = 0
    try:
        for path, a in solve_in_chunks(items, solve, chunk):
            if isinstance(a, ImageError):
                failed += 1
                sys.stdout.flush()  # keep stdout and stderr in the order things happened
                print(f"captchalens: error: {a}", file=sys.stderr, flush=True)
            elif args.json:
                print(json.dumps({"path": a.path, "text": a.text, "confidence": round(a.confidence, 6)}))
            elif len(items) == 1:
                print(a.text)
            else:
                print(f"{a.path}\t{a.text}\t{a.confidence:.3f}")
        sys.stdout.flush()
    except BrokenPipeError:  # `captchalens solve dir/ | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if failed and len(items) > 1:
        print(f"captchalens: {failed} of {len(items)} files not solved (named above)", file=sys.stderr)
    return 1 if failed else 0
