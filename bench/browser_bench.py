"""In-browser benchmark: the extension's TF.js inference inside its service worker,
in headless Chromium (Debian's /usr/bin/chromium, run with `nice -n 10`).

    .venv/bin/python bench/browser_bench.py [--runs 100] [--cold 5] [--model KERAS_DIR]

Measures, for the extension's default model (extension/models/, or KERAS_DIR
converted into a temporary copy of the extension):
  * cold start: a freshly started service worker loads TF.js' wasm backend and
    the model (fetch model.json + shards, build, warm-up predict) — median of
    --cold restarts of the worker;
  * warm pixels -> text (CaptchaLensEngine.solve: preprocess, predict, decode)
    on a 160x60 captcha, wasm and cpu backends — median and p90 of --runs;
  * the whole right-click path (self.solveFromMenu: inject the content script,
    read the canvas, solve, fill the input, show the overlay) — median of --menu runs.
Writes bench/results/browser.md.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import support_browser as sb  # noqa: E402
from _machine import cpu  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "browser.md"
GOAL_WARM_MS = 10.0  # wasm pixels -> text
GOAL_LOAD_MS = 500.0  # cold model load

# Runs in the service worker: cold start of backend + model, timed separately.
COLD_JS = """async () => {
    const t0 = performance.now();
    const backend = await ensureBackend();
    const t1 = performance.now();
    const loaded = await getModel('');
    const t2 = performance.now();
    return {backend, backendMs: t1 - t0, modelMs: t2 - t1, totalMs: t2 - t0,
            name: loaded.entry.name, tf: tf.version.tfjs};
}"""

# Runs in the service worker: warm solve timings on one backend.
WARM_JS = """async ([backend, b64, width, height, runs, warmup]) => {
    await forgetModels();
    await useBackend(backend);
    const t0 = performance.now();
    const loaded = await getModel('');
    const loadMs = performance.now() - t0;
    const bin = atob(b64);
    const data = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) data[i] = bin.charCodeAt(i);
    const rgba = {data, width, height};
    let text = '';
    for (let i = 0; i < warmup; i++) text = (await CaptchaLensEngine.solve(tf, loaded, rgba)).text;
    const times = [];
    for (let i = 0; i < runs; i++) {
        const s = performance.now();
        const r = await CaptchaLensEngine.solve(tf, loaded, rgba);
        times.push(performance.now() - s);
        text = r.text;
    }
    return {backend: tf.getBackend(), loadMs, times, text, simd: backend === 'wasm' ?
            Boolean(tf.env().getBool('WASM_HAS_SIMD_SUPPORT')) : null};
}"""


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def prepare_extension(args, tmp: Path) -> tuple[Path, dict]:
    """The extension folder to load and its default model's metadata."""
    if args.model:
        ext = sb.build_extension_copy(tmp / "extension", Path(args.model))
    else:
        ext = sb.EXTENSION_DIR
        missing = sb.missing_parts(ext)
        if missing:
            sys.exit(f"browser_bench: extension/ lacks {', '.join(missing)}: run `captchalens convert` "
                     f"(or pass --model KERAS_DIR)")
    index = json.loads((ext / "models" / "index.json").read_text())
    entry = next(m for m in index["models"] if m["name"] == index["default"])
    meta = json.loads((ext / entry["dir"] / "captchalens.json").read_text())
    shards = sum(p.stat().st_size for p in (ext / entry["dir"]).glob("*.bin"))
    meta["_weights_bytes"] = shards
    return ext, meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="timed warm solves per backend (default 100)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed solves first (default 10)")
    ap.add_argument("--cold", type=int, default=5, help="cold starts of the service worker (default 5)")
    ap.add_argument("--menu", type=int, default=20, help="timed right-click solves (default 20)")
    ap.add_argument("--model", default=None, help="Keras model folder to convert and measure instead of "
                                                 "extension/models/default")
    ap.add_argument("--size", default="160x60", help="the captcha's size, WxH (default 160x60; a reader with a "
                                                    "width rule reads other shapes at other widths)")
    ap.add_argument("--out", default=str(RESULTS), help=f"report file (default {RESULTS.relative_to(ROOT)})")
    args = ap.parse_args()
    if args.runs < 50:
        ap.error("--runs must be at least 50 for a stable median")

    from playwright.sync_api import sync_playwright

    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        assert len(size) == 2 and min(size) >= 8
    except (ValueError, AssertionError):
        ap.error(f"--size must be WxH, e.g. 200x50, not {args.size!r}")
    args.size = size
    png, label, rgba = sb.captcha(seed=2024, size=size)
    b64 = base64.b64encode(rgba.tobytes()).decode()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmpdir, sync_playwright() as p:
        tmp = Path(tmpdir)
        ext, meta = prepare_extension(args, tmp)
        ext_id = sb.extension_id(ext)
        ctx = sb.launch(p, tmp / "profile", ext)
        try:
            version = ctx.browser.version
            sw = sb.service_worker(ctx, ext_id)
            cold = []
            for i in range(args.cold):
                if i:
                    sb.stop_service_worker(ctx, ext_id)
                    sw = sb.wake_service_worker(ctx, ext_id)
                cold.append(sw.evaluate(COLD_JS))
            warm = {b: sw.evaluate(WARM_JS, [b, b64, rgba.shape[1], rgba.shape[0], args.runs, args.warmup])
                    for b in ("wasm", "cpu")}
            sw.evaluate("async () => { await forgetModels(); await useBackend('wasm'); }")

            # the whole right-click path, on a page showing the captcha
            body = "<form><img id=cap src='/c.png'><input id=answer name=captcha></form>"
            sb.reset_storage(sw)
            sb.set_storage(sw, {"engine": "browser", "rememberSites": False})
            with sb.serving({"/": sb.html(sb.page_html("bench", body)), "/c.png": sb.png(png)}) as server:
                page = ctx.new_page()
                page.goto(server.url("/"))
                sb.click_toolbar_button(ctx, page, ext_id)
                sb.solve_from_menu(sw, page, server.url("/c.png"))  # warm
                menu = []
                for _ in range(args.menu):
                    t0 = time.perf_counter()
                    r = sb.solve_from_menu(sw, page, server.url("/c.png"))
                    menu.append(((time.perf_counter() - t0) * 1000, r["ms"]))
                    assert r["ok"], r
        finally:
            ctx.close()
    load_after = os.getloadavg()[0]

    meta["_source"] = (f"`{args.model}` converted for this run" if args.model
                       else "`extension/models/` as committed")
    report = render(args, meta, version, cold, warm, menu, load_before, load_after)
    Path(args.out).write_text(report)
    print(report)
    return 0


