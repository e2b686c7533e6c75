/**
 * Per-site memory (which image, which input, which model a site uses) and the
 * opt-in auto-solve on page load for remembered sites.
 *
 * Auto-solve registers one content script (content/autosolve.js) for exactly
 * the remembered sites the user switched it on for AND granted access to
 * (optional host permission, asked per site on the options page). No site is
 * touched without both.
 */
/* global STATE_KEYS, CONTENT_FILES, loadSettings, sitePattern */
/* global CaptchaLensEngine */
/* exported readSites, siteMemory, rememberSite, syncAutoSolveScripts, AUTO_SOLVE_WAIT_MS, learnAlphabet,
   siteAlphabet */

/** id of the registered auto-solve content script. */
const AUTO_SOLVE_SCRIPT_ID = 'captchalens-autosolve';
/** How long auto-solve waits for a remembered image to appear and load. */
const AUTO_SOLVE_WAIT_MS = 5000;

/**
 * All remembered sites.
 * @returns {Promise<Object<string, {image: string, input: string, model: string, autoSolve: boolean}>>}
 */
async function readSites() {
  const stored = await chrome.storage.local.get(STATE_KEYS.SITES);
  const sites = stored[STATE_KEYS.SITES];
  return sites && typeof sites === 'object' ? sites : {};
}

/**
 * One site's memory, or null.
 * @param {string} hostname
 * @returns {Promise<Object|null>}
 */
async function siteMemory(hostname) {
  if (!hostname) {
    return null;
  }
  const sites = await readSites();
  return Object.prototype.hasOwnProperty.call(sites, hostname) ? sites[hostname] : null;
}

/**
 * Remember what worked on a site (after a successful solve); keeps its auto-solve choice.
 * @param {string} hostname
 * @param {{image: string, input: string, model: string}} found
 * @returns {Promise<Object>} the site's new memory
 */
async function rememberSite(hostname, found) {
  const sites = await readSites();
  const old = sites[hostname] || {};
  sites[hostname] = {
    ...old, // what corrections taught (learnAlphabet) stays
    image: found.image || old.image || '',
    input: found.input || old.input || '',
    model: old.model || found.model || '',
    autoSolve: Boolean(old.autoSolve),
    solved: (old.solved || 0) + 1,
    updated: new Date().toISOString(),
  };
  await chrome.storage.local.set({ [STATE_KEYS.SITES]: sites });
  return sites[hostname];
}

/**
 * Learn from a correction which characters a site's captchas use: its memory keeps the
 * characters of all its corrections (`seen`) and their number (`corrections`). Once there are
 * CaptchaLensEngine.MIN_SITE_LABELS, the site is read with their families only (siteAlphabet).
 * @param {string} hostname
 * @param {string} label  a correction the host or the queue took
 * @returns {Promise<Object>} the site's new memory
 */
async function learnAlphabet(hostname, label) {
  const sites = await readSites();
  const old = sites[hostname] || {};
  const seen = [...new Set([...(typeof old.seen === 'string' ? old.seen : ''), ...label])].sort().join('');
  sites[hostname] = {
    ...old,
    seen: [...seen].slice(0, CaptchaLensEngine.MAX_ALPHABET).join(''), // what the host takes
    corrections: (Number.isInteger(old.corrections) ? old.corrections : 0) + 1,
  };
  await chrome.storage.local.set({ [STATE_KEYS.SITES]: sites });
  return sites[hostname];
}

/**
 * The characters a site is read with (its corrections' characters), or '' while it has fewer
 * than CaptchaLensEngine.MIN_SITE_LABELS corrections or none is remembered.
 * @param {?Object} memory  siteMemory
 * @returns {string}
 */
function siteAlphabet(memory) {
  if (!memory || typeof memory.seen !== 'string' || !Number.isInteger(memory.corrections)) {
    return '';
  }
  return memory.corrections >= CaptchaLensEngine.MIN_SITE_LABELS ? memory.seen : '';
}

/** Syncs run one after another (two at once would register the same id twice). */
let syncChain = Promise.resolve();

/**
 * (Re)register the auto-solve content script for the sites that qualify now.
 * @returns {Promise<string[]>} the match patterns registered
 */
function syncAutoSolveScripts() {
  const run = syncChain.then(syncAutoSolveNow, syncAutoSolveNow);
  syncChain = run.catch(() => {});
  return run;
}

/**
 * One sync (see syncAutoSolveScripts).
 * @returns {Promise<string[]>}
 */
async function syncAutoSolveNow() {
  const settings = await loadSettings();
  const sites = await readSites();
  const patterns = [];
  if (settings.autoSolve) {
    for (const [hostname, memory] of Object.entries(sites)) {
      if (!memory.autoSolve) {
        continue;
      }
      const pattern = sitePattern(hostname);
      if (await chrome.permissions.contains({ origins: [pattern] })) {
        patterns.push(pattern);
      }
    }
  }
  const existing = await chrome.scripting.getRegisteredContentScripts({ ids: [AUTO_SOLVE_SCRIPT_ID] });
  if (existing.length) {
    await chrome.scripting.unregisterContentScripts({ ids: [AUTO_SOLVE_SCRIPT_ID] });
  }
  if (patterns.length) {
    await chrome.scripting.registerContentScripts([{
      id: AUTO_SOLVE_SCRIPT_ID,
      matches: patterns,
      js: [...CONTENT_FILES, 'content/autosolve.js'],
      runAt: 'document_idle',
      allFrames: false,
      persistAcrossSessions: true,
    }]);
  }
  return patterns;
}
