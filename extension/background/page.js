/**
 * The background's side of the content scripts: inject them into one frame and
 * call their entry points (self.CaptchaLensPage[method]) with scripting.executeScript.
 */
/* exported CONTENT_FILES, injectPage, callPage, pageAccessMessage */

/** Content script files, in load order (each defines its part once per frame). */
const CONTENT_FILES = [
  'shared/constants.js',
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
 * A user-readable reason why the extension may not run in a page.
 * @param {Error} error  from scripting.executeScript
 * @param {{frameId?: number, frameUrl?: string}} [where]  the frame it was asked to read
 * @returns {string}
 */
function pageAccessMessage(error, where = {}) {
  const text = (error && error.message) || String(error);
  if (/Cannot access|must request permission|activeTab/i.test(text)) {
    if (where.frameId) {
      let site = 'another site';
      try {
        site = new URL(where.frameUrl).hostname || site;
      } catch (e) {
        // no frame URL: keep the generic name
      }
      return `The captcha is inside a frame from ${site}, which CaptchaLens may not read from this page. ` +
        'Open that frame on its own (its address is in the frame\'s right-click menu) and solve it there.';
    }
    return 'CaptchaLens may read a page only when you ask it to: right-click the captcha and choose ' +
      '"Solve captcha" (or use the toolbar button or the shortcut on that page).';
  }
  if (/chrome:|extensions gallery|webstore|cannot be scripted/i.test(text)) {
    return 'CaptchaLens cannot run on browser pages or the Web Store.';
  }
  return `CaptchaLens cannot run in this page: ${text}`;
}
