"""The extension's own JS inference, run in Node (`captchalens solve --engine tfjs`, parity).

Python decodes the images (captchalens.images.read_rgba, the same pixels the
TF engine gets) and hands the RGBA bytes to extension/node/node_solver.js, which runs
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

from captchalens import paths
from captchalens.contract import KERAS_FILE, META_FILE, load_meta
from captchalens.decode import padded_probs
from captchalens.errors import UserError
from captchalens.files import sha256_file

from .core import convert

NODE_TIMEOUT = 600  # seconds for one Node run (500 captchas take a few seconds)


class NodeError(UserError):
    """Node.js or the extension's engine is missing, or the engine failed."""


def pack_rgba(images: list[np.ndarray]) -> bytes:
    """RGBA uint8 arrays -> node_solver.js input: count, then (width, height, bytes) per image."""
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
    return (model_dir / META_FILE).read_bytes(), sha256_file(model_dir / meta.files.get("keras", KERAS_FILE))


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
    model_dir = Path(model_dir) if model_dir else paths.default_model_dir()
    meta = load_meta(model_dir)  # ContractError saying what is wrong with the folder
    meta_bytes, weights_sha = _source_facts(model_dir)
    shipped = Path(extension_models) if extension_models else paths.extension_models()
    shipped = shipped / meta.name
    if _matches(shipped, meta_bytes, weights_sha):
        return shipped
    key = hashlib.sha256(meta_bytes + weights_sha.encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"captchalens-tfjs-{os.getuid()}" / key
    folder = cache / "model"
    if _matches(folder, meta_bytes, weights_sha):
        return folder
    convert(model_dir, name="model", out=cache, vendor=False, install=False)
    return folder


def run_node(model: str | os.PathLike, images: list[np.ndarray], probs: bool = True,
             backend: str = "wasm", one_at_a_time: bool = False) -> dict:
    """Run extension/node/node_solver.js on RGBA images; returns its JSON output. `one_at_a_time`:
    each image through engine.solve() (the extension's right-click path) instead of solveBatch."""
    node = shutil.which("node")
    if node is None:
        raise NodeError("Node.js is not installed (`node` is not on PATH): `--engine tfjs` runs the "
                     "extension's engine in Node 18 or newer")
    node_modules = paths.node_modules()
    if not (node_modules / "@tensorflow" / "tfjs" / "package.json").is_file():
        raise NodeError(f"{node_modules} lacks @tensorflow/tfjs: run `npm ci` in {node_modules.parent} first")
    if not (Path(model) / "model.json").is_file():
        raise NodeError(f"{model} has no model.json: run `captchalens convert` first")
    with tempfile.TemporaryDirectory(prefix="captchalens-node-") as tmp:
        out = Path(tmp) / "answers.json"
        cmd = [node, str(paths.node_solver()), "--model", str(model), "--input", "-", "--output", str(out),
               "--backend", backend, "--node-modules", str(node_modules)]
        if not probs:
            cmd.append("--no-probs")
        if one_at_a_time:
            cmd.append("--one-at-a-time")
        try:
            proc = subprocess.run(cmd, input=pack_rgba(images), capture_output=True, timeout=NODE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise NodeError(f"the Node engine did not finish within {NODE_TIMEOUT} s") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            msg = next((line.split("error: ", 1)[1] for line in reversed(err) if "error: " in line),
                       err[-1] if err else f"exit status {proc.returncode}")
            raise NodeError(f"the Node engine failed: {msg}")
        return json.loads(out.read_text(encoding="utf-8"))


def probs_tfjs(images: list[np.ndarray], model: str | os.PathLike) -> tuple[list[tuple[str, float]], np.ndarray, dict]:
    """Answers, probabilities [N, P, K] and the run's facts from the JS engine (converted model folder).
    With a width rule, laid out as Solver.probs lays them: P the most steps of any image, the
    shorter rows ending in steps that are surely the blank."""
    data = run_node(model, images)
    meta = load_meta(model)
    results = data.pop("results")
    rows = [np.asarray(r["probs"], np.float32).reshape(-1, meta.num_classes) for r in results]
    probs = padded_probs(meta, len(rows), max((len(r) for r in rows), default=meta.output_shape[0]))
    for i, r in enumerate(rows):
        probs[i, :len(r)] = r
    return [(r["text"], float(r["confidence"])) for r in results], probs, data
