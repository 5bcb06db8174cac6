// The kvsidecar admin page. Plain DOM, no framework, no build step: the
// files are served as they are from the daemon binary.
//
// Every value that comes from the store (keys, values, project names) is put
// on the page with textContent, never as HTML.

import { Api, ApiError } from './api.js';
import {
  ExportCounter, base64ToBytes, bytesToBase64, formatBytes, formatCount, formatDuration,
  hexDump, hexString, parseBytes, parseDuration, parseHex, prettyJSON, rawFields, showKey,
  ttlInput, utf8,
} from './format.js';

const tokenKey = 'kvsidecar.admin.token';
// projectsPage is how many projects one request lists; more come with "Load more".
const projectsPage = 200;
const $ = (id) => document.getElementById(id);

const state = {
  api: null,
  role: '',          // "admin" or "project:NAME"
  isAdmin: false,
  projects: [],      // loaded so far, in API order
  projectsCursor: '',
  project: '',       // the project shown
  tab: 'keys',
  usage: null,       // GET usage of the project shown
  // key browser: the filter applied, the cursor of each page seen so far
  filter: { prefix: '', search: '' },
  pageSize: 100,
  cursors: [''],
  next: '',
  entry: null,       // the entry open in the pane (see openEntry)
  mode: 'json',
};

// ---------- small DOM helpers ----------

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) e.append(c);
  return e;
}

function show(node, visible) {
  node.hidden = !visible;
}

let bannerTimer = 0;

function notify(message, kind = 'info') {
  const b = $('banner');
  b.className = `banner ${kind}`;
  $('banner-text').textContent = message;
  show(b, true);
  clearTimeout(bannerTimer);
  if (kind === 'info') bannerTimer = setTimeout(() => show(b, false), 5000);
}

// fail reports an error; a refused token signs out.
function fail(err) {
  if (err instanceof ApiError && err.status === 401) {
    signOut(`Signed out: ${err.message}`);
    return;
  }
  notify(err.message || String(err), 'error');
}

// guard runs an event handler and reports what it throws.
function guard(fn) {
  return async (ev) => {
    try {
      await fn(ev);
    } catch (err) {
      fail(err);
    }
  };
}

function setBar(bar, used, quota) {
  const frac = quota > 0 ? Math.min(1, used / quota) : 0;
  const span = bar.querySelector('span');
  span.style.width = `${(frac * 100).toFixed(1)}%`;
  bar.classList.toggle('warn', frac >= 0.7 && frac < 0.9);
  bar.classList.toggle('full', frac >= 0.9);
  bar.title = percentOfQuota(used, quota);
}

function makeBar(used, quota) {
  const bar = el('div', { class: 'bar' }, el('span'));
  setBar(bar, used, quota);
  return bar;
}

// confirmDialog asks a yes/no question in the page's modal; it resolves true on OK.
function confirmDialog(title, text, okLabel = 'Delete') {
  const d = $('confirm-dialog');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  settleDialog(false); // a question still open is answered no
  return new Promise((resolve) => {
    dialogAnswer = resolve;
    d.showModal();
    $('confirm-cancel').focus();
  });
}

// dialogAnswer resolves the open question. The answer comes from the button
// pressed (the submit event, before the dialog closes), never from the close
// event alone: that event is queued, and one from the last question can
// arrive after the next question opened.
let dialogAnswer = null;

function settleDialog(ok) {
  const resolve = dialogAnswer;
  dialogAnswer = null;
  if (resolve) resolve(ok);
}

function wireDialog() {
  const d = $('confirm-dialog');
  d.querySelector('form').addEventListener('submit', (ev) => settleDialog(ev.submitter?.value === 'ok'));
  d.addEventListener('cancel', () => settleDialog(false)); // Escape
  d.addEventListener('close', () => {
    if (!d.open) settleDialog(false);
  });
}

// when renders an instant as local "2026-12-01 14:05:09 (UTC+01:00)": sortable, unambiguous.
function when(iso) {
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, '0');
  const off = -d.getTimezoneOffset();
  const zone = off === 0 ? 'UTC' : `UTC${off > 0 ? '+' : '-'}${p(Math.floor(Math.abs(off) / 60))}:${p(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())} ${zone}`;
}

function percentOfQuota(used, quota) {
  if (!(quota > 0)) return '';
  const pct = (100 * used) / quota;
  return `${used > 0 && pct < 0.1 ? '<0.1' : pct.toFixed(1)}% of the quota`;
}

function expiryText(expiresAt) {
  if (!expiresAt) return '—';
  return formatDuration(Date.parse(expiresAt) - Date.now());
}

// ---------- sign in ----------

