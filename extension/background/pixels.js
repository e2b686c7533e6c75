/**
 * Pixels in the service worker: decode what the content script sent, crop a
 * screenshot when the page's canvas was tainted, keep the last solve's pixels as they are
 * (rgbaRecord), encode PNG for the local host.
 * Never fetches the captcha's URL: sites issue a new captcha per request.
 */
/* global CaptchaLensEngine */
/* exported imageLimits, rgbaFromBase64, rgbaRecord, captureCrop, pngBlob, pngDataUrl, bytesToBase64, pixelsHash */

/** Chromium allows captureVisibleTab this many calls per CAPTURE_WINDOW_MS (a window that starts at the first). */
const CAPTURE_CALLS = 2;
const CAPTURE_WINDOW_MS = 1000;
/** Margin added to a computed wait (timers and Chromium's clock are not exact). */
const CAPTURE_MARGIN_MS = 25;
/** When Chromium refuses all the same (the worker restarted and forgot its captures): wait this long, once. */
const CAPTURE_RETRY_MS = 600;

/** This worker's captures in the current quota window: {start: ms, count}. Lost on a restart (then a retry). */
const captureWindow = { start: -Infinity, count: 0 };

/**
 * How long to wait before the next capture fits Chromium's quota, and book it.
 * @returns {number} ms
 */
function bookCapture() {
  const now = performance.now();
  let wait = 0;
  if (now >= captureWindow.start + CAPTURE_WINDOW_MS) {
    captureWindow.start = now;
    captureWindow.count = 0;
  } else if (captureWindow.count >= CAPTURE_CALLS) {
    wait = captureWindow.start + CAPTURE_WINDOW_MS - now + CAPTURE_MARGIN_MS;
    captureWindow.start = now + wait;
    captureWindow.count = 0;
  }
  captureWindow.count += 1;
  return wait;
}
/** The images CaptchaLens reads, shared with the Python side (captchalens/contract.py). */
const IMAGE_LIMITS_FILE = '/shared/image_limits.json';
/** imageLimits()'s one load per worker start (a failed load is tried again next time). */
let imageLimitsLoad = null;

/**
 * The image limits (shared/image_limits.json: max_side, max_pixels), loaded once.
 * @returns {Promise<{max_side: number, max_pixels: number}>}
 */
function imageLimits() {
  if (!imageLimitsLoad) {
    imageLimitsLoad = fetch(chrome.runtime.getURL(IMAGE_LIMITS_FILE)).then((r) => r.json()).catch((e) => {
      imageLimitsLoad = null;
      throw new Error(`the extension's ${IMAGE_LIMITS_FILE} is unreadable (${e.message}): reinstall it`);
    });
  }
  return imageLimitsLoad;
}

/**
 * Base64 -> bytes.
 * @param {string} b64
 * @returns {Uint8Array}
 */
function base64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) {
    out[i] = bin.charCodeAt(i);
  }
  return out;
}

/**
 * Bytes -> base64, in chunks (String.fromCharCode has an argument limit).
 * @param {Uint8Array} bytes
 * @returns {string}
 */
function bytesToBase64(bytes) {
  let bin = '';
  const CHUNK = 0x8000;
  for (let i = 0; i < bytes.length; i += CHUNK) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK));
  }
  return btoa(bin);
}

/**
 * RGBA pixels sent by the content script (base64 of width*height*4 bytes).
 * @param {string} b64
 * @param {number} width
 * @param {number} height
 * @returns {{data: Uint8Array, width: number, height: number}}
 */
function rgbaFromBase64(b64, width, height) {
  const data = base64ToBytes(b64);
  if (data.length !== width * height * 4) {
    throw new Error(`the page sent ${data.length} bytes for a ${width}x${height} image`);
  }
  return { data, width, height };
}

/**
 * RGBA pixels as a tab's last solve keeps them in chrome.storage.session (solves.js): the raw
 * bytes in base64 (storage holds JSON), read back by rgbaFromBase64. No PNG is encoded for a
 * solve: only a correction, which few solves get, is encoded (pngDataUrl) when it is sent.
 * @param {{data: (Uint8Array|Uint8ClampedArray), width: number, height: number}} rgba
 * @returns {{data: string, width: number, height: number}}
 */
