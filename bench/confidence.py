"""Does "N% sure" mean N% right? The default model's confidence against its
measured accuracy, on fresh captchas of all sizes it reads, raw (the product
of the per-position maxima) and calibrated (temperature scaling with the
temperature in the model's captchalens.json: training/calibrate.py, fitted on
other captchas than these). The extension's default threshold
(extension/shared/settings.js) is derived from this table.

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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# The default threshold is the largest of THRESHOLDS that doubts at most this share of the
# right answers (below the threshold: Auto asks the host, auto-solve does not type, the
# note says "unsure"): as many wrong answers caught as that budget allows. The raw 0.35
# used before spent 1.6% of right answers to catch 66% of wrong ones.
DOUBT_BUDGET = 0.015


def _rows(conf: np.ndarray, right: np.ndarray, bins) -> list[str]:
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (conf >= lo) & ((conf < hi) if hi < 1 else (conf <= hi))
        n = int(sel.sum())
        if not n:
            rows.append(f"| {lo:.2f}–{hi:.2f} | 0 | | |")
            continue
        rows.append(f"| {lo:.2f}–{hi:.2f} | {n} | {conf[sel].mean():.3f} | "
                    f"{100 * right[sel].mean():.1f}% ({int(right[sel].sum())}/{n}) |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=4000, help="captchas per set")
    ap.add_argument("--model", default=None, help="model folder (default: shipped model)")
    ap.add_argument("--seed", type=int, default=515151)
    args = ap.parse_args()

    from captchalens.decode import confidence, decode
    from captchalens.solver import get_solver
    from captchalens.training.calibrate import BINS, ece
    from captchalens.training.generate import GenSpec, generate

    solver = get_solver(args.model)
    meta = solver.meta
    lo, hi = meta.lengths
    probs, texts = [], []
    sets = (("160x60", (160, 160), (60, 60)), ("100x60", (100, 100), (60, 60)),
            ("random", (110, 220), (50, 80)))
    t0 = time.time()
    for k, (_, w, h) in enumerate(sets):
        spec = GenSpec(charset=meta.charset, min_length=lo, max_length=hi, width=w, height=h)
        images, t = generate(spec, args.n, args.seed + k, progress=False)
        probs.append(solver.probs(images))
        texts += t
    probs = np.concatenate(probs)
    right = np.array([a == t for (a, _), t in zip(decode(probs, meta), texts)])
    raw, cal = confidence(probs, 1.0), confidence(probs, meta.temperature)
    wrong = ~right
    below = {th: right[cal < th] for th in THRESHOLDS}
    derived = max([th for th in THRESHOLDS if np.mean(cal[right] < th) <= DOUBT_BUDGET], default=None)
    fitted = (meta.calibration or {}).get("fitted_on", "—")
    lines = [
        "## Confidence — `bench/confidence.py`",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {cpu()} in {time.time() - t0:.0f} s, one run; "
        f"model `{meta.name}`; {args.n} fresh captchas at each of {', '.join(s[0] for s in sets)} "
        f"(seed {args.seed}+): {int(right.sum())} read right, {int(wrong.sum())} wrong "
        f"({100 * right.mean():.2f}%).",
        "",
        f"- **Calibrated** confidence (what the note, the popup, the host and `solve --json` show): "
        f"temperature **{meta.temperature:.4f}** from the model's `calibration`, fitted on {fitted}, "
        f"none of them in this set.",
        "- **Raw** confidence (before calibration): the product of the per-position softmax maxima, "
        "which label smoothing keeps well under 1.",
        f"- mean confidence {raw.mean():.3f} raw, {cal.mean():.3f} calibrated, against an accuracy of "
        f"{right.mean():.3f}; expected calibration error (bins below) {ece(raw, right):.4f} raw, "
        f"**{ece(cal, right):.4f}** calibrated.",
        f"- median confidence of right answers {np.median(raw[right]):.2f} raw, {np.median(cal[right]):.3f} "
        f"calibrated; of wrong answers {np.median(raw[wrong]):.2f} raw, {np.median(cal[wrong]):.2f} calibrated.",
        "",
        "### Reliability: answers by calibrated confidence",
        "",
        "| confidence | answers | mean confidence | read right |",
        "|---|---:|---:|---:|",
        *_rows(cal, right, BINS),
        "",
        "### The same answers by raw confidence",
        "",
        "| confidence | answers | mean confidence | read right |",
        "|---|---:|---:|---:|",
        *_rows(raw, right, BINS),
        "",
        "### Thresholds (calibrated confidence)",
        "",
        "| threshold | answers below it | of them right | right answers below it (needlessly doubted) "
        "| wrong answers below it (caught) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for th in THRESHOLDS:
        b = below[th]
        lines.append(f"| {th:.2f} | {len(b)} | {100 * b.mean() if len(b) else float('nan'):.0f}% | "
                     f"{100 * np.mean(cal[right] < th):.2f}% | {100 * np.mean(cal[wrong] < th):.0f}% |")
    lines += [
        "",
        f"Default threshold: the largest of these that doubts at most {100 * DOUBT_BUDGET:g}% of the right "
        f"answers (below it Auto asks the local host, auto-solve does not type, the note says \"unsure\"): "
        f"**{derived}**." + (f" The answers below it are right {100 * below[derived].mean():.0f}% of the time, "
                            f"against {100 * right.mean():.1f}% overall." if derived else ""),
    ]
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "results" / "confidence.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