async function signIn(token) {
  const api = new Api(token);
  // Ask before changing anything on the page, so a refused token leaves it as it was.
  const who = await api.whoami();
  const first = await api.projects(undefined, projectsPage);
  state.api = api;
  state.role = who.role;
  state.isAdmin = who.role === 'admin';
  sessionStorage.setItem(tokenKey, token);
  $('whoami').textContent = state.isAdmin ? 'admin' : `project ${who.project}`;
  $('whoami').title = `signed in as ${who.role}`;
  show($('whoami'), true);
  show($('signout'), true);
  show($('signin-view'), false);
  show($('app-view'), true);
  // A project token may not change quotas: the form is not on its page at all.
  if (!state.isAdmin) {
    $('quota-form').remove();
    $('settings-link').remove();
  } else {
    show($('settings-link'), true);
  }
  state.projects = first.projects;
  state.projectsCursor = first.next_cursor || '';
  renderProjects();
  route();
}

function signOut(message) {
  sessionStorage.removeItem(tokenKey);
  if (message) sessionStorage.setItem(`${tokenKey}.message`, message);
  // A fresh page drops every piece of state of the old token.
  location.hash = '';
  location.reload();
}

function showSignIn(message) {
  show($('app-view'), false);
  show($('signin-view'), true);
  const e = $('signin-error');
  e.textContent = message || '';
  show(e, !!message);
  $('token').focus();
}

// ---------- projects ----------

async function loadProjects(reset) {
  if (reset) {
    state.projects = [];
    state.projectsCursor = '';
  }
  const page = await state.api.projects(state.projectsCursor || undefined, projectsPage);
  state.projects.push(...page.projects);
  state.projectsCursor = page.next_cursor || '';
  renderProjects();
}

function renderProjects() {
  const list = $('projects');
  const filter = $('project-filter').value.trim();
  list.replaceChildren();
  for (const p of state.projects) {
    if (filter && !p.name.includes(filter)) continue;
    const link = el('a', { href: projectHash(p.name, state.tab), class: p.name === state.project ? 'active' : '' },
      el('span', { class: 'pname', text: p.name, title: p.name }),
      makeBar(p.usage_bytes, p.quota_bytes),
      el('span', {
        class: 'pmeta',
        text: `${formatBytes(p.usage_bytes)} / ${formatBytes(p.quota_bytes)} · ${formatCount(p.entries)} ${p.entries === 1 ? 'entry' : 'entries'}`
          + (p.quota_override !== null && p.quota_override !== undefined ? ' · own quota' : ''),
      }));
    list.append(el('li', { 'data-project': p.name }, link));
  }
  if (state.projects.length === 0) list.append(el('li', { class: 'muted pad', text: 'No projects yet.' }));
  // A filter is worth its space only when the list is long.
  show($('project-filter'), state.projects.length > 8 || !!state.projectsCursor || filter !== '');
  show($('projects-more'), !!state.projectsCursor);
}

function updateProjectInList(usage) {
  const p = state.projects.find((x) => x.name === usage.name);
  if (p) {
    Object.assign(p, {
      usage_bytes: usage.usage_bytes, entries: usage.entries,
      quota_bytes: usage.quota_bytes, quota_override: usage.quota_override,
    });
    renderProjects();
  }
}

// ---------- routing: #/p/NAME/TAB?prefix=…&search=… and #/settings ----------

function projectHash(name, tab, query) {
  const q = query && query.toString() ? `?${query}` : '';
  return `#/p/${encodeURIComponent(name)}/${tab || 'keys'}${q}`;
}

