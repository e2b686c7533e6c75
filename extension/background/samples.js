/**
 * Corrections ("Wrong answer? Type the right one"): labelled captchas sent to
 * the local host (POST /samples) for retraining. When the host is down or not
 * paired they wait in chrome.storage.local and an alarm retries them.
 */
/* global hostSample, STATE_KEYS */
/* exported submitCorrection, flushSampleQueue, queuedSampleCount, SAMPLE_ALARM */

/** Alarm that retries queued corrections. */
const SAMPLE_ALARM = 'captchalens-retry-samples';
/** Minutes between retries. */
const SAMPLE_RETRY_MINUTES = 1;
/** Most corrections kept while the host is away (oldest dropped first). */
const SAMPLE_QUEUE_MAX = 100;
/** Longest answer accepted as a label. */
const MAX_LABEL_LENGTH = 64;

/** The flush running in this worker, so that two triggers do not send twice. */
let flushing = null;

/**
 * Check a typed label: the host checks it against the model's charset again.
 * @param {*} text
 * @returns {string}
 */
function checkLabel(text) {
  const label = typeof text === 'string' ? text.trim() : '';
  if (!label) {
    throw new Error('Type the right answer first.');
  }
  if (label.length > MAX_LABEL_LENGTH || /\s/.test(label)) {
    throw new Error(`The answer must be one word of at most ${MAX_LABEL_LENGTH} characters.`);
  }
  return label;
}

/**
 * POST one sample; when the host does not know the model it names, send it for the host's default.
 * @param {Object} sample
 * @returns {Promise<{saved: string, count: number}>}
 */
async function sendSample(sample) {
  try {
    return await hostSample(sample);
  } catch (e) {
    if (e.status !== 404 || !sample.model) {
      throw e;
    }
    const { model, ...rest } = sample;
    return hostSample(rest);
  }
}

/**
 * Queued corrections.
 * @returns {Promise<Object[]>}
 */
async function readQueue() {
  const stored = await chrome.storage.local.get(STATE_KEYS.SAMPLE_QUEUE);
  return Array.isArray(stored[STATE_KEYS.SAMPLE_QUEUE]) ? stored[STATE_KEYS.SAMPLE_QUEUE] : [];
}

/**
 * How many corrections wait for the host.
 * @returns {Promise<number>}
 */
async function queuedSampleCount() {
  return (await readQueue()).length;
}

/**
 * Keep a correction for later and make sure the retry alarm runs.
 * @param {Object} sample
 * @returns {Promise<number>} the queue's length
 */
async function enqueueSample(sample) {
  const queue = await readQueue();
  queue.push({ ...sample, queuedAt: Date.now() });
  const kept = queue.slice(-SAMPLE_QUEUE_MAX);
  await chrome.storage.local.set({ [STATE_KEYS.SAMPLE_QUEUE]: kept });
  await chrome.alarms.create(SAMPLE_ALARM, { periodInMinutes: SAMPLE_RETRY_MINUTES });
  return kept.length;
}

/**
 * Send one correction now, or queue it when the host cannot take it.
 * @param {{image: string, text: string, site?: string, model?: string}} correction  image = PNG data URL
 * @returns {Promise<{ok: boolean, queued: boolean, message: string}>}
 */
async function submitCorrection(correction) {
  let sample;
  try {
    if (typeof correction.image !== 'string' || !correction.image.startsWith('data:image/png;base64,')) {
      throw new Error('The captcha image is no longer available: solve it again, then correct it.');
    }
    sample = { image: correction.image, text: checkLabel(correction.text) };
  } catch (e) {
    return { ok: false, queued: false, message: e.message };
  }
  if (correction.site) {
    sample.site = String(correction.site);
  }
  if (correction.model) {
    sample.model = String(correction.model);
  }
  try {
    const saved = await sendSample(sample);
    flushSampleQueue().catch(() => {}); // the host is up: send what waited
    return { ok: true, queued: false, message: `Thanks: saved for retraining (${saved.count} samples).` };
  } catch (e) {
    if (!e.down && !e.unpaired) {
      return { ok: false, queued: false, message: e.message };
    }
    const count = await enqueueSample(sample);
    return {
      ok: true, queued: true,
      message: `${e.message} The correction is kept (${count} waiting) and will be sent when the local host is reachable.`,
    };
  }
}

/**
 * Send queued corrections, oldest first; stops at the first host failure.
 * Called by the retry alarm, after a successful send, and from the options page.
 * @returns {Promise<{sent: number, dropped: number, left: number, error: string}>}
 */
function flushSampleQueue() {
  if (!flushing) {
    flushing = (async () => {
      const queue = await readQueue();
      let sent = 0;
      let dropped = 0;
      let error = '';
      while (sent + dropped < queue.length) {
        const { queuedAt, ...sample } = queue[sent + dropped];
        try {
          await sendSample(sample);
          sent++;
        } catch (e) {
          if (e.down || e.unpaired) {
            error = e.message;
            break;
          }
          dropped++; // the host rejected this sample itself (e.g. a label outside the charset)
          error = e.message;
        }
      }
      // Corrections queued while this ran are kept: remove only what was handled.
      const now = await readQueue();
      const left = now.slice(sent + dropped);
      await chrome.storage.local.set({ [STATE_KEYS.SAMPLE_QUEUE]: left });
      if (!left.length) {
        await chrome.alarms.clear(SAMPLE_ALARM);
      }
      return { sent, dropped, left: left.length, error };
    })();
    flushing.finally(() => {
      flushing = null;
    }).catch(() => {});
  }
  return flushing;
}
