/**
 * Training a site's model from the options page: the local host trains it (native_host/jobs.py:
 * one job at a time, in processes of its own), and this worker installs the result here.
 *
 *   trainSites()          corrections per site on the host, models installed here, the latest job
 *   trainStart(site, p)   starts a job (p: the request says it goes on from the site's previous model)
 *   trainStatus(id)       the job's progress; once it is done, its TF.js files are fetched from the
 *                         host and installed (model_store.js installSiteModel) before the answer
 *   trainCancel(id)
 *
 * The options page polls trainStatus while a job runs: every poll is a request, so the native
 * port (closed after 10 idle minutes, which ends the host and its job) stays open. When the page
 * is closed, an alarm (TRAIN_ALARM, every 30 s) polls instead, and installs the model when the job
 * is done. Requests go through native messaging when it is on, else HTTP (the same operations,
 * service.py).
 */
/* global preferNative, hostRequest, base64ToBytes, readSiteModels, installSiteModel, readSites, STATE_KEYS */
/* exported trainSites, trainStart, trainStatus, trainCancel, watchTrainJob, TRAIN_ALARM */

/** Job phases in which it still runs (native_host/jobs.py ACTIVE). */
const JOB_ACTIVE = ['reading', 'training', 'converting', 'installing'];
/** Largest site model fetched from the host (the shipped general reader is about 1 MB). */
const SITE_MODEL_MAX_BYTES = 64 * 1024 * 1024;
/** Model files may take longer than the default request (HTTP): they are up to 512 KB a chunk. */
const MODEL_FILES_TIMEOUT_MS = 30000;

/** Alarm polling the running job while no options page does (and installing its model). */
const TRAIN_ALARM = 'captchalens-train-job';
/** chrome.storage.local key: the id of the job the alarm follows. */
const TRAIN_JOB_KEY = 'trainJob';

/** The HTTP route of each train operation, for when native messaging is off. */
const TRAIN_HTTP = Object.freeze({
  sites: () => hostRequest('/sites', { token: true }),
  train_start: (d) => hostRequest('/train', {
    method: 'POST', body: JSON.stringify(d), type: 'application/json', token: true,
  }),
  train_status: (d) => hostRequest(`/train/${encodeURIComponent(d.id || 'latest')}`, { token: true }),
  train_cancel: (d) => hostRequest(`/train/${encodeURIComponent(d.id)}/cancel`, {
    method: 'POST', body: '{}', type: 'application/json', token: true,
  }),
  model_files: (d) => hostRequest(`/models/${encodeURIComponent(d.name)}/files` +
    (d.file ? `/${encodeURIComponent(d.file)}?offset=${d.offset}&length=${d.length}` : ''),
  { token: true, timeoutMs: MODEL_FILES_TIMEOUT_MS }),
});

/**
 * One train operation on the local host.
 * @param {string} type  a key of TRAIN_HTTP (the native message type)
 * @param {Object} [data]
 * @returns {Promise<Object>}
 * @throws {HostError}
 */
function trainOp(type, data = {}) {
  return preferNative(type, async () => data, () => TRAIN_HTTP[type](data));
}

/** Installs running in this worker, by job id (two polls of a finished job install it once). */
const installing = new Map();

/**
 * Fetch a site model's TF.js files from the host, chunk by chunk.
 * @param {string} name
 * @returns {Promise<Object<string, Uint8Array>>}
 */
async function fetchModelFiles(name) {
  const listing = await trainOp('model_files', { name });
  const total = listing.files.reduce((n, f) => n + f.bytes, 0);
  if (total > SITE_MODEL_MAX_BYTES) {
    throw new Error(`its files are ${Math.round(total / 1e6)} MB, more than a site model may be ` +
      `(${SITE_MODEL_MAX_BYTES / 1e6} MB)`);
  }
  const files = {};
  for (const f of listing.files) {
    const bytes = new Uint8Array(f.bytes);
    let offset = 0;
    while (offset < f.bytes) {
      const part = await trainOp('model_files', { name, file: f.file, offset, length: listing.chunk });
      const data = base64ToBytes(part.data);
      if (part.total !== f.bytes || part.offset !== offset || !data.length || offset + data.length > f.bytes) {
        throw new Error(`${f.file} changed on the host while it was fetched: train again`);
      }
      bytes.set(data, offset);
      offset += data.length;
    }
    files[f.file] = bytes;
  }
  return files;
}

/**
 * Point a remembered site at its new model (it may have another one remembered from a solve).
 * @param {string} site
 * @param {string} name
 * @returns {Promise<void>}
 */
async function useForSite(site, name) {
  const sites = await readSites();
  if (Object.prototype.hasOwnProperty.call(sites, site) && sites[site].model !== name) {
    sites[site] = { ...sites[site], model: name };
    await chrome.storage.local.set({ [STATE_KEYS.SITES]: sites });
  }
}

