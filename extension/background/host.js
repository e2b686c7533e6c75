/**
 * Client of the CaptchaLens local host (native_host/, HTTP on 127.0.0.1).
 * Only the background talks to the host; every request has a timeout, and a
 * host that is not running gives one clear message. Solves and samples go through
 * native messaging first when the user turned it on (native.js), then HTTP.
 */
/* global loadSettings, isLoopbackUrl, STATE_KEYS, HOST_DOWN_HINT, nativeEnabled, nativeCall, bytesToBase64 */
/* exported HostError, hostHealth, hostModels, hostSolve, hostSample, hostPairStart, hostPairConfirm, hostPaired,
            hostSetToken, HOST_TIMEOUT_MS */

/** How long a request to the local host may take before it counts as not running. */
const HOST_TIMEOUT_MS = 3000;
/** Host API version this client speaks (GET /health -> api). */
const HOST_API = 1;
/** Header carrying the token from POST /pair. */
const TOKEN_HEADER = 'X-CaptchaLens-Token';

/** A local host failure; `down` when it could not be reached at all. */
class HostError extends Error {
  /**
   * @param {string} message  shown to the user as is
   * @param {{down?: boolean, status?: number, unpaired?: boolean}} [info]
   */
  constructor(message, info = {}) {
    super(message);
    this.name = 'HostError';
    this.down = Boolean(info.down);
    this.status = info.status || 0;
    this.unpaired = Boolean(info.unpaired);
  }
}

/** What a token looks like (`captchalens token`). */
const TOKEN_RE = /^[A-Za-z0-9_-]{16,256}$/;

/**
 * The token paired with (or pasted for) this host address, or ''. A token is bound to the
 * address it came from and is never sent anywhere else.
 * @param {string} hostUrl
 * @returns {Promise<string>}
 */
async function readToken(hostUrl) {
  const tokens = (await chrome.storage.local.get(STATE_KEYS.TOKENS))[STATE_KEYS.TOKENS] || {};
  return Object.prototype.hasOwnProperty.call(tokens, hostUrl) && typeof tokens[hostUrl] === 'string'
    ? tokens[hostUrl] : '';
}

/**
 * Keep a token for one host address (and for that address only).
 * @param {string} hostUrl
 * @param {string} token
 * @returns {Promise<void>}
 */
async function storeToken(hostUrl, token) {
  const tokens = (await chrome.storage.local.get(STATE_KEYS.TOKENS))[STATE_KEYS.TOKENS] || {};
  await chrome.storage.local.set({ [STATE_KEYS.TOKENS]: { ...tokens, [hostUrl]: token } });
}

/**
 * Is the current host address paired (a token kept for it)?
 * @returns {Promise<boolean>}
 */
async function hostPaired() {
  const { hostUrl } = await loadSettings();
  return Boolean(await readToken(hostUrl));
}

/**
 * Keep a token pasted from `captchalens token` (hosts started with --no-pairing), for the current address.
 * @param {*} token
 * @returns {Promise<{saved: boolean, hostUrl: string}>}
 */
async function hostSetToken(token) {
  const value = typeof token === 'string' ? token.trim() : '';
  if (!TOKEN_RE.test(value)) {
    throw new HostError('A token is the line `captchalens token` prints (letters, digits, - and _).');
  }
  const { hostUrl } = await loadSettings();
  await storeToken(hostUrl, value);
  return { saved: true, hostUrl };
}

/**
 * One request to the local host.
 * @param {string} path  e.g. '/health'
 * @param {{method?: string, body?: (string|Blob), type?: string, token?: boolean, pairing?: boolean,
 *          timeoutMs?: number}} [opts]  pairing: a refusal is about the code, not a reason to pair again
 * @returns {Promise<Object>} the JSON answer
 * @throws {HostError}
 */