function route() {
  if (!state.api) return;
  const h = location.hash.replace(/^#/, '');
  const [path, qs] = h.split('?');
  const parts = path.split('/').filter(Boolean);
  for (const id of ['empty-view', 'settings-view', 'project-view']) show($(id), false);
  if (parts[0] === 'settings' && state.isAdmin) {
    state.project = '';
    renderProjects();
    show($('settings-view'), true);
    loadSettings().catch(fail);
    return;
  }
  if (parts[0] === 'p' && parts[1]) {
    const name = decodeURIComponent(parts[1]);
    const tab = ['keys', 'usage', 'transfer', 'settings'].includes(parts[2]) ? parts[2] : 'keys';
    const query = new URLSearchParams(qs || '');
    openProject(name, tab, query).catch(fail);
    return;
  }
  // Nothing chosen: a project token goes to its project, an admin sees the list.
  if (!state.isAdmin && state.projects.length === 1) {
    location.replace(projectHash(state.projects[0].name, 'keys'));
    return;
  }
  if (!state.isAdmin) {
    const own = state.role.replace(/^project:/, '');
    location.replace(projectHash(own, 'keys'));
    return;
  }
  state.project = '';
  renderProjects();
  show($('empty-view'), true);
}

async function openProject(name, tab, query) {
  const changed = name !== state.project;
  state.project = name;
  state.tab = tab;
  show($('project-view'), true);
  $('project-name').textContent = name;
  $('clear-name').textContent = name;
  const tabQuery = new URLSearchParams();
  if (tab === 'keys') {
    if (query.get('prefix')) tabQuery.set('prefix', query.get('prefix'));
    if (query.get('search')) tabQuery.set('search', query.get('search'));
  } else if (!changed) {
    if (state.filter.prefix) tabQuery.set('prefix', state.filter.prefix);
    if (state.filter.search) tabQuery.set('search', state.filter.search);
  }
  for (const a of document.querySelectorAll('.tabs a')) {
    // The keys tab keeps the filter in force, so a look at another tab loses nothing.
    a.href = projectHash(name, a.dataset.tab, a.dataset.tab === 'keys' ? tabQuery : null);
    a.classList.toggle('active', a.dataset.tab === tab);
    a.setAttribute('aria-selected', a.dataset.tab === tab ? 'true' : 'false');
  }
  for (const t of ['keys', 'usage', 'transfer', 'settings']) show($(`tab-${t}`), t === tab);
  renderProjects();
  if (changed) {
    // Nothing of the last project may stay on screen while this one loads (or fails to).
    $('keys').replaceChildren();
    $('page-info').textContent = '';
    $('project-usage-text').textContent = '';
    setBar($('project-bar'), 0, 0);
    for (const id of ['prefixes', 'largest']) $(id).replaceChildren();
    for (const id of ['u-bytes', 'u-quota', 'u-quota-kind', 'u-percent', 'u-entries', 'u-exp1h', 'u-exp24h']) $(id).textContent = '';
    state.usage = null;
    closeEntry();
    resetTransfer();
    $('clear-confirm').value = '';
    $('clear-button').disabled = true;
    show($('clear-result'), false);
  }
  await loadUsage();
  if (tab === 'keys') {
    const prefix = query.get('prefix') || '';
    const search = query.get('search') || '';
    if (changed || prefix !== state.filter.prefix || search !== state.filter.search || !$('keys').children.length) {
      state.filter = { prefix, search };
      $('filter-prefix').value = prefix;
      $('filter-search').value = search;
      state.cursors = [''];
      await loadKeys();
    }
    const open = query.get('key');
    if (open !== null && (!state.entry || state.entry.key !== open)) await openEntry(open);
  } else if (tab === 'usage') {
    await loadUsageDetails();
  } else if (tab === 'settings') {
    renderQuota();
  }
}

// ---------- usage ----------

async function loadUsage() {
  const u = await state.api.usage(state.project);
  state.usage = u;
  setBar($('project-bar'), u.usage_bytes, u.quota_bytes);
  $('project-usage-text').textContent =
    `${formatBytes(u.usage_bytes)} of ${formatBytes(u.quota_bytes)} · ${formatCount(u.entries)} ${u.entries === 1 ? 'entry' : 'entries'}`;
  $('u-bytes').textContent = formatBytes(u.usage_bytes);
  const own = u.quota_override !== null && u.quota_override !== undefined;
  $('u-quota').textContent = formatBytes(u.quota_bytes);
  $('u-quota-kind').textContent = own ? 'set for this project' : 'the default';
  $('u-percent').textContent = percentOfQuota(u.usage_bytes, u.quota_bytes);
  $('u-entries').textContent = formatCount(u.entries);
  $('u-exp1h').textContent = formatBytes(u.expiring_1h_bytes);
  $('u-exp24h').textContent = formatBytes(u.expiring_24h_bytes);
  updateProjectInList(u);
  if (state.tab === 'settings') renderQuota();
}

async function loadUsageDetails() {
  const delimiter = $('delimiter').value;
  const [pre, big] = await Promise.all([
    state.api.prefixes(state.project, delimiter, 50),
    state.api.largest(state.project, 25),
  ]);
  const total = state.usage ? state.usage.usage_bytes : 0;
  const rows = pre.prefixes.map((p) => el('tr', {},
    el('td', {}, p.prefix === ''
      ? el('span', { class: 'muted', text: `(keys without "${delimiter}")` })
      : el('a', { class: 'keylink', href: projectHash(state.project, 'keys', new URLSearchParams({ prefix: p.prefix })), text: showKey(p.prefix) })),
    el('td', { class: 'num', text: formatBytes(p.bytes) }),
    el('td', { class: 'num', text: formatCount(p.entries) }),
    el('td', { class: 'barcol' }, makeBar(p.bytes, total))));
  $('prefixes').replaceChildren(...(rows.length ? rows : [emptyRow(4, 'No keys.')]));
  const keys = big.keys.map((k) => el('tr', {},
    el('td', {}, el('a', {
      class: 'keylink', href: projectHash(state.project, 'keys', new URLSearchParams({ key: k.key })), text: showKey(k.key), title: k.key,
    })),
    el('td', { class: 'num', text: formatBytes(k.size) })));
  $('largest').replaceChildren(...(keys.length ? keys : [emptyRow(2, 'No keys.')]));
}

function emptyRow(cols, text) {
  return el('tr', {}, el('td', { colspan: String(cols), class: 'muted', text }));
}

// ---------- key browser ----------

// Each load has a number; an answer that is no longer the latest is dropped,
// so fast clicks never leave an older page (or entry) on screen.
let keysSeq = 0;
let entrySeq = 0;

async function loadKeys() {
  const seq = ++keysSeq;
  const page = await state.api.keys(state.project, {
    ...state.filter, cursor: state.cursors[state.cursors.length - 1], limit: state.pageSize,
  });
  if (seq !== keysSeq) return;
  state.next = page.next_cursor || '';
  const body = $('keys');
  body.replaceChildren(...page.keys.map(keyRow));
  show($('keys-empty'), page.keys.length === 0);
  const first = (state.cursors.length - 1) * state.pageSize;
  $('page-info').textContent = page.keys.length
    ? `${formatCount(first + 1)}–${formatCount(first + page.keys.length)}${state.next ? '' : ' (end)'}`
    : '';
  $('page-prev').disabled = state.cursors.length <= 1;
  $('page-next').disabled = !state.next;
  markOpenRow();
}

function keyRow(k) {
  const open = () => openEntry(k.key).catch(fail);
  return el('tr', { 'data-key': k.key, onclick: open },
    el('td', {}, el('button', { type: 'button', class: 'keylink', title: k.key, text: showKey(k.key) })),
    el('td', { class: 'num', text: formatBytes(k.size) }),
    el('td', { class: 'ttl', text: expiryText(k.expires_at), title: k.expires_at ? when(k.expires_at) : 'no expiry' }));
}

function markOpenRow() {
  for (const tr of $('keys').children) {
    tr.classList.toggle('open', !!state.entry && tr.dataset.key === state.entry.key);
  }
}

function applyFilter() {
  const q = new URLSearchParams();
  const prefix = $('filter-prefix').value;
  const search = $('filter-search').value;
  if (prefix) q.set('prefix', prefix);
  if (search) q.set('search', search);
  const target = projectHash(state.project, 'keys', q);
  if (location.hash === target) {
    state.cursors = [''];
    return loadKeys();
  }
  location.hash = target;
  return null;
}

// ---------- entry viewer and editor ----------

// openEntry reads one entry. Its value is kept as the exact JSON text the API
// sent (or as bytes), never round-tripped through JavaScript numbers.
async function openEntry(key) {
  const seq = ++entrySeq;
  let text;
  try {
    text = await state.api.entryText(state.project, key);
    if (seq !== entrySeq) return;
  } catch (err) {
    if (seq !== entrySeq) return;
    if (err instanceof ApiError && err.status === 404) {
      notify(`Key "${showKey(key)}" does not exist (or has expired).`, 'error');
      await loadKeys();
      return;
    }
    throw err;
  }
  const f = rawFields(text);
  const entry = {
    key: JSON.parse(f.key),
    size: Number(f.size),
    expiresAt: f.expires_at ? JSON.parse(f.expires_at) : null,
    json: null,   // exact JSON text, when the value is JSON
    bytes: null,  // the bytes, when it is not
  };
  if (f.value !== undefined) {
    entry.json = f.value;
    entry.bytes = new TextEncoder().encode(f.value);
  } else {
    entry.bytes = base64ToBytes(JSON.parse(f.value_base64));
  }
  entry.text = utf8(entry.bytes);
  state.entry = entry;
  state.mode = entry.json !== null ? 'json' : entry.text !== null ? 'text' : 'hex';
  renderEntry();
  markOpenRow();
}

function renderEntry() {
  const e = state.entry;
  show($('entry-pane'), true);
  show($('entry-view'), true);
  show($('entry-form'), false);
  $('entry-key').textContent = showKey(e.key);
  $('entry-key').title = e.key;
  $('entry-size').textContent = `${formatBytes(e.size)} (${formatCount(e.size)} bytes, key included)`;
  $('entry-expires').textContent = e.expiresAt
    ? `in ${expiryText(e.expiresAt)} — ${when(e.expiresAt)}`
    : 'never';
  $('entry-type').textContent = e.json !== null ? jsonType(e.json)
    : e.text !== null ? 'text (not JSON)' : 'binary (not UTF-8)';
  for (const b of $('view-modes').querySelectorAll('button')) {
    const m = b.dataset.mode;
    b.disabled = (m === 'json' && e.json === null) || (m === 'text' && e.text === null);
    b.classList.toggle('active', m === state.mode);
  }
  const pre = $('entry-value');
  pre.className = `value mode-${state.mode}`;
  if (state.mode === 'json') {
    const text = prettyJSON(e.json);
    // Colouring costs a node per token; a very large value is shown plain.
    if (text.length <= maxHighlight) highlightJSON(pre, text);
    else pre.textContent = text;
  }
  else if (state.mode === 'text') pre.textContent = e.text;
  else pre.textContent = hexDump(e.bytes) || '(empty)';
}

// maxHighlight is the longest pretty-printed JSON that is coloured: about
// 20k tokens, which the browser lays out at once.
const maxHighlight = 256 << 10;

// highlightJSON fills pre with the JSON text as coloured spans (built with
// textContent, so nothing in the value is read as HTML).
function highlightJSON(pre, text) {
  pre.replaceChildren();
  const re = /("(?:[^"\\]|\\.)*")(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b/g;
  let last = 0;
  let m;
  while ((m = re.exec(text)) !== null) {
    if (m.index > last) pre.append(text.slice(last, m.index));
    if (m[1] !== undefined) {
      pre.append(el('span', { class: m[2] ? 'j-key' : 'j-str', text: m[1] }));
      if (m[2]) pre.append(m[2]);
    } else if (m[3] !== undefined) {
      pre.append(el('span', { class: 'j-num', text: m[3] }));
    } else {
      pre.append(el('span', { class: 'j-lit', text: m[4] }));
    }
    last = re.lastIndex;
  }
  if (last < text.length) pre.append(text.slice(last));
}

