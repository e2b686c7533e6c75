"""Multi-worker training on this machine: steps/s with 1 and 2 workers, and what the
all-reduce costs per step.  Writes bench/results/distribute.md.

    .venv/bin/python bench/distribute_bench.py            # a few minutes

Each run starts worker processes on 127.0.0.1 with their own TF_CONFIG and trains
the default model's network (training/networks.py `small`, width 0.75) under
MultiWorkerMirroredStrategy for a fixed number of steps on random inputs of its
input shape (step time does not depend on the pixels), batch BATCH per replica.
Then each worker times the all-reduce alone: one tensor of the model's
parameter count (what the gradients add up to per step), averaged over
AR_REPEATS calls.  Both workers share this machine's 2 cores (and a background
training), so 2 workers are expected to be no faster here: the figures are for
the paper estimate in README ("Training on several machines").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

BATCH = 32  # captchas per replica per step
STEPS = 24  # timed steps per run (after WARM)
REPEATS = 2  # runs per setting; the fastest is reported (the machine is shared)
WARM = 4  # steps not timed (tracing, first all-reduces)
AR_REPEATS = 20  # all-reduce calls timed
LINKS = {"1 Gbit/s": 125e6, "10 Gbit/s": 1.25e9}  # bytes/s of a machine's network link


def worker() -> None:
    """One worker (TF_CONFIG from the environment): prints its figures as JSON."""
    import numpy as np

    from captchalens._tf import keras, tf
    from captchalens.training import distribute, networks
    from captchalens.training.train import TrainConfig, make_meta

    batch = int(os.environ.get("BENCH_BATCH", BATCH))

    dist = distribute.setup("multi_worker", 120, say=None)
    meta = make_meta(TrainConfig())
    with distribute.scope(dist):
        model = networks.build("small", meta, width=0.75)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=networks.smoothed_ce(0.1), jit_compile=False)
    n = (STEPS + WARM) * batch
    rng = np.random.default_rng(dist.task_index)
    x = rng.integers(0, 255, (n, meta.input_height, meta.input_width, 1), dtype=np.uint8)
    y = rng.integers(0, len(meta.charset), (n, meta.length)).astype(np.int32)
    times = []
    timer = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, _: times.append(time.perf_counter()))
    from captchalens.training.train import dataset

    plan = distribute.plan_batches(dist, batch, 1e-3, n * dist.num_workers)
    model.fit(distribute.train_input(dist, x, y, plan, 1, None, dataset), steps_per_epoch=STEPS + WARM,
              epochs=1, verbose=0, callbacks=[timer])
    step_s = (times[-1] - times[WARM - 1]) / STEPS
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    grads = tf.zeros([params], tf.float32)

    @tf.function
    def all_reduce():
        return dist.strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("SUM", grads))

    for _ in range(3):
        all_reduce()
    t0 = time.perf_counter()
    for _ in range(AR_REPEATS):
        out = all_reduce()
    float(dist.strategy.experimental_local_results(out)[0][0])  # wait for the last
    ar_s = (time.perf_counter() - t0) / AR_REPEATS
    print(json.dumps({"task": dist.task_index, "step_s": step_s, "params": params,
                      "all_reduce_s": ar_s, "global_batch": plan.global_batch,
                      "input": f"{meta.input_width}x{meta.input_height}"}), flush=True)


def run(n: int, batch: int = BATCH) -> list[dict]:
    """n workers on 127.0.0.1, `batch` per replica: each worker's figures (fastest of REPEATS)."""
    runs = [_run_once(n, batch) for _ in range(REPEATS)]
    return min(runs, key=lambda rs: max(r["step_s"] for r in rs))


