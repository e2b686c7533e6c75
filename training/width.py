"""Give a general reader trained before the width rule (or before its scales) the rule
(contract.WIDTH_RULES, train.GENERAL_WIDTH_RULE).

    .venv/bin/python -m captchalens.training.width runs/general15

The same weights, rebuilt to take any width (networks.build_general with the rule in
its metadata), written back with model.h5, model.tflite and captchalens.json replaced
at once (train.save_model); its curves and log are kept.  Readers trained since
(`captchalens train --arch general`) have the rule from the start and are left as they
are.  Either way the temperature is then refitted on fresh captchas (`captchalens
calibrate`; training fits it on its validation set at the reference width) and the
fresh-set metrics are measured again, both read at the rule's widths: the last step of
the general recipe (Makefile).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captchalens.contract import KERAS_FILE, load_meta


def give_width_rule(model_dir: str | Path, rule: dict | None = None) -> Path:
    from captchalens.modelfile import load_keras

    from . import networks
    from .retrain import base_width
    from .train import GENERAL_WIDTH_RULE, save_model

    model_dir = Path(model_dir)
    meta = load_meta(model_dir)
    if meta.architecture != "general":
        raise SystemExit(f"{model_dir}: a width rule is for the general reader (architecture "
                         f"{meta.architecture!r} reads one width)")
    rule = dict(rule or GENERAL_WIDTH_RULE)
    if meta.width_rule == rule:
        return model_dir  # trained with it (`train --arch general` since the rule)
    old = load_keras(model_dir / meta.files.get("keras", KERAS_FILE))
    width = base_width(old, meta)
    meta.preprocessing["resize"]["width"] = rule
    meta.validate()
    model = networks.build("general", meta, width=width)
    model.set_weights(old.get_weights())
    # save_model copies these into its new folder before that replaces this one
    return save_model(model, meta, model_dir, {name: model_dir / name for name in ("curves.png", "log.csv")})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a general reader's folder")
    ap.add_argument("--fresh-eval", type=int, default=1000, help="fresh captchas per set to measure (default 1000, "
                                                                  "as the general recipe's --fresh-eval)")
    args = ap.parse_args(argv)
    from .calibrate import calibrate_model
    from .evaluate import record_fresh_metrics

    path = give_width_rule(args.model)
    fit = calibrate_model(path)
    record_fresh_metrics(path, args.fresh_eval)  # written into its captchalens.json
    meta = load_meta(path)
    print(f"{path}: width rule {meta.width_rule}; {fit.summary()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
