"""`captchalens train`, `captchalens eval` and `captchalens gen`."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _range(what: str, lo_limit: int, hi_limit: int):
    """An argparse type for 'N' -> (N, N) or 'N-M' -> (N, M), within limits."""

    def parse(s: str) -> tuple[int, int]:
        try:
            a, _, b = s.partition("-")
            lo, hi = int(a), int(b or a)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected N or N-M, got {s!r}") from None
        if not lo_limit <= lo <= hi <= hi_limit:
            raise argparse.ArgumentTypeError(
                f"{what} {s!r} must satisfy {lo_limit} <= N <= M <= {hi_limit}")
        return lo, hi

    return parse


_size_range = _range("size", 8, 2048)  # image widths/heights in pixels
_length_range = _range("length", 1, 64)  # characters per captcha


def _wxh(s: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 160x60, got {s!r}") from None
    return w, h


def register(sub) -> None:
    from .config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a model on generated captchas or a folder of labelled ones",
                       description="Train a model. Without --data: captchas generated with the `captcha` "
                                   "package (the defaults reproduce the shipped model). With --data: a "
                                   "folder of your own labelled captchas.")
    p.add_argument("--data", default=None,
                   help="folder of your own labelled captchas (file name = label, or labels.csv); "
                        "charset, length, input size and schedule are then chosen from the data "
                        "unless given")
    p.add_argument("--out", default=d.out, help=f"model folder to write (default {d.out})")
    p.add_argument("--name", default=None, help="model name in its metadata (default: the --out folder name)")
    p.add_argument("--arch", default="auto", choices=["auto", "small", "baseline", "ctc", "general"],
                   help="network: auto (default; generated: small for one length, ctc for several; "
                        "--data: ctc), small (fixed length), baseline (the seed's 5-layer CNN) or ctc "
                        "(variable length), general (the universal CTC reader)")
    p.add_argument("--width-mult", type=float, default=None,
                   help=f"channel multiplier of small/ctc (default {d.width_mult}; with --data: "
                        f"the fine-tuned model's)")
    p.add_argument("--charset", default=None,
                   help=f"characters to generate (default {d.charset}); with --data: the characters "
                        f"allowed (default: those in the labels)")
    p.add_argument("--length", type=_length_range, default=None,
                   help=f"characters per captcha: N, or N-M (needs --arch ctc) (default {d.length}); "
                        f"with --data: keep only labels of these lengths (default: all)")
    p.add_argument("--input", type=_wxh, default=None,
                   help=f"model input WIDTHxHEIGHT (default {d.input_width}x{d.input_height}; with "
                        f"--data: height 48, width from the images' shape)")
    p.add_argument("--gen-width", type=_size_range, default=d.gen_width, help="generated image widths N-M")
    p.add_argument("--gen-height", type=_size_range, default=d.gen_height, help="generated image heights N-M")
    p.add_argument("--gen-preferred", type=_wxh, default=d.gen_preferred,
                   help="size drawn most often, WIDTHxHEIGHT (default 160x60)")
    p.add_argument("--gen-preferred-share", type=float, default=d.gen_preferred_share,
                   help="share of images at --gen-preferred")
    p.add_argument("--render-share", type=float, default=d.render_share,
                   help="share of training captchas drawn by the broad renderer (many fonts, colours, "
                        "noise and warps; training/render.py) instead of the `captcha` package "
                        f"(default {d.render_share})")
    p.add_argument("--augment", action="store_true",
                   help="random warps, contrast and noise on generated captchas too")
    p.add_argument("--stretch", type=float, default=d.stretch,
                   help="with --augment and --arch general: each batch's width stretched by up to this "
                        "share (e.g. 0.15), the widths the width rule's scales read")
    p.add_argument("--train-size", type=int, default=d.train_size, help="generated training captchas")
    p.add_argument("--val-size", type=int, default=d.val_size, help="generated validation captchas")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training set (default {d.epochs}; with --data: enough for "
                        f"about 1500 steps, early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"default {d.batch_size}; with --data: 32, or 64 from 2000 images")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate, cosine decay (default {d.lr}; with --data: 2e-3, or 5e-4 "
                        f"when fine-tuning the general reader, which then keeps more of what it reads)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for generation and training")
    p.add_argument("--patience", type=int, default=None,
                   help=f"early stopping patience in epochs (default {d.patience}; with --data: "
                        f"a quarter of the epochs, at least 10)")
    p.add_argument("--cache", default=".cache/captchalens",
                   help="folder caching generated sets between runs ('' to disable)")
    p.add_argument("--workers", type=int, default=None, help="generator processes (default: all cores)")
    p.add_argument("--fresh-eval", type=int, default=2000,
                   help="after training, measure accuracy on this many fresh captchas per size (0: skip)")
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    own = p.add_argument_group("training on your own captchas (with --data)")
    own.add_argument("--val-share", type=float, default=0.15,
                     help="share of the folder held back to validate and stop early, chosen by a hash "
                          "of each file name (default 0.15)")
    start = own.add_mutually_exclusive_group()
    start.add_argument("--finetune", dest="init", action="store_const", const="finetune",
                       help="start from the default model's trunk (the default whenever it fits)")
    start.add_argument("--from-scratch", dest="init", action="store_const", const="scratch",
                       help="start from random weights")
    own.add_argument("--base", default=None,
                     help="model folder to fine-tune from (default: the shipped default model; give "
                          "your previous model of the same site to refine it with new samples). "
                          "Without --data: a model of the same settings to go on training on newly "
                          "generated captchas (how the default model's second stage is made)")
    own.add_argument("--anchor", type=float, default=None,
                     help="when fine-tuning, pull the weights toward the base's: L2-SP strength "
                          "(default 0 = off; bench/results/anchor.md measures 0.01 and 0.1)")
    own.add_argument("--no-augment", action="store_true",
                     help="train on the images as they are (default: random shifts, zoom, rotation, "
                          "contrast and noise)")
    dist = p.add_argument_group("training on several machines (README: Training on several machines)")
    dist.add_argument("--cluster", action="store_true",
                      help="one worker of a cluster described by TF_CONFIG (set TF_CONFIG alone does the "
                           "same): tf.distribute.MultiWorkerMirroredStrategy; run the same command on "
                           "every machine")
    dist.add_argument("--strategy", choices=["mirrored", "multi-worker"], default=None,
                      help="mirrored: every GPU of this machine; multi-worker: as --cluster")
    dist.add_argument("--work-dir", default=None,
                      help="checkpoints and logs (default <out>.work); with --cluster a folder every "
                           "machine shares (NFS...), so a restarted worker resumes")
    dist.add_argument("--peer-timeout", type=float, default=d.peer_timeout,
                      help=f"seconds to wait for the other workers before giving up (default "
                           f"{d.peer_timeout:g})")
    p.set_defaults(init="auto")
    p.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="measure a model's accuracy and speed",
                       description="Print whole-captcha and per-character accuracy, the most-confused "
                                   "characters and latency; write a PNG gallery of the errors.")
    e.add_argument("model", nargs="?", default=None, help="model folder (default: the shipped model)")
    e.add_argument("--data", help="folder of labelled captchas (default: freshly generated ones)")
    e.add_argument("-n", type=int, default=2000, help="how many captchas to generate (default 2000)")
    e.add_argument("--size", type=_wxh, default=None,
                   help="generate at this WIDTHxHEIGHT (default 160x60); see --random-sizes")
    e.add_argument("--random-sizes", action="store_true",
                   help="generate at random sizes 110-220 x 50-80 instead of one size")
    e.add_argument("--seed", type=int, default=12345, help="generation seed (default 12345)")
    e.add_argument("--gallery", default=None, help="PNG of the errors (default <model>/errors.png)")
    e.add_argument("--json", action="store_true", help="print the figures as JSON")
    e.set_defaults(func=cmd_eval)

    g = sub.add_parser("gen", help="write generated captchas to a folder (file name = label)")
    g.add_argument("out", help="folder to write")
    g.add_argument("-n", type=int, default=100)
    g.add_argument("--charset", default=d.charset)
    g.add_argument("--length", type=_length_range, default=(d.length, d.length))
    g.add_argument("--size", type=_wxh, default=(160, 60), help="WIDTHxHEIGHT (default 160x60)")
    g.add_argument("--seed", type=int, default=1)
    g.set_defaults(func=cmd_gen)


def cmd_train(args) -> int:
    from .distribute import ClusterError, wanted

    try:
        strategy = wanted(args.cluster, args.strategy)
    except ClusterError as e:
        print(f"captchalens: error: {e}", file=sys.stderr)
        return 2
    if strategy is None:
        return _train(args, None)
    from .distribute import peer_lost, rejoin

    try:
        return _train(args, strategy)
    except ClusterError as e:
        print(f"captchalens: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 (only a dead peer's errors are handled)
        if not peer_lost(e):
            raise
        return rejoin(e, Path(args.work_dir or str(Path(args.out).resolve()) + ".work"))


def _train(args, strategy: str | None) -> int:
    """`captchalens train` in this process (strategy: training/distribute.py's kind)."""
    from .config import TrainConfig
    from .train import train_generated

    if getattr(args, "data", None):
        from .retrain import train_folder  # the retrain path (a user's own captchas)

        return train_folder(args, strategy)
    _generated_defaults(args, TrainConfig())
    lo, hi = args.length
    if lo != hi and args.arch not in ("ctc", "general"):
        print("captchalens: error: a length range needs --arch ctc or general", file=sys.stderr)
        return 2
    from .augment import stretch_problem

    problem = stretch_problem(args.stretch, args.augment, args.arch == "general")  # before any rendering
    if problem:
        print(f"captchalens: error: {problem}", file=sys.stderr)
        return 2
    cfg = TrainConfig(
        out=args.out, name=args.name or Path(args.out).name, arch=args.arch, width_mult=args.width_mult,
        charset=args.charset, length=lo, max_length=hi, input_width=args.input[0],
        input_height=args.input[1], gen_width=args.gen_width, gen_height=args.gen_height,
        gen_preferred=args.gen_preferred, gen_preferred_share=args.gen_preferred_share,
        train_size=args.train_size, val_size=args.val_size, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, patience=args.patience,
        cache=args.cache or None, workers=args.workers, verbose=2 if args.quiet else 1,
        fresh_eval=args.fresh_eval, base=args.base, render_share=args.render_share,
        augment=args.augment, stretch=args.stretch, strategy=strategy, work_dir=args.work_dir, peer_timeout=args.peer_timeout)
    t0 = time.time()
    path, meta = train_generated(cfg)
    if path is None:
        print(f"\nthis worker's part is done in {time.time() - t0:.0f} s; the chief writes {args.out}")
        return 0
    acc = meta.metrics.get("val_captcha_acc")
    print(f"\nwrote {path} ({meta.params:,} params, {meta.macs / 1e6:.1f} M multiply-adds) "
          f"in {time.time() - t0:.0f} s" + (f"; validation whole-captcha accuracy {100 * acc:.2f}%"
                                           if acc is not None else ""))
    for k, v in meta.metrics.items():
        if k.startswith("captcha_acc_"):
            print(f"  fresh captchas {k[len('captcha_acc_'):]}: {100 * v:.2f}% whole-captcha")
    print(f"next: captchalens eval {path}   then   captchalens convert --model {path}")
    return 0


def _generated_defaults(args, d) -> None:
    """Fill the flags whose defaults differ with --data (None there) for generated training."""
    for key, value in (("width_mult", d.width_mult), ("charset", d.charset), ("length", (d.length, d.length)),
                       ("input", (d.input_width, d.input_height)), ("epochs", d.epochs),
                       ("batch_size", d.batch_size), ("lr", d.lr), ("patience", d.patience)):
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.arch == "auto":
        args.arch = "ctc" if args.length[0] != args.length[1] else "small"


def cmd_eval(args) -> int:
    from captchalens.solver import Solver

    from .evaluate import error_gallery, evaluate

    solver = Solver(args.model)
    meta = solver.meta
    if args.data:
        from .folder import load_folder

        images, texts, report = load_folder(args.data, meta.charset, meta.lengths)
        print(report.summary(), file=sys.stderr)
    else:
        from .generate import GenSpec, generate

        lo, hi = meta.lengths
        w, h = args.size or (160, 60)
        spec = GenSpec(charset=meta.charset, min_length=lo, max_length=hi,
                       width=(110, 220) if args.random_sizes else (w, w),
                       height=(50, 80) if args.random_sizes else (h, h))
        images, texts = generate(spec, args.n, args.seed)
    result = evaluate(solver, images, texts)
    gallery = error_gallery(images, result, args.gallery or Path(solver.model_dir) / "errors.png")
    if args.json:
        out = result.to_json()
        out["gallery"] = str(gallery) if gallery else None
        print(json.dumps(out))
    else:
        print(result.report())
        print(f"error gallery: {gallery}" if gallery else "no errors: no gallery written")
    return 0


def cmd_gen(args) -> int:
    from .generate import GenSpec, draw

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = GenSpec(charset=args.charset, min_length=args.length[0], max_length=args.length[1],
                   width=(args.size[0],) * 2, height=(args.size[1],) * 2)
    seen: dict[str, int] = {}
    for i in range(args.n):
        im, text = draw(spec, args.seed, i)
        k = seen[text] = seen.get(text, 0) + 1
        im.save(out / (f"{text}.png" if k == 1 else f"{text}_{k}.png"))
    print(f"wrote {args.n} captchas to {out}")
    return 0
