/**
 * The background's side of the content scripts: inject them into one frame and
 * call their entry points (self.CaptchaLensPage[method]) with scripting.executeScript.
 */
/* exported CONTENT_FILES, injectPage, callPage, pageAccessMessage, hostOf */

/** Content script files, in load order (each defines its part once per frame). */
const CONTENT_FILES = [
  'shared/constants.js',
  'lib/engine.js', // the contract's checks (imageSizeProblem), no TF.js
  'content/dom.js',
  'content/read.js',
  'content/fill.js',
  'content/overlay.js',
  'content/page.js',
];

/**
 * Load the content scripts into one frame (a no-op for parts already there).
 * @param {{tabId: number, frameIds: number[]}} target
 * @returns {Promise<void>}
 */
async function injectPage(target) {
  await chrome.scripting.executeScript({ target, files: CONTENT_FILES });
}

/**
 * Call a content-script entry point in one frame.
 * @param {{tabId: number, frameIds: number[]}} target
 * @param {string} method  'hello' | 'read' | 'show' | 'showMessage'
 * @param {Object} [args]
 * @returns {Promise<*>} its (JSON) result
 */
async function callPage(target, method, args) {
  const [first] = await chrome.scripting.executeScript({
    target,
    func: (name, value) => self.CaptchaLensPage[name](value),
    args: [method, args || {}],
  });
  if (!first) {
    throw new Error('the page did not answer (it was closed or navigated away)');
  }
  return first.result;
}

/**
 * The host name in an address, or '' when it has none.
 * @param {string} url
 * @returns {string}
 */
function hostOf(url) {
  try {
    return new URL(url).hostname;
  } catch (e) {
    return '';
  }
}

/**
 * A user-readable reason why the extension may not run in a page.
 * @param {Error} error  from scripting.executeScript
 * @param {{frameId?: number, frameUrl?: string, pageUrl?: string}} [where]  the frame it was asked to
 *        read, and the tab's page
 * @returns {string}
 */
function pageAccessMessage(error, where = {}) {
  const text = (error && error.message) || String(error);
  if (/Cannot access|must request permission|activeTab/i.test(text)) {
    if (where.frameId) {
      const site = hostOf(where.frameUrl || '') || 'another site';
      const top = hostOf(where.pageUrl || '');
      // Opening the frame on its own would load a new captcha: no use as advice.
      return `The captcha is inside a frame from ${site}${top && top !== site ? `, not from ${top}` : ''}. ` +
        'Chromium lets CaptchaLens read only the site whose page you asked about, so it cannot read this ' +
        `captcha: type it yourself, or allow CaptchaLens to read ${site} too (below) and solve it again.`;
    }
    return 'CaptchaLens may read a page only when you ask it to: right-click the captcha and choose ' +
      '"Solve captcha" (or use the toolbar button or the shortcut on that page).';
  }
  if (/chrome:|extensions gallery|webstore|cannot be scripted/i.test(text)) {
    return 'CaptchaLens cannot run on browser pages or the Web Store.';
  }
  return `CaptchaLens cannot run in this page: ${text}`;
}
