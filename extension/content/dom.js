/**
 * DOM helpers for the content scripts: visibility, geometry, stable selectors.
 * Injected on demand (scripting.executeScript), possibly more than once per page:
 * everything sits in one namespace that is defined only once.
 */
(function () {
  'use strict';
  if (self.CaptchaLensDom) {
    return;
  }

  /** Joins a shadow host's selector and the selector inside its open shadow root. */
  const SHADOW_SEP = ' >>> ';
  /** Where an element is hit-tested for what covers it: fractions of its width and height, edge to edge. */
  const COVER_GRID = [0.01, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.99];
  /** Attributes whose values describe an element (for captcha-word matching). */
  const DESCRIBING_ATTRS = ['id', 'name', 'class', 'alt', 'title', 'placeholder', 'aria-label', 'src', 'autocomplete'];

  /**
   * Is the element rendered and big enough to see?
   * @param {Element} el
   * @returns {boolean}
   */
  function isVisible(el) {
    if (!el || !el.isConnected) {
      return false;
    }
    const r = el.getBoundingClientRect();
    if (r.width < 2 || r.height < 2) {
      return false;
    }
    const cs = getComputedStyle(el);
    return cs.visibility !== 'hidden' && cs.display !== 'none' && Number(cs.opacity) > 0.05;
  }

  /**
   * The element's describing attribute values, joined (for regex tests).
   * @param {Element} el
   * @returns {string}
   */
  function describe(el) {
    return DESCRIBING_ATTRS.map((a) => el.getAttribute(a) || '').join(' ');
  }

  /**
   * Does exactly this element match the selector in its document?
   * @param {Element} el
   * @param {string} selector
   * @returns {boolean}
   */
  function selectsOnly(el, selector) {
    try {
      const found = el.getRootNode().querySelectorAll(selector);
      return found.length === 1 && found[0] === el;
    } catch (e) {
      return false;
    }
  }

  /**
   * A CSS selector that finds this element again on a later visit of the page:
   * id, then a describing attribute, then a path from the nearest ancestor with an id.
   * Image src queries are left out (sites change them per captcha).
   * @param {Element} el
   * @returns {string}
   */
  function uniqueSelector(el) {
    const root = el.getRootNode();
    if (root instanceof ShadowRoot) {
      return `${uniqueSelector(root.host)}${SHADOW_SEP}${selectorInRoot(el)}`;
    }
    return selectorInRoot(el);
  }

  /**
   * A selector that finds this element in its own tree (document or shadow root).
   * @param {Element} el
   * @returns {string}
   */
  function selectorInRoot(el) {
    const tag = el.localName;
    if (el.id && selectsOnly(el, `#${CSS.escape(el.id)}`)) {
      return `#${CSS.escape(el.id)}`;
    }
    for (const attr of ['name', 'alt', 'aria-label', 'placeholder']) {
      const value = el.getAttribute(attr);
      const selector = `${tag}[${attr}="${CSS.escape(value || '')}"]`;
      if (value && selectsOnly(el, selector)) {
        return selector;
      }
    }
    const src = (el.getAttribute('src') || '').split(/[?#]/)[0];
    if (src && !src.startsWith('data:') && !src.startsWith('blob:')) {
      const selector = `${tag}[src^="${CSS.escape(src)}"]`;
      if (selectsOnly(el, selector)) {
        return selector;
      }
    }
    const parts = [];
    let node = el;
    while (node && node.nodeType === 1 && node !== el.ownerDocument.documentElement) { // (stops at a shadow root too)
      if (node !== el && node.id && selectsOnly(node, `#${CSS.escape(node.id)}`)) {
        parts.unshift(`#${CSS.escape(node.id)}`);
        break;
      }
      let part = node.localName;
      const parent = node.parentElement;
      if (parent) {
        const same = Array.from(parent.children).filter((c) => c.localName === node.localName);
        if (same.length > 1) {
          part += `:nth-of-type(${same.indexOf(node) + 1})`;
        }
      }
      parts.unshift(part);
      node = parent;
    }
    return parts.join(' > ');
  }

  /**
   * Every element matching the selector in the document and in all the open shadow roots in it.
   * @param {string} selector
   * @returns {Element[]}
   */
  function deepQueryAll(selector) {
    const found = [];
    const roots = [document];
    while (roots.length) {
      const root = roots.shift();
      found.push(...root.querySelectorAll(selector));
      for (const el of root.querySelectorAll('*')) {
        if (el.shadowRoot) {
          roots.push(el.shadowRoot);
        }
      }
    }
    return found;
  }

  /**
   * The element a uniqueSelector() names (through open shadow roots), or null.
   * @param {string} selector
   * @returns {Element|null}
   * @throws {DOMException} for a selector that is not valid CSS
   */
  function deepQuery(selector) {
    const parts = selector.split(SHADOW_SEP);
    let scope = document;
    for (const part of parts.slice(0, -1)) {
      const host = scope.querySelector(part);
      scope = host && host.shadowRoot;
      if (!scope) {
        return null;
      }
    }
    return scope.querySelector(parts[parts.length - 1]);
  }

  /**
   * The element's content box (inside border and padding) in viewport CSS pixels; with
   * padding = true its padding box (where a CSS background image is drawn).
   * @param {Element} el
   * @param {boolean} [padding]
   * @returns {{x: number, y: number, width: number, height: number}}
   */
  function contentRect(el, padding = false) {
    const r = el.getBoundingClientRect();
    const cs = getComputedStyle(el);
    const pad = (side) => (padding ? 0 : parseFloat(cs[`padding${side}`]));
    const left = parseFloat(cs.borderLeftWidth) + pad('Left');
    const right = parseFloat(cs.borderRightWidth) + pad('Right');
    const top = parseFloat(cs.borderTopWidth) + pad('Top');
    const bottom = parseFloat(cs.borderBottomWidth) + pad('Bottom');
    return {
      x: r.left + left, y: r.top + top,
      width: Math.max(0, r.width - left - right), height: Math.max(0, r.height - top - bottom),
    };
  }

  /**
   * Gap in CSS pixels between two rectangles (0 when they touch or overlap).
   * @param {DOMRect} a
   * @param {DOMRect} b
   * @returns {number}
   */
  function rectGap(a, b) {
    const dx = Math.max(0, a.left - b.right, b.left - a.right);
    const dy = Math.max(0, a.top - b.bottom, b.top - a.bottom);
    return Math.hypot(dx, dy);
  }

  /**
   * Offset of this frame's viewport in the top window's viewport, or null when
   * an ancestor frame is cross-origin (its geometry cannot be read).
   * @returns {{x: number, y: number}|null}
   */
  function frameOffset() {
    let x = 0;
    let y = 0;
    let win = window;
    try {
      while (win !== win.top) {
        const frame = win.frameElement;
        if (!frame) {
          return null;
        }
        const r = contentRect(frame);
        x += r.x;
        y += r.y;
        win = win.parent;
      }
    } catch (e) {
      return null;
    }
    return { x, y };
  }

  /**
   * Size of the top window's viewport in CSS pixels (what a tab screenshot shows),
   * or null when an ancestor frame is cross-origin.
   * @returns {{width: number, height: number}|null}
   */
  function topViewport() {
    try {
      return { width: window.top.innerWidth, height: window.top.innerHeight };
    } catch (e) {
      return null;
    }
  }

  /**
   * Resolve after the browser has painted twice (so a scroll or a removed
   * overlay shows in a screenshot); gives up waiting after maxMs (hidden tabs do not paint).
   * @param {number} [maxMs]
   * @returns {Promise<void>}
   */
  function afterPaint(maxMs = 250) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, maxMs);
      requestAnimationFrame(() => requestAnimationFrame(() => {
        clearTimeout(timer);
        resolve();
      }));
    });
  }

  /**
   * Is node inside el, counting shadow roots as inside their hosts?
   * @param {Node} el
   * @param {Node} node
   * @returns {boolean}
   */
  function holds(el, node) {
    for (let n = node; n; n = n.parentNode || n.host) {
      if (n === el) {
        return true;
      }
    }
    return false;
  }

  /**
   * Make the elements over this rectangle that clicks pass through (pointer-events: none: a
   * watermark, a click-through header) hit-testable, for one hit test: elementFromPoint skips
   * them, yet they are drawn, and a screenshot shows them. Returns the function that puts their
   * own style back.
   * @param {DOMRect} r
   * @returns {function(): void}
   */
  function hitTestPassThrough(r) {
    const changed = [];
    for (const other of deepQueryAll('*')) {
      const o = other.getBoundingClientRect();
      if (o.right <= r.left || o.left >= r.right || o.bottom <= r.top || o.top >= r.bottom ||
          getComputedStyle(other).pointerEvents !== 'none') {
        continue;
      }
      changed.push({ other, value: other.style.getPropertyValue('pointer-events'),
        priority: other.style.getPropertyPriority('pointer-events') });
      other.style.setProperty('pointer-events', 'auto', 'important');
    }
    return () => {
      for (const { other, value, priority } of changed.reverse()) {
        if (value) {
          other.style.setProperty('pointer-events', value, priority);
        } else {
          other.style.removeProperty('pointer-events');
        }
      }
    };
  }

  /**
   * The elements drawn on top of el where it is on screen (a fixed header, a cookie banner, a
   * watermark clicks pass through...): hit-tested at a grid of points from edge to edge.
   * @param {Element} el
   * @returns {Element[]}
   */
  function coveringElements(el) {
    const r = el.getBoundingClientRect();
    const root = el.getRootNode().elementFromPoint ? el.getRootNode() : document;
    const found = new Set();
    const restore = hitTestPassThrough(r);
    try {
      for (const fx of COVER_GRID) {
        for (const fy of COVER_GRID) {
          const x = r.left + fx * r.width;
          const y = r.top + fy * r.height;
          if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight) {
            continue;
          }
          const top = root.elementFromPoint(x, y);
          if (top && !holds(el, top) && !holds(top, el)) {
            found.add(top);
          }
        }
      }
    } finally {
      restore();
    }
    return Array.from(found);
  }

  self.CaptchaLensDom = Object.freeze({
    isVisible, describe, uniqueSelector, contentRect, rectGap, frameOffset, topViewport, afterPaint,
    holds, coveringElements, deepQueryAll, deepQuery,
  });
})();
