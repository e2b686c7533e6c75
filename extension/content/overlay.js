/**
 * Where the note under the captcha goes: an iframe of the extension's note
 * page (note/note.html: answer, confidence, Copy, messages, the "Wrong
 * answer? Type the right one" box) in a closed shadow root, so that the web
 * page can neither read nor change the note, nor type into it. One note per
 * frame at a time.
 */
(function () {
  'use strict';
  if (self.CaptchaLensOverlay) {
    return;
  }

  /** id of the note's host element in the page. */
  const OVERLAY_ID = 'captchalens-overlay';
  /** Gap between the image and the note, in CSS pixels. */
  const GAP = 4;
  /** Size of the note's frame until the note reports its own (CSS px). */
  const FIRST_SIZE = { width: 320, height: 40 };
  /** The note page (an extension page the web page cannot read or script). */
  const NOTE_URL = chrome.runtime.getURL('note/note.html');
  /** The extension's origin: messages from the note come from it. */
  const NOTE_ORIGIN = new URL(NOTE_URL).origin;

  /** The note's frame and what it sits next to, while shown. */
  let current = null;

  /** Remove the note from this frame, if shown. */
  function removeOverlay() {
    if (current) {
      current.host.remove();
      current = null;
    }
  }

  /**
   * Do two rectangles overlap?
   * @param {{left: number, top: number, right: number, bottom: number}} a
   * @param {{left: number, top: number, right: number, bottom: number}} b
   * @returns {boolean}
   */
  function overlaps(a, b) {
    return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  }

  /**
   * Place the overlay's host beside the anchor: right of it, else below it, below or
   * right of the filled input, above or left of the anchor — the first spot inside
   * the viewport that leaves the filled input visible.
   * Without an anchor: the top right corner of the viewport.
   * @param {HTMLElement} host  already in the document (so its size is known)
   * @param {Element|null} anchor  the captcha element
   * @param {Element|null} avoid  the input the answer went into
   */
  function place(host, anchor, avoid) {
    host.style.setProperty('z-index', '2147483647', 'important');
    if (!anchor || !anchor.isConnected) {
      host.style.setProperty('position', 'fixed', 'important');
      host.style.setProperty('right', '12px', 'important');
      host.style.setProperty('top', '12px', 'important');
      return;
    }
    const r = anchor.getBoundingClientRect();
    const w = host.offsetWidth;
    const h = host.offsetHeight;
    const keep = avoid && avoid.isConnected ? avoid.getBoundingClientRect() : null;
    const spots = [
      { left: r.right + GAP, top: r.top },
      { left: r.left, top: r.bottom + GAP },
    ];
    if (keep) {
      spots.push({ left: Math.min(r.left, keep.left), top: Math.max(r.bottom, keep.bottom) + GAP });
      spots.push({ left: keep.right + GAP, top: keep.top });
    }
    spots.push({ left: r.left, top: r.top - GAP - h }, { left: r.left - GAP - w, top: r.top });
    const fits = (spot) => {
      const box = { left: spot.left, top: spot.top, right: spot.left + w, bottom: spot.top + h };
      return box.left >= 0 && box.top >= 0 && box.right <= innerWidth && box.bottom <= innerHeight &&
        !(keep && overlaps(box, keep));
    };
    const spot = spots.find(fits) || spots[1];
    host.style.setProperty('position', 'absolute', 'important');
    host.style.setProperty('left', `${Math.max(0, spot.left + scrollX)}px`, 'important');
    host.style.setProperty('top', `${Math.max(0, spot.top + scrollY)}px`, 'important');
  }

  /**
   * Messages from the note: its size, "close", and the box the user picks or points at. Only from the note's own frame
   * (event.source cannot be faked by the page) and the extension's origin.
   * @param {MessageEvent} event
   */
  function onNoteMessage(event) {
    if (!current || event.source !== current.frame.contentWindow || event.origin !== NOTE_ORIGIN ||
        !event.data || event.data.captchalensNote !== true) {
      return;
    }
    const box = Number.isInteger(event.data.box) ? event.data.box : -1;
    if (event.data.type === 'close') {
      removeOverlay();
    } else if (event.data.type === 'pick' && current.handlers.pick && box >= 0) {
      current.handlers.pick(box); // the note sends it only on the user's own click
    } else if (event.data.type === 'hover' && current.handlers.hover) {
      current.handlers.hover(box);
    } else if (event.data.type === 'size') {
      const width = Math.min(Math.max(Number(event.data.width) || 0, 40), 600);
      const height = Math.min(Math.max(Number(event.data.height) || 0, 20), 400);
      current.frame.style.setProperty('width', `${width}px`, 'important');
      current.frame.style.setProperty('height', `${height}px`, 'important');
      place(current.host, current.anchor, current.avoid);
    }
  }
  window.addEventListener('message', onNoteMessage);

  /**
   * Show the note.
   * @param {Element|null} anchor  the captcha element
   * @param {Object} view  what the note shows (note/note.js reads it)
   * @param {string} [view.text]  the answer (absent for an error)
   * @param {number} [view.confidence]  0..1
   * @param {string} [view.source]  'browser' | 'host'
   * @param {string} [view.message]  a note or an error
   * @param {string} [view.level]  'error' | 'warn' | 'info'
   * @param {string} [view.solveId]  the solve a correction is for; the box is shown only with it
   * @param {Array<string>} [view.boxes]  names of the boxes the user may pick for the answer
   * @param {number} [view.filled]  which of them holds the answer (-1: none)
   * @param {boolean} [view.ask]  the note asks the user to pick the box
   * @param {Element|null} [avoid]  an element the note must not cover (the filled input)
   * @param {{pick?: function(number), hover?: function(number)}} [handlers]  the user picked a box,
   *        or points at one (-1: none)
   */
  function showOverlay(anchor, view, avoid = null, handlers = {}) {
    removeOverlay();
    const host = document.createElement('div');
    host.id = OVERLAY_ID;
    const root = host.attachShadow({ mode: 'closed' });
    const frame = document.createElement('iframe');
    frame.setAttribute('title', 'CaptchaLens');
    frame.setAttribute('allow', 'clipboard-write');
    frame.style.cssText = `all: initial; display: block; border: 0; color-scheme: normal;
      border-radius: 6px; box-shadow: 0 2px 10px rgba(0,0,0,.18); background: transparent;
      width: ${FIRST_SIZE.width}px; height: ${FIRST_SIZE.height}px;`;
    frame.src = `${NOTE_URL}#${encodeURIComponent(JSON.stringify(view))}`;
    root.appendChild(frame);
    host.style.setProperty('all', 'initial', 'important');
    host.style.setProperty('position', 'absolute', 'important');
    host.style.setProperty('display', 'block', 'important');
    host.style.setProperty('visibility', 'hidden', 'important');
    document.documentElement.appendChild(host);
    current = { host, frame, anchor, avoid, handlers };
    place(host, anchor, avoid);
    host.style.removeProperty('visibility');
  }

  self.CaptchaLensOverlay = Object.freeze({ showOverlay, removeOverlay, OVERLAY_ID });
})();
