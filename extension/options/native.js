/**
 * Options page, "Native messaging": turn it on (asks for the optional nativeMessaging
 * permission, from the click itself), off (gives the permission back), and show whether the
 * host answers. The background prefers it over HTTP once it is on (background/native.js).
 */
/* global MESSAGE, ask, say */
'use strict';

/** The optional permission native messaging needs (manifest optional_permissions). */
const NATIVE_PERMISSION = { permissions: ['nativeMessaging'] };

/**
 * Show the switch's state and what the background says about the host.
 * @returns {Promise<void>}
 */
async function showNative() {
  const answer = await ask({ type: MESSAGE.NATIVE_STATUS });
  document.getElementById('nativeOn').hidden = Boolean(answer.enabled);
  document.getElementById('nativeOff').hidden = !answer.enabled;
  if (!answer.ok) {
    say('nativeStatus', answer.error, false);
  } else if (!answer.enabled) {
    say('nativeStatus', 'Off: solving uses the local host over HTTP.', true);
  } else if (answer.error) {
    say('nativeStatus', answer.error, false);
  } else {
    const h = answer.health;
    say('nativeStatus', `On: the native host answers (CaptchaLens ${h.version}, models: ` +
      `${(h.models || []).join(', ') || 'none'}).`, true);
  }
}

document.getElementById('nativeOn').addEventListener('click', async () => {
  let granted = false;
  try {
    granted = await chrome.permissions.request(NATIVE_PERMISSION); // first, while the click counts
  } catch (e) {
    say('nativeStatus', `Not turned on: ${e.message}`, false);
    return;
  }
  if (!granted) {
    say('nativeStatus', 'Not turned on: the browser did not grant "communicate with native applications".', false);
    return;
  }
  say('nativeStatus', 'Starting the native host…', true);
  await showNative();
});

document.getElementById('nativeOff').addEventListener('click', async () => {
  await chrome.permissions.remove(NATIVE_PERMISSION).catch(() => {});
  await showNative();
});

showNative();
