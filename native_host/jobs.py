"""Training a site's model from the host: one job at a time, in processes of its own.

    jobs = Jobs(on_installed=registry.reload)
    jobs.sites()          jobs.start(site)          jobs.status(job_id or "latest")
    jobs.cancel(job_id)   jobs.model_files(name, file=None, offset=0, length=None)

A job trains on <home>/samples/<site>/ and works in <home>/jobs/<id>/: log.txt (everything
the trainer and the converter printed), progress.jsonl (the trainer's JSON lines, see
training/retrain.py PROGRESS_ENV) and job.json (its state, at the start and at the end). Its steps:

  1. training: `python -m captchalens.cli train --data samples/<site> --out jobs/<id>/model`
     (--base models/<model> when the site has a model already: a retrain goes on from it),
     plus $CAPTCHALENS_TRAIN_ARGS (a shorter schedule for tests; never from a request).
     A site's first model that reads its held-back corrections no better than the general
     reader it started from (metrics.beats_base false) ends the job here, done with
     result.kept: the site stays read without a model of its own, and nothing is installed.
  2. converting: jobs.main(['convert', ...]) in a child process writes the TF.js files
     into jobs/<id>/tfjs/<model>/ and checks them: the extension's engine (Node) must give the
     host's probabilities on the site's own samples;
  3. installing, in the host, only after both succeeded: the TF.js folder is renamed to
     <home>/tfjs/<model>/ and the Keras folder copied to <home>/models/<model>/ (each
     atomically), where the registry serves it and model_files hands it to the extension.

Both child processes run at a lower CPU priority (os.nice, NICE), waited for on a thread of
their own, so solves are never blocked; on Linux they get SIGTERM if the host exits (the
browser closed it), and a job found unfinished in job.json later says so. Cancelling
terminates the child; nothing of a job that did not finish is installed.
"""
from __future__ import annotations

import ast
import base64
import importlib.util
import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from captchalens.contract import META_FILE
from captchalens.files import replace_dir, write_atomic
from captchalens.home import home, models_dir, safe_name
from captchalens.images import IMAGE_SUFFIXES

from .samples import UNSORTED, SampleError, site_folder_name

log = logging.getLogger("captchalens.host")

TRAIN_ARGS_ENV = "CAPTCHALENS_TRAIN_ARGS"  # extra `captchalens train` flags for every job (tests)
NICE = 10  # added to the children's CPU niceness: training yields to solves
ACTIVE = ("reading", "training", "converting", "installing")  # phases of a job that runs
CONVERT_GUESS_S = 30.0  # seconds converting, checking and installing take (28 s measured on 2 busy cores)
STOP_GRACE_S = 10.0  # seconds a cancelled child gets to exit on SIGTERM before SIGKILL
PARITY_TOL = 1e-3  # largest difference allowed between the TF.js and the host's probabilities
PARITY_IMAGES = 16  # samples the converted model is checked on
CHUNK = 512 * 1024  # bytes of a model file per model_files answer (base64 keeps it under 1 MB)
# The converting child (its module is imported by the package, so not run with -m)
CONVERT_CHILD = "import sys; from captchalens.native_host.jobs import main; sys.exit(main(sys.argv[1:]))"
RESERVED = ("default", "general", "auto")  # the shipped readers' names: never a site model's


