/**
 * Client of the CaptchaLens native messaging host (native_host/native.py): the browser starts
 * the host itself, so there is no port to open, no `make run` and no token. It is used only
 * once the user granted the optional "nativeMessaging" permission (options page), and then
 * preferred over HTTP by host.js; any failure to reach it falls back to HTTP.
 *
 * One port per worker life (connectNative), opened on first use and closed after
 * NATIVE_IDLE_MS without requests, so the host (TensorFlow in memory) does not stay for the
 * whole browser session. Every request carries the API version, an id and a timeout; a
 * `ping` tells "installed and answering" apart from "still loading its models".
 */
/* exported NativeError, nativeEnabled, nativeCall, nativeStatus, nativeDisconnect, NATIVE_HOST */

/** The host's name: its manifest, written by `captchalens native install`. */
const NATIVE_HOST = 'io.captchalens.host';
/** Protocol version this client speaks (every frame carries it). */
const NATIVE_API = 1;
/** A ping must be answered this fast (the host answers it before loading TensorFlow). */
const NATIVE_PING_MS = 5000;
/** Other requests: the first one waits for TensorFlow and the model to load. */
const NATIVE_REQUEST_MS = 60000;
/** The port is closed (and the host exits) after this long without requests. */
const NATIVE_IDLE_MS = 10 * 60 * 1000;
/** What to do when the host is not there, shown with the browser's reason. */
const NATIVE_INSTALL_HINT = 'run `captchalens native install`, then restart the browser';

/** A native host failure; `down` when the host could not be reached at all (HTTP is tried next). */
class NativeError extends Error {
  /**
   * @param {string} message  shown to the user as is
   * @param {{down?: boolean, status?: number}} [info]
   */
  constructor(message, info = {}) {
    super(message);
    this.name = 'NativeError';
    this.down = Boolean(info.down);
    this.status = info.status || 0;
  }
}

/** The open port of this worker life, or null; requests waiting for an answer, by id. */
let nativePort = null;
let nativePending = new Map();
let nativeNextId = 1;
let nativeIdleTimer = 0;

/**
 * Has the user turned native messaging on (the optional permission granted)?
 * @returns {Promise<boolean>}
 */
async function nativeEnabled() {
  try {
    return typeof chrome.runtime.connectNative === 'function'
      && await chrome.permissions.contains({ permissions: ['nativeMessaging'] });
  } catch (e) {
    return false;
  }
}

/**
 * The browser's reason for a closed port, in words that say what to do.
 * @param {string} reason  chrome.runtime.lastError.message
 * @returns {string}
 */
function nativeDownMessage(reason) {
  if (/not found/i.test(reason)) {
    return `The CaptchaLens native host is not installed for this browser: ${NATIVE_INSTALL_HINT}.`;
  }
  if (/forbidden/i.test(reason)) {
    return `The CaptchaLens native host does not allow this extension (${chrome.runtime.id}): ${NATIVE_INSTALL_HINT}.`;
  }
  if (/exited/i.test(reason)) {
    return 'The CaptchaLens native host stopped: `captchalens native status` checks its Python, and ' +
      '~/.captchalens/native-host.log says why.';
  }
  return `The CaptchaLens native host could not be reached (${reason || 'no reason given'}).`;
}

/**
 * Close the port (the host exits once its stdin closes); waiting requests fail as "down".
 * @param {string} [reason]
 */
function nativeDisconnect(reason = 'native messaging was turned off') {
  const port = nativePort;
  nativePort = null;
  clearTimeout(nativeIdleTimer);
  if (port) {
    port.disconnect();
  }
  failPending(new NativeError(`The native host is not used: ${reason}.`, { down: true }));
}

/**
 * Reject every waiting request.
 * @param {NativeError} error
 */
function failPending(error) {
  const pending = nativePending;
  nativePending = new Map();
  for (const { reject, timer } of pending.values()) {
    clearTimeout(timer);
    reject(error);
  }
}

/**
 * The port of this worker life, connecting on first use.
 * @returns {chrome.runtime.Port}
 */
function nativeConnect() {
  if (nativePort) {
    return nativePort;
  }
  const port = chrome.runtime.connectNative(NATIVE_HOST);
  port.onMessage.addListener((frame) => {
    const waiting = frame && nativePending.get(frame.id);
    if (!waiting) {
      console.warn('CaptchaLens: a native host answer nobody waits for', frame && frame.error);
      return;
    }
    nativePending.delete(frame.id);
    clearTimeout(waiting.timer);
    waiting.settle(frame);
  });
  port.onDisconnect.addListener(() => {
    const reason = chrome.runtime.lastError ? chrome.runtime.lastError.message : 'the host closed the connection';
    if (nativePort === port) {
      nativePort = null;
      clearTimeout(nativeIdleTimer);
    }
    failPending(new NativeError(nativeDownMessage(reason), { down: true }));
  });
  nativePort = port;
  return port;
}

/**
 * One request to the native host.
 * @param {string} type  'ping' | 'health' | 'models' | 'solve' | 'samples' | 'reload'
 * @param {Object} [data]
 * @param {number} [timeoutMs]
 * @returns {Promise<Object>} the host's result
 * @throws {NativeError} down: not reachable (or timed out); else the host's own error
 */
function nativeCall(type, data = {}, timeoutMs = type === 'ping' ? NATIVE_PING_MS : NATIVE_REQUEST_MS) {
  return new Promise((resolve, reject) => {
    let port;
    try {
      port = nativeConnect();
    } catch (e) {
      reject(new NativeError(nativeDownMessage(e.message), { down: true }));
      return;
    }
    const id = nativeNextId++;
    const timer = setTimeout(() => {
      nativePending.delete(id);
      reject(new NativeError(`The CaptchaLens native host did not answer "${type}" within ${timeoutMs / 1000} s.`,
        { down: true }));
    }, timeoutMs);
    const settle = (frame) => {
      if (frame.ok) {
        resolve(frame.result);
      } else if (frame.api !== NATIVE_API) {
        reject(new NativeError(`The native host speaks API ${frame.api}; this extension speaks ${NATIVE_API}: ` +
          'update the older one', { status: frame.status }));
      } else {
        reject(new NativeError(`The local host refused: ${frame.error}`, { status: frame.status }));
      }
    };
    nativePending.set(id, { settle, reject, timer });
    clearTimeout(nativeIdleTimer);
    nativeIdleTimer = setTimeout(() => nativeDisconnect('idle'), NATIVE_IDLE_MS);
    try {
      port.postMessage({ api: NATIVE_API, id, type, data });
    } catch (e) {
      nativePending.delete(id);
      clearTimeout(timer);
      reject(new NativeError(nativeDownMessage(e.message), { down: true }));
    }
  });
}

/**
 * For the options page: is native messaging on, and does the host answer?
 * @returns {Promise<{ok: boolean, enabled: boolean, health?: Object, error?: string}>}
 */
async function nativeStatus() {
  if (!(await nativeEnabled())) {
    return { ok: true, enabled: false };
  }
  try {
    await nativeCall('ping');
    return { ok: true, enabled: true, health: await nativeCall('health') };
  } catch (e) {
    return { ok: true, enabled: true, error: e.message };
  }
}

// Turned off in the options: close the port now (the host exits).
chrome.permissions.onRemoved.addListener((removed) => {
  if ((removed.permissions || []).includes('nativeMessaging')) {
    nativeDisconnect();
  }
});
