#!/usr/bin/env node
/**
 * The extension's own inference (extension/lib/engine.js) run in Node, for the
 * parity tests and `captchalens solve --engine tfjs`.
 *
 *   node extension/node/node_solver.js --model extension/models/default --input pixels.bin --output answers.json
 *
 * Pixels come already decoded (Python's captchalens.images.read_rgba), so both
 * engines start from identical RGBA values. Input (a file, or stdin with
 * `--input -`), all integers uint32 little-endian:
 *   count, then per image: width, height, width*height*4 RGBA bytes
 * Output JSON: {"backend", "model", "load_ms", "solve_ms",
 *               "results": [{"text", "confidence", "probs": [P*K floats]}]}
 * `--one-at-a-time`: each image through engine.solve(), the extension's path for one captcha (it
 * stops reading a width rule's scales once the answer is known), instead of engine.solveBatch.
 * Exit status 2 with "node_solver.js: error: <message>" on stderr for any problem.
 */
'use strict';

const fs = require('fs');
const path = require('path');

// The repo root: extension/node/ -> ../..
const REPO_ROOT = path.resolve(__dirname, '..', '..');
// The engine shared with the extension's service worker.
const ENGINE = path.join(REPO_ROOT, 'extension', 'lib', 'engine.js');
// Header fields are uint32 little-endian.
const U32 = 4;

/**
 * Print a user-readable error and exit with status 2.
 * @param {string} message
 */
function fail(message) {
  process.stderr.write(`node_solver.js: error: ${message}\n`);
  process.exit(2);
}

/**
 * Parse --flag value pairs.
 * @param {string[]} argv
 * @returns {{model: string, input: string, output: (string|null), backend: string, nodeModules: string, probs: boolean}}
 */
function parseArgs(argv) {
  const args = {
    model: null,
    input: '-',
    output: null,
    backend: 'wasm',
    nodeModules: process.env.CAPTCHALENS_NODE_MODULES || path.join(REPO_ROOT, 'node_modules'),
    probs: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--model') args.model = value();
    else if (flag === '--input') args.input = value();
    else if (flag === '--output') args.output = value();
    else if (flag === '--backend') args.backend = value();
    else if (flag === '--node-modules') args.nodeModules = value();
    else if (flag === '--no-probs') args.probs = false;
    else if (flag === '--one-at-a-time') args.single = true;
    else if (flag === '--help' || flag === '-h') {
      process.stdout.write('usage: node_solver.js --model DIR [--input FILE|-] [--output FILE] ' +
        '[--backend wasm|cpu] [--node-modules DIR] [--no-probs] [--one-at-a-time]\n');
      process.exit(0);
    } else fail(`unknown argument ${flag}`);
  }
  if (!args.model) fail('--model DIR is required (a folder written by `captchalens convert`)');
  if (args.backend !== 'wasm' && args.backend !== 'cpu') fail('--backend must be wasm or cpu');
  return args;
}

/**
 * A loader reading a model folder from disk (tf.loadLayersModel('file://') does not work in
 * Node without tfjs-node, so engine.js gets the files through this).
 * @param {string} dir
 * @returns {{name: string, json: function(string): Promise<Object>, binary: function(string): Promise<ArrayBuffer>}}
 */
function fsLoader(dir) {
  const file = (rel) => {
    const p = path.resolve(dir, rel);
    if (path.relative(dir, p).startsWith('..')) throw new Error(`${rel} points outside ${dir}`);
    try {
      return fs.readFileSync(p);
    } catch (e) {
      throw new Error(`cannot read ${p}: ${e.code || e.message}`);
    }
  };
  return {
    name: dir,
    json: async (rel) => {
      const text = file(rel).toString('utf8');
      try {
        return JSON.parse(text);
      } catch (e) {
        throw new Error(`${path.join(dir, rel)} is not valid JSON: ${e.message}`);
      }
    },
    binary: async (rel) => {
      const b = file(rel);
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    },
  };
}

