"""Calibrated confidence: fit one temperature so that "N% sure" means N% right.

A model's raw confidence (the product of its per-position softmax maxima) is
not a probability a person can read: label smoothing keeps every maximum well
under 1, so the shipped default said "70% sure" while it read 99.5% right.
Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks",
2017) re-scales the softmax to softmax(log(p) / T) — the same as dividing the
logits by T — with one scalar T fitted on captchas the weights never trained
on. It never changes which class is on top, so answers stay the same; only
the confidence moves. captchalens/decode.py and extension/lib/engine.js apply
it identically; the model keeps T in its captchalens.json (`calibration`).

What is fitted: T minimises the log loss (binary NLL) of the confidence the
product shows — the whole answer's — against whether the whole answer was
right. Not the usual per-character NLL, because
  * the number a person reads is the whole answer's, and a per-character fit
    only calibrates it if the positions' errors are independent;
  * a CTC model has no per-step labels (only an alignment-free text), so a
    per-character NLL does not exist for it; this one is the same for both;
and not "match the mean confidence to the accuracy" or an ECE minimum: the
log loss is a proper scoring rule (minimised by the true probability), uses
every answer rather than a bin count, and is smooth in T.

    captchalens calibrate MODEL                  # fresh generated captchas (generated models)
    captchalens calibrate MODEL --data FOLDER    # a labelled folder the model did not train on

At training time (training/train.py) T is fitted on the validation set: held
out from every weight update.
"""
from __future__ import annotations

import datetime as _dt
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captchalens.contract import TEMPERATURE_RANGE, ContractError
from captchalens.decode import confidence

# Seed of the fresh captchas `captchalens calibrate` generates: unused by training
# (train seeds are small; validation is seed + 1,000,003), by the fresh metrics
# (777_00x) and by bench/confidence.py (515_151+).
FRESH_SEED = 919_191
FRESH_N = 8000  # fresh captchas per calibration (~40 wrong answers for a 99.5% reader)
MIN_HELD_OUT = 50  # fewer validation captchas than this at the end of training: left uncalibrated
BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)  # reliability bins
_EPS = 1e-12  # confidences are clipped to [eps, 1-eps] inside the log loss


class CalibrationError(ContractError):
    """A temperature cannot be fitted on these captchas; says why."""


