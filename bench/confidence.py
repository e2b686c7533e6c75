"""How far the default model's confidence can be trusted: the share of right
answers and of wrong answers below each threshold, on fresh captchas of all
sizes. The extension's default threshold (extension/shared/settings.js) is
read from this table.

    .venv/bin/python bench/confidence.py [--n 4000] [--model DIR]

Figures go to bench/results/confidence.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=4000, help="captchas per set")
    ap.add_argument("--model", default=None, help="model folder (default: shipped model)")
    ap.add_argument("--seed", type=int, default=515151)
    args = ap.parse_args()

    from captchalens.solver import get_solver
    from captchalens.training.generate import GenSpec, generate

    solver = get_solver(args.model)
    meta = solver.meta
    lo, hi = meta.lengths
    right, wrong = [], []
    sets = (("160x60", (160, 160), (60, 60)), ("100x60", (100, 100), (60, 60)),
            ("random", (110, 220), (50, 80)))
    for k, (_, w, h) in enumerate(sets):
        spec = GenSpec(charset=meta.charset, min_length=lo, max_length=hi, width=w, height=h)
        images, texts = generate(spec, args.n, args.seed + k, progress=False)
        for a, t in zip(solver.solve_pixels(images), texts):
            (right if a.text == t else wrong).append(a.confidence)
    right, wrong = np.array(right), np.array(wrong)
    lines = [
        "## Confidence — `bench/confidence.py`",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')}; model `{meta.name}`; {args.n} fresh captchas "
        f"at each of {', '.join(s[0] for s in sets)} (seed {args.seed}+): {len(right)} read right, "
        f"{len(wrong)} wrong. Confidence = product of the per-position maxima (label smoothing "
        f"keeps it well under 1).",
        "",
        f"- median confidence: right answers {np.median(right):.2f}, wrong answers "
        f"{np.median(wrong) if len(wrong) else float('nan'):.2f}",
        "",
        "| threshold | right answers below it (needlessly doubted) | wrong answers below it (caught) |",
        "|---:|---:|---:|",
    ]
    for th in THRESHOLDS:
        caught = 100 * np.mean(wrong < th) if len(wrong) else float("nan")
        lines.append(f"| {th:.2f} | {100 * np.mean(right < th):.1f}% | {caught:.0f}% |")
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "results" / "confidence.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
