"""One contract, one table, two languages: every case of tests/contract_cases.json
gets the same verdict from captchalens/contract.py and from extension/lib/engine.js
(run in Node), and the image limits both apply are the one file
extension/shared/image_limits.json."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from captchalens import contract
from captchalens.contract import ContractError, ModelMeta, image_size_problem
from captchalens.paths import checkout
from test_extension_e2e import browser, page, setup, sw  # noqa: F401 (fixtures)

ROOT = checkout()
TABLE = Path(__file__).with_name("contract_cases.json")
ENGINE = ROOT / "extension" / "lib" / "engine.js"
LIMITS = ROOT / "extension" / "shared" / "image_limits.json"


def _table() -> dict:
    return json.loads(TABLE.read_text(encoding="utf-8"))


def _case_meta(valid: dict, case: dict) -> dict:
    """valid_meta with the case's dotted paths set and dropped (the Node runner does the same)."""
    meta = copy.deepcopy(valid)
    for path, value in case["set"].items():
        *parents, last = path.split(".")
        node = meta
        for p in parents:
            node = node[p]
        node[last] = value
    for path in case["drop"]:
        *parents, last = path.split(".")
        node = meta
        for p in parents:
            node = node[p]
        node.pop(last, None)
    return meta


def _python_verdicts(table: dict) -> tuple[list, list]:
    metas = []
    for case in table["meta_cases"]:
        try:
            ModelMeta.from_json(_case_meta(table["valid_meta"], case))
            metas.append(None)
        except ContractError as e:
            metas.append(str(e))
    images = [image_size_problem(c["width"], c["height"]) or None for c in table["image_cases"]]
    return metas, images


NODE_RUNNER = """
const fs = require('fs');
const E = require(process.argv[1]);
const table = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const limits = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
function caseMeta(valid, c) {
  const meta = JSON.parse(JSON.stringify(valid));
  const walk = (path) => { const parts = path.split('.'); const last = parts.pop();
    let node = meta; for (const p of parts) { node = node[p]; } return [node, last]; };
  for (const [path, value] of Object.entries(c.set)) { const [node, last] = walk(path); node[last] = value; }
  for (const path of c.drop) { const [node, last] = walk(path); delete node[last]; }
  return meta;
}
const metas = table.meta_cases.map((c) => {
  try { E.checkMeta(caseMeta(table.valid_meta, c)); return null; } catch (e) { return e.message; }
});
const images = table.image_cases.map((c) => E.imageSizeProblem(limits, c.width, c.height) || null);
const widths = table.width_cases.map((c) => E.inputWidth({input_width: c.model.input_width,
  input_height: c.model.input_height, preprocessing: {resize: {width: c.model.width}}}, c.width, c.height,
  c.percent || 100));
const alphabets = table.alphabet_cases.map((c) => ({ charset: E.siteCharset(c.charset, c.seen, c.labels),
  covers: E.coversAlphabet(c.charset, c.seen) }));
// decode with a site's alphabet: seeded probabilities, read whole and read with the case's alphabet
let seed = 7;
const rand = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
const decoded = table.alphabet_cases.map((c) => {
  const K = c.charset.length + 1, P = 12, probs = new Float32Array(P * K);
  for (let t = 0; t < P; t++) { let sum = 0; for (let k = 0; k < K; k++) { const v = rand() ** 4; probs[t * K + k] = v; sum += v; }
    for (let k = 0; k < K; k++) { probs[t * K + k] /= sum; } }
  const meta = { charset: c.charset, decoding: 'ctc_greedy', calibration: { temperature: 0.8 } };
  return { probs: Array.from(probs), whole: E.decode(meta, probs, P, K),
    site: E.decode(meta, probs, P, K, E.siteCharset(c.charset, c.seen, c.labels)) };
});
// one image's reads at a rule's scales: read until settled, then the one that answers
const answers = table.answer_cases.map((c) => {
  const reads = c.reads.map(([text, confidence]) => ({ text, confidence }));
  let used = 1;
  while (!E.settled(reads.slice(0, used), c.total, c.combine)) { used += 1; }
  return { used, index: E.answering(reads.slice(0, used), c.combine) };
});
console.log(JSON.stringify({metas, images, widths, alphabets, decoded, answers,
  alphabetLimits: [E.MIN_SITE_LABELS, E.MAX_ALPHABET]}));
"""


