"""Training on several machines (or several GPUs) with TensorFlow's own strategies.

    # on each machine, its own TF_CONFIG (the same cluster, its own task index):
    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
                "task": {"type": "worker", "index": 0}}' \\
        captchalens train --cluster --out runs/big --work-dir /shared/big.work

The recipe is train.py's, run under `tf.distribute.MultiWorkerMirroredStrategy`
(`--strategy mirrored`: `MirroredStrategy`, several GPUs of one machine):

- data is split, not copied: worker k of N generates only its contiguous range
  of image indices of the same seed, so the union of the shards is the
  single-machine set whatever N; a labelled folder is split by file.  The
  validation set is the same on every worker and measured on each (the same
  weights give the same figures, so every worker stops at the same epoch);
- --batch-size is per replica: the global batch is batch x replicas, and the
  peak learning rate scales with it (LR_RULE, written into the metadata);
- checkpoints (Keras BackupAndRestore) go to the work folder, which must be
  shared by every machine; only the chief writes the model folder;
- a worker that cannot reach the others stops after --peer-timeout seconds
  naming the addresses it tried; one whose peer died starts itself again
  (REJOIN_LIMIT times) and resumes from the shared checkpoint.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captchalens.errors import UserError

PEER_TIMEOUT = 60.0  # seconds a worker waits for the whole cluster before it gives up
REJOIN_LIMIT = 3  # times a worker whose peer died starts itself again to rejoin the run
REJOIN_ENV = "CAPTCHALENS_REJOINS"  # how many times this worker has started itself again
EXIT_PEER_LOST = 75  # exit status (EX_TEMPFAIL) of a worker that lost a peer and gave up rejoining
JOBS = ("chief", "worker")  # the TF_CONFIG jobs MultiWorkerMirroredStrategy runs
LR_RULE = ("linear scaling: global batch = batch_size x replicas, peak lr = lr x replicas, reached "
           "after the recipe's warm-up from 0 (generated: min(steps per epoch, 500) steps; a folder: "
           "min(a tenth of the run, 2 epochs)), then cosine decay to 0")


class ClusterError(UserError):
    """A cluster that cannot run (bad TF_CONFIG, unknown strategy); the message says what to fix."""


@dataclass
class Dist:
    """The strategy and this process's place in the cluster."""

    strategy: object
    kind: str  # "multi_worker" | "mirrored"
    num_workers: int
    task_index: int  # chief first, then the workers
    is_chief: bool
    replicas: int  # in sync, over all workers
    addresses: tuple[str, ...] = ()


# ---- which strategy, from the flags and the environment ----------------------

def wanted(cluster: bool, strategy: str | None, environ=os.environ) -> str | None:
    """'multi_worker' (--cluster, --strategy multi-worker or TF_CONFIG set), 'mirrored', or None."""
    if strategy == "mirrored":
        if cluster:
            raise ClusterError("--strategy mirrored is one machine; --cluster is several: give one")
        return "mirrored"
    if cluster or strategy == "multi-worker" or environ.get("TF_CONFIG"):
        return "multi_worker"
    if strategy not in (None, "none"):
        raise ClusterError(f"--strategy {strategy}: expected mirrored or multi-worker")
    return None


def read_tf_config(environ=os.environ) -> tuple[list[str], int, bool]:
    """TF_CONFIG -> (addresses, chief first; this task's index in them; is chief), checked."""
    raw = environ.get("TF_CONFIG")
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
               '"task": {"type": "worker", "index": 0}}\' (README: Training on several machines)')
    if not raw:
        raise ClusterError(f"--cluster needs TF_CONFIG in the environment, {example}")
    try:
        conf = json.loads(raw)
        cluster, task = conf["cluster"], conf["task"]
        ttype, tindex = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ClusterError(f"TF_CONFIG is not valid ({type(e).__name__}: {e}); {example}") from None
    other = sorted(set(cluster) - set(JOBS))
    if other or ttype not in JOBS:
        raise ClusterError(f"TF_CONFIG: MultiWorkerMirroredStrategy runs only 'chief' and 'worker' "
                           f"tasks (found {', '.join(other or [ttype])})")
    jobs = {j: list(cluster.get(j, [])) for j in JOBS}
    if not 0 <= tindex < len(jobs[ttype]):
        raise ClusterError(f"TF_CONFIG: task {ttype} {tindex} is not in the cluster "
                           f"({len(jobs[ttype])} {ttype} address(es))")
    for a in jobs["chief"] + jobs["worker"]:
        if not isinstance(a, str) or ":" not in a or not a.rsplit(":", 1)[1].isdigit():
            raise ClusterError(f"TF_CONFIG: {a!r} is not HOST:PORT")
    addresses = jobs["chief"] + jobs["worker"]
    index = tindex if ttype == "chief" else len(jobs["chief"]) + tindex
    return addresses, index, index == 0