function jsonType(raw) {
  const c = raw.trimStart()[0];
  if (c === '{') return 'JSON object';
  if (c === '[') return 'JSON array';
  if (c === '"') return 'JSON string';
  if (c === 't' || c === 'f') return 'JSON boolean';
  if (c === 'n') return 'JSON null';
  return 'JSON number';
}

function closeEntry() {
  entrySeq++; // an entry still loading must not reopen the pane
  state.entry = null;
  show($('entry-pane'), false);
  markOpenRow();
}

// editEntry opens the editor on the open entry, or on a new key when entry is null.
function editEntry(entry) {
  show($('entry-pane'), true);
  show($('entry-view'), false);
  show($('entry-form'), true);
  show($('edit-error'), false);
  const isNew = !entry;
  $('edit-key').value = isNew ? $('filter-prefix').value : entry.key;
  $('edit-key').readOnly = !isNew;
  if (isNew) {
    state.entry = null;
    $('entry-key').textContent = 'New key';
    for (const id of ['entry-size', 'entry-expires', 'entry-type']) $(id).textContent = '—';
    setEditFormat('json');
    $('edit-value').value = '';
    $('edit-ttl').value = '';
  } else {
    const fmt = entry.json !== null ? 'json' : entry.text !== null ? 'text' : 'hex';
    setEditFormat(fmt);
    $('edit-value').value = fmt === 'json' ? prettyJSON(entry.json) : fmt === 'text' ? entry.text : hexString(entry.bytes);
    $('edit-ttl').value = entry.expiresAt ? ttlInput(Date.parse(entry.expiresAt) - Date.now()) : '';
  }
  (isNew ? $('edit-key') : $('edit-value')).focus();
  markOpenRow();
}

