"""The label curve: how well a site's captchas are read with no labels at all
(zero-shot, the `general` reader), then after `captchalens train --data` with
25, 50, 100, 200 and 500 labels — on captchas of schemes the general model was
never trained on — with ddddocr (zero-shot) side by side on the same images.

    nice -n 5 .venv/bin/python bench/label_curve.py                     # everything (hours on 2 cores)
    .venv/bin/python bench/label_curve.py --only captcha_images_v2 --sizes 0,100

Data sets
* captcha_images_v2: ../shared/data/captcha_images_v2 (1,040 real-world captchas,
  5 characters of 19).  A fixed split by file-name hash (seed 2, 50 %) makes a
  test part that is never labelled; the N labels are the first N of the other
  part in a seeded order (so the 100 contain the 50).
* mono-dark, casual-colour, serif-wave: the renderer's held-out schemes
  (training/render.py HELD_OUT): fonts and styles the general model's mix never
  uses.  500 labelled captchas (seed 101) and 500 test captchas (seed 202) each.

Every N runs `captchalens train --data` exactly as a user types it (its own
defaults: fine-tuning the general model, augmentation, early stopping on a
held-back part of the N), then reads the test part once.  Accuracy is
whole-captcha, exact and ignoring case.  Results: bench/results/label_curve.md
and .json.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data" / "captcha_images_v2"
RESULTS = ROOT / "bench" / "results"
SIZES = (0, 25, 50, 100, 200, 500)
SCHEMES = ("mono-dark", "casual-colour", "serif-wave")
TEST_SHARE, SPLIT_SEED, ORDER_SEED = 0.5, 2, 7
RENDER_TRAIN_SEED, RENDER_TEST_SEED, RENDER_N = 101, 202, 500


def _write(folder: Path, images_and_texts) -> Path:
    """Captchas to a folder the way a user keeps them: labels.csv keeps case exactly."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (im, text) in enumerate(images_and_texts):
        name = f"{i:04d}.png"
        im.save(folder / name)
        rows.append(f"{name},{text}")
    (folder / "labels.csv").write_text("file,text\n" + "\n".join(rows) + "\n")
    return folder


