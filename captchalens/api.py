"""The two-line Python API.

    from captchalens import dec_batch
    dec_batch("captcha.png")      # -> "x7kq"
    dec_batch("folder/")          # -> ["x7kq", "ab12", ...] (files sorted by name)

A folder is read a chunk of files at a time. If any of its files cannot be
read (not an image, a FIFO, ...), dec_batch raises ImageError (a BatchError)
naming every such file, after solving the others: the exception's `answers`
holds an Answer per file, None for the bad ones.
"""
from __future__ import annotations

import os
from pathlib import Path

from .solver import expand_paths, get_solver


def dec_batch(path: str | os.PathLike, model: str | os.PathLike | None = None):
    """Solve one captcha file (returns its text) or a folder (a list of texts)."""
    solver = get_solver(model)
    if Path(path).is_dir():
        return [a.text for a in solver.solve_files(expand_paths([path]))]
    return solver.solve_files(expand_paths([path]))[0].text