@dataclass
class Fit:
    temperature: float
    n: int
    right: int
    log_loss: tuple[float, float]  # (raw, calibrated)
    ece: tuple[float, float]  # expected calibration error over BINS, (raw, calibrated)
    mean_confidence: tuple[float, float]

    @property
    def accuracy(self) -> float:
        return self.right / self.n

    def record(self, fitted_on: str) -> dict:
        """The `calibration` object kept in captchalens.json."""
        return {"temperature": round(self.temperature, 5),
                "method": "temperature scaling; T minimises the log loss of the whole answer's confidence",
                "fitted_on": fitted_on, "n": self.n, "right": self.right,
                "log_loss": [round(v, 5) for v in self.log_loss],
                "ece": [round(v, 5) for v in self.ece],
                "mean_confidence": [round(v, 5) for v in self.mean_confidence],
                "fitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}

    def summary(self) -> str:
        return (f"temperature {self.temperature:.4f} on {self.n} captchas ({self.right} right, "
                f"{100 * self.accuracy:.2f}%): mean confidence {self.mean_confidence[0]:.3f} -> "
                f"{self.mean_confidence[1]:.3f}, log loss {self.log_loss[0]:.4f} -> {self.log_loss[1]:.4f}, "
                f"calibration error {self.ece[0]:.4f} -> {self.ece[1]:.4f}")


def log_loss(conf: np.ndarray, right: np.ndarray) -> float:
    c = np.clip(conf, _EPS, 1 - _EPS)
    return float(-np.mean(np.where(right, np.log(c), np.log1p(-c))))


def ece(conf: np.ndarray, right: np.ndarray, bins=BINS) -> float:
    """Expected calibration error: |accuracy - mean confidence| per bin, weighted by its share."""
    idx = np.clip(np.searchsorted(bins, conf, side="right") - 1, 0, len(bins) - 2)
    total = 0.0
    for b in range(len(bins) - 1):
        sel = idx == b
        if sel.any():
            total += sel.mean() * abs(right[sel].mean() - conf[sel].mean())
    return float(total)


def fit_temperature(probs: np.ndarray, right) -> Fit:
    """probs [N, positions, classes] of N captchas; right[i]: was answer i right.
    Returns the T in TEMPERATURE_RANGE of least log loss (a log-spaced grid, then
    golden-section search around its best point)."""
    probs = np.asarray(probs, np.float32)
    right = np.asarray(right, bool)
    n, k = len(right), int(right.sum())
    if n != len(probs):
        raise CalibrationError(f"{len(probs)} outputs but {n} right/wrong marks")
    if k == 0 or k == n:
        raise CalibrationError(
            f"cannot fit a temperature: all {n} answers are {'right' if k else 'wrong'}, so any "
            f"confidence {'up to 100%' if k else 'down to 0%'} fits them; use more captchas")
    loss = lambda u: log_loss(confidence(probs, math.exp(u)), right)  # noqa: E731 (u = log T)
    lo, hi = (math.log(t) for t in TEMPERATURE_RANGE)
    grid = np.linspace(lo, hi, 61)
    best = int(np.argmin([loss(u) for u in grid]))
    a, b = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(40):  # the bracket shrinks to ~1e-9 of its width
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = loss(d)
    t = float(min(max(math.exp((a + b) / 2), TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1]))
    raw, cal = confidence(probs, 1.0), confidence(probs, t)
    return Fit(temperature=t, n=n, right=k, log_loss=(log_loss(raw, right), log_loss(cal, right)),
               ece=(ece(raw, right), ece(cal, right)), mean_confidence=(float(raw.mean()), float(cal.mean())))


def fit_answers(probs: np.ndarray, meta, texts: list[str]) -> Fit:
    """Fit on model outputs and the true texts, answers read as the solver reads them."""
    from captchalens.decode import decode

    answers = decode(probs, meta)
    return fit_temperature(probs, [a == t for (a, _), t in zip(answers, texts)])


def on_validation(model, meta, x_va, t_va: list[str]) -> dict | None:
    """At the end of training: fit on the validation set (uint8 model inputs as
    training/train.py keeps them: an array, or wide.WideImages) and return the `calibration`
    record (see on_probs)."""
    from .wide import predict

    return on_probs(predict(model, meta, x_va), meta, t_va)


def on_probs(probs: np.ndarray, meta, texts: list[str]) -> dict | None:
    """The `calibration` record fitted on held-out outputs and their true texts; None, with a note
    on stderr, when it cannot be fitted (fewer than MIN_HELD_OUT captchas, or every one read right
    or every one wrong, as a tiny run may)."""
    if len(texts) < MIN_HELD_OUT:
        print(f"captchalens: note: confidence left uncalibrated: {len(texts)} held-out captchas are too few "
              f"to fit it (at least {MIN_HELD_OUT}); later: captchalens calibrate MODEL --data FOLDER",
              file=sys.stderr)
        return None
    try:
        fit = fit_answers(probs, meta, texts)
    except CalibrationError as e:
        print(f"captchalens: note: confidence left uncalibrated: {e}", file=sys.stderr)
        return None
    print(f"confidence calibrated: {fit.summary()}", file=sys.stderr)
    return fit.record(f"the validation set: {fit.n} captchas held out from training")


def render_share(meta) -> float:
    """The share of rendered captchas (training/render.py) in a model's training mix."""
    shares = meta.trained_on.get("shares") or {} if isinstance(meta.trained_on, dict) else {}
    return float(sum(v for k, v in shares.items() if "render" in k))


def fresh_captchas(meta, n: int, seed: int, workers: int | None = None):
    """n fresh captchas like those a generated model trained on: its recorded `captcha`-package
    scheme, and rendered ones in the share it trained on (the general reader's mix)."""
    from .generate import generate, trained_spec

    spec = trained_spec(meta)
    if spec is None:
        raise CalibrationError(f"model {meta.name!r} was not trained on generated captchas: "
                               f"calibrate it on labelled captchas it did not train on (--data FOLDER)")
    n_render = round(n * render_share(meta))
    images, texts = generate(spec, n - n_render, seed, workers=workers, progress=False)
    if n_render:
        from .render import RenderSpec

        rendered = RenderSpec(min_length=spec.min_length, max_length=spec.max_length)
        more, more_texts = generate(rendered, n_render, seed + 1, workers=workers, progress=False)
        images, texts = images + more, texts + more_texts
    return images, texts


def calibrate_model(model_dir, data: str | None = None, n: int = FRESH_N, seed: int = FRESH_SEED,
                    workers: int | None = None) -> Fit:
    """Fit a model folder's temperature and write it into its captchalens.json."""
    from captchalens.solver import Solver

    solver = Solver(model_dir, fast=False)
    meta = solver.meta
    if data:
        from .folder import load_folder

        images, texts, report = load_folder(data, meta.charset, meta.lengths)
        print(report.summary(), file=sys.stderr)
        where = f"{report.used} labelled captchas of {Path(data).name}/"
    else:
        images, texts = fresh_captchas(meta, n, seed, workers)
        share = render_share(meta)
        mix = f", {share:.0%} of them rendered as in its training mix" if share else ""
        where = f"{n} fresh generated captchas (seed {seed}) like those it trained on{mix}"
    fit = fit_answers(solver.probs(images), meta, texts)
    meta.calibration = fit.record(where)
    if len(meta.width_scales) > 1:  # refitted on the reads that answer, chosen at that temperature
        fit = fit_answers(solver.answer_probs(images), meta, texts)
        meta.calibration = fit.record(where + (f", each read at {meta.width_scales} %, "
                                               f"{'the text most reads give' if meta.width_combine == 'vote' else 'the surest read'} "
                                               f"answering"))
    meta.validate().save(solver.model_dir)
    return fit


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="fit a model's confidence temperature so 'N%% sure' means N%% right",
                       description="Fit one temperature (temperature scaling) on captchas the model did not "
                                   "train on and keep it in the model's captchalens.json. Run `captchalens "
                                   "convert` afterwards to give the extension the new confidence.")
    p.add_argument("model", help="model folder")
    p.add_argument("--data", help="folder of labelled captchas the model did not train on "
                                  "(default: fresh generated ones, for a model trained on generated captchas)")
    p.add_argument("-n", type=int, default=FRESH_N, help=f"fresh captchas to generate (default {FRESH_N})")
    p.add_argument("--seed", type=int, default=FRESH_SEED, help=f"generation seed (default {FRESH_SEED})")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    if args.n < 1:
        print("captchalens: error: -n must be at least 1", file=sys.stderr)
        return 2
    fit = calibrate_model(args.model, data=args.data, n=args.n, seed=args.seed)
    print(fit.summary())
    print(f"wrote {Path(args.model) / 'captchalens.json'}; next: captchalens convert --model {args.model}")
    return 0
