"""A user's folder of labelled captchas.

Labels come from ``labels.csv`` (``file,text``) when the folder has one, else
from each file name: the stem up to the first ``_`` or ``.``
(``x7kq.png``, ``x7kq_2.png`` and ``x7kq.site.png`` are all "x7kq").

Labels are normalised to Unicode NFC, so "é" typed as one code point or as
"e" + a combining accent is one class.

Nothing is dropped silently: unreadable files and labels with characters
outside the charset are counted and named in the report, and an empty
folder is an error.  The same image (same decoded pixels) in several files
is used once when they agree on the label, and dropped altogether when they
do not (one of the labels is wrong, and a copy on each side of the
train/validation split would score the model on a captcha it trained on);
both are named in the report.  The split is by a hash of each image's
pixels, so copies never straddle it and renaming files does not change it.
A file listed twice in ``labels.csv`` with two labels is an error naming
both lines.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captchalens.errors import UserError
from captchalens.images import IMAGE_SUFFIXES, ImageError, read_rgba

LABELS_CSV = "labels.csv"


class DataError(UserError, ValueError):
    """The folder cannot be used for training or evaluation; says why."""


@dataclass
class FolderReport:
    """What was read, and everything that was not, with reasons."""

    folder: str
    used: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    bad_label: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    not_images: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (file, why): a copy, used once
    notes: list[str] = field(default_factory=list)  # warnings about the folder itself
    files: list[str] = field(default_factory=list)  # names of the files used, in the order returned
    keys: list[str] = field(default_factory=list)  # content hash of each file used (split key)

    def summary(self) -> str:
        lines = [f"{self.folder}: {self.used} labelled captchas read"]
        lines += [f"  note: {n}" for n in self.notes]
        if self.unreadable:
            lines.append(f"  {len(self.unreadable)} unreadable image(s) skipped, e.g. "
                         + "; ".join(f"{f} ({w})" for f, w in self.unreadable[:3]))
        if self.bad_label:
            lines.append(f"  {len(self.bad_label)} file(s) with unusable labels skipped, e.g. "
                         + "; ".join(f"{f} ({w})" for f, w in self.bad_label[:3]))
        if self.duplicates:
            lines.append(f"  {len(self.duplicates)} duplicate image(s) skipped (each image is used once), e.g. "
                         + "; ".join(f"{f} ({w})" for f, w in self.duplicates[:3]))
        if self.not_images:
            lines.append(f"  {len(self.not_images)} non-image file(s) ignored, e.g. "
                         + ", ".join(self.not_images[:3]))
        return "\n".join(lines)


def label_from_name(name: str) -> str:
    """'x7kq_2.png' -> 'x7kq'; 'x7kq.png' -> 'x7kq' (in Unicode NFC)."""
    return nfc(re.split(r"[_.]", name, maxsplit=1)[0])


def nfc(text: str) -> str:
    """One spelling per label: 'é' as one code point, whichever way it was typed."""
    return unicodedata.normalize("NFC", text)


def read_labels(folder: Path, notes: list[str] | None = None) -> dict[str, str] | None:
    """labels.csv as {file name: text (NFC)}, or None when there is none.

    A file listed twice with two labels is a DataError naming both lines; listed
    twice with the same label, it is noted in `notes`."""
    path = folder / LABELS_CSV
    if not path.is_file():
        return None
    labels: dict[str, str] = {}
    lines: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or (n == 1 and [c.strip().lower() for c in row[:2]] == ["file", "text"]):
                continue
            if len(row) < 2:
                raise DataError(f"{path}, line {n}: expected 'file,text', got {row!r}")
            name, text = row[0].strip(), nfc(row[1].strip())
            if name in labels:
                if labels[name] != text:
                    raise DataError(f"{path}: {name} is listed twice with different labels: line "
                                    f"{lines[name]} says {labels[name]!r}, line {n} says {text!r}; "
                                    f"keep the right one")
                if notes is not None:
                    notes.append(f"{LABELS_CSV} lists {name} twice (lines {lines[name]} and {n}, "
                                 f"same label {text!r})")
                continue
            labels[name], lines[name] = text, n
    return labels


def scan(folder: str | os.PathLike) -> tuple[list[tuple[Path, str]], FolderReport]:
    """(image path, label) pairs of a folder, before decoding any image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    report = FolderReport(str(folder))
    labels = read_labels(folder, report.notes)
    pairs = []
    for p in sorted(folder.iterdir()):
        if p.name == LABELS_CSV or p.name.startswith(".") or p.is_dir():
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            if p.is_file():
                report.not_images.append(p.name)
            continue
        if not p.is_file():  # a FIFO or a device named like an image: named, never opened
            report.unreadable.append((p.name, f"not a regular file ({_kind(p)})"))
            continue
        if labels is not None:
            if p.name not in labels:
                report.bad_label.append((p.name, f"not listed in {LABELS_CSV}"))
                continue
            text = labels[p.name]
        else:
            text = label_from_name(p.name)
        text = nfc(text)
        if not text:
            report.bad_label.append((p.name, "empty label"))
            continue
        if any(c.isspace() or not c.isprintable() for c in text):
            report.bad_label.append((p.name, "label contains a space or a control character"))
            continue
        pairs.append((p, text))
    if labels is not None:
        present = ({p.name for p, _ in pairs} | {f for f, _ in report.bad_label}
                   | {f for f, _ in report.unreadable})
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
    read: list[tuple[str, np.ndarray, str, str]] = []  # (file, image, text, content hash)
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
            image = read_rgba(p)
        except ImageError as e:
            report.unreadable.append((p.name, str(e).split(": ", 1)[-1]))
            continue
        read.append((p.name, image, text, content_hash(image)))
    images, texts = [], []
    for name, image, text, key in _one_per_image(read, report):
        images.append(image)
        texts.append(text)
        report.files.append(name)
        report.keys.append(key)
    report.used = len(texts)
    if not texts:
        raise DataError(f"nothing usable in {folder}:\n{report.summary()}")
    return images, texts, report


