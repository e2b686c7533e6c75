"""A user's folder of labelled captchas.

Labels come from ``labels.csv`` (``file,text``) when the folder has one, else
from each file name: the stem up to the first ``_`` or ``.``
(``x7kq.png``, ``x7kq_2.png`` and ``x7kq.site.png`` are all "x7kq").

Nothing is dropped silently: unreadable files and labels with characters
outside the charset are counted and named in the report, and an empty
folder is an error.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captchalens.images import IMAGE_SUFFIXES, ImageError, read_rgba

LABELS_CSV = "labels.csv"


class DataError(ValueError):
    """The folder cannot be used for training or evaluation; says why."""


@dataclass
class FolderReport:
    """What was read, and everything that was not, with reasons."""

    folder: str
    used: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    bad_label: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    not_images: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # names of the files used, in the order returned

    def summary(self) -> str:
        lines = [f"{self.folder}: {self.used} labelled captchas read"]
        if self.unreadable:
            lines.append(f"  {len(self.unreadable)} unreadable image(s) skipped, e.g. "
                         + "; ".join(f"{f} ({w})" for f, w in self.unreadable[:3]))
        if self.bad_label:
            lines.append(f"  {len(self.bad_label)} file(s) with unusable labels skipped, e.g. "
                         + "; ".join(f"{f} ({w})" for f, w in self.bad_label[:3]))
        if self.not_images:
            lines.append(f"  {len(self.not_images)} non-image file(s) ignored, e.g. "
                         + ", ".join(self.not_images[:3]))
        return "\n".join(lines)


def label_from_name(name: str) -> str:
    """'x7kq_2.png' -> 'x7kq'; 'x7kq.png' -> 'x7kq'."""
    return re.split(r"[_.]", name, maxsplit=1)[0]


def read_labels(folder: Path) -> dict[str, str] | None:
    """labels.csv as {file name: text}, or None when there is none."""
    path = folder / LABELS_CSV
    if not path.is_file():
        return None
    labels: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or (n == 1 and [c.strip().lower() for c in row[:2]] == ["file", "text"]):
                continue
            if len(row) < 2:
                raise DataError(f"{path}, line {n}: expected 'file,text', got {row!r}")
            labels[row[0].strip()] = row[1].strip()
    return labels


def scan(folder: str | os.PathLike) -> tuple[list[tuple[Path, str]], FolderReport]:
    """(image path, label) pairs of a folder, before decoding any image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    report = FolderReport(str(folder))
    labels = read_labels(folder)
    pairs = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name == LABELS_CSV or p.name.startswith("."):
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            report.not_images.append(p.name)
            continue
        if labels is not None:
            if p.name not in labels:
                report.bad_label.append((p.name, f"not listed in {LABELS_CSV}"))
                continue
            text = labels[p.name]
        else:
            text = label_from_name(p.name)
        if not text:
            report.bad_label.append((p.name, "empty label"))
            continue
        if any(c.isspace() or not c.isprintable() for c in text):
            report.bad_label.append((p.name, "label contains a space or a control character"))
            continue
        pairs.append((p, text))
    if labels is not None:
        present = {p.name for p, _ in pairs} | {f for f, _ in report.bad_label}
        for f in labels:
            if f not in present:
                report.unreadable.append((f, f"listed in {LABELS_CSV} but missing"))
    if not pairs:
        raise DataError(f"{folder}: no labelled captcha images found"
                        + (f" ({report.summary()})" if report.unreadable or report.not_images else ""))
    return pairs, report


def load_folder(folder: str | os.PathLike, charset: str | None = None,
                lengths: tuple[int, int] | None = None, charset_name: str = "the model's charset"):
    """Read every labelled image of a folder.

    Returns (RGBA images, texts, report).  With `charset`, labels using other
    characters are skipped and reported (as not in `charset_name`); with
    `lengths` (min, max), so are labels of other lengths.  report.files names
    the files used, in order.  Raises DataError when nothing usable is left.
    """
    pairs, report = scan(folder)
    images, texts = [], []
    allowed = set(charset) if charset else None
    for p, text in pairs:
        if allowed is not None and not set(text) <= allowed:
            bad = "".join(sorted(set(text) - allowed))
            report.bad_label.append((p.name, f"characters {bad!r} not in {charset_name}"))
            continue
        if lengths is not None and not lengths[0] <= len(text) <= lengths[1]:
            want = str(lengths[0]) if lengths[0] == lengths[1] else f"{lengths[0]}-{lengths[1]}"
            report.bad_label.append((p.name, f"label length {len(text)}, model reads {want}"))
            continue
        try:
            images.append(read_rgba(p))
        except ImageError as e:
            report.unreadable.append((p.name, str(e).split(": ", 1)[-1]))
            continue
        texts.append(text)
        report.files.append(p.name)
    report.used = len(texts)
    if not texts:
        raise DataError(f"nothing usable in {folder}:\n{report.summary()}")
    return images, texts, report


def infer_scheme(texts: list[str]) -> tuple[str, int, int]:
    """(charset sorted, min length, max length) seen in the labels."""
    chars = sorted(set("".join(texts)))
    lens = [len(t) for t in texts]
    return "".join(chars), min(lens), max(lens)


def split(n: int, names: list[str], val_share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split by a hash of each file name."""
    import hashlib

    keys = [int(hashlib.sha1(f"{seed}:{nm}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for nm in names]
    is_val = np.array([k < val_share for k in keys])
    idx = np.arange(n)
    return idx[~is_val], idx[is_val]
