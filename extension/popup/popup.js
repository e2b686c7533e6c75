/**
 * Toolbar popup: solve the captcha of the active tab (opening the popup grants
 * activeTab for it), show the engine's status, link to the options.
 */
/* global MESSAGE, percentSure */
'use strict';

/** Engine names as the user reads them. */
const ENGINE_LABELS = { browser: 'in your browser', host: 'local host', auto: 'in your browser, local host when unsure' };

/**
 * Show a line in the result area.
 * @param {string} text
 * @param {boolean} [isError]
 */
function showResult(text, isError) {
  const el = document.getElementById('result');
  el.textContent = text;
  el.className = isError ? 'error' : '';
}

/** Solve the captcha of the active tab through the background. */
async function solve() {
  const button = document.getElementById('solve');
  button.disabled = true;
  showResult('Solving\u2026');
  try {
    const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
    const result = await chrome.runtime.sendMessage({ type: MESSAGE.SOLVE_PAGE, tabId: tab.id });
    if (result && result.ok) {
      const el = document.getElementById('result');
      el.className = '';
      el.textContent = '';
      const answer = document.createElement('span');
      answer.className = 'answer';
      answer.textContent = result.text;
      el.append(answer, ` \u00b7 ${percentSure(result.confidence)}% sure${result.filled ? ' \u00b7 typed in' : ''}`);
    } else {
      showResult((result && (result.message || result.error)) || 'CaptchaLens did not answer.', true);
    }
  } catch (e) {
    showResult(e.message, true);
  } finally {
    button.disabled = false;
  }
}

/** Fill in the status and shortcut lines. */
async function showStatus() {
  const [command] = (await chrome.commands.getAll()).filter((c) => c.name === 'solve-captcha');
  if (command && command.shortcut) {
    document.getElementById('shortcut').textContent = command.shortcut;
  }
  const status = await chrome.runtime.sendMessage({ type: MESSAGE.STATUS });
  if (!status || !status.ok) {
    return;
  }
  const parts = [`Engine: ${ENGINE_LABELS[status.settings.engine]}`];
  if (status.modelsError) {
    parts.push(status.modelsError);
  }
  if (status.queued) {
    parts.push(`${status.queued} correction(s) wait for the local host`);
  }
  document.getElementById('status').textContent = parts.join(' \u00b7 ');
}

document.getElementById('solve').addEventListener('click', solve);
document.getElementById('options').addEventListener('click', (event) => {
  event.preventDefault();
  chrome.runtime.openOptionsPage();
});
showStatus();