def _run_once(n: int, batch: int) -> list[dict]:
    from support_distribute import free_ports, worker_env

    ports = free_ports(n)
    procs = [subprocess.Popen([sys.executable, __file__, "--worker"],
                              env={**worker_env(ports, k), "BENCH_BATCH": str(batch)},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for k in range(n)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {[p.returncode for p in procs]}")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def _verdict(one: dict, two: list[dict], control: dict) -> str:
    """What the 1- vs 2-worker figures say, from the figures."""
    rate = lambda r: r["global_batch"] / r["step_s"]  # noqa: E731 (captchas/s)
    pair = two[0]["global_batch"] / max(r["step_s"] for r in two)
    gain, vs_control = pair / rate(one), pair / rate(control)
    text = (f"2 workers read {gain:.2f}x the captchas/s of one worker at the same batch per replica, "
            f"and {vs_control:.2f}x those of one worker at the same global batch. ")
    if vs_control < 1.1:
        return text + ("As expected, 2 workers are no faster than one process doing the same work: "
                       "they share the same 2 cores (and the background training)."
                       + (" What the pair gains over the first row comes from the bigger batch per "
                          "step, which one process gets too." if gain >= 1.1 else ""))
    return text + ("The pair beats one process even at the same global batch here: one TensorFlow "
                   "process does not keep both cores busy on this small network, and the background "
                   "load moved between runs. That is this machine's idle core, not a gain to expect "
                   "from distribution: several workers on one machine share its cores.")


def report(results: dict[int, list[dict]], control: dict, load: tuple, load_after: tuple) -> str:
    from _machine import cpu

    one, two = results[1][0], results[2]
    params = one["params"]
    mb = params * 4 / 1e6
    lines = [
        "# Multi-worker training on this machine (bench/distribute_bench.py)",
        "",
        f"CPU: {cpu()}. Load average before / after: {load[0]:.2f} / {load_after[0]:.2f} "
        f"(1 min) — a long model training runs in the background on the same 2 cores, "
        f"niced, and other test runs came and went: the figures are noisy and slow.",
        "",
        f"Network: the default model's (`small`, width 0.75), {params:,} trainable parameters; "
        f"{BATCH} captchas per replica per step (one replica per worker: CPU), {STEPS} steps "
        f"timed after {WARM}, the fastest of {REPEATS} runs, random inputs of the model's {one['input']} input.",
        "",
        "| workers | global batch | steps/s | captchas/s | all-reduce of the gradients, measured |",
        "|---|---|---|---|---|",
    ]
    for n, rs in [*results.items(), (1, [control])]:
        step = max(r["step_s"] for r in rs)
        ar = max(r["all_reduce_s"] for r in rs)
        gb = rs[0]["global_batch"]
        lines.append(f"| {n} | {gb} | {1 / step:.2f} | {gb / step:.0f} | "
                     f"{1000 * ar:.1f} ms" + (" (one worker: nothing to exchange)" if n == 1 else "") + " |")
    lines += ["", f"(The last row: one worker at the 2-worker run's global batch, {control['global_batch']} "
              "per step: the same work per step as the pair, in one process.)"]
    step1, step2 = one["step_s"], max(r["step_s"] for r in two)
    ar2 = max(r["all_reduce_s"] for r in two)
    lines += [
        "",
        f"All-reduce size per step: {params:,} float32 = {mb:.2f} MB of gradients (plus a few "
        f"bytes of loss/metric sums). Measured on 127.0.0.1: {1000 * ar2:.1f} ms per all-reduce "
        f"with 2 workers; a 2-worker step took {1000 * (step2 - step1):+.0f} ms longer than a "
        f"1-worker step ({1000 * step2:.0f} vs {1000 * step1:.0f} ms).",
        "",
        _verdict(one, two, control),
        "",
        "## On real machines, worked out on paper",
        "",
        f"Per-step compute with one worker: {1000 * step1:.0f} ms for {BATCH} captchas on this "
        "(shared) CPU. A ring all-reduce sends and receives 2(N-1)/N times the gradient bytes "
        "per worker; N machines then run N x the captchas per step:",
        "",
        "| machines | link | all-reduce per step | speed-up over one machine |",
        "|---|---|---|---|",
    ]
    for n in (2, 4, 8):
        for name, bw in LINKS.items():
            comm = 2 * (n - 1) / n * params * 4 / bw
            lines.append(f"| {n} | {name} | {1000 * comm:.1f} ms | {n * step1 / (step1 + comm):.2f}x |")
    lines += ["", "(No overlap of communication with compute assumed: a floor. The all-reduce is "
              "small next to a step, so the speed-up stays close to N.)", ""]
    return "\n".join(lines)


def main() -> None:
    load = os.getloadavg()
    t0 = time.time()
    results = {n: run(n) for n in (1, 2)}
    control = run(1, 2 * BATCH)[0]
    text = report(results, control, load, os.getloadavg())
    out = HERE / "results" / "distribute.md"
    out.write_text(text + f"\n(The bench took {time.time() - t0:.0f} s.)\n")
    print(text)


if __name__ == "__main__":
    worker() if "--worker" in sys.argv else main()