def render(args, meta, version, cold, warm, menu, load_before, load_after) -> str:
    cold_model = statistics.median(c["modelMs"] for c in cold)
    cold_backend = statistics.median(c["backendMs"] for c in cold)
    cold_total = statistics.median(c["totalMs"] for c in cold)
    w = {b: (statistics.median(r["times"]), pct(r["times"], 0.9), min(r["times"])) for b, r in warm.items()}
    same = warm["wasm"]["text"] == warm["cpu"]["text"]
    menu_sw = statistics.median(m[1] for m in menu)
    menu_rt = statistics.median(m[0] for m in menu)
    from captchalens.contract import ModelMeta

    m = ModelMeta.from_json({k: v for k, v in meta.items() if not k.startswith("_")})
    read_w = m.input_width_for(*args.size)
    macs = meta.get("macs", 0) * read_w / m.input_width  # the trunk's work is in proportion to the width
    rule = (f" (reference; width rule {m.width_rule['rule']}: this captcha is read {read_w} wide)"
            if m.width_rule else "")
    model_desc = (f"`{meta['name']}` ({meta['_source']}): {meta.get('architecture') or 'model'}, input {meta['input_height']}x"
                  f"{meta['input_width']}x{meta['input_channels']}{rule}, {meta.get('params', 0):,} parameters, "
                  f"{macs / 1e6:.1f} M multiply-adds at the width read, {meta['_weights_bytes'] / 1e6:.2f} MB of weights, "
                  f"{meta['decoding']} decoding")
    acc = meta.get("metrics", {}).get("captcha_acc_160x60") or meta.get("metrics", {}).get("val_captcha_acc")
    if acc is not None:
        model_desc += f", whole-captcha accuracy {100 * acc:.1f}%"
    ok = lambda v, goal: "meets" if v <= goal else "misses"  # noqa: E731
    lines = [
        "## In-browser (extension, TF.js)",
        "",
        f"`bench/browser_bench.py` in headless Chromium {version} (`nice -n 10`), "
        f"TF.js {cold[0]['tf']} in the extension's service worker, {time.strftime('%Y-%m-%d')}, "
        f"{cpu()}, shared with other work "
        f"(load average {load_before:.1f} before, {load_after:.1f} after). "
        f"Model: {model_desc}. Captcha: one generated {args.size[0]}x{args.size[1]} image. Milliseconds.",
        "",
        "| measure | median | p90 | min | runs | goal |",
        "|---|---|---|---|---|---|",
        f"| warm pixels -> text, wasm{' (SIMD)' if warm['wasm']['simd'] else ''} | {w['wasm'][0]:.2f} | "
        f"{w['wasm'][1]:.2f} | {w['wasm'][2]:.2f} | {args.runs} | <= {GOAL_WARM_MS:.0f} ({ok(w['wasm'][0], GOAL_WARM_MS)}) |",
        f"| warm pixels -> text, cpu | {w['cpu'][0]:.2f} | {w['cpu'][1]:.2f} | {w['cpu'][2]:.2f} | {args.runs} | |",
        f"| cold model load (fresh worker: fetch, build, warm-up) | {cold_model:.0f} | | "
        f"{min(c['modelMs'] for c in cold):.0f} | {len(cold)} | <= {GOAL_LOAD_MS:.0f} ({ok(cold_model, GOAL_LOAD_MS)}) |",
        f"| cold wasm backend start (fresh worker) | {cold_backend:.0f} | | "
        f"{min(c['backendMs'] for c in cold):.0f} | {len(cold)} | |",
        f"| cold start total (backend + model) | {cold_total:.0f} | | {min(c['totalMs'] for c in cold):.0f} | {len(cold)} | |",
        f"| right-click path in the worker (inject, read canvas, solve, fill, overlay) | {menu_sw:.1f} | "
        f"{pct([m[1] for m in menu], 0.9):.1f} | {min(m[1] for m in menu):.1f} | {len(menu)} | |",
        f"| same, seen from the test driver (DevTools round trip included) | {menu_rt:.1f} | "
        f"{pct([m[0] for m in menu], 0.9):.1f} | {min(m[0] for m in menu):.1f} | {len(menu)} | |",
        "",
        f"Warm runs: {args.warmup} untimed solves first, then {args.runs} timed, each "
        "`CaptchaLensEngine.solve` (RGBA -> preprocessing ops -> predict -> decode) on the same loaded model. "
        "The first cold start is the very first in a new browser profile. "
        f"Model load on a warm worker (backend already up): wasm {warm['wasm']['loadMs']:.0f} ms, "
        f"cpu {warm['cpu']['loadMs']:.0f} ms. Both backends gave {'the same' if same else 'DIFFERENT'} "
        f"answer. Cold figures restart the service worker (DevTools ServiceWorker.stopAllWorkers) "
        "before each measurement, so they include compiling the wasm module and the first predict.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