// editFormat is the format the editor's text is in now, so a change of the
// format select can carry the bytes over.
let editFormat = 'json';

function setEditFormat(fmt) {
  editFormat = fmt;
  $('edit-format').value = fmt;
  show($('edit-format-json'), fmt === 'json');
}

// convertEdit re-renders the editor's bytes in the format just chosen.
function convertEdit() {
  const to = $('edit-format').value;
  const text = $('edit-value').value;
  let bytes;
  try {
    bytes = editFormat === 'hex' ? parseHex(text) : new TextEncoder().encode(text);
  } catch (err) {
    $('edit-format').value = editFormat;
    editError(`The value is not valid hex: ${err.message}`);
    return;
  }
  if (to === 'hex') {
    $('edit-value').value = hexString(bytes);
  } else {
    const decoded = utf8(bytes);
    if (decoded === null) {
      $('edit-format').value = editFormat;
      editError('These bytes are not UTF-8 text; edit them as hex.');
      return;
    }
    $('edit-value').value = decoded;
  }
  show($('edit-error'), false);
  setEditFormat(to);
}

function editError(message) {
  const e = $('edit-error');
  e.textContent = message;
  show(e, true);
}

// entryBody builds the PUT body from the editor, or throws what is wrong with it.
// JSON is checked with JSON.parse and then sent as typed, so big integers and
// the exact text survive.
function entryBody() {
  const fmt = $('edit-format').value;
  const text = $('edit-value').value;
  let ttlMs;
  try {
    ttlMs = parseDuration($('edit-ttl').value);
  } catch (err) {
    throw new Error(`TTL: ${err.message}`);
  }
  const ttl = ttlMs > 0 ? `,"ttl_ms":${ttlMs}` : '';
  if (fmt === 'json') {
    try {
      JSON.parse(text);
    } catch (err) {
      throw new Error(`The value is not valid JSON: ${err.message}. Nothing was saved.`);
    }
    return `{"value":${text.trim()}${ttl}}`;
  }
  const bytes = fmt === 'text' ? new TextEncoder().encode(text) : parseHexOrThrow(text);
  return `{"value_base64":${JSON.stringify(bytesToBase64(bytes))}${ttl}}`;
}

function parseHexOrThrow(text) {
  try {
    return parseHex(text);
  } catch (err) {
    throw new Error(`The value is not valid hex: ${err.message}. Nothing was saved.`);
  }
}

