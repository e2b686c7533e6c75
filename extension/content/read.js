/**
 * Find the captcha element on the page and read the pixels it already shows.
 *
 * Never requests the image again (a site issues a new captcha per request):
 * the element is drawn to a canvas; when the canvas is tainted (a cross-origin
 * image without CORS), its on-screen rectangle is returned instead and the
 * background crops it out of a screenshot of the tab.
 */
(function () {
  'use strict';
  if (self.CaptchaLensRead) {
    return;
  }
  const dom = self.CaptchaLensDom;

  /** Size a detected captcha must have, in CSS pixels. */
  const CAPTCHA_MIN = { width: 40, height: 15 };
  const CAPTCHA_MAX = { width: 600, height: 250 };
  /** Elements that can show a captcha. */
  const IMAGE_SELECTOR = 'img, canvas, input[type=image]';
  /** Rounds of hiding what covers the captcha (a cover's own children may cover it too). */
  const UNCOVER_ROUNDS = 4;
  /** Covers come back after this long even if the background never asks (it failed, the worker stopped). */
  const UNCOVER_MAX_MS = 3000;
  /** Taken off a background image's detection score (see detectCaptcha). */
  const BACKGROUND_DOUBT = 0.5;
  /** Elements that may show a captcha as a CSS background image. */
  const BACKGROUND_SELECTOR = 'div, span, a, i, b, p, td, button, label';

  /**
   * Images showing exactly this URL (what the context menu reports as srcUrl).
   * @param {string} srcUrl
   * @returns {Element|null}  the hovered one when several match, else the first visible
   */
  function findBySrc(srcUrl) {
    const found = dom.deepQueryAll('img, input[type=image]') // open shadow roots too
      .filter((el) => el.currentSrc === srcUrl || el.src === srcUrl);
    if (found.length <= 1) {
      return found[0] || null;
    }
    return found.find((el) => el.matches(':hover')) || found.find(dom.isVisible) || found[0];
  }

  /**
   * Does the element show a CSS background image (url(), not only a gradient)? Chromium's menu
   * offers no image item for it: it is found by the page item, and read from the screen.
   * @param {Element} el
   * @returns {boolean}
   */
  function hasBackgroundImage(el) {
    return !el.matches(IMAGE_SELECTOR) && /url\(/.test(getComputedStyle(el).backgroundImage);
  }

  /**
   * Has this element the size of a captcha?
   * @param {Element} el
   * @returns {boolean}
   */
  function captchaSized(el) {
    const r = el.getBoundingClientRect();
    return r.width >= CAPTCHA_MIN.width && r.height >= CAPTCHA_MIN.height &&
      r.width <= CAPTCHA_MAX.width && r.height <= CAPTCHA_MAX.height && r.width >= r.height;
  }

  /**
   * Guess the captcha without a click on it (keyboard shortcut, popup, page menu):
   * a hovered image or canvas first, then the best-scoring visible candidate.
   * @returns {Element|null}
   */
  function detectCaptcha() {
    const hovered = dom.deepQueryAll(':hover').filter((el) => el.matches(IMAGE_SELECTOR) || hasBackgroundImage(el));
    const under = hovered.reverse().find((el) => dom.isVisible(el) && captchaSized(el));
    if (under) {
      return under;
    }
    const inputs = dom.deepQueryAll('input').filter((el) =>
      dom.isVisible(el) && ['', 'text', 'search', 'tel', 'number'].includes((el.getAttribute('type') || '').toLowerCase()));
    let best = null;
    let bestScore = 0;
    const shown = dom.deepQueryAll(`${IMAGE_SELECTOR}, ${BACKGROUND_SELECTOR}`)
      .filter((el) => el.matches(IMAGE_SELECTOR) || (captchaSized(el) && hasBackgroundImage(el)));
    for (const el of shown) {
      if (!dom.isVisible(el) || !captchaSized(el)) {
        continue;
      }
      let score = 0;
      if (CAPTCHA_WORDS_RE.test(dom.describe(el))) {
        score += 3;
      }
      const r = el.getBoundingClientRect();
      const near = inputs.filter((input) => dom.rectGap(r, input.getBoundingClientRect()) < 200);
      if (near.length) {
        score += 1;
      }
      if (near.some((input) => CAPTCHA_WORDS_RE.test(dom.describe(input)))) {
        score += 2;
      }
      if (el.closest('form') && near.some((input) => input.form === el.closest('form'))) {
        score += 1;
      }
      if (!el.matches(IMAGE_SELECTOR)) {
        score -= BACKGROUND_DOUBT; // backgrounds are often decoration: an image wins a tie, words are needed
      }
      if (score > bestScore) {
        best = el;
        bestScore = score;
      }
    }
    return bestScore >= 2 ? best : null;
  }

  /**
   * Wait until a selector matches an element, up to timeoutMs.
   * @param {string} selector
   * @param {number} timeoutMs
   * @returns {Promise<Element|null>}
   */
  function waitForElement(selector, timeoutMs) {
    const query = () => {
      try {
        return dom.deepQuery(selector);
      } catch (e) {
        return null; // a damaged remembered selector
      }
    };
    const now = query();
    if (now || timeoutMs <= 0) {
      return Promise.resolve(now);
    }
    return new Promise((resolve) => {
      const observer = new MutationObserver(() => {
        const el = query();
        if (el) {
          observer.disconnect();
          clearTimeout(timer);
          resolve(el);
        }
      });
      const timer = setTimeout(() => {
        observer.disconnect();
        resolve(query());
      }, timeoutMs);
      observer.observe(document.documentElement, { childList: true, subtree: true, attributes: true });
    });
  }

  /**
   * Is an image element fully decoded?
   * @param {Element} el
   * @returns {boolean}
   */
  function isLoaded(el) {
    return el.localName !== 'img' || (el.complete && el.naturalWidth > 0);
  }

  /**
   * Wait for an image to finish loading, up to timeoutMs.
   * @param {Element} el
   * @param {number} timeoutMs
   * @returns {Promise<boolean>} loaded
   */
  function waitForLoad(el, timeoutMs) {
    if (isLoaded(el) || timeoutMs <= 0) {
      return Promise.resolve(isLoaded(el));
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        el.removeEventListener('load', done);
        el.removeEventListener('error', done);
        resolve(isLoaded(el));
      };
      const timer = setTimeout(done, timeoutMs);
      el.addEventListener('load', done);
      el.addEventListener('error', done);
    });
  }

  /**
   * Draw the element at its own pixel size and read RGBA.
   * @param {Element} el  img or canvas
   * @param {{max_side: number, max_pixels: number}} limits  shared/image_limits.json, from the background
   * @returns {{width: number, height: number, data: string}|{tainted: true}|{error: string}}
   *          data = base64 of width*height*4 bytes
   */
  function drawPixels(el, limits) {
    let width;
    let height;
    if (el.localName === 'canvas') {
      width = el.width;
      height = el.height;
    } else if (el.localName === 'img') {
      width = el.naturalWidth;
      height = el.naturalHeight;
    } else {
      return { tainted: true }; // input[type=image] cannot be drawn: use the screen
    }
    if (!width || !height) {
      return { tainted: true }; // e.g. an SVG without a size: read it from the screen
    }
    const problem = self.CaptchaLensEngine.imageSizeProblem(limits, width, height); // before reading a pixel
    if (problem) {
      return { error: `${problem}.` };
    }
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    let image;
    try {
      ctx.drawImage(el, 0, 0, width, height);
      image = ctx.getImageData(0, 0, width, height);
    } catch (e) {
      if (e && e.name === 'SecurityError') {
        return { tainted: true };
      }
      return { error: `The image could not be drawn: ${e && e.message ? e.message : e}` };
    }
    return { width, height, data: bytesToBase64(new Uint8Array(image.data.buffer)) };
  }

  /**
   * Bytes -> base64 (results of executeScript must be JSON-serialisable).
   * @param {Uint8Array} bytes
   * @returns {string}
   */
  function bytesToBase64(bytes) {
    let bin = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(bin);
  }

  /**
   * Bring the element fully into view and let the page paint.
   * @param {Element} el
   * @returns {Promise<void>}
   */
  async function showOnScreen(el) {
    const r = el.getBoundingClientRect();
    const inside = r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth;
    if (!inside) {
      el.scrollIntoView({ block: 'center', inline: 'center', behavior: 'instant' });
    }
    await dom.afterPaint();
  }

  /** Elements hidden for a screenshot because they cover the captcha: [{el, value, priority}]. */
  let hiddenCovers = [];
  /** The timer that shows them again if the background never asks (see UNCOVER_MAX_MS). */
  let uncoverTimer = 0;

  /**
   * Hide, for the screenshot, whatever the page draws over the captcha (a position:fixed header,
   * a banner). They come back with restoreCovers(), right after the capture.
   * @param {Element} el
   * @returns {Promise<{hidden: number, covered: boolean}>} covered: still covered after trying
   */
  async function hideCovers(el) {
    let covers = dom.coveringElements(el);
    for (let round = 0; round < UNCOVER_ROUNDS && covers.length; round++) {
      for (const cover of covers) {
        const style = cover.style;
        hiddenCovers.push({ el: cover, value: style.getPropertyValue('visibility'),
          priority: style.getPropertyPriority('visibility') });
        style.setProperty('visibility', 'hidden', 'important');
      }
      clearTimeout(uncoverTimer);
      uncoverTimer = setTimeout(restoreCovers, UNCOVER_MAX_MS);
      await dom.afterPaint(); // what the screenshot will show (a page may put its header back at once)
      covers = dom.coveringElements(el);
    }
    return { hidden: hiddenCovers.length, covered: covers.length > 0 };
  }

  /** Show again what hideCovers() hid (latest first, so that each gets its own style back). */
  function restoreCovers() {
    clearTimeout(uncoverTimer);
    for (const { el, value, priority } of hiddenCovers.reverse()) {
      if (value) {
        el.style.setProperty('visibility', value, priority);
      } else {
        el.style.removeProperty('visibility');
      }
    }
    hiddenCovers = [];
  }

  /**
   * The hosts of this page's frames from other sites (CaptchaLens may not look into them).
   * @returns {string[]}
   */
  function foreignFrameHosts() {
    const hosts = new Set();
    for (const frame of dom.deepQueryAll('iframe, frame')) {
      try {
        const url = new URL(frame.src, location.href);
        if (/^https?:$/.test(url.protocol) && url.origin !== location.origin) {
          hosts.add(url.hostname);
        }
      } catch (e) {
        // no address: nothing to name
      }
    }
    return Array.from(hosts);
  }

  /**
   * What to add to "not found" messages when the captcha may be in a frame of another site.
   * @returns {string}
   */
  function framesHint() {
    const hosts = foreignFrameHosts();
    if (!hosts.length) {
      return '';
    }
    return ` This page shows a frame from ${hosts.join(', ')}: a captcha inside it cannot be read, because ` +
      `Chromium lets CaptchaLens read only the site whose page you asked about (${location.hostname}). ` +
      'Type that one yourself.';
  }

  /**
   * Locate the captcha and read its pixels.
   * @param {{srcUrl?: string, imageSelector?: string, waitMs?: number, limits: Object}} args
   *   srcUrl: the right-clicked image; imageSelector: this site's remembered image;
   *   waitMs: how long to wait for the image to appear and load (auto-solve);
   *   limits: the image limits (shared/image_limits.json)
   * @returns {Promise<Object>} {ok: true, element, kind: 'pixels', width, height, data, selector}
   *   | {ok: true, element, kind: 'screen', rect, dpr, viewport, selector, uncovered, covered}
   *   | {ok: false, code, message}; for 'screen', what covered the captcha is hidden until restoreCovers()
   */
  async function readCaptcha(args) {
    const waitMs = args.waitMs || 0;
    let el = null;
    if (args.srcUrl) {
      el = findBySrc(args.srcUrl);
      if (!el) {
        return { ok: false, code: 'not_found', message: `The clicked image is no longer on the page.${framesHint()}` };
      }
    }
    if (!el && args.imageSelector) {
      el = await waitForElement(args.imageSelector, waitMs);
    }
    if (!el) {
      el = detectCaptcha();
    }
    if (!el) {
      return {
        ok: false, code: 'no_image',
        message: 'No captcha image found on this page: right-click the captcha image and choose "Solve captcha".' +
          framesHint(),
      };
    }
    if (!(await waitForLoad(el, waitMs))) {
      const broken = el.complete; // finished, yet no pixels: the image failed to load
      return {
        ok: false, code: broken ? 'unreadable' : 'not_loaded',
        message: broken
          ? 'The image is not readable: it failed to load, so the page shows no captcha to read. Reload the captcha first.'
          : 'The captcha image has not finished loading: try again when it shows.',
      };
    }
    const selector = dom.uniqueSelector(el);
    const pixels = drawPixels(el, args.limits);
    if (pixels.error) {
      return { ok: false, code: 'unreadable', message: `The image is not readable: ${pixels.error}`, element: el };
    }
    if (!pixels.tainted) {
      return { ok: true, element: el, kind: 'pixels', selector, ...pixels };
    }
    await showOnScreen(el);
    const offset = dom.frameOffset();
    if (!offset) {
      return {
        ok: false, code: 'unreadable', element: el,
        message: 'The image is not readable: it is inside a frame of another site, so neither its pixels nor its place on screen can be read.',
      };
    }
    restoreCovers();
    const uncover = await hideCovers(el);
    const r = dom.contentRect(el, hasBackgroundImage(el)); // a background is drawn in the padding box too
    return {
      ok: true, element: el, kind: 'screen', selector, dpr: devicePixelRatio, viewport: dom.topViewport(),
      rect: { x: r.x + offset.x, y: r.y + offset.y, width: r.width, height: r.height },
      uncovered: uncover.hidden, covered: uncover.covered,
    };
  }

  self.CaptchaLensRead = Object.freeze({ readCaptcha, detectCaptcha, restoreCovers });
})();
