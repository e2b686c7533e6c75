"""Cluster helpers for tests/test_distribute.py: free ports, TF_CONFIG, and a
worker that records digests of its weights (python support_distribute.py ...)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# A tiny recipe: a few dozen captchas, the small network at a quarter width.
TINY = dict(arch="small", width_mult=0.25, train_size=48, val_size=16, batch_size=8, workers=1,
            verbose=0, fresh_eval=0)


def free_ports(n: int) -> list[int]:
    """n TCP ports free on 127.0.0.1 (bound then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def worker_env(ports: list[int], index: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CAPTCHALENS_REJOINS"}
    env.update(TF_CONFIG=tf_config(ports, index), TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    return env


def start_cli(args: list[str], ports: list[int], index: int, log: Path) -> subprocess.Popen:
    """`captchalens train ARGS` as cluster worker `index`, its output into `log`."""
    f = open(log, "wb")
    return subprocess.Popen([sys.executable, "-m", "captchalens.cli", "train", *args],
                            env=worker_env(ports, index), stdout=f, stderr=subprocess.STDOUT)


def start_digest_worker(out: Path, digests: Path, cache: Path, ports, index, log: Path):
    """This file as a worker: trains TINY for one epoch, writes its weight digests to `digests`."""
    f = open(log, "wb")
    return subprocess.Popen([sys.executable, __file__, str(out), str(digests), str(cache)],
                            env=worker_env(ports, index), stdout=f, stderr=subprocess.STDOUT)


def _main(out: str, digests: str, cache: str) -> None:
    import hashlib

    from captchalens._tf import keras
    from captchalens.training.train import TrainConfig, train_generated

    record = {}

    def digest(model) -> str:
        h = hashlib.sha256()
        for w in model.get_weights():  # every worker calls it: batch-norm statistics are all-reduced
            h.update(w.tobytes())
        return h.hexdigest()

    class Digests(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            record["before"] = digest(self.model)

        def on_train_batch_end(self, batch, logs=None):
            record.setdefault("step1", digest(self.model))

        def on_train_end(self, logs=None):
            record["end"] = digest(self.model)

    path, meta = train_generated(TrainConfig(out=out, name="dist", epochs=1, cache=cache,
                                             strategy="multi_worker", extra_callbacks=[Digests()],
                                             **{k: v for k, v in TINY.items() if k != "fresh_eval"}))
    record["wrote"] = str(path) if path else None
    record["replicas"] = meta.trained_on["distribute"]["replicas"]
    Path(digests).write_text(json.dumps(record))


if __name__ == "__main__":
    _main(*sys.argv[1:4])