async function saveEntry(ev) {
  ev.preventDefault();
  const key = $('edit-key').value;
  if (key === '') {
    editError('The key is empty.');
    return;
  }
  let body;
  try {
    body = entryBody();
  } catch (err) {
    editError(err.message);
    return;
  }
  $('edit-save').disabled = true;
  try {
    await state.api.putEntry(state.project, key, body);
  } catch (err) {
    if (err instanceof ApiError && err.status !== 401) {
      editError(err.message);
      return;
    }
    throw err;
  } finally {
    $('edit-save').disabled = false;
  }
  notify(`Saved "${showKey(key)}".`);
  await Promise.all([loadKeys(), loadUsage()]);
  await openEntry(key);
}

async function deleteEntry() {
  const key = state.entry.key;
  if (!(await confirmDialog('Delete key?', `The key "${showKey(key)}" and its value will be deleted.`))) return;
  const res = await state.api.deleteEntry(state.project, key);
  notify(res.deleted ? `Deleted "${showKey(key)}".` : `"${showKey(key)}" was already gone.`);
  closeEntry();
  await Promise.all([loadKeys(), loadUsage()]);
}

// bulkDelete counts what the applied filter matches first (a dry run), shows
// the count, and deletes only after the operator agrees.
async function bulkDelete() {
  if ($('filter-prefix').value !== state.filter.prefix || $('filter-search').value !== state.filter.search) {
    await applyFilter();
  }
  const { prefix, search } = state.filter;
  const dry = await state.api.deleteMatching(state.project, prefix, search, true);
  if (dry.matched === 0) {
    notify('No keys match the filter; nothing to delete.');
    return;
  }
  const what = [];
  if (prefix) what.push(`starting with "${showKey(prefix)}"`);
  if (search) what.push(`containing "${showKey(search)}"`);
  const scope = what.length ? `Every key ${what.join(' and ')}` : `Every key of project ${state.project} (no filter is set)`;
  const n = formatCount(dry.matched);
  if (!(await confirmDialog(`Delete ${n} ${dry.matched === 1 ? 'key' : 'keys'}?`,
    `${scope} will be deleted: ${n} ${dry.matched === 1 ? 'key' : 'keys'} now. This cannot be undone.`,
    `Delete ${n}`))) return;
  const res = await state.api.deleteMatching(state.project, prefix, search, false);
  notify(`Deleted ${formatCount(res.deleted)} ${res.deleted === 1 ? 'key' : 'keys'}.`);
  closeEntry();
  state.cursors = [''];
  await Promise.all([loadKeys(), loadUsage()]);
}

// ---------- export and import ----------

function resetTransfer() {
  for (const id of ['export-progress', 'export-result', 'import-progress', 'import-result']) show($(id), false);
  $('import-form').reset();
}

function setProgress(box, frac, text) {
  show(box, true);
  const span = box.querySelector('.progress-bar span');
  box.classList.toggle('indeterminate', frac === null);
  span.style.width = frac === null ? '100%' : `${Math.min(100, frac * 100).toFixed(1)}%`;
  box.querySelector('.progress-text').textContent = text;
}

function result(node, text, kind) {
  node.textContent = text;
  node.className = `result ${kind}`;
  show(node, true);
}

// exportProject streams the export document, counting entries as they arrive
// against X-Kvsidecar-Entries for the progress bar, then hands it to the
// browser as a download. (A plain link cannot carry the bearer token.)
async function exportProject() {
  const project = state.project;
  const box = $('export-progress');
  show($('export-result'), false);
  $('export-button').disabled = true;
  try {
    const res = await state.api.exportResponse(project);
    const total = Number(res.headers.get('X-Kvsidecar-Entries')) || 0;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const counter = new ExportCounter();
    const chunks = [];
    let bytes = 0;
    setProgress(box, total ? 0 : null, 'Starting…');
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      bytes += value.length;
      counter.push(decoder.decode(value, { stream: true }));
      const n = Math.min(counter.entries, total || counter.entries);
      setProgress(box, total ? n / total : null,
        `${formatCount(counter.entries)}${total ? ` / ${formatCount(total)}` : ''} entries · ${formatBytes(bytes)}`);
    }
    setProgress(box, 1, `${formatCount(counter.entries)} entries · ${formatBytes(bytes)}`);
    const name = fileName(res.headers.get('Content-Disposition')) || `${project}-export.json`;
    const url = URL.createObjectURL(new Blob(chunks, { type: 'application/json' }));
    const a = el('a', { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    result($('export-result'), `Exported ${formatCount(counter.entries)} entries (${formatBytes(bytes)}) to ${name}.`, 'ok');
  } catch (err) {
    show(box, false);
    if (err instanceof ApiError && err.status === 401) throw err;
    result($('export-result'), `Export failed: ${err.message}`, 'bad');
  } finally {
    $('export-button').disabled = false;
  }
}

function fileName(disposition) {
  if (!disposition) return '';
  const star = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
  if (star) return decodeURIComponent(star[1]);
  const plain = /filename="?([^";]+)"?/i.exec(disposition);
  return plain ? plain[1] : '';
}

