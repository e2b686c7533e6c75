/**
 * The note under a solved captcha: answer, confidence, Copy, messages and the
 * "Wrong answer? Type the right one" box.
 *
 * An extension page shown in an iframe (web_accessible_resources) inside a
 * closed shadow root: the web page around it can neither read nor change its
 * DOM, nor send it events. A correction is sent only on the user's own click
 * on Send or Enter in the box (event.isTrusted), only while the note is
 * visible and not covered (IntersectionObserver v2), and carries the solve's
 * id, never pixels: the service worker kept the pixels it solved and takes
 * one correction per solve.
 *
 * What to show comes in the address's fragment: #<JSON of {text, confidence,
 * source, message, level, solveId, boxes, filled, ask, allowSite}>. The note tells its
 * frame's owner (the content script) its size, when to close, and which box
 * the user picks for the answer (on the user's own click) or points at; it
 * listens to no message.
 */
/* global MESSAGE, sitePattern, percentSure */
'use strict';

/** How long the note must have been visible and uncovered before a Send counts (IntersectionObserver v2). */
const VISIBLE_DELAY_MS = 100;

/** Is the note on screen and uncovered now (null: this browser cannot tell)? */
let visibleNow = null;

/**
 * The element marked data-cl=name.
 * @param {string} name
 * @returns {HTMLElement}
 */
function part(name) {
  return document.querySelector(`[data-cl="${name}"]`);
}

/**
 * What to show, from the address's fragment.
 * @returns {Object}
 */
function readView() {
  try {
    const view = JSON.parse(decodeURIComponent(location.hash.slice(1)));
    return view && typeof view === 'object' ? view : {};
  } catch (e) {
    return { message: 'CaptchaLens: this note has nothing to show.', level: 'error' };
  }
}

/**
 * Tell the content script that placed this frame something (size, close). Nothing secret goes here.
 * @param {Object} data
 */
function tellOwner(data) {
  if (window.parent !== window) {
    window.parent.postMessage({ captchalensNote: true, ...data }, '*');
  }
}

/** Report the note's size so that the frame fits it. */
function reportSize() {
  const box = document.querySelector('.box').getBoundingClientRect();
  tellOwner({ type: 'size', width: Math.ceil(box.width), height: Math.ceil(box.height) });
}

/**
 * Copy text to the clipboard (async API, else a selected textarea).
 * @param {string} text
 * @returns {Promise<boolean>}
 */
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) {
    const area = document.createElement('textarea');
    area.value = text;
    area.style.cssText = 'position:fixed;left:-9999px;top:0;opacity:0';
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch (err) {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

/** Can this browser tell whether the note is covered (IntersectionObserver v2)? */
const CAN_TELL_VISIBLE = typeof IntersectionObserverEntry !== 'undefined' &&
  'isVisible' in IntersectionObserverEntry.prototype;

/**
 * Watch whether the note is visible and uncovered (IntersectionObserver v2: false when the
 * page covers it, makes it transparent or moves it off screen).
 */
function watchVisibility() {
  if (!CAN_TELL_VISIBLE) {
    return; // visibleNow stays null: this browser cannot tell
  }
  visibleNow = false;
  const box = document.querySelector('.box');
  const observer = new IntersectionObserver((entries) => {
    visibleNow = entries[entries.length - 1].isVisible;
    box.dataset.visible = String(visibleNow); // what the note knows, readable in its own frame only
  }, { threshold: [1.0], trackVisibility: true, delay: VISIBLE_DELAY_MS });
  observer.observe(box);
}

/**
 * Is the note visible and uncovered right now (a fresh look, after the user's click)?
 * @returns {Promise<boolean>} true when this browser cannot tell
 */
function visibleAfterClick() {
  if (!CAN_TELL_VISIBLE) {
    return Promise.resolve(true);
  }
  return new Promise((resolve) => {
    const observer = new IntersectionObserver((entries) => {
      observer.disconnect();
      resolve(entries[entries.length - 1].isVisible);
    }, { threshold: [1.0], trackVisibility: true, delay: VISIBLE_DELAY_MS });
    observer.observe(document.querySelector('.box'));
  });
}

/**
 * Wire the correction box for one solve.
 * @param {string} solveId
 */
function wireCorrection(solveId) {
  const box = part('correction');
  const input = part('correct-input');
  const send = part('correct-send');
  const status = part('correct-status');
  box.hidden = false;
  let busy = false;

  /**
   * Send the typed answer, if this event is the user's own.
   * @param {Event} event
   */
  async function submit(event) {
    if (!event.isTrusted || busy) {
      return; // a script, not the user
    }
    busy = true;
    if (visibleNow === false || !(await visibleAfterClick())) {
      status.className = 'status error';
      status.textContent = 'Not sent: the page covers or hides this note (a page may try to make you ' +
        'type into it unseen). Send it while the note is fully visible.';
      busy = false;
      reportSize();
      return;
    }
    send.disabled = true;
    status.className = 'status';
    status.textContent = 'Sending\u2026';
    let result;
    try {
      result = await chrome.runtime.sendMessage({ type: MESSAGE.CORRECTION, solveId, text: input.value });
    } catch (e) {
      result = { ok: false, message: `Not sent: ${e.message}` };
    }
    result = result || { ok: false, message: 'CaptchaLens did not answer.' };
    status.className = result.ok ? 'status' : 'status error';
    status.textContent = result.message;
    busy = false;
    if (result.ok || result.final) {
      input.disabled = true; // one correction per solve
    } else {
      send.disabled = false;
    }
    reportSize();
  }

  send.addEventListener('click', submit);
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      event.preventDefault();
      submit(event);
    }
  });
}

