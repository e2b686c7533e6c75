/**
 * The extension's models: listed by models/index.json (written by the converter),
 * loaded lazily on first use and kept warm while this service worker lives.
 * A restarted worker simply loads them again.
 */
/* global tf, CaptchaLensEngine, ensureBackend */
/* exported readModelIndex, modelEntry, getModel, forgetModels, autoRule, AUTO_NAME */

/** The converter's list of models, relative to the extension root. */
const MODEL_INDEX = 'models/index.json';
/** The reader that picks between the shipped models (captchalens/auto.py); '' means it too. */
const AUTO_NAME = 'auto';

/** name -> Promise<{meta, model, entry, backend, loadMs}>, for this worker's life only. */
const loadedModels = new Map();
/** Promise of the parsed index, for this worker's life only. */
let modelIndexPromise = null;

/**
 * The model index: {default, models: [{name, dir, charset, decoding, ...}]}.
 * @returns {Promise<Object>}
 * @throws {Error} when the extension holds no converted models
 */
function readModelIndex() {
  if (!modelIndexPromise) {
    modelIndexPromise = (async () => {
      let resp;
      try {
        resp = await fetch(chrome.runtime.getURL(MODEL_INDEX));
      } catch (e) {
        throw new Error(`${MODEL_INDEX} is missing: convert a model with \`captchalens convert\``);
      }
      if (!resp.ok) {
        throw new Error(`${MODEL_INDEX} is missing: convert a model with \`captchalens convert\``);
      }
      const index = await resp.json();
      if (!index || !Array.isArray(index.models) || !index.models.length) {
        throw new Error(`${MODEL_INDEX} lists no models: convert one with \`captchalens convert\``);
      }
      return index;
    })();
    modelIndexPromise.catch(() => {
      modelIndexPromise = null;
    });
  }
  return modelIndexPromise;
}

/**
 * The index entry of a model, or null when the extension does not hold it.
 * @param {string} [name]  '' or undefined = the index's default
 * @returns {Promise<Object|null>}
 */
async function modelEntry(name) {
  const index = await readModelIndex();
  const wanted = name || index.default;
  return index.models.find((m) => m.name === wanted) || null;
}

/**
 * The "auto" reader's rule when `name` asks for it ('' or 'auto') and the index has one:
 * {first, then, sure} — ask `first`, keep its answer when CaptchaLensEngine.autoFirstStands.
 * @param {string} [name]
 * @returns {Promise<Object|null>}
 */
async function autoRule(name) {
  if (name && name !== AUTO_NAME) {
    return null;
  }
  const index = await readModelIndex();
  return index.auto && index.auto.first && index.auto.then ? index.auto : null;
}

/**
 * A loaded model, from this worker's cache or loaded now.
 * @param {string} [name]  '' or undefined = the default model
 * @returns {Promise<{meta: Object, model: Object, entry: Object, backend: string, loadMs: number}>}
 * @throws {Error} "model '<name>' failed to load: <reason>"
 */
async function getModel(name) {
  const entry = await modelEntry(name);
  if (!entry) {
    throw new Error(`model '${name}' is not in the extension (${MODEL_INDEX})`);
  }
  let pending = loadedModels.get(entry.name);
  if (!pending) {
    pending = (async () => {
      const backend = await ensureBackend();
      const t0 = performance.now();
      const loader = CaptchaLensEngine.urlLoader(chrome.runtime.getURL(entry.dir));
      const loaded = await CaptchaLensEngine.loadModel(tf, loader);
      return { ...loaded, entry, backend, loadMs: performance.now() - t0 };
    })();
    loadedModels.set(entry.name, pending);
    pending.catch(() => loadedModels.delete(entry.name)); // retry on the next solve
  }
  return pending;
}

/**
 * Drop every loaded model (after a backend switch, or to measure a cold load).
 * @returns {Promise<void>}
 */
async function forgetModels() {
  const all = [...loadedModels.values()];
  loadedModels.clear();
  for (const pending of all) {
    try {
      (await pending).model.dispose();
    } catch (e) {
      // a model that failed to load has nothing to dispose
    }
  }
}
