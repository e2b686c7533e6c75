/**
 * Names shared by every context (service worker, content scripts, options, popup).
 *
 * A classic script with `var` declarations only, so that injecting it twice
 * into the same page (each solve injects the content files) is harmless.
 */
/* exported MESSAGE, HOST_DOWN_HINT, CAPTCHA_WORDS_RE, percentSure */

/** Message types: every message to the background goes through its processMessage. */
var MESSAGE = Object.freeze({
  SOLVE_PAGE: 'solvePage', // popup: solve the captcha on the active tab
  AUTO_SOLVE: 'autoSolve', // content script registered on remembered sites: the page has loaded
  CORRECTION: 'correction', // note: the right answer for the tab's last solve ({solveId, text})
  OPTIONS_CHANGED: 'optionsChanged', // options page: settings were saved
  PAIR: 'pair', // options page: ask the local host for a pairing code (POST /pair {})
  PAIR_CODE: 'pairCode', // options page: the code the user typed -> the host's token (POST /pair {code})
  SET_TOKEN: 'setToken', // options page: a token pasted from `captchalens token`, for the current address
  HOST_STATUS: 'hostStatus', // options page / popup: is the local host running (GET /health)?
  NATIVE_STATUS: 'nativeStatus', // options page: is native messaging on, does its host answer (ping, health)?
  STATUS: 'status', // popup / options: engine, models, queued corrections
  FLUSH_SAMPLES: 'flushSamples', // options page: send queued corrections now
  SITES_CHANGED: 'sitesChanged', // options page: per-site memory edited (auto-solve scripts resync)
  TRAIN_SITES: 'trainSites', // options page: corrections per site on the host, models installed here, latest job
  TRAIN_START: 'trainStart', // options page: "Train a model for this site" ({site, fromPrevious})
  TRAIN_STATUS: 'trainStatus', // options page: a job's progress ({id}); a finished job's model is installed here
  TRAIN_CANCEL: 'trainCancel', // options page: cancel the running job ({id})
});

/** How to start the local host, shown whenever it cannot be reached. */
var HOST_DOWN_HINT = 'start it with `make run`';

/** Words that mark an image or an input as a captcha (id, name, class, alt, src, placeholder). */
var CAPTCHA_WORDS_RE = /captcha|kaptcha|verif|security.?code|check.?code|vcode|validat|challenge|human|robot/i;

/**
 * A confidence (0..1, calibrated: captchalens/decode.py) as the whole percent a person reads,
 * rounded down: an answer right 99.9% of the time is "99% sure", never "100% sure", and one
 * just under a threshold never reads as the threshold itself. (The 1e-9 absorbs binary
 * fractions: 0.29 * 100 is 28.999999999999996.)
 * @param {number} confidence
 * @returns {number} 0..100
 */
function percentSure(confidence) {
  const c = Number(confidence);
  return Number.isFinite(c) ? Math.max(0, Math.min(100, Math.floor(100 * c + 1e-9))) : 0;
}
