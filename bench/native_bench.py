"""Native messaging vs HTTP: round-trip latency of one solve, the extension's case.

    nice -n 10 .venv/bin/python bench/native_bench.py [--model DIR] [--n 200]

The same captchas, one at a time, to
  * the native host, started from its manifest as the browser starts it
    (`captchalens native install --profile-dir` into a temp dir), base64 in a frame;
  * a real `captchalens serve` on a keep-alive connection, as a raw image/png body
    and as JSON {"image": base64} (what the native frame carries);
and the time to first answer of a freshly started host (the browser starts it on
the first connectNative). The client runs in this process, so the figures include
its cost but not the browser's relaying of frames.

Then the same from inside the extension in headless Chromium (what a user's solve pays):
the service worker's hostSolve(png) through native messaging (port already open), and
hostRequest('/solve') over HTTP to `captchalens serve`, timed with performance.now().
Writes bench/results/native.md.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support_host import (HostProcess, NativeProcess, captcha,  # noqa: E402
                          extension_with_native_granted)
from _machine import cpu  # noqa: E402

DEFAULT = ROOT / "captchalens" / "models" / "default"
DISTINCT = 50  # different 160x60 captchas, sent in turn
WARMUP = 10  # solves before timing starts


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def timings(call, n: int) -> list[float]:
    for i in range(WARMUP):
        call(i)
    out = []
    for i in range(n):
        t = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def native_run(model: Path, tmp: Path, pngs: list[bytes], n: int) -> tuple[list[float], float, float]:
    from captchalens.native_host import install

    (tmp / "profile").mkdir()
    os.environ["CAPTCHALENS_HOME"] = str(tmp / "native-home")
    install.install([tmp / "profile"], [str(model)])
    start = time.perf_counter()
    proc = NativeProcess(tmp / "profile" / "NativeMessagingHosts" / "io.captchalens.host.json")
    try:
        assert proc.call("ping")["ok"]
        first_ping = time.perf_counter() - start
        assert proc.call("solve", {"image": base64.b64encode(pngs[0]).decode()})["ok"]
        first_solve = time.perf_counter() - start
        images = [base64.b64encode(p).decode() for p in pngs]

        def call(i):
            frame = proc.call("solve", {"image": images[i % len(images)]})
            assert frame["ok"], frame
        return timings(call, n), first_ping, first_solve
    finally:
        proc.close()


def http_run(model: Path, tmp: Path, pngs: list[bytes], n: int) -> dict[str, list[float]]:
    server = HostProcess(tmp / "http-home", [model]).wait_ready()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    host = {"Host": f"127.0.0.1:{server.port}"}
    bodies = {"raw": [(p, "image/png") for p in pngs],
              "json": [(json.dumps({"image": base64.b64encode(p).decode()}).encode(), "application/json")
                       for p in pngs]}
    out = {}
    try:
        for kind, items in bodies.items():
            def call(i):
                body, ctype = items[i % len(items)]
                conn.request("POST", "/solve", body, {**host, "Content-Type": ctype})
                r = conn.getresponse()
                r.read()
                assert r.status == 200, r.status
            out[kind] = timings(call, n)
    finally:
        conn.close()
        server.stop()
    return out


# In the service worker: N solves of each PNG in turn, one at a time; milliseconds of each.
SW_TIMES = """async ([pngs, n, warmup, how]) => {
  const blobs = pngs.map((b64) => new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))],
                                           {type: 'image/png'}));
  const once = (i) => how === 'native' ? hostSolve(blobs[i % blobs.length])
    : hostRequest('/solve', {method: 'POST', body: blobs[i % blobs.length], type: 'image/png'});
  for (let i = 0; i < warmup; i++) { await once(i); }
  const out = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await once(i);
    out.push(performance.now() - t);
  }
  return out;
}"""


def browser_run(model: Path, tmp: Path, pngs: list[bytes], n: int) -> dict[str, list[float]]:
    """Timings from the extension's service worker: native messaging, then HTTP."""
    import support_browser as sb
    from playwright.sync_api import sync_playwright

    from captchalens.native_host import install

    ext = extension_with_native_granted(tmp / "extension")
    profile = tmp / "chromium-profile"
    profile.mkdir()
    os.environ["CAPTCHALENS_HOME"] = str(tmp / "browser-home")
    install.install([profile], [str(model)])
    server = HostProcess(tmp / "browser-http-home", [model]).wait_ready()
    images = [base64.b64encode(p).decode() for p in pngs]
    out = {}
    try:
        with sync_playwright() as p:
            ctx = sb.launch(p, profile, ext)
            try:
                sw = sb.service_worker(ctx, sb.extension_id(ext))
                sb.set_storage(sw, {"hostUrl": f"http://127.0.0.1:{server.port}"})
                assert sw.evaluate("nativeEnabled()")
                out["native"] = sw.evaluate(SW_TIMES, [images, n, WARMUP, "native"])
                out["http"] = sw.evaluate(SW_TIMES, [images, n, WARMUP, "http"])
            finally:
                ctx.close()
    finally:
        server.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT, help="model folder (default: the shipped model)")
    p.add_argument("--n", type=int, default=200, help="timed solves per way (default 200)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "native.md", help="report file")
    args = p.parse_args()
    pngs = [captcha(i, seed=31)[0] for i in range(DISTINCT)]
    with tempfile.TemporaryDirectory() as t:
        native, first_ping, first_solve = native_run(args.model, Path(t), pngs, args.n)
        http = http_run(args.model, Path(t), pngs, args.n)
        in_browser = browser_run(args.model, Path(t), pngs, args.n)
    load = os.getloadavg()[0]
    rows = [("from Python: native messaging (base64 in a frame)", native),
            ("from Python: HTTP keep-alive, raw image/png", http["raw"]),
            ("from Python: HTTP keep-alive, JSON base64", http["json"]),
            ("in Chromium: the service worker's hostSolve, native messaging", in_browser["native"]),
            ("in Chromium: the service worker's hostRequest('/solve'), HTTP", in_browser["http"])]
    lines = ["# Native messaging vs HTTP: one solve's round trip", "",
             f"CPU: {cpu()}. Model: `{args.model.name}`. {args.n} solves each, one at a time, after "
             f"{WARMUP} untimed; 160x60 PNGs (~{statistics.mean(map(len, pngs)) / 1024:.1f} KB). "
             f"`bench/native_bench.py`. Load average when it ended: {load:.1f} (other work shares "
             f"the 2 cores: compare rows, not runs).", "",
             "| way | median ms | p90 ms | p99 ms |", "|---|---|---|---|"]
    for name, ms in rows:
        lines.append(f"| {name} | {statistics.median(ms):.2f} | {pct(ms, 90):.2f} | {pct(ms, 99):.2f} |")
    lines += ["", f"A freshly started native host answers `ping` after {first_ping * 1000:.0f} ms and "
                  f"its first solve after {first_solve:.1f} s (loading TensorFlow and the model); the "
                  f"browser starts it on the extension's first connectNative and keeps it while the "
                  f"port is open.", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
