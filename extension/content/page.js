/**
 * The content script's entry points, called by the background through
 * scripting.executeScript: self.CaptchaLensPage[method](args). Results must be
 * JSON-serialisable. The element read last is kept for showing the answer.
 * TF.js never runs here: only the DOM work does.
 */
(function () {
  'use strict';
  if (self.CaptchaLensPage) {
    return;
  }
  const dom = self.CaptchaLensDom;
  const { readCaptcha } = self.CaptchaLensRead;
  const { findInput, fillInput } = self.CaptchaLensFill;
  const { showOverlay, removeOverlay } = self.CaptchaLensOverlay;

  /** The captcha element read last in this frame (kept until the next read). */
  let lastElement = null;
  /** The input the last answer went into (a correction goes there too). */
  let lastInput = null;

  /**
   * Where this frame is.
   * @returns {{site: string, top: boolean}}
   */
  function hello() {
    return { site: location.hostname, top: window === window.top };
  }

  /**
   * Find the captcha and read its pixels (see CaptchaLensRead.readCaptcha).
   * @param {Object} args
   * @returns {Promise<Object>} the result without the element
   */
  async function read(args) {
    removeOverlay(); // never in the way of a screenshot, never stale
    const { element, ...result } = await readCaptcha(args || {});
    lastElement = element || null;
    lastInput = null;
    return result;
  }

  /**
   * Show an answer under the captcha and type it into its input.
   * @param {Object} args
   * @param {string} args.text
   * @param {number} args.confidence
   * @param {string} args.source  'browser' | 'host'
   * @param {string} [args.note]  from the background (e.g. the host was not reachable)
   * @param {boolean} args.fill  type the answer into the input
   * @param {string} [args.inputSelector]  the site's remembered input
   * @param {string} args.solveId  the solve a correction from the note is for
   * @param {boolean} [args.lowConfidence]
   * @returns {{filled: boolean, inputSelector: string, message: string}}
   */
  function show(args) {
    const image = lastElement && lastElement.isConnected ? lastElement : null;
    const input = args.fill ? findInput(image, args.inputSelector) : null;
    if (input) {
      fillInput(input, args.text);
    }
    lastInput = input;
    const notes = [];
    let level = 'info';
    if (args.note) {
      notes.push(args.note);
      level = 'warn';
    }
    if (args.fill && !input) {
      notes.push('No input found for this captcha: copy the answer.');
      level = 'warn';
    } else if (!args.fill && args.lowConfidence) {
      notes.push('Not typed in: the answer is unsure. Check it, then copy it.');
      level = 'warn';
    } else if (args.lowConfidence) {
      notes.push('Unsure answer: check it before sending the form.');
      level = 'warn';
    }
    const message = notes.join(' ');
    showOverlay(image, {
      text: args.text, confidence: args.confidence, source: args.source, message, level, solveId: args.solveId,
    }, input);
    return { filled: Boolean(input), inputSelector: input ? dom.uniqueSelector(input) : '', message };
  }

  /**
   * Show a message (an error, or why nothing could be solved) under the captcha.
   * @param {{message: string, level?: string}} args
   * @returns {boolean}
   */
  function showMessage(args) {
    const image = lastElement && lastElement.isConnected ? lastElement : null;
    showOverlay(image, { message: args.message, level: args.level || 'error' });
    return true;
  }

  /**
   * The user's correction was taken: type it into the input the answer went into.
   * @param {{text: string}} args
   * @returns {boolean} typed in
   */
  function corrected(args) {
    if (!lastInput || !lastInput.isConnected || typeof args.text !== 'string') {
      return false;
    }
    fillInput(lastInput, args.text);
    return true;
  }

  self.CaptchaLensPage = Object.freeze({ hello, read, show, showMessage, corrected });
})();
