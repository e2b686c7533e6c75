"""How far labels can take a held-out renderer scheme: `captchalens train --data` (its defaults:
fine-tuning the general reader) on thousands of labelled captchas of the scheme, then the same 500
test captchas as bench/label_curve.py, exact and ignoring case.  A scheme that stays well below 97 %
here is limited by the scheme (glyphs a reader cannot tell apart) or the model, not by the labels.

    nice -n 5 .venv/bin/python bench/ceiling.py          # serif-wave and casual-colour, 4,000 each (~25 min)
    .venv/bin/python bench/ceiling.py --only mono-dark --n 2000

Results: bench/results/ceiling.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import label_curve as lc  # noqa: E402
from _machine import cpu  # noqa: E402

POOL_SEED = 303  # neither label_curve's labels (101) nor its test captchas (202)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="serif-wave,casual-colour")
    ap.add_argument("--n", type=int, default=4000, help="labelled captchas to train on")
    args = ap.parse_args()
    from captchalens.cli import main as captchalens
    from captchalens.paths import GENERAL_MODEL
    from captchalens.training.render import RenderSpec, draw

    path = lc.RESULTS / "ceiling.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    work = Path(tempfile.mkdtemp(prefix="ceiling-"))
    try:
        for scheme in args.only.split(","):
            spec = RenderSpec(scheme=scheme)
            test = lc._write(work / scheme / "test", (draw(spec, lc.RENDER_TEST_SEED, i) for i in range(lc.RENDER_N)))
            pool = lc._write(work / scheme / "pool", (draw(spec, POOL_SEED, i) for i in range(args.n)))
            out = work / scheme / "model"
            t0 = time.time()
            code = captchalens(["train", "--data", str(pool), "--out", str(out), "--base", str(GENERAL_MODEL)])
            r = lc.read_test(out, test) if not code else {"error": f"train exited {code}"}
            results[f"{scheme}|{args.n}"] = {**r, "seconds": round(time.time() - t0, 1), "cpu": cpu()}
            print(scheme, args.n, {k: v for k, v in r.items() if k != "examples"}, flush=True)
            path.write_text(json.dumps(results, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