@pytest.fixture(scope="module")
def js_verdicts() -> dict:
    node = shutil.which("node")
    assert node, "Node.js is needed for the extension's engine"
    proc = subprocess.run([node, "-e", NODE_RUNNER, str(ENGINE), str(TABLE), str(LIMITS)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_both_languages_give_every_metadata_case_the_tables_verdict(js_verdicts):
    table = _table()
    py, _ = _python_verdicts(table)
    wrong = []
    for case, p, j in zip(table["meta_cases"], py, js_verdicts["metas"]):
        for lang, problem in (("Python", p), ("engine.js", j)):
            if (problem is None) != case["accept"]:
                wrong.append(f"{lang}: {case['case']!r} {'refused' if problem else 'accepted'} ({problem})")
    assert not wrong, "\n".join(wrong)
    assert len(py) == len(js_verdicts["metas"]) > 40
    assert {c["accept"] for c in table["meta_cases"]} == {True, False}


def test_both_languages_refuse_the_same_images_in_the_same_words(js_verdicts):
    table = _table()
    _, py = _python_verdicts(table)
    for case, p, j in zip(table["image_cases"], py, js_verdicts["images"]):
        assert (p is None) == case["accept"], f"Python: {case['case']}: {p}"
        assert p == j, f"{case['case']}: Python says {p!r}, engine.js {j!r}"


def _width_meta(table: dict, model: dict) -> ModelMeta:
    d = _case_meta(table["valid_meta"], {"set": {
        "decoding": "ctc_greedy", "length": None, "min_length": 3, "max_length": 6,
        "input_width": model["input_width"], "input_height": model["input_height"],
        "output_shape": [model["input_width"] // 4, 7], "preprocessing.resize.width": model["width"]}, "drop": []})
    return ModelMeta.from_json(d)


def test_python_tensorflow_and_engine_js_read_each_image_at_the_same_width(js_verdicts):
    """The width rule's three implementations, on its rounding edges and limits: the solver's
    and the TFLite file's graph op, the contract's whole-number function and engine.js's."""
    from captchalens._tf import tf
    from captchalens.preprocess import tf_input_width

    table = _table()
    cases = table["width_cases"]
    assert len(cases) == len(js_verdicts["widths"]) >= 8
    wrong = []
    for case, js in zip(cases, js_verdicts["widths"]):
        meta = _width_meta(table, case["model"])
        percent = case.get("percent", 100)
        py = meta.scaled_width(case["width"], case["height"], percent)
        graph = py if meta.width_rule is None else int(tf_input_width(meta, tf.constant(case["height"]),
                                                                      tf.constant(case["width"]), percent))
        if not py == graph == js == case["expect"]:
            wrong.append(f"{case['case']}: expected {case['expect']}, Python {py}, TF {graph}, engine.js {js}")
    assert not wrong, "\n".join(wrong)
    # the edges are real edges: one pixel either side of half way lands on either multiple
    edges = {c["expect"] for c in cases if "half way" in c["case"] and "percent" not in c}
    assert len(edges) == 2
    assert {c.get("percent", 100) for c in cases} == {80, 85, 100, 115, 120}  # the scales' rounding too


def test_both_languages_answer_from_the_same_read_after_as_many_reads(js_verdicts):
    """decode.settled/answering and engine.js settled/answering: how many of an image's reads at
    a width rule's scales are made before its answer is known, and which of them answers."""
    from captchalens.decode import answering, settled

    cases = _table()["answer_cases"]
    assert len(cases) == len(js_verdicts["answers"]) >= 10
    wrong = []
    for case, js in zip(cases, js_verdicts["answers"]):
        reads = [tuple(r) for r in case["reads"]]
        assert len(reads) == case["total"]
        used = next(n for n in range(1, len(reads) + 1) if settled(reads[:n], case["total"], case["combine"]))
        py = {"used": used, "index": answering(reads[:used], case["combine"])}
        if not py == js == case["expect"]:
            wrong.append(f"{case['case']}: expected {case['expect']}, Python {py}, engine.js {js}")
    assert not wrong, "\n".join(wrong)
    # both rules, and votes that stop early as well as ones that need every read
    assert {c["combine"] for c in cases} == {"surest", "vote"}
    votes = [c for c in cases if c["combine"] == "vote"]
    assert any(c["expect"]["used"] < c["total"] for c in votes) and any(c["expect"]["used"] == c["total"] > 1
                                                                        for c in votes)


def test_both_languages_read_a_site_with_the_same_alphabet(js_verdicts):
    """alphabet.py and engine.js: the characters a site is read with after its corrections,
    whether a reader covers them (the automatic reader's skip), and the answer decoded with
    them, text and confidence, from the same probabilities."""
    from captchalens.alphabet import MAX_ALPHABET, MIN_LABELS, covers, site_charset
    from captchalens.decode import decode

    assert js_verdicts["alphabetLimits"] == [MIN_LABELS, MAX_ALPHABET]  # one threshold, one length limit
    cases = _table()["alphabet_cases"]
    assert len(cases) == len(js_verdicts["alphabets"]) >= 10
    wrong = []
    for case, js, dec in zip(cases, js_verdicts["alphabets"], js_verdicts["decoded"]):
        py = site_charset(case["charset"], case["seen"], case["labels"])
        if not py == js["charset"] == case["expect"]:
            wrong.append(f"{case['case']}: expected {case['expect']!r}, Python {py!r}, engine.js {js['charset']!r}")
        if not covers(case["charset"], case["seen"]) == js["covers"] == case["covers"]:
            wrong.append(f"{case['case']}: covers: expected {case['covers']}, engine.js {js['covers']}")
        meta = ModelMeta(name="m", charset=case["charset"], input_height=8, input_width=48, input_channels=1,
                         decoding="ctc_greedy", output_shape=[12, len(case["charset"]) + 1],
                         calibration={"temperature": 0.8})
        probs = np.array(dec["probs"], np.float32).reshape(1, 12, -1)
        for got, allowed in ((dec["whole"], None), (dec["site"], py)):
            (text, conf), = decode(probs, meta, allowed)
            if text != got["text"] or abs(conf - got["confidence"]) > 1e-5 * max(conf, 1e-30):
                wrong.append(f"{case['case']}: decoded with {allowed!r}: Python {text!r} {conf:.6g}, "
                             f"engine.js {got['text']!r} {got['confidence']:.6g}")
            if allowed is not None:
                assert set(text) <= set(allowed)
    assert not wrong, "\n".join(wrong)
    # the cases reach both sides: answers that change with the alphabet, and ones that do not
    changed = [d["whole"]["text"] != d["site"]["text"] for d in js_verdicts["decoded"]]
    assert any(changed) and not all(changed)


def test_the_image_cases_sit_on_the_limits_of_the_one_limits_file():
    limits = json.loads(LIMITS.read_text())
    assert (contract.MAX_SIDE, contract.MAX_PIXELS) == (limits["max_side"], limits["max_pixels"])
    assert list(contract.IMAGE_FORMATS) == limits["formats"]
    # the package reads the extension's file itself (a symlink in the checkout; a copy in a built package)
    assert contract.LIMITS_FILE.resolve() == LIMITS.resolve()
    cases = [(c["width"], c["height"], c["accept"]) for c in _table()["image_cases"]]
    side, pixels = limits["max_side"], limits["max_pixels"]
    assert (side, 1, True) in cases and any(w == side + 1 and not a for w, h, a in cases)
    assert any(a and w * h == pixels for w, h, a in cases)
    assert any(not a and w * h > pixels and max(w, h) <= side for w, h, a in cases)


def test_no_other_copy_of_the_limits_in_the_extension():
    """MAX_SIDE was typed into two JS files and MAX_PIXELS into none: now only the limits file says them."""
    limits = json.loads(LIMITS.read_text())
    copies = []
    for path in (ROOT / "extension").rglob("*.js"):
        if "vendor" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if "MAX_SIDE" in text or str(limits["max_side"]) in text or str(limits["max_pixels"]) in text:
            copies.append(str(path.relative_to(ROOT)))
    assert not copies, f"image limits typed again in {copies}"


# ---- the same oversize image, refused by the extension and by the host ------------------------------
def _oversize_png() -> tuple[bytes, str]:
    """A captcha on a 1500x1500 canvas: each side within max_side, the area over max_pixels
    (the extension used to check the sides only, so it read it and the host refused it)."""
    import io

    from PIL import Image

    import support_browser as sb

    png, _, _ = sb.captcha(seed=71)
    big = Image.new("RGBA", (1500, 1500), "white")
    big.paste(Image.open(io.BytesIO(png)).convert("RGBA"), (0, 0))
    out = io.BytesIO()
    big.save(out, "PNG")
    assert 1500 <= contract.MAX_SIDE and 1500 * 1500 > contract.MAX_PIXELS
    return out.getvalue(), image_size_problem(1500, 1500)


def test_an_oversize_image_is_refused_by_the_extension_and_by_the_host(browser, sw, page, module_home, model):
    from playwright.sync_api import expect
    from support_host import extension_id, loopback_client
    from test_extension_e2e import open_page, overlay

    import support_browser as sb
    from captchalens.native_host import create_app

    png, problem = _oversize_png()
    assert problem.startswith("image is 1500x1500 pixels; a captcha must be at most")
    body = "<form><img id=cap src='/big.png'><input id=answer name=captcha></form>"
    with sb.serving({"/": sb.html(sb.page_html("big", body)), "/big.png": sb.png(png)}) as server:
        open_page(browser, page, server)
        result = sb.solve_from_menu(sw, page, server.url("/big.png"))
        assert not result["ok"] and result["code"] == "unreadable", result
        assert result["message"] == f"The image is not readable: {problem}."
        expect(overlay(page, "message")).to_have_text(result["message"])
        expect(page.locator("#answer")).to_have_value("")

    app = create_app({"PORT": 8765, "MODEL_DIRS": [str(model)], "EXTENSION_ID": extension_id(),
                      "TOKEN": "t" * 43, "RELOAD_INTERVAL": 0})
    r = loopback_client(app).post("/solve", data=png, content_type="image/png")
    limits = f"at most {contract.MAX_SIDE}x{contract.MAX_SIDE} and {contract.MAX_PIXELS} pixels"
    assert r.status_code == 400 and limits in r.json["error"], r.json  # the same limits, from the same file
