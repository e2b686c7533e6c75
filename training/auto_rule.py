"""Choose the "auto" reader's threshold (captchalens/auto.py) on fresh captchas.

    python -m captchalens.training.auto_rule                 # the shipped default + general
    python -m captchalens.training.auto_rule --first A --then B --out rule.json -n 1000

Both models read the same fresh captchas: half from the `captcha` package as
`default` was trained on (its charset and length, the sizes it reads), half
from the broad renderer's training mix (new seeds).  For every threshold the
answers of "first when it is that sure, else then" are scored (whole captcha,
ignoring case: a site may or may not care, the general reader reads case).
The threshold kept is the middle of the best plateau.  No held-out scheme and
no real-world set is used: those stay measures of the result.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

FIT_SEED_CAPTCHA, FIT_SEED_RENDER = 424_001, 424_002  # seeds no training run uses


def fit_threshold(first_conf: np.ndarray, first_ok: np.ndarray, then_ok: np.ndarray) -> tuple[float, float]:
    """The threshold maximising accuracy of 'first if conf >= t else then', and that accuracy.

    Candidate thresholds sit between consecutive sorted confidences; among the best,
    the middle one is returned (so a little drift in either direction costs least)."""
    order = np.argsort(first_conf)
    conf, f_ok, t_ok = first_conf[order], first_ok[order].astype(int), then_ok[order].astype(int)
    n = len(conf)
    # threshold below item k (k = 0..n): items [0, k) go to `then`, [k, n) stay with `first`
    correct = np.concatenate([[0], np.cumsum(t_ok)]) + np.concatenate([np.cumsum(f_ok[::-1])[::-1], [0]])
    best = correct.max()
    ks = np.flatnonzero(correct == best)
    k = int(ks[len(ks) // 2])
    edges = np.concatenate([[0.0], (conf[:-1] + conf[1:]) / 2, [1.0]]) if n else np.array([0.5])
    return float(np.clip(edges[k], 0.0, 1.0)), float(best / max(1, n))


def measure(first_dir: Path, then_dir: Path, n: int, workers: int | None = None):
    from captchalens.auto import AutoRule
    from captchalens.contract import load_meta
    from captchalens.solver import Solver

    from .generate import GenSpec, generate
    from .render import RenderSpec

    first, then = Solver(first_dir), Solver(then_dir)
    fm = load_meta(first_dir)
    lo, hi = fm.lengths
    sets = {
        "captcha": generate(GenSpec(charset=fm.charset, min_length=lo, max_length=hi, width=(110, 220),
                                    height=(50, 80), preferred=(160, 60), preferred_share=0.4),
                            n, FIT_SEED_CAPTCHA, workers=workers, progress=False),
        "render": generate(RenderSpec(), n, FIT_SEED_RENDER, workers=workers, progress=False),
    }
    conf, f_ok, t_ok, part = [], [], [], []
    for name, (images, texts) in sets.items():
        fa = first.solve_pixels(images)
        ta = then.solve_pixels(images)
        conf += [a.confidence for a in fa]
        f_ok += [a.text.lower() == t.lower() for a, t in zip(fa, texts)]
        t_ok += [a.text.lower() == t.lower() for a, t in zip(ta, texts)]
        part += [name] * len(texts)
    conf, f_ok, t_ok, part = map(np.asarray, (conf, f_ok, t_ok, part))
    sure, acc = fit_threshold(conf, f_ok, t_ok)
    measured = {"n_per_set": n, "seeds": [FIT_SEED_CAPTCHA, FIT_SEED_RENDER], "scoring": "whole captcha, ignoring case",
                "auto": round(acc, 4)}
    for name in sets:
        m = part == name
        keep = conf[m] >= sure
        measured[name] = {"first": round(float(f_ok[m].mean()), 4), "then": round(float(t_ok[m].mean()), 4),
                          "auto": round(float(np.where(keep, f_ok[m], t_ok[m]).mean()), 4),
                          "first_answers": round(float(keep.mean()), 4)}
    return AutoRule(first=fm.name, then=load_meta(then_dir).name, sure=round(sure, 4), measured=measured)


def main(argv: list[str] | None = None) -> int:
    from captchalens.auto import RULE_FILE, save_rule
    from captchalens.paths import DEFAULT_MODEL, GENERAL_MODEL

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first", default=str(DEFAULT_MODEL), help="model asked first (default: the shipped default)")
    ap.add_argument("--then", default=str(GENERAL_MODEL), help="model asked when the first is unsure "
                                                               "(default: the shipped general)")
    ap.add_argument("-n", type=int, default=2000, help="fresh captchas per set (default 2000)")
    ap.add_argument("--out", default=str(RULE_FILE), help=f"rule file to write (default {RULE_FILE})")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    rule = measure(Path(args.first), Path(args.then), args.n, args.workers)
    print(f"auto: {rule.first} when its confidence >= {rule.sure}, else {rule.then}")
    for k, v in rule.measured.items():
        print(f"  {k}: {v}")
    print(f"wrote {save_rule(rule, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
