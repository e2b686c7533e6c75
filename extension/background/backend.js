/**
 * TF.js backend for the service worker: wasm (single-threaded), cpu as fallback.
 *
 * The backend is chosen lazily, on the first solve after the worker starts;
 * nothing about it is kept outside this worker's lifetime.
 */
/* global tf */
/* exported ensureBackend, useBackend, tfAvailable */

/** Backends in order of preference. */
const BACKENDS = ['wasm', 'cpu'];
/** Folder (inside the extension) holding tfjs-backend-wasm*.wasm. */
const WASM_FOLDER = 'vendor/';

/** Promise of the active backend's name, set on first use in this worker's life. */
let backendPromise = null;

/**
 * Is TF.js loaded at all (the vendor files exist and evaluated)?
 * @returns {boolean}
 */
function tfAvailable() {
  return typeof tf !== 'undefined' && typeof tf.setBackend === 'function';
}

/**
 * Switch to one backend now.
 * @param {string} name  'wasm' or 'cpu'
 * @returns {Promise<string>} the backend's name
 * @throws {Error} when that backend cannot start
 */
async function useBackend(name) {
  if (!tfAvailable()) {
    throw new Error('TF.js is missing from the extension (vendor/tf.es2017.min.js did not load)');
  }
  if (name === 'wasm') {
    if (!tf.wasm || typeof tf.wasm.setWasmPaths !== 'function') {
      throw new Error('the TF.js wasm backend is missing (vendor/tf-backend-wasm.es2017.min.js)');
    }
    // Extension pages and workers cannot spawn the threaded build's workers.
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
    tf.wasm.setWasmPaths(chrome.runtime.getURL(WASM_FOLDER));
  }
  let ok = false;
  let why = '';
  try {
    ok = await tf.setBackend(name);
    await tf.ready();
  } catch (e) {
    why = e && e.message ? `: ${e.message}` : '';
  }
  if (!ok || tf.getBackend() !== name) {
    throw new Error(`TF.js backend "${name}" failed to start${why}`);
  }
  backendPromise = Promise.resolve(name);
  return name;
}

/**
 * The backend for solving: wasm when it starts, else cpu. Decided once per worker life.
 * @returns {Promise<string>}
 */
function ensureBackend() {
  if (!backendPromise) {
    backendPromise = (async () => {
      const errors = [];
      for (const name of BACKENDS) {
        try {
          return await useBackend(name);
        } catch (e) {
          errors.push(e.message);
          console.warn(`CaptchaLens: ${e.message}`);
        }
      }
      throw new Error(errors.join('; '));
    })();
    backendPromise.catch(() => {
      backendPromise = null; // let the next solve try again
    });
  }
  return backendPromise;
}