async function importProject(ev) {
  ev.preventDefault();
  const file = $('import-file').files[0];
  if (!file) return;
  const dryRun = $('import-dry').checked;
  const replace = $('import-replace').checked;
  const project = state.project;
  if (replace && !dryRun && !(await confirmDialog('Replace every key?',
    `Every key of project ${project} is deleted before "${file.name}" is imported.`, 'Clear and import'))) return;
  const box = $('import-progress');
  show($('import-result'), false);
  $('import-button').disabled = true;
  setProgress(box, 0, `Uploading ${file.name}…`);
  try {
    const res = await state.api.importFile(project, file, { replace, dryRun }, (sent, total) => {
      if (sent >= total) setProgress(box, null, `${formatBytes(total)} sent; writing…`);
      else setProgress(box, total ? sent / total : null, `${formatBytes(sent)} / ${formatBytes(total)}`);
    });
    setProgress(box, 1, `${formatBytes(file.size)} sent`);
    const skipped = res.skipped_expired ? `; ${formatCount(res.skipped_expired)} already expired, skipped` : '';
    const text = res.dry_run
      ? `Dry run: the file is valid; ${formatCount(res.imported)} entries would be imported${skipped}. Nothing was written.`
      : `Imported ${formatCount(res.imported)} entries${skipped}${res.replaced ? ' (the project was cleared first)' : ''}.`;
    result($('import-result'), text, 'ok');
  } catch (err) {
    show(box, false);
    if (err instanceof ApiError && err.status === 401) throw err;
    let text = `Import failed: ${err.message}`;
    if (err.code === 'quota_exceeded' && err.body && typeof err.body.imported === 'number') {
      text = `Import stopped: quota exceeded after ${formatCount(err.body.imported)} entries were imported. ${err.message}`;
    }
    result($('import-result'), text, 'bad');
  } finally {
    $('import-button').disabled = false;
  }
  await loadUsage();
  if (!dryRun) {
    // The key list is stale now: the keys tab reloads it from the first page.
    state.cursors = [''];
    $('keys').replaceChildren();
  }
}

// ---------- quotas and clear ----------

function renderQuota() {
  const u = state.usage;
  if (!u) return;
  const own = u.quota_override !== null && u.quota_override !== undefined;
  if (!state.isAdmin) {
    show($('quota-readonly'), true);
    $('quota-readonly-text').textContent = `${formatBytes(u.usage_bytes)} used of ${formatBytes(u.quota_bytes)}`
      + ` (${own ? 'set for this project' : 'the default quota'}). Only an administrator can change quotas.`;
    return;
  }
  show($('quota-form'), true);
  $('quota-current').textContent = own
    ? `This project has its own quota: ${formatBytes(u.quota_override)} (${formatCount(u.quota_override)} bytes). Using ${formatBytes(u.usage_bytes)}.`
    : `This project uses the default quota: ${formatBytes(u.quota_bytes)}. Using ${formatBytes(u.usage_bytes)}.`;
  if (document.activeElement !== $('quota-input')) $('quota-input').value = own ? formatBytes(u.quota_override) : '';
  $('quota-reset').disabled = !own;
}

async function saveQuota(ev) {
  ev.preventDefault();
  let n;
  try {
    n = parseBytes($('quota-input').value);
  } catch (err) {
    notify(`Quota: ${err.message}`, 'error');
    return;
  }
  await state.api.setQuota(state.project, n);
  notify(`Quota of ${state.project} set to ${formatBytes(n)}.`);
  $('quota-input').blur();
  await loadUsage();
}

async function resetQuota() {
  await state.api.setQuota(state.project, null);
  notify(`${state.project} uses the default quota again.`);
  await loadUsage();
}

async function clearProject(ev) {
  ev.preventDefault();
  const name = state.project;
  if ($('clear-confirm').value !== name) return;
  await state.api.clear(name, $('clear-confirm').value);
  $('clear-confirm').value = '';
  $('clear-button').disabled = true;
  result($('clear-result'), `Project ${name} was cleared.`, 'ok');
  closeEntry();
  state.cursors = [''];
  $('keys').replaceChildren();
  await loadUsage();
}

async function loadSettings() {
  const s = await state.api.settings();
  $('default-quota-current').textContent = `now ${formatBytes(s.default_quota_bytes)} (${formatCount(s.default_quota_bytes)} bytes)`;
  if (document.activeElement !== $('default-quota')) $('default-quota').value = formatBytes(s.default_quota_bytes);
}

async function saveSettings(ev) {
  ev.preventDefault();
  let n;
  try {
    n = parseBytes($('default-quota').value);
  } catch (err) {
    notify(`Default quota: ${err.message}`, 'error');
    return;
  }
  await state.api.putSettings(n);
  notify(`Default quota set to ${formatBytes(n)}.`);
  $('default-quota').blur();
  await Promise.all([loadSettings(), loadProjects(true)]);
}

