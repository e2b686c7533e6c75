"""Cheap ways to read a new site better with no labels: the shipped general reader's own weights,
(a) every image squeezed into its reference 160x48 (how it was trained, and how it read before
its width rule), (b) each image once at the width its rule gives (contract.WIDTH_RULES: the
geometric mean of 160 and the image's own width at 48 rows), (b') at 85, 100 and 115 % of that
width, the surest read answering (the rule as shipped before), (b'') as shipped: at each of the
rule's scales of that width, the text most reads give answering, (c) as shipped with its output cut to the
character families (digits, upper, lower case) the site's labels use (training/retrain.py
widen_charset: what a site model starts from), (d) at the images' own aspect (48 high, as wide as
their median shape: the input a site model gets), (e) the aspect and the families together.
label_curve's test captchas, ignoring case.  The rule was chosen on fresh renders of the
reader's own training mix (training/train.py GENERAL_WIDTH_RULE), not on these sets.

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

    from captchalens.contract import pixel_preprocessing
    from captchalens.decode import decode
    from captchalens.files import sha256_file
    from captchalens.images import to_rgba
    from captchalens.paths import GENERAL_MODEL
    from captchalens.preprocess import Preprocessor
    from captchalens.solver import Solver
    from captchalens.training import networks
    from captchalens.training.folder import load_folder
    from captchalens.training.retrain import base_width, choose_input, widen_charset

    solver = Solver(GENERAL_MODEL)
    meta = solver.meta
    width_mult = base_width(solver.model, meta)
    fixed_pre = pixel_preprocessing(meta.preprocessing)  # the same pixels, no width rule
    work = Path(tempfile.mkdtemp(prefix="zero-shot-"))
    rows = []

    def fixed_probs(images, w, h):
        m = dataclasses.replace(meta, input_width=w, input_height=h, preprocessing=fixed_pre)
        model = networks.build("general", m, width=width_mult)
        model.set_weights(solver.model.get_weights())
        return model.predict(Preprocessor(m)(images).astype(np.float32), batch_size=256, verbose=0)

    try:
        for name, (test, _, _) in lc.datasets(work, None).items():
            images, texts = load_folder(test)[:2]
            allowed = set(widen_charset("".join(sorted(set("".join(texts)))), meta.charset))
            families = "".join(c for c in meta.charset if c in allowed)
            families = families if len(families) < 20 else f"{families[0]}..{families[-1]} ({len(families)})"
            w, h, _ = choose_input(images)  # the input a site model of these images gets
            rgba = [to_rgba(im) for im in images]
            ruled = sorted({meta.input_width_for(im.shape[1], im.shape[0]) for im in rgba})
            p_ref = fixed_probs(images, meta.input_width, meta.input_height)
            p_rule = solver.probs(rgba)  # one read, at the rule's width
            p_wide = fixed_probs(images, w, h)

            def acc(got):
                return np.mean([a.lower() == t.lower() for a, t in zip(got, texts)])

            full = set(meta.charset)
            shipped = [t for t, _ in solver.solve_images(rgba)]  # the rule's scales, combined as it says
            three = [decode(solver.probs(rgba, p), meta) for p in (85, 100, 115)]  # the rule before its vote
            surest3 = [max(r, key=lambda a: a[1])[0] for r in zip(*three)]
            with_families = [t for t, _ in solver.solve_images(rgba, "".join(sorted(allowed)))]
            rows.append((name, "/".join(map(str, ruled)), f"{w}x{h}", families, acc(read(p_ref, meta, full)),
                         acc(read(p_rule, meta, full)), acc(surest3), acc(shipped), acc(with_families),
                         acc(read(p_wide, meta, full)), acc(read(p_wide, meta, allowed))))
            print(*rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = ["## Zero-shot variants of the general reader (bench/zero_shot_variants.py)", "",
             f"Whole captcha ignoring case on label_curve's test captchas, the shipped weights "
             f"({meta.name}, model.h5 sha256 {sha256_file(GENERAL_MODEL / meta.files.get('keras', 'model.h5'))[:12]}), "
             f"no training; {cpu()}.",
             "", f"| data set | every image at 160x48 | its width rule, one read | the rule at 85/100/115 %, the "
                 f"surest read (shipped before) | as shipped: the rule at {'/'.join(map(str, sorted(meta.width_scales)))} %, "
                 f"{'the text most reads give' if meta.width_combine == 'vote' else 'the surest read'} | shipped, "
                 "output cut to the labels' families | at the images' aspect | aspect and families |",
             "|---|---|---|---|---|---|---|---|"]
    for name, ruled, size, families, a, b, s3, c, d, e, f in rows:
        lines.append(f"| {name} | {100 * a:.1f}% | {100 * b:.1f}% (x{ruled}) | {100 * s3:.1f}% | **{100 * c:.1f}%** "
                     f"| {100 * d:.1f}% ({families}) | {100 * e:.1f}% ({size}) | {100 * f:.1f}% |")
    mean = [np.mean([r[i] for r in rows]) for i in range(4, 11)]
    lines.append("| mean | " + " | ".join(f"{100 * v:.1f}%" for v in mean) + " |")
    (lc.RESULTS / "zero_shot_variants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
