/**
 * Solving, from a click to a filled input:
 *   1. inject the content scripts into the frame and read the captcha's pixels
 *      (canvas, or a crop of a tab screenshot when the canvas is tainted);
 *   2. solve in this service worker with TF.js, or on the local host
 *      (options: browser / host / auto = browser, host when unsure or failing);
 *   3. show the answer under the captcha and type it into its input; keep the
 *      pixels solved for the one correction the note may send (solves.js);
 *   4. remember the site's image, and the input once the user accepts or picks it.
 * Every step reports a clear message in the page when it fails.
 */
/* global tf, CaptchaLensEngine, loadSettings, getModel, modelEntry, autoRule, AUTO_NAME, injectPage, callPage, pageAccessMessage,
          imageLimits, rgbaFromBase64, captureCrop, pngBlob, rgbaRecord, pixelsHash, hostSolve, siteMemory, rememberSite, siteAlphabet,
          rememberSolve, AUTO_SOLVE_WAIT_MS, tfAvailable, hostOf, siteModelFor, siteModelEntry */
/* exported solveFromMenu, solveActiveTab, autoSolveFromPage, solveInFrame, solvePixels */

/** Context menu item ids. */
const MENU_IMAGE = 'solve-captcha-image';
const MENU_PAGE = 'solve-captcha-page';
/** How long after a solve the box the user accepts or picks is still remembered. */
const BOX_WATCH_MS = 5 * 60 * 1000;
/** Each wait for it is one call into the page at most this long (each call keeps the worker awake). */
const BOX_POLL_MS = 20 * 1000;

/**
 * The context menu's handler ("Solve captcha" on an image, "Solve captcha on
 * this page" elsewhere). Tests call this same function.
 * @param {chrome.contextMenus.OnClickData} info
 * @param {chrome.tabs.Tab} tab
 * @returns {Promise<Object>} what solveInFrame returns
 */
function solveFromMenu(info, tab) {
  if (!tab || typeof tab.id !== 'number' || tab.id < 0) {
    return Promise.resolve({ ok: false, code: 'no_tab', message: 'CaptchaLens works on web pages in tabs only.' });
  }
  return solveInFrame({
    tabId: tab.id,
    windowId: tab.windowId,
    frameId: info.frameId || 0,
    frameUrl: info.frameUrl || '',
    pageUrl: info.pageUrl || tab.url || '',
    srcUrl: info.menuItemId === MENU_PAGE ? '' : (info.srcUrl || ''),
    trigger: 'menu',
  });
}

/**
 * Solve the remembered or detected captcha of a tab's top frame (shortcut, popup).
 * @param {chrome.tabs.Tab} tab
 * @param {string} trigger  'shortcut' | 'popup'
 * @returns {Promise<Object>}
 */
function solveActiveTab(tab, trigger) {
  return solveInFrame({ tabId: tab.id, windowId: tab.windowId, frameId: 0, trigger });
}

/**
 * Auto-solve a remembered site's captcha when its page has loaded (opt-in).
 * @param {chrome.runtime.MessageSender} sender  the auto-solve content script
 * @returns {Promise<Object>}
 */
async function autoSolveFromPage(sender) {
  return solveInFrame({
    tabId: sender.tab.id, windowId: sender.tab.windowId, frameId: sender.frameId || 0, trigger: 'auto',
  });
}

/**
 * Solve the captcha in one frame of a tab.
 * @param {Object} req
 * @param {number} req.tabId
 * @param {number} req.windowId
 * @param {number} [req.frameId]
 * @param {string} [req.frameUrl]  the frame's address (for messages)
 * @param {string} [req.pageUrl]  the tab's page address (for messages)
 * @param {string} [req.srcUrl]  the right-clicked image's URL (never requested again)
 * @param {string} req.trigger  'menu' | 'shortcut' | 'popup' | 'auto'
 * @returns {Promise<Object>} {ok, text, confidence, source, model, via, width, height, pixelsHash,
 *   filled, inputSelector, imageSelector, solveId, message, ms} or {ok: false, code, message}
 */
