"""Python solver benchmark: accuracy, single latency, batch throughput — and
ddddocr (PyPI `ddddocr`, a general captcha OCR) side by side on the same files.

    .venv/bin/python bench/python_bench.py [--n 2000] [--model DIR]

ddddocr is installed only for this benchmark, in its own venv
(.cache/bench-ddddocr), so it never touches the project's pins; it runs in a
subprocess on the very same PNG files. Figures go to bench/results/python.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu  # noqa: E402
ROOT = Path(__file__).resolve().parent.parent
DDDD_VENV = ROOT / ".cache" / "bench-ddddocr"

DDDD_SCRIPT = r"""
import json, sys, time, statistics
from pathlib import Path
import ddddocr
files = json.loads(sys.argv[1]); charset = sys.argv[2]
ocr = ddddocr.DdddOcr(show_ad=False)
ocr_cs = ddddocr.DdddOcr(show_ad=False)
restricted = True
try:
    ocr_cs.set_ranges(charset)
except Exception:
    restricted = False
out = {}
for name, o in (("plain", ocr), ("charset", ocr_cs if restricted else None)):
    if o is None:
        continue
    datas = [Path(f).read_bytes() for f in files]
    o.classification(datas[0])
    times, texts = [], []
    for d in datas:
        t = time.perf_counter(); r = o.classification(d); times.append((time.perf_counter() - t) * 1000)
        texts.append(r if isinstance(r, str) else r.get("text", ""))
    out[name] = {"texts": texts, "ms_median": statistics.median(times)}
