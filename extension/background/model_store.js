/**
 * The extension's models: the shipped ones listed by models/index.json (written by the
 * converter), and site models trained in the local host from the options page, kept in
 * this extension's IndexedDB through tf.io (SITE_MODEL_URL + name) and recorded in
 * chrome.storage.local (SITE_MODELS_KEY). Both are loaded lazily on first use and kept warm
 * while this service worker lives; a restarted worker (or browser) loads them again.
 */
/* global tf, CaptchaLensEngine, ensureBackend */
/* exported readModelIndex, modelEntry, getModel, forgetModels, autoRule, AUTO_NAME, readSiteModels, siteModelEntry,
            siteModelFor, installSiteModel */

/** The converter's list of models, relative to the extension root. */
const MODEL_INDEX = 'models/index.json';
/** The reader that picks between the shipped models (captchalens/auto.py); '' means it too. */
const AUTO_NAME = 'auto';

/** chrome.storage.local key: {model name: {name, site, url, meta, job, version, installed, bytes}}. */
const SITE_MODELS_KEY = 'siteModels';
/** Where a site model's network and weights are kept (tf.io's IndexedDB store), + its name. */
const SITE_MODEL_URL = 'indexeddb://captchalens-site-';
/** The contract's key in the stored model's userDefinedMetadata (kept with the weights it describes). */
const CONTRACT_KEY = 'captchalens_contract';
/** The one weights "file" a stored model presents to the engine's loader. */
const STORED_WEIGHTS = 'weights.bin';

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
  return index.models.find((m) => m.name === wanted) || (await siteModelEntry(wanted));
}

/**
 * The site models installed in this browser, by name.
 * @returns {Promise<Object<string, Object>>}
 */
async function readSiteModels() {
  const stored = (await chrome.storage.local.get(SITE_MODELS_KEY))[SITE_MODELS_KEY];
  return stored && typeof stored === 'object' ? stored : {};
}

/**
 * The record of one installed site model, or null.
 * @param {string} name
 * @returns {Promise<Object|null>}
 */
async function siteModelEntry(name) {
  const models = await readSiteModels();
  return name && Object.prototype.hasOwnProperty.call(models, name) ? models[name] : null;
}

/**
 * The name of the model trained for a site and installed here, or ''.
 * @param {string} site  a page's host name
 * @returns {Promise<string>}
 */
async function siteModelFor(site) {
  if (!site) {
    return '';
  }
  const found = Object.values(await readSiteModels()).find((m) => m.site === site);
  return found ? found.name : '';
}

/**
 * An error for a site model recorded here whose files IndexedDB no longer holds.
 * @param {Object} entry
 * @param {*} e
 * @returns {Error} code 'model_missing'
 */
function notInstalled(entry, e) {
  const err = new Error(`The model trained for ${entry.site} ('${entry.name}') is not installed in this browser ` +
    `any more (${e && e.message ? e.message.split('\n')[0] : e}): train it again from the CaptchaLens options.`);
  err.code = 'model_missing';
  return err;
}

/**
 * One ArrayBuffer from tf.io's WeightData (an ArrayBuffer, or a list of them).
 * @param {ArrayBuffer|ArrayBuffer[]} data
 * @returns {ArrayBuffer}
 */
function oneBuffer(data) {
  if (!Array.isArray(data)) {
    return data;
  }
  const out = new Uint8Array(data.reduce((n, b) => n + b.byteLength, 0));
  let at = 0;
  for (const b of data) {
    out.set(new Uint8Array(b), at);
    at += b.byteLength;
  }
  return out.buffer;
}

/**
 * The engine's loader for a site model kept in IndexedDB: its contract, network and weights
 * all come from the one stored record, so they always belong together.
 * @param {Object} entry  an installed site model's record
 * @returns {{name: string, json: function(string): Promise<Object>, binary: function(string): Promise<ArrayBuffer>}}
 */