class JobError(Exception):
    """A job operation that cannot be done; the message says why, status is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


_MIN_IMAGES: list[int] = []
_MIN_IMAGES_LOCK = threading.Lock()


def min_images() -> int:
    """retrain.MIN_IMAGES, read from its source: importing the trainer would load TensorFlow.
    Parsed once, under a lock: CPython 3.11's ast.parse on two request threads at once fails
    ("SystemError: AST constructor recursion depth mismatch"; two options pages asked for `sites`)."""
    with _MIN_IMAGES_LOCK:
        if not _MIN_IMAGES:
            source = Path(importlib.util.find_spec("captchalens.training.retrain").origin).read_text()
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "MIN_IMAGES":
                    _MIN_IMAGES.append(int(ast.literal_eval(node.value)))
                    break
            else:
                raise RuntimeError("training/retrain.py has no MIN_IMAGES")
        return _MIN_IMAGES[0]


def model_name(folder: str) -> str:
    """The model name of a samples folder: the folder's own name when it can be one, else a
    cleaned name plus a short hash ('example.com+8443' -> 'example.com-8443-1a2b3c')."""
    try:
        if safe_name(folder) == folder and folder not in RESERVED:
            return folder
    except ValueError:
        pass
    import hashlib

    clean = "".join(c if c.isalnum() or c in "._-" else "-" for c in folder.lower()).strip("-._")
    return f"{clean[:56] or 'site'}-{hashlib.sha1(folder.encode()).hexdigest()[:6]}"


def count_samples(folder: Path) -> int:
    try:
        return sum(1 for e in os.scandir(folder) if not e.name.startswith(".")
                   and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file(follow_symlinks=False))
    except OSError:
        return 0


def _last_error(log_file: Path) -> str:
    """The line of a child's log that says why it failed."""
    try:
        lines = [ln.strip() for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    said = [i for i, ln in enumerate(lines) if ln.startswith("captchalens: error: ")]
    if not said:
        return lines[-1][:300] if lines else "it printed nothing"
    why = " ".join(lines[said[-1]:said[-1] + 3])  # the message and the lines it goes on with
    return why.split("error: ", 1)[1][:600]


@dataclass
class Job:
    id: str
    site: str  # the samples folder's name
    model: str
    samples: int
    dir: Path
    base: str | None = None
    phase: str = "reading"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    result: dict | None = None
    converting_since: float | None = None
    proc: subprocess.Popen | None = None
    cancelling: bool = False

    def progress(self) -> list[dict]:
        try:
            text = (self.dir / "progress.jsonl").read_text(encoding="utf-8")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line being written
        return out

    def save(self) -> None:
        write_atomic(self.dir / "job.json", json.dumps(self.describe(), indent=1))

    def describe(self) -> dict:
        """What the options page shows: phase, epoch / epochs, validation accuracy, time."""
        lines = [p for p in self.progress() if p.get("phase") == "training"]
        last = lines[-1] if lines else {}
        epoch, epochs = last.get("epoch", 0), last.get("epochs")
        accs = [p["val_acc"] for p in lines if p.get("val_acc") is not None]
        now = self.finished or time.time()
        phase = "training" if self.phase == "reading" and lines else self.phase
        left = None
        if phase == "training" and epochs and epoch:
            per_epoch = (last["t"] - lines[0]["t"]) / epoch
            left = per_epoch * (epochs - epoch) + CONVERT_GUESS_S
        elif self.phase in ("converting", "installing") and self.converting_since:
            left = max(1.0, CONVERT_GUESS_S - (now - self.converting_since))
        out = {"id": self.id, "site": self.site, "model": self.model, "samples": self.samples,
               "base": self.base, "phase": phase, "epoch": epoch, "epochs": epochs,
               "val_acc": accs[-1] if accs else None, "best_val_acc": max(accs) if accs else None,
               "elapsed_s": round(now - self.started, 1),
               "left_s": None if left is None else round(left, 1),
               "log": str(self.dir / "log.txt")}
        if self.error:
            out["error"] = self.error
        if self.result:
            out["result"] = self.result
        return out


class Jobs:
    """The host's train jobs: at most one runs; finished ones are read back from job.json."""

    def __init__(self, on_installed=None, root_home: Path | None = None):
        self.home = Path(root_home) if root_home else None
        self.on_installed = on_installed or (lambda: None)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._latest: str | None = None

    # ---- where things are ----
    def _home(self) -> Path:
        return self.home or home()

    @property
    def tfjs_root(self) -> Path:
        return self._home() / "tfjs"

    def _folder(self, site) -> str:
        """The samples folder of a site (its host name, or the folder's own name)."""
        if not isinstance(site, str) or not site.strip():
            raise JobError(400, "'site' is missing: name the site to train for (its host name, as "
                                "in the Sites list)")
        root = self._home() / "samples"
        if not any(c in site for c in "/\\") and not site.startswith(".") and (root / site).is_dir():
            folder = site  # a folder name from the Sites list, e.g. example.com+8443
        else:
            try:
                folder = site_folder_name(site)
            except SampleError as e:
                raise JobError(400, str(e)) from None
        if folder == UNSORTED:
            raise JobError(400, f"samples sent without a site (in {root / UNSORTED}) are not a site's: "
                                f"train on them with `captchalens train --data {root / UNSORTED}`")
        if (root / folder).is_symlink():
            raise JobError(409, f"{root / folder} is a symbolic link: the host never follows links "
                                f"inside its home folder")
        if not (root / folder).is_dir():
            known = [s["site"] for s in self.sites()["sites"]]
            raise JobError(404, f"no samples for site {site!r} (no folder {root / folder}); sites with "
                                f"samples: {', '.join(known) or 'none yet'}")
        return folder

    # ---- operations ----
    def sites(self) -> dict:
        root, need = self._home() / "samples", min_images()
        out = []
        for entry in sorted(os.scandir(root), key=lambda e: e.name) if root.is_dir() else []:
            if entry.name.startswith(".") or entry.name == UNSORTED or not entry.is_dir(follow_symlinks=False):
                continue
            name = model_name(entry.name)
            out.append({"site": entry.name, "samples": count_samples(Path(entry.path)), "model": name,
                        "has_model": (models_dir() / name / META_FILE).is_file()})
        return {"sites": out, "unsorted": count_samples(root / UNSORTED), "min_samples": need}

    def start(self, site) -> dict:
        folder = self._folder(site)
        samples = self._home() / "samples" / folder
        n, need = count_samples(samples), min_images()
        if n < need:
            raise JobError(400, f"site {folder!r} has {n} sample(s); training needs at least {need} "
                                f"(a few hundred train a better model): correct more of its captchas first")
        with self._lock:
            running = self.running()
            if running:
                raise JobError(409, f"a train job is already running: {running.id} for {running.site!r} "
                                    f"({running.phase}); wait for it or cancel it first")
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            job_id = f"{stamp}-{secrets.token_hex(3)}"
            name = model_name(folder)
            prev = models_dir() / name
            job = Job(job_id, folder, name, n, self._home() / "jobs" / job_id,
                      base=str(prev) if (prev / META_FILE).is_file() else None)
            job.dir.mkdir(parents=True, mode=0o700)
            job.save()
            self._jobs[job_id], self._latest = job, job_id
        threading.Thread(target=self._run, args=(job,), name=f"captchalens-job-{job_id}", daemon=True).start()
        return job.describe()

    def running(self) -> Job | None:
        return next((j for j in self._jobs.values() if j.phase in ACTIVE), None)

    def _job(self, job_id) -> Job:
        if job_id in (None, "", "latest"):
            job_id = self._latest or self._latest_on_disk()
            if job_id is None:
                raise JobError(404, "no train job has run yet")
        if not isinstance(job_id, str):
            raise JobError(400, "'id' must be a string: a job's id, or 'latest'")
        job = self._jobs.get(job_id) or self._from_disk(job_id)
        if job is None:
            raise JobError(404, f"no train job {job_id!r}")
        return job

    def status(self, job_id=None) -> dict:
        return self._job(job_id).describe()

    def cancel(self, job_id) -> dict:
        job = self._job(job_id)
        with self._lock:
            if job.phase not in ACTIVE:
                raise JobError(409, f"train job {job.id} is not running: it is {job.phase}")
            if job.phase == "installing":
                raise JobError(409, f"train job {job.id} is installing its model: too late to cancel")
            job.cancelling = True
            proc = job.proc
        if proc is not None:
            _stop(proc)
        return job.describe()

    def model_files(self, name, file=None, offset=0, length=None) -> dict:
        """A site model's TF.js files: the list, or one file's bytes from offset (base64)."""
        if not isinstance(name, str):
            raise JobError(400, "'name' must be a model's name")
        folder = self.tfjs_root / name
        try:
            ok = safe_name(name) == name and (folder / "model.json").is_file()
        except ValueError:
            ok = False
        if not ok:
            raise JobError(404, f"no trained site model {name!r} with TF.js files (models trained in "
                                f"the host are in {self.tfjs_root})")
        files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if file is None:
            return {"name": name, "files": [{"file": f, "bytes": (folder / f).stat().st_size} for f in files],
                    "chunk": CHUNK}
        if file not in files:
            raise JobError(404, f"model {name!r} has no file {file!r}; its files: {', '.join(files)}")
        if not isinstance(offset, int) or offset < 0 or (length is not None and (not isinstance(length, int)
                                                                                 or length < 1)):
            raise JobError(400, "'offset' must be a whole number >= 0 and 'length' one >= 1")
        length = min(CHUNK, length or CHUNK)
        with open(folder / file, "rb") as f:
            total = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(length)
        return {"name": name, "file": file, "offset": offset, "length": len(data), "total": total,
                "data": base64.b64encode(data).decode("ascii")}

    # ---- running one ----
    def _child(self, job: Job, argv: list[str]) -> int:
        env = dict(os.environ, CAPTCHALENS_PROGRESS=str(job.dir / "progress.jsonl"), TF_CPP_MIN_LOG_LEVEL="3",
                   CAPTCHALENS_HOME=str(self._home()))
        with open(job.dir / "log.txt", "ab") as out:
            out.write(f"$ {shlex.join(argv)}\n".encode())
            out.flush()
            with self._lock:
                if job.cancelling:
                    return -15
                job.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, cwd=job.dir, start_new_session=True,
                                            preexec_fn=_in_child)
            code = job.proc.wait()
            job.proc = None
            return code

    def _run(self, job: Job) -> None:
        model, tfjs = job.dir / "model", job.dir / "tfjs"
        samples = self._home() / "samples" / job.site
        try:
            train = [sys.executable, "-m", "captchalens.cli", "train", "--data", str(samples), "--out", str(model),
                     "--name", job.model, *(["--base", job.base] if job.base else []),
                     *shlex.split(os.environ.get(TRAIN_ARGS_ENV, ""))]
            if self._child(job, train) != 0:
                raise JobError(500, f"training failed: {_last_error(job.dir / 'log.txt')}")
            meta = json.loads((model / META_FILE).read_text())
            if job.base is None and (meta.get("metrics") or {}).get("beats_base") is False:
                # The site's first model reads its held-back corrections no better than the general
                # reader it started from (training/retrain.py beats_base): the site keeps being read
                # without a model of its own, and nothing is installed.
                job.result = {"model": job.model, "metrics": meta["metrics"], "kept": True,
                              "init": (meta.get("trained_on") or {}).get("init"), "files": []}
                job.phase = "done"
                return
            job.phase, job.converting_since = "converting", time.time()
            if self._child(job, [sys.executable, "-c", CONVERT_CHILD, "convert", str(model), job.model,
                                 str(tfjs), str(samples)]) != 0:
                raise JobError(500, f"the trained model failed the converter's checks, so it was not "
                                    f"installed: {_last_error(job.dir / 'log.txt')}")
            with self._lock:
                if job.cancelling:
                    raise JobError(499, "cancelled")
                job.phase = "installing"
            from captchalens.converter.core import install_home

            replace_dir(tfjs / job.model, self.tfjs_root / job.model)
            install_home(model, job.model)
            job.result = {"model": job.model, "metrics": meta.get("metrics"),
                          "init": (meta.get("trained_on") or {}).get("init"),
                          "files": self.model_files(job.model)["files"]}
            self.on_installed()  # the host serves it before the job says done
            job.phase = "done"
        except Exception as e:  # noqa: BLE001 - every end of a job is reported in its state
            if job.cancelling:
                job.phase = "cancelled"
            else:
                job.phase = "failed"
                job.error = e.message if isinstance(e, JobError) else f"{type(e).__name__}: {e}"
                log.warning("train job %s failed: %s", job.id, job.error)
        finally:
            job.finished = time.time()
            shutil.rmtree(model, ignore_errors=True)  # installed (copied) by now, or not to be
            shutil.rmtree(tfjs, ignore_errors=True)
            job.save()

    # ---- jobs of earlier host runs ----
    def _latest_on_disk(self) -> str | None:
        root = self._home() / "jobs"
        done = sorted(p.name for p in root.iterdir() if (p / "job.json").is_file()) if root.is_dir() else []
        return done[-1] if done else None

    def _from_disk(self, job_id: str) -> Job | None:
        try:
            if safe_name(job_id) != job_id:
                return None
            data = json.loads((self._home() / "jobs" / job_id / "job.json").read_text())
        except (ValueError, OSError):
            return None
        job = Job(data["id"], data["site"], data["model"], data["samples"], self._home() / "jobs" / job_id,
                  base=data.get("base"), phase=data["phase"], error=data.get("error"), result=data.get("result"))
        job.started = job.finished = time.time() - data.get("elapsed_s", 0)
        if job.phase in ACTIVE:  # its host stopped (the browser closed it) before the job ended
            job.phase, job.error = "failed", "the host stopped while this job ran; start it again"
        return job


