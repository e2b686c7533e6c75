"""A model folder as it was before the fast path (no model.tflite, not listed)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from captchalens.contract import META_FILE
from captchalens.tflite import TFLITE_FILE


def copy_without_fast_path(model: Path, dest: Path) -> Path:
    shutil.copytree(model, dest)
    (dest / TFLITE_FILE).unlink()
    meta = json.loads((dest / META_FILE).read_text())
    del meta["files"]["tflite"]
    (dest / META_FILE).write_text(json.dumps(meta))
    return dest
