/**
 * CaptchaLens service worker (classic script): owns the context menu, the
 * model, the local host client and every message (one processMessage switch).
 *
 * Listeners are registered at the top level on every start; nothing relies on
 * globals surviving a stop: options and memory live in chrome.storage, models
 * are loaded again lazily after a restart.
 */
/* global MESSAGE, MENU_IMAGE, MENU_PAGE, SAMPLE_ALARM, solveFromMenu, solveActiveTab, autoSolveFromPage,
          takeCorrection, forgetSolve, flushSampleQueue, queuedSampleCount, hostHealth, hostModels,
          hostPairStart, hostPairConfirm, hostPaired, hostSetToken, syncAutoSolveScripts, readModelIndex, loadSettings,
          tfAvailable, nativeStatus, trainSites, trainStart, trainStatus, trainCancel, watchTrainJob, TRAIN_ALARM */

// TF.js first: without it (vendor/ missing) the extension still works through the local host.
try {
  importScripts('/vendor/tf.es2017.min.js', '/vendor/tf-backend-wasm.es2017.min.js');
} catch (e) {
  console.error(`CaptchaLens: TF.js did not load (${e.message}); only the local host can solve`);
}
importScripts(
  '/lib/engine.js',
  '/shared/constants.js',
  '/shared/settings.js',
  '/background/backend.js',
  '/background/model_store.js',
  '/background/pixels.js',
  '/background/native.js',
  '/background/host.js',
  '/background/samples.js',
  '/background/solves.js',
  '/background/inject.js',
  '/background/site_memory.js',
  '/background/solve.js',
  '/background/training.js',
);

/**
 * Storage is for this worker and the extension's own pages only: content scripts run inside web
 * pages (a compromised page process could use their access), so they must not read the host
 * tokens, the queued corrections or the site memory, nor write options. Set on every start (the
 * level persists; chrome.storage.local.setAccessLevel needs Chrome 140). Writes of secrets wait for it.
 */
const storageLocked = Promise.all(['local', 'sync', 'session'].map(
  (area) => chrome.storage[area].setAccessLevel({ accessLevel: 'TRUSTED_CONTEXTS' }),
)).catch((e) => console.error(`CaptchaLens: storage could not be closed to content scripts: ${e.message}`));

/** This extension's own origin (messages from its pages carry it). */
const EXTENSION_ORIGIN = new URL(chrome.runtime.getURL('')).origin;
/** The keyboard command (manifest "commands"). */
const COMMAND_SOLVE = 'solve-captcha';

/** Create the context menu items (menus persist; they are made once per install/update). */
function createMenus() {
  chrome.contextMenus.removeAll(() => {
    chrome.contextMenus.create({ id: MENU_IMAGE, title: 'Solve captcha', contexts: ['image'] });
    chrome.contextMenus.create({
      id: MENU_PAGE, title: 'Solve captcha on this page', contexts: ['page', 'frame', 'editable'],
    });
  });
}

/** The extension's pages that send messages, by name. */
const PAGES = Object.freeze({
  options: chrome.runtime.getURL('options/options.html'),
  popup: chrome.runtime.getURL('popup/popup.html'),
  note: chrome.runtime.getURL('note/note.html'),
});

/**
 * Which of the extension's own pages sent this message ('' for none: a content script, another sender).
 * @param {chrome.runtime.MessageSender} sender
 * @returns {string} 'options' | 'popup' | 'note' | ''
 */
