"""Evaluate a model: accuracy, per-character accuracy, confusions, latency,
and a PNG gallery of the mistakes."""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captchalens.solver import Solver


@dataclass
class EvalResult:
    n: int
    captcha_acc: float
    char_acc: float
    confusions: list[tuple[str, str, int]]  # (truth, predicted, count), most frequent first
    ms_per_captcha_batched: float
    ms_single_median: float
    errors: list[tuple[int, str, str, float]] = field(default_factory=list)  # (index, truth, pred, conf)
    captcha_acc_nocase: float | None = None  # whole-captcha, upper and lower case counted as one

    def to_json(self) -> dict:
        return {"n": self.n, "captcha_acc": round(self.captcha_acc, 5),
                "captcha_acc_nocase": round(self.captcha_acc_nocase, 5), "char_acc": round(self.char_acc, 5),
                "confusions": [list(c) for c in self.confusions[:10]],
                "ms_per_captcha_batched": round(self.ms_per_captcha_batched, 3),
                "ms_single_median": round(self.ms_single_median, 3)}

    def report(self) -> str:
        lines = [f"captchas:               {self.n}",
                 f"whole-captcha accuracy: {100 * self.captcha_acc:.2f}% "
                 f"({100 * self.captcha_acc_nocase:.2f}% ignoring case)",
                 f"per-character accuracy: {100 * self.char_acc:.2f}%",
                 f"latency:                {self.ms_single_median:.2f} ms single (median), "
                 f"{self.ms_per_captcha_batched:.3f} ms/captcha batched"]
        if self.confusions:
            lines.append("most-confused (truth -> read: count): " + ", ".join(
                f"{a!r}->{b!r}: {n}" for a, b, n in self.confusions[:8]))
        return "\n".join(lines)


def _char_pairs(truth: str, pred: str):
    """Aligned character pairs (same length) or edit-alignment-free fallback."""
    if len(truth) == len(pred):
        return list(zip(truth, pred))
    import difflib

    pairs = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, truth, pred).get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            pairs += list(zip(truth[i1:i2], pred[j1:j2]))
        else:
            pairs += [(c, "∅") for c in truth[i1:i2]]
    return pairs


def evaluate(solver: Solver, images: list[np.ndarray], texts: list[str], single_runs: int = 50) -> EvalResult:
    t0 = time.perf_counter()
    answers = solver.solve_images(images)  # as the solver answers: every read its width rule's scales make
    batched = (time.perf_counter() - t0) * 1000 / max(1, len(images))
    right_chars = total_chars = right = right_nocase = 0
    conf = Counter()
    errors = []
    for i, ((pred, c), truth) in enumerate(zip(answers, texts)):
        right_nocase += pred.lower() == truth.lower()
        if pred == truth:
            right += 1
        else:
            errors.append((i, truth, pred, c))
        for a, b in _char_pairs(truth, pred):
            total_chars += 1
            right_chars += a == b
            if a != b:
                conf[(a, b)] += 1
        total_chars += max(0, len(truth) - len(_char_pairs(truth, pred)))
    singles = []
    for i in range(min(single_runs, len(images)) + 3):
        t = time.perf_counter()
        solver.solve_images([images[i % len(images)]])
        singles.append((time.perf_counter() - t) * 1000)
    return EvalResult(
        n=len(texts), captcha_acc=right / max(1, len(texts)),
        captcha_acc_nocase=right_nocase / max(1, len(texts)),
        char_acc=right_chars / max(1, total_chars),
        confusions=[(a, b, n) for (a, b), n in conf.most_common(20)],
        ms_per_captcha_batched=batched, ms_single_median=float(np.median(singles[3:] or singles)),
        errors=errors)


def error_gallery(images: list[np.ndarray], result: EvalResult, path: str | Path, limit: int = 48) -> Path | None:
    """A PNG grid of misread captchas with truth and reading under each."""
    if not result.errors:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errs = result.errors[:limit]
    cols = 4
    rows = math.ceil(len(errs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 1.35), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (i, truth, pred, c) in zip(axes.flat, errs):
        ax.imshow(images[i][..., :3])
        ax.set_title(f"{truth} → {pred} ({c:.2f})", fontsize=8, color="#b00")
    fig.suptitle(f"{len(result.errors)} misread of {result.n} "
                 f"(showing {len(errs)})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# Fresh-captcha checks recorded in a generated model's metadata (seeds unused in training).
FRESH_SETS = {
    "160x60": ((160, 160), (60, 60), 777_001),
    "100x60": ((100, 100), (60, 60), 777_002),
    "random_sizes": ((110, 220), (50, 80), 777_003),
}


def record_fresh_metrics(model_dir, n: int = 2000, workers: int | None = None) -> dict:
    """Measure whole-captcha accuracy on fresh generated sets and write it into
    the model's metadata (metrics.captcha_acc_<set>)."""
    from captchalens.contract import load_meta

    from .generate import GenSpec, generate, trained_spec

    solver = Solver(model_dir)
    meta = load_meta(model_dir)
    lo, hi = meta.lengths
    trained = trained_spec(meta)
    charset = trained.charset if trained else meta.charset
    for name, (w, h, seed) in FRESH_SETS.items():
        images, texts = generate(GenSpec(charset=charset, min_length=lo, max_length=hi, width=w, height=h),
                                 n, seed, workers=workers, progress=False)
        r = evaluate(solver, images, texts, single_runs=20)
        meta.metrics[f"captcha_acc_{name}"] = round(r.captcha_acc, 5)
        meta.metrics[f"char_acc_{name}"] = round(r.char_acc, 5)
    meta.metrics["fresh_n"] = n
    meta.save(model_dir)
    return meta.metrics
