"""Cheap ways to read a new site better with no labels: the shipped general reader's own weights,
(a) as shipped (160x48, every character), (b) with its output cut to the character families (digits, upper, lower case) the site's
labels use (training/retrain.py widen_charset: what a site model starts from),
(c) rebuilt at the images' own aspect (48 high, as wide as their median shape: the CTC reader's
weights do not depend on the width), (d) both.  label_curve's test captchas, ignoring case.

    .venv/bin/python bench/zero_shot_variants.py        # a minute or two

Results: bench/results/zero_shot_variants.md.
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import label_curve as lc  # noqa: E402
from _machine import cpu  # noqa: E402

def read(probs: np.ndarray, meta, allowed: set[str]) -> list[str]:
    """The solver's own decoding, with the characters not allowed never chosen (blank = last class)."""
    from captchalens.decode import decode

    keep = np.array([c in allowed for c in meta.charset] + [True])
    return [t for t, _ in decode(np.where(keep, probs, 0.0), meta)]


def main() -> int:
    import shutil

    from captchalens.paths import GENERAL_MODEL
    from captchalens.preprocess import Preprocessor
    from captchalens.solver import Solver
    from captchalens.training import networks
    from captchalens.training.folder import load_folder
    from captchalens.training.retrain import base_width, choose_input, widen_charset

    solver = Solver(GENERAL_MODEL)
    meta = solver.meta
    width_mult = base_width(solver.model, meta)
    work = Path(tempfile.mkdtemp(prefix="zero-shot-"))
    rows = []
    try:
        for name, (test, _, _) in lc.datasets(work, None).items():
            images, texts, _ = load_folder(test)
            allowed = set(widen_charset("".join(sorted(set("".join(texts)))), meta.charset))
            families = "".join(c for c in meta.charset if c in allowed)
            families = families if len(families) < 20 else f"{families[0]}..{families[-1]} ({len(families)})"
            w, h, _ = choose_input(images)  # the input a site model of these images gets
            wide = dataclasses.replace(meta, input_width=w, input_height=h)
            model = networks.build("general", wide, width=width_mult)
            model.set_weights(solver.model.get_weights())
            p_ship = solver.probs(images)
            p_wide = model.predict(Preprocessor(wide)(images).astype(np.float32), batch_size=256, verbose=0)

            def acc(got):
                return np.mean([a.lower() == t.lower() for a, t in zip(got, texts)])

            full = set(meta.charset)
            rows.append((name, f"{w}x{h}", families, acc(read(p_ship, meta, full)), acc(read(p_ship, meta, allowed)),
                         acc(read(p_wide, wide, full)), acc(read(p_wide, wide, allowed))))
            print(*rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = ["## Zero-shot variants of the general reader (bench/zero_shot_variants.py)", "",
             f"Whole captcha ignoring case on label_curve's test captchas, the shipped weights, no training; {cpu()}.",
             "", "| data set | as shipped (160x48) | output cut to the labels' families | at the images' aspect | both |",
             "|---|---|---|---|---|"]
    for name, size, families, a, b, c, d in rows:
        lines.append(f"| {name} | {100 * a:.1f}% | {100 * b:.1f}% ({families}) | {100 * c:.1f}% ({size}) "
                     f"| {100 * d:.1f}% |")
    (lc.RESULTS / "zero_shot_variants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
