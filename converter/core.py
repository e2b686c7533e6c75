"""Keras model folder -> TF.js files for the extension.

    captchalens convert                                  # the shipped default model
    captchalens convert --model runs/mysite --name mysite

Writes ``extension/models/<name>/`` (model.json + weight shards from the
tensorflowjs converter, plus the model's captchalens.json copied byte for
byte), regenerates ``extension/models/index.json`` from every installed
model's metadata, and refreshes ``extension/vendor/`` (TF.js + its wasm
backend) from node_modules.  Every folder and file is written into a temp
name and renamed into place, so the extension never sees half a model.

TensorFlow and tensorflowjs are imported inside the functions that need them:
importing this module stays cheap (the CLI imports it to register itself).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from captchalens import paths
from captchalens.contract import KERAS_FILE, META_FILE, ContractError, ModelMeta, load_meta
from captchalens.errors import UserError
from captchalens.files import replace_dir, sha256_file, write_atomic
MODEL_JSON = "model.json"  # tensorflowjs layers-model topology + weights manifest
DEFAULT_NAME = "default"  # the shipped model's name: the extension's and the host's default
INDEX_FILE = "index.json"  # extension/models/index.json: the installed models
QUANTIZE = ("none", "float16", "uint8")  # --quantize choices (weights only; activations stay float32)
SHARD_BYTES = 4 * 1024 * 1024  # tensorflowjs default weight shard size

# extension/vendor/<file> <- node_modules/<path>: the classic-script builds that
# pass the extension's CSP (tf.min.js does not) and the wasm binaries.
VENDOR_FILES = {
    "tf.es2017.min.js": "@tensorflow/tfjs/dist/tf.es2017.min.js",
    "tf-backend-wasm.es2017.min.js": "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.es2017.min.js",
    "tfjs-backend-wasm.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
    "tfjs-backend-wasm-simd.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
}

# Config keys tf_keras writes for SeparableConv2D that it never uses (the layer
# has depthwise_*/pointwise_* instead) and that TF.js refuses to load:
# "Fields kernelInitializer, kernelRegularizer and kernelConstraint are invalid
# for SeparableConv2D" (tensorflow/tfjs#4479).
_TFJS_REJECTED_KEYS = {
    "SeparableConv2D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint"),
    "SeparableConv1D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint"),
}


class ConvertError(UserError, ValueError):
    """A model cannot be converted or installed; the message says why and what to do."""


@dataclass
class ConvertResult:
    name: str
    folder: Path  # extension/models/<name>
    index: Path  # extension/models/index.json
    quantize: str
    bytes: int  # model.json + shards
    vendor: list[Path] = field(default_factory=list)
    installed: Path | None = None  # home models/<name>, when installed there


# ---- checks --------------------------------------------------------------------

def check_name(name: str) -> str:
    """A model name usable as one folder name, unchanged (no case folding, no paths)."""
    from captchalens.home import safe_name

    try:
        ok = safe_name(name, "model name") == name
    except ValueError:
        ok = False
    if not ok:
        raise ConvertError(f"unsafe model name {name!r}: use 1-64 lowercase letters, digits, '.', '_' "
                           f"or '-', starting with a letter or digit (it becomes a folder name)")
    from captchalens.auto import AUTO_NAME

    if name == AUTO_NAME:
        raise ConvertError(f"{AUTO_NAME!r} names the reader that picks between the shipped models: "
                           f"give this model another name with --name")
    return name


def read_model_folder(model_dir: str | os.PathLike) -> tuple[ModelMeta, bytes]:
    """The folder's checked metadata and the raw bytes of its captchalens.json."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ConvertError(f"model folder {folder} does not exist")
    if not (folder / META_FILE).is_file():
        raise ConvertError(f"{folder} has no {META_FILE}: it is not a CaptchaLens model folder "
                           f"(train one with `captchalens train`)")
    try:
        meta = load_meta(folder)
    except ContractError as e:
        raise ConvertError(f"cannot convert {folder}: {e}") from None
    if not (folder / meta.files.get("keras", KERAS_FILE)).is_file():
        raise ConvertError(f"{folder} has metadata but no weights file {meta.files.get('keras', KERAS_FILE)}")
    return meta, (folder / META_FILE).read_bytes()