/**
 * A finished job's state, with its model installed here (once): {..., installed} or {..., installError}.
 * @param {Object} job  the host's train_status
 * @returns {Promise<Object>}
 */
async function withInstall(job) {
  if (job.phase !== 'done' || !job.result || job.result.kept) {
    return job; // kept: the site's first model read no better than the general reader; nothing to install
  }
  const have = (await readSiteModels())[job.model];
  if (have && have.job === job.id) {
    return { ...job, installed: have };
  }
  let run = installing.get(job.id);
  if (!run) {
    run = (async () => {
      const files = await fetchModelFiles(job.model);
      const record = await installSiteModel({
        name: job.model, site: job.site, job: job.id, files,
        extra: { samples: job.samples, base: job.base || null, bestValAcc: job.best_val_acc, valAcc: job.val_acc },
      });
      await useForSite(job.site, job.model);
      return record;
    })();
    installing.set(job.id, run);
    run.finally(() => installing.delete(job.id)).catch(() => {});
  }
  try {
    return { ...job, installed: await run };
  } catch (e) {
    return {
      ...job, installError: `The model was trained, but it was not installed in your browser: ${e.message}. ` +
        'The site is solved as before.',
    };
  }
}

/**
 * For the options page's Sites table.
 * @returns {Promise<{ok: boolean, reachable: boolean, error?: string, sites?: Object[], minSamples?: number,
 *   installed: Object, job?: Object}>}
 */
async function trainSites() {
  const installed = await readSiteModels();
  let host;
  try {
    host = await trainOp('sites');
  } catch (e) {
    return { ok: true, reachable: false, error: e.message, installed };
  }
  let job = null;
  try {
    job = await withInstall(await trainOp('train_status', { id: 'latest' }));
  } catch (e) {
    job = null; // 404: no job has run yet
  }
  return {
    ok: true, reachable: true, sites: host.sites, minSamples: host.min_samples, unsorted: host.unsorted,
    installed: job && job.installed ? await readSiteModels() : installed, job,
    running: Boolean(job && JOB_ACTIVE.includes(job.phase)),
  };
}

/**
 * Start training a site's model.
 * @param {*} site  the host's name of the site (its samples folder)
 * @param {*} fromPrevious  what the user was shown: the job goes on from the site's previous model
 * @returns {Promise<Object>} {ok: true, job} | {ok: false, error}
 */
async function trainStart(site, fromPrevious) {
  if (typeof site !== 'string' || !site) {
    return { ok: false, error: 'Name the site to train a model for.' };
  }
  let job;
  try {
    job = await trainOp('train_start', { site, from_previous: Boolean(fromPrevious) });
  } catch (e) {
    return { ok: false, error: e.message };
  }
  await chrome.storage.local.set({ [TRAIN_JOB_KEY]: job.id });
  await chrome.alarms.create(TRAIN_ALARM, { periodInMinutes: 0.5 });
  return { ok: true, job };
}

/**
 * The alarm: poll the job started here until it ends (each poll keeps the native host, and so the
 * job, alive), then install its model and stop.
 * @returns {Promise<void>}
 */
async function watchTrainJob() {
  const id = (await chrome.storage.local.get(TRAIN_JOB_KEY))[TRAIN_JOB_KEY];
  let job = null;
  if (typeof id === 'string' && id) {
    try {
      job = await withInstall(await trainOp('train_status', { id }));
    } catch (e) {
      if (e.down) {
        return; // the host is away for now: ask again at the next alarm
      }
    }
  }
  if (!job || !JOB_ACTIVE.includes(job.phase)) {
    await chrome.alarms.clear(TRAIN_ALARM);
    await chrome.storage.local.remove(TRAIN_JOB_KEY);
  }
}

/**
 * A job's progress; a finished job's model is installed before the answer.
 * @param {*} id
 * @returns {Promise<Object>} {ok: true, job} | {ok: false, error}
 */
async function trainStatus(id) {
  if (typeof id !== 'string' || !id) {
    return { ok: false, error: 'trainStatus needs a job id' };
  }
  try {
    return { ok: true, job: await withInstall(await trainOp('train_status', { id })) };
  } catch (e) {
    return { ok: false, error: e.message };
  }
}

/**
 * Cancel a running job (nothing of it is installed).
 * @param {*} id
 * @returns {Promise<Object>} {ok: true, job} | {ok: false, error}
 */
async function trainCancel(id) {
  if (typeof id !== 'string' || !id) {
    return { ok: false, error: 'trainCancel needs a job id' };
  }
  try {
    return { ok: true, job: await trainOp('train_cancel', { id }) };
  } catch (e) {
    return { ok: false, error: e.message };
  }
}
