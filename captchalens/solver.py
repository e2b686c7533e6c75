"""The Python solver: model folder in, answers out.

    solver = Solver()                       # the shipped default model
    solver.solve_files(["a.png", "b.png"])  # -> [Answer(text, confidence, path)]
    for path, answer in solver.solve_stream(many_paths):  # Answer or ImageError, as read
        ...
"""
from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .contract import ContractError, ModelMeta, load_meta
from .images import ImageError, list_images, read_rgba, to_rgba
from .paths import default_model_dir

BATCH = 256  # images per model call when solving many
# Files read (and decoded) at a time when streaming (solve_stream, `captchalens solve`):
# 10,000 captchas peaked at 0.82 GB RSS with 64, 1.03 GB with 256 (the model's activations
# for the batch), at the same speed; 1.43 GB when every image was decoded first.
STREAM_CHUNK = 64


@dataclass
class Answer:
    text: str
    confidence: float
    path: str | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["confidence"] = round(self.confidence, 6)
        return d


def network_output(meta: ModelMeta) -> tuple:
    """The network's output shape the metadata calls for (None steps: its width follows the image)."""
    steps = None if meta.width_rule is not None else meta.output_shape[0]
    return (None, steps, meta.output_shape[1])


def check_io(model, meta: ModelMeta, where) -> None:
    """The network must take and give what the metadata says (ContractError when not)."""
    width = None if meta.width_rule is not None else meta.input_width
    expect = (None, meta.input_height, width, meta.input_channels)
    if tuple(model.input_shape) != expect:
        raise ContractError(f"{where}: input {model.input_shape} does not match its metadata {expect}")
    if tuple(model.output_shape) != network_output(meta):
        raise ContractError(f"{where}: output {model.output_shape} does not match its metadata "
                            f"{meta.output_shape}" + (" (steps following the width)" if width is None else ""))