# ---- connecting, in bounded time ------------------------------------------------

def _reachable(address: str, timeout: float = 2.0) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def unreachable_message(addresses, index: int, timeout: float) -> str:
    """What a worker says when the cluster did not assemble in time."""
    peers = [a for i, a in enumerate(addresses) if i != index]
    silent = [a for a in peers if not _reachable(a)]
    what = (f"nothing answers at {', '.join(silent)}" if silent else
            f"{', '.join(peers)} answer(s) but did not join this cluster")
    return (f"captchalens: error: worker {index} ({addresses[index]}) could not reach the other "
            f"workers within {timeout:g} s: {what}. Check: TF_CONFIG on every machine lists the same "
            f"cluster in the same order and its own task index; each worker has been started (the same "
            f"command on every machine); the firewall lets TCP through to those ports (try "
            f"`nc -vz HOST PORT`). Wait longer with --peer-timeout.")


# The watchdog: a small process that waits for its stdin to close (this worker joined, or
# died) and, if `timeout` passes first, says which peers are silent and ends the worker.
_WATCHDOG = """
import json, os, select, signal, sys
from captchalens.training.distribute import unreachable_message
pid, timeout, addresses, index = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
if not select.select([sys.stdin], [], [], timeout)[0]:
    sys.stderr.write(unreachable_message(addresses, index, timeout) + "\\n")
    sys.stderr.flush()
    os.kill(pid, signal.SIGKILL)  # SIGTERM is caught, and waited on, by the runtime
"""


def _connect(make, addresses, index: int, timeout: float):
    """make() (which returns once every worker has joined) within `timeout` seconds,
    else a message naming the silent addresses and the worker ended (SIGKILL): the
    wait is inside TensorFlow's C++, which holds the interpreter, so no thread of this
    process could interrupt it; a watchdog process does."""
    import subprocess

    dog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout),
                            json.dumps(list(addresses)), str(index)], stdin=subprocess.PIPE)
    try:
        return make()
    finally:
        dog.stdin.close()  # joined (or failed): the watchdog leaves
        dog.wait()


_DIST: list = []  # a process has one strategy (TensorFlow configures collectives once)


def setup(kind: str | None, peer_timeout: float = PEER_TIMEOUT, say=print) -> Dist | None:
    """The strategy for `kind` (None: one process as before). Call it before any
    TensorFlow op: a multi-worker strategy must configure the runtime first."""
    if kind is None:
        return None
    if _DIST:
        if _DIST[0].kind != kind:
            raise ClusterError(f"this process already trains under {_DIST[0].kind}; start a new one for {kind}")
        return _DIST[0]
    from captchalens._tf import tf

    if kind == "mirrored":
        s = tf.distribute.MirroredStrategy()
        d = Dist(s, kind, 1, 0, True, s.num_replicas_in_sync)
    elif kind == "multi_worker":
        addresses, index, chief = read_tf_config()
        if say:
            say(f"joining the cluster as worker {index} of {len(addresses)} ({addresses[index]}); "
                f"waiting up to {peer_timeout:g} s for the others")
            sys.stdout.flush()
        def join():  # the strategy, then one all-reduce: the chief's returns before the others join
            s = tf.distribute.MultiWorkerMirroredStrategy()
            _all_reduce_one(s)
            return s

        s = _connect(join, addresses, index, peer_timeout)
        d = Dist(s, kind, len(addresses), index, chief, s.num_replicas_in_sync, tuple(addresses))
    else:
        raise ClusterError(f"unknown strategy {kind!r}")
    _DIST.append(d)
    return d


