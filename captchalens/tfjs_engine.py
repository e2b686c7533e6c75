"""`captchalens solve --engine tfjs`: the extension's own JS inference, run in Node.

Python decodes the images (captchalens.images.read_rgba, the same pixels the
TF engine gets) and hands the RGBA bytes to extension/node/solve.js, which runs
extension/lib/engine.js on TF.js (wasm backend) over the converted model.

The converted model is the TF.js copy of the Keras model folder: the one in
extension/models/<metadata name>/ when it was converted from exactly this
folder (same captchalens.json, same weights), else a fresh conversion kept in
a per-user temp folder keyed by the model's content.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .contract import KERAS_FILE, META_FILE, load_meta
from .images import read_rgba
from .solver import Answer, default_model_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
SOLVE_JS = REPO_ROOT / "extension" / "node" / "solve.js"
EXTENSION_MODELS = REPO_ROOT / "extension" / "models"
NODE_MODULES = REPO_ROOT / "node_modules"
NODE_TIMEOUT = 600  # seconds for one Node run (500 captchas take a few seconds)


def _error(message: str) -> Exception:
    from captchalens.converter import ConvertError

    return ConvertError(message)


def pack_rgba(images: list[np.ndarray]) -> bytes:
    """RGBA uint8 arrays -> solve.js input: count, then (width, height, bytes) per image."""
    parts = [struct.pack("<I", len(images))]
    for im in images:
        im = np.ascontiguousarray(im, np.uint8)
        if im.ndim != 3 or im.shape[2] != 4:
            raise ValueError(f"expected RGBA pixels (H, W, 4), got {im.shape}")
        parts.append(struct.pack("<II", im.shape[1], im.shape[0]))
        parts.append(im.tobytes())
    return b"".join(parts)


def _source_facts(model_dir: Path) -> tuple[bytes, str]:
    meta = load_meta(model_dir)  # ContractError with a clear message for a bad folder
    h = hashlib.sha256()
    with open(model_dir / meta.files.get("keras", KERAS_FILE), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return (model_dir / META_FILE).read_bytes(), h.hexdigest()


def _matches(converted: Path, meta_bytes: bytes, weights_sha: str) -> bool:
    """Was `converted` made from this exact model folder?"""
    try:
        if (converted / META_FILE).read_bytes() != meta_bytes:
            return False
        model_json = json.loads((converted / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    source = (model_json.get("userDefinedMetadata") or {}).get("captchalens") or {}
    return source.get("source_sha256", weights_sha) == weights_sha


def converted_model(model_dir: str | os.PathLike | None = None,
                    extension_models: str | os.PathLike | None = None) -> Path:
    """The TF.js copy of a Keras model folder, converting it (once) if needed."""
    model_dir = Path(model_dir) if model_dir else default_model_dir()
    meta = load_meta(model_dir)  # ContractError saying what is wrong with the folder
    meta_bytes, weights_sha = _source_facts(model_dir)
    shipped = Path(extension_models or EXTENSION_MODELS) / meta.name
    if _matches(shipped, meta_bytes, weights_sha):
        return shipped
    key = hashlib.sha256(meta_bytes + weights_sha.encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"captchalens-tfjs-{os.getuid()}" / key
    folder = cache / "model"
    if _matches(folder, meta_bytes, weights_sha):
        return folder
    from captchalens.converter import convert

    convert(model_dir, name="model", out=cache, vendor=False, install=False)
    return folder


def run_node(model: str | os.PathLike, images: list[np.ndarray], probs: bool = True,
             backend: str = "wasm") -> dict:
    """Run extension/node/solve.js on RGBA images; returns its JSON output."""
    node = shutil.which("node")
    if node is None:
        raise _error("Node.js is not installed (`node` is not on PATH): `--engine tfjs` runs the "
                     "extension's engine in Node 18 or newer")
    if not (NODE_MODULES / "@tensorflow" / "tfjs" / "package.json").is_file():
        raise _error(f"{NODE_MODULES} lacks @tensorflow/tfjs: run `npm ci` in {REPO_ROOT} first")
    if not (Path(model) / "model.json").is_file():
        raise _error(f"{model} has no model.json: run `captchalens convert` first")
    with tempfile.TemporaryDirectory(prefix="captchalens-node-") as tmp:
        out = Path(tmp) / "answers.json"
        cmd = [node, str(SOLVE_JS), "--model", str(model), "--input", "-", "--output", str(out),
               "--backend", backend, "--node-modules", str(NODE_MODULES)]
        if not probs:
            cmd.append("--no-probs")
        try:
            proc = subprocess.run(cmd, input=pack_rgba(images), capture_output=True, timeout=NODE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise _error(f"the Node engine did not finish within {NODE_TIMEOUT} s") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            msg = next((line.split("error: ", 1)[1] for line in reversed(err) if "error: " in line),
                       err[-1] if err else f"exit status {proc.returncode}")
            raise _error(f"the Node engine failed: {msg}")
        return json.loads(out.read_text(encoding="utf-8"))


def probs_tfjs(images: list[np.ndarray], model: str | os.PathLike) -> tuple[list[tuple[str, float]], np.ndarray, dict]:
    """Answers, probabilities [N, P, K] and the run's facts from the JS engine (converted model folder)."""
    data = run_node(model, images)
    meta = load_meta(model)
    results = data.pop("results")
    probs = np.array([r["probs"] for r in results], np.float32).reshape(len(results), *meta.output_shape)
    return [(r["text"], float(r["confidence"])) for r in results], probs, data


def solve_files_tfjs(paths: list[str | os.PathLike], model_dir: str | os.PathLike | None = None) -> list[Answer]:
    """Solve image files with the extension's engine. Raises ImageError naming a bad file."""
    images = [read_rgba(p) for p in paths]
    model = converted_model(model_dir)
    data = run_node(model, images, probs=False)
    return [Answer(r["text"], float(r["confidence"]), str(p)) for p, r in zip(paths, data["results"])]