def content_hash(image: np.ndarray) -> str:
    """The identity of an image: a hash of its decoded pixels (and shape), so the same
    picture saved as PNG and as BMP, or under two names, is one image."""
    h = hashlib.sha256(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def _one_per_image(read, report: FolderReport):
    """Each distinct image once: copies that agree on the label are used once (the
    first by name), copies that disagree are all dropped. Both are reported."""
    groups: dict[str, list[int]] = {}
    for i, (_, _, _, key) in enumerate(read):
        groups.setdefault(key, []).append(i)
    keep = []
    for idx in groups.values():
        if len({read[i][2] for i in idx}) > 1:
            for i in idx:
                others = ", ".join(f"{read[j][0]} ({read[j][2]!r})" for j in idx if j != i)
                report.bad_label.append((read[i][0], f"the same image as {others} under another label: "
                                                     f"conflicting labels, all copies dropped"))
            continue
        for i in idx[1:]:
            report.duplicates.append((read[i][0], f"the same image as {read[idx[0]][0]}"))
        keep.append(idx[0])
    return [read[i] for i in sorted(keep)]


def _kind(p: Path) -> str:
    try:
        mode = os.stat(p).st_mode
    except OSError as e:
        return e.strerror or "unreadable"
    return {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
            stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(mode), "not a file")


def infer_scheme(texts: list[str]) -> tuple[str, int, int]:
    """(charset sorted, min length, max length) seen in the labels."""
    chars = sorted(set("".join(texts)))
    lens = [len(t) for t in texts]
    return "".join(chars), min(lens), max(lens)


def split(n: int, keys: list[str], val_share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split by a hash of each item's key: for a
    folder, report.keys (each image's content hash), so that copies of an image
    always fall on the same side."""
    keys = [int(hashlib.sha1(f"{seed}:{k}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for k in keys]
    is_val = np.array([k < val_share for k in keys])
    idx = np.arange(n)
    return idx[~is_val], idx[is_val]
