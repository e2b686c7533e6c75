// The demo page's "Ask the local host" button: the host's own page may call /solve.
'use strict';

/** Send the captcha (already on the page as a data: URL) to /solve and fill the field. */
async function askHost() {
  const out = document.getElementById('host-answer');
  const image = document.getElementById('captcha').src;
  out.textContent = 'asking the local host…';
  try {
    const res = await fetch('/solve', {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({image}),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || res.statusText);
    document.getElementById('answer').value = body.text;
    out.textContent = `local host: "${body.text}" (model ${body.model}, ` +
        `confidence ${body.confidence.toFixed(3)}, ${body.ms} ms)`;
  } catch (e) {
    out.textContent = `local host failed: ${e.message}`;
  }
}

document.getElementById('ask-host').addEventListener('click', askHost);