def _parent_death_signal():
    """Linux's prctl(PR_SET_PDEATHSIG), looked up before any fork; None elsewhere."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    except (OSError, AttributeError):
        return None


_PRCTL = _parent_death_signal()
PR_SET_PDEATHSIG = 1  # prctl option: the signal a child gets when the thread that started it ends


def _in_child() -> None:
    """Between fork and exec: a lower CPU priority, and (Linux) SIGTERM when the host goes away,
    so a job never trains on with nobody left to install it."""
    os.nice(NICE)
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, 15)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's process group; SIGKILL if it is still there after STOP_GRACE_S."""
    import signal

    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ---- the converting child: CONVERT_CHILD convert MODEL NAME OUT SAMPLES ----
def convert_checked(model_dir: Path, name: str, out: Path, samples: Path) -> Path:
    """Convert for the extension into out/<name>/ and check the TF.js engine's probabilities
    against the host's solver on up to PARITY_IMAGES of the site's samples."""
    import numpy as np

    from captchalens.converter.core import ConvertError, convert
    from captchalens.images import read_rgba
    from captchalens.solver import Solver
    from captchalens.converter.node_engine import probs_tfjs

    result = convert(model_dir, name, out, vendor=False, install=False)
    paths = sorted(p for p in samples.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:PARITY_IMAGES]
    images = [read_rgba(p) for p in paths]
    host = Solver(model_dir).probs(images)
    answers, js, _ = probs_tfjs(images, result.folder)
    diff = float(np.max(np.abs(host - js))) if len(images) else 0.0
    if diff > PARITY_TOL:
        raise ConvertError(f"the converted model's probabilities differ from the host's by up to {diff:.2g} "
                           f"(more than {PARITY_TOL:g}) on {len(images)} of the site's captchas")
    print(f"converted {name!r} -> {result.folder}; TF.js matches the host within {diff:.1e} "
          f"on {len(images)} captchas", flush=True)
    return result.folder


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 5 or argv[0] != "convert":
        print("usage: convert MODEL_DIR NAME OUT_DIR SAMPLES_DIR", file=sys.stderr)
        return 2
    from captchalens.converter.core import ConvertError

    try:
        convert_checked(Path(argv[1]), argv[2], Path(argv[3]), Path(argv[4]))
    except ConvertError as e:
        print(f"captchalens: error: {e}", flush=True)
        return 1
    return 0


