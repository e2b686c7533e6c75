"""Local host benchmark: HTTP round-trip latency (p50, p99) and throughput of a real
`captchalens serve`, with and without micro-batching; with --stress, slow and numerous
clients and sample floods instead.

    nice -n 10 .venv/bin/python bench/host_bench.py [--model DIR] [--n 500]
    nice -n 10 .venv/bin/python bench/host_bench.py --stress [--baseline COMMIT]

For each mode a fresh server starts on a free loopback port (CAPTCHALENS_HOME
in a temp folder) and answers:
  * one client, one keep-alive connection, one captcha per request (the
    extension's case): round-trip p50 / p99, and the server's own "ms";
  * one client, a new connection per request (curl's case);
  * 32 clients at once, each on its own keep-alive connection: throughput and
    latency under load.
The clients run in this process on the same 2 cores as the server, so the
figures include their cost. Figures go to bench/results/host.md.

--stress (bench/results/host_stress.md) attacks one server the way a hostile local
process could: 100 connections holding half a header while /health is asked; a
client trickling its header a byte every 0.5 s; 200 clients at once for 30 s, each
asking again and again on its own connection; and one client flooding POST
/samples for 10 s, with a 0.99 MB JPEG and with captcha-sized PNGs. --baseline
COMMIT measures that commit's host the same way, side by side (its packages are
laid out from `git archive` and run through PYTHONPATH).
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support_host import (TOKEN_HEADER, HostProcess, captcha, crowd, request, slow_clients,  # noqa: E402
                          timed)
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
        "import sys; from captchalens.training.networks import build;"
        "from captchalens.training.train import TrainConfig, make_meta, save_model;"
        "cfg = TrainConfig(name='default'); meta = make_meta(cfg);"
        "save_model(build(cfg.arch, meta, width=cfg.width_mult), meta, sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)
    return folder


# ---- --stress: slow clients, crowds, sample floods -------------------------------------------
SLOW = 100  # connections holding half a header
CROWD = 200  # clients at once
CROWD_SECONDS = 30
FLOOD_SECONDS = 10
TRICKLE_CAP = 20  # seconds a trickling client is watched before "never cut off"


def trickle(port: int, every: float = 0.5) -> float | None:
    """Send a header a byte every `every` s; seconds until the server cuts the connection, or None."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    start = time.monotonic()
    try:
        s.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Pad: ".encode())
        while time.monotonic() - start < TRICKLE_CAP:
            s.sendall(b"a")
            s.settimeout(every)
            try:
                if s.recv(1) == b"":
                    return time.monotonic() - start
            except socket.timeout:
                pass
    except OSError:
        return time.monotonic() - start
    finally:
        s.close()
    return None


def big_jpeg() -> bytes:
    """A 2048x1024 noise JPEG just under 0.99 MB: far larger than any captcha, under the 2 MB cap."""
    import numpy as np
    from PIL import Image

    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1024, 2048, 3), np.uint8))
    for q in range(95, 5, -3):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=q)
        if buf.tell() <= 0.99 * 1024 * 1024:
            return buf.getvalue()
    raise RuntimeError("cannot make the JPEG small enough")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def flood(server: HostProcess, image: bytes, kind: str, site: str, seconds: float) -> dict:
    """One client POSTing the same labelled image to /samples as fast as it is answered."""
    boundary = "XXflood"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nab12\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"site\"\r\n\r\n{site}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"c\"\r\n"
            f"Content-Type: {kind}\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Host": f"127.0.0.1:{server.port}", TOKEN_HEADER: server.token(),
               "Content-Type": f"multipart/form-data; boundary={boundary}"}
    samples = server.home / "samples"
    before = folder_bytes(samples)
    statuses: dict[int, int] = {}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        conn.request("POST", "/samples", body, headers)
        r = conn.getresponse()
        r.read()
        statuses[r.status] = statuses.get(r.status, 0) + 1
        if r.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    wall = time.perf_counter() - start
    conn.close()
    written = folder_bytes(samples) - before
    stored = statuses.get(201, 0)
    return {"statuses": statuses, "mb_per_s": written / 1e6 / wall, "written": written,
            "per_sample": written / stored if stored else None, "upload": len(image), "wall": wall}


def stress(server: HostProcess) -> dict:
    """Every attack of --stress against one running server."""
    port = server.port
    out: dict = {}
    socks = slow_clients(port, SLOW)
    try:
        waits = []
        for _ in range(5):
            took, r = timed(port, "GET", "/health", timeout=10)
            ok = not isinstance(r, Exception) and r.status == 200
            waits.append(took if ok else None)
            if not ok:
                break  # a timed-out /health is the finding; do not wait 10 s four more times
        out["health"] = waits
    finally:
        for s in socks:
            s.close()
    out["trickle"] = trickle(port)
    bodies = [captcha(i, seed=99)[0] for i in range(DISTINCT)]
    out["crowd"] = crowd(port, bodies, CROWD, CROWD_SECONDS)
    out["flood_big"] = flood(server, big_jpeg(), "image/jpeg", "big.example", FLOOD_SECONDS)
    out["flood_captcha"] = flood(server, captcha(1, seed=99)[0], "image/png", "small.example", FLOOD_SECONDS)
    return out


