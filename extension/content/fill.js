/**
 * Choose the box a captcha's answer goes into, and type it in.
 *
 * The chooser never takes a box that holds text the user typed, never a box whose type, name,
 * id, autocomplete or label says e-mail, password, user name, phone or search, and ranks the
 * rest: the image's own form first, captcha-like names and labels, then the boxes that follow
 * the image. It says whether it is sure; when it is not, the note asks the user to pick.
 */
(function () {
  'use strict';
  if (self.CaptchaLensFill) {
    return;
  }
  const dom = self.CaptchaLensDom;

  /** Input types a captcha answer can go into (email, password, tel, search... never). */
  const TEXT_TYPES = ['', 'text', 'number'];
  /** Words (name, id, class, placeholder, label...) that say a box is for something else. */
  const OTHER_FIELD_RE = new RegExp([
    'e-?mail', 'user', 'login', 'account', 'pass(?:word|wd)?\\b', 'pwd', 'phone', 'mobile', '\\btel\\b',
    'search', 'query', 'address', 'city', 'zip', 'postal', 'first.?name', 'last.?name', 'full.?name',
    'surname', 'nick',
  ].join('|'), 'i');
  /** autocomplete tokens of boxes that are not a captcha's. */
  const OTHER_AUTOCOMPLETE_RE = /^(?:name|given-name|family-name|nickname|email|username|current-password|new-password|tel.*|street-address|address.*|postal-code|cc-.*|organization)$/;
  /** Weaker hints that a box wants what an image shows (a plain "Code" label, "the characters"). */
  const HINT_RE = /\bcode\b|character|letters|symbols|digits|shown|picture|image|the text|the word/i;
  /** Outside the image's form, boxes farther than this (CSS px) do not belong with it. */
  const MAX_GAP = 300;
  /** At most this many boxes are offered to pick from. */
  const MAX_BOXES = 6;
  /** Longest box name shown in the note. */
  const MAX_LABEL = 32;

  /** What CaptchaLens typed into each box (anything else in a box is the user's). */
  const typed = new WeakMap();

  /**
   * Is this an enabled, visible input of a type a captcha answer can go into?
   * @param {Element} el
   * @returns {boolean}
   */
  function isTextInput(el) {
    return Boolean(el) && el.localName === 'input' &&
      TEXT_TYPES.includes((el.getAttribute('type') || '').toLowerCase()) &&
      !el.disabled && !el.readOnly && dom.isVisible(el);
  }

  /**
   * The text of the box's labels (<label for>, a wrapping <label>, aria-labelledby).
   * @param {HTMLInputElement} el
   * @returns {string}
   */
  function labelText(el) {
    const parts = Array.from(el.labels || []).map((l) => l.textContent);
    for (const id of (el.getAttribute('aria-labelledby') || '').split(/\s+/).filter(Boolean)) {
      const ref = el.getRootNode().getElementById ? el.getRootNode().getElementById(id) : null;
      if (ref) {
        parts.push(ref.textContent);
      }
    }
    return parts.join(' ').replace(/\s+/g, ' ').trim();
  }

  /**
   * Everything that says what a box is for: its attributes and its labels.
   * @param {HTMLInputElement} el
   * @returns {string}
   */
  function boxWords(el) {
    return `${dom.describe(el)} ${labelText(el)}`;
  }

  /**
   * Does the box say it is for something else (e-mail, password, user name, phone, search...)?
   * Its type and autocomplete decide alone; its words unless they also say captcha.
   * @param {HTMLInputElement} el
   * @returns {boolean}
   */
  function isOtherField(el) {
    if (!isTextInput(el)) {
      return true;
    }
    const tokens = (el.getAttribute('autocomplete') || '').toLowerCase().split(/\s+/);
    if (tokens.some((t) => OTHER_AUTOCOMPLETE_RE.test(t))) {
      return true;
    }
    const words = boxWords(el);
    return OTHER_FIELD_RE.test(words) && !CAPTCHA_WORDS_RE.test(words);
  }

  /**
   * Does the box hold text the user typed (anything CaptchaLens did not put there)?
   * @param {HTMLInputElement} el
   * @returns {boolean}
   */
  function holdsUserText(el) {
    return el.value !== '' && typed.get(el) !== el.value;
  }

  /**
   * A short name for the box, as the user reads it on the page.
   * @param {HTMLInputElement} el
   * @param {number} index  its place in the list (for boxes without any name)
   * @returns {string}
   */
  function boxLabel(el, index) {
    const name = labelText(el) || el.getAttribute('aria-label') || el.placeholder || el.title ||
      el.name || el.id || `Box ${index + 1}`;
    return name.length > MAX_LABEL ? `${name.slice(0, MAX_LABEL - 1)}\u2026` : name;
  }

  /**
   * How captcha-like a box's words are: 0 captcha words, 1 a hint ("Code"), 2 nothing.
   * @param {HTMLInputElement} el
   * @returns {number}
   */
  function captchaTier(el) {
    const words = boxWords(el);
    if (CAPTCHA_WORDS_RE.test(words)) {
      return 0;
    }
    return HINT_RE.test(words) ? 1 : 2;
  }

  /**
   * The boxes a captcha image may belong with, best first, with what the ranking saw.
   * @param {Element} image
   * @returns {Array<{el: HTMLInputElement, sameForm: boolean, tier: number, after: boolean, gap: number}>}
   */
  function rankBoxes(image) {
    const form = image.closest('form');
    const roots = [image.getRootNode()];
    if (roots[0] !== document) {
      roots.push(document); // an image in a shadow root: its boxes may be inside it or outside
    }
    const seen = new Set();
    const imageRect = image.getBoundingClientRect();
    const ranked = [];
    let order = 0;
    for (const root of roots) {
      for (const el of root.querySelectorAll('input')) {
        order += 1;
        if (seen.has(el) || isOtherField(el)) {
          continue;
        }
        seen.add(el);
        const sameForm = Boolean(form) && el.form === form;
        const tier = captchaTier(el);
        const gap = dom.rectGap(imageRect, el.getBoundingClientRect());
        if (!sameForm && tier > 0 && gap > MAX_GAP) {
          continue;
        }
        const after = Boolean(image.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING);
        ranked.push({ el, sameForm, tier, after, gap, order });
      }
    }
    ranked.sort((a, b) => (b.sameForm - a.sameForm) || (a.tier - b.tier) || (b.after - a.after) ||
      (a.after ? a.order - b.order : b.order - a.order) || (a.gap - b.gap));
    return ranked.slice(0, MAX_BOXES);
  }

  /**
   * Is the first of the ranked boxes clearly the captcha's? It is when it is the only one of its
   * scope (the image's form, or the page), when its words are more captcha-like than the next
   * one's, or when it is the only box that follows the image in its form.
   * A box outside the captcha's own form with nothing captcha-like about it never is.
   * @param {Array<Object>} ranked  rankBoxes()
   * @param {boolean} inForm  the captcha is in a form
   * @returns {boolean}
   */
  function clearlyFirst(ranked, inForm) {
    const [best, ...rest] = ranked;
    if (inForm && !best.sameForm && best.tier === 2) {
      return false;
    }
    const rivals = rest.filter((r) => r.sameForm === best.sameForm);
    if (!rivals.length) {
      return true;
    }
    if (best.tier < rivals[0].tier) {
      return true;
    }
    return best.sameForm && best.after && !rivals.some((r) => r.after && r.tier === best.tier);
  }

  /**
   * Choose the box for this captcha's answer.
   * @param {Element|null} image
   * @param {string} [remembered]  CSS selector remembered for this site (a box the user accepted or picked)
   * @returns {{input: (HTMLInputElement|null), sure: boolean, remembered: boolean, boxes: HTMLInputElement[],
   *            held: (HTMLInputElement|null)}}
   *   input: the box to fill now (null: ask the user); boxes: what the user may pick from, best first;
   *   held: the chosen box holds the user's own text, so it is not filled
   */
  function chooseInput(image, remembered) {
    let mine = null;
    if (remembered) {
      try {
        const el = dom.deepQuery(remembered);
        mine = el && !isOtherField(el) ? el : null; // never a box that says e-mail, even if remembered
      } catch (e) {
        mine = null; // a damaged selector: look for the box afresh
      }
    }
    let ranked = image ? rankBoxes(image) : [];
    if (!image && !mine && !isOtherField(document.activeElement)) {
      mine = document.activeElement;
    }
    let boxes = ranked.map((r) => r.el);
    let best = mine;
    let sure = Boolean(mine);
    if (mine) {
      boxes = [mine, ...boxes.filter((el) => el !== mine)].slice(0, MAX_BOXES);
    } else if (ranked.length) {
      // Boxes the user typed into are someone else's, unless they outrank every free box.
      const free = ranked.filter((r) => !holdsUserText(r.el));
      const top = ranked[0];
      if (!free.length || (top !== free[0] && (top.tier < free[0].tier || top.sameForm > free[0].sameForm))) {
        return { input: null, sure: false, remembered: false, boxes, held: top.el };
      }
      best = free[0].el;
      sure = clearlyFirst(free, Boolean(image.closest('form')));
    }
    if (best && holdsUserText(best)) {
      return { input: null, sure: false, remembered: Boolean(mine), boxes, held: best };
    }
    return { input: sure ? best : null, sure, remembered: Boolean(mine), boxes, held: null };
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
    typed.set(input, text);
    input.dispatchEvent(new Event('input', { bubbles: true }));
    input.dispatchEvent(new Event('change', { bubbles: true }));
  }

  /**
   * Take back an answer CaptchaLens typed into a box (the user said it is the wrong box);
   * a box the user has typed into since is left alone.
   * @param {HTMLInputElement|null} input
   */
  function unfillInput(input) {
    if (input && input.isConnected && !holdsUserText(input) && input.value !== '') {
      fillInput(input, '');
    }
  }

  self.CaptchaLensFill = Object.freeze({
    chooseInput, fillInput, unfillInput, isTextInput, isOtherField, holdsUserText, boxLabel,
  });
})();
