// Pure helpers of the admin page: sizes, durations, JSON text and bytes.
// Nothing here touches the DOM or the network.

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

// formatBytes renders a byte count with binary units: 0 B, 999 B, 1.5 KiB, 12.3 MiB, 1 GiB.
export function formatBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${v} B`;
  const digits = Math.abs(v) < 10 ? 2 : Math.abs(v) < 100 ? 1 : 0;
  return `${trimZeros(v.toFixed(digits))} ${units[i]}`;
}

function trimZeros(s) {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

// formatCount renders an integer with thousands separators.
export function formatCount(n) {
  if (n === null || n === undefined) return '—';
  return Number(n).toLocaleString('en-US');
}

const byteUnits = {
  '': 1, b: 1,
  k: 1024, kb: 1000, kib: 1024,
  m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1000 ** 4, tib: 1024 ** 4,
};

// parseBytes reads "1 GiB", "512MiB", "1.5 GB", "1000000" into a whole number of bytes.
// It throws an Error that says what was wrong.
export function parseBytes(text) {
  const s = String(text).trim().replace(/[_,]/g, '');
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(s);
  if (!m) throw new Error(`"${text}" is not a size: write a number with an optional unit, e.g. 512 MiB`);
  const mult = byteUnits[m[2].toLowerCase()];
  if (mult === undefined) throw new Error(`unknown size unit "${m[2]}": use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB`);
  const n = Math.round(Number(m[1]) * mult);
  if (!Number.isSafeInteger(n)) throw new Error(`"${text}" is too large`);
  return n;
}

const durationUnits = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

// parseDuration reads a TTL: "" (none, returns 0), "90s", "1h30m", "1d12h", "500ms";
// a bare number counts seconds. It returns milliseconds, or throws an Error.
export function parseDuration(text) {
  const s = String(text).trim().replace(/\s+/g, '');
  if (s === '' || s === '0') return 0;
  if (/^\d+$/.test(s)) return checkedMs(Number(s) * 1000, text);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let pos = 0;
  let m;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * durationUnits[m[2]];
    pos = re.lastIndex;
  }
  if (pos !== s.length || pos === 0) {
    throw new Error(`"${text}" is not a duration: write e.g. 90s, 30m, 1h30m or 2d (empty for no expiry)`);
  }
  return checkedMs(Math.round(total), text);
}

function checkedMs(ms, text) {
  if (!Number.isSafeInteger(ms)) throw new Error(`TTL "${text}" is too long`);
  return ms;
}

// formatDuration renders milliseconds as the two largest units: "2d 3h", "59m 12s", "45s".
export function formatDuration(ms) {
  if (ms <= 0) return 'expired';
  if (ms < 1000) return '<1s';
  let s = Math.floor(ms / 1000);
  const parts = [];
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]]) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  return parts.slice(0, 2).join(' ');
}

// ttlInput renders a remaining TTL so that parseDuration reads it back: "1h2m3s".
export function ttlInput(ms) {
  if (ms <= 0) return '';
  let s = Math.max(1, Math.floor(ms / 1000));
  let out = '';
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]]) {
    if (s >= size) {
      out += `${Math.floor(s / size)}${unit}`;
      s %= size;
    }
  }
  return out;
}

// prettyJSON re-indents JSON text without parsing it into JavaScript values, so
// numbers beyond 2^53 and every string escape stay exactly as stored.
export function prettyJSON(raw, indent = '  ') {
  let out = '';
  let depth = 0;
  let i = 0;
  const nl = () => '\n' + indent.repeat(depth);
  while (i < raw.length) {
    const c = raw[i];
    if (c === '"') {
      const end = stringEnd(raw, i);
      out += raw.slice(i, end);
      i = end;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    if (c === '{' || c === '[') {
      const j = skipWs(raw, i + 1);
      if (raw[j] === (c === '{' ? '}' : ']')) {
        out += c + raw[j];
        i = j + 1;
        continue;
      }
      depth++;
      out += c + nl();
    } else if (c === '}' || c === ']') {
      depth--;
      out += nl() + c;
    } else if (c === ',') {
      out += ',' + nl();
    } else if (c === ':') {
      out += ': ';
    } else {
      out += c;
    }
    i++;
  }
  return out;
}

function skipWs(s, i) {
  while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === '\n' || s[i] === '\r')) i++;
  return i;
}

// stringEnd returns the index just past the JSON string that starts at s[i] === '"'.
function stringEnd(s, i) {
  i++;
  while (i < s.length) {
    if (s[i] === '\\') i += 2;
    else if (s[i] === '"') return i + 1;
    else i++;
  }
  throw new Error('unterminated string in JSON');
}

// valueEnd returns the index just past the JSON value that starts at s[i].
function valueEnd(s, i) {
  const c = s[i];
  if (c === '"') return stringEnd(s, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    while (i < s.length) {
      const d = s[i];
      if (d === '"') {
        i = stringEnd(s, i);
        continue;
      }
      if (d === '{' || d === '[') depth++;
      else if (d === '}' || d === ']') {
        depth--;
        if (depth === 0) return i + 1;
      }
      i++;
    }
    throw new Error('unterminated JSON value');
  }
  while (i < s.length && !',}] \t\r\n'.includes(s[i])) i++;
  return i;
}

// rawFields splits the top-level JSON object in text into its fields, each as
// its exact JSON text: rawFields('{"a":1,"b":[2]}') gives {a: '1', b: '[2]'}.
export function rawFields(text) {
  const fields = {};
  let i = skipWs(text, 0);
  if (text[i] !== '{') throw new Error('response is not a JSON object');
  i = skipWs(text, i + 1);
  if (text[i] === '}') return fields;
  for (;;) {
    const kEnd = stringEnd(text, i);
    const name = JSON.parse(text.slice(i, kEnd));
    i = skipWs(text, kEnd);
    if (text[i] !== ':') throw new Error('malformed JSON object');
    i = skipWs(text, i + 1);
    const vEnd = valueEnd(text, i);
    fields[name] = text.slice(i, vEnd);
    i = skipWs(text, vEnd);
    if (text[i] === ',') {
      i = skipWs(text, i + 1);
      continue;
    }
    if (text[i] === '}') return fields;
    throw new Error('malformed JSON object');
  }
}

// base64ToBytes and bytesToBase64 convert between standard base64 and bytes.
export function base64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function bytesToBase64(bytes) {
  let bin = '';
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk));
  }
  return btoa(bin);
}

// utf8 returns the text of bytes, or null when they are not valid UTF-8.
export function utf8(bytes) {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

// hexDump renders bytes as lines of 16: offset, hex bytes, printable ASCII.
export function hexDump(bytes) {
  const lines = [];
  for (let off = 0; off < bytes.length; off += 16) {
    const row = bytes.subarray(off, off + 16);
    let hex = '';
    let ascii = '';
    for (let j = 0; j < 16; j++) {
      if (j < row.length) {
        hex += row[j].toString(16).padStart(2, '0') + ' ';
        ascii += row[j] >= 0x20 && row[j] < 0x7f ? String.fromCharCode(row[j]) : '.';
      } else {
        hex += '   ';
      }
      if (j === 7) hex += ' ';
    }
    lines.push(`${off.toString(16).padStart(8, '0')}  ${hex} |${ascii}|`);
  }
  return lines.join('\n');
}

// hexString renders bytes as space-separated hex pairs, 16 to a line, for editing.
export function hexString(bytes) {
  const lines = [];
  for (let off = 0; off < bytes.length; off += 16) {
    lines.push(Array.from(bytes.subarray(off, off + 16), (b) => b.toString(16).padStart(2, '0')).join(' '));
  }
  return lines.join('\n');
}

// parseHex reads hex pairs, with any whitespace between them, into bytes.
export function parseHex(text) {
  const s = text.replace(/\s+/g, '').replace(/^0x/i, '');
  if (s.length % 2 !== 0) throw new Error('hex has an odd number of digits');
  if (!/^[0-9a-fA-F]*$/.test(s)) throw new Error('hex may hold only 0-9, a-f and whitespace');
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// showKey makes control characters in a key visible (\n, \u0000 …) so two
// keys that differ only in them do not look alike.
export function showKey(key) {
  return key.replace(/[\u0000-\u001f\u007f]/g, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\t') return '\\t';
    if (c === '\r') return '\\r';
    return '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0');
  });
}

// ExportCounter counts the entries of an export document as its text streams
// in: an entry is an object that opens at depth 2 (root object → entries array).
export class ExportCounter {
  constructor() {
    this.depth = 0;
    this.inString = false;
    this.escape = false;
    this.entries = 0;
  }

  push(chunk) {
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (this.inString) {
        if (this.escape) this.escape = false;
        else if (c === 0x5c) this.escape = true; // backslash
        else if (c === 0x22) this.inString = false;
        continue;
      }
      if (c === 0x22) this.inString = true;
      else if (c === 0x7b || c === 0x5b) { // { [
        if (c === 0x7b && this.depth === 2) this.entries++;
        this.depth++;
      } else if (c === 0x7d || c === 0x5d) this.depth--;
    }
  }
}