function senderPage(sender) {
  if (sender.id !== chrome.runtime.id || sender.origin !== EXTENSION_ORIGIN || typeof sender.url !== 'string') {
    return '';
  }
  const url = sender.url.split(/[?#]/)[0];
  return Object.keys(PAGES).find((name) => PAGES[name] === url) || '';
}

/**
 * Was this message sent by a content script of this extension in a web page?
 * @param {chrome.runtime.MessageSender} sender
 * @returns {boolean}
 */
function fromContentScript(sender) {
  return sender.id === chrome.runtime.id && Boolean(sender.tab) && sender.origin !== EXTENSION_ORIGIN;
}

/**
 * Engine, models, host and queue status for the popup and the options page.
 * @returns {Promise<Object>}
 */
async function status() {
  const settings = await loadSettings();
  let models = null;
  let modelsError = '';
  try {
    models = await readModelIndex();
  } catch (e) {
    modelsError = e.message;
  }
  return {
    ok: true,
    settings,
    tf: tfAvailable() ? tf.version.tfjs : '',
    backend: tfAvailable() ? (tf.getBackend() || '') : '',
    models,
    modelsError,
    paired: await hostPaired(),
    queued: await queuedSampleCount(),
  };
}

/**
 * Every message to the background, in one switch.
 * @param {Object} msg  {type, ...}
 * @param {chrome.runtime.MessageSender} sender
 * @returns {Promise<Object>}
 */
async function processMessage(msg, sender) {
  if (!msg || typeof msg.type !== 'string') {
    return { ok: false, error: 'a message needs a type' };
  }
  const page = fromContentScript(sender);
  const from = senderPage(sender);
  const own = from === 'options' || from === 'popup';
  const refuse = { ok: false, error: `message "${msg.type}" is not accepted from this sender` };
  switch (msg.type) {
    case MESSAGE.CORRECTION:
      if (from !== 'note' || !sender.tab) {
        return { ...refuse, message: 'Not sent: corrections come only from the CaptchaLens note.' };
      }
      return takeCorrection(sender, msg);
    case MESSAGE.AUTO_SOLVE:
      if (!page) {
        return refuse;
      }
      return autoSolveFromPage(sender);
    case MESSAGE.SOLVE_PAGE: {
      if (from !== 'popup') {
        return refuse;
      }
      if (!Number.isInteger(msg.tabId)) {
        return { ok: false, error: 'solvePage needs the tab id' };
      }
      const tab = await chrome.tabs.get(msg.tabId);
      return solveActiveTab(tab, 'popup');
    }
    case MESSAGE.OPTIONS_CHANGED:
    case MESSAGE.SITES_CHANGED:
      if (from !== 'options') {
        return refuse;
      }
      return { ok: true, autoSolve: await syncAutoSolveScripts() };
    case MESSAGE.PAIR:
      if (from !== 'options') {
        return refuse;
      }
      return { ok: true, ...(await hostPairStart()) };
    case MESSAGE.PAIR_CODE:
      if (from !== 'options') {
        return refuse;
      }
      await storageLocked;
      return { ok: true, ...(await hostPairConfirm(msg.code)) };
    case MESSAGE.SET_TOKEN:
      if (from !== 'options') {
        return refuse;
      }
      await storageLocked;
      return { ok: true, ...(await hostSetToken(msg.token)) };
    case MESSAGE.HOST_STATUS: {
      if (from !== 'options') {
        return refuse;
      }
      const health = await hostHealth();
      let models = null;
      try {
        models = await hostModels();
      } catch (e) {
        models = null;
      }
      return { ok: true, health, models };
    }
    case MESSAGE.NATIVE_STATUS:
      if (from !== 'options') {
        return refuse;
      }
      return nativeStatus();
    case MESSAGE.STATUS:
      if (!own) {
        return refuse;
      }
      return status();
    case MESSAGE.TRAIN_SITES:
      if (from !== 'options') {
        return refuse;
      }
      return trainSites();
    case MESSAGE.TRAIN_START:
      if (from !== 'options') {
        return refuse;
      }
      return trainStart(msg.site, msg.fromPrevious);
    case MESSAGE.TRAIN_STATUS:
      if (from !== 'options') {
        return refuse;
      }
      return trainStatus(msg.id);
    case MESSAGE.TRAIN_CANCEL:
      if (from !== 'options') {
        return refuse;
      }
      return trainCancel(msg.id);
    case MESSAGE.FLUSH_SAMPLES:
      if (from !== 'options') {
        return refuse;
      }
      return { ok: true, ...(await flushSampleQueue()) };
    default:
      console.warn(`CaptchaLens: unknown message type "${msg.type}"`);
      return { ok: false, error: `unknown message type "${msg.type}"` };
  }
}

// ---- listeners (top level: registered on every start of the worker) ----------
chrome.runtime.onInstalled.addListener(() => {
  createMenus();
  // Older versions kept one token for whatever address was set: where it came from is not known.
  chrome.storage.local.remove('hostToken').catch(() => {});
  syncAutoSolveScripts().catch((e) => console.warn(`CaptchaLens: auto-solve not registered: ${e.message}`));
});

chrome.contextMenus.onClicked.addListener(solveFromMenu);

chrome.commands.onCommand.addListener((command, tab) => {
  if (command === COMMAND_SOLVE && tab) {
    solveActiveTab(tab, 'shortcut');
  }
});

chrome.tabs.onRemoved.addListener((tabId) => {
  forgetSolve(tabId).catch(() => {});
});

chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === SAMPLE_ALARM) {
    flushSampleQueue();
  } else if (alarm.name === TRAIN_ALARM) {
    watchTrainJob().catch((e) => console.warn(`CaptchaLens: the train job was not followed: ${e.message}`));
  }
});

/** Re-register the auto-solve script when site access was granted or taken back. */
function onPermissionsChanged() {
  syncAutoSolveScripts().catch((e) => console.warn(`CaptchaLens: auto-solve not registered: ${e.message}`));
}
chrome.permissions.onAdded.addListener(onPermissionsChanged);
chrome.permissions.onRemoved.addListener(onPermissionsChanged);

chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  processMessage(msg, sender).then(sendResponse, (e) => sendResponse({ ok: false, error: e.message }));
  return true; // the answer comes asynchronously
});

// The context menu's handler, for tests: ctx.service_workers[0].evaluate('self.solveFromMenu(info, tab)').
self.solveFromMenu = solveFromMenu;