/**
 * The boxes the answer may go into: which one holds it, "Wrong box?", and one button per box
 * (a click, the user's own, asks the content script to type the answer there).
 * @param {{boxes: string[], filled: number, ask: boolean}} view
 */
function wireBoxes(view) {
  const names = view.boxes.map(String);
  const filled = Number.isInteger(view.filled) ? view.filled : -1;
  const choices = part('box-choices');
  for (const [index, name] of names.entries()) {
    if (index === filled) {
      continue;
    }
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.cl = 'box';
    button.textContent = name;
    button.title = 'Type the answer into this box';
    button.addEventListener('click', (event) => {
      if (event.isTrusted) {
        tellOwner({ type: 'pick', box: index });
      }
    });
    button.addEventListener('mouseenter', () => tellOwner({ type: 'hover', box: index }));
    button.addEventListener('mouseleave', () => tellOwner({ type: 'hover', box: -1 }));
    choices.appendChild(button);
  }
  const status = part('box-status');
  const wrong = part('wrong-box');
  if (filled >= 0) {
    status.textContent = `Typed into "${names[filled]}".`;
    wrong.hidden = false;
    wrong.addEventListener('click', () => {
      choices.hidden = !choices.hidden;
      reportSize();
    });
  } else if (view.ask) {
    status.textContent = 'Type it into:';
    choices.hidden = false;
  } else {
    return;
  }
  part('boxes').hidden = false;
}

/** A site name the note may offer access to (a host name, an IPv4 or a bracketed IPv6 address). */
const SITE_RE = /^(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])$/i;

/**
 * "Allow CaptchaLens to read <site>": on the user's own click, ask Chromium for access to a
 * frame's site (Chromium shows its own prompt naming the site; nothing is granted without it).
 * @param {string} site
 */
function wireAllow(site) {
  const button = part('allow-site');
  const status = part('allow-status');
  button.textContent = `Allow CaptchaLens to read ${site}`;
  part('allow').hidden = false;
  button.addEventListener('click', async (event) => {
    if (!event.isTrusted) {
      return;
    }
    let granted = false;
    let why = 'you did not allow it';
    try {
      granted = await chrome.permissions.request({ origins: [sitePattern(site)] });
    } catch (e) {
      why = e.message;
    }
    status.className = granted ? 'status' : 'status error';
    status.textContent = granted
      ? `CaptchaLens may read ${site} now: right-click the captcha again and choose "Solve captcha".`
      : `Not allowed: ${why}.`;
    button.disabled = granted;
    reportSize();
  });
}

/** Fill the note from its view and wire its buttons. */
function init() {
  const view = readView();
  if (typeof view.text === 'string') {
    const answer = part('answer');
    answer.textContent = view.text;
    answer.hidden = false;
    const copy = part('copy');
    copy.hidden = false;
    copy.addEventListener('click', async () => {
      copy.textContent = (await copyText(view.text)) ? 'Copied' : 'Copy failed';
    });
    const pct = `${percentSure(view.confidence)}% sure`;
    const where = view.source === 'host' ? 'local host' : 'in your browser';
    const meta = part('meta');
    meta.textContent = `${pct} \u00b7 solved ${where}`;
    meta.hidden = false;
  }
  if (view.message) {
    const message = part('message');
    message.textContent = String(view.message);
    message.className = `message ${['error', 'warn'].includes(view.level) ? view.level : 'info'}`;
    message.hidden = false;
  }
  if (typeof view.allowSite === 'string' && SITE_RE.test(view.allowSite)) {
    wireAllow(view.allowSite);
  }
  if (Array.isArray(view.boxes) && (view.boxes.length > 1 || view.ask)) {
    wireBoxes(view); // a single box filled needs no words
  }
  if (typeof view.solveId === 'string' && view.solveId) {
    wireCorrection(view.solveId);
  }
  part('close').addEventListener('click', () => tellOwner({ type: 'close' }));
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      tellOwner({ type: 'close' });
    }
  });
  watchVisibility();
  new ResizeObserver(reportSize).observe(document.querySelector('.box'));
  reportSize();
}

init();
