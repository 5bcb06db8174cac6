// The demo function end to end: a real kvsidecar daemon, `node server.js` on
// a free port, and the seed's requests over HTTP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon } from '../../../client/node/test/helpers/daemon.js';

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cleanup = [];

/** Starts server.js with the given KV socket on a free port; resolves to its base URL. */
async function startServer(socketPath) {
  const proc = spawn(process.execPath, ['server.js'], {
    cwd: dir,
    env: { ...process.env, PORT: '0', KV_SOCKET: socketPath },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  proc.stderr.on('data', (b) => { output += b; });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server.js did not start:\n${output}`)), 10000);
    proc.stdout.on('data', (b) => {
      output += b;
      const m = /listening on (http:\/\/localhost:\d+)\//.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.once('exit', (code) => reject(new Error(`server.js exited with ${code}:\n${output}`)));
  });
  cleanup.push(async () => {
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  });
  return { url, logs: () => output };
}

let daemon;
let base;

before(async () => {
  daemon = await startDaemon();
  cleanup.push(() => daemon.destroy());
  ({ url: base } = await startServer(daemon.socketPath));
});

after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

async function call(method, urlPath, body) {
  const res = await fetch(base + urlPath, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, type: res.headers.get('content-type'), body: text.startsWith('{') ? JSON.parse(text) : text };
}

test('POST /set with the seed body, then GET /get/user', async () => {
  // curl -X POST .../set -H "Content-Type: application/json" -d '{"key": "user", "value": {"name": "John", "age": 30}}'
  const set = await call('POST', '/set', '{"key": "user", "value": {"name": "John", "age": 30}}');
  assert.equal(set.status, 200);
  assert.deepEqual(set.body, { success: true, key: 'user' });
  const got = await call('GET', '/get/user');
  assert.equal(got.status, 200);
  assert.match(got.type, /application\/json/);
  assert.deepEqual(got.body, { key: 'user', value: { name: 'John', age: 30 } });
});

test('the seed example value "myvalue" comes back as {"key","value"}', async () => {
  await call('POST', '/set', { key: 'mykey', value: 'myvalue' });
  assert.deepEqual((await call('GET', '/get/mykey')).body, { key: 'mykey', value: 'myvalue' });
});

test('POST /set with a TTL (the seed session example), and GET /has/:key', async () => {
  // -d '{"key": "session", "value": "token123", "ttl": 3600000}'
  const set = await call('POST', '/set', '{"key": "session", "value": "token123", "ttl": 3600000}');
  assert.equal(set.status, 200);
  assert.deepEqual((await call('GET', '/get/session')).body, { key: 'session', value: 'token123' });
  assert.deepEqual((await call('GET', '/has/session')).body, { key: 'session', exists: true });
});

test('a short TTL expires', async () => {
  await call('POST', '/set', { key: 'temp', value: 1, ttl: 1000 });
  assert.deepEqual((await call('GET', '/has/temp')).body, { key: 'temp', exists: true });
  const deadline = Date.now() + 10000;
  while ((await call('GET', '/has/temp')).body.exists && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual((await call('GET', '/has/temp')).body, { key: 'temp', exists: false });
  assert.deepEqual((await call('GET', '/get/temp')).body, { key: 'temp' }, 'no value for an expired key');
});

test('arrays, numbers, booleans and null round-trip through the API', async () => {
  for (const value of [['javascript', 'nodejs', 'serverless'], 42, 3.5, true, false, null, '', { nested: { a: [1, null] } }]) {
    await call('POST', '/set', { key: 'v', value });
    assert.deepEqual((await call('GET', '/get/v')).body, { key: 'v', value }, JSON.stringify(value));
  }
});

test('GET /get of a missing key answers 200 without a value', async () => {
  const got = await call('GET', '/get/nonexistent');
  assert.equal(got.status, 200);
  assert.deepEqual(got.body, { key: 'nonexistent' });
});

test('DELETE /delete/:key says whether the key existed', async () => {
  await call('POST', '/set', { key: 'gone', value: 'x' });
  assert.deepEqual((await call('DELETE', '/delete/gone')).body, { success: true, key: 'gone', deleted: true });
  assert.deepEqual((await call('DELETE', '/delete/gone')).body, { success: true, key: 'gone', deleted: false });
  assert.deepEqual((await call('GET', '/has/gone')).body, { key: 'gone', exists: false });
});

test('keys with URL-special characters are percent-decoded', async () => {
  await call('POST', '/set', { key: 'user:123 profile/é', value: 1 });
  const key = encodeURIComponent('user:123 profile/é');
  assert.deepEqual((await call('GET', `/get/${key}`)).body, { key: 'user:123 profile/é', value: 1 });
});

test('POST /clear deletes every key', async () => {
  await call('POST', '/set', { key: 'a', value: 1 });
  await call('POST', '/set', { key: 'b', value: 2 });
  const cleared = await call('POST', '/clear');
  assert.equal(cleared.status, 200);
  assert.deepEqual(cleared.body, { success: true });
  assert.deepEqual((await call('GET', '/has/a')).body, { key: 'a', exists: false });
  assert.deepEqual((await call('GET', '/has/b')).body, { key: 'b', exists: false });
});

test('bad requests get 400 with a message', async () => {
  assert.equal((await call('POST', '/set', '{not json')).status, 400);
  const noKey = await call('POST', '/set', { value: 1 });
  assert.equal(noKey.status, 400);
  assert.match(noKey.body.error, /"key"/);
  assert.equal((await call('POST', '/set', { key: 'k' })).status, 400);
  assert.equal((await call('POST', '/set', { key: 'k', value: 1, ttl: -1 })).status, 400);
  assert.equal((await call('GET', '/nope')).status, 404);
});

test('GET / serves the interactive demo page', async () => {
  const res = await call('GET', '/');
  assert.equal(res.status, 200);
  assert.match(res.type, /text\/html/);
  assert.match(res.body, /KV Store Test Function/);
  for (const path of ["'set'", "'get/'", "'has/'", "'delete/'", "'clear'"]) assert.ok(res.body.includes(path), path);
});

test('quota exceeded answers 413 with the seed body', async () => {
  const small = await startDaemon({ quota: 100 });
  cleanup.push(() => small.destroy());
  const { url } = await startServer(small.socketPath);
  const res = await fetch(`${url}/set`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ key: 'large-data', value: 'x'.repeat(500) }),
  });
  assert.equal(res.status, 413);
  const body = await res.json();
  assert.equal(body.error, 'Storage quota exceeded');
  assert.ok(body.message.includes('quota exceeded'), body.message);
  assert.deepEqual(Object.keys(body).sort(), ['error', 'message']);
});

test('other KV failures answer 500 {"error": "Failed to access KV store"}', async () => {
  const { url, logs } = await startServer(path.join(daemon.dir, 'no-such.sock'));
  const res = await fetch(`${url}/get/x`);
  assert.equal(res.status, 500);
  assert.deepEqual(await res.json(), { error: 'Failed to access KV store' });
  await new Promise((r) => setTimeout(r, 50));
  assert.match(logs(), /KV operation failed/);
});

/** Sends a request with the target exactly as given (fetch would normalise it). */
function rawRequest(method, target) {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, method, path: target }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: text.startsWith('{') ? JSON.parse(text) : text }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the key is the path as sent: a backslash is not turned into a slash, dot segments are not resolved', async () => {
  await call('POST', '/set', { key: 'dir\\file', value: 'backslash' });
  await call('POST', '/set', { key: 'dir/file', value: 'slash' });
  await call('POST', '/set', { key: 'file', value: 'plain' });
  assert.deepEqual((await rawRequest('GET', '/get/dir\\file')).body, { key: 'dir\\file', value: 'backslash' });
  assert.deepEqual((await rawRequest('GET', '/get/dir/../file')).body, { key: 'dir/../file' });
  assert.deepEqual((await rawRequest('DELETE', '/delete/dir\\file')).body, { success: true, key: 'dir\\file', deleted: true });
  assert.deepEqual((await call('GET', '/get/dir%2Ffile')).body, { key: 'dir/file', value: 'slash' }, 'the other key is untouched');
  assert.deepEqual((await call('GET', '/get/file')).body, { key: 'file', value: 'plain' });
});

test('a request target that is not a URL path is a 4xx, not a KV failure', async () => {
  const res = await rawRequest('GET', '//[');
  assert.equal(res.status, 404);
  assert.match(res.body.error, /no route/);
});
