"""Local host benchmark: HTTP round-trip latency (p50, p99) and throughput of a real
`captchalens serve`, with and without micro-batching.

    nice -n 10 .venv/bin/python bench/host_bench.py [--model DIR] [--n 500]

For each mode a fresh server starts on a free loopback port (CAPTCHALENS_HOME
in a temp folder) and answers:
  * one client, one keep-alive connection, one captcha per request (the
    extension's case): round-trip p50 / p99, and the server's own "ms";
  * one client, a new connection per request (curl's case);
  * 32 clients at once, each on its own keep-alive connection: throughput and
    latency under load.
The clients run in this process on the same 2 cores as the server, so the
figures include their cost. Figures go to bench/results/host.md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support_host import HostProcess, captcha  # noqa: E402
from _machine import cpu  # noqa: E402

DEFAULT = ROOT / "captchalens" / "models" / "default"
CLIENTS = 32
MODES = ("batching", "lock")
DISTINCT = 50  # different 160x60 captchas, sent in turn


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def post(conn: http.client.HTTPConnection, port: int, body: bytes) -> dict:
    conn.request("POST", "/solve", body, {"Host": f"127.0.0.1:{port}", "Content-Type": "image/png"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"{r.status}: {data[:200]!r}")
    return json.loads(data)


def sequential(port: int, bodies: list[bytes], n: int, keep_alive: bool) -> dict:
    rtt, server = [], []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(n):
        if not keep_alive:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t = time.perf_counter()
        answer = post(conn, port, bodies[i % len(bodies)])
        rtt.append((time.perf_counter() - t) * 1000)
        server.append(answer["ms"])
        if not keep_alive:
            conn.close()
    conn.close()
    return {"rtt": rtt, "server": server}


def concurrent(port: int, bodies: list[bytes], total: int, clients: int) -> dict:
    per = total // clients
    rtt: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        start_gate.wait()
        for i in range(per):
            t = time.perf_counter()
            try:
                post(conn, port, bodies[(k * per + i) % len(bodies)])
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(str(e))
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append((time.perf_counter() - t) * 1000)
        conn.close()
        with lock:
            rtt.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"rps": len(rtt) / wall, "rtt": rtt, "errors": len(errors), "total": per * clients}


def bench_modes(model: Path, bodies: list[bytes], args) -> dict:
    """Both servers run side by side and are measured in alternating rounds, so that
    the machine's other work weighs on both alike; figures pool all rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        servers = {mode: HostProcess(Path(tmp) / mode, [model], "--threads", str(args.threads),
                                     "--batching" if mode == "batching" else "--no-batching")
                   for mode in MODES}
        try:
            for server in servers.values():
                server.wait_ready()
                sequential(server.port, bodies, 50, keep_alive=True)  # warm-up
                concurrent(server.port, bodies, CLIENTS * 4, CLIENTS)  # warm-up of the batch shapes
            runs: dict = {m: {"keepalive": [], "newconn": [], "load": []} for m in MODES}
            for _ in range(args.rounds):
                for mode, server in servers.items():
                    runs[mode]["keepalive"].append(sequential(server.port, bodies, args.n // args.rounds, True))
                    runs[mode]["newconn"].append(sequential(server.port, bodies, args.n // 2 // args.rounds, False))
                    runs[mode]["load"].append(concurrent(server.port, bodies, CLIENTS * args.per_client, CLIENTS))
            return {m: {k: pool(v) for k, v in r.items()} for m, r in runs.items()}
        finally:
            for server in servers.values():
                server.stop()


def pool(rounds: list[dict]) -> dict:
    """Pooled latencies of all rounds; throughput = median of the rounds'."""
    rtt = [x for r in rounds for x in r["rtt"]]
    out = {"p50": statistics.median(rtt), "p99": pct(rtt, 99), "n": len(rtt)}
    if "server" in rounds[0]:
        out["server_p50"] = statistics.median([x for r in rounds for x in r["server"]])
    if "rps" in rounds[0]:
        out["rps"] = statistics.median(r["rps"] for r in rounds)
        out["rps_all"] = [round(r["rps"]) for r in rounds]
        out["errors"] = sum(r["errors"] for r in rounds)
        out["total"] = sum(r["total"] for r in rounds)
    return out


def random_default_model(folder: Path) -> Path:
    """The default architecture with random weights: same cost per captcha as the trained one."""
    code = (
        "import sys; from captchalens.training.models import build;"
        "from captchalens.training.train import TrainConfig, make_meta, save_model;"
        "cfg = TrainConfig(name='default'); meta = make_meta(cfg);"
        "save_model(build(cfg.arch, meta, width=cfg.width_mult), meta, sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    ap.add_argument("--n", type=int, default=600, help="sequential requests per mode (all rounds)")
    ap.add_argument("--per-client", type=int, default=10, help="requests per client per round under load")
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds per mode")
    ap.add_argument("--threads", type=int, default=16, help="server request threads")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "host.md"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model, note = Path(args.model), f"`{args.model}`"
        elif (DEFAULT / "captchalens.json").is_file():
            model, note = DEFAULT, "the shipped default model (`captchalens/models/default`)"
        else:
            model = random_default_model(Path(tmp) / "default")
            note = ("the default architecture with random weights (the trained default model was "
                    "not there yet; the cost per captcha is the same)")
        meta = json.loads((model / "captchalens.json").read_text())
        bodies = []
        for i in range(DISTINCT):
            png, _ = captcha(i, seed=99)
            bodies.append(png)
        load0 = os.getloadavg()[0]
        results = bench_modes(model, bodies, args)
        load1 = os.getloadavg()[0]

    report = render(results, args, note, meta, (load0, load1))
    Path(args.out).write_text(report)
    print(report)


def render(r: dict, args, note: str, meta: dict, load: tuple[float, float]) -> str:
    f = lambda x: f"{x:.1f}"  # noqa: E731
    rows = []
    fast = "tflite" in meta.get("files", {})
    for mode, label in (("batching", "micro-batching (the default)"),
                        ("lock", "one call per request (`--no-batching`)")):
        m = r[mode]
        rows.append(f"| {label} | {f(m['keepalive']['p50'])} | {f(m['keepalive']['p99'])} | "
                    f"{f(m['keepalive']['server_p50'])} | {f(m['newconn']['p50'])} | {f(m['newconn']['p99'])} | "
                    f"{m['load']['rps']:.0f} | {f(m['load']['p50'])} | {f(m['load']['p99'])} | "
                    f"{m['load']['errors']} of {m['load']['total']} |")
    b, k = r["batching"]["load"]["rps"], r["lock"]["load"]["rps"]
    verdict = ("so batching pays" if b >= k else "so batching does not pay") + (
        f" for this model, which {'has' if fast else 'lacks'} the TFLite fast path (model.tflite): a lone "
        f"request's model call, batched or not, goes through {'TFLite' if fast else 'TensorFlow'}; a batch "
        f"of two or more through TensorFlow")
    return "\n".join([
        "## Local host (HTTP)",
        "",
        f"`bench/host_bench.py` against real `captchalens serve` processes (waitress, {args.threads} "
        f"threads) on 127.0.0.1, {time.strftime('%Y-%m-%d')}, {cpu()}, Python {platform.python_version()}. "
        f"Model: {note}; {meta.get('architecture', '?')}, input {meta['input_height']}x"
        f"{meta['input_width']}, {meta.get('macs', 0) / 1e6:.0f} M MACs. Captchas: 160x60 PNGs, "
        f"{DISTINCT} different ones in turn, one per request. Milliseconds.",
        "",
        f"| mode | 1 client keep-alive p50 | p99 | server-side p50 | new connection p50 | p99 | "
        f"{CLIENTS} clients req/s | p50 | p99 | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Both servers ran side by side and were measured in {args.rounds} alternating rounds, so "
        f"other work on the machine weighed on both alike. Per mode: {r['batching']['keepalive']['n']} "
        f"requests from one client on one keep-alive connection (the extension's case), "
        f"{r['batching']['newconn']['n']} with a new connection each (curl's case), and "
        f"{r['batching']['load']['total']} from {CLIENTS} concurrent clients, each on its own "
        f"keep-alive connection; req/s is the median of the rounds (batching "
        f"{r['batching']['load']['rps_all']}, one call per request {r['lock']['load']['rps_all']}). "
        f"\"server-side\" is the `ms` the host reports (decode + model + answer). Under "
        f"{CLIENTS} clients micro-batching gives {b / k:.2f}x the throughput of one model call "
        f"per request, {verdict}. Load average (1 min) {load[0]:.1f} before and {load[1]:.1f} after: "
        f"the clients run on the same 2 cores as the servers"
        f"{', which other work kept busy' if load[0] > 1.5 else ''}.",
        "",
    ])


if __name__ == "__main__":
    main()
