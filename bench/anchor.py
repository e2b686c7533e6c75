"""How strongly to pull fine-tuned weights back toward the general reader's
(L2-SP: `captchalens train --data --anchor S`), measured where fine-tuning on a
few labels loses ground: label_curve's data sets and label counts, the same
labels, seed and test captchas, each strength in the same session.

    nice -n 5 .venv/bin/python bench/anchor.py                        # ~25 min on 2 cores
    .venv/bin/python bench/anchor.py --strengths 0,0.01 --cases serif-wave:200

Each case is `captchalens train --data <N labels> --base <general> --anchor S`
exactly as a user types it (the other flags its defaults), then a read of
label_curve's test captchas (never labelled), whole captcha ignoring case.
Results: bench/results/anchor.json and anchor.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu  # noqa: E402
from label_curve import RESULTS, _subset, datasets, read_test  # noqa: E402

CASES = ("captcha_images_v2:50", "mono-dark:200", "casual-colour:200", "serif-wave:200", "serif-wave:50")
STRENGTHS = (0.0, 0.01, 0.1, 1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES), help="data set:labels, comma-separated")
    ap.add_argument("--strengths", default=",".join(map(str, STRENGTHS)))
    ap.add_argument("--model", default=None, help="the reader to fine-tune (default: the shipped general)")
    args = ap.parse_args()
    from captchalens.cli import main as captchalens
    from captchalens.contract import KERAS_FILE
    from captchalens.files import sha256_file
    from captchalens.paths import GENERAL_MODEL

    base = Path(args.model) if args.model else GENERAL_MODEL
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    strengths = [float(s) for s in args.strengths.split(",")]
    work = Path(tempfile.mkdtemp(prefix="anchor-"))
    out_json = RESULTS / "anchor.json"
    results = {"model": base.name, "sha256": sha256_file(base / KERAS_FILE)[:12], "cpu": cpu(),
               "date": time.strftime("%Y-%m-%d"), "runs": {}}
    try:
        data = datasets(work, sorted({name for name, _ in cases}))
        for name, n in cases:
            test, pool, pool_dir = data[name]
            folder = _subset(pool_dir, pool[:n], work / name / f"labels-{n}")
            row = results["runs"].setdefault(f"{name}:{n}", {})
            for s in strengths:
                t0 = time.time()
                out = work / name / f"model-{n}-{s:g}"
                code = captchalens(["train", "--data", str(folder), "--out", str(out), "--base", str(base),
                                    "--anchor", str(s)])
                row[f"{s:g}"] = ({"error": f"train exited {code}"} if code else
                                 {**read_test(out, test), "seconds": round(time.time() - t0, 1)})
                shutil.rmtree(out, ignore_errors=True)
                print(name, n, s, {k: v for k, v in row[f"{s:g}"].items() if k != "examples"}, flush=True)
                out_json.write_text(json.dumps(results, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(results)
    return 0


def write_report(results: dict) -> None:
    strengths = sorted({float(k) for row in results["runs"].values() for k in row})
    lines = ["## Pulling fine-tuned weights toward the base (bench/anchor.py)", "",
             f"`captchalens train --data` on N labels of label_curve's data sets, fine-tuning `{results['model']}` "
             f"(model.h5 sha256 {results['sha256']}) with `--anchor S` (L2-SP strength; 0 = plain "
             f"fine-tuning), every other flag its default; whole captcha on the unseen test captchas, "
             f"ignoring case (exact in brackets). {results['cpu']}, {results['date']}, one run per cell.", "",
             "| data set : labels | " + " | ".join(f"S = {s:g}" for s in strengths) + " |",
             "|" + "---|" * (1 + len(strengths))]
    means = {s: [] for s in strengths}
    for case, row in results["runs"].items():
        cells = []
        for s in strengths:
            r = row.get(f"{s:g}")
            if r and "nocase" in r:
                means[s].append(r["nocase"])
                cells.append(f"{100 * r['nocase']:.1f}% ({100 * r['exact']:.1f}%)")
            else:
                cells.append(r.get("error", "—") if r else "—")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines.append("| mean | " + " | ".join(f"{100 * statistics.mean(v):.1f}%" if v else "—"
                                         for v in means.values()) + " |")
    lines += ["", "Train time per run (s): " + "; ".join(
        f"{case}: " + ", ".join(f"{k}→{r.get('seconds')}" for k, r in row.items())
        for case, row in results["runs"].items()), ""]
    (RESULTS / "anchor.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
