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
  /** The controls of a form the note must leave clear. */
  const CONTROLS = 'input:not([type=hidden]), button, select, textarea, a[href], [role=button]';
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
   * What the note must not cover: the given elements (the filled box, the boxes offered) and
   * every visible control of their forms and of the anchor's (boxes, buttons, links), as
   * viewport rectangles.
   * @param {Element|null} anchor
   * @param {Element[]} avoid
   * @returns {DOMRect[]}
   */
  function keepClear(anchor, avoid) {
    const kept = new Set(avoid.filter((el) => el && el.isConnected));
    const forms = new Set([anchor && anchor.closest('form'), ...Array.from(kept, (el) => el.form)].filter(Boolean));
    for (const form of forms) {
      for (const el of form.querySelectorAll(CONTROLS)) {
        kept.add(el);
      }
      for (const el of form.elements) {
        kept.add(el); // controls outside the form element that belong to it (form="...")
      }
    }
    return Array.from(kept).map((el) => el.getBoundingClientRect()).filter((r) => r.width > 0 && r.height > 0);
  }

  /**
   * Place the overlay's host beside the anchor where it covers none of the form's controls:
   * right of the anchor, below it, right of / below / left of the whole form, above or left of
   * the anchor: the first spot inside the viewport that covers nothing to keep clear, else the
   * viewport's top right corner if that covers nothing, else the spot that covers least.
   * Without an anchor: the top right corner of the viewport.
   * @param {HTMLElement} host  already in the document (so its size is known)
   * @param {Element|null} anchor  the captcha element
   * @param {Element[]} avoid  the box the answer went into, the boxes offered
   */
  function place(host, anchor, avoid) {
    host.style.setProperty('z-index', '2147483647', 'important');
    const w = host.offsetWidth;
    const h = host.offsetHeight;
    const corner = { left: innerWidth - w - 12, top: 12, fixed: true };
    const spots = [];
    if (anchor && anchor.isConnected) {
      const r = anchor.getBoundingClientRect();
      const clear = [r, ...keepClear(anchor, avoid)]; // nor the captcha itself
      const box = {
        left: Math.min(...clear.map((x) => x.left)), top: Math.min(...clear.map((x) => x.top)),
        right: Math.max(...clear.map((x) => x.right)), bottom: Math.max(...clear.map((x) => x.bottom)),
      };
      spots.push(
        { left: r.right + GAP, top: r.top },
        { left: r.left, top: r.bottom + GAP },
        { left: box.right + GAP, top: r.top },
        { left: r.left, top: box.bottom + GAP },
        { left: box.left - GAP - w, top: r.top },
        { left: r.left, top: r.top - GAP - h },
        { left: r.left - GAP - w, top: r.top },
        corner,
      );
      const covered = (spot) => {
        const note = { left: spot.left, top: spot.top, right: spot.left + w, bottom: spot.top + h };
        return clear.filter((c) => overlaps(note, c)).reduce((sum, c) => sum + overlapArea(note, c), 0);
      };
      const inside = (spot) => spot.left >= 0 && spot.top >= 0 && spot.left + w <= innerWidth &&
        spot.top + h <= innerHeight;
      const best = spots.find((spot) => inside(spot) && covered(spot) === 0) ||
        spots.filter(inside).sort((x, y) => covered(x) - covered(y))[0] || corner;
      setSpot(host, best);
      return;
    }
    setSpot(host, corner);
  }

  /**
   * Put the host at a spot in viewport coordinates (absolute in the page, or fixed for the corner).
   * @param {HTMLElement} host
   * @param {{left: number, top: number, fixed?: boolean}} spot
   */
  function setSpot(host, spot) {
    const fixed = Boolean(spot.fixed);
    host.style.setProperty('position', fixed ? 'fixed' : 'absolute', 'important');
    host.style.setProperty('left', `${Math.max(0, spot.left + (fixed ? 0 : scrollX))}px`, 'important');
    host.style.setProperty('top', `${Math.max(0, spot.top + (fixed ? 0 : scrollY))}px`, 'important');
  }

  /**
   * Area two rectangles share.
   * @param {{left: number, top: number, right: number, bottom: number}} a
   * @param {{left: number, top: number, right: number, bottom: number}} b
   * @returns {number}
   */
  function overlapArea(a, b) {
    return Math.max(0, Math.min(a.right, b.right) - Math.max(a.left, b.left)) *
      Math.max(0, Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top));
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
   * @param {Element|Element[]|null} [avoid]  elements the note must not cover (the filled box, the
   *        boxes offered), with the controls of their forms and of the anchor's
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
    current = { host, frame, anchor, avoid: [].concat(avoid || []), handlers };
    place(host, anchor, current.avoid);
    host.style.removeProperty('visibility');
  }

  self.CaptchaLensOverlay = Object.freeze({ showOverlay, removeOverlay, OVERLAY_ID });
})();
