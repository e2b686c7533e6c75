"""Training on several workers (training/distribute.py): two worker processes on
127.0.0.1 train one tiny model together; only the chief writes it; a killed
worker comes back and the run resumes; a worker alone gives up in bounded time."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from support_distribute import TINY, free_ports, start_cli, start_digest_worker, worker_env

from captchalens.contract import META_FILE, load_meta
from captchalens.training import distribute
from captchalens.training.distribute import ClusterError, plan_batches, read_tf_config, shard_range

RUN_TIMEOUT = 240  # seconds a two-worker test run may take on two busy cores before it fails


def _wait(procs, timeout=RUN_TIMEOUT):
    """Every process's exit status (killing them all if one outlives the timeout)."""
    deadline = time.time() + timeout
    try:
        return [p.wait(timeout=max(1, deadline - time.time())) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise


def _cli_args(out, cache, **over):
    opts = {**TINY, "epochs": 1, "patience": 100, **over}
    args = ["--out", str(out), "--cache", str(cache), "--quiet"]
    for k, v in opts.items():
        if k != "verbose":
            args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def _fake(workers: int, index: int):
    return SimpleNamespace(num_workers=workers, task_index=index, replicas=workers, is_chief=index == 0)


# ---- the rules, without a cluster ---------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_the_shards_together_are_the_single_machine_set_whatever_the_worker_count(tmp_path, workers):
    from captchalens.training.config import TrainConfig
    from captchalens.training.generate import GenSpec
    from captchalens.training.train import _training_set, make_meta

    cfg = TrainConfig(train_size=23, workers=1, render_share=0.3, cache=None)
    meta, spec = make_meta(cfg), GenSpec()
    x1, t1 = _training_set(cfg, spec, 23, 7, meta)
    shards = [_training_set(cfg, spec, 23, 7, meta, _fake(workers, k)) for k in range(workers)]
    x = np.concatenate([s[0] for s in shards])
    texts = [t for s in shards for t in s[1]]
    assert len(texts) == 23  # nothing copied, nothing lost
    single = sorted((t, xi.tobytes()) for t, xi in zip(t1, x1))
    assert sorted((t, xi.tobytes()) for t, xi in zip(texts, x)) == single


def test_shards_are_contiguous_and_cover_every_index_once():
    for n in (0, 1, 10, 101):
        for w in (1, 2, 3, 7):
            ranges = [shard_range(_fake(w, k), n) for k in range(w)]
            covered = [i for first, count in ranges for i in range(first, first + count)]
            assert covered == list(range(n))


def test_global_batch_and_learning_rate_scale_with_the_replicas():
    one = plan_batches(None, 32, 1e-3, 1000)
    assert (one.global_batch, one.lr, one.steps) == (32, 1e-3, 31)  # one process: as before
    four = plan_batches(_fake(4, 1), 32, 1e-3, 1000)
    assert (four.global_batch, four.lr, four.steps) == (128, 4e-3, 7)  # 250 per worker / 32
    with pytest.raises(ClusterError, match="do not fill one batch"):
        plan_batches(_fake(4, 0), 32, 1e-3, 100)


@pytest.mark.parametrize("value, message", [
    (None, "needs TF_CONFIG"), ("{not json", "not valid"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "not in the cluster"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     "only 'chief' and 'worker'"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "not HOST:PORT")])
def test_a_bad_tf_config_is_refused_saying_what_is_wrong(value, message):
    with pytest.raises(ClusterError, match=message):
        read_tf_config({} if value is None else {"TF_CONFIG": value})


def test_tf_config_puts_the_chief_first():
    env = {"TF_CONFIG": json.dumps({"cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]},
                                    "task": {"type": "worker", "index": 1}})}
    assert read_tf_config(env) == (["c:1", "w:1", "w:2"], 2, False)
    assert distribute.wanted(False, None, env) == "multi_worker"  # TF_CONFIG alone turns it on
    assert distribute.wanted(False, None, {}) is None  # without it nothing changes
    assert distribute.wanted(False, "mirrored", {}) == "mirrored"


def test_cluster_without_tf_config_says_how_to_set_it(tmp_path, monkeypatch, capsys):
    from captchalens.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["train", "--cluster", "--out", str(tmp_path / "m")]) == 2
    assert "needs TF_CONFIG" in capsys.readouterr().err and not (tmp_path / "m").exists()


# ---- two real workers ------------------------------------------------------------------

def test_two_workers_train_one_model_written_by_the_chief_alone(tmp_path):
    ports = free_ports(2)
    out, cache = tmp_path / "out" / "dist", tmp_path / "cache"
    procs = [start_digest_worker(out, tmp_path / f"digest{k}.json", cache, ports, k, tmp_path / f"w{k}.log")
             for k in range(2)]
    codes = _wait(procs)
    logs = [(tmp_path / f"w{k}.log").read_text(errors="replace") for k in range(2)]
    assert codes == [0, 0], logs
    chief, other = (json.loads((tmp_path / f"digest{k}.json").read_text()) for k in range(2))
    # (a) one model folder, written by the chief; the other worker wrote none
    assert chief["wrote"] == str(out) and other["wrote"] is None
    assert [p.parent for p in tmp_path.rglob(META_FILE)] == [out]
    work = list((tmp_path / "out").iterdir())
    assert sorted(p.name for p in work) == ["dist", "dist.work"]  # no temp folders left
    assert not [p for p in (tmp_path / "out" / "dist.work").rglob("*") if "workertemp" in p.name]
    # (b) after a step and at the end the replicas hold the same weights, and the step changed them
    assert chief["step1"] == other["step1"] != chief["before"]
    assert chief["end"] == other["end"]
    meta = load_meta(out)
    d = meta.trained_on["distribute"]
    assert (d["workers"], d["replicas"], d["global_batch"]) == (2, 2, 2 * TINY["batch_size"])
    assert meta.trained_on["batch_size"] == 16 and "linear" in d["rule"]
    # (c) the solver reads it and the converter accepts it
    from captchalens.converter import convert
    from captchalens.solver import Solver
    from captchalens.training.generate import GenSpec, draw

    im, _ = draw(GenSpec(), seed=3, index=0)
    answer = Solver(out).solve_pixels([np.asarray(im)])[0]
    assert len(answer.text) == 4 and set(answer.text) <= set(meta.charset)
    result = convert(out, out=tmp_path / "ext" / "models", vendor=False, install=False)
    assert (tmp_path / "ext" / "models" / "dist" / "model.json").is_file(), result


