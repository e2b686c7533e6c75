/**
 * Options page, training a site's model: the Sites table's "Corrections" and "Site model"
 * cells (how many corrections the local host keeps per site; "Train a model for this site"),
 * and the running job's progress, Cancel and result. The host trains; the background installs
 * the finished model in the browser (background/training.js). The page polls the job's status:
 * each poll is a request, which also keeps the native host's connection (and so the job) alive.
 */
/* global MESSAGE, ask, say, renderSites */
/* exported fillTraining */
'use strict';

/** How often a running job's status is asked for. */
const TRAIN_POLL_MS = 1000;
/** Phases in which a job still runs (native_host/jobs.py ACTIVE). */
const TRAIN_ACTIVE = ['reading', 'training', 'converting', 'installing'];

/** The background's last TRAIN_SITES answer (null until it came). */
let trainOverview = null;
/** The job this page follows ('' when none, 'starting' while asking for one), and its site. */
let followed = '';
let followedSite = '';

/**
 * A fraction as a percentage.
 * @param {?number} x
 * @returns {string}
 */
function percent(x) {
  return typeof x === 'number' ? `${(x * 100).toFixed(1)}%` : 'not measured yet';
}

/**
 * Seconds in words.
 * @param {number} s
 * @returns {string}
 */
function duration(s) {
  return s >= 90 ? `${Math.round(s / 60)} min` : `${Math.max(1, Math.round(s))} s`;
}

/**
 * What the host knows of a site, and the model installed here for it.
 * @param {string} site
 * @returns {{host: ?Object, mine: ?Object}}
 */
function siteTraining(site) {
  const o = trainOverview;
  const host = o && o.reachable ? (o.sites || []).find((s) => s.site === site) || null : null;
  const mine = o ? Object.values(o.installed || {}).find((m) => m.site === site) || null : null;
  return { host, mine };
}

/**
 * Why a site's Train button cannot be pressed now ('' when it can).
 * @param {string} site
 * @param {?Object} host  the host's entry for the site
 * @returns {string}
 */
function trainBlocked(site, host) {
  const o = trainOverview;
  if (!o) {
    return 'Asking the local host\u2026';
  }
  if (!o.reachable) {
    return 'The local host cannot be reached (see below the table).';
  }
  if (followed || o.running) {
    const running = followed ? followedSite : (o.job && o.job.site);
    return running === site ? 'It is being trained now.'
      : `A train job is running${running ? ` for ${running}` : ''}: one at a time.`;
  }
  const have = host ? host.samples : 0;
  if (have < o.minSamples) {
    return `${have} of ${o.minSamples} corrections: correct ${o.minSamples - have} more of its captchas first ` +
      '(a few hundred train a better model).';
  }
  return '';
}

/** Fill the Corrections and Site model cells of the Sites table (sites.js calls it after drawing). */
function fillTraining() {
  for (const row of document.querySelectorAll('#sites tbody tr')) {
    const site = row.dataset.site;
    const count = row.querySelector('td[data-cl=count]');
    const cell = row.querySelector('td[data-cl=train]');
    if (!count || !cell) {
      continue;
    }
    const { host, mine } = siteTraining(site);
    const o = trainOverview;
    count.textContent = !o ? '\u2026' : (o.reachable ? String(host ? host.samples : 0) : '?');
    cell.textContent = '';
    const have = document.createElement('span');
    have.dataset.cl = 'installed';
    have.textContent = mine ? `${mine.name}, version ${mine.version}, in your browser` : 'none yet';
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.cl = 'train';
    button.textContent = host && host.has_model ? 'Retrain (goes on from its model)' : 'Train a model for this site';
    const why = trainBlocked(site, host);
    button.disabled = Boolean(why);
    button.title = why;
    button.setAttribute('aria-label', `${button.textContent}: ${site}`);
    button.addEventListener('click', () => startTraining(host));
    const reason = document.createElement('span');
    reason.className = 'why';
    reason.dataset.cl = 'why';
    reason.textContent = why;
    cell.append(have, document.createElement('br'), button, reason);
  }
}

/** Ask the background what the host has, then redraw the table (and follow a running job). */
async function refreshTraining() {
  trainOverview = await ask({ type: MESSAGE.TRAIN_SITES });
  if (!trainOverview.ok) {
    trainOverview = { reachable: false, error: trainOverview.error, installed: {} };
  }
  self.hostSiteNames = trainOverview.reachable ? trainOverview.sites.map((s) => s.site) : [];
  if (trainOverview.reachable) {
    say('trainHost', '', true);
  } else {
    say('trainHost', `Training a site's model needs the local host: ${trainOverview.error}`, false);
  }
  await renderSites();
  const job = trainOverview.job;
  if (trainOverview.running && !followed) {
    followJob(job);
  } else if (job && job.installError && !followed) {
    say('trainResult', job.installError, false); // the latest job's model: trained, but refused here
  }
}

/**
 * "Train a model for this site".
 * @param {Object} host  the host's entry for the site
 */