def _link(src: Path, names: list[str], dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        (dst / n).symlink_to(src / n)
    return dst


def datasets(work: Path, only: list[str] | None) -> dict[str, tuple[Path, list[Path]]]:
    """name -> (test folder, [labelled pool, in order])."""
    out = {}
    if (not only or "captcha_images_v2" in only) and SHARED.is_dir():
        from captchalens.training.folder import split

        names = sorted(p.name for p in SHARED.iterdir() if p.suffix == ".png")
        pool_i, test_i = split(len(names), names, TEST_SHARE, SPLIT_SEED)
        pool = [names[i] for i in pool_i]
        random.Random(ORDER_SEED).shuffle(pool)
        test = _link(SHARED, [names[i] for i in test_i], work / "captcha_images_v2" / "test")
        out["captcha_images_v2"] = (test, pool, SHARED)
    from captchalens.training.render import RenderSpec, draw

    for scheme in SCHEMES:
        if only and scheme not in only:
            continue
        spec = RenderSpec(scheme=scheme)
        base = work / scheme
        test = _write(base / "test", (draw(spec, RENDER_TEST_SEED, i) for i in range(RENDER_N)))
        pool_dir = _write(base / "pool", (draw(spec, RENDER_TRAIN_SEED, i) for i in range(RENDER_N)))
        out[scheme] = (test, sorted(p.name for p in pool_dir.glob("*.png")), pool_dir)
    return out


def _subset(pool_dir: Path, names: list[str], dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    labels = pool_dir / "labels.csv"
    if labels.is_file():
        keep = set(names)
        rows = [r for r in labels.read_text().splitlines()[1:] if r.split(",", 1)[0] in keep]
        (dst / "labels.csv").write_text("file,text\n" + "\n".join(rows) + "\n")
    for n in names:
        (dst / n).symlink_to(pool_dir / n)
    return dst


def read_test(model: Path, test: Path) -> dict:
    from captchalens.solver import Solver
    from captchalens.training.folder import load_folder

    solver = Solver(model)
    images, texts, _ = load_folder(test)
    answers = [a.text for a in solver.solve_pixels(images)]
    exact = sum(a == t for a, t in zip(answers, texts))
    nocase = sum(a.lower() == t.lower() for a, t in zip(answers, texts))
    return {"n": len(texts), "exact": round(exact / len(texts), 4), "nocase": round(nocase / len(texts), 4),
            "examples": [(t, a) for a, t in zip(answers, texts) if a.lower() != t.lower()][:8]}


def ddddocr_zero_shot(test: Path) -> dict | None:
    from python_bench import DDDD_SCRIPT, ensure_ddddocr

    from captchalens.training.folder import scan

    py = ensure_ddddocr()
    if py is None:
        return None
    files, _ = scan(test)
    paths = [str(p) for p, _ in files]
    texts = [t for _, t in files]
    charset = "".join(sorted(set("".join(texts))))
    r = subprocess.run([str(py), "-c", DDDD_SCRIPT, json.dumps(paths), charset], capture_output=True,
                       text=True, timeout=3600)
    if r.returncode:
        return {"error": r.stderr.strip()[-300:]}
    got = json.loads(r.stdout.strip().splitlines()[-1])["plain"]["texts"]
    return {"n": len(texts), "exact": round(sum(a == t for a, t in zip(got, texts)) / len(texts), 4),
            "nocase": round(sum(a.lower() == t.lower() for a, t in zip(got, texts)) / len(texts), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="comma-separated data sets")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="label counts (0 = zero-shot)")
    ap.add_argument("--model", default=None, help="the reader to start from (default: the shipped general)")
    ap.add_argument("--no-ddddocr", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per label count, each on another draw of the N labels and another "
                         "training seed; the table gives the median and the range (default 1)")
    args = ap.parse_args()
    from captchalens.cli import main as captchalens
    from captchalens.paths import GENERAL_MODEL

    base = Path(args.model) if args.model else GENERAL_MODEL
    sizes = [int(s) for s in args.sizes.split(",")]
    only = args.only.split(",") if args.only else None
    work = Path(tempfile.mkdtemp(prefix="label-curve-"))
    results_path = RESULTS / "label_curve.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    from captchalens.contract import KERAS_FILE
    from captchalens.files import sha256_file

    # One curve per starting model, and per version of it: a retrained model starts its curve afresh.
    digest = sha256_file(base / KERAS_FILE)
    if results.get("models", {}).get(base.name) != digest:
        results.setdefault("runs", {})[base.name] = {}
    results.setdefault("models", {})[base.name] = digest
    runs = results["runs"][base.name]
    try:
        for name, (test, pool, pool_dir) in datasets(work, only).items():
            row = runs.setdefault(name, {})
            if not args.no_ddddocr:
                results.setdefault("ddddocr", {})[name] = ddddocr_zero_shot(test)
                print(name, "ddddocr", results["ddddocr"][name], flush=True)
            for n in sizes:
                t0 = time.time()
                if n == 0:
                    row["0"] = {**read_test(base, test), "seconds": 0}
                else:
                    runs_n = []
                    for r in range(args.repeats):
                        t0 = time.time()
                        labels = pool[:n] if r == 0 else random.Random(ORDER_SEED + r).sample(pool, n)
                        folder = _subset(pool_dir, labels, work / name / f"labels-{n}-{r}")
                        out = work / name / f"model-{n}-{r}"
                        code = captchalens(["train", "--data", str(folder), "--out", str(out), "--base", str(base)]
                                           + (["--seed", str(r)] if r else []))
                        runs_n.append({"error": f"train exited {code}"} if code else
                                      {**read_test(out, test), "seconds": round(time.time() - t0, 1)})
                        shutil.rmtree(out, ignore_errors=True)
                    row[str(n)] = summarize(runs_n)
                row[str(n)]["cpu"] = cpu()  # sessions run on different CPUs: each cell says its own
                print(name, n, {k: v for k, v in row[str(n)].items() if k != "examples"}, flush=True)
                results.setdefault("cpu", {})[base.name] = cpu()
                results_path.write_text(json.dumps(results, indent=1) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    write_report(results)
    return 0


def summarize(runs: list[dict]) -> dict:
    """One label count's runs: the first run's record, or with several, the median run's
    figures and every run's (repeat 0 is the run a single pass makes: the first N labels)."""
    ok = [r for r in runs if "nocase" in r]
    if len(runs) == 1 or not ok:
        return runs[0]
    mid = sorted(ok, key=lambda r: r["nocase"])[(len(ok) - 1) // 2]
    return {**mid, "seconds": round(statistics.median(r["seconds"] for r in ok), 1),
            "repeats": [{k: v for k, v in r.items() if k != "examples"} for r in runs]}


def cpu_marks(runs: dict, fallback: str) -> dict[str, str]:
    """The CPUs a model's cells ran on (a cell without one: the model's last), each with a mark."""
    cpus = sorted({r.get("cpu", fallback) for row in runs.values() for r in row.values() if isinstance(r, dict)})
    return {c: "†‡§¶"[i] if i < 4 else f"[{i + 1}]" for i, c in enumerate(cpus)}


def _cell(r: dict) -> str:
    cell = f"**{100 * r['nocase']:.1f}%** ({100 * r['exact']:.1f}%)"
    reps = [x["nocase"] for x in r.get("repeats", []) if "nocase" in x]
    if len(reps) > 1:
        cell += f" [{100 * min(reps):.1f}–{100 * max(reps):.1f}, {len(reps)} runs]"
    return cell


def write_report(results: dict) -> None:
    lines = [
        "## Label curve (bench/label_curve.py)", "",
        "Whole-captcha accuracy on test captchas never labelled, ignoring "
        "case (exact in brackets). Zero-shot = the starting model as it is; N labels = `captchalens train "
        "--data` with its defaults on N labelled captchas, fine-tuning that model (`--base`). With "
        "several runs (`--repeats`: another draw of the N labels and another seed each), the median "
        "run, then the range of all runs in square brackets.", ""]
    dddd = results.get("ddddocr", {})
    for base, runs in results["runs"].items():
        sizes = sorted({int(k) for r in runs.values() for k in r if k.isdigit()})
        marks = cpu_marks(runs, results.get("cpu", {}).get(base, "?"))
        where = (next(iter(marks)) if len(marks) == 1 else
                 "CPUs: " + "; ".join(f"{m} {c}" for c, m in marks.items()))
        lines += [f"Starting from `{base}` (model.h5 sha256 {results.get('models', {}).get(base, '?')[:12]}; "
                  f"{where}):", "",
                  "| data set | ddddocr zero-shot | " + " | ".join(
                      "zero-shot" if n == 0 else f"{n} labels" for n in sizes) + " |",
                  "|" + "---|" * (2 + len(sizes))]
        fallback = results.get("cpu", {}).get(base, "?")
        for name, row in runs.items():
            d = dddd.get(name)
            cells = [f"{100 * d['nocase']:.1f}% ({100 * d['exact']:.1f}%)" if d and "nocase" in d else "—"]
            for n in sizes:
                r = row.get(str(n))
                if not r or "nocase" not in r:
                    cells.append("—" if not r else r.get("error", "—"))
                else:
                    cells.append(_cell(r) + (f" {marks[r.get('cpu', fallback)]}" if len(marks) > 1 else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "Train time per run (s): " + "; ".join(
            f"{name}: " + ", ".join(f"{n}→{row[str(n)].get('seconds')}" for n in sizes if str(n) in row and n)
            for name, row in runs.items()), ""]
    (RESULTS / "label_curve.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
