/**
 * The last solve of each tab, and the one correction it may get.
 *
 * After a solve the worker keeps what it solved (the raw RGBA pixels, the
 * site, the model) in chrome.storage.session, one record per tab holding a
 * random solve id; the note under the captcha gets only that id, never the
 * pixels. A correction names the id: the pixels labelled are always the ones
 * the worker read, never pixels a page sends, and they are encoded as PNG
 * once, when the correction is sent (most solves get none).
 * Each solve takes one correction, and each site at most
 * CORRECTIONS_PER_SITE in CORRECTION_WINDOW_MS, so that a page cannot fill
 * the user's training data even if it tricked them into typing.
 */
/* global checkLabel, submitCorrection, callPage, rgbaFromBase64, pngDataUrl, loadSettings, learnAlphabet */
/* exported rememberSolve, forgetSolve, takeCorrection, CORRECTIONS_PER_SITE, CORRECTION_WINDOW_MS */

/** chrome.storage.session key of a tab's last solve: SOLVE_KEY_PREFIX + tabId. */
const SOLVE_KEY_PREFIX = 'solve:';
/** chrome.storage.session key of {site: [times of accepted corrections]}. */
const CORRECTION_LOG_KEY = 'correctionLog';
/** Most corrections taken per site within CORRECTION_WINDOW_MS. */
const CORRECTIONS_PER_SITE = 10;
/** The rate limit's window: 10 minutes. */
const CORRECTION_WINDOW_MS = 10 * 60 * 1000;

/** Corrections are handled one after another, so that one solve cannot be corrected twice. */
let correctionChain = Promise.resolve();

/**
 * Keep a tab's solve (replacing its earlier one); returns the id the note gets.
 * @param {{tabId: number, frameId: number, site: string, model: string,
 *          pixels: {data: string, width: number, height: number}}} solve  pixels: rgbaRecord (pixels.js)
 * @returns {Promise<string>} the solve id, or '' when it could not be kept (no correction box then)
 */
async function rememberSolve(solve) {
  const id = crypto.randomUUID();
  try {
    await chrome.storage.session.set({ [SOLVE_KEY_PREFIX + solve.tabId]: { ...solve, id, at: Date.now() } });
  } catch (e) {
    console.warn(`CaptchaLens: the solve is not kept for a correction: ${e.message}`);
    return '';
  }
  return id;
}

/**
 * Forget a tab's solve (the tab was closed).
 * @param {number} tabId
 * @returns {Promise<void>}
 */
function forgetSolve(tabId) {
  return chrome.storage.session.remove(SOLVE_KEY_PREFIX + tabId);
}

/**
 * A correction from the note (see takeCorrectionNow), one at a time.
 * @param {chrome.runtime.MessageSender} sender  the note page, in the solved captcha's tab
 * @param {{solveId: string, text: string}} msg
 * @returns {Promise<{ok: boolean, queued?: boolean, final?: boolean, message: string}>}
 */
function takeCorrection(sender, msg) {
  const run = correctionChain.then(() => takeCorrectionNow(sender, msg));
  correctionChain = run.catch(() => {});
  return run;
}

/**
 * Check a correction against the tab's last solve and the site's rate limit, then send or queue it
 * with the pixels kept at solve time, and type it into the page's input.
 * `final` tells the note that this solve takes no further correction.
 * @param {chrome.runtime.MessageSender} sender
 * @param {{solveId: string, text: string}} msg
 * @returns {Promise<Object>}
 */
async function takeCorrectionNow(sender, msg) {
  const key = SOLVE_KEY_PREFIX + sender.tab.id;
  const solve = (await chrome.storage.session.get(key))[key];
  if (!solve || typeof msg.solveId !== 'string' || solve.id !== msg.solveId) {
    return {
      ok: false, final: true,
      message: 'Not sent: this answer was corrected already, or another captcha was solved since. ' +
        'Solve this one again to correct it.',
    };
  }
  let label;
  try {
    label = checkLabel(msg.text);
  } catch (e) {
    return { ok: false, message: e.message };
  }
  const now = Date.now();
  const log = (await chrome.storage.session.get(CORRECTION_LOG_KEY))[CORRECTION_LOG_KEY] || {};
  const recent = (log[solve.site] || []).filter((t) => t > now - CORRECTION_WINDOW_MS);
  if (recent.length >= CORRECTIONS_PER_SITE) {
    const minutes = Math.max(1, Math.ceil((recent[0] + CORRECTION_WINDOW_MS - now) / 60000));
    return {
      ok: false,
      message: `Not sent: CaptchaLens takes at most ${CORRECTIONS_PER_SITE} corrections from one site in ` +
        `${CORRECTION_WINDOW_MS / 60000} minutes (so that no page can fill your training data). ` +
        `Try again in ${minutes} minute(s).`,
    };
  }
  let image = ''; // submitCorrection says the image is gone when there is none
  try {
    const p = solve.pixels;
    image = await pngDataUrl(rgbaFromBase64(p.data, p.width, p.height)); // the one PNG encode of this solve
  } catch (e) {
    console.warn(`CaptchaLens: the solved pixels cannot be encoded: ${e.message}`);
  }
  const result = await submitCorrection({ image, text: label, site: solve.site, model: solve.model });
  if (!result.ok) {
    return result; // the host refused this label: the user may fix it and send again
  }
  await chrome.storage.session.remove(key);
  await chrome.storage.session.set({ [CORRECTION_LOG_KEY]: { ...log, [solve.site]: [...recent, now] } });
  if (solve.site && (await loadSettings()).rememberSites) {
    await learnAlphabet(solve.site, label); // the site's characters: read with them from its third (site_memory.js)
  }
  await callPage({ tabId: sender.tab.id, frameIds: [solve.frameId] }, 'corrected', { text: label })
    .catch(() => {}); // the page went away meanwhile: the correction is kept all the same
  return { ...result, final: true };
}