async function startTraining(host) {
  say('trainResult', '', true);
  followed = 'starting';
  followedSite = host.site;
  fillTraining();
  const answer = await ask({ type: MESSAGE.TRAIN_START, site: host.site, fromPrevious: host.has_model });
  if (!answer.ok) {
    followed = '';
    say('trainResult', `Not started: ${answer.error}`, false);
    await refreshTraining();
    return;
  }
  followed = '';
  followJob(answer.job);
}

/**
 * One line for a running job.
 * @param {Object} job  the host's train_status
 * @returns {string}
 */
function progressLine(job) {
  const from = job.base ? ', going on from its previous model' : '';
  const left = typeof job.left_s === 'number' ? `, about ${duration(job.left_s)} left` : '';
  switch (job.phase) {
    case 'reading':
      return `Starting: reading the ${job.samples} corrections of ${job.site}${from}\u2026`;
    case 'training':
      return `Training ${job.site}${from}: epoch ${job.epoch} of ${job.epochs || '?'}, validation accuracy ` +
        `${percent(job.val_acc)}${left}.`;
    case 'converting':
      return `Converting ${job.site}'s model for the browser and checking it against the host's${left}\u2026`;
    default:
      return `Installing ${job.site}'s model\u2026`;
  }
}

/**
 * Show a job and poll it until it ends.
 * @param {Object} job
 */
async function followJob(job) {
  followed = job.id;
  followedSite = job.site;
  fillTraining();
  const box = document.getElementById('trainJob');
  const bar = document.getElementById('trainBar');
  box.hidden = false;
  while (TRAIN_ACTIVE.includes(job.phase)) {
    say('trainProgress', progressLine(job), true);
    bar.value = job.phase === 'training' && job.epochs ? 0.1 + 0.7 * (job.epoch / job.epochs)
      : { reading: 0.05, converting: 0.85, installing: 0.95 }[job.phase] || 0;
    await new Promise((resolve) => setTimeout(resolve, TRAIN_POLL_MS));
    const answer = await ask({ type: MESSAGE.TRAIN_STATUS, id: job.id });
    if (!answer.ok) {
      say('trainProgress', `Lost track of the train job ${job.id}: ${answer.error}`, false);
      followed = '';
      await refreshTraining();
      return;
    }
    job = answer.job;
  }
  box.hidden = true;
  followed = '';
  showResult(job);
  await refreshTraining();
}

/**
 * A job whose model the host kept back (training/retrain.py beats_base): its figures beside the
 * general reader's on the same held-back corrections.
 * @param {Object} job
 * @returns {string}
 */
function keptWords(job) {
  const m = job.result.metrics || {};
  const n = m.val_n || 0;
  const read = (acc, cer) => `${Math.round((acc || 0) * n)} (${percent(cer || 0)} of the characters wrong)`;
  return `Kept the general reader for ${job.site}: of the ${n} corrections held back from training, the new ` +
    `model (trained on ${job.samples}) read ${read(m.val_captcha_acc, m.val_cer)} and the general reader ` +
    `${read(m.base_val_captcha_acc, m.base_val_cer)}, with the characters your corrections use. Nothing was ` +
    `installed and ${job.site} is read as before; correct more of its captchas and train again.`;
}

/**
 * The end of a job, in words.
 * @param {Object} job
 */
function showResult(job) {
  if (job.phase === 'done' && job.installed) {
    const m = job.installed;
    const metrics = (m.meta && m.meta.metrics) || {};
    const acc = typeof metrics.val_captcha_acc === 'number' ? metrics.val_captcha_acc : job.best_val_acc;
    say('trainResult', `Done: ${job.site}'s model (version ${m.version}${job.base ? ', gone on from the previous one' : ''}) ` +
      `read ${percent(acc)} of the corrections it was checked on (validation)` +
      (typeof metrics.base_val_captcha_acc === 'number'
        ? ` (the ${job.base ? 'previous version' : 'general reader'}: ${percent(metrics.base_val_captcha_acc)})` : '') +
      `, trained on ${job.samples} corrections ` +
      `in ${duration(job.elapsed_s)}. It is installed in your browser: ${job.site}'s captchas are read in the page ` +
      'with it from now on.', true);
  } else if (job.phase === 'done' && job.result && job.result.kept) {
    say('trainResult', keptWords(job), true);
  } else if (job.phase === 'done') {
    say('trainResult', job.installError || 'The model was trained but not installed in your browser.', false);
  } else if (job.phase === 'cancelled') {
    say('trainResult', `Cancelled: nothing was installed; ${job.site} is solved as before.`, true);
  } else {
    say('trainResult', `The train job for ${job.site} failed, and nothing was installed: ` +
      `${(job.error || 'no reason given').replace(/\.$/, '')}. Its log is kept: ${job.log}`, false);
  }
}

document.getElementById('trainCancel').addEventListener('click', async () => {
  if (!followed || followed === 'starting') {
    return;
  }
  const answer = await ask({ type: MESSAGE.TRAIN_CANCEL, id: followed });
  if (!answer.ok) {
    say('trainProgress', `Not cancelled: ${answer.error}`, false);
  } else {
    say('trainProgress', 'Cancelling\u2026', true);
  }
});

refreshTraining();
