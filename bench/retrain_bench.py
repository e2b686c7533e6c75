"""Evidence for `captchalens train --data`: train on a user's own captchas with
the default settings, then measure whole-captcha accuracy on held-out images
the training never saw.

    nice -n 5 .venv/bin/python bench/retrain_bench.py            # everything (~30-60 min on 2 cores)
    .venv/bin/python bench/retrain_bench.py --only shared --variants finetune

Experiments
* shared: ../shared/data/captcha_images_v2 (1,040 real-world captchas, 5 chars
  from 19).  A deterministic split by file-name hash (seed 1, 15 %) puts <=900
  images in the train part and the rest in the test part, which is never used
  for any choice.  The train part goes through `captchalens train --data`
  (which itself holds back 15 % of it for early stopping), the test part is
  read once by captchalens.training.evaluate.evaluate.
* gen: a scheme of our own, made with `captchalens gen`: lengths 4-6 (so CTC)
  from 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789' at 180x60; 3,000 training captchas
  (seed 11) and 500 test captchas (seed 12).

Variants: finetune (the default: the shipped model's trunk) and scratch
(--from-scratch).  Figures go to bench/results/retrain.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu  # noqa: E402
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data" / "captcha_images_v2"
TEST_SHARE, TEST_SEED = 0.15, 1  # the shared set's train/test split (never tuned)
GEN_CHARSET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
GEN_LENGTH, GEN_SIZE = "4-6", "180x60"
GEN_TRAIN, GEN_TEST = 3000, 500
RESULTS = ROOT / "bench" / "results"


def _parser():
    from captchalens.training import cli

    p = argparse.ArgumentParser(prog="captchalens")
    cli.register(p.add_subparsers())
    return p


def captchalens(*argv: str) -> int:
    """Run a `captchalens train|gen` command in this process, exactly as typed."""
    args = _parser().parse_args(list(argv))
    return args.func(args)


def shared_split(folder: Path) -> tuple[list[str], list[str]]:
    from captchalens.training.folder import split

    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".png")
    tr, te = split(len(names), names, TEST_SHARE, TEST_SEED)
    return [names[i] for i in tr], [names[i] for i in te]


def link_folder(src: Path, names: list[str], dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        (dst / n).symlink_to(src / n)
    return dst


def test_accuracy(model: Path, folder: Path) -> dict:
    from captchalens.solver import Solver
    from captchalens.training.evaluate import evaluate
    from captchalens.training.folder import load_folder

    solver = Solver(model)
    images, texts, _ = load_folder(folder, solver.meta.charset, solver.meta.lengths)
    r = evaluate(solver, images, texts, single_runs=20)
    return {"n": r.n, "captcha_acc": round(r.captcha_acc, 5), "char_acc": round(r.char_acc, 5),
            "errors": [(t, p) for _, t, p, _ in r.errors[:12]],
            "ms_single_median": round(r.ms_single_median, 2)}


def tfjs_parity(model: Path, test_dir: Path, work: Path) -> dict:
    """Convert the model as `captchalens convert` does (into a scratch extension folder, not
    installed) and read the test part with the extension's engine in Node (wasm): do the
    browser's answers equal TensorFlow's?"""
    import struct
    import subprocess

    from captchalens.images import read_rgba
    from captchalens.solver import Solver

    ext = work / "ext" / "models"
    ext.mkdir(parents=True, exist_ok=True)
    from captchalens.cli import main as captchalens_main

    assert captchalens_main(["convert", "--model", str(model), "--name", model.name.lower(),
                             "--out", str(ext), "--no-install"]) == 0
    files = sorted(test_dir.iterdir())
    images = [read_rgba(f) for f in files]
    buf = bytearray(struct.pack("<I", len(images)))
    for im in images:
        buf += struct.pack("<II", im.shape[1], im.shape[0]) + im.tobytes()
    pixels, answers = work / "pixels.bin", work / "answers.json"
    pixels.write_bytes(bytes(buf))
    r = subprocess.run(["node", str(ROOT / "extension" / "node" / "node_solver.js"), "--model",
                        str(ext / model.name.lower()), "--input", str(pixels), "--output", str(answers)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode:
        return {"error": r.stderr.strip()[:300]}
    js = [x["text"] for x in json.loads(answers.read_text())["results"]]
    py = [a.text for a in Solver(model).solve_pixels(images)]
    truth = [f.name.split(".")[0].split("_")[0] for f in files]
    return {"n": len(js), "same_answers": sum(a == b for a, b in zip(js, py)),
            "tfjs_captcha_acc": round(sum(a == t for a, t in zip(js, truth)) / len(js), 5)}


def train_and_test(name: str, train_dir: Path, test_dir: Path, out_root: Path, variant: str,
                   extra: list[str]) -> dict:
    from captchalens.contract import load_meta

    out = out_root / f"{name}-{variant}"
    argv = ["train", "--data", str(train_dir), "--out", str(out), *extra]
    if variant == "scratch":
        argv.append("--from-scratch")
    print(f"\n=== {name} / {variant}: captchalens {' '.join(argv)}", flush=True)
    t0, c0 = time.time(), time.process_time()
    rc = captchalens(*argv)
    wall, cpu = time.time() - t0, time.process_time() - c0
    assert rc == 0
    meta = load_meta(out)
    test = test_accuracy(out, test_dir)
    test["tfjs"] = tfjs_parity(out, test_dir, out_root / "tfjs")
    print(f"=== {name} / {variant}: test whole-captcha {100 * test['captcha_acc']:.2f}% of {test['n']}, "
          f"validation {100 * meta.metrics['val_captcha_acc']:.2f}%, {wall:.0f} s wall, {cpu:.0f} s CPU",
          flush=True)
    t = meta.trained_on
    return {"experiment": name, "variant": variant, "command": "captchalens " + " ".join(argv),
            "model": str(out), "charset": meta.charset, "decoding": meta.decoding,
            "lengths": list(meta.lengths), "input": f"{meta.input_width}x{meta.input_height}",
            "params": meta.params, "images_train_part": t["images_used"],
            "train": t["split"]["train"], "val": t["split"]["val"], "init": t["init"]["description"],
            "epochs_run": t["epochs_run"], "best_epoch": t["best_epoch"], "epochs": t["epochs"],
            "val_captcha_acc": meta.metrics["val_captcha_acc"], "test": test,
            "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}


def load_avg() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


def write_results(rows: list[dict], notes: dict, path_md: Path) -> None:
    path_md.parent.mkdir(parents=True, exist_ok=True)
    path_md.with_suffix(".json").write_text(json.dumps({"notes": notes, "runs": rows}, indent=2) + "\n")
    lines = [
        "# Training on your own captchas (`captchalens train --data`)",
        "",
        f"Measured by `bench/retrain_bench.py` on {notes['date']} ({notes['machine']}). Default settings "
        "throughout: the commands (listed below the table) give only the folder, the output, the model to "
        "start from when not the installed default, and `--from-scratch` for the scratch variant.",
        "",
        f"CPU: {notes['cpu']}",
        "",
        f"Fine-tuned from: `{notes['base']['path']}` (model.h5 sha256 `{notes['base']['model_h5_sha256']}`).",
        "",
        "| experiment | start | images (train/val) | test captchas | **test whole-captcha** | test per char "
        "| val whole-captcha | epochs (best/run) | wall time | process CPU time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['experiment']} ({r['decoding']}, {len(r['charset'])} characters, "
            f"{r['lengths'][0]}-{r['lengths'][1]}, input {r['input']}) | {r['variant']} "
            f"| {r['images_train_part']} ({r['train']}/{r['val']}) | {r['test']['n']} "
            f"| **{100 * r['test']['captcha_acc']:.2f}%** | {100 * r['test']['char_acc']:.2f}% "
            f"| {100 * r['val_captcha_acc']:.2f}% | {r['best_epoch']}/{r['epochs_run']} "
            f"| {r['wall_seconds'] / 60:.1f} min | {r['cpu_seconds'] / 60:.1f} min |")
    lines += ["", "The same test parts read by the extension's engine (TF.js, wasm backend, in Node) after "
              "`captchalens convert`:", ""]
    for r in rows:
        t = r["test"].get("tfjs")
        lines.append(f"- {r['experiment']} / {r['variant']}: " + (
            "not measured" if not t else f"error: {t['error']}" if "error" in t else
            f"{t['same_answers']} of {t['n']} answers identical to TensorFlow's; whole-captcha "
            f"{100 * t['tfjs_captcha_acc']:.2f}%"))
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in rows]
    lines += ["", "Misreadings on the test parts (truth → read; the first 12 of each):", ""]
    for r in rows:
        errs = ", ".join(f"{t}→{p}" for t, p in r["test"]["errors"]) or "none"
        lines.append(f"- {r['experiment']} / {r['variant']}: {errs}")
    lines += ["", "Details: " + path_md.with_suffix(".json").name + ".", ""]
    if notes.get("comment"):
        lines += [notes["comment"], ""]
    path_md.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["shared", "gen"], default=None, help="run one experiment")
    ap.add_argument("--variants", default="finetune,scratch", help="comma list of finetune, scratch")
    ap.add_argument("--work", default=None, help="folder for data and models (default: a temp folder)")
    ap.add_argument("--results", default=str(RESULTS / "retrain.md"), help="markdown file to write")
    ap.add_argument("--extra", default="", help="extra `captchalens train` flags (development only)")
    ap.add_argument("--base", default=None,
                    help="model to fine-tune from (default: the shipped default model); recorded with "
                         "the sha256 of its weights")
    ap.add_argument("--note", default="", help="a paragraph for the results file (e.g. what else ran)")
    ap.add_argument("--tfjs-only", action="store_true",
                    help="only (re)measure the TF.js parity of the models in the JSON beside --results")
    ap.add_argument("--rewrite", action="store_true",
                    help="only rewrite the markdown from the JSON beside it (e.g. with a new --note)")
    a = ap.parse_args(argv)
    if a.tfjs_only:
        data = json.loads(Path(a.results).with_suffix(".json").read_text())
        for r in data["runs"]:
            part = "shared/test" if r["experiment"] == "captcha_images_v2" else "gen/test"
            test_dir = Path(a.work) / part
            r["test"]["tfjs"] = tfjs_parity(Path(r["model"]), test_dir, Path(a.work) / "models" / "tfjs")
            print(r["experiment"], r["variant"], r["test"]["tfjs"], flush=True)
        write_results(data["runs"], data["notes"], Path(a.results))
        return 0
    if a.rewrite:
        data = json.loads(Path(a.results).with_suffix(".json").read_text())
        data["notes"]["comment"] = a.note or data["notes"].get("comment", "")
        write_results(data["runs"], data["notes"], Path(a.results))
        return 0
    work = Path(a.work or tempfile.mkdtemp(prefix="retrain_bench."))
    work.mkdir(parents=True, exist_ok=True)
    variants = [v for v in a.variants.split(",") if v]
    extra = a.extra.split()
    base_flags = ["--base", a.base] if a.base else []
    rows: list[dict] = []
    load_start = load_avg()
    t_all = time.time()
    if a.only in (None, "shared"):
        tr, te = shared_split(SHARED)
        assert len(tr) <= 900 and len(te) >= 140, (len(tr), len(te))
        shutil.rmtree(work / "shared", ignore_errors=True)
        tr_dir = link_folder(SHARED, tr, work / "shared" / "train")
        te_dir = link_folder(SHARED, te, work / "shared" / "test")
        print(f"shared: {len(tr)} train part / {len(te)} test part", flush=True)
        for v in variants:
            rows.append(train_and_test("captcha_images_v2", tr_dir, te_dir, work / "models", v,
                                       base_flags + extra))
    if a.only in (None, "gen"):
        g = work / "gen"
        if not (g / "test").is_dir():
            shutil.rmtree(g, ignore_errors=True)
            captchalens("gen", str(g / "train"), "-n", str(GEN_TRAIN), "--charset", GEN_CHARSET,
                        "--length", GEN_LENGTH, "--size", GEN_SIZE, "--seed", "11")
            captchalens("gen", str(g / "test"), "-n", str(GEN_TEST), "--charset", GEN_CHARSET,
                        "--length", GEN_LENGTH, "--size", GEN_SIZE, "--seed", "12")
        for v in variants:
            rows.append(train_and_test("generated", g / "train", g / "test", work / "models", v,
                                       base_flags + extra))
    import datetime
    import hashlib

    from captchalens.paths import DEFAULT_MODEL

    base = Path(a.base) if a.base else DEFAULT_MODEL
    weights = base / "model.h5"
    base_sha = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None

    notes = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{cpu()}, Python {platform.python_version()}",
        "cpu": f"load average at start {load_start}, at end {load_avg()}; "
               f"total {(time.time() - t_all) / 60:.1f} min",
        "extra_flags": extra,
        "base": {"path": str(base), "model_h5_sha256": base_sha},
        "comment": a.note,
    }
    if a.only is None and not extra:
        write_results(rows, notes, Path(a.results))
        print(f"wrote {a.results}")
    else:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
