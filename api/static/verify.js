/* copyledger verification page: checks an exhibit file against its evidence bundle in the
 * browser, with this file's own code and WebCrypto (SHA-256, Ed25519). No third-party code,
 * no upload. The steps and their names follow ledger/verify.py and docs/verification.md, so
 * this page and 'copyledger verify' agree on what passes and what fails, and where.
 *
 * Every string from a bundle is shown with textContent, never as HTML: a bundle is input.
 */
'use strict';

(function () {
  const FORMAT = 'copyledger/bundle/v1';
  const BLOCK_SCHEMA = 'copyledger/block/v1';
  const BLOCK_NOTE_HEADER = 'copyledger/block/v1';
  const TLOG_PROOF_HEADER = 'c2sp.org/tlog-proof@v1';
  const MAX_UINT64 = (1n << 64n) - 1n;
  const STREAM_OVER = 256 * 1024 * 1024; // larger files are hashed in chunks by our SHA-256
  const MAX_BUNDLE = 32 * 1024 * 1024;
  const NO_ACCURACY = 1e6; // microseconds: a token without accuracy counts to the second

  const STEPS = [
    ['format', 'The bundle is a copyledger/bundle/v1 document'],
    ['file', "The file's SHA-256 is the registered content hash"],
    ['entry', "The entry's RFC 8785 bytes hash to the leaf hash"],
    ['inclusion', 'The RFC 9162 inclusion proof leads from the leaf to the root'],
    ['checkpoint', 'The checkpoint is signed by a trusted log key and names that root'],
    ['block', 'The block header hashes to the block hash and matches the checkpoint'],
    ['block-signature', 'The block note is signed by the same key and names that block'],
    ['timestamp', 'The RFC 3161 time-stamp token covers the block hash'],
    ['tlog-proof', 'The C2SP tlog-proof form says the same as the bundle'],
    ['title', "Every link of the work's chain of title is in the log, in order, and replays"],
    ['sm2', "An SM-suite log's SM2 key signed the checkpoint and the block note (SM2/SM3)"],
    ['witnessed', 'Trusted witnesses cosigned a checkpoint that extends this one'],
  ];

  /** What a reader is told first, in plain words, for each outcome: [headline, explanation].
   * Placeholders in braces are filled in; the technical verdict is folded below. */
  const PLAIN = {
    waiting: ['Choose the file you want to check.',
      'Add its evidence bundle too, unless this page was opened from a registry link or QR code.'],
    bundle: ['Now add the evidence bundle (bundle.json).',
      'The bundle is the registry\u2019s signed record of the file; the certificate names it.'],
    running: ['Checking\u2026', ''],
    hashing: ['Computing the file\u2019s fingerprint on this computer\u2026', 'The file is not uploaded.'],
    incomplete: ['The record is genuine and intact.',
      'Now choose the file to compare it with what was registered.'],
    verified: ['This file is exactly the registered one.',
      'It was registered for {who} on {when}, and the record of it has not been changed since.'],
    verifiedUnpinned: ['This file is exactly the registered one.',
      'It was registered for {who} on {when}, and the record of it has not been changed since. '
      + 'For full assurance of who signed the record, compare the log key with the one the '
      + 'registry publishes (technical detail, below).'],
    unpinned: ['This file matches the record, but nothing ties the record to a registry you know.',
      'The record is signed only by the key it carries itself, which anyone can make. To check '
      + 'that {who} registered it on {when}, pin the log key the registry publishes (in the '
      + 'technical detail, below), or open this page from the registry\u2019s own link.'],
    file: ['This is not the registered file; even a re-saved or resized copy is a different file.',
      'Its digital fingerprint differs from the registered one, so it is not the same file, byte '
      + 'for byte. If you have the original file, choose that one instead.'],
    failed: ['This record could not be confirmed: it may have been altered or damaged.',
      'Do not rely on it. The technical detail below names the check that failed.'],
    unsupported: ['This browser cannot do the check.',
      'Use a current Chrome, Edge, Firefox or Safari, or the copyledger program.'],
    unreadable: ['The file could not be read.', '{why}'],
  };
  const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August',
    'September', 'October', 'November', 'December'];
  const FACTS = { log: 'Registry', seq: 'Entry number', kind: 'What', registrant: 'Registered for',
    when: 'Registered on', title: 'Title', creators: 'Creators', workType: 'Type of work',
    description: 'Description', captured: 'Captured on', block: 'Sealed in block',
    operator: 'Who the account is' };
  const KINDS = { work: 'Registered work', evidence: 'Evidence deposit', transfer: 'Transfer of rights',
    claim: 'Claim' };
  /** Lines the page fills in as it works; placeholders in braces. */
  const WORDS = {
    seeBelow: 'see below',
    exhibit: 'Exhibit: {name} ({size} bytes)',
    exhibitHash: 'Exhibit: {name} ({size} bytes), SHA-256 {hash}',
    loading: 'Loading the bundle of entry {seq} from this registry\u2026',
    loadFailed: 'Could not load the bundle of entry {seq}: {why}. Choose a bundle file instead.',
    notJson: '{name} is not JSON: {why}',
    statement: '{name} ({kind}): the registry operator\u2019s statement, not signed by the log',
    person: 'natural person',
    organisation: 'organisation',
    needBundle: 'Now add the evidence bundle (bundle.json).',
    waiting: 'Waiting for the exhibit file and its bundle.',
    checking: 'Checking\u2026',
    hashing: 'Computing the file\u2019s SHA-256 (on this computer)\u2026',
    hashingPct: 'Computing the file\u2019s SHA-256: {pct}%',
    unreadable: 'Could not read {name}: {why}',
    unsupported: 'Cannot verify in this browser: {why}. Use a current Chrome, Edge, Firefox or '
      + 'Safari, or copyledger verify.',
    notVerified: 'NOT verified: {step} \u2014 {why}',
    incomplete: 'The bundle verifies; now choose the exhibit file to check it against the '
      + 'registration.',
    verified: 'Verified: this exact file is the registered content, and the record is intact '
      + 'and signed.',
    unpinned: 'CONSISTENT, NOT TIED TO A KNOWN LOG: the file is the bundle\u2019s content and the '
      + 'bundle is intact, but its signatures were checked only against the key it carries '
      + 'itself.',
    date: '{day} {month} {year}, {hh}:{mm} UTC',
    dateIn: '{day} {month} {year}, {hh}:{mm}',
    bothDates: '{local} ({zone} UTC{offset}) \u00b7 {utc}',
    sealedIn: '{height}, on {when}',
    bundleFrom: 'Bundle of entry {seq}, loaded from this registry ({host}).',
    bundleFile: 'Bundle: {name}',
    bundleFileFrom: 'Bundle: {name} ({from})',
  };

  /* The page's language: verify.html carries, as a JSON data block, the translation of every
   * string of the tables above (English text: translation); a string without one stays English.
   * Machine-readable values (step names, data-status) are never translated. */
  const L10N = (() => {
    const el = document.getElementById('l10n');
    try { return el ? JSON.parse(el.textContent) : {}; } catch (e) { return {}; }
  })();
  const tr = (text) => (Object.prototype.hasOwnProperty.call(L10N, text) ? L10N[text] : text);
  STEPS.forEach((step) => { step[1] = tr(step[1]); });
  Object.values(PLAIN).forEach((p) => { p[0] = tr(p[0]); p[1] = tr(p[1]); });
  MONTHS.forEach((m, i) => { MONTHS[i] = tr(m); });
  for (const table of [FACTS, KINDS, WORDS]) {
    for (const k of Object.keys(table)) table[k] = tr(table[k]);
  }
  const fillIn = (text, vars) => Object.entries(vars).reduce(
    (s, [k, x]) => s.split('{' + k + '}').join(String(x)), text);
  const say = (key, vars = {}) => fillIn(WORDS[key], vars);
  /** A step's words: 'template' (a catalogue msgid, as in ledger/verify.py where the two say
   * the same) in the page's language, its {slots} filled in one pass, so a value from a bundle
   * that holds braces stays as it is. Values are never translated; a noun chosen here is a T()
   * itself. */
  const T = (template, vars = {}) => tr(template).replace(
    /\{(\w+)\}/g, (slot, k) => (Object.prototype.hasOwnProperty.call(vars, k) ? String(vars[k]) : slot));

  class Fail extends Error {}
  const fail = (msg) => { throw new Fail(msg); };

  // ------------------------------------------------------------ bytes

  const enc = new TextEncoder();
  const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  };

  function fromHex(s, what) {
    if (typeof s !== 'string' || !/^[0-9a-f]{64}$/.test(s)) fail(T('{what} is not 64 lowercase hex characters', { what }));
    const out = new Uint8Array(32);
    for (let i = 0; i < 32; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
    return out;
  }

  function b64encode(bytes) {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }

  /** Standard padded base64; with 'canonical', only the one spelling that re-encodes alike. */
  function b64decode(s, what, canonical = true) {
    let bin;
    try { bin = atob(s); } catch (e) { fail(T('{what} is not base64', { what })); }
    const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    if (canonical && b64encode(out) !== s) fail(T('{what} is not canonical base64', { what }));
    return out;
  }

  async function sha256(data) {
    return new Uint8Array(await crypto.subtle.digest('SHA-256', data));
  }

  // ------------------------------------------------------------ SHA-256 for large files
  // WebCrypto has no streaming digest; a file of gigabytes cannot be one ArrayBuffer. This is
  // FIPS 180-4 SHA-256, fed chunk by chunk; the tests check it against WebCrypto.

  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);

  class Sha256 {
    constructor() {
      this.h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
      this.w = new Uint32Array(64);
      this.buf = new Uint8Array(64);
      this.fill = 0;
      this.total = 0;
    }
    update(data) {
      let i = 0;
      this.total += data.length;
      if (this.fill) {
        const take = Math.min(64 - this.fill, data.length);
        this.buf.set(data.subarray(0, take), this.fill);
        this.fill += take; i = take;
        if (this.fill < 64) return this;
        this.block(this.buf, 0); this.fill = 0;
      }
      for (; i + 64 <= data.length; i += 64) this.block(data, i);
      this.buf.set(data.subarray(i), 0);
      this.fill = data.length - i;
      return this;
    }
    block(d, o) {
      const w = this.w, h = this.h;
      for (let t = 0; t < 16; t++) {
        w[t] = (d[o + 4 * t] << 24) | (d[o + 4 * t + 1] << 16) | (d[o + 4 * t + 2] << 8) | d[o + 4 * t + 3];
      }
      for (let t = 16; t < 64; t++) {
        const a = w[t - 15], b = w[t - 2];
        const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
        const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
        w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
      }
      let [a, b, c, e0, e, f, g, hh] = h;
      for (let t = 0; t < 64; t++) {
        const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const t1 = (hh + S1 + ((e & f) ^ (~e & g)) + K[t] + w[t]) | 0;
        const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        hh = g; g = f; f = e; e = (e0 + t1) | 0; e0 = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      h[0] += a; h[1] += b; h[2] += c; h[3] += e0; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    digest() {
      const bits = BigInt(this.total) * 8n;
      const pad = new Uint8Array(((this.fill < 56) ? 56 : 120) - this.fill + 8);
      pad[0] = 0x80;
      for (let i = 0; i < 8; i++) pad[pad.length - 1 - i] = Number((bits >> BigInt(8 * i)) & 0xffn);
      this.update(pad);
      const out = new Uint8Array(32);
      this.h.forEach((v, i) => { out[4 * i] = v >>> 24; out[4 * i + 1] = v >>> 16; out[4 * i + 2] = v >>> 8; out[4 * i + 3] = v; });
      return out;
    }
  }

  /** SHA-256 of a File: WebCrypto in one piece when it fits, else streamed through Sha256. */
  async function hashFile(file, progress) {
    if (file.size <= STREAM_OVER) return sha256(await file.arrayBuffer());
    const h = new Sha256();
    const reader = file.stream().getReader();
    let done = 0;
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      h.update(value);
      done += value.length;
      progress(done / file.size);
    }
    return h.digest();
  }

  // ------------------------------------------------------------ strict JSON, RFC 3339

  /** JSON.parse keeps the last of two equal member names; a reader that kept the first would
   * see another document. As ledger/jcs.py's parse: refuse the text. */
  function parseStrict(text) {
    let value;
    try { value = JSON.parse(text); } catch (e) { fail(T('invalid JSON: {why}', { why: e.message })); }
    const stack = []; // per open object: its member names so far, and whether a name is next
    for (let i = 0; i < text.length; i++) {
      const c = text[i], top = stack[stack.length - 1];
      if (c === '"') {
        let j = i + 1;
        while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
        if (top && top.names && top.nameNext) {
          const name = JSON.parse(text.slice(i, j + 1));
          if (top.names.has(name)) fail(T('invalid JSON: duplicate member {name}', { name: JSON.stringify(name) }));
          top.names.add(name);
          top.nameNext = false;
        }
        i = j;
      } else if (c === '{') stack.push({ names: new Set(), nameNext: true });
      else if (c === '[') stack.push({ names: null });
      else if (c === '}' || c === ']') stack.pop();
      else if (c === ',' && top && top.names) top.nameNext = true;
    }
    return value;
  }

  const RFC3339 = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?(Z|([+-])([0-9]{2}):([0-9]{2}))$/;

  /** An RFC 3339 timestamp as microseconds since 1970, as ledger/entry.py's parse_timestamp:
   * digits past microseconds dropped, a leap second (only 23:59:60 UTC) read as :59. */
  function micros(text, what) {
    const m = typeof text === 'string' && RFC3339.exec(text);
    if (!m) fail(T('{what} is not an RFC 3339 timestamp', { what }));
    const [y, mo, d, h, mi, sec] = m.slice(1, 7).map(Number);
    const t = new Date(0);
    t.setUTCFullYear(y, mo - 1, d);
    const offset = m[8] === 'Z' ? 0 : (Number(m[10]) * 60 + Number(m[11])) * (m[9] === '+' ? 1 : -1);
    const bad = y < 1 || mo < 1 || mo > 12 || t.getUTCMonth() !== mo - 1 || t.getUTCDate() !== d
      || (m[8] !== 'Z' && (Number(m[10]) > 23 || Number(m[11]) > 59)) || h > 23 || mi > 59 || sec > 60
      || (sec === 60 && ((((h * 60 + mi - offset) % 1440) + 1440) % 1440) !== 23 * 60 + 59);
    if (bad) fail(T('{what} is not an RFC 3339 timestamp', { what }));
    t.setUTCHours(h, mi, Math.min(sec, 59), 0);
    const frac = Number(((m[7] || '.').slice(1) + '000000').slice(0, 6));
    return t.getTime() * 1000 + frac - offset * 60e6;
  }

  // ------------------------------------------------------------ RFC 8785 (JCS)

  const wellFormed = (s) => (typeof s.isWellFormed === 'function' ? s.isWellFormed()
    : !/[\ud800-\udbff](?![\udc00-\udfff])|(?:^|[^\ud800-\udbff])[\udc00-\udfff]/.test(s));

  /** RFC 8785: ES6 JSON.stringify for strings and numbers, keys sorted by UTF-16 code units
   * (which is what Array.prototype.sort does with strings), no whitespace. */
  function jcs(v) {
    if (v === null || typeof v === 'boolean') return JSON.stringify(v);
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) fail(T('the entry holds a number JSON cannot represent'));
      return JSON.stringify(v);
    }
    if (typeof v === 'string') {
      if (!wellFormed(v)) fail(T('the entry holds a string that is not valid Unicode'));
      return JSON.stringify(v);
    }
    if (Array.isArray(v)) return '[' + v.map(jcs).join(',') + ']';
    if (typeof v === 'object') {
      return '{' + Object.keys(v).sort().map((k) => jcs(k) + ':' + jcs(v[k])).join(',') + '}';
    }
    return fail(T('{type} is not a JSON value', { type: typeof v }));
  }

  // ------------------------------------------------------------ RFC 6962 / 9162 Merkle

  const leafHash = (data) => sha256(concat(Uint8Array.of(0), data));
  const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

  /** RFC 9162 section 2.1.3.2, in BigInt: JS bit operators are 32-bit, tree sizes are not. */
  async function rootFromInclusion(index, size, leaf, proof) {
    if (index < 0n || size <= 0n || index >= size) fail(T('leaf index {index} is not in a tree of size {size}', { index, size }));
    let fn = index, sn = size - 1n, r = leaf;
    for (const p of proof) {
      if (sn === 0n) fail(T('the inclusion proof is too long'));
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        while (fn !== 0n && (fn & 1n) === 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n; sn >>= 1n;
    }
    if (sn !== 0n) fail(T('the inclusion proof is too short'));
    return r;
  }

  /** RFC 9162 section 2.1.4.2, as ledger/merkle.py's verify_consistency (same edge cases). */
  async function verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof) {
    if (oldSize === 0n || newSize < oldSize) fail(T('tree size {oldSize} cannot precede {newSize}', { oldSize, newSize }));
    if (oldSize === newSize) {
      if (proof.length) fail(T('equal tree sizes need an empty consistency proof'));
      if (!eq(oldRoot, newRoot)) fail(T('equal tree sizes but different roots'));
      return;
    }
    if (!proof.length) fail(T('empty consistency proof for different tree sizes'));
    const path = (oldSize & (oldSize - 1n)) === 0n ? [oldRoot, ...proof] : [...proof];
    let fn = oldSize - 1n, sn = newSize - 1n;
    while ((fn & 1n) === 1n) { fn >>= 1n; sn >>= 1n; }
    let fr = path[0], sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0n) fail(T('the consistency proof is too long'));
      if ((fn & 1n) === 1n || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        if ((fn & 1n) === 0n) while (fn !== 0n && (fn & 1n) === 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        sr = await nodeHash(sr, c);
      }
      fn >>= 1n; sn >>= 1n;
    }
    if (sn !== 0n) fail(T('the consistency proof is too short'));
    if (!eq(fr, oldRoot)) fail(T('the consistency proof does not lead to the old root'));
    if (!eq(sr, newRoot)) fail(T('the consistency proof does not lead to the new root'));
  }

  // ------------------------------------------------------------ C2SP signed notes

  const CONTROL = /[\x00-\x09\x0b-\x1f]/;
  const validName = (n) => n.length > 0 && !n.includes('+') && !/[\s\x00-\x1f\x85\xa0]/u.test(n)
    && wellFormed(n);

  async function keyId(name, pub) {
    return (await sha256(concat(enc.encode(name + '\n'), Uint8Array.of(1), pub))).subarray(0, 4);
  }

  /** name+hex(key ID)+base64(0x01 || Ed25519 key), the vkey format of Go's note package. */
  async function parseVerifierKey(vkey) {
    const i = vkey.indexOf('+'), j = vkey.indexOf('+', i + 1);
    if (i < 0 || j < 0) fail(T('a verifier key is name+keyid+key'));
    const name = vkey.slice(0, i), hexId = vkey.slice(i + 1, j);
    if (!validName(name)) fail(T('the verifier key has an invalid name {name}', { name: JSON.stringify(name) }));
    if (!/^[0-9a-f]{8}$/.test(hexId)) fail(T('a verifier key ID is 8 lowercase hex digits'));
    const key = b64decode(vkey.slice(j + 1), T('the verifier key'));
    if (key.length !== 33 || key[0] !== 1) fail(T('the verifier key is not an Ed25519 key'));
    const pub = key.subarray(1);
    if (toHex(await keyId(name, pub)) !== hexId) fail(T('the verifier key ID does not match its key'));
    let cryptoKey;
    try {
      cryptoKey = await crypto.subtle.importKey('raw', pub, { name: 'Ed25519' }, false, ['verify']);
    } catch (e) {
      if (e && e.name === 'NotSupportedError') throw new Unsupported();
      fail(T('the verifier key is not a valid Ed25519 key ({e})', { e }));
    }
    return { name, hexId, vkey, cryptoKey };
  }

  class Unsupported extends Error {
    constructor() { super(T('this browser cannot check Ed25519 signatures (WebCrypto lacks Ed25519)')); }
  }

  function parseNote(msg) {
    if (CONTROL.test(msg) || !wellFormed(msg)) fail(T('malformed note: control character or bad Unicode'));
    const split = msg.lastIndexOf('\n\n');
    if (split < 0) fail(T('malformed note: no blank line before the signatures'));
    const text = msg.slice(0, split + 1), block = msg.slice(split + 2);
    if (!block.endsWith('\n')) fail(T('malformed note: signatures must end with a newline'));
    const lines = block.slice(0, -1).split('\n');
    if (lines.length > 100) fail(T('malformed note: more than 100 signatures'));
    const sigs = lines.map((line) => {
      if (!line.startsWith('\u2014 ')) fail(T('malformed note: a signature line must start with an em dash'));
      const rest = line.slice(2), sp = rest.indexOf(' ');
      const name = sp < 0 ? rest : rest.slice(0, sp);
      const raw = b64decode(sp < 0 ? '' : rest.slice(sp + 1), T('a note signature'));
      if (!validName(name) || raw.length < 5) fail(T('malformed note: bad signature line'));
      return { name, hexId: toHex(raw.subarray(0, 4)), sig: raw.subarray(4) };
    });
    return { text, sigs };
  }

  /** As Go's note.Open: signatures by unknown keys are ignored, every signature by a known key
   * must verify, and at least one must be there. Returns the text and the keys that signed. */
  async function verifyNote(msg, verifiers) {
    const n = parseNote(msg);
    const data = enc.encode(n.text);
    const good = [];
    for (const s of n.sigs) {
      const v = verifiers.find((k) => k.name === s.name && k.hexId === s.hexId);
      if (!v) continue;
      const ok = v.sm2 ? v.verify(data, s.sig) : s.sig.length === 64
        && await crypto.subtle.verify({ name: 'Ed25519' }, v.cryptoKey, s.sig, data);
      if (!ok) fail(T('invalid signature by {name}', { name: s.name }));
      if (!good.includes(v)) good.push(v);
    }
    if (!good.length) fail(T('no signature by a trusted key'));
    return { text: n.text, signers: good };
  }

  function noteLines(text, what) {
    if (!text.endsWith('\n')) fail(T('{what} text must end with a newline', { what }));
    return text.slice(0, -1).split('\n');
  }

  function parseUint64(s, what) {
    if (s.length > 20 || !/^(0|[1-9][0-9]*)$/.test(s) || BigInt(s) > MAX_UINT64) {
      fail(T('{what} must be a decimal uint64 without leading zeros', { what }));
    }
    return BigInt(s);
  }

  /** Checkpoint text, as ledger/note.py's parse_checkpoint: its extension lines (non-empty,
   * opaque) are read and given to the caller, who decides, as ledger/verify.py does, that a
   * bundle's checkpoints have none. */
  function parseCheckpoint(text) {
    const lines = noteLines(text, 'checkpoint');
    if (lines.length < 3) fail(T('a checkpoint needs origin, size and root lines'));
    if (lines.some((l, i) => !l && i !== 1)) fail(T('checkpoint lines must not be empty'));
    const root = b64decode(lines[2], T('the checkpoint root'));
    if (root.length !== 32) fail(T('the checkpoint root is not 32 bytes'));
    return { origin: lines[0], size: parseUint64(lines[1], T('the tree size')), root,
      extensions: lines.slice(3) };
  }

  /** A signed checkpoint of the log a trusted key is for, as ledger/note.py's verify_checkpoint
   * (D191, D195): the note verifies under the verifiers given (verifyNote), and its origin is
   * the name of a key that signed it (c2sp.org/tlog-checkpoint; a copyledger log's key is
   * always named for its origin). Otherwise, with two logs' keys pinned, log B's key could
   * lend log A a checkpoint. Returns the checkpoint and the keys named for its origin that
   * signed it (the only ones that vouch for it). */
  async function verifyCheckpoint(text, verifiers) {
    const n = await verifyNote(text, verifiers);
    const cp = parseCheckpoint(n.text);
    const named = n.signers.filter((v) => v.name === cp.origin);
    if (!named.length) {
      const names = [...new Set(n.signers.map((v) => v.name))].sort().join(', ');
      fail(T('the checkpoint is for log {origin}, not for the log of the trusted key that signed it ({names})',
        { origin: JSON.stringify(cp.origin), names }));
    }
    return { checkpoint: cp, signers: named };
  }

  // ------------------------------------------------------------ SM3 and SM2 (the SM suite, D40)
  // GB/T 32905 and GB/T 32918, as ledger/sm2.py: WebCrypto has neither, so they are here, in
  // the page's own code (checked against ledger/sm2.py and openssl by tests/test_sm.py).

  const rotl = (x, n) => ((x << (n & 31)) | (x >>> ((32 - (n & 31)) & 31))) >>> 0;

  function sm3(data) {
    const bits = BigInt(data.length) * 8n;
    const padded = new Uint8Array(((data.length + 9 + 63) >> 6) << 6);
    padded.set(data);
    padded[data.length] = 0x80;
    new DataView(padded.buffer).setBigUint64(padded.length - 8, bits);
    const v = [0x7380166f, 0x4914b2b9, 0x172442d7, 0xda8a0600, 0xa96f30bc, 0x163138aa, 0xe38dee4d, 0xb0fb0e4e];
    const w = new Uint32Array(68), w1 = new Uint32Array(64), view = new DataView(padded.buffer);
    const p0 = (x) => (x ^ rotl(x, 9) ^ rotl(x, 17)) >>> 0, p1 = (x) => (x ^ rotl(x, 15) ^ rotl(x, 23)) >>> 0;
    for (let off = 0; off < padded.length; off += 64) {
      for (let j = 0; j < 16; j++) w[j] = view.getUint32(off + 4 * j);
      for (let j = 16; j < 68; j++) w[j] = p1(w[j - 16] ^ w[j - 9] ^ rotl(w[j - 3], 15)) ^ rotl(w[j - 13], 7) ^ w[j - 6];
      for (let j = 0; j < 64; j++) w1[j] = w[j] ^ w[j + 4];
      let [a, b, c, d, e, f, g, h] = v;
      for (let j = 0; j < 64; j++) {
        const t = j < 16 ? 0x79cc4519 : 0x7a879d8a;
        const ss1 = rotl((rotl(a, 12) + e + rotl(t, j % 32)) >>> 0, 7);
        const ss2 = (ss1 ^ rotl(a, 12)) >>> 0;
        const ff = j < 16 ? a ^ b ^ c : (a & b) | (a & c) | (b & c);
        const gg = j < 16 ? e ^ f ^ g : (e & f) | (~e & g);
        const tt1 = ((ff >>> 0) + d + ss2 + w1[j]) >>> 0;
        const tt2 = ((gg >>> 0) + h + ss1 + w[j]) >>> 0;
        d = c; c = rotl(b, 9); b = a; a = tt1; h = g; g = rotl(f, 19); f = e; e = p0(tt2);
      }
      [a, b, c, d, e, f, g, h].forEach((x, i) => { v[i] = (v[i] ^ x) >>> 0; });
    }
    const out = new Uint8Array(32), ov = new DataView(out.buffer);
    v.forEach((x, i) => ov.setUint32(4 * i, x));
    return out;
  }

  const SM2 = {
    p: 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFFn,
    a: 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFCn,
    b: 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93n,
    n: 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123n,
    gx: 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7n,
    gy: 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0n,
  };
  const SM2_KEY_TYPE = concat(Uint8Array.of(0xff), enc.encode('copyledger/sm2-sm3/v1'));
  const big = (bytes) => BigInt('0x' + (toHex(bytes) || '0'));
  const be32 = (x) => fromHex(x.toString(16).padStart(64, '0'), T('a field element'));
  const mod = (x, m = SM2.p) => ((x % m) + m) % m;
  function modPow(b, e, m) {
    let r = 1n; b = mod(b, m);
    for (; e > 0n; e >>= 1n) { if (e & 1n) r = r * b % m; b = b * b % m; }
    return r;
  }
  // Jacobian points [X, Y, Z]; Z = 0 is the point at infinity.
  function dbl([x, y, z]) {
    if (z === 0n || y === 0n) return [1n, 1n, 0n];
    const zz = z * z % SM2.p, m = mod(3n * (x - zz) * (x + zz)), s = mod(4n * x * y * y);
    const x3 = mod(m * m - 2n * s);
    return [x3, mod(m * (s - x3) - 8n * modPow(y, 4n, SM2.p)), mod(2n * y * z)];
  }
  function add(p1, p2) {
    if (p1[2] === 0n) return p2;
    if (p2[2] === 0n) return p1;
    const [x1, y1, z1] = p1, [x2, y2, z2] = p2;
    const z1z1 = z1 * z1 % SM2.p, z2z2 = z2 * z2 % SM2.p;
    const u1 = x1 * z2z2 % SM2.p, u2 = x2 * z1z1 % SM2.p;
    const s1 = y1 * z2 % SM2.p * z2z2 % SM2.p, s2 = y2 * z1 % SM2.p * z1z1 % SM2.p;
    if (u1 === u2) return s1 === s2 ? dbl(p1) : [1n, 1n, 0n];
    const h = mod(u2 - u1), r = mod(s2 - s1), hh = h * h % SM2.p, hhh = h * hh % SM2.p, v = u1 * hh % SM2.p;
    const x3 = mod(r * r - hhh - 2n * v);
    return [x3, mod(r * (v - x3) - s1 * hhh), h * z1 % SM2.p * z2 % SM2.p];
  }
  function affineX([x, , z]) {
    if (z === 0n) return null;
    const zi = modPow(z, SM2.p - 2n, SM2.p);
    return x * zi % SM2.p * zi % SM2.p;
  }

  /** r and s of a minimal DER SEQUENCE { INTEGER, INTEGER }, both in [1, n-1]; else null. */
  function sm2Signature(sig) {
    if (sig.length < 8 || sig[0] !== 0x30 || sig[1] !== sig.length - 2) return null;
    const ints = [];
    let pos = 2;
    for (let i = 0; i < 2; i++) {
      if (sig[pos] !== 2 || pos + 2 > sig.length) return null;
      const len = sig[pos + 1], raw = sig.subarray(pos + 2, pos + 2 + len);
      if (len < 1 || len > 33 || raw.length !== len || raw[0] & 0x80 || (len > 1 && raw[0] === 0 && !(raw[1] & 0x80))) return null;
      ints.push(big(raw));
      pos += 2 + len;
    }
    if (pos !== sig.length || ints.some((v) => v < 1n || v >= SM2.n)) return null;
    return ints;
  }

  /** name+hex(key ID)+base64(KEY_TYPE || 04 || x || y || distinguishing ID), as ledger/sm2.py. */
  async function parseSm2Key(vkey) {
    const i = vkey.indexOf('+'), j = vkey.indexOf('+', i + 1);
    if (i < 0 || j < 0) fail(T('an SM2 verifier key is name+keyid+key'));
    const name = vkey.slice(0, i), hexId = vkey.slice(i + 1, j);
    if (!validName(name) || !/^[0-9a-f]{8}$/.test(hexId)) fail(T('the SM2 verifier key has a bad name or key ID'));
    const raw = b64decode(vkey.slice(j + 1), T('the SM2 verifier key'));
    if (!eq(raw.subarray(0, SM2_KEY_TYPE.length), SM2_KEY_TYPE)) fail(T('not an SM2 verifier key'));
    const pub = raw.subarray(SM2_KEY_TYPE.length, SM2_KEY_TYPE.length + 65), distid = raw.subarray(SM2_KEY_TYPE.length + 65);
    if (pub.length !== 65 || pub[0] !== 4 || distid.length < 1 || distid.length > 64) fail(T('the SM2 verifier key is malformed'));
    const x = big(pub.subarray(1, 33)), y = big(pub.subarray(33));
    if (x >= SM2.p || y >= SM2.p || mod(y * y - x * x * x - SM2.a * x - SM2.b) !== 0n) fail(T('the SM2 key is not on the SM2 curve'));
    const id = (await sha256(concat(enc.encode(name + '\n'), raw))).subarray(0, 4);
    if (toHex(id) !== hexId) fail(T('the SM2 verifier key ID does not match its key'));
    return { name, hexId, vkey, distid: new TextDecoder('latin1').decode(distid), sm2: true, verify: sm2Verifier(pub, distid) };
  }

  /** verify(msg, sig): SM2 with SM3 and the distinguishing ID under a 65-byte key, as ledger/sm2.py. */
  function sm2Verifier(pub, distid) {
    const x = big(pub.subarray(1, 33)), y = big(pub.subarray(33));
    if (pub.length !== 65 || pub[0] !== 4 || x >= SM2.p || y >= SM2.p || mod(y * y - x * x * x - SM2.a * x - SM2.b) !== 0n) {
      fail(T('the SM2 key is not on the SM2 curve'));
    }
    const za = sm3(concat(Uint8Array.of(distid.length >> 5, (distid.length * 8) & 0xff), distid,
      ...[SM2.a, SM2.b, SM2.gx, SM2.gy].map(be32), pub.subarray(1)));
    const verify = (msg, sig) => {
      const rs = sm2Signature(sig);
      if (!rs) return false;
      const [r, s] = rs, t = (r + s) % SM2.n;
      if (t === 0n) return false;
      const e = big(sm3(concat(za, msg)));
      const g = [SM2.gx, SM2.gy, 1n], q = [x, y, 1n], gq = add(g, q);
      let acc = [1n, 1n, 0n];
      for (let k = 255n; k >= 0n; k--) {
        acc = dbl(acc);
        const b1 = (s >> k) & 1n, b2 = (t >> k) & 1n;
        if (b1 && b2) acc = add(acc, gq); else if (b1) acc = add(acc, g); else if (b2) acc = add(acc, q);
      }
      const x1 = affineX(acc);
      return x1 !== null && (e + x1) % SM2.n === r;
    };
    return verify;
  }

  /** True if vkey claims to be an SM2 key (its key type says so), valid or not. The base64 key
   * may itself hold '+': it starts after the second one. */
  const isSm2Key = (vkey) => {
    const j = vkey.indexOf('+', vkey.indexOf('+') + 1);
    try { return j > 0 && eq(b64decode(vkey.slice(j + 1), 'key').subarray(0, SM2_KEY_TYPE.length), SM2_KEY_TYPE); } catch (e) { return false; }
  };

  // ------------------------------------------------------------ RFC 3161, just enough DER
  // The token's signature and certificate chain need X.509 path validation, which browsers
  // do not expose; 'openssl ts -verify' does that (commands on the page). Here: the token is
  // a SignedData over a TSTInfo whose messageImprint is the block hash, and its genTime.

  function der(buf, pos) {
    if (pos + 2 > buf.length) fail(T('truncated DER'));
    const tag = buf[pos];
    if ((tag & 0x1f) === 0x1f) fail(T('unsupported DER tag'));
    let len = buf[pos + 1], off = pos + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n < 1 || n > 4) fail(T('bad DER length'));
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + buf[off++];
    }
    if (off + len > buf.length) fail(T('truncated DER'));
    return { tag, pos, start: off, end: off + len, bytes: buf.subarray(off, off + len) };
  }

  function kids(buf, node) {
    const out = [];
    for (let p = node.start; p < node.end;) { const c = der(buf, p); out.push(c); p = c.end; }
    return out;
  }

  function expect(node, tag, what) {
    if (!node || node.tag !== tag) fail(T('the token is not an RFC 3161 token ({what})', { what }));
    return node;
  }

  const OID_SIGNED_DATA = '2a864886f70d010702';
  const OID_TST_INFO = '2a864886f70d0109100104';
  const HASH_OIDS = { '608648016503040201': 'sha256', '608648016503040202': 'sha384', '608648016503040203': 'sha512', '2a811ccf55018311': 'sm3' };

  function parseToken(tok) {
    const ci = kids(tok, expect(der(tok, 0), 0x30, 'ContentInfo'));
    if (toHex(expect(ci[0], 0x06, 'contentType').bytes) !== OID_SIGNED_DATA) fail(T('the token is not CMS SignedData'));
    const sd = kids(tok, expect(kids(tok, expect(ci[1], 0xa0, 'content'))[0], 0x30, 'SignedData'));
    const eci = kids(tok, expect(sd[2], 0x30, 'encapContentInfo'));
    if (toHex(expect(eci[0], 0x06, 'eContentType').bytes) !== OID_TST_INFO) fail(T('the token does not hold a TSTInfo'));
    const tstDer = expect(kids(tok, expect(eci[1], 0xa0, 'eContent'))[0], 0x04, 'eContent').bytes;
    const tst = kids(tstDer, expect(der(tstDer, 0), 0x30, 'TSTInfo'));
    if (!eq(expect(tst[0], 0x02, 'version').bytes, [1])) fail(T('TSTInfo version is not 1'));
    const mi = kids(tstDer, expect(tst[2], 0x30, 'messageImprint'));
    const alg = HASH_OIDS[toHex(expect(kids(tstDer, expect(mi[0], 0x30, 'hashAlgorithm'))[0], 0x06, 'hash OID').bytes)];
    if (!alg) fail(T('the token uses a hash algorithm other than SHA-256/384/512 or SM3'));
    const imprint = expect(mi[1], 0x04, 'hashedMessage').bytes;
    const serial = toHex(expect(tst[3], 0x02, 'serialNumber').bytes);
    const g = new TextDecoder().decode(expect(tst[4], 0x18, 'genTime').bytes);
    const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\.\d+)?Z$/.exec(g);
    if (!m) fail(T('the token genTime is malformed'));
    const genTime = m[1] + '-' + m[2] + '-' + m[3] + 'T' + m[4] + ':' + m[5] + ':' + m[6] + (m[7] || '') + 'Z';
    let accuracy = NO_ACCURACY; // Accuracy ::= SEQUENCE { seconds, [0] millis, [1] micros }
    if (tst[5] && tst[5].tag === 0x30) {
      const unit = { 0x02: 1e6, 0x80: 1e3, 0x81: 1 };
      accuracy = 0;
      for (const k of kids(tstDer, tst[5])) {
        if (!(k.tag in unit)) fail(T('the token accuracy is malformed'));
        accuracy += k.bytes.reduce((n, x) => n * 256 + x, 0) * unit[k.tag];
      }
    }
    return { alg, imprint, serial, genTime, accuracy, tstDer, sd };
  }

  // ------------------------------------------------------------ SM2/SM3 tokens (D51)
  // As ledger/sm2_timestamp.py: the imprint is SM3 of the header, messageDigest SM3 of the
  // TSTInfo, the ESS cert id SM3 of the signer certificate, which carries a critical
  // timeStamping EKU, signed (SM2, default ID) by the bundle's SM2 TSA root; and the SM2
  // signature over the signed attributes. WebCrypto has no SM2, so here all of it is checkable.
  const OID_SM3 = '2a811ccf55018311', OID_SM2_SM3 = '2a811ccf55018375';
  const SM2_SPKI = '3059301306072a8648ce3d020106082a811ccf5501822d034200';
  const DEFAULT_ID = enc.encode('1234567812345678');
  const raw = (buf, n) => buf.subarray(n.pos, n.end);
  const oid = (buf, n, what) => toHex(expect(n, 0x06, what).bytes);

  function pemCerts(pem) {
    return [...pem.matchAll(/-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----/g)]
      .map((m) => b64decode(m[1].replace(/\s+/g, ''), T('an SM2 TSA root'), false));
  }

  function gmTime(n) {
    const t = new TextDecoder().decode(n.bytes);
    const m = /^(\d{2}|\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(t);
    if (!m || (n.tag === 0x17) !== (m[1].length === 2)) fail(T('a certificate time is malformed'));
    const year = m[1].length === 2 ? (Number(m[1]) < 50 ? 2000 : 1900) + Number(m[1]) : m[1];
    return micros(year + '-' + m[2] + '-' + m[3] + 'T' + m[4] + ':' + m[5] + ':' + m[6] + 'Z', T('a certificate time'));
  }

  function sm2Cert(cert) {
    const c = kids(cert, expect(der(cert, 0), 0x30, 'Certificate'));
    const f = kids(cert, expect(c[0], 0x30, 'TBSCertificate'));
    const k = f[0].tag === 0xa0 ? 1 : 0, spki = raw(cert, f[k + 5]);
    if (oid(cert, kids(cert, c[1])[0], 'signature algorithm') !== OID_SM2_SM3) fail(T('the certificate is not signed with SM2-with-SM3'));
    if (toHex(spki.subarray(0, 26)) !== SM2_SPKI || spki.length !== 91) fail(T("the certificate's key is not an SM2 key"));
    const sig = expect(c[2], 0x03, 'signatureValue').bytes;
    const validity = kids(cert, f[k + 3]);
    let eku = false, ca = false;
    const exts = f.find((n) => n.tag === 0xa3);
    for (const e of exts ? kids(cert, kids(cert, exts)[0]) : []) {
      const p = kids(cert, e), id = oid(cert, p[0], 'extnID'), body = p[p.length - 1].bytes;
      if (id !== '551d25' && id !== '551d13') continue;
      const v = kids(body, der(body, 0));
      if (id === '551d25') eku = p.length === 3 && eq(p[1].bytes, [0xff]) && v.length === 1 && toHex(v[0].bytes) === '2b06010505070308';
      if (id === '551d13') ca = v.length >= 1 && v[0].tag === 0x01 && v[0].bytes[0] === 0xff;
    }
    return { der: cert, tbs: raw(cert, c[0]), sig: sig.subarray(1), serial: f[k].bytes, issuer: raw(cert, f[k + 2]),
      subject: raw(cert, f[k + 4]), notBefore: gmTime(validity[0]), notAfter: gmTime(validity[1]),
      pub: spki.subarray(26), eku, ca };
  }

  function checkSm2Token(tok, digest, roots) {
    const info = parseToken(tok), sd = info.sd;
    if (info.alg !== 'sm3') fail(T('the messageImprint is not an SM3 digest'));
    if (!eq(info.imprint, digest)) fail(T('the token covers {imprint}, not the SM3 of the block header', { imprint: toHex(info.imprint) }));
    if (!eq(sd[0].bytes, [3])) fail(T('SignedData version must be 3'));
    const algs = kids(tok, expect(sd[1], 0x31, 'digestAlgorithms'));
    if (algs.length !== 1 || oid(tok, kids(tok, algs[0])[0], 'digest algorithm') !== OID_SM3) fail(T("the SignedData's digest algorithms are not SM3 alone"));
    const sis = kids(tok, expect(sd[sd.length - 1], 0x31, 'signerInfos'));
    if (sis.length !== 1) fail(T('the token must have exactly one SignerInfo'));
    const si = kids(tok, expect(sis[0], 0x30, 'SignerInfo'));
    if (!eq(expect(si[0], 0x02, 'SignerInfo version').bytes, [1])) fail(T('SignerInfo version must be 1'));
    if (oid(tok, kids(tok, si[2])[0], 'digestAlgorithm') !== OID_SM3 || oid(tok, kids(tok, si[4])[0], 'signatureAlgorithm') !== OID_SM2_SM3) {
      fail(T('the SignerInfo is not SM2-with-SM3'));
    }
    const attrs = {};
    for (const a of kids(tok, expect(si[3], 0xa0, 'signedAttrs'))) {
      const [type, values] = kids(tok, a);
      const name = oid(tok, type, 'attribute type');
      if (name in attrs) fail(T('a signed attribute appears twice'));
      attrs[name] = kids(tok, expect(values, 0x31, 'attribute values'));
    }
    const ct = attrs['2a864886f70d010903'], md = attrs['2a864886f70d010904'], ess = attrs['2a864886f70d010910022f'];
    if (!ct || ct.length !== 1 || toHex(ct[0].bytes) !== OID_TST_INFO) fail(T('the contentType attribute is not id-ct-TSTInfo'));
    if (!md || md.length !== 1 || !eq(md[0].bytes, sm3(info.tstDer))) fail(T('messageDigest is not SM3 of the TSTInfo'));
    const certsNode = sd.find((n) => n.tag === 0xa0);
    const certs = certsNode ? kids(tok, certsNode).map((n) => sm2Cert(raw(tok, n))) : [];
    const [sidIssuer, sidSerial] = kids(tok, expect(si[1], 0x30, 'issuerAndSerialNumber'));
    const signer = certs.find((c) => eq(c.issuer, raw(tok, sidIssuer)) && eq(c.serial, sidSerial.bytes));
    if (!signer) fail(T("the token does not carry the signer's certificate"));
    if (!ess || ess.length !== 1) fail(T('no ESS signing-certificate-v2 attribute'));
    const certId = kids(tok, kids(tok, kids(tok, ess[0])[0])[0]);
    if (oid(tok, kids(tok, certId[0])[0], 'ESS hash') !== OID_SM3 || !eq(certId[1].bytes, sm3(signer.der))) {
      fail(T('the ESS cert id is not the SM3 of the signer certificate'));
    }
    if (!signer.eku) fail(T("the SM2 TSA certificate's extendedKeyUsage is not a critical id-kp-timeStamping alone"));
    const attrsDer = Uint8Array.from(raw(tok, si[3]));
    attrsDer[0] = 0x31; // signed as a universal SET (RFC 5652 5.4)
    if (!sm2Verifier(signer.pub, DEFAULT_ID)(attrsDer, expect(si[5], 0x04, 'signature').bytes)) fail(T("the token's SM2 signature does not verify"));
    const root = roots.find((r) => r.ca && eq(r.subject, signer.issuer) && sm2Verifier(r.pub, DEFAULT_ID)(signer.tbs, signer.sig));
    if (!root) fail(T('the SM2 TSA certificate does not chain to the SM2 TSA root'));
    const at = micros(info.genTime, 'genTime');
    for (const c of [signer, root]) if (at < c.notBefore || at > c.notAfter) fail(T('a certificate was not valid at {gen_time}', { gen_time: info.genTime }));
    return { ...info, root, certSm3: toHex(sm3(signer.der)) };
  }

  function opensslCommands(b, i) {
    const chain = Array.isArray(b.notary.tsa_chain) && b.notary.tsa_chain.length > 0;
    const cmds = [
      "jq -r '.timestamps[" + i + "].token' bundle.json | base64 -d > token.der",
      "jq -r '.notary.tsa_roots[]' bundle.json > root.pem",
    ];
    if (chain) cmds.push("jq -r '.notary.tsa_chain[]' bundle.json > chain.pem");
    // (a command line, word by word, so that no literal of it reads as words to translate)
    cmds.push(['openssl', 'ts', '-verify', '-digest', b.block.hash, '-in', 'token.der', '-token_in', '-CAfile',
      'root.pem'].join(' ') + (chain ? ' -untrusted chain.pem' : ''));
    return cmds;
  }

  // ------------------------------------------------------------ the steps

  function need(obj, key, type, where) {
    const path = where ? where + '.' + key : key;
    if (obj === null || typeof obj !== 'object' || !(key in obj)) fail(T('bundle: {path} is missing', { path }));
    const v = obj[key];
    const ok = type === 'int' ? Number.isSafeInteger(v) && v >= 0
      : type === 'array' ? Array.isArray(v)
        : type === 'object' ? v !== null && typeof v === 'object' && !Array.isArray(v)
          : typeof v === type;
    if (!ok) fail(T('bundle: {path} has the wrong type', { path }));
    return v;
  }

  // The members of a bundle/v1 document, as ledger/documents.py's Bundle.from_dict reads them:
  // [name, type, required]; a nested object's members follow as a fourth element.
  const LOG_KEY = [['verifier_key', 'string', true], ['valid_from', 'string', false],
    ['valid_until', 'string?', false], ['cosigns_until', 'string?', false]];
  const BUNDLE = [
    ['format', 'string', true], ['origin', 'string', true], ['seq', 'integer', true],
    ['leaf_hash', 'string', true], ['entry', 'object', true],
    ['inclusion', 'object', true, [['tree_size', 'integer', true], ['root', 'string', true],
      ['proof', 'strings', true]]],
    ['checkpoint', 'string', true],
    ['block', 'object', true, [['height', 'integer', true], ['hash', 'string', true],
      ['header', 'object', true], ['block_note', 'string', true]]],
    ['timestamps', 'objects', true, [['tsa', 'string', true], ['hash_alg', 'string', false],
      ['token', 'string', true]]],
    ['notary', 'object', true, [['log_keys', 'objects', true, LOG_KEY],
      ['tsa_roots', 'strings', true], ['tsa_chain', 'strings', false],
      ['sm2_keys', 'objects', false, [['verifier_key', 'string', true]]],
      ['sm2_tsa_roots', 'strings', false],
      ['sm2_tsa_retired', 'objects', false, [['certificate_sm3', 'string', true], ['retired_at', 'string', true]]]]],
    ['tlog_proof', 'string', false],
    ['witnessed', 'object', false, [['checkpoint', 'string', true], ['consistency', 'strings', true]]],
    ['title_chain', 'object', false, [['checkpoint', 'string', true], ['consistency', 'strings', true],
      ['links', 'objects', true, [['seq', 'integer', true], ['entry', 'object', true], ['proof', 'strings', true]]]]],
    ['sm2_timestamps', 'objects', false, [['tsa', 'string', true], ['hash_alg', 'string', false],
      ['token', 'string', true]]],
  ];
  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const TYPES = {
    string: (v) => typeof v === 'string', 'string?': (v) => v === null || typeof v === 'string',
    integer: Number.isInteger, object: isObj, strings: (v) => Array.isArray(v) && v.every((x) => typeof x === 'string'),
    objects: Array.isArray,
  };

  /** Exactly the members 'spec' names, each of its type: nothing else, nothing missing. */
  function checkShape(obj, spec, path) {
    if (!isObj(obj)) fail(T('bundle: {path} must be a JSON object', { path: path || T('the document') }));
    const at = (k) => (path ? path + '.' + k : k);
    for (const k of Object.keys(obj)) if (!spec.some(([n]) => n === k)) fail(T('bundle: {field}: unknown field', { field: at(k) }));
    for (const [k, type, required, members] of spec) {
      if (!(k in obj)) { if (required) fail(T('bundle: {field}: required', { field: at(k) })); continue; }
      if (!TYPES[type](obj[k])) fail(T('bundle: {field} has the wrong type', { field: at(k) }));
      if (members && type === 'objects') obj[k].forEach((o, i) => checkShape(o, members, at(k) + '[' + i + ']'));
      else if (members) checkShape(obj[k], members, at(k));
    }
  }

  // The members of each entry kind and of its nested objects (ledger/entry.py), and the
  // members that hold a SHA-256 (64 lowercase hex).
  const ENTRY_BASE = ['schema', 'kind', 'registrant', 'received_at'];
  const ENTRY_KINDS = {
    work: [...ENTRY_BASE, 'content', 'title', 'creators', 'work_type', 'license', 'metadata'],
    evidence: [...ENTRY_BASE, 'content', 'source_url', 'captured_at', 'capture_method', 'description',
      'related_work', 'warc_records', 'metadata'],
    transfer: [...ENTRY_BASE, 'work', 'from', 'to', 'transfer_type', 'territory', 'term', 'terms_sha256', 'note',
      'needs_acceptance'],
    acceptance: [...ENTRY_BASE, 'work', 'offer', 'note'],
    withdrawal: [...ENTRY_BASE, 'work', 'offer', 'note'],
    rotation: [...ENTRY_BASE, 'content', 'old_verifier_key', 'new_verifier_key', 'old_tsa_root_sha256',
      'new_tsa_root_sha256', 'overlap_until'],
    claim: [...ENTRY_BASE, 'notice_type', 'regime', 'refers_to', 'claimant', 'works', 'targets',
      'substantiation', 'statements', 'requested_action', 'signature'],
  };
  const ENTRY_PARTS = {
    content: ['sha256', 'sm3', 'size', 'media_type', 'fingerprints'], work: ['seq', 'sha256'], term: ['start', 'end'],
    claimant: ['name', 'email', 'phone', 'address', 'contact_fields', 'contact_commitment', 'authority',
      'account'],
    statements: ['good_faith', 'accuracy', 'perjury', 'mistake', 'jurisdiction_consent'],
    warc_records: ['target_uri', 'warc_date', 'record_id', 'payload_sha256'],
    works: ['seq', 'sha256', 'description'], targets: ['url', 'sha256'],
  };
  const ENTRY_HEX = ['sha256', 'sm3', 'terms_sha256', 'old_tsa_root_sha256', 'new_tsa_root_sha256', 'payload_sha256',
    'contact_commitment'];

  /** The entry's members: exactly those of its kind (and of each nested object), no null
   * outside metadata, content hashes in lowercase hex, received_at RFC 3339. The values' other
   * rules (lengths, enumerations, ...) are ledger/entry.py's; 'copyledger verify' checks them. */
  function checkEntry(e) {
    if (!isObj(e) || e.schema !== 'copyledger/entry/v1') fail(T('invalid entry: schema: must be copyledger/entry/v1'));
    const allowed = ENTRY_KINDS[e.kind];
    if (!allowed) fail(T('invalid entry: kind: must be one of work, evidence, transfer, claim, rotation, acceptance, withdrawal'));
    const members = (obj, names, path) => {
      for (const [k, v] of Object.entries(obj)) {
        const at = path ? path + '.' + k : k;
        if (!names.includes(k)) fail(T('invalid entry: {at}: unknown field', { at }));
        if (v === null) fail(T('invalid entry: {at}: must be left out rather than null', { at }));
        if (ENTRY_HEX.includes(k) && !(typeof v === 'string' && /^[0-9a-f]{64}$/.test(v))) {
          fail(T('invalid entry: {at}: must be 64 lowercase hex characters', { at }));
        }
        const part = ENTRY_PARTS[k];
        if (part && k !== 'metadata') {
          if (Array.isArray(v)) v.forEach((o, i) => { if (isObj(o)) members(o, part, at + '[' + i + ']'); });
          else if (isObj(v)) members(v, part, at);
        }
      }
    };
    members(e, allowed, '');
    micros(e.received_at, T('invalid entry: received_at'));
  }

  const checks = {
    format(ctx) {
      if (typeof ctx.bundle === 'string') ctx.bundle = parseStrict(ctx.bundle);
      const b = ctx.bundle;
      if (b === null || typeof b !== 'object' || b.format !== FORMAT) fail(T('not a {format} document', { format: FORMAT }));
      checkShape(b, BUNDLE, '');
      return T('entry {seq} of log {origin}', { seq: b.seq, origin: b.origin });
    },

    file(ctx) {
      const content = ctx.bundle.entry.content || ctx.bundle.entry.work;
      const registered = content && content.sha256;
      if (typeof registered !== 'string' || !/^[0-9a-f]{64}$/.test(registered)) fail(T('the entry has no content.sha256'));
      ctx.registered = registered;
      if (!ctx.fileHash) return { status: 'skipped', detail: T('no file chosen; the registered SHA-256 is {sha256}', { sha256: registered }) };
      if (ctx.fileHash !== registered) fail(T("the file's SHA-256 is {got}, the entry registers {registered}", { got: ctx.fileHash, registered }));
      return T('SHA-256 {sha256}', { sha256: registered });
    },

    async entry(ctx) {
      const b = ctx.bundle;
      checkEntry(b.entry);
      ctx.data = enc.encode(jcs(b.entry));
      ctx.leaf = await leafHash(ctx.data);
      if (!eq(ctx.leaf, fromHex(b.leaf_hash, 'leaf_hash'))) {
        fail(T('SHA-256(0x00 || entry) is {leaf}, the bundle says {claimed}', { leaf: toHex(ctx.leaf), claimed: b.leaf_hash }));
      }
      return T('leaf hash {leaf} ({n} canonical bytes)', { leaf: toHex(ctx.leaf), n: ctx.data.length });
    },

    async inclusion(ctx) {
      const inc = ctx.bundle.inclusion;
      ctx.size = BigInt(need(inc, 'tree_size', 'int', 'inclusion'));
      ctx.root = fromHex(need(inc, 'root', 'string', 'inclusion'), 'inclusion.root');
      ctx.proof = need(inc, 'proof', 'array', 'inclusion').map((h) => fromHex(h, T('an inclusion proof hash')));
      const got = await rootFromInclusion(BigInt(ctx.bundle.seq), ctx.size, ctx.leaf, ctx.proof);
      if (!eq(got, ctx.root)) fail(T('the inclusion proof does not lead to the root'));
      return T('seq {seq} in the tree of {size} entries, root {root}', { seq: ctx.bundle.seq, size: ctx.size, root: toHex(ctx.root) });
    },

    async checkpoint(ctx) {
      const b = ctx.bundle;
      const verifiers = [];
      const pinnedEd = ctx.pinned.filter((k) => !isSm2Key(k));
      if (pinnedEd.length) {
        ctx.trust = 'pinned';
        for (const k of pinnedEd) {
          try { verifiers.push(await parseVerifierKey(k)); } catch (e) {
            if (e instanceof Fail) fail(T('the key you pinned: {why}', { why: e.message }));
            throw e;
          }
        }
      } else {
        ctx.trust = 'bundle';
        for (const k of need(b.notary, 'log_keys', 'array', 'notary')) {
          verifiers.push(await parseVerifierKey(need(k, 'verifier_key', 'string', 'notary.log_keys[]')));
        }
      }
      // a checkpoint of the log the key is for: its origin is the signing key's name (D191)
      const { checkpoint: cp, signers } = await verifyCheckpoint(b.checkpoint, verifiers);
      if (cp.extensions.length) fail(T('the checkpoint has extension lines; copyledger/bundle/v1 allows none'));
      if (cp.origin !== b.origin) fail(T('the checkpoint is for log {got}, not {origin}', { got: JSON.stringify(cp.origin), origin: JSON.stringify(b.origin) }));
      if (cp.size !== ctx.size || !eq(cp.root, ctx.root)) fail(T("the signed checkpoint's size and root differ from the inclusion proof's"));
      ctx.verifiers = signers; // the keys named for this log that signed: the block note's too
      ctx.logKeys = verifiers;
      const pinned = ctx.trust === 'pinned';
      const how = pinned ? T('a key you pinned') : T('the key in the bundle (not pinned)');
      for (const v of signers) {
        ctx.facts.push([pinned ? T('Log key (pinned)') : T('Log key (taken from the bundle, NOT pinned)'),
          v.vkey + ' \u2014 SHA-256 ' + toHex(await sha256(enc.encode(v.vkey)))]);
      }
      return T('signed by {key} ({how}; SHA-256 {sha256}); tree size {size}', {
        key: signers[0].vkey, how, sha256: toHex(await sha256(enc.encode(signers[0].vkey))), size: cp.size });
    },

    async block(ctx) {
      const b = ctx.bundle, blk = need(b, 'block', 'object');
      const h = need(blk, 'header', 'object', 'block');
      if (h.schema !== BLOCK_SCHEMA) fail(T('the block header is not a {schema} header', { schema: BLOCK_SCHEMA }));
      const header = { schema: BLOCK_SCHEMA }; // the fields the block hash covers, as ledger/block.py
      for (const k of ['height', 'first_seq', 'count', 'tree_size']) header[k] = need(h, k, 'int', 'block.header');
      for (const k of ['prev_block_hash', 'batch_root', 'tree_root']) header[k] = toHex(fromHex(h[k], 'block.header.' + k));
      if (!('sealed_at' in h)) fail(T('bundle: block.header.sealed_at is missing'));
      header.sealed_at = String(h.sealed_at);
      if (jcs(header) !== jcs(h)) {
        fail(T('the block header is not exactly the nine members of a block/v1 header (hashes in lowercase hex, sealed_at a string)'));
      }
      ctx.blockHash = fromHex(need(blk, 'hash', 'string', 'block'), 'block.hash');
      if (!eq(await sha256(enc.encode(jcs(header))), ctx.blockHash)) fail(T("SHA-256 of the header's canonical JSON is not the block hash"));
      if (header.height !== need(blk, 'height', 'int', 'block')) fail(T("block.height differs from the header's height"));
      if (header.tree_size !== header.first_seq + header.count) fail(T('block {height}: tree_size {tree_size} != first_seq + count', { height: header.height, tree_size: header.tree_size }));
      if (header.height === 0 && (header.prev_block_hash !== '0'.repeat(64) || header.first_seq !== 0)) {
        fail(T('block 0: genesis must start at seq 0 with a zero prev hash'));
      }
      if (BigInt(header.tree_size) !== ctx.size || header.tree_root !== toHex(ctx.root)) fail(T("the block header's tree size and root differ from the checkpoint's"));
      if (!(header.first_seq <= b.seq && b.seq < header.first_seq + header.count)) fail(T("seq {seq} is not among this block's entries", { seq: b.seq }));
      if (header.count === 1 && header.batch_root !== toHex(ctx.leaf)) {
        fail(T("the block seals this entry alone, but its batch_root is not the entry's leaf hash"));
      }
      ctx.sealed = micros(header.sealed_at, T("the block's sealed_at"));
      if (micros(b.entry.received_at, T("the entry's received_at")) > ctx.sealed) {
        fail(T('the entry was received at {received_at}, after the block that seals it was sealed ({sealed_at})', { received_at: b.entry.received_at, sealed_at: header.sealed_at }));
      }
      ctx.header = header;
      return T('block {height} sealed at {sealed_at}', { height: header.height, sealed_at: header.sealed_at });
    },

    async 'block-signature'(ctx) {
      const b = ctx.bundle;
      const n = await verifyNote(need(b.block, 'block_note', 'string', 'block'), ctx.verifiers);
      const lines = noteLines(n.text, T('block note'));
      if (lines.length !== 4 || lines[0] !== BLOCK_NOTE_HEADER) fail(T('the block note must be {header}, origin, height and hash', { header: BLOCK_NOTE_HEADER }));
      const hash = b64decode(lines[3], T('the block note hash'));
      if (lines[1] !== b.origin || parseUint64(lines[2], T('block height')) !== BigInt(ctx.header.height) || !eq(hash, ctx.blockHash)) {
        fail(T('the block note names a different log, height or block hash'));
      }
      return T('the block note verifies');
    },

    timestamp(ctx) {
      const b = ctx.bundle;
      if (!b.timestamps.length) fail(T('the bundle carries no time-stamp token'));
      const times = b.timestamps.map((t, i) => {
        const what = 'timestamps[' + i + ']';
        let info;
        try { info = parseToken(b64decode(need(t, 'token', 'string', 'timestamps[' + i + ']'), T('{what} token', { what }), false)); } catch (e) {
          if (e instanceof Fail) fail(T('{what}: {why}', { what, why: e.message }));
          throw e;
        }
        if (!eq(info.imprint, ctx.blockHash)) fail(T('{what}: the token covers {imprint}, not the block hash', { what, imprint: toHex(info.imprint) }));
        if (t.hash_alg !== undefined && t.hash_alg !== info.alg) fail(T('{what}: hash_alg says {claimed}, the token {alg}', { what, claimed: t.hash_alg, alg: info.alg }));
        if (ctx.sealed > micros(info.genTime, T('{what} genTime', { what })) + info.accuracy) {
          fail(T("{what}: the block was sealed at {sealed_at}, after the token's time {gen_time} (+ accuracy)", { what, sealed_at: ctx.header.sealed_at, gen_time: info.genTime }));
        }
        // 'tsa' is a label nobody signed: the page names the token by its place in the bundle.
        ctx.facts.push([T('Time-stamp {what}', { what }), T('{gen_time} (serial {serial}); who signed it, and whether that TSA is independent of the operator, only openssl ts -verify or copyledger verify --tsa-roots can tell', { gen_time: info.genTime, serial: info.serial })]);
        return what + ': ' + info.genTime;
      });
      ctx.openssl = opensslCommands(b, 0);
      return {
        status: 'external',
        detail: T('{times} — the token covers the block hash. Its signature and certificate '
          + 'chain: check with openssl ts -verify (commands below).', { times: times.join('; ') }),
      };
    },

    'tlog-proof'(ctx) {
      const b = ctx.bundle;
      if (b.tlog_proof === undefined) return { status: 'skipped', detail: T('no tlog-proof in the bundle') };
      const text = need(b, 'tlog_proof', 'string');
      const k = text.indexOf('\n\n');
      if (k < 0) fail(T('tlog-proof: no blank line before the checkpoint'));
      const lines = text.slice(0, k).split('\n'), checkpoint = text.slice(k + 2);
      if (lines[0] !== TLOG_PROOF_HEADER) fail(T('tlog-proof: the first line must be {header}', { header: TLOG_PROOF_HEADER }));
      let pos = 1, extra = null;
      if (pos < lines.length && lines[pos].startsWith('extra ')) extra = b64decode(lines[pos++].slice(6), T('tlog-proof extra'), false);
      const m = pos < lines.length && /^index (0|[1-9][0-9]*)$/.exec(lines[pos]);
      if (!m) fail(T("tlog-proof: missing or bad 'index' line"));
      const proof = lines.slice(pos + 1).map((l) => b64decode(l, T('tlog-proof hash'), false));
      const same = BigInt(m[1]) === BigInt(b.seq) && checkpoint === b.checkpoint
        && proof.length === ctx.proof.length && proof.every((p, i) => eq(p, ctx.proof[i]))
        && extra !== null && eq(extra, ctx.data);
      if (!same) fail(T("the tlog-proof differs from the bundle's entry, proof or checkpoint"));
      return T('same index, entry, proof and checkpoint');
    },

    // An SM-suite bundle: its SM2 key (pinned, or the one it carries) signed the checkpoint and
    // the block note too. Nothing to check for a bundle of the standard suite.
    async sm2(ctx) {
      const b = ctx.bundle, pinned = ctx.pinned.filter(isSm2Key);
      const carried = (b.notary.sm2_keys || []).map((k) => k.verifier_key);
      if (!pinned.length && !carried.length) {
        if (b.sm2_timestamps && b.sm2_timestamps.length) fail(T('the bundle carries SM2 time-stamps, but there is no SM2 key to check its notes with'));
        return { status: 'skipped', detail: T('not an SM-suite log: the bundle carries no SM2 key') };
      }
      const keys = [];
      for (const k of pinned.length ? pinned : carried) keys.push(await parseSm2Key(k));
      let ok;
      for (const [what, signed] of [[T('the checkpoint'), b.checkpoint], [T('the block note'), b.block.block_note]]) {
        let n;
        try { n = await verifyNote(signed, keys); } catch (e) {
          if (e instanceof Fail) fail(T("{what}'s SM2 signature: {why}", { what, why: e.message }));
          throw e;
        }
        // An SM2 note signature signs the text, not the key's name: a key named for another
        // log is no signature of this one (D191, D195)
        ok = n.signers.filter((k) => k.name === b.origin);
        if (!ok.length) fail(T("{what}'s SM2 signature is by a key named for another log than {origin}", { what, origin: b.origin }));
      }
      const v = ok[0], how = pinned.length ? T('a key you pinned') : T('the key in the bundle (not pinned)');
      ctx.facts.push([pinned.length ? T('SM2 key (pinned)') : T('SM2 key (taken from the bundle, NOT pinned)'),
        v.vkey + ' \u2014 SHA-256 ' + toHex(await sha256(enc.encode(v.vkey)))]);
      if (b.entry.content && b.entry.content.sm3) ctx.facts.push([T('SM3 (registered)'), b.entry.content.sm3]);
      const stamps = b.sm2_timestamps || [];
      const sm2Held = (timestamps) => T('SM2 with SM3 and ID {distid}, by {key} ({how}){timestamps}', {
        distid: "'" + v.distid + "'", key: v.vkey, how, timestamps });
      if (!stamps.length) return sm2Held(T('; no SM2 time-stamp token in the bundle'));
      const roots = [];
      const digest = sm3(enc.encode(jcs(ctx.header)));
      const times = stamps.map((t, i) => {
        const what = 'sm2_timestamps[' + i + ']';
        let info;
        try {
          if (!roots.length) for (const pem of b.notary.sm2_tsa_roots || []) for (const d of pemCerts(pem)) roots.push(sm2Cert(d));
          if (t.hash_alg !== undefined && t.hash_alg !== 'sm3') fail(T("hash_alg says {claimed}, an SM2 token's is sm3", { claimed: t.hash_alg }));
          info = checkSm2Token(b64decode(t.token, T('{what} token', { what }), false), digest, roots);
        } catch (e) {
          if (e instanceof Fail) fail(T('{what}: {why}', { what, why: e.message }));
          throw e;
        }
        if (ctx.sealed > micros(info.genTime, T('{what} genTime', { what })) + info.accuracy) {
          fail(T("{what}: the block was sealed at {sealed_at}, after the token's time {gen_time} (+ accuracy)", { what, sealed_at: ctx.header.sealed_at, gen_time: info.genTime }));
        }
        // A rotation retires the SM2 TSA certificate (D57): what it signed afterwards is refused.
        for (const r of b.notary.sm2_tsa_retired || []) {
          if (r.certificate_sm3.toLowerCase() === info.certSm3
              && micros(info.genTime, T('{what} genTime', { what })) > micros(r.retired_at, 'notary.sm2_tsa_retired[].retired_at')) {
            fail(T('{what}: signed at {gen_time} by an SM2 TSA certificate retired at {retired_at}', { what, gen_time: info.genTime, retired_at: r.retired_at }));
          }
        }
        ctx.facts.push([T('SM2 time-stamp {what} (root taken from the bundle, NOT pinned)', { what }),
          T("{gen_time} (serial {serial}); the header's SM3 {sm3}", { gen_time: info.genTime, serial: info.serial, sm3: toHex(digest) })]);
        return String(info.genTime);
      });
      return sm2Held(T("; {n} SM2/SM3 time-stamp token(s) over the header's SM3 {sm3}, under {how}: {times}", {
        n: times.length, sm3: toHex(digest), how: T('the SM2 TSA root in the bundle (not pinned)'), times: times.join('; ') }));
    },

    // The page has no witness keys to pin, so, like 'copyledger verify' without --witness, it
    // skips this step; it names the cosigners the bundle claims, as NOT verified.
    witnessed(ctx) {
      const w = ctx.bundle.witnessed;
      if (w === undefined) return { status: 'skipped', detail: T('no witness keys given, so witness cosignatures were not checked') };
      let names = [];
      try { names = parseNote(w.checkpoint).sigs.filter((s) => s.sig.length === 72).map((s) => s.name); } catch (e) {
        if (!(e instanceof Fail)) throw e;
      }
      const who = names.length ? names.join(', ') : T('none');
      ctx.facts.push([T('Witnesses the bundle names (NOT verified by this page)'), who]);
      return {
        status: 'skipped',
        detail: T('no witness keys given, so witness cosignatures were not checked; the bundle names as '
          + 'cosigners: {who} (NOT verified) — check with copyledger verify --witness <key> --quorum <n>', { who }),
      };
    },

    // The links are checked here as ledger/verify.py checks them: each in a checkpoint this log
    // signed that extends the entry's, in log order, naming the work, the bundled entry among
    // them. Who held the work after each link is ledger/title.py's replay, which this page does
    // not restate: it names the links, as NOT replayed, and leaves the holder to copyledger verify.
    async title(ctx) {
      const b = ctx.bundle, c = b.title_chain;
      if (c === undefined) {
        return { status: 'skipped', detail: T('the bundle carries no chain of title, so none was checked: it does not show who holds a work now') };
      }
      const cp = (await verifyCheckpoint(c.checkpoint, ctx.logKeys)).checkpoint; // (of its key's log)
      if (cp.extensions.length || cp.origin !== b.origin) fail(T("the chain's checkpoint is not a plain checkpoint of this log"));
      if (cp.size < ctx.size) fail(T("the chain's checkpoint (size {size}) is older than the entry's ({entry_size})", { size: cp.size, entry_size: ctx.size }));
      const cons = c.consistency.map((h) => fromHex(h, T('title_chain.consistency hash')));
      await verifyConsistency(ctx.size, cp.size, ctx.root, cp.root, cons);
      if (!c.links.length) fail(T('the chain of title has no links (the first must be the work)'));
      const work = c.links[0].seq;
      const names = (e) => (isObj(e.work) && e.work.seq === work) || e.refers_to === work
        || (Array.isArray(e.works) && e.works.some((w) => isObj(w) && w.seq === work));
      let prev = -1, carried = false;
      for (const [i, link] of c.links.entries()) {
        try {
          checkEntry(link.entry);
          const data = enc.encode(jcs(link.entry));
          const proof = link.proof.map((h) => fromHex(h, T('proof hash')));
          if (!eq(await rootFromInclusion(BigInt(link.seq), cp.size, await leafHash(data), proof), cp.root)) {
            fail(T('the inclusion proof does not lead to the root'));
          }
          if (link.seq <= prev) fail(T('out of log order (each link must come after the one before)'));
          if (i === 0 && link.entry.kind !== 'work') fail(T('entry {seq} is a {kind}, not a work', { seq: link.seq, kind: link.entry.kind }));
          if (i > 0 && !names(link.entry)) fail(T('the entry does not name work {work}', { work }));
          carried = carried || (link.seq === b.seq && eq(data, ctx.data));
          prev = link.seq;
        } catch (e) {
          if (e instanceof Fail) fail(T('link {i} (seq {seq}): {why}', { i, seq: link.seq, why: e.message }));
          throw e;
        }
      }
      if (!carried) fail(T('the bundled entry (seq {seq}) is not a link of the chain', { seq: b.seq }));
      const seqs = c.links.map((l) => l.seq + ' (' + l.entry.kind + ')').join(', ');
      ctx.facts.push([T('Chain of title links (in the log; holders NOT replayed by this page)'), seqs]);
      return {
        status: 'external',
        detail: T('{n} link(s) of work {work} in the log as of tree size {size}: {seqs}. Who held the work '
          + 'after each: check with copyledger verify, which replays the chain.', { n: c.links.length, work, size: cp.size, seqs }),
      };
    },
  };

  /** Run the steps in order; stop at the first failure (each step builds on the one before). */
  async function verify(bundle, fileHash, pinned) {
    const ctx = { bundle, fileHash, pinned, facts: [], trust: '', openssl: null };
    const results = STEPS.map(([name, title]) => ({ name, title, status: 'not checked', detail: '' }));
    for (const r of results) {
      try {
        const out = await checks[r.name](ctx);
        if (typeof out === 'string') { r.status = 'ok'; r.detail = out; } else { r.status = out.status; r.detail = out.detail; }
      } catch (e) {
        if (e instanceof Unsupported) { r.status = 'failed'; r.detail = e.message; return { results, ctx, unsupported: true }; }
        r.status = 'failed';
        r.detail = e instanceof Fail ? e.message : T('unexpected error: {why}', { why: e });
        break;
      }
    }
    return { results, ctx, unsupported: false };
  }

  // ------------------------------------------------------------ the page

  const $ = (id) => document.getElementById(id);
  const state = { file: null, fileHash: null, hashing: null, bundle: null, bundleText: null, run: 0 };

  /** The technical verdict (folded) and, first, the plain one: PLAIN[key], filled in. */
  function setVerdict(status, text, key = status, vars = {}) {
    const v = $('verdict');
    v.dataset.status = status;
    v.textContent = text;
    const fill = (t) => fillIn(t, vars);
    const [head, more] = PLAIN[key] || PLAIN.failed;
    $('plain').dataset.status = status;
    $('plain-verdict').textContent = fill(head);
    $('plain-more').textContent = fill(more);
  }

  /** The viewer's zone, as the server chose it by service/dates.py's rule (zh-CN: Asia/Shanghai,
   * else UTC, or ?tz=): data-tz on <body>, absent when that zone is UTC itself, with the
   * zone's word (北京时间) in data-tz-name. The page never re-decides it. */
  const VIEWER = (() => {
    const tz = document.body && document.body.dataset.tz;
    if (!tz) return null;
    try {
      const parts = new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23',
        year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric',
        second: 'numeric' });
      return { tz, name: document.body.dataset.tzName || tz, parts };
    } catch (e) { return null; } // a zone this browser's ICU does not know: UTC alone
  })();

  /** t in the viewer's zone, by the browser's time-zone database (Intl, so summer time is
   * right for any zone ?tz= names): its parts and its offset from UTC in minutes. */
  function inZone(t) {
    const p = Object.fromEntries(VIEWER.parts.formatToParts(t).map((x) => [x.type, x.value]));
    const [y, mo, d, h, mi, s] = [p.year, p.month, p.day, p.hour, p.minute, p.second].map(Number);
    const wall = new Date(0);
    wall.setUTCFullYear(y, mo - 1, d);
    wall.setUTCHours(h % 24, mi, s, 0);
    // floored to the minute, as dates.py does
    const offset = Math.floor((wall.getTime() - Math.floor(t.getTime() / 1000) * 1000) / 60000);
    return { y, mo, d, h: h % 24, mi, offset };
  }

  /** "29 November 2026, 23:44 UTC" for an RFC 3339 time; the text itself if it is not one. In
   * a viewer's zone other than UTC, that zone's time first, as the certificate says it
   * (service/dates.py both_times): "30 November 2026, 07:44 (Beijing time UTC+8) · 29 November
   * 2026, 23:44 UTC". */
  function humanTime(text) {
    let t;
    try { t = new Date(micros(text, 'time') / 1000); } catch (e) { return String(text); }
    const pad = (n) => String(n).padStart(2, '0');
    const utc = say('date', { day: t.getUTCDate(), month: MONTHS[t.getUTCMonth()],
      year: t.getUTCFullYear(), hh: pad(t.getUTCHours()), mm: pad(t.getUTCMinutes()) });
    if (!VIEWER) return utc;
    let z;
    try { z = inZone(t); } catch (e) { return utc; } // beyond what Intl formats
    const m = Math.abs(z.offset);
    const offset = (z.offset < 0 ? '-' : '+') + Math.floor(m / 60) + (m % 60 ? ':' + pad(m % 60) : '');
    const local = say('dateIn', { day: z.d, month: MONTHS[z.mo - 1], year: z.y,
      hh: pad(z.h), mm: pad(z.mi) });
    return say('bothDates', { local, zone: VIEWER.name, offset, utc });
  }

  function renderSteps(results) {
    const ol = $('steps');
    ol.replaceChildren(...results.map((r) => {
      const li = document.createElement('li');
      li.dataset.step = r.name;
      li.dataset.status = r.status;
      const t = document.createElement('span');
      t.className = 'title';
      t.textContent = r.title + ' — ' + (r.status === 'external' ? say('seeBelow') : r.status);
      const d = document.createElement('span');
      d.className = 'detail';
      d.textContent = r.detail;
      li.append(t, d);
      return li;
    }));
  }

  function renderFacts(rows, tech = []) {
    const dl = (id, list) => $(id).replaceChildren(...list.flatMap(([k, v]) => {
      const dt = document.createElement('dt'); dt.textContent = k;
      const dd = document.createElement('dd'); dd.textContent = v;
      return [dt, dd];
    }));
    $('facts-title').hidden = rows.length === 0;
    dl('facts', rows);
    dl('tech-facts', tech);
  }

  /** The record in plain words (times as a reader says them: the viewer's zone and UTC). */
  function entryFacts(b) {
    const e = b.entry, f = FACTS, rows = [[f.log, b.origin], [f.seq, String(b.seq)], [f.kind, KINDS[e.kind] || e.kind],
      [f.registrant, e.registrant], [f.when, humanTime(e.received_at)]];
    if (e.kind === 'work') rows.push([f.title, e.title], [f.creators, (e.creators || []).join('; ')], [f.workType, e.work_type]);
    if (e.kind === 'evidence') rows.push([f.description, e.description], [f.captured, e.captured_at && humanTime(e.captured_at)]);
    rows.push([f.block, say('sealedIn', { height: b.block.height, when: humanTime(b.block.header.sealed_at) })]);
    return rows.filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]);
  }

  /** Who the registrant is, as this registry's operator states it (D50): not evidence, so it
   * is read from this registry (only for a bundle loaded from it), shown as the operator's word
   * beside the account, and never changes the verdict. */
  async function addProfile(b, me) {
    const who = b.entry && b.entry.registrant;
    if (typeof who !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(who)) return;
    let p;
    try {
      const r = await fetch('v1/accounts/' + encodeURIComponent(who), { headers: { Accept: 'application/json' } });
      if (!r.ok) return;
      p = await r.json();
    } catch (e) { return; }
    if (me !== state.run || !p || typeof p.display_name !== 'string') return;
    const kind = Object.prototype.hasOwnProperty.call(WORDS, p.kind) ? WORDS[p.kind] : String(p.kind);
    const dt = document.createElement('dt'); dt.textContent = FACTS.operator;
    const dd = document.createElement('dd'); dd.textContent = say('statement', { name: p.display_name, kind });
    dd.dataset.profile = who;
    const by = [...$('facts').querySelectorAll('dt')].find((d) => d.textContent === FACTS.registrant);
    if (by && by.nextElementSibling) by.nextElementSibling.after(dt, dd); else $('facts').append(dt, dd);
  }

  /** The exact times, for the technical detail. */
  const exactTimes = (b) => [[T('Registered at (registry clock, RFC 3339)'), String(b.entry.received_at)],
    [T('Block sealed at (RFC 3339)'), String(b.block.header.sealed_at)]];

  async function run() {
    const me = ++state.run;
    $('openssl').hidden = true;
    if (!state.bundle) {
      renderSteps([]); renderFacts([]);
      setVerdict('waiting', state.file ? say('needBundle') : say('waiting'),
        state.file ? 'bundle' : 'waiting');
      return;
    }
    setVerdict('running', say('checking'));
    if (state.file && !state.fileHash) {
      const file = state.file;
      setVerdict('running', say('hashing'), 'hashing');
      let hash;
      try { hash = await state.hashing; } catch (e) {
        if (me === state.run) setVerdict('failed', say('unreadable', { name: file.name, why: e.message }), 'unreadable', { why: e.message });
        return;
      }
      if (state.file !== file || me !== state.run) return; // a newer run reports
      state.fileHash = hash;
      $('exhibit-info').textContent = say('exhibitHash', { name: file.name, size: file.size, hash });
    }
    const pinned = $('pin').value.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
    const { results, ctx, unsupported } = await verify(state.bundleText ?? state.bundle, state.fileHash, pinned);
    if (me !== state.run) return; // a newer run has started; it will report
    renderSteps(results);
    const failed = results.find((r) => r.status === 'failed');
    const who = { who: String(ctx.bundle && ctx.bundle.entry ? ctx.bundle.entry.registrant : ''),
      when: ctx.bundle && ctx.bundle.entry ? humanTime(ctx.bundle.entry.received_at) : '' };
    if (unsupported) {
      setVerdict('unsupported', say('unsupported', { why: failed.detail }));
    } else if (failed) {
      setVerdict('failed', say('notVerified', { step: failed.name, why: failed.detail }), failed.name === 'file' ? 'file' : 'failed');
    } else if (!state.fileHash) {
      setVerdict('incomplete', say('incomplete'));
    } else if (ctx.trust === 'pinned' || state.bundleHere) {
      // (a bundle this registry served to its own page is as tied to it as the page itself)
      setVerdict('verified', say('verified'),
        ctx.trust === 'pinned' ? 'verified' : 'verifiedUnpinned', who);
    } else { // a bundle from a file, checked only under its own key: as copyledger verify's exit 3
      setVerdict('unpinned', say('unpinned'), 'unpinned', who);
    }
    const signed = results.find((r) => r.name === 'checkpoint').status === 'ok';
    $('trust').textContent = !signed ? ''
      : ctx.trust === 'pinned' ? T('Trust: signatures checked against the key you pinned.')
        : T('Trust: signatures checked against the log key carried in the bundle. Pin the operator\u2019s published key for full assurance.');
    renderFacts(failed ? [] : entryFacts(ctx.bundle), failed ? [] : [...exactTimes(ctx.bundle), ...ctx.facts]);
    if (!failed && state.bundleHere) addProfile(ctx.bundle, me);
    if (ctx.openssl) {
      $('openssl-commands').textContent = ctx.openssl.join('\n');
      $('openssl').hidden = false;
    }
  }

  /** text, when there is one, is what gets verified: read strictly (no duplicate member). */
  function setBundle(obj, source, text = null, here = false) {
    state.bundle = obj;
    state.bundleText = text;
    state.bundleHere = here;
    $('bundle-info').textContent = source;
    const a = $('save-bundle');
    if (a.href) URL.revokeObjectURL(a.href);
    a.href = URL.createObjectURL(new Blob([JSON.stringify(obj, null, 2) + '\n'], { type: 'application/json' }));
    a.download = 'bundle.json';
    a.hidden = false;
  }

  function setFile(file) {
    state.file = file;
    state.fileHash = null;
    state.hashing = hashFile(file, (p) => {
      if (state.file === file) setVerdict('running', say('hashingPct', { pct: Math.round(100 * p) }), 'hashing');
    }).then(toHex);
    state.hashing.catch(() => {}); // reported by run()
    $('exhibit-info').textContent = say('exhibit', { name: file.name, size: file.size });
  }

  /** A dropped file is the bundle if it parses as a copyledger bundle, else the exhibit. */
  async function classify(file) {
    if (file.size <= MAX_BUNDLE) {
      const head = new Uint8Array(await file.slice(0, 64).arrayBuffer());
      const first = head.find((c) => ![0x20, 0x09, 0x0a, 0x0d].includes(c));
      if (first === 0x7b) {
        try {
          const obj = JSON.parse(await file.text());
          if (obj && obj.format === FORMAT) return { bundle: obj, text: await file.text() };
        } catch (e) { /* not JSON: an exhibit */ }
      }
    }
    return { exhibit: file };
  }

  async function takeFiles(files, from) {
    let exhibits = 0;
    for (const f of files) {
      const c = await classify(f);
      if (c.bundle) setBundle(c.bundle, say('bundleFileFrom', { name: f.name, from }), c.text);
      else { setFile(f); exhibits++; }
    }
    if (exhibits > 1) $('exhibit-info').textContent += T(' — several files were dropped; this last one is the exhibit.');
    run();
  }

  async function loadSeq(seq) {
    $('bundle-info').textContent = say('loading', { seq });
    try {
      const r = await fetch('v1/entries/' + seq + '/bundle', { headers: { Accept: 'application/json' } });
      const text = await r.text();
      const body = JSON.parse(text);
      if (!r.ok) throw new Error(body.detail || r.statusText);
      if (!state.bundle) setBundle(body, say('bundleFrom', { seq, host: location.host }), text, true);
    } catch (e) {
      $('bundle-info').textContent = say('loadFailed', { seq, why: e.message });
    }
    run();
  }

  async function checkSupport() {
    const msg = (t) => { $('support').textContent = t; $('support').hidden = false; };
    if (!window.isSecureContext || !window.crypto || !crypto.subtle) {
      msg(T('This browser offers no WebCrypto here (the page must be opened over HTTPS, or from localhost), so it cannot check anything. Use copyledger verify instead.'));
      return false;
    }
    try { // RFC 8032 test 1 public key
      await crypto.subtle.importKey('raw', fromHex('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', 'key'), { name: 'Ed25519' }, false, ['verify']);
    } catch (e) {
      msg(T('This browser cannot check Ed25519 signatures (WebCrypto without Ed25519: Chrome/Edge 137+, Firefox 129+ or Safari 17+ can). It can still hash the file, but cannot verify the record; use copyledger verify instead.'));
      return false;
    }
    return true;
  }

  function init() {
    window.copyledgerDropZone($('drop'), (files) => takeFiles(files, 'dropped'));
    $('exhibit').addEventListener('change', (e) => { if (e.target.files[0]) { setFile(e.target.files[0]); run(); } });
    $('bundle').addEventListener('change', async (e) => {
      const f = e.target.files[0];
      if (!f) return;
      try {
        const text = await f.text();
        setBundle(JSON.parse(text), say('bundleFile', { name: f.name }), text);
      } catch (err) {
        state.bundle = null;
        $('bundle-info').textContent = say('notJson', { name: f.name, why: err.message });
      }
      run();
    });
    $('pin').addEventListener('change', run);
    $('run').addEventListener('click', run);
    checkSupport();
    const seq = new URLSearchParams(location.search).get('seq');
    if (seq !== null && /^(0|[1-9][0-9]{0,15})$/.test(seq)) loadSeq(seq);
  }

  // For tests and for the curious, from the console: the pure functions.
  window.copyledgerVerify = { jcs, Sha256, sha256, sm3, rootFromInclusion, parseToken, parseStrict, verify, toHex,
    humanTime };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
}());