function rgbaRecord(rgba) {
  const bytes = new Uint8Array(rgba.data.buffer, rgba.data.byteOffset, rgba.data.byteLength);
  return { data: bytesToBase64(bytes), width: rgba.width, height: rgba.height };
}

/**
 * Screenshot of the visible tab as a data URL. A burst of solves waits just until Chromium's quota
 * (two a second) allows the next capture, instead of being refused and retrying blindly; a refusal
 * all the same is retried once.
 * @param {number} windowId
 * @returns {Promise<string>}
 */
async function captureVisible(windowId) {
  const wait = bookCapture();
  if (wait > 0) {
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
  try {
    return await chrome.tabs.captureVisibleTab(windowId, { format: 'png' });
  } catch (e) {
    if (!/MAX_CAPTURE_VISIBLE_TAB_CALLS_PER_SECOND/.test(e.message || '')) {
      throw e;
    }
    await new Promise((resolve) => setTimeout(resolve, CAPTURE_RETRY_MS));
    return chrome.tabs.captureVisibleTab(windowId, { format: 'png' });
  }
}

/**
 * Crop an element out of a screenshot of the visible tab, at its on-screen pixel size.
 * @param {number} windowId  the tab's window (the tab must be the active one)
 * @param {{x: number, y: number, width: number, height: number}} rect  CSS pixels in the top viewport
 * @param {number} dpr  the page's devicePixelRatio
 * @param {{width: number, height: number}|null} viewport  the top viewport in CSS pixels: the
 *        screenshot's width over it gives the scale even when devicePixelRatio is emulated
 * @returns {Promise<{data: Uint8ClampedArray, width: number, height: number}>}
 */
async function captureCrop(windowId, rect, dpr, viewport) {
  const dataUrl = await captureVisible(windowId);
  const bitmap = await createImageBitmap(await (await fetch(dataUrl)).blob());
  try {
    const scale = viewport && viewport.width > 0 ? bitmap.width / viewport.width : dpr;
    const x0 = Math.max(0, Math.round(rect.x * scale));
    const y0 = Math.max(0, Math.round(rect.y * scale));
    const x1 = Math.min(bitmap.width, Math.round((rect.x + rect.width) * scale));
    const y1 = Math.min(bitmap.height, Math.round((rect.y + rect.height) * scale));
    const width = x1 - x0;
    const height = y1 - y0;
    if (width < 1 || height < 1) {
      throw new Error('the image is not visible on screen (scrolled away or hidden)');
    }
    const problem = CaptchaLensEngine.imageSizeProblem(await imageLimits(), width, height);
    if (problem) {
      throw new Error(`on screen, the ${problem}`);
    }
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(bitmap, x0, y0, width, height, 0, 0, width, height);
    const image = ctx.getImageData(0, 0, width, height);
    return { data: image.data, width, height };
  } finally {
    bitmap.close();
  }
}

/**
 * RGBA pixels -> PNG.
 * @param {{data: (Uint8Array|Uint8ClampedArray), width: number, height: number}} rgba
 * @returns {Promise<Blob>}
 */
async function pngBlob(rgba) {
  const canvas = new OffscreenCanvas(rgba.width, rgba.height);
  const ctx = canvas.getContext('2d');
  const pixels = new Uint8ClampedArray(rgba.data.buffer, rgba.data.byteOffset, rgba.data.byteLength);
  ctx.putImageData(new ImageData(pixels, rgba.width, rgba.height), 0, 0);
  return canvas.convertToBlob({ type: 'image/png' });
}

/**
 * RGBA pixels -> PNG data URL (a correction's image, encoded when it is sent).
 * @param {{data: (Uint8Array|Uint8ClampedArray), width: number, height: number}} rgba
 * @returns {Promise<string>}
 */
async function pngDataUrl(rgba) {
  const blob = await pngBlob(rgba);
  return 'data:image/png;base64,' + bytesToBase64(new Uint8Array(await blob.arrayBuffer()));
}

/**
 * FNV-1a 32-bit hash of the pixels: lets tests and logs tell images apart cheaply.
 * @param {{data: (Uint8Array|Uint8ClampedArray)}} rgba
 * @returns {string} 8 hex digits
 */
function pixelsHash(rgba) {
  let h = 0x811c9dc5;
  const d = rgba.data;
  for (let i = 0; i < d.length; i++) {
    h ^= d[i];
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}
