/**
 * Options page: one field per option key (shared/settings.js), saved on change
 * to chrome.storage.local, then a change message to the background. Also the
 * local host buttons (test, pair, send queued corrections) and the shortcut.
 */
/* global MESSAGE, SETTINGS_DEFAULTS, STATE_KEYS, loadSettings, saveSettings, renderSites */
'use strict';

/** How long the "Saved" note stays. */
const SAVED_NOTE_MS = 1500;

let savedTimer = 0;

/**
 * Ask the background something; errors come back as {ok: false, error}.
 * @param {Object} msg
 * @returns {Promise<Object>}
 */
async function ask(msg) {
  try {
    return (await chrome.runtime.sendMessage(msg)) || { ok: false, error: 'no answer from CaptchaLens' };
  } catch (e) {
    return { ok: false, error: e.message };
  }
}

/**
 * Show a line in an element, styled as ok or error.
 * @param {string} id
 * @param {string} text
 * @param {boolean} ok
 */
function say(id, text, ok) {
  const el = document.getElementById(id);
  el.textContent = text;
  el.className = ok ? 'ok' : 'error';
}

/**
 * A field's value in the type of its option.
 * @param {HTMLInputElement|HTMLSelectElement} el
 * @returns {*}
 */
function fieldValue(el) {
  return el.type === 'checkbox' ? el.checked : el.value;
}

/**
 * Put stored options into the form.
 * @param {Object} settings
 * @param {string[]} [keys]  only these fields (default: all)
 */
function fillForm(settings, keys = Object.keys(SETTINGS_DEFAULTS)) {
  for (const key of keys) {
    const el = document.getElementById(key);
    if (!el) {
      continue;
    }
    if (el.type === 'checkbox') {
      el.checked = Boolean(settings[key]);
    } else {
      el.value = String(settings[key]);
    }
  }
}

/**
 * Save one changed field, or show why its value is refused.
 * @param {Event} event
 */
async function onFieldChange(event) {
  const el = event.target;
  try {
    const saved = await saveSettings({ [el.name]: fieldValue(el) });
    fillForm({ ...(await loadSettings()), ...saved }, Object.keys(saved).filter((key) => key !== el.name));
  } catch (e) {
    say('settingsError', e.message, false);
    el.setAttribute('aria-invalid', 'true');
    return;
  }
  el.removeAttribute('aria-invalid');
  say('settingsError', '', true);
  await ask({ type: MESSAGE.OPTIONS_CHANGED });
  if (el.name === 'hostUrl' || el.name === 'allowRemoteHost') {
    await showToken(); // tokens belong to an address
  }
  const note = document.getElementById('saved');
  note.textContent = 'Saved';
  clearTimeout(savedTimer);
  savedTimer = setTimeout(() => {
    note.textContent = '';
  }, SAVED_NOTE_MS);
}

/** The name of the automatic reader, as the host lists it (captchalens/auto.py AUTO_NAME). */
const AUTO_MODEL = 'auto';

/**
 * Fill the model lists from the extension's index (and the host's, when known).
 * @param {Object|null} index  models/index.json
 * @param {string[]} [hostNames]  models the local host serves
 */
function fillModels(index, hostNames = []) {
  const select = document.getElementById('model');
  const current = select.value;
  const names = new Set(index ? index.models.map((m) => m.name) : []);
  select.textContent = '';
  const auto = index && index.auto;  // the reader for sites without a model (captchalens/auto.py)
  select.appendChild(new Option(auto ? `Automatic (${auto.first} when sure, else ${auto.then})`
    : `Default${index ? ` (${index.default})` : ''}`, ''));
  if (auto) {
    names.add(AUTO_MODEL);  // the host's "auto" is the same reader: not listed twice
  }
  for (const name of names) {
    if (name !== AUTO_MODEL) {
      select.appendChild(new Option(`${name} (in your browser)`, name));
    }
  }
  for (const name of hostNames) {
    if (!names.has(name)) {
      select.appendChild(new Option(`${name} (local host only)`, name));
    }
  }
  select.value = current;
  self.knownModels = [...names, ...hostNames.filter((n) => !names.has(n))];
}

/** Test the connection to the local host. */
async function testHost() {
  say('hostStatus', 'Connecting\u2026', true);
  const answer = await ask({ type: MESSAGE.HOST_STATUS });
  if (!answer.ok) {
    say('hostStatus', answer.error, false);
    return;
  }
  const h = answer.health;
  if (h.loopback) {
    say('hostStatus', `Local host ${h.version} is running at ${h.hostUrl} with model(s): ${h.models.join(', ')}.`, true);
  } else {
    const plain = h.hostUrl.startsWith('http:') ? ', unencrypted (http)' : '';
    say('hostStatus', `A CaptchaLens host ${h.version} answers at ${h.hostUrl}, which is NOT on this computer: ` +
      `the captchas you solve and your corrections go over the network to it${plain}. Keep this address only ` +
      'if that computer is yours.', false);
  }
  if (answer.models && Array.isArray(answer.models.models)) {
    const status = await ask({ type: MESSAGE.STATUS });
    fillModels(status.models, answer.models.models.map((m) => m.name));
  }
}

