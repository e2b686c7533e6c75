/**
 * Options page, "Sites" table: what CaptchaLens remembers per site (image and
 * input selectors, model, the characters its corrections showed) and the per-site auto-solve switch, which asks for
 * access to that one site. Sites the local host has corrections for are listed
 * too; their corrections and "Train" cells are filled by train.js (fillTraining).
 */
/* global MESSAGE, STATE_KEYS, sitePattern, fillTraining, CaptchaLensEngine */
/* exported renderSites */
'use strict';

/**
 * All remembered sites.
 * @returns {Promise<Object>}
 */
async function readSiteTable() {
  const stored = await chrome.storage.local.get(STATE_KEYS.SITES);
  return stored[STATE_KEYS.SITES] || {};
}

/**
 * Change one site's memory (or forget it with null), then tell the background.
 * @param {string} site
 * @param {Object|null} change
 */
async function updateSite(site, change) {
  const sites = await readSiteTable();
  if (change === null) {
    delete sites[site];
  } else {
    sites[site] = { ...(sites[site] || {}), ...change };
  }
  await chrome.storage.local.set({ [STATE_KEYS.SITES]: sites });
  await chrome.runtime.sendMessage({ type: MESSAGE.SITES_CHANGED });
}

/**
 * A table cell holding an element.
 * @param {Node} child
 * @returns {HTMLTableCellElement}
 */
function cell(child) {
  const td = document.createElement('td');
  td.appendChild(child);
  return td;
}

/**
 * A text box saving one field of a site on change.
 * @param {string} site
 * @param {string} key
 * @param {string} value
 * @returns {HTMLInputElement}
 */
function siteText(site, key, value) {
  const input = document.createElement('input');
  input.type = 'text';
  input.value = value || '';
  input.spellcheck = false;
  input.setAttribute('aria-label', `${key} selector for ${site}`);
  input.addEventListener('change', () => updateSite(site, { [key]: input.value.trim() }));
  return input;
}

/**
 * The model choice of one site.
 * @param {string} site
 * @param {string} value
 * @returns {HTMLSelectElement}
 */
function siteModel(site, value) {
  const select = document.createElement('select');
  select.setAttribute('aria-label', `model for ${site}`);
  const names = new Set([...(self.knownModels || []), ...(value ? [value] : [])]);
  select.appendChild(new Option('(options default)', ''));
  for (const name of names) {
    select.appendChild(new Option(name, name));
  }
  select.value = value || '';
  select.addEventListener('change', () => updateSite(site, { model: select.value }));
  return select;
}

/**
 * What a site is read with: the families its corrections showed (from the third), with a
 * button to read it with every character again (a correction typed in the wrong case, or a
 * site that changed its scheme).
 * @param {string} site
 * @param {Object} memory
 * @returns {HTMLElement}
 */
function siteCharacters(site, memory) {
  const span = document.createElement('span');
  const n = Number.isInteger(memory.corrections) ? memory.corrections : 0;
  const need = CaptchaLensEngine.MIN_SITE_LABELS;
  if (!n || typeof memory.seen !== 'string') {
    span.textContent = 'all';
    span.title = `Read with every character the model knows until ${need} corrections show the site's`;
    return span;
  }
  if (n < need) {
    span.textContent = `all (${n} of ${need} corrections)`;
    span.title = `From ${need} corrections on, read with the characters they show (${CaptchaLensEngine.familiesText(memory.seen)} so far)`;
    return span;
  }
  span.textContent = `${CaptchaLensEngine.familiesText(memory.seen)} `;
  span.title = `From ${n} corrections: ${memory.seen}`;
  const reset = document.createElement('button');
  reset.type = 'button';
  reset.textContent = 'Read all';
  reset.setAttribute('aria-label', `read ${site} with every character again`);
  reset.addEventListener('click', async () => {
    await updateSite(site, { seen: '', corrections: 0 });
    await renderSites();
  });
  span.appendChild(reset);
  return span;
}

