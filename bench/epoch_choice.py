"""Which epoch a `train --data` run on a few labels should keep.

Each run fine-tunes the general reader exactly as `captchalens train --data` does (label_curve's
data sets and labels), with early stopping off, and records after every epoch (and before the
first): the held-back part's whole-captcha accuracy, character error rate and loss, and the
accuracy on the 500 test captchas (ignoring case) that the run never sees.  Each rule for picking
an epoch is then replayed on the same records, with the early stopping the trainer applies
(after half the epochs, patience = a quarter), so the rules are compared on identical runs.

    nice -n 5 .venv/bin/python bench/epoch_choice.py                 # the default grid (~45 min)
    .venv/bin/python bench/epoch_choice.py --grid serif-wave:50:1 --report-only

Results: bench/results/epoch_choice.json (the records) and .md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import label_curve as lc  # noqa: E402
from _machine import cpu  # noqa: E402

RESULTS = lc.RESULTS
GRID = ("serif-wave:50:1", "captcha_images_v2:50:1", "casual-colour:50:1", "captcha_images_v2:100:3",
        "serif-wave:50:2", "captcha_images_v2:50:2", "mono-dark:50:1")
RULES = {
    "whole captchas, then loss": lambda r: (round(r["acc"], 6), -r["loss"]),
    "character errors, then loss": lambda r: (-round(r["cer"], 6), -r["loss"]),
    "loss": lambda r: -r["loss"],
}


def record_runs(grid: list[str], results: dict) -> None:
    from captchalens.paths import GENERAL_MODEL
    from captchalens.preprocess import Preprocessor
    from captchalens.training import retrain as R
    from captchalens.training.folder import load_folder

    runs = results.setdefault("runs", {})
    todo = [g for g in grid if g not in runs]
    if not todo:
        return
    work = Path(tempfile.mkdtemp(prefix="epoch-choice-"))
    test_set, records = {}, []

    def record(v, epoch):
        acc, cer, loss = v._score()
        images, texts = test_set["now"]
        probs = v.model.predict(Preprocessor(v.meta)(images).astype(np.float32), batch_size=256, verbose=0)
        got = [t for t, _ in R.decode(probs, v.meta)]
        test = float(np.mean([a.lower() == t.lower() for a, t in zip(got, texts)]))
        test_set["held_back"] = len(v.t_va)
        records.append({"epoch": epoch, "acc": acc, "cer": cer, "loss": loss, "test": test})

    begin, end = R.Validate.on_train_begin, R.Validate.on_epoch_end
    R.Validate.on_train_begin = lambda v, logs=None: (begin(v, logs), record(v, -1))[0]
    R.Validate.on_epoch_end = lambda v, e, logs=None: (end(v, e, logs), record(v, e))[0]
    try:
        data = lc.datasets(work, sorted({g.split(":")[0] for g in todo}))
        for key in todo:
            name, n, seed = key.split(":")
            test, pool, pool_dir = data[name]
            images, texts, _ = load_folder(test)
            test_set["now"] = (images, texts)
            folder = lc._subset(pool_dir, pool[:int(n)], work / name / f"labels-{n}-{seed}")
            records.clear()
            t0 = time.time()
            R.retrain(R.RetrainConfig(data=str(folder), out=str(work / name / f"model-{n}-{seed}"),
                                      base=str(GENERAL_MODEL), seed=int(seed), patience=10 ** 6, verbose=False))
            runs[key] = {"records": list(records), "held_back": test_set["held_back"],
                         "seconds": round(time.time() - t0, 1)}
            results["cpu"] = cpu()
            (RESULTS / "epoch_choice.json").write_text(json.dumps(results) + "\n")
            print(key, f"{runs[key]['seconds']} s", flush=True)
    finally:
        R.Validate.on_train_begin, R.Validate.on_epoch_end = begin, end
        shutil.rmtree(work, ignore_errors=True)


def replay(records: list[dict], rank) -> dict:
    """The epoch a rule keeps, with the trainer's own early stopping and patience."""
    from captchalens.training.retrain import default_patience, should_stop

    epochs = len(records) - 1  # records[0] is the start
    best = None
    for r in records:
        if best is None or rank(r) > rank(best):
            best = r
        if should_stop(r["epoch"], best["epoch"], epochs, default_patience(epochs)):
            break
    return best


def write_report(results: dict) -> str:
    runs = results.get("runs", {})
    lines = ["## Which epoch to keep (bench/epoch_choice.py)", "",
             "`train --data` fine-tuning the general reader on N labels (label_curve's data), every epoch "
             "recorded; each rule replayed on the same runs with the trainer's early stopping. Cells: accuracy "
             "on 500 unseen test captchas ignoring case (epoch kept; 0 = the start). "
             f"{results.get('cpu', '')}.", "",
             "| run (data set : labels : seed) | held back | start | " + " | ".join(RULES) + " | last epoch | best possible |",
             "|---|---|---|" + "---|" * (len(RULES) + 2)]
    sums = dict.fromkeys(RULES, 0.0)
    for key, run in runs.items():
        rec = run["records"]
        cells = []
        for name, rank in RULES.items():
            r = replay(rec, rank)
            sums[name] += r["test"]
            cells.append(f"{100 * r['test']:.1f}% ({r['epoch'] + 1})")
        held = run.get("held_back", "—")  # not kept by the first runs recorded
        lines.append(f"| {key} | {held} | {100 * rec[0]['test']:.1f}% | " + " | ".join(cells)
                     + f" | {100 * rec[-1]['test']:.1f}% | {100 * max(r['test'] for r in rec):.1f}% |")
    if runs:
        lines.append("| mean | | | " + " | ".join(f"{100 * v / len(runs):.1f}%" for v in sums.values()) + " | | |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "epoch_choice.md").write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default=",".join(GRID), help="data set:labels:seed, comma-separated")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the records")
    args = ap.parse_args()
    path = RESULTS / "epoch_choice.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if not args.report_only:
        record_runs(args.grid.split(","), results)
    print(write_report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
