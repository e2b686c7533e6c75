/**
 * Registered (scripting.registerContentScripts) only on remembered sites the
 * user opted into auto-solve for, and only with that site's host permission:
 * tells the background the page has loaded; the background does the rest.
 */
(function () {
  'use strict';
  if (window !== window.top || self.CaptchaLensAutoSolveSent) {
    return;
  }
  self.CaptchaLensAutoSolveSent = true;
  chrome.runtime.sendMessage({ type: MESSAGE.AUTO_SOLVE }).catch(() => {
    // the extension was reloaded meanwhile: nothing to do on this page
  });
})();