/**
 * Say what became of an auto-solve switch, under the Sites table.
 * @param {string} text
 * @param {boolean} ok
 */
function sayAutoSolve(text, ok) {
  const el = document.getElementById('sitesStatus');
  el.textContent = text;
  el.className = ok ? 'ok' : 'error';
}

/**
 * The auto-solve switch of one site: asks for access to the site when switched on.
 * @param {string} site
 * @param {boolean} on
 * @returns {HTMLInputElement}
 */
function siteAutoSolve(site, on) {
  const box = document.createElement('input');
  box.type = 'checkbox';
  box.checked = Boolean(on);
  box.setAttribute('aria-label', `auto-solve ${site}`);
  box.addEventListener('change', async () => {
    // Asked from this click (a user gesture), for http and https: the manifest's optional
    // host permission is *://*/*, so Chromium accepts *://site/*.
    const origins = [sitePattern(site)];
    if (box.checked) {
      let granted = false;
      let why = 'you did not allow it';
      try {
        granted = await chrome.permissions.request({ origins });
      } catch (e) {
        why = e.message;
      }
      if (!granted) {
        box.checked = false;
        sayAutoSolve(`Auto-solve stays off for ${site}: it needs access to that site, and ${why}.`, false);
        return;
      }
    } else {
      await chrome.permissions.remove({ origins }).catch(() => {});
    }
    await updateSite(site, { autoSolve: box.checked });
    const master = document.getElementById('autoSolve');
    if (!box.checked) {
      sayAutoSolve(`Auto-solve is off for ${site}; its access was given back.`, true);
    } else if (master && !master.checked) {
      sayAutoSolve(`Auto-solve is on for ${site}, once "Auto-solve remembered sites" above is ticked too.`, true);
    } else {
      sayAutoSolve(`Auto-solve is on for ${site}: its captcha is solved when its pages load.`, true);
    }
  });
  return box;
}

/**
 * An empty cell for train.js to fill.
 * @param {string} kind  'count' | 'train'
 * @returns {HTMLTableCellElement}
 */
function trainCell(kind) {
  const td = document.createElement('td');
  td.dataset.cl = kind;
  return td;
}

/** Draw the sites table from storage, plus the sites only the local host knows (train.js sets them). */
async function renderSites() {
  const sites = await readSiteTable();
  const body = document.querySelector('#sites tbody');
  body.textContent = '';
  const names = [...new Set([...Object.keys(sites), ...(self.hostSiteNames || [])])].sort();
  for (const site of names) {
    const row = document.createElement('tr');
    row.dataset.site = site;
    if (!Object.prototype.hasOwnProperty.call(sites, site)) {
      // corrections kept by the host for a site CaptchaLens does not remember (remembering is off)
      const none = document.createElement('td');
      none.colSpan = 5;
      none.className = 'hint';
      none.textContent = 'not remembered here';
      row.append(cell(document.createTextNode(site)), none, trainCell('count'), trainCell('train'), cell(document.createTextNode('')));
      body.appendChild(row);
      continue;
    }
    const memory = sites[site];
    const forget = document.createElement('button');
    forget.type = 'button';
    forget.textContent = 'Forget';
    forget.addEventListener('click', async () => {
      await chrome.permissions.remove({ origins: [sitePattern(site)] }).catch(() => {});
      await updateSite(site, null);
      await renderSites();
    });
    row.append(
      cell(document.createTextNode(site)),
      cell(siteText(site, 'image', memory.image)),
      cell(siteText(site, 'input', memory.input)),
      cell(siteModel(site, memory.model)),
      cell(siteCharacters(site, memory)),
      cell(siteAutoSolve(site, memory.autoSolve)),
      trainCell('count'),
      trainCell('train'),
      cell(forget),
    );
    body.appendChild(row);
  }
  document.getElementById('noSites').hidden = names.length > 0;
  document.getElementById('sites').hidden = names.length === 0;
  if (typeof fillTraining === 'function') {
    fillTraining();
  }
}