print(json.dumps(out))
"""


def ensure_ddddocr() -> Path | None:
    py = DDDD_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DDDD_VENV)], check=True)
    ok = subprocess.run([str(py), "-c", "import ddddocr"], capture_output=True).returncode == 0
    if not ok:
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "ddddocr==1.6.1"])
        if r.returncode != 0:
            return None
    return py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="captchas per set")
    ap.add_argument("--model", default=None, help="model folder (default: shipped model)")
    ap.add_argument("--seed", type=int, default=424242)
    ap.add_argument("--single-runs", type=int, default=300)
    ap.add_argument("--no-ddddocr", action="store_true")
    args = ap.parse_args()

    from captchalens import dec_batch
    from captchalens.solver import get_solver
    from captchalens.training.generate import GenSpec, generate

    solver = get_solver(args.model)
    meta = solver.meta
    lo, hi = meta.lengths
    rows = []
    sets = [("160x60", (160, 160), (60, 60)), ("100x60 (seed's size)", (100, 100), (60, 60)),
            ("random 110-220 x 50-80", (110, 220), (50, 80))]
    tmp = Path(tempfile.mkdtemp(prefix="clbench-"))
    files_160 = []
    for label, w, h in sets:
        spec = GenSpec(charset=meta.charset, min_length=lo, max_length=hi, width=w, height=h)
        images, texts = generate(spec, args.n, args.seed + len(rows), progress=False)
        folder = tmp / label.split()[0]
        folder.mkdir()
        from PIL import Image
        files = []
        for i, (im, t) in enumerate(zip(images, texts)):
            p = folder / f"{i:05d}_{t}.png"
            Image.fromarray(im).save(p)
            files.append(p)
        solver.solve_files(files[:300])  # warm: trace the graph for this batch shape
        t0 = time.perf_counter()
        answers = solver.solve_files(files)
        dt = time.perf_counter() - t0
        acc = sum(a.text == t for a, t in zip(answers, texts)) / len(texts)
        rows.append({"set": label, "n": len(texts), "acc": acc, "per_s": len(texts) / dt, "texts": texts,
                     "files": files})
        if not files_160:
            files_160 = files

    # single-captcha latency through the real two-line API (warm): the TFLite fast path
    # when the model has one, and the TensorFlow path for comparison
    def single_latency(model_arg, runs):
        for f in files_160[:20]:
            dec_batch(f, model=model_arg)
        times = []
        for i in range(runs):
            f = files_160[i % len(files_160)]
            t = time.perf_counter()
            dec_batch(f, model=model_arg)
            times.append((time.perf_counter() - t) * 1000)
        return times

    singles = single_latency(args.model, args.single_runs)
    from captchalens import solver as solver_mod
    tf_solver = solver_mod.Solver(solver.model_dir, fast=False)
    key = str(Path(solver.model_dir).resolve())
    fast_solver, solver_mod._SOLVERS[key] = solver_mod._SOLVERS[key], tf_solver
    tf_singles = single_latency(args.model, args.single_runs)
    solver_mod._SOLVERS[key] = fast_solver
    tf_single_ms = statistics.median(tf_singles)
    # batched model throughput on decoded pixels (no PNG decoding)
    from captchalens.images import read_rgba
    pix = [read_rgba(f) for f in files_160]
    solver.probs(pix)
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        solver.probs(pix)
        runs.append(len(pix) / (time.perf_counter() - t0))
    pix_per_s = statistics.median(runs)

    dddd = None
    if not args.no_ddddocr:
        py = ensure_ddddocr()
        if py:
            r = subprocess.run([str(py), "-c", DDDD_SCRIPT, json.dumps([str(f) for f in files_160]), meta.charset],
                               capture_output=True, text=True)
            if r.returncode == 0:
                dddd = json.loads(r.stdout.strip().splitlines()[-1])
            else:
                print(r.stderr[-2000:], file=sys.stderr)
    singles += single_latency(args.model, args.single_runs)  # again after ddddocr: both ends of its run
    single_ms = statistics.median(singles)
    truth = rows[0]["texts"]

    lines = [
        "## Python solver — `bench/python_bench.py`",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {cpu()} (shared machine), TF CPU; model `{meta.name}` "
        f"({meta.params:,} params, {meta.macs / 1e6:.1f} M multiply-adds, input "
        f"{meta.input_width}x{meta.input_height}). Fresh captchas, seed {args.seed}+.",
        "",
        "| set | captchas | whole-captcha accuracy | captchas/s (files -> text, batched) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['set']} | {r['n']} | {100 * r['acc']:.2f}% | {r['per_s']:.0f} |")
    lines += [
        "",
        f"- single captcha through `dec_batch(file)` (PNG read + preprocess + model + decode), "
        f"median of {len(singles)} warm runs (half before, half after ddddocr's): **{single_ms:.2f} ms** "
        f"with the TFLite fast path{'' if solver.fast else ' (NOT present in this model)'}; "
        f"{tf_single_ms:.2f} ms through TensorFlow (`Solver(fast=False)`, {len(tf_singles)} runs), "
        f"{tf_single_ms / single_ms:.1f}x slower",
        f"- batched throughput on decoded pixels (preprocess + model, no PNG I/O), median of 3 passes: "
        f"**{pix_per_s:.0f} captchas/s**",
        f"- machine load average when the run ended: {os.getloadavg()[0]:.1f} (2 cores)",
    ]
    if dddd:
        lines += ["", "### Side by side with ddddocr 1.6.1 (same 160x60 files)", "",
                  "| solver | whole-captcha accuracy | ms/captcha (median, single) | speed ratio |",
                  "|---|---:|---:|---:|",
                  f"| CaptchaLens | {100 * rows[0]['acc']:.2f}% | {single_ms:.2f} | 1x |"]
        for name, d in dddd.items():
            acc = sum(a.strip().lower() == t for a, t in zip(d["texts"], truth)) / len(truth)
            lines.append(f"| ddddocr ({'charset-restricted' if name == 'charset' else 'default'}) | "
                         f"{100 * acc:.2f}% | {d['ms_median']:.2f} | {d['ms_median'] / single_ms:.1f}x slower |")
    text = "\n".join(lines) + "\n"
    out = ROOT / "bench" / "results" / "python.md"
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
