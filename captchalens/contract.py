"""The model contract: everything a reader needs to use a model, written once.

Every model folder holds its weights and one ``captchalens.json`` beside them.
Training writes it; the Python solver, the converter, the local host and the
extension all read it.  Nothing about a model (charset, length, input size,
preprocessing, output layout, decoding) is typed anywhere else.

This module is pure Python (no TensorFlow) so that light readers stay light.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import write_atomic

META_FILE = "captchalens.json"  # the contract file beside every model's weights
FORMAT = "captchalens.model/1"  # bump when a reader must change to read new files
KERAS_FILE = "model.h5"  # tf_keras (Keras 2) weights + graph, readable by the tfjs converter

# Preprocessing shared by every model: the same tensor ops run in Python (TF)
# and in the extension (TF.js).  See captchalens/preprocess.py and
# extension/lib/engine.js (preprocess()).
DEFAULT_PREPROCESSING: dict[str, Any] = {
    "alpha": "composite_white",  # rgb*a + 255*(1-a), a = alpha/255
    "color": "grayscale",  # weighted sum of R, G, B (ITU-R 601 luma)
    "gray_weights": [0.2989, 0.587, 0.114],
    "scale": 1.0 / 255.0,  # x = value * scale + offset, before resizing
    "offset": 0.0,
    "resize": {
        "method": "bilinear",
        "align_corners": False,
        "half_pixel_centers": True,
        "antialias": False,
    },
}

# preprocessing.resize.width, optional: the input width follows each image's shape instead of
# being input_width for every image.  "geometric_mean": the geometric mean of input_width and
# the image's own width at input_height rows (input_height * width / height), rounded half up to
# a multiple of `multiple`, within [min, max].  A CTC reader's weights do not depend on the width,
# so a reader trained on one width reads each image nearer its own proportions (the general
# reader: bench/results/zero_shot_variants.md).  ModelMeta.input_width_for() here,
# preprocess.tf_input_width() in the TF and TFLite graphs and engine.js inputWidth() compute it
# in the same integer-exact way (tests/contract_cases.json: width_cases).
# Optional in the rule, `scales`: whole percents (50-200, one of them 100, at most 9, no repeats).
# Each image is then read once per scale, in the listed order, at the rule's width scaled and
# rounded half up to the multiple, m * floor((k * p + 50) / 100) for the rule's width m * k,
# within [min, max]; `combine` (optional, COMBINES) says which read answers (decode.answering):
# "surest" (the default): the read with the highest confidence, the earliest on a tie: a reader
# misreads differently at different widths and is least sure where it is wrong; "vote": the text
# most reads give, answered by its surest read (a tie of votes: the text with the surest read, then
# the earliest), reading stopping once the reads left could not change the text
# (decode.settled). The general reader: bench/results/zero_shot_variants.md.
WIDTH_RULES = ("geometric_mean",)
MAX_INPUT_WIDTH = 1024
MAX_SCALES = 9
SCALE_RANGE = (50, 200)
COMBINES = ("surest", "vote")

DECODINGS = ("fixed", "ctc_greedy")
# Temperatures a model's calibration may hold (captchalens/decode.py): outside this range the
# scaled confidence is ~0 or ~1 whatever the model says, so the fit went wrong.
TEMPERATURE_RANGE = (0.05, 20.0)


# The images CaptchaLens reads: one file for both languages. It lives in the extension
# (extension/shared/image_limits.json, which the extension can load); this package reads it
# through the symlink captchalens/image_limits.json (a copy in a built package).
LIMITS_FILE = Path(__file__).with_name("image_limits.json")


def _load_limits(path: Path = LIMITS_FILE) -> dict[str, Any]:
    try:
        limits = json.loads(path.read_text(encoding="utf-8"))
        ok = (all(isinstance(limits.get(k), int) and limits[k] > 0 for k in ("max_side", "max_pixels"))
              and all(isinstance(limits.get(k), list) and limits[k] for k in ("formats", "suffixes")))
    except (OSError, ValueError, AttributeError) as e:
        raise RuntimeError(f"{path} is unreadable ({e}): the package is incomplete") from e
    if not ok:
        raise RuntimeError(f"{path} must hold max_side, max_pixels (whole numbers) and formats, suffixes")
    return limits


IMAGE_LIMITS = _load_limits()
MAX_SIDE: int = IMAGE_LIMITS["max_side"]  # a captcha is small: refuse anything larger before decoding it
MAX_PIXELS: int = IMAGE_LIMITS["max_pixels"]  # and anything whose area could be a decompression bomb
IMAGE_FORMATS: tuple[str, ...] = tuple(IMAGE_LIMITS["formats"])  # the only Pillow decoders that run
IMAGE_SUFFIXES: frozenset[str] = frozenset(IMAGE_LIMITS["suffixes"])  # image files in a folder


def image_size_problem(width, height) -> str:
    """'' for a size a captcha may have, else why not (engine.js checkImageSize: the same words)."""
    if not (_whole(width) and _whole(height)) or width < 1 or height < 1:
        return f"image size must be positive whole numbers, not {width}x{height}"
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        return (f"image is {width}x{height} pixels; a captcha must be at most "
                f"{MAX_SIDE}x{MAX_SIDE} and {MAX_PIXELS} pixels")
    return ""


# Keys every captchalens.json must hold (not null); the rest have defaults. engine.js checkMeta: the same.
REQUIRED_KEYS = ("name", "charset", "input_height", "input_width", "input_channels", "decoding",
                 "output_shape", "preprocessing", "format")


def _whole(v) -> bool:
    """A whole number as JSON gives it (48 or 48.0; JavaScript cannot tell them apart), not a bool."""
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _preprocessing_problems(p, channels) -> list[str]:
    """The preprocessing this version implements (captchalens/preprocess.py, engine.js preprocess())."""
    if not isinstance(p, dict):
        return ["preprocessing must be an object"]
    problems = []
    if p.get("alpha") != "composite_white":
        problems.append(f"preprocessing.alpha {p.get('alpha')!r} is not supported (only 'composite_white')")
    if p.get("color") != ("grayscale" if channels == 1 else "rgb"):
        problems.append(f"preprocessing.color {p.get('color')!r} does not fit {channels} input channel(s) "
                        f"(1: 'grayscale', 3: 'rgb')")
    weights = p.get("gray_weights")
    if p.get("color") == "grayscale" and not (isinstance(weights, list) and len(weights) == 3
                                              and all(_number(w) for w in weights)):
        problems.append("preprocessing.gray_weights must be three numbers")
    if not (_number(p.get("scale")) and _number(p.get("offset"))):
        problems.append("preprocessing.scale and preprocessing.offset must be numbers")
    resize = p.get("resize")
    if not (isinstance(resize, dict) and resize.get("method") == "bilinear"
            and resize.get("half_pixel_centers") is True and resize.get("align_corners") is False):
        problems.append("only bilinear resizing with half-pixel centres (align_corners false) is supported")
    elif resize.get("width") is not None:
        problems += _width_rule_problems(resize["width"])
    return problems


def _width_rule_problems(rule) -> list[str]:
    if not isinstance(rule, dict) or rule.get("rule") not in WIDTH_RULES:
        return [f"preprocessing.resize.width must be an object whose rule is one of {WIDTH_RULES}"]
    m, lo, hi = rule.get("multiple"), rule.get("min"), rule.get("max")
    if not (all(_whole(v) for v in (m, lo, hi)) and m >= 2 and m % 2 == 0 and 8 <= lo <= hi <= MAX_INPUT_WIDTH
            and lo % m == 0 and hi % m == 0):
        return [f"preprocessing.resize.width needs an even whole multiple and whole min and max that are "
                f"multiples of it, 8 <= min <= max <= {MAX_INPUT_WIDTH}"]
    scales = rule.get("scales")
    if scales is not None and not (
            isinstance(scales, list) and 1 <= len(scales) <= MAX_SCALES and all(_whole(v) for v in scales)
            and all(SCALE_RANGE[0] <= v <= SCALE_RANGE[1] for v in scales) and 100 in scales
            and len(set(scales)) == len(scales)):
        return [f"preprocessing.resize.width.scales must be a list of at most {MAX_SCALES} different whole "
                f"percents from {SCALE_RANGE[0]} to {SCALE_RANGE[1]}, one of them 100"]
    if "combine" in rule and rule["combine"] not in COMBINES:
        return [f"preprocessing.resize.width.combine must be one of {', '.join(COMBINES)}"]
    return []


def pixel_preprocessing(p: dict[str, Any]) -> dict[str, Any]:
    """preprocessing without the width rule: what two models must share for one to start from
    the other's weights (the rule changes how wide an image is read, not what the weights mean)."""
    out = json.loads(json.dumps(p))
    if isinstance(out.get("resize"), dict):
        out["resize"].pop("width", None)
    return out