def baseline_tree(commit: str, dest: Path) -> Path:
    """The packages of an older commit, laid out as pyproject's package-dir installs them."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "captchalens", "training", "converter",
                           "native_host"], check=True, capture_output=True).stdout
    src = dest / "src"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(src, filter="data")
    pkg = dest / "pkg"
    shutil.copytree(src / "captchalens", pkg / "captchalens")
    for sub in ("training", "converter", "native_host"):
        shutil.copytree(src / sub, pkg / "captchalens" / sub)
    return pkg


def stress_main(args, model: Path, note: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"this host": {}}
        if args.baseline:
            runs[f"before ({args.baseline})"] = {"PYTHONPATH": str(baseline_tree(args.baseline, Path(tmp)))}
        results = {}
        load = [os.getloadavg()[0]]
        for label, env in runs.items():
            run_dir = Path(tmp) / label.replace(" ", "_").replace("(", "").replace(")", "")
            run_dir.mkdir()
            server = HostProcess(run_dir / "home", [model], env=env)
            try:
                server.wait_ready()
                request(server.port, "POST", "/solve", captcha(0)[0], headers={"Content-Type": "image/png"})
                results[label] = stress(server)
            finally:
                server.stop()
        load.append(os.getloadavg()[0])
    report = render_stress(results, note, load)
    Path(args.out or ROOT / "bench" / "results" / "host_stress.md").write_text(report)
    print(report)


def render_stress(results: dict, note: str, load: list[float]) -> str:
    labels = list(results)

    def row(name, fn):
        return f"| {name} | " + " | ".join(fn(results[k]) for k in labels) + " |"

    def health(r):
        w = r["health"]
        if w[-1] is None:
            return f"**timed out** (no answer in 10 s, try {len(w)})"
        return f"{statistics.median(w) * 1000:.0f} ms median, {max(w) * 1000:.0f} ms max of {len(w)}"

    def trickled(r):
        t = r["trickle"]
        return f"cut off after {t:.1f} s" if t is not None else f"**still connected after {TRICKLE_CAP} s**"

    def ms(x):
        return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.1f} s"

    def crowd_first(r):
        c = r["crowd"]
        late = sum(1 for f in c["first"] if f > 5)
        return f"{ms(max(c['first']))} (over 5 s: {late} of {len(c['first'])})"

    def crowd_lat(r):
        lat = r["crowd"]["latencies"]
        return f"{ms(statistics.median(lat))} / {ms(pct(lat, 99))} / {ms(max(lat))}"

    def crowd_rate(r):
        c = r["crowd"]
        return f"{c['answers'] / c['wall']:.0f} answers/s, {len(c['errors'])} errors"

    def flood_row(key):
        def cell(r):
            f = r[key]
            codes = ", ".join(f"{n}x {s}" for s, n in sorted(f["statuses"].items()))
            per = f", {f['per_sample'] / 1e3:.1f} KB per stored sample" if f["per_sample"] else ""
            return f"{f['mb_per_s']:.2f} MB/s written ({codes}){per}"
        return cell

    big = results[labels[0]]["flood_big"]["upload"]
    return "\n".join([
        "## Local host under stress (slow clients, crowds, sample floods)",
        "",
        f"`bench/host_bench.py --stress` against real `captchalens serve` processes on 127.0.0.1, "
        f"{time.strftime('%Y-%m-%d')}, {cpu()}, Python {platform.python_version()}. Model: {note}. "
        f"The attacking clients run in this process on the same 2 cores as the server.",
        "",
        "| attack | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
        row(f"{SLOW} connections holding half a header; then `GET /health` on a new connection", health),
        row("a client sending its header one byte every 0.5 s", trickled),
        row(f"{CROWD} clients at once for {CROWD_SECONDS} s, each asking `/solve` again and again on its "
            f"own connection: slowest wait for a first answer", crowd_first),
        row("the same: answer time p50 / p99 / max", crowd_lat),
        row("the same: throughput", crowd_rate),
        row(f"one client POSTing a {big / 1e6:.2f} MB 2048x1024 JPEG to `/samples` for {FLOOD_SECONDS} s",
            flood_row("flood_big")),
        row(f"one client POSTing a 160x60 captcha PNG to `/samples` for {FLOOD_SECONDS} s",
            flood_row("flood_captcha")),
        "",
        f"Load average (1 min) {load[0]:.1f} before and {load[-1]:.1f} after: other work shared the "
        f"2 cores, which slows every figure but the refusals. The host's settings are in "
        f"`native_host/server.py` (connections, timeouts, the request deadline) and "
        f"`native_host/samples.py` (sample size, quotas, rate).",
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    ap.add_argument("--n", type=int, default=600, help="sequential requests per mode (all rounds)")
    ap.add_argument("--per-client", type=int, default=10, help="requests per client per round under load")
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds per mode")
    ap.add_argument("--threads", type=int, default=16, help="server request threads")
    ap.add_argument("--stress", action="store_true",
                    help="slow clients, 200 clients at once, sample floods (-> results/host_stress.md)")
    ap.add_argument("--baseline", metavar="COMMIT",
                    help="with --stress: measure this older commit's host side by side")
    ap.add_argument("--out", default=None, help="report file (default: bench/results/host.md, "
                                                "or host_stress.md with --stress)")
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
        if args.stress:
            stress_main(args, model, note)
            return
        meta = json.loads((model / "captchalens.json").read_text())
        bodies = []
        for i in range(DISTINCT):
            png, _ = captcha(i, seed=99)
            bodies.append(png)
        load0 = os.getloadavg()[0]
        results = bench_modes(model, bodies, args)
        load1 = os.getloadavg()[0]

    report = render(results, args, note, meta, (load0, load1))
    Path(args.out or ROOT / "bench" / "results" / "host.md").write_text(report)
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