def test_a_killed_worker_restarted_resumes_the_run_from_the_checkpoint(tmp_path):
    ports = free_ports(2)
    out, cache = tmp_path / "dist", tmp_path / "cache"
    epochs = 8
    args = _cli_args(out, cache, epochs=epochs, batch_size=4, train_size=16)
    logs = [tmp_path / "w0.log", tmp_path / "w1.log", tmp_path / "w1-again.log"]
    procs = [start_cli(args, ports, k, logs[k]) for k in range(2)]
    csv_path = tmp_path / "dist.work" / "log.csv"
    deadline = time.time() + RUN_TIMEOUT
    while not (csv_path.is_file() and len(csv_path.read_text().splitlines()) >= 2):  # epoch 0 is done
        assert time.time() < deadline and procs[1].poll() is None, [p.read_text() for p in logs[:2]]
        time.sleep(0.1)
    procs[1].kill()  # worker 1 dies mid-run
    procs[1].wait()
    assert procs[0].poll() is None, logs[0].read_text()  # the run was not over
    again = start_cli(args, ports, 1, logs[2])  # ...and is started again
    codes = _wait([procs[0], again])
    text = [p.read_text(errors="replace") for p in logs]
    assert codes == [0, 0], text
    assert "starting this worker again" in text[0]  # the chief rejoined by itself
    with open(csv_path) as f:
        done = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert done == list(range(epochs))  # resumed: no epoch trained twice (the log is appended to)
    assert load_meta(out).trained_on["distribute"]["workers"] == 2


def test_two_workers_train_on_a_labelled_folder_each_its_share_of_the_files(tmp_path):
    from captchalens.cli import main
    from captchalens.solver import Solver

    folder, out = tmp_path / "labelled", tmp_path / "site"
    assert main(["gen", str(folder), "-n", "40", "--seed", "4"]) == 0
    args = ["--data", str(folder), "--out", str(out), "--from-scratch", "--arch", "small", "--width-mult",
            "0.25", "--epochs", "2", "--batch-size", "4", "--no-augment", "--patience", "10"]
    ports = free_ports(2)
    logs = [tmp_path / f"w{k}.log" for k in range(2)]
    codes = _wait([start_cli(args, ports, k, logs[k]) for k in range(2)])
    assert codes == [0, 0], [p.read_text(errors="replace")[-3000:] for p in logs]
    assert [p.parent for p in tmp_path.rglob(META_FILE)] == [out]  # the chief's model only
    assert "the chief writes" in logs[1].read_text()
    meta = load_meta(out)
    d, split = meta.trained_on["distribute"], meta.trained_on["split"]
    assert d["workers"] == 2 and split["train"] + split["val"] == 40
    assert meta.trained_on["batch_size"] == 8  # 4 per replica x 2
    assert Solver(out).meta.charset == meta.charset


def test_mirrored_trains_on_this_machines_devices_and_says_so_in_the_metadata(tmp_path):
    out = tmp_path / "m"
    env = {k: v for k, v in worker_env([1], 0).items() if k != "TF_CONFIG"}
    done = subprocess.run([sys.executable, "-m", "captchalens.cli", "train", "--strategy", "mirrored",
                           *_cli_args(out, tmp_path / "cache")], env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    d = load_meta(out).trained_on["distribute"]
    assert d["strategy"] == "MirroredStrategy" and d["workers"] == 1
    assert d["global_batch"] == TINY["batch_size"] * d["replicas"]  # one replica per device (CPU: 1)


def test_a_worker_that_cannot_reach_the_others_gives_up_in_bounded_time(tmp_path):
    ports = free_ports(2)  # nobody listens on the second
    timeout = 5
    p = subprocess.Popen([sys.executable, "-m", "captchalens.cli", "train", "--peer-timeout", str(timeout),
                          *_cli_args(tmp_path / "m", tmp_path / "cache")],
                         env=worker_env(ports, 0), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()  # printed when it starts waiting for the others
    t0 = time.time()
    try:
        _, err = p.communicate(timeout=timeout + 30)
    finally:
        p.kill()
    waited = time.time() - t0
    assert "joining the cluster as worker 0 of 2" in first
    assert p.returncode == -signal.SIGKILL, err  # ended by its watchdog
    assert timeout - 1 <= waited <= timeout + 10
    assert f"127.0.0.1:{ports[1]}" in err and "TF_CONFIG" in err and "firewall" in err
    assert "started" in err and not (tmp_path / "m").exists()