class ContractError(UserError, ValueError):
    """A model folder or its metadata cannot be used; the message says why."""


@dataclass
class ModelMeta:
    """Metadata of one model: its contract with every reader."""

    name: str
    charset: str
    input_height: int
    input_width: int
    input_channels: int
    decoding: str  # "fixed": output [length, len(charset)]; "ctc_greedy": [steps, len(charset)+1]
    output_shape: list[int]
    length: int | None = None  # fixed-length models
    min_length: int | None = None  # CTC models: the label lengths seen in training
    max_length: int | None = None
    version: str = "1"
    architecture: str = ""
    params: int = 0
    macs: int = 0  # multiply-adds per captcha
    preprocessing: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_PREPROCESSING)))
    trained_on: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Optional: {"temperature": T, ...how it was fitted} (training/calibrate.py); None = T of 1.
    calibration: dict[str, Any] | None = None
    created: str = ""
    files: dict[str, str] = field(default_factory=lambda: {"keras": KERAS_FILE})
    format: str = FORMAT

    # ---- derived facts -------------------------------------------------
    @property
    def blank_index(self) -> int | None:
        """CTC blank class: the last class, after the charset."""
        return len(self.charset) if self.decoding == "ctc_greedy" else None

    @property
    def temperature(self) -> float:
        """Confidence temperature (captchalens/decode.py); 1.0 for an uncalibrated model."""
        return float(self.calibration["temperature"]) if self.calibration else 1.0

    @property
    def num_classes(self) -> int:
        return len(self.charset) + (1 if self.decoding == "ctc_greedy" else 0)

    @property
    def width_rule(self) -> dict[str, Any] | None:
        """preprocessing.resize.width, or None: every image is read input_width wide."""
        resize = self.preprocessing.get("resize") if isinstance(self.preprocessing, dict) else None
        return resize.get("width") if isinstance(resize, dict) else None

    def input_width_for(self, width: int, height: int) -> int:
        """The width an image of width x height pixels is read at (see WIDTH_RULES).
        Rounding half up of sqrt(X) / m, X = input_width * input_height * width / height, is
        the largest k with (2mk - m)^2 * height <= 4 * input_width * input_height * width:
        whole numbers, so the float estimate is corrected to the exact k."""
        rule = self.width_rule
        if rule is None:
            return self.input_width
        m, ref, rows = rule["multiple"], self.input_width, self.input_height
        bound = 4 * ref * rows * width
        k = math.floor(math.sqrt(ref * rows * width / height) / m + 0.5)
        if (2 * m * k - m) ** 2 * height > bound:
            k -= 1
        elif (2 * m * (k + 1) - m) ** 2 * height <= bound:
            k += 1
        return min(rule["max"], max(rule["min"], m * k))

    @property
    def width_scales(self) -> list[int]:
        """The percents each image is read at (the rule's `scales`): [100] without them."""
        rule = self.width_rule
        return [int(v) for v in rule["scales"]] if rule is not None and rule.get("scales") else [100]

    @property
    def width_combine(self) -> str:
        """How the reads at the rule's scales give one answer (COMBINES; decode.answering)."""
        rule = self.width_rule
        return rule.get("combine", "surest") if rule is not None else "surest"

    def scaled_width(self, width: int, height: int, percent: int = 100) -> int:
        """input_width_for at `percent` of it: m * floor((k * percent + 50) / 100), within [min, max]."""
        base = self.input_width_for(width, height)
        rule = self.width_rule
        if rule is None or percent == 100:
            return base
        m = rule["multiple"]
        return min(rule["max"], max(rule["min"], m * ((base // m * percent + 50) // 100)))

    def steps_for(self, width: int, height: int, percent: int = 100) -> int:
        """Output positions (CTC steps) for an image of width x height (read at `percent`)."""
        if self.width_rule is None:
            return self.output_shape[0]
        return self.scaled_width(width, height, percent) * self.output_shape[0] // self.input_width

    @property
    def lengths(self) -> tuple[int, int]:
        """(shortest, longest) answer this model can give."""
        if self.decoding == "fixed":
            return (self.length, self.length)  # type: ignore[return-value]
        return (self.min_length or 1, self.max_length or self.output_shape[0])

    # ---- checks ----------------------------------------------------------
    def validate(self) -> "ModelMeta":
        """Refuse metadata a reader cannot follow. The same rules, case for case, as
        extension/lib/engine.js checkMeta(): tests/contract_cases.json holds both to them."""
        problems = []
        if self.format != FORMAT:
            problems.append(f"format is {self.format!r}, this version reads {FORMAT!r}")
        if not isinstance(self.name, str) or not self.name:
            problems.append("name must be a non-empty string")
        if not isinstance(self.charset, str) or not self.charset or len(set(self.charset)) != len(self.charset):
            problems.append("charset must be a non-empty string without repeated characters")
        elif any(ord(c) > 0xFFFF for c in self.charset):
            problems.append("charset characters must be in Unicode's Basic Multilingual Plane "
                            "(the extension indexes the charset by UTF-16 units)")
        if self.decoding not in DECODINGS:
            problems.append(f"decoding must be one of {DECODINGS}, not {self.decoding!r}")
        sizes = (self.input_height, self.input_width)
        if not all(_whole(v) for v in sizes) or min(sizes) < 8:
            problems.append("input height and width must be whole numbers, at least 8")
        if self.input_channels not in (1, 3) or not _whole(self.input_channels):
            problems.append("input_channels must be 1 or 3")
        problems += _preprocessing_problems(self.preprocessing, self.input_channels)
        shape = self.output_shape
        if not isinstance(shape, list) or len(shape) != 2 or not all(_whole(v) and v >= 1 for v in shape):
            problems.append(f"output_shape must be [positions, classes], not {shape}")
        elif self.decoding == "fixed" and isinstance(self.charset, str):
            if not _whole(self.length) or shape != [self.length, len(self.charset)]:
                problems.append(
                    f"a fixed-length model's output must be [length, charset] = "
                    f"[{self.length}, {len(self.charset)}], not {shape}")
        elif self.decoding == "ctc_greedy" and isinstance(self.charset, str):
            if shape[1] != len(self.charset) + 1:
                problems.append("a CTC model's output must have len(charset)+1 classes (blank last)")
        if self.width_rule is not None and not problems:
            if self.decoding != "ctc_greedy":
                problems.append("a width that follows the image (preprocessing.resize.width) needs CTC "
                                "decoding: fixed-length heads read one width")
            elif (self.input_width % shape[0] or self.width_rule["multiple"] % (self.input_width // shape[0])):
                problems.append("with preprocessing.resize.width, input_width must be a whole number of "
                                "output steps and the width multiple a whole number of step widths")
        if self.calibration is not None:
            t = self.calibration.get("temperature") if isinstance(self.calibration, dict) else None
            lo, hi = TEMPERATURE_RANGE
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not lo <= t <= hi:
                problems.append(f"calibration must be an object whose temperature is a number "
                                f"from {lo:g} to {hi:g}, not {t!r}")
        if problems:
            raise ContractError(f"model {self.name!r}: " + "; ".join(problems))
        return self

    # ---- (de)serialisation ------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["blank_index"] = self.blank_index  # written for JS readers; derived on read
        if self.calibration is None:
            del d["calibration"]  # optional: models from before calibration read the same
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelMeta":
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in REQUIRED_KEYS if d.get(k) is None]
        if missing:
            raise ContractError(f"metadata lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in known}).validate()

    def save(self, folder: str | os.PathLike) -> Path:
        """Write captchalens.json atomically into folder."""
        path = Path(folder) / META_FILE
        write_atomic(path, json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")
        return path


def load_meta(folder: str | os.PathLike) -> ModelMeta:
    """Read and check a model folder's metadata, with a message a user understands."""
    folder = Path(folder)
    path = folder / META_FILE
    if not folder.exists():
        raise ContractError(f"model folder {folder} does not exist")
    if not path.is_file():
        raise ContractError(
            f"{folder} has no {META_FILE}: it is not a CaptchaLens model folder "
            f"(train one with `captchalens train`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ContractError(f"{path} is not readable JSON: {e}") from e
    if not isinstance(data, dict):
        raise ContractError(f"{path} must hold a JSON object")
    try:
        return ModelMeta.from_json(data)
    except TypeError as e:
        raise ContractError(f"{path}: {e}") from e
    except ContractError as e:
        raise ContractError(f"{path}: {e}") from e
