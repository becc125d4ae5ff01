/* copyledger log explorer: looks a chosen or dropped file up by its SHA-256, computed here with
 * WebCrypto. The file is never uploaded: only its fingerprint goes into the search address.
 * The page's words come from the server (data-* attributes on #drop), so this file has none.
 */
'use strict';

(function () {
  const MAX = 256 * 1024 * 1024; // WebCrypto digests a file in one piece: bigger is refused

  const $ = (id) => document.getElementById(id);
  const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

  function say(key, vars) {
    let text = $('drop').dataset[key] || '';
    for (const [k, v] of Object.entries(vars)) text = text.split(`{${k}}`).join(v);
    $('file-status').textContent = text;
  }

  async function lookUp(file) {
    if (!window.isSecureContext || !window.crypto || !crypto.subtle) { say('nocrypto', {}); return; }
    if (file.size > MAX) { say('toolarge', { name: file.name }); return; }
    say('hashing', { name: file.name });
    let hex;
    try {
      hex = toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', await file.arrayBuffer())));
    } catch (e) {
      say('failed', { name: file.name, why: e.message });
      return;
    }
    say('found', { name: file.name, hash: hex });
    location.assign(`search?q=${hex}`);
  }

  function init() {
    if (!$('drop')) return;
    window.copyledgerDropZone($('drop'), (files) => lookUp(files[0]));
    $('file').addEventListener('change', (e) => { if (e.target.files[0]) lookUp(e.target.files[0]); });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
}());