function storedLoader(entry) {
  let artifacts = null;
  const load = async () => {
    if (!artifacts) {
      try {
        const [handler] = tf.io.getLoadHandlers(entry.url);
        artifacts = await handler.load();
      } catch (e) {
        throw notInstalled(entry, e);
      }
    }
    return artifacts;
  };
  return {
    name: entry.url,
    json: async (rel) => {
      const a = await load();
      if (rel === CaptchaLensEngine.META_FILE) {
        return (a.userDefinedMetadata || {})[CONTRACT_KEY];
      }
      return {
        modelTopology: a.modelTopology, format: a.format, generatedBy: a.generatedBy, convertedBy: a.convertedBy,
        weightsManifest: [{ paths: [STORED_WEIGHTS], weights: a.weightSpecs }],
      };
    },
    binary: async () => oneBuffer((await load()).weightData),
  };
}

/**
 * The engine's loader for files fetched into memory ({file name: Uint8Array}).
 * @param {Object<string, Uint8Array>} files
 * @returns {Object}
 */
function memoryLoader(files) {
  const file = (rel) => {
    if (!Object.prototype.hasOwnProperty.call(files, rel)) {
      throw new Error(`the model has no file ${rel}`);
    }
    return files[rel];
  };
  return {
    name: 'fetched model',
    json: async (rel) => {
      try {
        return JSON.parse(new TextDecoder().decode(file(rel)));
      } catch (e) {
        throw new Error(`${rel} is not valid JSON: ${e.message}`);
      }
    },
    binary: async (rel) => {
      const bytes = file(rel);
      return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    },
  };
}

/**
 * Install a site model from its TF.js files (fetched from the host): it must load and run here
 * first (the engine checks its contract against the network and warms it up); then its
 * network, weights and contract go into IndexedDB as one record, and then the record into
 * storage, replacing an earlier version. From then on getModel(name) loads it from IndexedDB.
 * @param {{name: string, site: string, job: string, files: Object<string, Uint8Array>, extra?: Object}} model
 * @returns {Promise<Object>} the stored record
 * @throws {Error} why it was not installed (an earlier version stays)
 */
async function installSiteModel({ name, site, job, files, extra = {} }) {
  const loader = memoryLoader(files);
  const backend = await ensureBackend();
  const t0 = performance.now();
  const loaded = await CaptchaLensEngine.loadModel(tf, loader);
  if (loaded.meta.name !== name) {
    loaded.model.dispose();
    throw new Error(`the host sent model '${loaded.meta.name}' for '${name}'`);
  }
  const url = SITE_MODEL_URL + name;
  try {
    const modelJson = await loader.json(CaptchaLensEngine.MODEL_FILE);
    const artifacts = await tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
      const specs = manifest.flatMap((group) => group.weights);
      const buffers = await Promise.all(manifest.flatMap((group) => group.paths).map((rel) => loader.binary(rel)));
      return [specs, oneBuffer(buffers)];
    });
    artifacts.userDefinedMetadata = { ...(artifacts.userDefinedMetadata || {}), [CONTRACT_KEY]: loaded.meta };
    const [handler] = tf.io.getSaveHandlers(url);
    await handler.save(artifacts);
  } catch (e) {
    loaded.model.dispose();
    throw new Error(`it could not be stored in the extension's IndexedDB: ${e.message}`);
  }
  const models = await readSiteModels();
  const old = models[name];
  const record = {
    ...extra, name, site, url, job, meta: loaded.meta, version: ((old && old.version) || 0) + 1,
    installed: new Date().toISOString(),
    bytes: Object.values(files).reduce((n, b) => n + b.byteLength, 0),
  };
  await chrome.storage.local.set({ [SITE_MODELS_KEY]: { ...models, [name]: record } });
  const previous = loadedModels.get(name);
  loadedModels.set(name, Promise.resolve({ ...loaded, entry: record, backend, loadMs: performance.now() - t0 }));
  if (previous) {
    previous.then((p) => p.model.dispose(), () => {});
  }
  return record;
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
      const loader = entry.url ? storedLoader(entry) : CaptchaLensEngine.urlLoader(chrome.runtime.getURL(entry.dir));
      let loaded;
      try {
        loaded = await CaptchaLensEngine.loadModel(tf, loader);
      } catch (e) {
        // a site model whose stored record is gone: say so, not "failed to load"
        throw entry.url && /not installed in this browser/.test(e.message) ? notInstalled(entry, 'IndexedDB has no copy') : e;
      }
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
