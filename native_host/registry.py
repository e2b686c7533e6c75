"""The models the host serves, kept loaded, and picked up again when their folders change.

Sources, in order: the fixed folders (``--model DIR``..., else the shipped
default) and every model folder in ``captchalens.home.models_dir()``.  Each
working folder gets one Solver behind one runner; a broken folder is kept as
an error entry (shown by GET /models) and never stops the others.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captchalens.alphabet import covers
from captchalens.auto import AUTO_NAME, RULE_FILE, load_rule
from captchalens.contract import KERAS_FILE, META_FILE, ContractError, ModelMeta, load_meta
from captchalens.home import models_dir, safe_name

log = logging.getLogger("captchalens.host")

MAX_BATCH = 32  # images per model call when requests queue up
IDLE_EXIT = 30.0  # a batching thread with nothing to do for this long ends (restarted on demand)


# ---- runners: one model, many request threads --------------------------------
class LockedRunner:
    """One model call at a time, one image per call."""

    def __init__(self, solver):
        self.solver = solver
        self._lock = threading.Lock()

    def solve(self, rgba: np.ndarray, alphabet: str | None = None) -> tuple[str, float]:
        with self._lock:
            return self.solver.solve_images([rgba], alphabet)[0]


class _Job:
    __slots__ = ("rgba", "alphabet", "done", "answer", "error")

    def __init__(self, rgba, alphabet=None):
        self.rgba, self.alphabet, self.done, self.answer, self.error = rgba, alphabet, threading.Event(), None, None


class BatchRunner:
    """Micro-batching: requests that arrive while the model is busy share its next call.

    No waiting to fill a batch: a lone request runs at once, and a crowd is
    served in calls of up to MAX_BATCH images.
    """

    def __init__(self, solver, max_batch: int = MAX_BATCH):
        self.solver = solver
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def solve(self, rgba: np.ndarray, alphabet: str | None = None, timeout: float = 60.0) -> tuple[str, float]:
        job = _Job(rgba, alphabet)
        with self._lock:
            self._queue.put(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="captchalens-batch", daemon=True)
                self._thread.start()
        if not job.done.wait(timeout):
            raise TimeoutError("the model did not answer in time")
        if job.error is not None:
            raise job.error
        return job.answer

    def _loop(self) -> None:
        while True:
            try:
                jobs = [self._queue.get(timeout=IDLE_EXIT)]
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                answers = self.solver.solve_images([j.rgba for j in jobs], [j.alphabet for j in jobs])
                for j, a in zip(jobs, answers):
                    j.answer = a
            except Exception as e:  # noqa: BLE001 - handed to each waiting request
                for j in jobs:
                    j.error = e
            for j in jobs:
                j.done.set()


class AutoRunner:
    """The "auto" reader (captchalens/auto.py): the first model's answer when it is sure
    enough, else the other model's. Each call goes through that model's own runner; a site's
    alphabet goes to both, and skips the first when it cannot read it (AutoSolver's rule)."""

    def __init__(self, rule, first: "Entry", then: "Entry"):
        self.rule, self.first, self.then = rule, first, then

    def solve(self, rgba: np.ndarray, alphabet: str | None = None) -> tuple[str, float]:
        if alphabet and not covers(self.first.meta.charset, alphabet):
            return self.then.runner.solve(rgba, alphabet)
        text, confidence = self.first.runner.solve(rgba, alphabet)
        if self.rule.first_stands(confidence):
            return text, confidence
        return self.then.runner.solve(rgba, alphabet)


# ---- the registry ------------------------------------------------------------
@dataclass
class Entry:
    name: str
    folder: Path
    source: str  # "cli", "package" or "home"
    stamp: tuple = ()
    meta: ModelMeta | None = None
    runner: LockedRunner | BatchRunner | AutoRunner | None = None
    error: str | None = None
    auto: dict | None = None  # the "auto" reader's rule (its meta is the fallback model's)

    def describe(self) -> dict:
        if self.error:
            return {"name": self.name, "source": self.source, "error": self.error}
        d = self.meta.to_json()
        d.update(name=self.name, source=self.source)
        if self.auto:
            d["auto"] = self.auto
        return d


def _stamp(folder: Path) -> tuple:
    """Cheap change detector: mtimes and sizes of the folder and its two files."""
    out = []
    for p in (folder, folder / META_FILE, folder / KERAS_FILE):
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


@dataclass
class Registry:
    fixed: list[Path]  # --model folders, or the shipped default
    fixed_source: str = "cli"
    batching: bool = True  # micro-batch concurrent requests (False: one model call per request)
    check_interval: float = 1.0  # seconds between two looks at the folders
    rule_file: Path = RULE_FILE  # the "auto" reader's rule (captchalens/auto.py)
    entries: dict[str, Entry] = field(default_factory=dict)
    default: str | None = None
    _last_check: float = 0.0
    _home_stamp: tuple = ()
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- scanning ----
    def _candidates(self) -> list[tuple[Path, str, str | None]]:
        out = [(Path(f), self.fixed_source, None) for f in self.fixed]
        home = models_dir()
        if home.is_dir():
            for p in sorted(home.iterdir()):
                if p.name.startswith(".") or not p.is_dir():
                    continue  # half-installed (".tmp-...") folders and stray files
                out.append((p, "home", p.name))
        return out

    def _folder_stamps(self) -> tuple:
        home = models_dir()
        try:
            top = home.stat().st_mtime_ns
        except OSError:
            top = None
        return (top, tuple((str(f), _stamp(f)) for f, _, _ in self._candidates()))

    def reload(self) -> "Registry":
        """Rescan every folder; load what is new or changed, keep what is not."""
        with self._reload_lock:
            self._reload()
        return self

    def _reload(self) -> None:
        old = {str(e.folder): e for e in self.entries.values()}
        entries: dict[str, Entry] = {}
        for folder, source, name in self._candidates():
            stamp = _stamp(folder)
            prev = old.get(str(folder))
            if prev is not None and prev.stamp == stamp and prev.source == source:
                entry = prev
            else:
                entry = self._load(folder, source, name, stamp)
            if entry.name in entries:
                other = entries[entry.name]
                entry = Entry(f"{entry.name}@{folder}", folder, source, stamp,
                              error=f"{folder}: the name {entry.name!r} is already used by {other.folder}")
            entries[entry.name] = entry
        auto = self._auto(entries)
        if auto is not None:
            entries[AUTO_NAME] = auto
        working = [e.name for e in entries.values() if e.runner]
        self.entries = entries  # one assignment: requests see the old or the new set, never half
        self.default = AUTO_NAME if auto is not None else (working[0] if working else None)
        self._home_stamp = self._folder_stamps()
        self._last_check = time.monotonic()

    def _auto(self, entries: dict[str, Entry]) -> Entry | None:
        """The "auto" reader over the shipped models, when both of its models loaded (never for
        --model folders: those are what the user asked for)."""
        if self.fixed_source != "package":
            return None
        try:
            rule = load_rule(self.rule_file)
        except ContractError as e:
            log.warning("no auto reader: %s", e)
            return None
        if rule is None:
            return None
        if AUTO_NAME in entries:
            log.warning("no auto reader: a model folder is named %r", AUTO_NAME)
            return None
        first, then = entries.get(rule.first), entries.get(rule.then)
        if not (first and then and first.runner and then.runner and first.source == then.source == "package"):
            return None
        return Entry(AUTO_NAME, self.rule_file, "package", meta=then.meta, runner=AutoRunner(rule, first, then),
                     auto=rule.to_json())

    def _load(self, folder: Path, source: str, name: str | None, stamp: tuple) -> Entry:
        from captchalens.solver import Solver

        label = name or folder.name
        try:
            if name is not None:
                safe_name(name, "model folder name")
            meta = load_meta(folder)
            label = name or meta.name
            solver = Solver(folder)
            solver.probs([np.zeros((solver.meta.input_height, solver.meta.input_width, 4), np.uint8)])
        except (ContractError, ValueError, OSError) as e:
            log.warning("model %s not loaded: %s", folder, e)
            return Entry(label, folder, source, stamp, error=str(e))
        except Exception as e:  # noqa: BLE001 - a damaged folder must never take the host down
            log.exception("model %s not loaded", folder)
            return Entry(label, folder, source, stamp, error=f"{folder}: {type(e).__name__}: {e}")
        # bench/results/host.md: under 32 clients micro-batching served 1.5-2x more than one call
        # per request on an AMD EPYC (a lone image's TFLite call waits for the GIL behind busy
        # request threads); on a Xeon it served 12% less. Batching by default risks less.
        runner = BatchRunner(solver) if self.batching else LockedRunner(solver)
        log.info("model %s loaded from %s", label, folder)
        return Entry(label, folder, source, stamp, meta=solver.meta, runner=runner)

    def maybe_reload(self) -> bool:
        """At most once per check_interval: reload if any model folder changed. True if reloaded."""
        now = time.monotonic()
        if now - self._last_check < self.check_interval:
            return False
        if not self._reload_lock.acquire(blocking=False):
            return False  # another request is reloading; use the current set meanwhile
        try:
            self._last_check = now
            if self._folder_stamps() == self._home_stamp:
                return False
            self._reload()
            return True
        finally:
            self._reload_lock.release()

    # ---- lookups ----
    def names(self) -> list[str]:
        return [e.name for e in self.entries.values() if e.runner]

    def describe(self) -> dict:
        entries = list(self.entries.values())
        return {"default": self.default,
                "models": [e.describe() for e in entries if not e.error],
                "errors": [e.describe() for e in entries if e.error]}


def fixed_folders(model_dirs: list[str | os.PathLike] | None) -> tuple[list[Path], str]:
    """The --model folders, or the shipped models (the default, and the general reader when the
    package holds it and $CAPTCHALENS_MODEL does not name another default)."""
    if model_dirs:
        return [Path(m).expanduser().resolve() for m in model_dirs], "cli"
    from captchalens.paths import DEFAULT_MODEL, GENERAL_MODEL, default_model_dir

    folders = [default_model_dir()]
    if folders[0] == DEFAULT_MODEL and (GENERAL_MODEL / META_FILE).is_file():
        folders.append(GENERAL_MODEL)
    return folders, "package"