def load_keras(model_dir: Path, meta: ModelMeta):
    """Load the tf_keras model and check it against its metadata: one input of
    the stated size, one output of the stated shape (what engine.js decodes)."""
    from captchalens.modelfile import load_keras
    from captchalens.solver import check_io

    weights = model_dir / meta.files.get("keras", KERAS_FILE)
    try:
        model = load_keras(weights)  # refuses a file that would run code (captchalens/modelfile.py)
    except ContractError as e:  # damaged, or not plain layers: the message names the file and why
        raise ConvertError(str(e)) from None
    if len(model.inputs) != 1:
        raise ConvertError(f"{weights}: the model has {len(model.inputs)} inputs; a CaptchaLens model "
                           f"has one image input")
    if len(model.outputs) != 1:
        raise ConvertError(f"{weights}: the model has {len(model.outputs)} outputs; the extension reads "
                           f"one output tensor of probabilities [positions, classes]")
    try:
        check_io(model, meta, weights)
    except ContractError as e:
        raise ConvertError(f"{e} ({meta.decoding} decoding)") from None
    return model


# ---- conversion ----------------------------------------------------------------------

@contextlib.contextmanager
def _quiet():
    """tensorflowjs prints a decision-forests banner on import (to a redirected stdout
    it even tries IPython) and Keras warns about HDF5: hide both."""
    import warnings

    from captchalens._tf import _quiet_stderr

    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
    with _quiet_stderr(), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def tfjs_compatible(model_json: dict) -> int:
    """Drop the config keys TF.js rejects (see _TFJS_REJECTED_KEYS). Returns how many."""
    dropped = 0

    def walk(layers):
        nonlocal dropped
        for layer in layers:
            cfg = layer.get("config", {})
            for key in _TFJS_REJECTED_KEYS.get(layer.get("class_name"), ()):
                if key in cfg:
                    del cfg[key]
                    dropped += 1
            if isinstance(cfg.get("layers"), list):  # nested models
                walk(cfg["layers"])

    walk(model_json["modelTopology"]["model_config"]["config"]["layers"])
    return dropped


def write_tfjs(model, folder: Path, quantize: str = "none", user_meta: dict | None = None) -> int:
    """Run the tensorflowjs converter on a loaded tf_keras model into folder.

    Returns the bytes written (model.json + shards).
    """
    if quantize not in QUANTIZE:
        raise ConvertError(f"--quantize must be one of {', '.join(QUANTIZE)}, not {quantize!r}")
    with _quiet():
        import tensorflowjs as tfjs

        tfjs.converters.save_keras_model(
            model, str(folder),
            quantization_dtype_map=None if quantize == "none" else {quantize: True},
            weight_shard_size_bytes=SHARD_BYTES,
            metadata=user_meta)
    path = folder / MODEL_JSON
    model_json = json.loads(path.read_text(encoding="utf-8"))
    if tfjs_compatible(model_json):
        path.write_text(json.dumps(model_json), encoding="utf-8")
    return sum(p.stat().st_size for p in folder.iterdir() if p.name == MODEL_JSON or p.suffix == ".bin")


def _temp_dir(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    os.chmod(tmp, 0o755)
    return tmp


def convert_to_folder(model_dir: Path, meta: ModelMeta, meta_bytes: bytes, dest: Path,
                      quantize: str = "none") -> int:
    """Convert one model into dest (atomically). Returns the model's TF.js bytes."""
    from .fold import fold_batchnorm

    # TF.js runs each layer as its own op: batch norms folded into the convs take the
    # extension's wasm time per captcha from ~8 to ~6 ms (see fold.py)
    model, folded = fold_batchnorm(load_keras(model_dir, meta))
    tmp = _temp_dir(dest)
    try:
        source = {
            "source_sha256": sha256_file(model_dir / meta.files.get("keras", KERAS_FILE)),
            "meta_sha256": hashlib.sha256(meta_bytes).hexdigest(),
            "quantize": quantize,
            "folded_batchnorms": folded,
        }
        size = write_tfjs(model, tmp, quantize, {"captchalens": source})
        (tmp / META_FILE).write_bytes(meta_bytes)  # verbatim: the contract is never retyped
        for p in tmp.iterdir():
            os.chmod(p, 0o644)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return size


# ---- index, vendor, home install -------------------------------------------------------------

INDEX_KEYS = ("charset", "decoding", "length", "min_length", "max_length", "version", "metrics")


def write_index(models_out: str | os.PathLike, default: str = DEFAULT_NAME) -> Path:
    """Regenerate <models_out>/index.json from every installed model's captchalens.json."""
    models_out = Path(models_out)
    entries = []
    for folder in sorted(models_out.iterdir()) if models_out.is_dir() else []:
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if not (folder / META_FILE).is_file() or not (folder / MODEL_JSON).is_file():
            continue  # not a converted model (a stray folder): not listed
        meta = load_meta(folder)
        entry = {"name": folder.name, "dir": f"models/{folder.name}/"}
        entry.update({k: getattr(meta, k) for k in INDEX_KEYS})
        entries.append(entry)
    names = [e["name"] for e in entries]
    index = {"default": default if default in names else (names[0] if names else None), "models": entries}
    from captchalens.auto import load_rule

    rule = load_rule()
    if rule is not None and rule.first in names and rule.then in names:
        index["auto"] = rule.to_json()  # the reader for sites without a model: model_store.js applies it
    path = models_out / INDEX_FILE
    models_out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(index, indent=2) + "\n")
    os.chmod(path, 0o644)
    return path


