"""`captchalens convert [--model DIR] [--name NAME] [--out DIR] [--quantize none|float16|uint8]`"""
from __future__ import annotations


def register(sub) -> None:
    from .core import QUANTIZE

    p = sub.add_parser(
        "convert", help="convert a model for the extension (TF.js files + index + vendor)",
        description="Convert a Keras model folder with the tensorflowjs converter into "
                    "extension/models/<name>/ (model.json, weight shards and its captchalens.json), "
                    "regenerate extension/models/index.json and copy TF.js into extension/vendor/. "
                    "Models other than the package's own (default, general) are also installed into "
                    "$CAPTCHALENS_HOME/models/<name>/ so the local host serves them.")
    p.add_argument("--model", default=None,
                   help="Keras model folder (model.h5 + captchalens.json; default: $CAPTCHALENS_MODEL, else the shipped model)")
    p.add_argument("--name", default=None,
                   help="name of the converted model, i.e. its folder (default: the name in its metadata)")
    p.add_argument("--out", default=None,
                   help="the extension's models folder (default: <repo>/extension/models); "
                        "vendor files go to its sibling vendor/")
    p.add_argument("--quantize", choices=QUANTIZE, default="none",
                   help="store weights as float32 (none, default: answers identical to TensorFlow), "
                        "float16 or uint8 (smaller; see bench/results/convert.md)")
    p.add_argument("--no-install", action="store_true",
                   help="do not install the Keras model into $CAPTCHALENS_HOME/models/")
    p.set_defaults(func=run)


def run(args) -> int:
    from .core import convert

    r = convert(args.model, args.name, args.out, args.quantize,
                install=False if args.no_install else None)
    print(f"converted {r.name!r} ({r.quantize} weights, {r.bytes / 1e6:.2f} MB) -> {r.folder}")
    print(f"index: {r.index}")
    if r.vendor:
        print(f"vendor: {len(r.vendor)} files in {r.vendor[0].parent}")
    if r.installed:
        print(f"installed for the local host: {r.installed}")
    return 0