def _all_reduce_one(strategy) -> float:
    from captchalens._tf import tf

    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)),
                                 axis=None))


def barrier(dist: Dist | None) -> None:
    """Wait here for every worker (the end of a run: the others wait while the chief writes,
    so no worker leaves the cluster while another still needs it)."""
    if dist is not None and dist.num_workers > 1:
        _all_reduce_one(dist.strategy)


def scope(dist: Dist | None):
    """Build and compile under this: the strategy's scope, or nothing."""
    return dist.strategy.scope() if dist is not None else contextlib.nullcontext()


# ---- data: split, not copied ------------------------------------------------------

def shard_range(dist: Dist | None, n: int) -> tuple[int, int]:
    """(first index, count) of this worker's contiguous share of n items."""
    if dist is None or dist.num_workers == 1:
        return 0, n
    k, w = dist.task_index, dist.num_workers
    return k * n // w, (k + 1) * n // w - k * n // w


def shard_indices(dist: Dist | None, indices: np.ndarray) -> np.ndarray:
    """This worker's files of a labelled folder's training split (every N-th)."""
    if dist is None or dist.num_workers == 1:
        return indices
    return indices[dist.task_index::dist.num_workers]


@dataclass
class BatchPlan:
    """Batch and learning rate for the replicas in sync (LR_RULE)."""

    per_replica: int
    replicas: int
    global_batch: int
    lr: float
    steps: int  # per epoch, the same on every worker