// ---------- wiring ----------

function wire() {
  wireDialog();
  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim();
    $('signin-button').disabled = true;
    try {
      await signIn(token);
      $('token').value = '';
    } catch (err) {
      state.api = null;
      showSignIn(err.status === 401 ? `The token was refused: ${err.message}` : err.message);
    } finally {
      $('signin-button').disabled = false;
    }
  });
  $('signout').addEventListener('click', () => signOut(''));
  $('banner-close').addEventListener('click', () => show($('banner'), false));
  window.addEventListener('hashchange', route);
  // "/" jumps to the key filter, as in most tools with a search box.
  document.addEventListener('keydown', (ev) => {
    if (ev.key !== '/' || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return;
    if ($('tab-keys').hidden || $('project-view').hidden) return;
    ev.preventDefault();
    $('filter-prefix').focus();
  });

  $('projects-refresh').addEventListener('click', guard(() => loadProjects(true)));
  $('projects-more').addEventListener('click', guard(() => loadProjects(false)));
  $('project-filter').addEventListener('input', renderProjects);

  $('filter-form').addEventListener('submit', guard((ev) => {
    ev.preventDefault();
    return applyFilter();
  }));
  $('page-size').addEventListener('change', guard(() => {
    state.pageSize = Number($('page-size').value);
    state.cursors = [''];
    return loadKeys();
  }));
  $('page-next').addEventListener('click', guard(() => {
    if (!state.next) return null;
    state.cursors.push(state.next);
    return loadKeys();
  }));
  $('page-prev').addEventListener('click', guard(() => {
    if (state.cursors.length > 1) state.cursors.pop();
    return loadKeys();
  }));
  // Up and down move through the key list, opening each key.
  $('keys').addEventListener('keydown', (ev) => {
    if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp') return;
    const row = ev.target.closest('tr');
    const next = row && (ev.key === 'ArrowDown' ? row.nextElementSibling : row.previousElementSibling);
    if (!next) return;
    ev.preventDefault();
    next.querySelector('button').focus();
    openEntry(next.dataset.key).catch(fail);
  });
  $('new-key').addEventListener('click', () => editEntry(null));
  $('bulk-delete').addEventListener('click', guard(bulkDelete));

  $('entry-close').addEventListener('click', closeEntry);
  for (const b of $('view-modes').querySelectorAll('button')) {
    b.addEventListener('click', () => {
      state.mode = b.dataset.mode;
      renderEntry();
    });
  }
  $('entry-edit').addEventListener('click', () => editEntry(state.entry));
  $('entry-copy').addEventListener('click', guard(async () => {
    // The clipboard API exists only on https and loopback addresses; elsewhere
    // the value is selected for the operator to copy.
    if (navigator.clipboard) {
      await navigator.clipboard.writeText($('entry-value').textContent);
      notify('Copied the value.');
      return;
    }
    getSelection().selectAllChildren($('entry-value'));
    notify('The value is selected: press Ctrl+C (⌘C) to copy it.');
  }));
  $('entry-delete').addEventListener('click', guard(deleteEntry));
  $('entry-form').addEventListener('submit', guard(saveEntry));
  $('edit-format').addEventListener('change', convertEdit);
  $('edit-cancel').addEventListener('click', () => (state.entry ? renderEntry() : closeEntry()));
  $('edit-format-json').addEventListener('click', () => {
    try {
      const text = $('edit-value').value;
      JSON.parse(text); // only to check it; the text is kept as typed
      $('edit-value').value = prettyJSON(text);
      show($('edit-error'), false);
    } catch (err) {
      editError(`The value is not valid JSON: ${err.message}`);
    }
  });

  $('prefix-form').addEventListener('submit', guard((ev) => {
    ev.preventDefault();
    return loadUsageDetails();
  }));
  $('export-button').addEventListener('click', guard(exportProject));
  $('import-form').addEventListener('submit', guard(importProject));
  $('quota-form').addEventListener('submit', guard(saveQuota));
  $('quota-reset').addEventListener('click', guard(resetQuota));
  $('clear-confirm').addEventListener('input', () => {
    $('clear-button').disabled = $('clear-confirm').value !== state.project;
  });
  $('clear-form').addEventListener('submit', guard(clearProject));
  $('default-quota-form').addEventListener('submit', guard(saveSettings));
}

async function start() {
  wire();
  const message = sessionStorage.getItem(`${tokenKey}.message`);
  sessionStorage.removeItem(`${tokenKey}.message`);
  const token = sessionStorage.getItem(tokenKey);
  if (!token) {
    showSignIn(message);
    return;
  }
  try {
    await signIn(token);
  } catch (err) {
    sessionStorage.removeItem(tokenKey);
    state.api = null;
    showSignIn(err.status === 401 ? `The saved token was refused: ${err.message}` : err.message);
  }
}

start();
