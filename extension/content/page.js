/**
 * The content script's entry points, called by the background through
 * scripting.executeScript: self.CaptchaLensPage[method](args). Results must be
 * JSON-serialisable. The element read last is kept for showing the answer.
 * TF.js never runs here: only the DOM work does.
 *
 * After an answer is shown, the box it went into is watched: the user may pick
 * another box in the note ("Wrong box?", or when the chooser was unsure), or
 * accept this one (send its form: Enter in it, a click on its form's submit button).
 * The background learns either through waitBox and remembers only such a box.
 */
(function () {
  'use strict';
  if (self.CaptchaLensPage) {
    return;
  }
  const dom = self.CaptchaLensDom;
  const { readCaptcha, restoreCovers } = self.CaptchaLensRead;
  const { chooseInput, fillInput, unfillInput, isTextInput, boxLabel } = self.CaptchaLensFill;
  const { showOverlay, removeOverlay } = self.CaptchaLensOverlay;

  /** The user's events that may accept the filled box (see onAccept). */
  const ACCEPT_EVENTS = ['keydown', 'click'];
  /** Outline of a box while the user points at its name in the note. */
  const HIGHLIGHT = '3px solid #21569f';

  /** The captcha element read last in this frame (kept until the next read). */
  let lastElement = null;
  /** The input the last answer went into (a correction goes there too). */
  let lastInput = null;
  /**
   * The last answer shown: {solveId, text, boxes, input, view, events, waiter, accepted}; events are
   * the boxes picked or accepted that the background has not collected yet (waitBox).
   */
  let current = null;

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
    endAnswer();
    const { element, ...result } = await readCaptcha(args || {});
    lastElement = element || null;
    lastInput = null;
    return result;
  }

  /**
   * The screenshot is taken: show again what covered the captcha (see CaptchaLensRead).
   * @returns {boolean}
   */
  function uncovered() {
    restoreCovers();
    return true;
  }

  /**
   * Show an answer under the captcha and type it into its box when the chooser is sure
   * (content/fill.js); otherwise the note asks which box (see pickBox).
   * @param {Object} args
   * @param {string} args.text
   * @param {number} args.confidence
   * @param {string} args.source  'browser' | 'host'
   * @param {string} [args.note]  from the background (e.g. the host was not reachable)
   * @param {boolean} args.fill  type the answer into the input
   * @param {string} [args.inputSelector]  the site's remembered input (one the user accepted or picked)
   * @param {string} args.solveId  the solve a correction from the note is for
   * @param {boolean} [args.lowConfidence]  below the threshold: the note says so
   * @param {number} [args.threshold]  the confidence threshold (for the note)
   * @returns {{filled: boolean, inputSelector: string, asked: boolean, remembered: boolean, message: string}}
   */
  function show(args) {
    const image = lastElement && lastElement.isConnected ? lastElement : null;
    const choice = args.fill ? chooseInput(image, args.inputSelector)
      : { input: null, boxes: [], held: null, remembered: false };
    const input = choice.input;
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
    const asked = Boolean(args.fill && !input && choice.boxes.length);
    if (choice.held) {
      notes.push(`Not typed in: "${boxLabel(choice.held, 0)}" holds text you typed, and CaptchaLens does not ` +
        'overwrite it. Pick the box for the answer below.');
      level = 'warn';
    } else if (asked) {
      notes.push('Not typed in: CaptchaLens is not sure which box is the captcha\'s. Pick it below.');
      level = 'warn';
    } else if (args.fill && !input) {
      notes.push('No input found for this captcha: copy the answer.');
      level = 'warn';
    }
    const unsure = `${percentSure(args.confidence)}% sure, below your threshold of ${percentSure(args.threshold)}%`;
    if (!args.fill && args.lowConfidence) {
      notes.push(`Not typed in: the answer is unsure (${unsure}). Check it, then copy it.`);
      level = 'warn';
    } else if (args.lowConfidence) {
      notes.push(`Unsure answer (${unsure}): check it before sending the form.`);
      level = 'warn';
    }
    const message = notes.join(' ');
    watchAnswer({ solveId: args.solveId, text: args.text, boxes: choice.boxes, input });
    const view = {
      text: args.text, confidence: args.confidence, source: args.source, message, level, solveId: args.solveId,
      boxes: choice.boxes.map(boxLabel), filled: input ? choice.boxes.indexOf(input) : -1, ask: asked,
    };
    current.view = view;
    showNote(view);
    return {
      filled: Boolean(input), inputSelector: input ? dom.uniqueSelector(input) : '', asked,
      remembered: Boolean(input && choice.remembered), message,
    };
  }

  /**
   * Show the note of the current answer (again, after a pick).
   * @param {Object} view  see overlay.js showOverlay
   */
  function showNote(view) {
    const image = lastElement && lastElement.isConnected ? lastElement : null;
    showOverlay(image, view, [lastInput, ...((current && current.boxes) || [])], { pick: pickBox, hover: hoverBox });
  }

  /**
   * Start watching a new answer's box (the earlier answer's watch ends).
   * @param {{solveId: string, text: string, boxes: HTMLInputElement[], input: (HTMLInputElement|null)}} answer
   */
  function watchAnswer(answer) {
    endAnswer();
    current = { ...answer, view: null, events: [], waiter: null, accepted: false };
    for (const type of ACCEPT_EVENTS) {
      window.addEventListener(type, onAccept, true);
    }
  }

  /** Stop watching the current answer (a new read; the background's waitBox hears "gone"). */
  function endAnswer() {
    for (const type of ACCEPT_EVENTS) {
      window.removeEventListener(type, onAccept, true);
    }
    hoverBox(-1);
    if (current && current.waiter) {
      current.waiter({ gone: true });
    }
    current = null;
  }

  /**
   * Hand a picked or accepted box to the background (now if it waits, else at its next waitBox).
   * @param {HTMLInputElement} box
   * @param {string} how  'picked' | 'accepted'
   */
  function report(box, how) {
    const event = { box: dom.uniqueSelector(box), how };
    if (current.waiter) {
      current.waiter(event);
    } else {
      current.events.push(event);
    }
  }

  /**
   * The user's own Enter in the filled box (or another box of its form), or click on a submit
   * button of its form: the box is accepted. Events a script makes (not isTrusted) do not count,
   * nor submit events (a script's requestSubmit() makes trusted ones).
   * @param {Event} event
   */
  function onAccept(event) {
    const box = current && current.input;
    const target = event.composedPath()[0]; // inside an open shadow root too (event.target is its host here)
    if (!event.isTrusted || !box || !box.isConnected || current.accepted || !(target instanceof Element)) {
      return;
    }
    const form = box.form;
    let accepted = false;
    if (event.type === 'keydown') {
      accepted = event.key === 'Enter' && (target === box || (Boolean(form) && target.form === form));
    } else if (form) {
      const button = target.closest('button, input[type=submit], input[type=image]');
      accepted = Boolean(button) && button.form === form && ['submit', 'image'].includes(button.type);
    }
    if (accepted) {
      current.accepted = true;
      report(box, 'accepted');
    }
  }

  /**
   * The user picked a box in the note: take the answer out of the wrong box, type it into
   * this one, and tell the background (which remembers it for the site).
   * @param {number} index  in current.boxes
   */
  function pickBox(index) {
    const box = current && current.boxes[index];
    if (!box) {
      return;
    }
    hoverBox(-1);
    if (!box.isConnected || !isTextInput(box)) {
      showNote({ ...current.view, message: 'That box is no longer on the page: solve the captcha again.',
        level: 'error' });
      return;
    }
    if (current.input && current.input !== box) {
      unfillInput(current.input);
    }
    fillInput(box, current.text);
    current.input = box;
    current.accepted = true;
    lastInput = box;
    report(box, 'picked');
    current.view = {
      ...current.view, filled: index, ask: false, level: 'info',
      message: `Typed into "${boxLabel(box, index)}". CaptchaLens will use this box on this site.`,
    };
    showNote(current.view);
  }

  /**
   * Outline the box whose name the user points at in the note (-1: none).
   * @param {number} index
   */
  function hoverBox(index) {
    for (const box of (current && current.boxes) || []) {
      if (box.dataset.captchalensOutline !== undefined) {
        box.style.outline = box.dataset.captchalensOutline;
        delete box.dataset.captchalensOutline;
      }
    }
    const box = current && current.boxes[index];
    if (box) {
      box.dataset.captchalensOutline = box.style.outline;
      box.style.outline = HIGHLIGHT;
    }
  }

  /**
   * For the background: the next box the user picked or accepted for this solve, waiting at most
   * timeoutMs. {gone: true} once another captcha was read in this frame.
   * @param {{solveId: string, timeoutMs: number}} args
   * @returns {Promise<{box?: string, how?: string, gone?: boolean}>}
   */
  function waitBox(args) {
    if (!current || current.solveId !== args.solveId) {
      return Promise.resolve({ gone: true });
    }
    if (current.events.length) {
      return Promise.resolve(current.events.shift());
    }
    const answer = current;
    return new Promise((resolve) => {
      const timer = setTimeout(() => done({}), Math.max(0, Number(args.timeoutMs) || 0));
      const done = (result) => {
        clearTimeout(timer);
        answer.waiter = null;
        resolve(result);
      };
      answer.waiter = done;
    });
  }

  /**
   * Show a message (an error, or why nothing could be solved) under the captcha.
   * @param {{message: string, level?: string, allowSite?: string}} args  allowSite: a frame's site
   *        the note offers to ask access to
   * @returns {boolean}
   */
  function showMessage(args) {
    const image = lastElement && lastElement.isConnected ? lastElement : null;
    showOverlay(image, { message: args.message, level: args.level || 'error', allowSite: args.allowSite || '' });
    return true;
  }

  /**
   * The user's correction was taken: type it into the input the answer went into.
   * @param {{text: string}} args
   * @returns {boolean} typed in
   */
  function corrected(args) {
    if (typeof args.text !== 'string') {
      return false;
    }
    if (current) {
      current.text = args.text; // a later pick types the corrected answer
    }
    if (!lastInput || !lastInput.isConnected) {
      return false;
    }
    fillInput(lastInput, args.text);
    return true;
  }

  self.CaptchaLensPage = Object.freeze({ hello, read, uncovered, show, showMessage, corrected, waitBox });
})();