async function solveInFrame(req) {
  const t0 = performance.now();
  const target = { tabId: req.tabId, frameIds: [req.frameId || 0] };
  const auto = req.trigger === 'auto';
  const settings = await loadSettings();
  let where;
  try {
    await injectPage(target);
    where = await callPage(target, 'hello');
  } catch (e) {
    const message = pageAccessMessage(e, req);
    if (!auto) {
      // a frame of another site: the note offers to ask for access to it
      await tellUser(req, message, req.frameId && /Cannot access|must request permission/i.test(e.message || '')
        ? hostOf(req.frameUrl || '') : '');
    }
    return { ok: false, code: 'no_access', message };
  }
  const memory = settings.rememberSites ? await siteMemory(where.site) : null;
  if (auto && !(settings.autoSolve && memory && memory.autoSolve)) {
    return { ok: false, code: 'not_enabled', message: 'auto-solve is off for this site' };
  }

  /**
   * Report a failure in the page (quietly for auto-solve) and return it.
   * @param {string} code
   * @param {string} message
   * @returns {Promise<Object>}
   */
  const fail = async (code, message) => {
    if (!auto) {
      await callPage(target, 'showMessage', { message }).catch(() => {});
    }
    return { ok: false, code, message, ms: performance.now() - t0 };
  };

  try {
    return await solveRead(req, target, settings, memory, where, fail, t0);
  } catch (e) {
    // the page went away (closed, navigated) between two steps
    return { ok: false, code: 'page_gone', message: `The page changed while solving: ${e.message}` };
  }
}

/**
 * Steps 1-4 once the content script answers: read, solve, show and fill, remember.
 * @param {Object} req  see solveInFrame
 * @param {{tabId: number, frameIds: number[]}} target
 * @param {Object} settings
 * @param {Object|null} memory  the site's memory
 * @param {{site: string}} where  the frame's hello()
 * @param {function(string, string): Promise<Object>} fail  reports a failure
 * @param {number} t0  start time (ms)
 * @returns {Promise<Object>} see solveInFrame
 */
async function solveRead(req, target, settings, memory, where, fail, t0) {
  const auto = req.trigger === 'auto';
  const read = await callPage(target, 'read', {
    srcUrl: req.srcUrl || '',
    imageSelector: req.srcUrl ? '' : ((memory && memory.image) || ''),
    waitMs: auto ? AUTO_SOLVE_WAIT_MS : 0,
    limits: await imageLimits(), // refused before a pixel is read, as the host refuses it
  });
  if (!read.ok) {
    return fail(read.code, read.message);
  }
  let rgba;
  try {
    rgba = await pixelsOf(read, req);
  } catch (e) {
    return fail('unreadable', `The image is not readable: ${e.message}`);
  } finally {
    if (read.uncovered) {
      await callPage(target, 'uncovered').catch(() => {}); // the page's header or banner comes back
    }
  }

  // the site's chosen model, else the one trained for it from the options page, else the options' model
  const modelName = (memory && memory.model) || (await siteModelFor(where.site)) || settings.model || '';
  const alphabet = siteAlphabet(memory); // the characters of the site's corrections, once it has enough
  const answer = await solvePixels(rgba, settings, modelName, alphabet);
  if (!answer.ok) {
    return fail(answer.code, answer.message);
  }

  const lowConfidence = answer.confidence < settings.threshold;
  const solveId = await rememberSolve({
    tabId: req.tabId, frameId: req.frameId || 0, site: where.site, model: answer.model, pixels: rgbaRecord(rgba),
  }); // encoded as PNG only if a correction is sent (solves.js)
  const notes = [answer.note || ''];
  if (alphabet) {
    notes.push(`Read with ${CaptchaLensEngine.familiesText(alphabet)} only: the characters of your ${memory.corrections} ` +
      'corrections on this site.');
  }
  if (read.covered) {
    notes.push('Part of the captcha is covered by the page (a header or banner CaptchaLens could not move ' +
      'away), so the answer may be wrong.');
  }
  const shown = await callPage(target, 'show', {
    text: answer.text,
    confidence: answer.confidence,
    source: answer.source,
    note: notes.filter(Boolean).join(' '),
    fill: settings.autoFill && !(auto && lowConfidence),
    inputSelector: (memory && memory.input) || '',
    solveId,
    lowConfidence,
    threshold: settings.threshold,
  });
  clearToolbarNote(req.tabId);
  if (settings.rememberSites && where.site) {
    if (shown.filled) {
      // the image the user asked about; the box only once the user accepts or picks it (watchBox)
      // a model the automatic reader picked for this one captcha is not pinned to the site
      await rememberSite(where.site, { image: read.selector, input: '', model: answer.auto ? '' : answer.model });
    }
    watchBox(target, where.site, solveId, read.selector);
  }
  return {
    ok: true,
    text: answer.text,
    confidence: answer.confidence,
    source: answer.source,
    model: answer.model,
    backend: answer.backend || '',
    via: read.kind === 'pixels' ? 'canvas' : 'screenshot',
    uncovered: read.uncovered || 0,
    width: rgba.width,
    height: rgba.height,
    pixelsHash: pixelsHash(rgba),
    filled: shown.filled,
    inputSelector: shown.inputSelector,
    asked: shown.asked,
    imageSelector: read.selector,
    site: where.site,
    solveId,
    message: shown.message,
    ms: performance.now() - t0,
  };
}

