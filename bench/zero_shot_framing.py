"""Would the general reader read more with no labels if each captcha were also read framed
another way in height, voted with its width scales? The shipped weights and width rule; each
image also read with `c` rows cut from top and bottom (crop: the text fills more of the 48
rows) or `c` rows of its edge pixels added to each (pad: the text fills less), c a share of its
height; the reads of every framing at each of the rule's scales voted as the rule votes
(decode.answering), or each text scored by the sum of its reads' confidences. Chosen on fresh
renders of the reader's own training mix (as the rule's scales were: training/train.py
GENERAL_WIDTH_RULE); label_curve's test captchas show what it does on schemes never trained on.

    .venv/bin/python bench/zero_shot_framing.py        # about 25 minutes on 2 cores

Results: bench/results/zero_shot_framing.md.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import label_curve as lc  # noqa: E402
from _machine import cpu  # noqa: E402

FRAMINGS = {"as is": ("none", 0), "crop 6 %": ("crop", 6), "crop 12 %": ("crop", 12),
            "pad 8 %": ("pad", 8), "pad 16 %": ("pad", 16)}
MIX_N, MIX_SEED = 4000, 555001  # fresh renders of the mix, seeds apart from training's and calibration's


def framed(im: np.ndarray, how: tuple[str, int]) -> np.ndarray:
    kind, share = how
    c = max(1, round(im.shape[0] * share / 100))
    if kind == "crop":
        return np.ascontiguousarray(im[c:im.shape[0] - c])
    if kind == "pad":
        return np.pad(im, ((c, c), (0, 0), (0, 0)), mode="edge")
    return im


def answer(reads: list[tuple[str, float]], how: str) -> str:
    from captchalens.decode import answering

    if how == "vote":
        return reads[answering(reads, "vote")][0]
    total: dict[str, float] = defaultdict(float)
    for text, conf in reads:
        total[text] += conf
    return max(total, key=total.get)  # the first text on a tie


def reads_needed(reads: list[tuple[str, float]]) -> int:
    from captchalens.decode import settled

    for k in range(1, len(reads) + 1):
        if settled(reads[:k], len(reads), "vote"):
            return k
    return len(reads)


def main() -> int:
    from captchalens.decode import decode
    from captchalens.files import sha256_file
    from captchalens.images import to_rgba
    from captchalens.paths import GENERAL_MODEL
    from captchalens.solver import Solver
    from captchalens.training.calibrate import fresh_captchas
    from captchalens.training.folder import load_folder

    solver = Solver(GENERAL_MODEL)
    meta = solver.meta
    scales = meta.width_scales
    work = Path(tempfile.mkdtemp(prefix="zero-shot-framing-"))
    try:
        images, texts = fresh_captchas(meta, MIX_N, MIX_SEED)
        sets = {"fresh mix renders (selection)": ([to_rgba(i) for i in images], texts)}
        for name, (test, _, _) in lc.datasets(work, None).items():
            images, texts = load_folder(test)[:2]
            sets[name] = ([to_rgba(i) for i in images], texts)
        got: dict[str, tuple[list[str], dict]] = {}
        for name, (rgba, texts) in sets.items():
            res = {}
            for label, how in FRAMINGS.items():
                ims = [framed(im, how) for im in rgba]
                for p in scales:
                    res[(label, p)] = decode(solver.probs(ims, p), meta)
                print(name, label, flush=True)
            got[name] = (texts, res)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rules = [("as shipped: as is", ["as is"], "vote")]
    rules += [(f"{f} only", [f], "vote") for f in FRAMINGS if f != "as is"]
    rules += [("as is + crop 6 %", ["as is", "crop 6 %"], "vote"), ("as is + pad 8 %", ["as is", "pad 8 %"], "vote"),
              ("as is + crop 6 % + pad 8 %", ["as is", "crop 6 %", "pad 8 %"], "vote"),
              ("as is + crop 6 % + pad 8 %, confidences summed", ["as is", "crop 6 %", "pad 8 %"], "sum"),
              ("as is + crop 12 % + pad 16 %", ["as is", "crop 12 %", "pad 16 %"], "vote"),
              ("all five", list(FRAMINGS), "vote"), ("as shipped, confidences summed", ["as is"], "sum")]
    names = list(got)
    lines = ["## Framing in height, voted with the width scales (bench/zero_shot_framing.py)", "",
             f"Whole captcha ignoring case, the shipped general reader ({meta.name}, model.h5 sha256 "
             f"{sha256_file(GENERAL_MODEL / meta.files.get('keras', 'model.h5'))[:12]}) at its width rule's "
             f"scales ({'/'.join(map(str, scales))} %), each framing read at every scale (scale by scale, the "
             f"framings in the row's order), no training; {MIX_N} fresh renders of its training mix "
             f"(seed {MIX_SEED}) to choose on, label_curve's test captchas to measure; {cpu()}.", "",
             "| reads | " + " | ".join(names[:1] + [f"`{n}`" for n in names[1:]]) + " | mean of the held-out | "
             "reads a captcha, held-out (voted, stopping when known) |",
             "|---|" + "---|" * (len(names) + 2)]
    for label, framings, how in rules:
        keys = [(f, p) for p in scales for f in framings]
        row, cost = [], []
        for n in names:
            texts, res = got[n]
            per = [[res[k][i] for k in keys] for i in range(len(texts))]
            row.append(100 * np.mean([answer(r, how).lower() == t.lower() for r, t in zip(per, texts)]))
            if n != names[0]:
                cost += [reads_needed(r) if how == "vote" else len(r) for r in per]
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}%" for v in row) +
                     f" | {np.mean(row[1:]):.2f}% | {np.mean(cost):.1f} |")
    (lc.RESULTS / "zero_shot_framing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
