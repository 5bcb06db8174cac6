// KV Store Test Function: a REST API over the project-scoped KV store, plus
// an interactive demo page at /. Run it next to a kvsidecar daemon:
//
//   KV_SOCKET=../../var/kv.sock node server.js
//
// The kv client finds the daemon at $KV_SOCKET, else /run/kvsidecar/kv.sock.
import http from 'node:http';
import { createClient } from 'kvsidecar';

const kv = createClient();

const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>KV Store Test Function</title>
<style>
  body { font: 15px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; }
  fieldset { border: 1px solid #ccc; border-radius: 6px; margin: 0 0 1rem; }
  label { display: block; margin: .3rem 0; }
  input, textarea { font: inherit; width: 100%; box-sizing: border-box; padding: .3rem; }
  textarea { height: 5rem; font-family: ui-monospace, monospace; }
  button { font: inherit; margin: .3rem .3rem 0 0; padding: .3rem .8rem; }
  pre { background: #f5f5f5; border-radius: 6px; padding: .8rem; white-space: pre-wrap; word-break: break-all; min-height: 2rem; }
  .status { font-weight: bold; }
</style>
</head>
<body>
<h1>KV Store Test Function</h1>
<p>Project-scoped, persistent key-value storage. Values are JSON; an optional TTL is in milliseconds.</p>

<fieldset>
  <legend>Set</legend>
  <label>Key <input id="set-key" value="user"></label>
  <label>Value (JSON) <textarea id="set-value">{"name": "John", "age": 30}</textarea></label>
  <label>TTL in ms (optional) <input id="set-ttl" type="number" min="0" placeholder="e.g. 3600000"></label>
  <button id="set">Set</button>
</fieldset>

<fieldset>
  <legend>Get, check, delete</legend>
  <label>Key <input id="key" value="user"></label>
  <button id="get">Get</button>
  <button id="has">Has</button>
  <button id="delete">Delete</button>
</fieldset>

<fieldset>
  <legend>Clear</legend>
  <button id="clear">Clear all keys of this project</button>
</fieldset>

<p class="status" id="status"></p>
<pre id="out"></pre>

<script>
  // Relative URLs, so the page also works when served under a path prefix.
  const $ = (id) => document.getElementById(id);
  async function call(method, path, body) {
    $('status').textContent = method + ' ' + path + ' …';
    try {
      const res = await fetch(path, {
        method,
        headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch {}
      $('status').textContent = method + ' ' + path + ' → ' + res.status;
      $('out').textContent = shown;
    } catch (err) {
      $('status').textContent = 'request failed';
      $('out').textContent = String(err);
    }
  }
  const key = () => encodeURIComponent($('key').value);
  $('set').onclick = () => {
    let value;
    try { value = JSON.parse($('set-value').value); } catch (err) {
      $('status').textContent = 'the value is not valid JSON';
      $('out').textContent = String(err);
      return;
    }
    const body = { key: $('set-key').value, value };
    if ($('set-ttl').value !== '') body.ttl = Number($('set-ttl').value);
    call('POST', 'set', body);
  };
  $('get').onclick = () => call('GET', 'get/' + key());
  $('has').onclick = () => call('GET', 'has/' + key());
  $('delete').onclick = () => call('DELETE', 'delete/' + key());
  $('clear').onclick = () => {
    if (confirm('Delete every key of this project?')) call('POST', 'clear');
  };
</script>
</body>
</html>
`;

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const MAX_BODY = 8 * 1024 * 1024;

async function readJSON(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new HttpError(413, `request body larger than ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'request body is not valid JSON');
  }
}

function keyFrom(pathname, prefix) {
  let key;
  try {
    key = decodeURIComponent(pathname.slice(prefix.length));
  } catch {
    throw new HttpError(400, 'the key in the URL is not valid percent-encoding');
  }
  if (key === '') throw new HttpError(400, 'the URL names no key');
  return key;
}

/**
 * The path of the request target as the client sent it. Parsing it with
 * new URL() would turn a backslash into a slash and resolve "..", so the
 * key read or deleted would be another one than the one named; and a target
 * such as "//[" would throw.
 */
function pathOf(target) {
  const absolute = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*/.exec(target); // absolute-form, e.g. through a proxy
  const rest = absolute ? target.slice(absolute[0].length) || '/' : target;
  const end = rest.search(/[?#]/);
  return end < 0 ? rest : rest.slice(0, end);
}

async function route(req, res) {
  const pathname = pathOf(req.url);
  const { method } = req;

  if (method === 'GET' && (pathname === '/' || pathname === '/index.html')) {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(page);
    return;
  }

  if (method === 'GET' && pathname.startsWith('/get/')) {
    const key = keyFrom(pathname, '/get/');
    const value = await kv.get(key);
    send(res, 200, { key, value });
    return;
  }

  if (method === 'POST' && pathname === '/set') {
    const body = await readJSON(req);
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new HttpError(400, 'the body must be a JSON object: {"key", "value", "ttl"?}');
    }
    const { key, value, ttl } = body;
    if (typeof key !== 'string' || key === '') throw new HttpError(400, '"key" must be a non-empty string');
    if (!('value' in body)) throw new HttpError(400, '"value" is missing');
    if (ttl !== undefined && ttl !== null && (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 0)) {
      throw new HttpError(400, '"ttl" must be a non-negative number of milliseconds');
    }
    await kv.set(key, value, ttl ?? undefined);
    send(res, 200, { success: true, key });
    return;
  }

  if (method === 'DELETE' && pathname.startsWith('/delete/')) {
    const key = keyFrom(pathname, '/delete/');
    const deleted = await kv.delete(key);
    send(res, 200, { success: true, key, deleted });
    return;
  }

  if (method === 'GET' && pathname.startsWith('/has/')) {
    const key = keyFrom(pathname, '/has/');
    const exists = await kv.has(key);
    send(res, 200, { key, exists });
    return;
  }

  if (method === 'POST' && pathname === '/clear') {
    await kv.clear();
    send(res, 200, { success: true });
    return;
  }

  throw new HttpError(404, `no route for ${method} ${pathname}`);
}

const server = http.createServer(async (req, res) => {
  try {
    await route(req, res);
  } catch (error) {
    if (error instanceof HttpError) {
      send(res, error.status, { error: error.message });
    } else if (typeof error?.message === 'string' && error.message.includes('quota exceeded')) {
      console.error('Storage quota exceeded!', error.message);
      send(res, 413, { error: 'Storage quota exceeded', message: error.message });
    } else {
      console.error('KV operation failed:', error);
      send(res, 500, { error: 'Failed to access KV store' });
    }
  }
});

const port = Number(process.env.PORT ?? 3000);
server.listen(port, () => {
  console.log(`kv-test-function listening on http://localhost:${server.address().port}/ (KV socket ${kv.socketPath})`);
});

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  kv.close().finally(() => process.exit(0));
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