def plan_batches(dist: Dist | None, batch_size: int, lr: float, n_train: int) -> BatchPlan:
    """One process: batch_size and lr as given, n_train // batch_size steps (as before).
    Distributed: steps from the smallest shard, so every worker runs as many."""
    if dist is None:
        return BatchPlan(batch_size, 1, batch_size, lr, n_train // batch_size)
    replicas = dist.replicas
    workers = dist.num_workers
    per_worker = batch_size * max(1, replicas // workers)
    steps = (n_train // workers) // per_worker
    if steps < 1:
        raise ClusterError(f"{n_train} training captchas over {workers} worker(s) do not fill one "
                           f"batch of {per_worker}: use more captchas or a smaller --batch-size")
    return BatchPlan(batch_size, replicas, batch_size * replicas, lr * replicas, steps)


def describe(dist: Dist, plan: BatchPlan) -> dict:
    """The metadata's record of how the run was spread (trained_on.distribute)."""
    return {"strategy": {"multi_worker": "MultiWorkerMirroredStrategy",
                         "mirrored": "MirroredStrategy"}[dist.kind],
            "workers": dist.num_workers, "replicas": dist.replicas,
            "per_replica_batch": plan.per_replica, "global_batch": plan.global_batch,
            "lr": plan.lr, "rule": LR_RULE,
            "data": "each worker its contiguous share of the image indices (a folder: every N-th "
                    "file of the training split); the same validation set on every worker"}


def train_input(dist: Dist, x, y, plan: BatchPlan, seed: int, augment, make_dataset):
    """This worker's shard as Keras input: each replica takes per-replica batches of it
    (no auto-sharding: the data already is this worker's share)."""
    from captchalens._tf import keras

    def dataset_fn(ctx):
        batch = ctx.get_per_replica_batch_size(plan.global_batch)
        return make_dataset(x, y, batch, True, seed + dist.task_index, augment).repeat()

    return keras.utils.experimental.DatasetCreator(dataset_fn)


def predict_local(model, x, batch: int = 256, meta=None) -> np.ndarray:
    """The model's outputs on inputs (uint8 as stored, or floats in 0..1; with `meta`, also
    wide.WideImages), computed here (no distributed predict)."""
    from .wide import WideImages, floats, predict

    if isinstance(x, WideImages):
        return predict(model, meta, x, batch)  # by width, computed here as below
    outs = [model(floats(x[i:i + batch]), training=False).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def _validation_class():
    from captchalens._tf import keras

    class LocalValidation(keras.callbacks.Callback):
        """val_loss and whole-captcha accuracy on the full validation set, on every worker,
        written into the epoch's logs before checkpoints and early stopping read them."""

        def __init__(self, meta, x_va, y_va, loss_fn, t_va=None):
            super().__init__()
            self.meta, self.x_va, self.y_va, self.loss_fn, self.t_va = meta, x_va, y_va, loss_fn, t_va

        def on_epoch_end(self, epoch, logs=None):
            from captchalens.decode import decode

            probs = predict_local(self.model, self.x_va, meta=self.meta)
            logs = logs if logs is not None else {}
            logs["val_loss"] = float(np.mean(self.loss_fn(self.y_va, probs)))
            if self.meta.decoding == "fixed":
                logs["val_captcha_acc"] = float(np.mean(np.all(probs.argmax(-1) == self.y_va, axis=-1)))
            elif self.t_va is not None:
                answers = [t for t, _ in decode(probs, self.meta)]
                logs["val_captcha_acc"] = float(np.mean([a == t for a, t in zip(answers, self.t_va)]))
                logs["val_captcha_acc_nocase"] = float(np.mean(
                    [a.lower() == t.lower() for a, t in zip(answers, self.t_va)]))

    return LocalValidation


def validation(meta, x_va, y_va, loss_fn, t_va=None):
    """The callback that measures validation on each worker (see LocalValidation)."""
    return _validation_class()(meta, x_va, y_va, loss_fn, t_va)


# ---- who writes what ----------------------------------------------------------------

def log_dir(dist: Dist | None, work: Path) -> Path:
    """Where the CSV log and curves go: the work folder, or a non-chief's temp folder."""
    if dist is None or dist.is_chief:
        work.mkdir(parents=True, exist_ok=True)
        return work
    tmp = Path(tempfile.mkdtemp(prefix=f"captchalens-worker{dist.task_index}-"))
    atexit.register(shutil.rmtree, tmp, True)
    return tmp


def model_to_save(dist: Dist | None, model, rebuild):
    """The model the chief writes: a plain copy of the trained weights, built outside the
    strategy (what the solver and converter read). Every worker must call this (reading
    synced-on-read variables such as batch-norm statistics is a collective); None on others."""
    if dist is None:
        return model
    weights = model.get_weights()
    if not dist.is_chief:
        return None
    plain = rebuild()
    plain.set_weights(weights)
    return plain


# ---- a peer that died ------------------------------------------------------------

def peer_lost(e: BaseException) -> bool:
    """True for the errors collectives raise when another worker stopped."""
    from captchalens._tf import tf

    return isinstance(e, (tf.errors.UnavailableError, tf.errors.AbortedError,
                          tf.errors.CancelledError, tf.errors.DeadlineExceededError))


def rejoin(e: BaseException, work: Path) -> int:
    """After a peer died: start this worker again (same command, same environment) so it
    waits for the restarted peer and both resume from the shared checkpoint; after
    REJOIN_LIMIT times, say how to resume by hand and return EXIT_PEER_LOST."""
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    n = int(os.environ.get(REJOIN_ENV, "0") or 0)
    print(f"captchalens: another worker of the cluster stopped ({first})", file=sys.stderr)
    if n >= REJOIN_LIMIT:
        print(f"captchalens: error: gave up after rejoining {n} times; start every worker again with "
              f"the same command: the run resumes from the checkpoint in {work / 'backup'}",
              file=sys.stderr, flush=True)
        return EXIT_PEER_LOST
    print(f"captchalens: starting this worker again ({n + 1} of {REJOIN_LIMIT}) to rejoin; the run "
          f"resumes from the checkpoint in {work / 'backup'} once the stopped worker is back",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.environ[REJOIN_ENV] = str(n + 1)
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return EXIT_PEER_LOST  # pragma: no cover (execv does not return)