/**
 * Remember the box the user accepts (sends the form with the answer in it) or picks in the note
 * for this solve, for as long as the page keeps the solve (at most BOX_WATCH_MS). Not awaited:
 * the solve's result does not wait for the user.
 * @param {{tabId: number, frameIds: number[]}} target
 * @param {string} site
 * @param {string} solveId
 * @param {string} image  the captcha's selector
 * @returns {Promise<void>}
 */
async function watchBox(target, site, solveId, image) {
  const until = Date.now() + BOX_WATCH_MS;
  while (Date.now() < until) {
    let event;
    try {
      event = await callPage(target, 'waitBox', { solveId, timeoutMs: Math.min(BOX_POLL_MS, until - Date.now()) });
    } catch (e) {
      return; // the page was closed or navigated away
    }
    if (!event || event.gone) {
      return;
    }
    if (event.box && (await loadSettings()).rememberSites) {
      await rememberSite(site, { image, input: event.box });
    }
  }
}

/**
 * The captcha's RGBA pixels from what the content script read: its canvas pixels, or
 * (tainted canvas) a crop of a screenshot of the tab, which must be in front.
 * @param {Object} read  the content script's read() result
 * @param {{tabId: number, windowId: number}} req
 * @returns {Promise<{data: (Uint8Array|Uint8ClampedArray), width: number, height: number}>}
 */
async function pixelsOf(read, req) {
  if (read.kind === 'pixels') {
    return rgbaFromBase64(read.data, read.width, read.height);
  }
  const tab = await chrome.tabs.get(req.tabId);
  if (!tab.active) {
    throw new Error('its tab is not in front, so it cannot be captured from the screen');
  }
  return captureCrop(req.windowId, read.rect, read.dpr, read.viewport);
}

/**
 * Remove an earlier failure note from the toolbar button of a tab.
 * @param {number} tabId
 */
function clearToolbarNote(tabId) {
  chrome.action.setBadgeText({ tabId, text: '' }).catch(() => {});
  chrome.action.setTitle({ tabId, title: 'CaptchaLens' }).catch(() => {});
}

/**
 * Show a message when the frame itself cannot be used: in the tab's top frame if
 * CaptchaLens may read that, else on the toolbar button (badge "!" and its tooltip).
 * @param {{tabId: number, frameId?: number}} req
 * @param {string} message
 * @param {string} [allowSite]  a frame's site the note offers to ask access to
 * @returns {Promise<void>}
 */
async function tellUser(req, message, allowSite = '') {
  if (req.frameId) {
    const top = { tabId: req.tabId, frameIds: [0] };
    try {
      await injectPage(top);
      await callPage(top, 'showMessage', { message, allowSite });
      return;
    } catch (e) {
      // the top frame is off limits too: use the toolbar button
    }
  }
  try {
    await chrome.action.setBadgeBackgroundColor({ tabId: req.tabId, color: '#a4161a' });
    await chrome.action.setBadgeText({ tabId: req.tabId, text: '!' });
    await chrome.action.setTitle({ tabId: req.tabId, title: `CaptchaLens: ${message}` });
  } catch (e) {
    console.warn(`CaptchaLens: ${message}`);
  }
}

