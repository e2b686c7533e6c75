"""The model contract: everything a reader needs to use a model, written once.

Every model folder holds its weights and one ``captchalens.json`` beside them.
Training writes it; the Python solver, the converter, the local host and the
extension all read it.  Nothing about a model (charset, length, input size,
preprocessing, output layout, decoding) is typed anywhere else.

This module is pure Python (no TensorFlow) so that light readers stay light.
"""
from __future__ import annotations

import json
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

DECODINGS = ("fixed", "ctc_greedy")
# Temperatures a model's calibration may hold (captchalens/decode.py): outside this range the
# scaled confidence is ~0 or ~1 whatever the model says, so the fit went wrong.
TEMPERATURE_RANGE = (0.05, 20.0)


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
    def lengths(self) -> tuple[int, int]:
        """(shortest, longest) answer this model can give."""
        if self.decoding == "fixed":
            return (self.length, self.length)  # type: ignore[return-value]
        return (self.min_length or 1, self.max_length or self.output_shape[0])

    # ---- checks ----------------------------------------------------------
    def validate(self) -> "ModelMeta":
        problems = []
        if self.format != FORMAT:
            problems.append(f"format is {self.format!r}, this version reads {FORMAT!r}")
        if not self.charset or len(set(self.charset)) != len(self.charset):
            problems.append("charset must be a non-empty string without repeated characters")
        if self.decoding not in DECODINGS:
            problems.append(f"decoding must be one of {DECODINGS}, not {self.decoding!r}")
        if self.input_channels not in (1, 3):
            problems.append("input_channels must be 1 or 3")
        if self.input_channels == 1 and self.preprocessing.get("color") != "grayscale":
            problems.append("a 1-channel model needs preprocessing.color = 'grayscale'")
        if self.input_channels == 3 and self.preprocessing.get("color") != "rgb":
            problems.append("a 3-channel model needs preprocessing.color = 'rgb'")
        if min(self.input_height, self.input_width) < 8:
            problems.append("input height and width must be at least 8")
        if len(self.output_shape) != 2:
            problems.append(f"output_shape must be [positions, classes], not {self.output_shape}")
        elif self.decoding == "fixed":
            if self.length is None or self.output_shape != [self.length, len(self.charset)]:
                problems.append(
                    f"a fixed-length model's output must be [length, charset] = "
                    f"[{self.length}, {len(self.charset)}], not {self.output_shape}")
        elif self.decoding == "ctc_greedy":
            if self.output_shape[1] != len(self.charset) + 1:
                problems.append("a CTC model's output must have len(charset)+1 classes (blank last)")
        resize = self.preprocessing.get("resize", {})
        if resize.get("method") != "bilinear" or not resize.get("half_pixel_centers"):
            problems.append("only bilinear resizing with half-pixel centres is supported")
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
        missing = [k for k in ("name", "charset", "input_height", "input_width",
                               "input_channels", "decoding", "output_shape") if k not in d]
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