class Solver:
    """One loaded model: preprocessing, network and decoding from its metadata."""

    def __init__(self, model_dir: str | os.PathLike | None = None, fast: bool = True):
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        self.meta: ModelMeta = load_meta(self.model_dir)
        weights = self.model_dir / self.meta.files.get("keras", "model.h5")
        if not weights.is_file():
            raise ContractError(f"model folder {self.model_dir} has metadata but no weights file "
                                f"{weights.name}")
        from ._tf import tf
        from .modelfile import load_keras
        from .preprocess import Preprocessor

        self.model = load_keras(weights)  # refuses a file that would run code (modelfile.py)
        check_io(self.model, self.meta, weights)
        self.preprocessor = Preprocessor(self.meta)
        self._tf = tf
        self._runs: dict = {}
        self._run = self._run_at(100)
        self.fast = self._load_fast() if fast else None

    def _run_at(self, percent: int):
        """The graph reading a batch of one image size at `percent` of its rule width."""
        run = self._runs.get(percent)
        if run is None:
            tf, pre = self._tf, self.preprocessor._batch
            run = self._runs[percent] = tf.function(
                lambda rgba: self.model(pre(rgba, percent), training=False),
                input_signature=[tf.TensorSpec([None, None, None, 4], tf.uint8)], reduce_retracing=True)
        return run

    def _load_fast(self):
        """The TFLite file for single captchas, when the model has one (see tflite.py).
        A damaged one costs speed, not answers: say so and use TF. One that would
        run code (a custom or Flex op) makes the whole folder refused."""
        name = self.meta.files.get("tflite")
        if not name:
            return None
        from .tflite import FastRunner
        from .modelfile import UnsafeModelError

        try:
            shape = [-1 if v is None else v for v in network_output(self.meta)[1:]]  # -1: steps follow the width
            return FastRunner(self.model_dir / name, shape)
        except UnsafeModelError:
            raise
        except Exception as e:
            print(f"captchalens: note: {self.model_dir / name} is unusable ({str(e).splitlines()[0][:200]}); "
                  f"solving through TensorFlow instead, about 2 ms slower per captcha", file=sys.stderr)
            return None

    # ---- core ------------------------------------------------------------
    def probs(self, images: list[np.ndarray], percent: int = 100) -> np.ndarray:
        """RGBA uint8 images (any sizes) -> output probabilities [N, P, K], each image read at
        `percent` of its rule width (one of the rule's scales; 100: the rule's width).

        With a width rule each image has as many steps as its width gives
        (ModelMeta.steps_for); P is the most of them, and the shorter rows end in
        steps that are surely the blank (decode.padded_probs)."""
        from .decode import padded_probs

        run = self._run_at(percent)
        fast = self.fast if percent == 100 else None  # the TFLite file reads at the rule's width
        steps = [self.meta.steps_for(im.shape[1], im.shape[0], percent) for im in images]
        out = padded_probs(self.meta, len(images), max(steps, default=self.meta.output_shape[0]))
        by_size: dict[tuple, list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            by_size[im.shape].append(i)
        for idx in by_size.values():
            p = steps[idx[0]]
            out_p = out[:, :p]
            for s in range(0, len(idx), BATCH):
                part = idx[s:s + BATCH]
                if len(part) == 1 and fast is not None:
                    out_p[part] = fast.probs(images[part[0]])
                    continue
                if len(part) == 1:
                    # TF's fused conv+BN+ReLU (oneDNN) takes ~70 ms for a batch of one on
                    # some CPUs (seen on an AMD EPYC with AVX2) but ~2 ms per image for a
                    # batch of two: run a lone image as a pair. Inference is per image,
                    # so the copy does not change its answer.
                    batch = np.stack([images[part[0]]] * 2)
                    out_p[part] = run(self._tf.constant(batch)).numpy()[:1]
                    continue
                batch = np.stack([images[i] for i in part])
                out_p[part] = run(self._tf.constant(batch)).numpy()
        return out

    def answer_probs(self, images: list[np.ndarray], allowed: str | None = None) -> np.ndarray:
        """Each image's probabilities from the read that answers it: of its reads at the rule's
        scales, in their order, the one the rule's combine picks (decode.answering), reading an
        image no further once its answer is known (decode.settled), as engine.js solve() does;
        probs() itself for a reader of one scale, padded as probs() pads. What its confidence is
        calibrated on. `allowed`: the characters to read with (alphabet.read_with), the others at 0."""
        from .decode import answering, decode, padded_probs, restrict, settled

        scales, combine = self.meta.width_scales, self.meta.width_combine
        answers: list[list] = [[] for _ in images]
        reads: list[list] = [[] for _ in images]
        todo = list(range(len(images)))
        for percent in scales:
            if not todo:
                break
            r = self.probs([images[i] for i in todo], percent)
            if allowed is not None:
                r = restrict(r, self.meta, allowed)
            if len(scales) == 1:
                return r
            for i, row, answer in zip(todo, r, decode(r, self.meta)):
                answers[i].append(answer)
                reads[i].append(row)
            todo = [i for i in todo if not settled(answers[i], len(scales), combine)]
        picked = [reads[i][answering(answers[i], combine)] for i in range(len(images))]
        out = padded_probs(self.meta, len(images), max((p.shape[0] for p in picked), default=self.meta.output_shape[0]))
        for i, p in enumerate(picked):
            out[i, :p.shape[0]] = p
        return out

    def solve_pixels(self, images: list[np.ndarray], alphabet: str | None = None) -> list[Answer]:
        rgba = [to_rgba(im, f"image {i}") for i, im in enumerate(images)]
        return [Answer(t, c) for t, c in self.solve_images(rgba, alphabet)]

    def solve_images(self, images: list[np.ndarray], alphabet=None) -> list[tuple[str, float]]:
        """RGBA uint8 images -> (text, confidence) each.  `alphabet`: the characters a site's
        captchas showed (alphabet.read_with: read with their families only), one for all the
        images or a list of one each (None: the whole charset)."""
        from .alphabet import read_with
        from .decode import decode

        each = alphabet if isinstance(alphabet, list) else [alphabet] * len(images)
        if len(each) != len(images):
            raise ValueError(f"{len(images)} images but {len(each)} alphabets")
        out: list = [None] * len(images)
        for a in dict.fromkeys(each):  # each alphabet's images, read at the rule's scales
            idx = [i for i, e in enumerate(each) if e == a]
            allowed = read_with(self.meta.charset, a) if a else None
            for i, answer in zip(idx, decode(self.answer_probs([images[i] for i in idx], allowed), self.meta)):
                out[i] = answer
        return out

    def solve_stream(self, paths: Iterable, chunk: int = STREAM_CHUNK) -> Iterator[tuple[Path, Answer | ImageError]]:
        """Solve image files as they are read, in order: (path, Answer) for each
        good file, (path, ImageError) for each bad one. At most `chunk` images are
        decoded at a time, so memory does not grow with the number of files.
        `paths` may also hold (path, ImageError) items, as iter_inputs gives."""
        return solve_in_chunks(paths, self.solve_images, chunk)

    def solve_files(self, paths: list[str | os.PathLike]) -> list[Answer]:
        """Solve image files (all in memory at once: see solve_stream for many).
        If any cannot be read, raises BatchError (an ImageError) naming every
        one of them after solving the others; its `answers` hold those."""
        results = list(self.solve_stream(paths, BATCH))
        errors = [r for _, r in results if isinstance(r, ImageError)]
        if errors:
            raise BatchError(errors, [None if isinstance(r, ImageError) else r for _, r in results])
        return [r for _, r in results]


class BatchError(ImageError):
    """Some files of a batch could not be read. `errors`: an ImageError per bad
    file; `answers`: an Answer per file in order, None for the bad ones."""

    def __init__(self, errors: list[ImageError], answers: list[Answer | None]):
        self.errors, self.answers = errors, answers
        if len(errors) == 1:
            text = str(errors[0])
        else:
            text = (f"{len(errors)} of {len(answers)} images could not be read: "
                    + "; ".join(map(str, errors[:5])) + ("; ..." if len(errors) > 5 else ""))
        super().__init__(text)


def solve_in_chunks(items: Iterable, solve: Callable[[list[np.ndarray]], list[tuple[str, float]]],
                    chunk: int = STREAM_CHUNK) -> Iterator[tuple[Path, Answer | ImageError]]:
    """Read and solve files `chunk` at a time with `solve` (images -> (text,
    confidence) each), yielding (path, Answer | ImageError) in input order.
    Items are paths or (path, ImageError | None) pairs."""
    part: list[tuple[Path, ImageError | None]] = []
    for item in items:
        part.append(item if isinstance(item, tuple) else (Path(item), None))
        if len(part) >= chunk:
            yield from _solve_part(part, solve)
            part = []
    if part:
        yield from _solve_part(part, solve)


def _solve_part(part, solve):
    read: list[tuple[Path, np.ndarray | ImageError]] = []
    for path, error in part:
        if error is None:
            try:
                read.append((path, read_rgba(path)))
            except ImageError as e:
                read.append((path, e))
        else:
            read.append((path, error))
    good = [im for _, im in read if not isinstance(im, ImageError)]
    answers = iter(solve(good) if good else [])
    for path, im in read:
        if isinstance(im, ImageError):
            yield path, im
        else:
            text, conf = next(answers)
            yield path, Answer(text, conf, str(path))


def iter_inputs(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[Path, ImageError | None]]:
    """Files stay; folders become the image entries in them (sorted by name).
    (path, None) for each, or (path, ImageError) for a missing path or an
    empty folder, so a caller can name it and go on."""
    for p in map(Path, paths):
        if p.is_dir():
            try:
                found = list_images(p)
            except OSError as e:
                yield p, ImageError(f"{p}: cannot list the folder ({e.strerror})")
                continue
            if not found:
                yield p, ImageError(f"{p}: folder holds no images (.png, .jpg, .gif, .bmp, .webp)")
            for f in found:
                yield f, None
        elif p.exists():
            yield p, None  # read_rgba names what is not a regular image file
        else:
            yield p, ImageError(f"{p}: no such file or folder")


def expand_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """Files stay; folders become their image entries (sorted). Raises the
    ImageError of the first missing path or empty folder."""
    out: list[Path] = []
    for p, error in iter_inputs(paths):
        if error is not None:
            raise error
        out.append(p)
    return out


_SOLVERS: dict[str, Solver] = {}


def get_solver(model_dir: str | os.PathLike | None = None) -> Solver:
    """A cached Solver per model folder (loading costs ~1 s)."""
    key = str(Path(model_dir).resolve() if model_dir else default_model_dir().resolve())
    if key not in _SOLVERS:
        _SOLVERS[key] = Solver(key)
    return _SOLVERS[key]
