/**
 * CaptchaLens inference engine: a converted model folder in, answers out.
 *
 * A classic script (no ES module syntax) so that one file serves
 *   - the MV3 service worker:  importScripts('lib/engine.js')  -> self.CaptchaLensEngine
 *   - Node:                    require('.../extension/lib/engine.js')
 * It never imports TF.js itself: the caller passes `tf` in (the service worker
 * loads vendor/tf.es2017.min.js, Node requires @tensorflow/tfjs).
 *
 * Everything about a model (input size, preprocessing, charset, output layout,
 * decoding) is read from its captchalens.json, written once at training time.
 * Preprocessing and decoding mirror captchalens/preprocess.py and
 * captchalens/decode.py op for op; tests/test_parity.py holds both engines to
 * the same answers.
 *
 * A model folder (extension/models/<name>/) holds model.json + *.bin shards
 * (tensorflowjs converter output of a tf_keras model) and captchalens.json.
 */
(function (root, factory) {
  'use strict';
  if (typeof module === 'object' && module.exports) {
    module.exports = factory();
  } else {
    root.CaptchaLensEngine = factory();
  }
})(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  // Contract file beside every model's weights (captchalens/contract.py META_FILE).
  const META_FILE = 'captchalens.json';
  // TF.js layers model written by the tensorflowjs converter.
  const MODEL_FILE = 'model.json';
  // Metadata format this engine reads (captchalens/contract.py FORMAT).
  const FORMAT = 'captchalens.model/1';
  // Keys every captchalens.json holds, not null (captchalens/contract.py REQUIRED_KEYS).
  const REQUIRED_KEYS = ['name', 'charset', 'input_height', 'input_width', 'input_channels', 'decoding',
    'output_shape', 'preprocessing', 'format'];
  // Decodings this engine implements (captchalens/contract.py DECODINGS).
  const DECODINGS = ['fixed', 'ctc_greedy'];
  // Temperatures a model's calibration may hold (captchalens/contract.py TEMPERATURE_RANGE).
  const TEMPERATURE_RANGE = [0.05, 20];
  // Smallest normal double (numpy's finfo(float64).tiny): guards a division by a zero maximum.
  const TINY = 2.2250738585072014e-308;
  // Captchas per model.predict call in solveBatch (bounds memory on big batches).
  const BATCH = 64;
  // preprocessing.resize.width rules this engine follows, and the widest input one may give
  // (captchalens/contract.py WIDTH_RULES, MAX_INPUT_WIDTH).
  const WIDTH_RULES = ['geometric_mean'];
  // The rule's optional scales, whole percents (captchalens/contract.py MAX_SCALES, SCALE_RANGE).
  const MAX_SCALES = 9;
  const COMBINES = ['surest', 'vote'];
  const SCALE_RANGE = [50, 200];
  const MAX_INPUT_WIDTH = 1024;

  /**
   * Milliseconds from a monotonic clock (service worker and Node both have performance).
   * @returns {number}
   */
  function now() {
    return (typeof performance !== 'undefined' && performance.now) ? performance.now() : Date.now();
  }

  /**
   * A short reason from any thrown value, for user-facing messages.
   * @param {*} e
   * @returns {string}
   */
  function reason(e) {
    const text = (e && e.message) ? e.message : String(e);
    return text.split('\n')[0].slice(0, 300);
  }

  /**
   * A loader that fetches a model folder's files over HTTP(S) or chrome-extension:// URLs.
   * @param {string} baseUrl  URL of the model folder, e.g. chrome.runtime.getURL('models/default/')
   * @returns {{name: string, json: function(string): Promise<Object>, binary: function(string): Promise<ArrayBuffer>}}
   */
  function urlLoader(baseUrl) {
    if (typeof baseUrl !== 'string' || !baseUrl) {
      throw new Error('urlLoader needs the model folder URL as a string');
    }
    const base = baseUrl.endsWith('/') ? baseUrl : baseUrl + '/';

    /**
     * Fetch one file of the folder, failing with its URL and HTTP status.
     * @param {string} rel  file name relative to the folder
     * @returns {Promise<Response>}
     */
    async function get(rel) {
      const url = new URL(rel, base).href;
      let resp;
      try {
        resp = await fetch(url);
      } catch (e) {
        throw new Error(`cannot fetch ${url}: ${reason(e)}`);
      }
      if (!resp.ok) {
        throw new Error(`cannot fetch ${url}: HTTP ${resp.status}`);
      }
      return resp;
    }

    return {
      name: base,
      json: async (rel) => {
        const resp = await get(rel);
        try {
          return await resp.json();
        } catch (e) {
          throw new Error(`${rel} is not valid JSON: ${reason(e)}`);
        }
      },
      binary: async (rel) => (await get(rel)).arrayBuffer(),
    };
  }

  /**
   * Is v a whole number (as JSON gives it)?
   * @param {*} v
   * @returns {boolean}
   */
  function whole(v) {
    return typeof v === 'number' && Number.isInteger(v);
  }

  /**
   * Is v a finite number?
   * @param {*} v
   * @returns {boolean}
   */
  function finite(v) {
    return typeof v === 'number' && Number.isFinite(v);
  }

  /**
   * Refuse metadata this engine cannot follow. The same rules, case for case, as
   * captchalens/contract.py ModelMeta.validate(): tests/contract_cases.json holds both to them.
   * @param {Object} meta  parsed captchalens.json
   * @throws {Error} naming the first problem
   */
  function checkMeta(meta) {
    if (!meta || typeof meta !== 'object' || Array.isArray(meta)) {
      throw new Error(`${META_FILE} must hold a JSON object`);
    }
    for (const key of REQUIRED_KEYS) {
      if (meta[key] === undefined || meta[key] === null) {
        throw new Error(`${META_FILE} lacks "${key}"`);
      }
    }
    if (typeof meta.name !== 'string' || !meta.name) {
      throw new Error('name must be a non-empty string');
    }
    const cs = meta.charset;
    if (typeof cs !== 'string' || !cs || new Set(cs).size !== [...cs].length) {
      throw new Error('charset must be a non-empty string without repeated characters');
    }
    if (/[\uD800-\uDFFF]/.test(cs)) {
      throw new Error('charset characters must be in Unicode\'s Basic Multilingual Plane ' +
        '(this engine indexes the charset by UTF-16 units)');
    }
    if (!DECODINGS.includes(meta.decoding)) {
      throw new Error(`decoding "${meta.decoding}" is not supported (this engine reads ${DECODINGS.join(', ')})`);
    }
    if (!whole(meta.input_height) || !whole(meta.input_width) || Math.min(meta.input_height, meta.input_width) < 8) {
      throw new Error('input height and width must be whole numbers, at least 8');
    }
    if (meta.input_channels !== 1 && meta.input_channels !== 3) {
      throw new Error(`input_channels must be 1 or 3, not ${meta.input_channels}`);
    }
    const k = cs.length + (meta.decoding === 'ctc_greedy' ? 1 : 0);
    const shape = meta.output_shape;
    if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((v) => whole(v) && v >= 1) || shape[1] !== k) {
      throw new Error(`output_shape ${JSON.stringify(shape)} does not fit a ${meta.decoding} model ` +
        `with ${cs.length} characters`);
    }
    if (meta.decoding === 'fixed' && shape[0] !== meta.length) {
      throw new Error(`output_shape ${JSON.stringify(shape)} does not match length ${meta.length}`);
    }
    const p = meta.preprocessing;
    if (typeof p !== 'object' || Array.isArray(p)) {
      throw new Error('preprocessing must be an object');
    }
    if (p.alpha !== 'composite_white') {
      throw new Error(`preprocessing.alpha "${p.alpha}" is not supported`);
    }
    if (p.color !== (meta.input_channels === 1 ? 'grayscale' : 'rgb')) {
      throw new Error(`preprocessing.color "${p.color}" does not fit ${meta.input_channels} input channel(s)`);
    }
    if (p.color === 'grayscale' && !(Array.isArray(p.gray_weights) && p.gray_weights.length === 3 &&
        p.gray_weights.every(finite))) {
      throw new Error('preprocessing.gray_weights must be three numbers');
    }
    if (!finite(p.scale) || !finite(p.offset)) {
      throw new Error('preprocessing.scale and preprocessing.offset must be numbers');
    }
    const resize = p.resize;
    if (!resize || typeof resize !== 'object' || resize.method !== 'bilinear' || resize.half_pixel_centers !== true ||
        resize.align_corners !== false) {
      throw new Error('only bilinear resizing with half-pixel centres (align_corners false) is supported');
    }
    const rule = resize.width;
    if (rule !== undefined && rule !== null) {
      if (typeof rule !== 'object' || Array.isArray(rule) || !WIDTH_RULES.includes(rule.rule)) {
        throw new Error(`preprocessing.resize.width must be an object whose rule is one of ${WIDTH_RULES.join(', ')}`);
      }
      const m = rule.multiple;
      if (!(whole(m) && whole(rule.min) && whole(rule.max) && m >= 2 && m % 2 === 0 && rule.min >= 8 &&
            rule.min <= rule.max && rule.max <= MAX_INPUT_WIDTH && rule.min % m === 0 && rule.max % m === 0)) {
        throw new Error('preprocessing.resize.width needs an even whole multiple and whole min and max that ' +
          `are multiples of it, 8 <= min <= max <= ${MAX_INPUT_WIDTH}`);
      }
      const sc = rule.scales;
      if (sc !== undefined && sc !== null && !(Array.isArray(sc) && sc.length >= 1 && sc.length <= MAX_SCALES &&
          sc.every((v) => whole(v) && v >= SCALE_RANGE[0] && v <= SCALE_RANGE[1]) && sc.includes(100) &&
          new Set(sc).size === sc.length)) {
        throw new Error(`preprocessing.resize.width.scales must be a list of at most ${MAX_SCALES} different whole ` +
          `percents from ${SCALE_RANGE[0]} to ${SCALE_RANGE[1]}, one of them 100`);
      }
      if (rule.combine !== undefined && !COMBINES.includes(rule.combine)) {
        throw new Error(`preprocessing.resize.width.combine must be one of ${COMBINES.join(', ')}`);
      }
      if (meta.decoding !== 'ctc_greedy') {
        throw new Error('a width that follows the image (preprocessing.resize.width) needs CTC decoding');
      }
      if (meta.input_width % shape[0] !== 0 || m % (meta.input_width / shape[0]) !== 0) {
        throw new Error('with preprocessing.resize.width, input_width must be a whole number of output steps ' +
          'and the width multiple a whole number of step widths');
      }
    }
    if (meta.calibration !== undefined && meta.calibration !== null) {
      const t = (typeof meta.calibration === 'object' && !Array.isArray(meta.calibration))
        ? meta.calibration.temperature : undefined;
      const [lo, hi] = TEMPERATURE_RANGE;
      if (typeof t !== 'number' || !(t >= lo && t <= hi)) {
        throw new Error(`calibration must be an object whose temperature is a number from ${lo} to ${hi}, ` +
          `not ${JSON.stringify(t === undefined ? null : t)}`);
      }
    }
    if (meta.format !== FORMAT) {
      throw new Error(`format is ${JSON.stringify(meta.format)}, this engine reads "${FORMAT}"`);
    }
  }

  /**
   * Why an image of this size is not read, or '' when it may be: the limits come from
   * shared/image_limits.json (captchalens/contract.py image_size_problem: the same words).
   * @param {{max_side: number, max_pixels: number}} limits  the parsed image_limits.json
   * @param {number} width
   * @param {number} height
   * @returns {string}
   */
  function imageSizeProblem(limits, width, height) {
    if (!limits || !whole(limits.max_side) || !whole(limits.max_pixels)) {
      throw new Error('imageSizeProblem needs the image limits (shared/image_limits.json)');
    }
    if (!whole(width) || !whole(height) || width < 1 || height < 1) {
      return `image size must be positive whole numbers, not ${width}x${height}`;
    }
    if (width > limits.max_side || height > limits.max_side || width * height > limits.max_pixels) {
      return `image is ${width}x${height} pixels; a captcha must be at most ` +
        `${limits.max_side}x${limits.max_side} and ${limits.max_pixels} pixels`;
    }
    return '';
  }

  /**
   * The model's confidence temperature (captchalens/contract.py ModelMeta.temperature).
   * @param {Object} meta  the model's metadata
   * @returns {number} 1 for a model without calibration
   */
  function temperature(meta) {
    return meta.calibration ? Number(meta.calibration.temperature) : 1;
  }

  /**
   * A tf.io.IOHandler that reads model.json and its weight shards through a loader.
   * @param {Object} tf  the TF.js namespace
   * @param {Object} loader  {json(rel), binary(rel)}
   * @returns {{load: function(): Promise<Object>}}
   */
  function ioHandler(tf, loader) {
    return {
      load: async () => {
        const modelJson = await loader.json(MODEL_FILE);
        if (!modelJson || !modelJson.modelTopology || !Array.isArray(modelJson.weightsManifest)) {
          throw new Error(`${MODEL_FILE} is not a TF.js layers model (no modelTopology/weightsManifest)`);
        }
        return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
          const specs = [];
          const paths = [];
          for (const group of manifest) {
            specs.push(...group.weights);
            paths.push(...group.paths);
          }
          const buffers = await Promise.all(paths.map((rel) => loader.binary(rel)));
          const total = buffers.reduce((n, b) => n + b.byteLength, 0);
          const data = new Uint8Array(total);
          let at = 0;
          for (const b of buffers) {
            data.set(new Uint8Array(b), at);
            at += b.byteLength;
          }
          return [specs, data.buffer];
        });
      },
    };
  }

  /**
   * The width an image is read at: meta.input_width, or with a width rule
   * (preprocessing.resize.width, "geometric_mean") the geometric mean of input_width and the
   * image's own width at input_height rows, rounded half up to a multiple, within [min, max].
   * Whole-number exact, like captchalens/contract.py ModelMeta.input_width_for: k rounds
   * sqrt(X) / m, X = input_width * input_height * width / height, and is the largest k with
   * (2mk - m)^2 * height <= 4 * input_width * input_height * width (all well below 2^53).
   * @param {Object} meta  the model's metadata
   * @param {number} width  the image's width in pixels
   * @param {number} height  the image's height in pixels
   * @returns {number}
   */
  function inputWidth(meta, width, height, percent = 100) {
    if (!followsWidth(meta)) {
      return meta.input_width;
    }
    if (percent !== 100) { // one of the rule's scales (contract.py ModelMeta.scaled_width)
      const r = meta.preprocessing.resize.width;
      const base = inputWidth(meta, width, height);
      return Math.min(r.max, Math.max(r.min, r.multiple * Math.floor(((base / r.multiple) * percent + 50) / 100)));
    }
    const rule = meta.preprocessing.resize.width;
    const m = rule.multiple;
    const ref = meta.input_width;
    const rows = meta.input_height;
    const bound = 4 * ref * rows * width;
    let k = Math.floor(Math.sqrt(ref * rows * width / height) / m + 0.5);
    if ((2 * m * k - m) ** 2 * height > bound) {
      k -= 1;
    } else if ((2 * m * (k + 1) - m) ** 2 * height <= bound) {
      k += 1;
    }
    return Math.min(rule.max, Math.max(rule.min, m * k));
  }

  /**
   * Does the model's width follow each image (a width rule in its metadata)?
   * @param {Object} meta
   * @returns {boolean}
   */
  function followsWidth(meta) {
    const rule = meta.preprocessing.resize.width;
    return rule !== undefined && rule !== null;
  }

  /**
   * The percents each image is read at (the rule's scales; contract.py width_scales): [100]
   * without them. Which read answers: widthCombine, answering.
   * @param {Object} meta
   * @returns {number[]}
   */
  function widthScales(meta) {
    const rule = meta.preprocessing.resize.width;
    return rule && Array.isArray(rule.scales) && rule.scales.length ? rule.scales : [100];
  }

  /**
   * How the reads at the rule's scales give one answer (contract.py COMBINES): "surest" or "vote".
   * @param {Object} meta
   * @returns {string}
   */
  function widthCombine(meta) {
    const rule = meta.preprocessing.resize.width;
    return rule && rule.combine !== undefined ? rule.combine : 'surest';
  }

  /**
   * Load a converted model: metadata, network and weights; checks that the
   * network matches its metadata and warms it once on zeros.
   * @param {Object} tf  the TF.js namespace (backend already set)
   * @param {Object} loader  {json(rel) -> Promise<Object>, binary(rel) -> Promise<ArrayBuffer>}
   * @returns {Promise<{meta: Object, model: Object}>}
   * @throws {Error} "model '<name>' failed to load: <reason>"
   */
  async function loadModel(tf, loader) {
    if (!tf || !tf.loadLayersModel) {
      throw new Error('loadModel needs the TF.js namespace as its first argument');
    }
    if (!loader || typeof loader.json !== 'function' || typeof loader.binary !== 'function') {
      throw new Error('loadModel needs a loader with json(rel) and binary(rel)');
    }
    let label = loader.name || 'model';
    let meta;
    try {
      meta = await loader.json(META_FILE);
      checkMeta(meta);
      label = meta.name;
      const model = await tf.loadLayersModel(ioHandler(tf, loader));
      const H = meta.input_height;
      const W = meta.input_width;
      const C = meta.input_channels;
      if (model.inputs.length !== 1 || model.outputs.length !== 1) {
        throw new Error(`the network has ${model.inputs.length} inputs and ${model.outputs.length} ` +
          'outputs; CaptchaLens models have one of each');
      }
      // A width rule: the network takes any width and gives as many steps as it is given.
      const free = followsWidth(meta);
      const inShape = model.inputs[0].shape;
      const wantIn = [H, free ? null : W, C];
      if (JSON.stringify(inShape.slice(1)) !== JSON.stringify(wantIn)) {
        throw new Error(`network input ${JSON.stringify(inShape)} does not match its metadata ` +
          `${JSON.stringify([null, ...wantIn])}`);
      }
      const outShape = model.outputs[0].shape;
      const wantOut = free ? [null, meta.output_shape[1]] : meta.output_shape;
      if (JSON.stringify(outShape.slice(1)) !== JSON.stringify(wantOut)) {
        throw new Error(`network output ${JSON.stringify(outShape)} does not match its metadata ` +
          `${JSON.stringify(meta.output_shape)}${free ? ' (steps following the width)' : ''}`);
      }
      tf.tidy(() => {
        model.predict(tf.zeros([1, H, W, C])).dataSync(); // warm-up: compile kernels once
      });
      return { meta, model };
    } catch (e) {
      throw new Error(`model '${label}' failed to load: ${reason(e)}`);
    }
  }

  /**
   * Pixels -> model input, with the contract's ops in the contract's order:
   *   x = float32(rgba); a = x[...,3:4]/255; rgb = x[...,:3]*a + 255*(1-a);
   *   gray = sum(rgb*gray_weights, -1, keepdims); y = gray*scale + offset;
   *   y = resize_bilinear(y, [H, W], align_corners=false, half_pixel_centers=true)
   * W = inputWidth(meta, width, height): input_width unless the model has a width rule.
   * @param {Object} tf  the TF.js namespace
   * @param {Object} meta  the model's metadata
   * @param {{data: (Uint8Array|Uint8ClampedArray), width: number, height: number}} rgba  RGBA pixels
   * @param {number} [percent]  read at this percent of the rule's width (one of its scales)
   * @returns {Object} tf.Tensor4D [1, H, W, C] (the caller disposes it)
   * @throws {Error} when the pixels are not width*height RGBA values
   */
  function preprocess(tf, meta, rgba, percent = 100) {
    if (!rgba || !rgba.data || typeof rgba.data.length !== 'number') {
      throw new Error('image must be {data, width, height} with RGBA pixel data');
    }
    const w = rgba.width;
    const h = rgba.height;
    if (!Number.isInteger(w) || !Number.isInteger(h) || w < 1 || h < 1) {
      throw new Error(`image size must be positive whole numbers, not ${w}x${h}`);
    }
    if (rgba.data.length !== w * h * 4) {
      throw new Error(`image data must be RGBA: a ${w}x${h} image needs ${w * h * 4} values, ` +
        `got ${rgba.data.length}`);
    }
    const p = meta.preprocessing;
    return tf.tidy(() => {
      const x = tf.tensor3d(Float32Array.from(rgba.data), [h, w, 4], 'float32');
      const a = x.slice([0, 0, 3], [h, w, 1]).div(255);
      const rgb = x.slice([0, 0, 0], [h, w, 3]).mul(a).add(tf.scalar(1).sub(a).mul(255));
      let y = meta.input_channels === 1
        ? rgb.mul(tf.tensor1d(p.gray_weights, 'float32')).sum(-1, true)
        : rgb;
      y = y.mul(p.scale).add(p.offset);
      y = tf.image.resizeBilinear(y, [meta.input_height, inputWidth(meta, w, h, percent)], false, true);
      return y.expandDims(0);
    });
  }

  // A site's alphabet (captchalens/alphabet.py, line for line): the families sites draw from.
  const FAMILIES = ['0123456789', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'];
  // Corrections a site needs before its captchas are read with their families only
  // (captchalens/alphabet.py MIN_LABELS), and the most characters of a site's alphabet kept and
  // sent to the host (MAX_ALPHABET).
  const MIN_SITE_LABELS = 3;
  const MAX_ALPHABET = 256;

  /**
   * The characters `seen` plus every character of each family they use, in charset's order
   * (other seen characters after, sorted): alphabet.widen.
   * @param {string} seen
   * @param {string} charset
   * @returns {string}
   */
  function widenAlphabet(seen, charset) {
    const keep = new Set(seen);
    for (const fam of FAMILIES) {
      if ([...fam].some((c) => keep.has(c))) {
        for (const c of fam) {
          keep.add(c);
        }
      }
    }
    const ordered = [...charset].filter((c) => keep.has(c));
    const inCharset = new Set(ordered);
    const rest = [...keep].filter((c) => !inCharset.has(c)).sort();
    return ordered.concat(rest).join('');
  }

  /**
   * The characters of `charset` to read a site with whose captchas showed `alphabet`
   * (alphabet.read_with): all of charset when alphabet holds none of them.
   * @param {string} charset
   * @param {string} alphabet
   * @returns {string}
   */
  function readWith(charset, alphabet) {
    const cs = new Set(charset);
    return [...widenAlphabet(alphabet || '', charset)].filter((c) => cs.has(c)).join('') || charset;
  }

  /**
   * readWith after `labels` corrections showing `seen` (alphabet.site_charset).
   * @param {string} charset
   * @param {string} seen
   * @param {number} labels
   * @returns {string}
   */
  function siteCharset(charset, seen, labels) {
    return labels < MIN_SITE_LABELS ? charset : readWith(charset, seen);
  }

  /**
   * Does a reader of `charset` read every character of the families `alphabet` shows
   * (alphabet.covers)? The automatic reader skips its first model for a site when not.
   * @param {string} charset
   * @param {string} alphabet
   * @returns {boolean}
   */
  function coversAlphabet(charset, alphabet) {
    const cs = new Set(charset);
    return [...widenAlphabet(alphabet || '', charset)].every((c) => cs.has(c));
  }

  /**
   * For people: the families an alphabet holds, e.g. "digits and lower-case letters".
   * @param {string} alphabet
   * @returns {string}
   */
  function familiesText(alphabet) {
    const names = ['digits', 'capitals', 'lower-case letters']
      .filter((name, i) => [...FAMILIES[i]].some((c) => alphabet.includes(c)));
    const other = [...new Set(alphabet)].filter((c) => !FAMILIES.some((fam) => fam.includes(c))).join('');
    if (other) {
      names.push(other);
    }
    return names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}` : names.join('');
  }

  /**
   * Model output of one captcha -> text and confidence.
   *   fixed:      argmax per position.
   *   ctc_greedy: argmax per step, collapse repeats, drop the blank (index len(charset)).
   * Confidence = product over all positions/steps of the top probability after
   * temperature scaling, softmax(log(p) / T): with r = p / max(p), top = 1 / sum(r ** (1 / T));
   * T = meta.calibration.temperature, the raw maxima when absent (captchalens/decode.py).
   * @param {Object} meta  the model's metadata
   * @param {Float32Array|number[]} probs  P*K probabilities, row-major
   * @param {number} P  positions (fixed) or time steps (CTC)
   * @param {number} K  classes per position
   * @param {?string} [allowed]  only these characters of the charset are read, the others at
   *   probability 0, the blank kept (decode.restrict: a site's alphabet, readWith)
   * @returns {{text: string, confidence: number}}
   */
  function decode(meta, probs, P, K, allowed) {
    if (!probs || probs.length !== P * K) {
      throw new Error(`decode expected ${P}x${K} probabilities, got ${probs ? probs.length : 0}`);
    }
    const blank = meta.decoding === 'ctc_greedy' ? meta.charset.length : -1;
    const T = temperature(meta);
    const chars = [];
    let confidence = 1;
    let prev = -1;
    let p = probs;
    if (allowed !== undefined && allowed !== null && [...meta.charset].some((c) => !allowed.includes(c))) {
      p = Float32Array.from(probs);
      for (let k = 0; k < meta.charset.length; k++) {
        if (!allowed.includes(meta.charset[k])) {
          for (let t = 0; t < P; t++) {
            p[t * K + k] = 0;
          }
        }
      }
    }
    for (let t = 0; t < P; t++) {
      let best = 0;
      let bestP = p[t * K];
      for (let k = 1; k < K; k++) {
        if (p[t * K + k] > bestP) { // strict: ties keep the first index, like numpy argmax
          best = k;
          bestP = p[t * K + k];
        }
      }
      if (T === 1) {
        confidence *= bestP; // the raw maxima, as models without calibration always had
      } else {
        const top = Math.max(bestP, TINY);
        let sum = 0;
        for (let k = 0; k < K; k++) {
          sum += Math.pow(p[t * K + k] / top, 1 / T);
        }
        confidence *= 1 / sum;
      }
      if (meta.decoding === 'fixed') {
        chars.push(meta.charset[best]);
      } else {
        if (best !== prev && best !== blank) {
          chars.push(meta.charset[best]);
        }
        prev = best;
      }
    }
    return { text: chars.join(''), confidence };
  }

  /**
   * Solve one captcha.
   * @param {Object} tf  the TF.js namespace
   * @param {{meta: Object, model: Object}} loaded  from loadModel
   * @param {{data: (Uint8Array|Uint8ClampedArray), width: number, height: number}} rgba
   * @param {?string} [alphabet]  the characters a site's corrections showed (readWith)
   * @returns {Promise<{text: string, confidence: number, ms: number, probs: Float32Array}>}
   */
  async function solve(tf, loaded, rgba, alphabet) {
    const t0 = now();
    const allowed = alphabet ? readWith(loaded.meta.charset, alphabet) : null;
    const scales = widthScales(loaded.meta);
    const combine = widthCombine(loaded.meta);
    const answers = [];
    const byWidth = new Map(); // a scale whose width an earlier scale already gave reads the same
    let probs100 = null;
    for (const percent of scales) { // the rule's scales, in order, until the answer is known
      const w = followsWidth(loaded.meta) ? inputWidth(loaded.meta, rgba.width, rgba.height, percent) : 0;
      let answer = byWidth.get(w);
      if (answer === undefined) {
        const y = tf.tidy(() => loaded.model.predict(preprocess(tf, loaded.meta, rgba, percent)));
        const [, P, K] = y.shape; // steps: the metadata's, or as many as the image's width gives
        let probs;
        try {
          probs = await y.data();
        } finally {
          y.dispose();
        }
        answer = decode(loaded.meta, probs, P, K, allowed);
        answer.probs = probs;
        byWidth.set(w, answer);
      }
      if (percent === 100) {
        probs100 = answer.probs;
      }
      answers.push(answer);
      if (settled(answers, scales.length, combine)) {
        break;
      }
    }
    const best = answers[answering(answers, combine)];
    return { text: best.text, confidence: best.confidence, ms: now() - t0, probs: probs100 };
  }

  /**
   * Of one image's reads so far (its first answers.length of `total`, {text, confidence} each),
   * is its answer known? contract.py COMBINES; captchalens/decode.py settled() is the same.
   * @param {Array<{text: string, confidence: number}>} answers
   * @param {number} total
   * @param {string} combine  "surest" (every read) or "vote"
   * @returns {boolean}
   */
  function settled(answers, total, combine) {
    const left = total - answers.length;
    if (left <= 0) {
      return true;
    }
    if (combine !== 'vote') {
      return false;
    }
    const counts = Array.from(votes(answers).values(), (v) => v.count).sort((x, y) => y - x);
    return counts[0] > (counts.length > 1 ? counts[1] : 0) + left;
  }

  /**
   * The index of the read that answers (captchalens/decode.py answering()): "surest": the
   * highest confidence, the earliest on a tie; "vote": the surest read of the text most reads
   * gave (a tie of votes: the text whose surest read is surer, then the text that came first).
   * @param {Array<{text: string, confidence: number}>} answers
   * @param {string} combine
   * @returns {number}
   */
  function answering(answers, combine) {
    if (combine !== 'vote') {
      let best = 0;
      answers.forEach((a, i) => {
        if (a.confidence > answers[best].confidence) {
          best = i;
        }
      });
      return best;
    }
    let top = null;
    for (const v of votes(answers).values()) {
      if (top === null || v.count > top.count || (v.count === top.count && v.confidence > top.confidence)) {
        top = v;
      }
    }
    return top.index;
  }

  /**
   * text -> {count, confidence, index} (its reads, its surest read's confidence and index), in
   * the order the texts first came.
   * @param {Array<{text: string, confidence: number}>} answers
   * @returns {Map<string, {count: number, confidence: number, index: number}>}
   */
  function votes(answers) {
    const out = new Map();
    answers.forEach((a, i) => {
      const v = out.get(a.text);
      if (v === undefined) {
        out.set(a.text, { count: 1, confidence: a.confidence, index: i });
      } else {
        v.count += 1;
        if (a.confidence > v.confidence) {
          v.confidence = a.confidence;
          v.index = i;
        }
      }
    });
    return out;
  }

  /**
   * Solve many captchas (any sizes), BATCH at a time through the network.
   * @param {Object} tf  the TF.js namespace
   * @param {{meta: Object, model: Object}} loaded  from loadModel
   * @param {Array<{data: (Uint8Array|Uint8ClampedArray), width: number, height: number}>} rgbaList
   * @param {?string} [alphabet]  the characters a site's corrections showed (readWith)
   * @returns {Promise<Array<{text: string, confidence: number, probs: Float32Array}>>} probs: the
   *   read at the rule's own width (scale 100), whichever scale's read answered
   */
  async function solveBatch(tf, loaded, rgbaList, alphabet) {
    const out = new Array(rgbaList.length);
    const reads = new Array(rgbaList.length); // each image's answers, one per scale in order
    const allowed = alphabet ? readWith(loaded.meta.charset, alphabet) : null;
    for (let s = 0; s < rgbaList.length; s += BATCH) {
      for (const percent of widthScales(loaded.meta)) {
        // One predict per input width: the metadata's one, or each width a width rule gives.
        const groups = new Map();
        rgbaList.slice(s, s + BATCH).forEach((im, j) => {
          const w = im && Number.isInteger(im.width) && Number.isInteger(im.height) && im.height > 0
            ? inputWidth(loaded.meta, im.width, im.height, percent) : loaded.meta.input_width;
          if (!groups.has(w)) {
            groups.set(w, []);
          }
          groups.get(w).push(s + j);
        });
        for (const idx of groups.values()) {
          const y = tf.tidy(() => {
            const xs = idx.map((i) => {
              try {
                return preprocess(tf, loaded.meta, rgbaList[i], percent);
              } catch (e) {
                throw new Error(`image ${i}: ${reason(e)}`);
              }
            });
            return loaded.model.predict(xs.length === 1 ? xs[0] : tf.concat(xs, 0));
          });
          const [, P, K] = y.shape;
          let all;
          try {
            all = await y.data();
          } finally {
            y.dispose();
          }
          idx.forEach((i, j) => {
            const probs = all.slice(j * P * K, (j + 1) * P * K);
            if (!reads[i]) {
              reads[i] = { answers: [], probs: null };
            }
            reads[i].answers.push(decode(loaded.meta, probs, P, K, allowed));
            if (percent === 100) {
              reads[i].probs = probs;
            }
          });
        }
      }
    }
    // Every scale was read; the answer is the one solve() gives, reading until it is known.
    const scales = widthScales(loaded.meta);
    const combine = widthCombine(loaded.meta);
    reads.forEach((r, i) => {
      let n = 1;
      while (!settled(r.answers.slice(0, n), scales.length, combine)) {
        n += 1;
      }
      const best = r.answers[answering(r.answers.slice(0, n), combine)];
      out[i] = { text: best.text, confidence: best.confidence, probs: r.probs };
    });
    return out;
  }

  /**
   * The "auto" reader's rule (captchalens/auto.py, copied into models/index.json as `auto`):
   * does the first model's answer stand, or does the other model answer?
   * @param {{first: string, then: string, sure: number}} rule
   * @param {number} confidence  the first model's confidence
   * @returns {boolean}
   */
  function autoFirstStands(rule, confidence) {
    return confidence >= rule.sure;
  }

  return {
    META_FILE, MODEL_FILE, DECODINGS, TEMPERATURE_RANGE, urlLoader, loadModel, preprocess, decode, solve, solveBatch, checkMeta,
    imageSizeProblem, temperature, autoFirstStands, inputWidth, MIN_SITE_LABELS, MAX_ALPHABET, widenAlphabet, readWith,
    siteCharset, coversAlphabet, familiesText, widthScales, widthCombine, settled, answering,
  };
});
