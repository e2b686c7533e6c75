"""The reader for a site that has no model of its own ("auto").

The shipped `default` model reads `captcha`-package captchas almost perfectly
and is sure of itself on them; on any other scheme it is wrong and (mostly)
unsure.  The `general` model reads schemes it has never seen, less surely.
So "auto" asks `default` first and keeps its answer when its confidence is at
least `sure`; otherwise `general` answers.  The rule is data, written once in
``models/auto.json`` by ``python -m captchalens.training.auto_rule`` (which
measures the threshold on fresh captchas) and copied by the converter into the
extension's ``models/index.json``, where ``extension/background/model_store.js``
applies the same comparison.

This module is pure Python: the host and the CLI read the rule without
TensorFlow.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .alphabet import covers
from .contract import ContractError
from .files import write_atomic
from .paths import PACKAGE_MODELS

AUTO_NAME = "auto"  # the reader's name, wherever a model name is accepted
RULE_FILE = PACKAGE_MODELS / "auto.json"


@dataclass(frozen=True)
class AutoRule:
    """Ask `first`; keep its answer when its confidence >= `sure`, else ask `then`."""

    first: str
    then: str
    sure: float
    measured: dict = field(default_factory=dict)  # what the threshold was chosen on

    def first_stands(self, confidence: float) -> bool:
        """True when the first model's answer is kept (the comparison engine.js makes too)."""
        return confidence >= self.sure

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict, where: str = "auto rule") -> "AutoRule":
        try:
            rule = cls(first=str(d["first"]), then=str(d["then"]), sure=float(d["sure"]),
                       measured=dict(d.get("measured") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ContractError(f"{where}: expected first, then and sure ({e})") from None
        if not 0.0 <= rule.sure <= 1.0 or rule.first == rule.then:
            raise ContractError(f"{where}: sure must be in [0, 1] and first differ from then")
        return rule


def load_rule(path: str | os.PathLike = RULE_FILE) -> AutoRule | None:
    """The shipped rule, or None when there is none (then there is no "auto" reader)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ContractError(f"{path}: not readable JSON ({e})") from None
    return AutoRule.from_json(data, str(path))


def save_rule(rule: AutoRule, path: str | os.PathLike = RULE_FILE) -> Path:
    """Write the rule atomically."""
    return write_atomic(path, json.dumps(rule.to_json(), indent=2) + "\n")


class AutoSolver:
    """The "auto" reader in Python, with the Solver's solve_pixels/solve_images: each image is
    answered by `first` when it is sure enough, else by `then` (and says which did).

        AutoSolver.shipped().solve_pixels(images)   # [Answer], .model = "default" | "general"
    """

    def __init__(self, rule: AutoRule, first_dir: str | os.PathLike, then_dir: str | os.PathLike):
        from .solver import get_solver

        self.rule = rule
        self.first, self.then = get_solver(first_dir), get_solver(then_dir)

    @classmethod
    def shipped(cls) -> "AutoSolver":
        """Over the package's own models; ContractError when it holds no rule."""
        rule = load_rule(RULE_FILE)
        if rule is None:
            raise ContractError(f"{RULE_FILE} is missing: this package has no automatic reader")
        return cls(rule, PACKAGE_MODELS / rule.first, PACKAGE_MODELS / rule.then)

    def solve_named(self, images: list, alphabet: str | None = None) -> list[tuple[str, float, str]]:
        """RGBA uint8 images -> (text, confidence, name of the model that answered) each.  With a
        site's `alphabet` (alphabet.read_with), both models read with it, and the first is
        skipped when it cannot read all of its families (alphabet.covers)."""
        if alphabet and not covers(self.first.meta.charset, alphabet):
            return [(t, c, self.rule.then) for t, c in self.then.solve_images(images, alphabet)]
        first = self.first.solve_images(images, alphabet)
        unsure = [i for i, (_, c) in enumerate(first) if not self.rule.first_stands(c)]
        out = [(t, c, self.rule.first) for t, c in first]
        if unsure:
            for i, (t, c) in zip(unsure, self.then.solve_images([images[i] for i in unsure], alphabet)):
                out[i] = (t, c, self.rule.then)
        return out

    def solve_images(self, images: list, alphabet: str | None = None) -> list[tuple[str, float]]:
        return [(t, c) for t, c, _ in self.solve_named(images, alphabet)]
