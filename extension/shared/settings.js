/**
 * Options: one list of keys with defaults, kept in chrome.storage.local.
 *
 * Loaded by the service worker (importScripts) and by the options page and
 * popup (<script>). Nothing here survives in memory: every reader calls
 * loadSettings(), so a restarted service worker sees the same values.
 */
/* exported SETTINGS_DEFAULTS, ENGINES, STATE_KEYS, loadSettings, checkSettings, saveSettings, sitePattern,
             isLoopbackUrl */

/** Every option and its default value (the storage key is the option's name). */
var SETTINGS_DEFAULTS = Object.freeze({
  engine: 'auto', // 'browser' (TF.js here), 'host' (local host), 'auto' (browser, host when unsure or failing)
  hostUrl: 'http://127.0.0.1:8765', // local host base URL: on this computer unless allowRemoteHost
  allowRemoteHost: false, // the user insists on a host address that is not on this computer
  autoFill: true, // type the answer into the captcha's input
  // Below this confidence: auto asks the host; auto-solve does not fill; the note says "unsure".
  // Confidence is calibrated (N% sure = right N% of the time). Measured on 12,000 fresh captchas
  // with the default model (bench/confidence.py): below 0.9 fall 1.3% of the right answers and
  // 71% of the wrong ones; the answers below it are right 68% of the time (99.1% overall).
  threshold: 0.9,
  model: '', // model for sites without their own ('' = the default in models/index.json)
  rememberSites: true, // remember each site's image and input after a successful solve
  autoSolve: false, // opt-in: solve remembered sites' captchas when their pages load
});

/** Engines the user can choose. */
var ENGINES = Object.freeze(['browser', 'host', 'auto']);

/** Storage keys that are state, not options. */
var STATE_KEYS = Object.freeze({
  TOKENS: 'hostTokens', // {host address: its token}: a token is sent only to the address it came from
  SITES: 'sites', // {hostname: {image, input, model, autoSolve, solved, updated, seen, corrections}}
  SAMPLE_QUEUE: 'sampleQueue', // corrections waiting for the local host
});

/**
 * Check and normalise option values; throws an Error naming the first bad one.
 * @param {Object} values  some or all options
 * @returns {Object} the same keys, cleaned
 */
function checkSettings(values) {
  const out = {};
  for (const [key, value] of Object.entries(values)) {
    if (!(key in SETTINGS_DEFAULTS)) {
      throw new Error(`unknown option "${key}"`);
    }
    const kind = typeof SETTINGS_DEFAULTS[key];
    if (key === 'engine') {
      if (!ENGINES.includes(value)) {
        throw new Error(`engine must be one of ${ENGINES.join(', ')}, not "${value}"`);
      }
      out[key] = value;
    } else if (key === 'hostUrl') {
      out[key] = checkHostUrl(value);
    } else if (key === 'threshold') {
      const n = Number(value);
      if (value === '' || value === null || !Number.isFinite(n) || n < 0 || n > 1) {
        throw new Error(`confidence threshold must be a number from 0 to 1, not "${value}"`);
      }
      out[key] = n;
    } else if (kind === 'boolean') {
      out[key] = Boolean(value);
    } else {
      out[key] = String(value).trim();
    }
  }
  return out;
}

/**
 * A local host base URL: http(s), no path, query or credentials.
 * @param {string} value
 * @returns {string} the URL without a trailing slash
 */
function checkHostUrl(value) {
  let url;
  try {
    url = new URL(String(value).trim());
  } catch (e) {
    throw new Error(`local host URL "${value}" is not a URL (example: http://127.0.0.1:8765)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`local host URL must start with http:// or https://, not "${url.protocol}"`);
  }
  if (url.username || url.password || url.search || url.hash || (url.pathname && url.pathname !== '/')) {
    throw new Error('local host URL must be just scheme, host and port (example: http://127.0.0.1:8765)');
  }
  return url.origin;
}

/**
 * Is this address on this computer (127.0.0.0/8, localhost, [::1])?
 * @param {string} url  a base URL, as checkHostUrl returns it
 * @returns {boolean}
 */
function isLoopbackUrl(url) {
  let host;
  try {
    host = new URL(url).hostname; // the URL parser writes 127.1 and 0x7f.0.0.1 as 127.0.0.1
  } catch (e) {
    return false;
  }
  return host === 'localhost' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * Why a host address is refused while "allow an address not on this computer" is off.
 * @param {string} url
 * @returns {string}
 */
function remoteRefusal(url) {
  return `${url} is not on this computer: the captchas you solve (and your corrections) would go over the ` +
    'network to it. The local host address must be 127.0.0.1, localhost or [::1], unless you tick ' +
    '"Allow an address that is not on this computer" first.';
}

/**
 * All options, defaults filled in.
 * @returns {Promise<Object>}
 */
async function loadSettings() {
  const stored = await chrome.storage.local.get(SETTINGS_DEFAULTS);
  const out = { ...SETTINGS_DEFAULTS };
  for (const key of Object.keys(SETTINGS_DEFAULTS)) {
    try {
      Object.assign(out, checkSettings({ [key]: stored[key] }));
    } catch (e) {
      // A damaged value falls back to its default instead of breaking every solve.
    }
  }
  if (!out.allowRemoteHost && !isLoopbackUrl(out.hostUrl)) {
    out.hostUrl = SETTINGS_DEFAULTS.hostUrl; // never another computer without the user's say-so
  }
  return out;
}

/**
 * Check and store some options. A host address not on this computer is refused unless
 * allowRemoteHost is on; switching allowRemoteHost off brings such an address back to the default.
 * @param {Object} values
 * @returns {Promise<Object>} the stored (cleaned) values
 */
async function saveSettings(values) {
  const clean = checkSettings(values);
  const stored = await chrome.storage.local.get(['hostUrl', 'allowRemoteHost']);
  const merged = { ...SETTINGS_DEFAULTS, ...stored, ...clean };
  if (!merged.allowRemoteHost && !isLoopbackUrl(merged.hostUrl)) {
    if ('hostUrl' in clean) {
      throw new Error(remoteRefusal(merged.hostUrl));
    }
    clean.hostUrl = SETTINGS_DEFAULTS.hostUrl;
  }
  await chrome.storage.local.set(clean);
  return clean;
}

/**
 * The host permission pattern for one remembered site.
 * @param {string} hostname
 * @returns {string}
 */
function sitePattern(hostname) {
  return `*://${hostname}/*`;
}
