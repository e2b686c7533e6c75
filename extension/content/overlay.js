/**
 * The small overlay under the captcha: answer, confidence, copy button, messages
 * and the "Wrong answer? Type the right one" box. Lives in a shadow root so
 * the page's styles do not leak in; one overlay per frame at a time.
 */
(function () {
  'use strict';
  if (self.CaptchaLensOverlay) {
    return;
  }

  /** id of the overlay's host element. */
  const OVERLAY_ID = 'captchalens-overlay';
  /** Gap between the image and the overlay, in CSS pixels. */
  const GAP = 4;
  /** The overlay's look (inside its shadow root). */
  const STYLE = `
    :host { all: initial; }
    .box { font: 13px/1.35 system-ui, sans-serif; color: #1d2733; background: #fff;
           border: 1px solid #b8c4d4; border-radius: 6px; box-shadow: 0 2px 10px rgba(0,0,0,.18);
           padding: 6px 8px; max-width: 340px; min-width: 180px; }
    .row { display: flex; align-items: center; gap: 6px; }
    .brand { font-size: 11px; color: #21569f; font-weight: 600; }
    .answer { font: 600 16px/1.2 ui-monospace, monospace; letter-spacing: .08em; }
    .meta { font-size: 11px; color: #5a6878; }
    .message { margin-top: 4px; font-size: 12px; }
    .message.error { color: #a4161a; }
    .message.warn { color: #8a5300; }
    .grow { flex: 1; }
    button { font: inherit; font-size: 12px; padding: 1px 7px; border: 1px solid #b8c4d4;
             border-radius: 4px; background: #f4f7fb; color: #1d2733; cursor: pointer; }
    button:hover { background: #e6edf7; }
    .close { border: none; background: none; font-size: 15px; padding: 0 3px; color: #5a6878; }
    form { margin-top: 6px; }
    label { font-size: 11px; color: #5a6878; display: block; margin-bottom: 2px; }
    input { font: 13px ui-monospace, monospace; width: 9em; padding: 1px 4px;
            border: 1px solid #b8c4d4; border-radius: 4px; }
    .status { margin-top: 3px; font-size: 11px; color: #5a6878; }
  `;

  /**
   * Create an element with optional class, text and attributes.
   * @param {string} tag
   * @param {{cls?: string, text?: string, attrs?: Object}} [opts]
   * @returns {HTMLElement}
   */
  function make(tag, opts = {}) {
    const el = document.createElement(tag);
    if (opts.cls) {
      el.className = opts.cls;
    }
    if (opts.text !== undefined) {
      el.textContent = opts.text;
    }
    for (const [k, v] of Object.entries(opts.attrs || {})) {
      el.setAttribute(k, v);
    }
    return el;
  }

  /** Remove the overlay from this frame, if shown. */
  function removeOverlay() {
    const old = document.getElementById(OVERLAY_ID);
    if (old) {
      old.remove();
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
   * Copy text to the clipboard (async API, else a selected textarea).
   * @param {string} text
   * @returns {Promise<boolean>}
   */
  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (e) {
      const area = make('textarea', { text });
      area.style.cssText = 'position:fixed;left:-9999px;top:0;opacity:0';
      document.documentElement.appendChild(area);
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

  /**
   * Show the overlay.
   * @param {Element|null} anchor  the captcha element
   * @param {Object} view
   * @param {string} [view.text]  the answer (absent for an error)
   * @param {number} [view.confidence]  0..1
   * @param {string} [view.source]  'browser' | 'host'
   * @param {string} [view.message]  a note or an error
   * @param {string} [view.level]  'error' | 'warn' | 'info'
   * @param {function(string): Promise<{ok: boolean, message: string}>} [view.onCorrect]
   *        called with the typed answer; the box is shown only when given
   * @param {Element|null} [view.avoid]  an element the overlay must not cover (the filled input)
   * @returns {ShadowRoot}
   */
  function showOverlay(anchor, view) {
    removeOverlay();
    const host = make('div', { attrs: { id: OVERLAY_ID, role: 'dialog', 'aria-label': 'CaptchaLens' } });
    const root = host.attachShadow({ mode: 'open' });
    root.appendChild(make('style', { text: STYLE }));
    const box = make('div', { cls: 'box' });
    root.appendChild(box);

    const head = make('div', { cls: 'row' });
    head.appendChild(make('span', { cls: 'brand', text: 'CaptchaLens' }));
    if (view.text !== undefined) {
      head.appendChild(make('span', { cls: 'answer', text: view.text, attrs: { 'data-cl': 'answer' } }));
    }
    head.appendChild(make('span', { cls: 'grow' }));
    if (view.text !== undefined) {
      const copy = make('button', { text: 'Copy', attrs: { type: 'button', 'data-cl': 'copy' } });
      copy.addEventListener('click', async () => {
        copy.textContent = (await copyText(view.text)) ? 'Copied' : 'Copy failed';
      });
      head.appendChild(copy);
    }
    const close = make('button', { cls: 'close', text: '\u00d7', attrs: { type: 'button', title: 'Close', 'data-cl': 'close' } });
    close.addEventListener('click', removeOverlay);
    head.appendChild(close);
    box.appendChild(head);

    if (view.text !== undefined) {
      const pct = `${Math.round(100 * (view.confidence || 0))}% sure`;
      const where = view.source === 'host' ? 'local host' : 'in your browser';
      box.appendChild(make('div', { cls: 'meta', text: `${pct} \u00b7 solved ${where}`, attrs: { 'data-cl': 'meta' } }));
    }
    if (view.message) {
      box.appendChild(make('div', {
        cls: `message ${view.level || 'info'}`, text: view.message, attrs: { 'data-cl': 'message', role: 'status' },
      }));
    }
    if (view.onCorrect) {
      const form = make('form', { attrs: { 'data-cl': 'correction' } });
      const id = 'captchalens-correct';
      form.appendChild(make('label', { text: 'Wrong answer? Type the right one', attrs: { for: id } }));
      const row = make('div', { cls: 'row' });
      const input = make('input', {
        attrs: { id, type: 'text', autocomplete: 'off', spellcheck: 'false', 'data-cl': 'correct-input' },
      });
      row.appendChild(input);
      row.appendChild(make('button', { text: 'Send', attrs: { type: 'submit', 'data-cl': 'correct-send' } }));
      form.appendChild(row);
      const status = make('div', { cls: 'status', attrs: { 'data-cl': 'correct-status', role: 'status' } });
      form.appendChild(status);
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        status.textContent = 'Sending\u2026';
        try {
          const result = await view.onCorrect(input.value);
          status.textContent = result.message;
        } catch (e) {
          status.textContent = `Not sent: ${e && e.message ? e.message : e}`;
        }
      });
      box.appendChild(form);
    }
    host.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        removeOverlay();
      }
    });
    host.style.setProperty('position', 'absolute', 'important');
    host.style.setProperty('display', 'block', 'important');
    host.style.setProperty('visibility', 'hidden', 'important');
    document.documentElement.appendChild(host);
    place(host, anchor, view.avoid || null);
    host.style.removeProperty('visibility');
    return root;
  }

  self.CaptchaLensOverlay = Object.freeze({ showOverlay, removeOverlay, OVERLAY_ID });
})();