def check_node_modules(node_modules: str | os.PathLike | None = None) -> Path:
    """The node_modules folder holding every vendor file, or ConvertError saying to run npm ci."""
    nm = Path(node_modules) if node_modules else paths.node_modules()
    missing = [rel for rel in VENDOR_FILES.values() if not (nm / rel).is_file()]
    if missing:
        raise ConvertError(f"{nm} lacks {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                           + f": run `npm ci` in {nm.parent} first (it installs @tensorflow/tfjs and "
                             f"@tensorflow/tfjs-backend-wasm from package-lock.json)")
    return nm


def copy_vendor(vendor_dir: str | os.PathLike, node_modules: str | os.PathLike | None = None) -> list[Path]:
    """Copy TF.js and its wasm backend from node_modules into vendor_dir (each file atomically)."""
    nm = check_node_modules(node_modules)
    vendor_dir = Path(vendor_dir)
    vendor_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for name, rel in VENDOR_FILES.items():
        src, dest = nm / rel, vendor_dir / name
        if not (dest.is_file() and dest.read_bytes() == src.read_bytes()):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=vendor_dir)
            os.close(fd)
            try:
                shutil.copyfile(src, tmp)
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        out.append(dest)
    return out


def install_home(model_dir: Path, name: str) -> Path | None:
    """Copy the Keras model folder into captchalens.home.models_dir()/<name> (atomically),
    so the local host serves it too. None when model_dir already is that folder."""
    from captchalens.home import models_dir

    dest = models_dir() / name
    if dest.exists() and dest.resolve() == model_dir.resolve():
        return None
    tmp = _temp_dir(dest)
    try:
        for p in sorted(model_dir.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                shutil.copy2(p, tmp / p.name)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# ---- the whole command ---------------------------------------------------------------------------

def convert(model_dir: str | os.PathLike | None = None, name: str | None = None,
            out: str | os.PathLike | None = None, quantize: str = "none", *,
            vendor: bool = True, install: bool | None = None,
            node_modules: str | os.PathLike | None = None) -> ConvertResult:
    """Convert a model folder for the extension.

    model_dir: Keras model folder (default: $CAPTCHALENS_MODEL, else the shipped default model).
    name: folder name under `out` (default: the metadata's name).
    out: the extension's models folder (default: <repo>/extension/models).
    vendor: also refresh <out>/../vendor from node_modules.
    install: also install the Keras folder into captchalens.home.models_dir()/<name>
             so the local host serves it (default: for every model but the package's own,
             "default" and "general", which the host serves from the package).
    """
    model_dir = Path(model_dir) if model_dir else paths.default_model_dir()
    meta, meta_bytes = read_model_folder(model_dir)
    default_name = meta.name
    if name is None:
        try:
            name = check_name(default_name)
        except ConvertError:
            raise ConvertError(f"{model_dir}: its metadata name {default_name!r} cannot be a folder name; "
                               f"give one with --name") from None
    check_name(name)
    if quantize not in QUANTIZE:
        raise ConvertError(f"--quantize must be one of {', '.join(QUANTIZE)}, not {quantize!r}")
    models_out = Path(out) if out else paths.extension_models()
    if vendor:
        check_node_modules(node_modules)  # fail before the slow part
    dest = models_out / name
    size = convert_to_folder(model_dir, meta, meta_bytes, dest, quantize)
    index = write_index(models_out)
    result = ConvertResult(name=name, folder=dest, index=index, quantize=quantize, bytes=size)
    if vendor:
        result.vendor = copy_vendor(models_out.parent / "vendor", node_modules)
    if install is None:  # the package's own models are served from the package
        install = name != DEFAULT_NAME and not model_dir.resolve().is_relative_to(paths.PACKAGE_MODELS)
    if install:
        result.installed = install_home(model_dir, name)
    return result