/**
 * Pixels -> answer with the engine the options ask for:
 *   browser: TF.js here (the local host only when that fails);
 *   host:    the local host only;
 *   auto:    TF.js here, the local host when unsure (below the threshold) or failing.
 * @param {{data: (Uint8Array|Uint8ClampedArray), width: number, height: number}} rgba
 * @param {Object} settings
 * @param {string} modelName  '' = default
 * @param {string} [alphabet]  the characters of the site's corrections (site_memory.js siteAlphabet):
 *   read with their families only; '' = every character the model reads
 * @returns {Promise<Object>} {ok: true, text, confidence, source, model, backend?, note?} | {ok: false, code, message}
 */
async function solvePixels(rgba, settings, modelName, alphabet = '') {
  // A model trained for a site from the options page answers here whatever the engine: the host
  // holds the same weights (checked against TF.js before it was installed), so asking it would
  // give the same answer; it is asked only when the model cannot run here.
  const engine = (await siteModelEntry(modelName)) ? 'browser' : settings.engine;
  let browser = null;
  let browserError = null;
  if (engine !== 'host') {
    try {
      browser = await solveInBrowser(rgba, modelName, alphabet);
    } catch (e) {
      browserError = e;
    }
  }
  const unsure = browser && browser.confidence < settings.threshold;
  if (browser && !(engine === 'auto' && unsure)) {
    return { ok: true, ...browser };
  }
  try {
    const host = await hostSolve(await pngBlob(rgba), modelName, alphabet);
    const answer = { ok: true, text: String(host.text), confidence: Number(host.confidence), source: 'host', model: host.model || modelName };
    if (answer.model === AUTO_NAME) {
      answer.auto = true; // the host's automatic reader: like the browser's, never pinned to the site
    }
    if (browserError) {
      answer.note = `Solved by the local host: ${browserError.message}`;
    }
    return answer;
  } catch (hostError) {
    if (browser) {
      return { ok: true, ...browser, note: `Unsure, and the local host could not check it: ${hostError.message}` };
    }
    if (engine === 'host') {
      return { ok: false, code: hostError.down ? 'host_down' : 'host_error', message: hostError.message };
    }
    return {
      ok: false, code: browserError.code || 'model_failed',
      message: `${browserError.message} Fallback: ${hostError.message}`,
    };
  }
}

/**
 * The error for a model that did not load.
 * @param {Error} e
 * @returns {Error} with code 'model_failed'
 */
function loadFailed(e) {
  const err = new Error(`The in-browser model failed to load: ${e.message}.`);
  err.code = 'model_failed';
  return err;
}

/**
 * Solve with TF.js in this service worker.
 * @param {{data: (Uint8Array|Uint8ClampedArray), width: number, height: number}} rgba
 * @param {string} modelName
 * @param {string} [alphabet]  a site's characters (solvePixels)
 * @returns {Promise<{text: string, confidence: number, source: string, model: string, backend: string, ms: number}>}
 * @throws {Error} with a user-readable message and a code
 */
async function solveInBrowser(rgba, modelName, alphabet = '') {
  let rule = null;
  let loaded;
  try {
    if (!tfAvailable()) {
      throw new Error('TF.js is missing from the extension (vendor/)');
    }
    rule = await autoRule(modelName);
    if (modelName && !rule && !(await modelEntry(modelName))) {
      const err = new Error(`In-browser solving is not possible: model '${modelName}' exists only on the local host.`);
      err.code = 'model_missing';
      throw err;
    }
    loaded = await getModel(rule ? rule.first : modelName);
  } catch (e) {
    throw e.code ? e : loadFailed(e);
  }
  // "auto" on a site whose characters the default model cannot all read: it can never be right there
  const skipFirst = rule && alphabet && !CaptchaLensEngine.coversAlphabet(loaded.meta.charset, alphabet);
  let result = skipFirst ? null : await CaptchaLensEngine.solve(tf, loaded, rgba, alphabet);
  if (rule && (skipFirst || !CaptchaLensEngine.autoFirstStands(rule, result.confidence))) {
    // "auto": the default model is unsure, so this is not its scheme: the general reader answers.
    try {
      loaded = await getModel(rule.then);
    } catch (e) {
      throw loadFailed(e);
    }
    result = await CaptchaLensEngine.solve(tf, loaded, rgba, alphabet);
  }
  return {
    text: result.text, confidence: result.confidence, source: 'browser',
    model: loaded.entry.name, backend: loaded.backend, ms: result.ms, auto: Boolean(rule),
  };
}
