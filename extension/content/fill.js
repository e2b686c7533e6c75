/**
 * Find the input that belongs with a captcha image and type the answer into it.
 */
(function () {
  'use strict';
  if (self.CaptchaLensFill) {
    return;
  }
  const dom = self.CaptchaLensDom;

  /** Input types a captcha answer can go into. */
  const TEXT_TYPES = ['', 'text', 'search', 'tel', 'number', 'url'];
  /** Inputs whose words say they are for something else. */
  const OTHER_FIELD_RE = /user|login|e-?mail|pass|search|phone|address|city|zip|first|last|full.?name/i;
  /** Outside the image's form, inputs farther than this (CSS px) do not belong with it. */
  const MAX_GAP = 300;

  /**
   * Can the user type a captcha answer into this element?
   * @param {Element} el
   * @returns {boolean}
   */
  function isTextInput(el) {
    return Boolean(el) && el.localName === 'input' &&
      TEXT_TYPES.includes((el.getAttribute('type') || '').toLowerCase()) &&
      !el.disabled && !el.readOnly && dom.isVisible(el);
  }

  /**
   * The input for this captcha: the site's remembered one, else the best of the
   * image's form (or of the page, when near the image): captcha words first,
   * then the focused one, then the nearest.
   * @param {Element|null} image
   * @param {string} [remembered]  CSS selector remembered for this site
   * @returns {HTMLInputElement|null}
   */
  function findInput(image, remembered) {
    if (remembered) {
      try {
        const el = document.querySelector(remembered);
        if (isTextInput(el)) {
          return el;
        }
      } catch (e) {
        // a damaged selector: look for the input afresh
      }
    }
    if (!image) {
      return isTextInput(document.activeElement) ? document.activeElement : null;
    }
    const form = image.closest('form');
    let candidates = form ? Array.from(form.querySelectorAll('input')).filter(isTextInput) : [];
    const inForm = candidates.length > 0;
    if (!inForm) {
      candidates = Array.from(document.querySelectorAll('input')).filter(isTextInput);
    }
    const imageRect = image.getBoundingClientRect();
    let best = null;
    let bestScore = Infinity;
    for (const el of candidates) {
      const gap = dom.rectGap(imageRect, el.getBoundingClientRect());
      const words = dom.describe(el);
      const captchaWords = CAPTCHA_WORDS_RE.test(words);
      if (!inForm && !captchaWords && gap > MAX_GAP) {
        continue;
      }
      let score = gap;
      if (captchaWords) {
        score -= 1000;
      } else if (OTHER_FIELD_RE.test(words)) {
        score += 500;
      }
      if (el === document.activeElement) {
        score -= 150;
      }
      if (score < bestScore) {
        best = el;
        bestScore = score;
      }
    }
    return best;
  }

  /**
   * Type text into an input the way a user would, so page scripts (React, Vue,
   * plain listeners) see it: the native value setter, then input and change events.
   * @param {HTMLInputElement} input
   * @param {string} text
   */
  function fillInput(input, text) {
    const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
    setter.call(input, text);
    input.dispatchEvent(new Event('input', { bubbles: true }));
    input.dispatchEvent(new Event('change', { bubbles: true }));
  }

  self.CaptchaLensFill = Object.freeze({ findInput, fillInput, isTextInput });
})();