/**
 * Split the pixel stream into RGBA images for engine.js.
 * @param {Buffer} buf
 * @returns {Array<{data: Uint8Array, width: number, height: number}>}
 */
function readImages(buf) {
  if (buf.length < U32) throw new Error('pixel input is empty (expected count, then width, height, RGBA bytes)');
  const count = buf.readUInt32LE(0);
  const images = [];
  let at = U32;
  for (let i = 0; i < count; i++) {
    if (at + 2 * U32 > buf.length) throw new Error(`pixel input ends before image ${i} of ${count}`);
    const width = buf.readUInt32LE(at);
    const height = buf.readUInt32LE(at + U32);
    at += 2 * U32;
    const n = width * height * 4;
    if (at + n > buf.length) throw new Error(`pixel input ends inside image ${i} (${width}x${height})`);
    images.push({ data: new Uint8Array(buf.buffer, buf.byteOffset + at, n), width, height });
    at += n;
  }
  if (at !== buf.length) throw new Error(`pixel input has ${buf.length - at} bytes after its ${count} images`);
  return images;
}

/**
 * Load TF.js from node_modules and pick the backend (wasm, else cpu).
 * @param {string} nodeModules
 * @param {string} wanted  'wasm' or 'cpu'
 * @returns {Promise<Object>} the tf namespace
 */
async function loadTf(nodeModules, wanted) {
  let tf;
  try {
    tf = require(path.join(nodeModules, '@tensorflow', 'tfjs'));
  } catch (e) {
    fail(`cannot load @tensorflow/tfjs from ${nodeModules} (${e.code || e.message}): run \`npm ci\` in ${REPO_ROOT}`);
  }
  if (wanted === 'wasm') {
    try {
      require(path.join(nodeModules, '@tensorflow', 'tfjs-backend-wasm'));
      if (await tf.setBackend('wasm')) {
        await tf.ready();
        return tf;
      }
      process.stderr.write('node_solver.js: the wasm backend did not start; using cpu\n');
    } catch (e) {
      process.stderr.write(`node_solver.js: the wasm backend failed (${e.message}); using cpu\n`);
    }
  }
  await tf.setBackend('cpu');
  await tf.ready();
  return tf;
}

/** Run: read pixels, load the model, solve, write JSON. */
async function main() {
  const args = parseArgs(process.argv.slice(2));
  const modelDir = path.resolve(args.model);
  if (!fs.existsSync(path.join(modelDir, 'model.json'))) {
    fail(`${modelDir} has no model.json: run \`captchalens convert\` first`);
  }
  let images;
  try {
    images = readImages(fs.readFileSync(args.input === '-' ? 0 : args.input));
  } catch (e) {
    fail(e.message);
  }
  const tf = await loadTf(args.nodeModules, args.backend);
  const engine = require(ENGINE);
  process.stderr.write(`node_solver.js: backend ${tf.getBackend()}\n`);
  const t0 = performance.now();
  let loaded;
  try {
    loaded = await engine.loadModel(tf, fsLoader(modelDir));
  } catch (e) {
    fail(e.message);
  }
  const t1 = performance.now();
  let results;
  try {
    if (args.single) { // one solve() each, as the extension's right-click reads a captcha
      results = [];
      for (const im of images) {
        results.push(await engine.solve(tf, loaded, im));
      }
    } else {
      results = await engine.solveBatch(tf, loaded, images);
    }
  } catch (e) {
    fail(e.message);
  }
  const t2 = performance.now();
  const out = {
    backend: tf.getBackend(),
    model: loaded.meta.name,
    load_ms: t1 - t0,
    solve_ms: t2 - t1,
    results: results.map((r) => (args.probs
      ? { text: r.text, confidence: r.confidence, probs: r.probs ? Array.from(r.probs) : null }
      : { text: r.text, confidence: r.confidence })),
  };
  const text = JSON.stringify(out);
  if (args.output) fs.writeFileSync(args.output, text);
  else process.stdout.write(text + '\n');
}

main().catch((e) => fail(e && e.message ? e.message : String(e)));