/**
 * "Pair with local host": the host prints a one-time code on its terminal; the user types it here.
 */
async function pair() {
  say('hostStatus', 'Asking the local host for a pairing code\u2026', true);
  const answer = await ask({ type: MESSAGE.PAIR });
  const form = document.getElementById('pairForm');
  if (!answer.ok) {
    form.hidden = true;
    say('hostStatus', `Not paired: ${answer.error}`, false);
    return;
  }
  form.hidden = false;
  const code = document.getElementById('pairCode');
  code.value = '';
  code.focus();
  say('hostStatus', `The local host at ${answer.hostUrl} printed a 6-digit code: type it below ` +
    `(within ${Math.round(answer.expiresIn / 60)} minutes).`, true);
}

/**
 * Send the typed pairing code.
 * @param {Event} event  the form's submit
 */
async function confirmPair(event) {
  event.preventDefault();
  say('hostStatus', 'Pairing\u2026', true);
  const answer = await ask({ type: MESSAGE.PAIR_CODE, code: document.getElementById('pairCode').value });
  if (answer.ok) {
    document.getElementById('pairForm').hidden = true;
    say('hostStatus', `Paired with the local host at ${answer.hostUrl}.`, true);
    await showToken();
  } else {
    say('hostStatus', `Not paired: ${answer.error}`, false);
  }
}

/** Show whether the current address is paired (never the token itself). */
async function showToken() {
  const status = await ask({ type: MESSAGE.STATUS });
  const field = document.getElementById('token');
  field.placeholder = status.ok && status.paired ? 'paired (token stored)' : 'not paired';
}

/** Keep a token pasted from `captchalens token` (hosts started with --no-pairing), for the current address. */
async function saveToken() {
  const field = document.getElementById('token');
  const answer = await ask({ type: MESSAGE.SET_TOKEN, token: field.value });
  if (answer.ok) {
    field.value = '';
    say('hostStatus', 'Token saved.', true);
    await showToken();
  } else {
    say('hostStatus', answer.error, false);
  }
}

/** Show how many corrections wait for the host. */
async function showQueue() {
  const status = await ask({ type: MESSAGE.STATUS });
  const n = status.ok ? status.queued : 0;
  document.getElementById('queued').textContent = n ? `${n} correction(s) wait for the local host.` : '';
  document.getElementById('flush').hidden = !n;
  return status;
}

/** Send queued corrections now. */
async function flush() {
  const answer = await ask({ type: MESSAGE.FLUSH_SAMPLES });
  if (answer.ok) {
    say('hostStatus', `Sent ${answer.sent} correction(s)${answer.error ? `; ${answer.error}` : ''}.`, !answer.error);
  } else {
    say('hostStatus', answer.error, false);
  }
  await showQueue();
}

/** Show the keyboard shortcut. */
async function showShortcut() {
  const [command] = (await chrome.commands.getAll()).filter((c) => c.name === 'solve-captcha');
  document.getElementById('shortcut').textContent = (command && command.shortcut) || 'not set';
}

/** Load everything and wire the form. */
async function init() {
  fillForm(await loadSettings());
  for (const key of Object.keys(SETTINGS_DEFAULTS)) {
    const el = document.getElementById(key);
    if (el) {
      el.addEventListener('change', onFieldChange);
    }
  }
  document.getElementById('testHost').addEventListener('click', testHost);
  document.getElementById('pair').addEventListener('click', pair);
  document.getElementById('pairForm').addEventListener('submit', confirmPair);
  document.getElementById('flush').addEventListener('click', flush);
  document.getElementById('token').addEventListener('change', saveToken);
  document.getElementById('changeShortcut').addEventListener('click', () => {
    chrome.tabs.create({ url: 'chrome://extensions/shortcuts' });
  });
  chrome.storage.onChanged.addListener((changes, area) => {
    if (area === 'local' && STATE_KEYS.SAMPLE_QUEUE in changes) {
      showQueue(); // a correction was queued or sent while this page is open
    }
  });
  const status = await showQueue();
  fillModels(status.ok ? status.models : null);
  fillForm(await loadSettings()); // the model list now holds the stored model
  await renderSites();
  await showToken();
  await showShortcut();
  document.body.dataset.ready = 'true'; // for tests: everything above has run
}

init();