async function hostRequest(path, opts = {}) {
  const { hostUrl } = await loadSettings();
  const timeoutMs = opts.timeoutMs || HOST_TIMEOUT_MS;
  const headers = {};
  if (opts.type) {
    headers['Content-Type'] = opts.type;
  }
  if (opts.token) {
    const token = await readToken(hostUrl);
    if (!token) {
      throw new HostError(`CaptchaLens is not paired with the local host at ${hostUrl}: open the CaptchaLens ` +
        'options and click "Pair with local host"', { unpaired: true });
    }
    headers[TOKEN_HEADER] = token;
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    let resp;
    try {
      resp = await fetch(hostUrl + path, {
        method: opts.method || 'GET', headers, body: opts.body, signal: controller.signal,
        credentials: 'omit', cache: 'no-store',
        // Whatever listens on the host's address may redirect elsewhere: never follow it, so the
        // pixels and the token go to this address only.
        redirect: 'manual',
      });
    } catch (e) {
      throw unreachable(hostUrl, controller.signal.aborted, timeoutMs);
    }
    if (resp.type === 'opaqueredirect' || (resp.status >= 300 && resp.status < 400)) {
      throw new HostError(`The local host at ${hostUrl} answered with a redirect to another address: ` +
        'CaptchaLens does not follow it. Is CaptchaLens running there?', { status: resp.status });
    }
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      if (controller.signal.aborted) {
        throw unreachable(hostUrl, true, timeoutMs);
      }
    }
    if (!resp.ok) {
      const why = (data && data.error) || `HTTP ${resp.status}`;
      const hint = (resp.status === 401 || resp.status === 403) && !opts.pairing
        ? ' (pair again: CaptchaLens options, "Pair with local host")' : '';
      throw new HostError(`The local host refused: ${why}${hint}`, { status: resp.status, unpaired: !!hint });
    }
    if (!data || typeof data !== 'object') {
      throw new HostError(`The local host at ${hostUrl} did not answer with JSON: is it CaptchaLens?`);
    }
    return data;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The error for a host that could not be reached (refused or timed out).
 * @param {string} hostUrl
 * @param {boolean} timedOut
 * @param {number} timeoutMs
 * @returns {HostError}
 */
function unreachable(hostUrl, timedOut, timeoutMs) {
  const message = timedOut
    ? `The local host did not answer at ${hostUrl} within ${timeoutMs / 1000} s: it is not running (${HOST_DOWN_HINT}).`
    : `The local host is not running at ${hostUrl} (${HOST_DOWN_HINT}).`;
  return new HostError(message, { down: true });
}

/**
 * GET /health, checking the API version; says whether the address is on this computer.
 * @returns {Promise<{ok: boolean, version: string, api: number, models: string[], hostUrl: string,
 *   loopback: boolean}>}
 */
async function hostHealth() {
  const { hostUrl } = await loadSettings();
  const health = await hostRequest('/health');
  if (health.api !== HOST_API) {
    throw new HostError(`The local host speaks API ${health.api}; this extension speaks ${HOST_API}: ` +
      'update the older one');
  }
  return { ...health, hostUrl, loopback: isLoopbackUrl(hostUrl) };
}

/**
 * GET /models.
 * @returns {Promise<{default: string, models: Object[]}>}
 */
function hostModels() {
  return hostRequest('/models');
}

/**
 * POST /solve with a PNG body.
 * @param {Blob} png
 * @param {string} [model]  model name on the host ('' = its default)
 * @param {string} [alphabet]  the site's characters (solve.js solvePixels): read with their families only
 * @returns {Promise<{text: string, confidence: number, model: string, ms: number}>}
 */
async function hostSolve(png, model, alphabet = '') {
  const params = new URLSearchParams();
  if (model) {
    params.set('model', model);
  }
  if (alphabet) {
    params.set('alphabet', alphabet); // the site's characters: read with their families only
  }
  const query = params.toString() ? `?${params}` : '';
  return preferNative('solve', async () => ({ image: bytesToBase64(new Uint8Array(await png.arrayBuffer())),
    model: model || null, alphabet: alphabet || null }),
  () => hostRequest(`/solve${query}`, { method: 'POST', body: png, type: 'image/png' }));
}

/**
 * Native messaging when it is on, else (or when its host cannot be reached) HTTP. An answer
 * of the native host, even a refusal, is final: HTTP runs the same operation (service.py).
 * @param {string} type  the native request type
 * @param {function(): Promise<Object>} nativeData  its data
 * @param {function(): Promise<Object>} http  the same request over HTTP
 * @returns {Promise<Object>}
 * @throws {HostError}
 */
async function preferNative(type, nativeData, http) {
  if (!(await nativeEnabled())) {
    return http();
  }
  let nativeError;
  try {
    return await nativeCall(type, await nativeData());
  } catch (e) {
    if (!e.down) {
      throw new HostError(e.message, { status: e.status });
    }
    nativeError = e;
  }
  try {
    return await http();
  } catch (e) {
    throw new HostError(`${nativeError.message} Over HTTP: ${e.message}`,
      { down: e.down, status: e.status, unpaired: e.unpaired });
  }
}

/**
 * POST /samples: one labelled captcha for retraining.
 * @param {{image: string, text: string, site?: string, model?: string}} sample  image = PNG data URL
 * @returns {Promise<{saved: string, count: number}>}  (native messaging needs no pairing)
 */
function hostSample(sample) {
  return preferNative('samples', async () => sample, () => hostRequest('/samples', {
    method: 'POST', body: JSON.stringify(sample), type: 'application/json', token: true,
  }));
}

/** How a pairing code looks: 6 digits, spaces or dashes allowed (the host prints "482 913"). */
const PAIR_CODE_RE = /^\d{6}$/;
/** chrome.storage.session key: the pairing asked for and not yet confirmed ({hostUrl, expires}). */
const PAIRING_KEY = 'pairing';

/**
 * Pairing, step 1: POST /pair {} makes the local host print a one-time code on its terminal.
 * @returns {Promise<{pending: boolean, expiresIn: number, hostUrl: string}>}
 */
async function hostPairStart() {
  const { hostUrl } = await loadSettings();
  const answer = await hostRequest('/pair', { method: 'POST', body: '{}', type: 'application/json', pairing: true });
  if (answer.token || answer.pending !== true) {
    throw new HostError('The local host did not ask for a pairing code: update it (`git pull`, then restart ' +
      '`make run`), then pair again.');
  }
  const expiresIn = Number(answer.expires_in) || 300;
  await chrome.storage.session.set({ [PAIRING_KEY]: { hostUrl, expires: Date.now() + expiresIn * 1000 } });
  return { pending: true, expiresIn, hostUrl };
}

/**
 * Pairing, step 2: POST /pair {"code"} with the code the user read on the host's terminal; keeps the token.
 * @param {*} typed  what the user typed
 * @returns {Promise<{paired: boolean, hostUrl: string}>}
 * @throws {HostError} a wrong, expired or mistyped code, or the address changed since step 1
 */
async function hostPairConfirm(typed) {
  const code = typeof typed === 'string' ? typed.replace(/[\s-]/g, '') : '';
  if (!PAIR_CODE_RE.test(code)) {
    throw new HostError('Type the 6 digits the local host printed (like 482 913).');
  }
  const { hostUrl } = await loadSettings();
  const pending = (await chrome.storage.session.get(PAIRING_KEY))[PAIRING_KEY];
  if (!pending || pending.hostUrl !== hostUrl) {
    throw new HostError('Click "Pair with local host" first (the address changed, or no code was asked for).');
  }
  const answer = await hostRequest('/pair', {
    method: 'POST', body: JSON.stringify({ code }), type: 'application/json', pairing: true,
  });
  if (!answer.token || typeof answer.token !== 'string') {
    throw new HostError('The local host answered the pairing code without a token');
  }
  await storeToken(hostUrl, answer.token);
  await chrome.storage.session.remove(PAIRING_KEY);
  return { paired: true, hostUrl };
}
