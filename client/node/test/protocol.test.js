// Protocol behaviour of the client against a scripted fake server: hello
// first, pipelining with out-of-order and fragmented responses, error
// mapping, the server's limits, timeouts and closing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, KvError } from '../src/index.js';
import { encodeFrame } from '../src/frame.js';
import { startFakeServer, memoryHandler } from './helpers/fake-server.js';

test('connects lazily and sends hello with id 0 and version 2 first', async (t) => {
  const srv = await startFakeServer(memoryHandler());
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(srv.requests.length, 0, 'no connection before the first call');
  assert.equal(await kv.set('a', 1), true);
  assert.equal(srv.requests[0].id, 0);
  assert.equal(srv.requests[0].op, 'hello');
  assert.equal(srv.requests[0].version, 2);
  assert.match(srv.requests[0].client, /^kvsidecar-node\//);
  assert.equal(srv.requests[1].op, 'set');
  assert.ok(srv.requests[1].id > 0);
  assert.ok(srv.requests[1].value instanceof Uint8Array, 'value is sent as bin');
  assert.equal(Buffer.from(srv.requests[1].value).toString(), '1');
  await kv.close();
});

test('each request carries what is left of its timeout, less a margin; none without a timeout', async (t) => {
  const srv = await startFakeServer(memoryHandler());
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath, timeout: 2000 });
  await kv.set('a', 1);
  const sent = srv.requests.find((r) => r.op === 'set');
  assert.ok(sent.timeout > 1500 && sent.timeout < 2000, `timeout ${sent.timeout} ms: want a little under 2000`);
  await kv.close();

  const none = createClient({ socketPath: srv.socketPath, timeout: 0 });
  await none.get('a');
  const get = srv.requests.find((r) => r.op === 'get');
  assert.equal(get.timeout, undefined, 'no timeout field when calls have no timeout');
  await none.close();
});

test('socket path: option, then $KV_SOCKET, then the default', () => {
  const saved = process.env.KV_SOCKET;
  try {
    delete process.env.KV_SOCKET;
    assert.equal(createClient().socketPath, '/run/kvsidecar/kv.sock');
    process.env.KV_SOCKET = '/tmp/from-env.sock';
    assert.equal(createClient().socketPath, '/tmp/from-env.sock');
    assert.equal(createClient({ socketPath: '/tmp/opt.sock' }).socketPath, '/tmp/opt.sock');
  } finally {
    if (saved === undefined) delete process.env.KV_SOCKET;
    else process.env.KV_SOCKET = saved;
  }
});

test('VERSION matches package.json', async () => {
  const { VERSION } = await import('../src/index.js');
  const { readFileSync } = await import('node:fs');
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  assert.equal(VERSION, pkg.version);
});

test('matches responses by id when they arrive in reverse order, coalesced', async (t) => {
  const srv = await startFakeServer((req) => ({ result: Buffer.from(JSON.stringify(req.key)) }), { write: 'reverse' });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  await kv.connect();
  const keys = Array.from({ length: 200 }, (_, i) => `k${i}`);
  const got = await Promise.all(keys.map((k) => kv.get(k)));
  assert.deepEqual(got, keys);
  await kv.close();
});

test('reassembles responses that arrive one byte per read', async (t) => {
  const mem = memoryHandler();
  const srv = await startFakeServer(mem, { write: 'bytewise' });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  const value = { name: 'John', tags: ['a', 'b'], n: 1.5, ok: true, nothing: null };
  await kv.set('user', value);
  assert.deepEqual(await kv.get('user'), value);
  assert.equal(await kv.get('missing'), undefined);
  await kv.close();
});

test('pipelines: many requests are written before any response', async (t) => {
  let release;
  const gate = new Promise((r) => { release = r; });
  const srv = await startFakeServer(async (req) => { await gate; return { result: null }; });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  await kv.connect();
  const calls = Array.from({ length: 50 }, () => kv.ping());
  const deadline = Date.now() + 2000;
  while (srv.requests.length < 51 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.equal(srv.requests.length, 51, 'all 50 requests arrived while none was answered');
  assert.equal(new Set(srv.requests.map((r) => r.id)).size, 51, 'ids are distinct');
  release();
  await Promise.all(calls);
  await kv.close();
});

test('requests go out in call order, batch calls included, before and after the hello', async (t) => {
  const srv = await startFakeServer(memoryHandler(), {
    limits: { max_key: 1024, max_value: 1048576, max_frame: 2097152, max_inflight: 128, max_batch: 2 },
  });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  const order = () => srv.requests.filter((r) => r.op !== 'hello').map((r) => `${r.op}:${r.key ?? (r.keys ?? r.items.map((i) => i.key)).join(',')}`);
  // Not connected yet: everything waits for the hello, then goes in order.
  const first = [kv.getMany(['a', 'b', 'c']), kv.set('a', 1), kv.hasMany(['a']), kv.setMany([{ key: 'b', value: 2 }]), kv.get('b')];
  const r1 = await Promise.all(first);
  assert.deepEqual(order(), ['getMany:a,b', 'getMany:c', 'set:a', 'hasMany:a', 'setMany:b', 'get:b']);
  assert.deepEqual(r1, [[undefined, undefined, undefined], true, [true], true, 2]);
  // Connected: the same.
  srv.requests.length = 0;
  const r2 = await Promise.all([kv.deleteMany(['a', 'b', 'x']), kv.get('a'), kv.getMany(['a', 'b'])]);
  assert.deepEqual(order(), ['deleteMany:a,b', 'deleteMany:x', 'get:a', 'getMany:a,b']);
  assert.deepEqual(r2, [[true, true, false], undefined, [undefined, undefined]]);
  await kv.close();
});

test('maps error responses to KvError with the upper-cased code and the message', async (t) => {
  const srv = await startFakeServer((req) => {
    if (req.key === 'q') return { error: { code: 'quota_exceeded', message: 'quota exceeded: project test uses 10 of 10 bytes' } };
    return { error: { code: 'brand_new_code', message: 'something' } };
  });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  await assert.rejects(kv.set('q', 'x'), (err) => {
    assert.ok(err instanceof KvError);
    assert.equal(err.code, 'QUOTA_EXCEEDED');
    assert.ok(err.message.includes('quota exceeded'));
    assert.equal(err.op, 'set');
    return true;
  });
  await assert.rejects(kv.get('other'), (err) => err.code === 'INTERNAL' && /brand_new_code/.test(err.message));
  await kv.close();
});

test('a forbidden error frame before the hello result fails the calls with FORBIDDEN', async (t) => {
  const srv = await startFakeServer(() => undefined, {
    onConnect(conn) {
      conn.socket.end(encodeFrame({ id: 0, error: { code: 'forbidden', message: 'uid 1234 is not mapped to any project' } }));
      return false;
    },
  });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  const results = await Promise.allSettled([kv.get('a'), kv.set('b', 1)]);
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    assert.equal(r.reason.code, 'FORBIDDEN');
    assert.match(r.reason.message, /uid 1234 is not mapped/);
  }
  await kv.close();
});

test('a hello result with another protocol version fails the calls with UNSUPPORTED_VERSION', async (t) => {
  // A daemon of version 1 would ignore if_version and turn a conditional
  // write into a plain one: this client refuses to talk to it.
  const srv = await startFakeServer(memoryHandler(), { hello: { version: 1, server: 'old/1', project: 'test', limits: {} } });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  await assert.rejects(kv.ping(), (err) => err.code === 'UNSUPPORTED_VERSION' && /version 1/.test(err.message));
  await kv.close();
});

test('a refusal is reported even when the daemon closes before reading the hello', async (t) => {
  // Like the daemon: write the error frame, close without reading. The
  // client's hello write may then fail (EPIPE), losing the frame with the
  // socket; the client must still report FORBIDDEN.
  const srv = await startFakeServer(() => undefined, {
    onConnect(conn) {
      conn.socket.write(encodeFrame({ id: 0, error: { code: 'forbidden', message: 'forbidden: uid 1234 is not mapped to any project' } }), () => conn.socket.destroy());
      return false;
    },
  });
  t.after(() => srv.close());
  for (let i = 0; i < 20; i++) {
    const kv = createClient({ socketPath: srv.socketPath });
    const [a, b] = await Promise.allSettled([kv.get('a'), kv.connect()]);
    assert.equal(a.reason?.code, 'FORBIDDEN', a.reason?.message);
    assert.equal(b.reason?.code, 'FORBIDDEN', b.reason?.message);
    await kv.close();
  }
});

test('splits getMany/hasMany/deleteMany to the announced max_batch and keeps the order', async (t) => {
  const srv = await startFakeServer(memoryHandler(), {
    limits: { max_key: 1024, max_value: 1048576, max_frame: 2097152, max_inflight: 128, max_batch: 3 },
  });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  await kv.set('k4', 4);
  await kv.set('k7', 7);
  const keys = Array.from({ length: 10 }, (_, i) => `k${i}`);
  const values = await kv.getMany(keys);
  assert.deepEqual(values, keys.map((k) => (k === 'k4' ? 4 : k === 'k7' ? 7 : undefined)));
  const sizes = srv.requests.filter((r) => r.op === 'getMany').map((r) => r.keys.length);
  assert.deepEqual(sizes, [3, 3, 3, 1]);
  assert.deepEqual(await kv.hasMany(keys), keys.map((k) => k === 'k4' || k === 'k7'));
  await kv.close();
});

test('refuses a request larger than the announced max_frame without sending it', async (t) => {
  const srv = await startFakeServer(memoryHandler(), {
    limits: { max_key: 1024, max_value: 100, max_frame: 300, max_inflight: 128, max_batch: 1000 },
  });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  await assert.rejects(kv.set('big', 'x'.repeat(200)), (err) => {
    assert.equal(err.code, 'VALUE_TOO_LARGE');
    assert.match(err.message, /value too large: value is 202 bytes, the limit is 100 bytes/);
    return true;
  });
  await assert.rejects(kv.getMany(['k'.repeat(400)]), (err) => err.code === 'FRAME_TOO_LARGE' && /max_frame of 300/.test(err.message));
  assert.equal(srv.requests.filter((r) => r.op !== 'hello').length, 0);
  assert.equal(await kv.set('small', 'ok'), true, 'the connection is still usable');
  await kv.close();
});

test('times out a call the server never answers, and the connection stays usable', async (t) => {
  const mem = memoryHandler();
  const srv = await startFakeServer((req) => (req.key === 'slow' ? undefined : mem(req)));
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath, timeout: 400 });
  const started = Date.now();
  await assert.rejects(kv.get('slow'), (err) => err instanceof KvError && err.code === 'TIMEOUT' && /timed out after 400 ms/.test(err.message));
  assert.ok(Date.now() - started >= 390);
  assert.equal(await kv.set('fast', 1), true);
  assert.equal(await kv.get('fast'), 1);
  await kv.close();
});

test('calls in flight when the connection drops fail with UNAVAILABLE; the next call re-dials', async (t) => {
  const mem = memoryHandler();
  const srv = await startFakeServer((req, conn) => {
    if (req.key === 'drop') {
      conn.socket.destroy();
      return undefined;
    }
    return mem(req);
  });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  const events = [];
  kv.on('connectionError', (e) => events.push(e));
  await kv.set('a', 1);
  await assert.rejects(kv.get('drop'), (err) => err.code === 'UNAVAILABLE' && /may or may not have been applied/.test(err.message));
  assert.equal(events.length, 1);
  assert.equal(events[0].code, 'UNAVAILABLE');
  assert.equal(await kv.get('a'), 1);
  const hellos = srv.requests.filter((r) => r.op === 'hello').length;
  assert.equal(hellos, 2, 'a second connection with its own hello');
  await kv.close();
});

test('a call with no daemon listening fails fast with UNAVAILABLE naming the socket', async () => {
  const kv = createClient({ socketPath: '/nonexistent/dir/kv.sock' });
  await assert.rejects(kv.get('a'), (err) => err.code === 'UNAVAILABLE' && err.message.includes('/nonexistent/dir/kv.sock'));
  await kv.close();
});

test('close() lets calls in flight finish, then rejects new calls with CLOSED', async (t) => {
  const srv = await startFakeServer(async (req) => {
    await new Promise((r) => setTimeout(r, 50));
    return { result: null };
  });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  const inflight = kv.ping();
  await new Promise((r) => setTimeout(r, 10));
  const closing = kv.close();
  await assert.rejects(kv.ping(), (err) => err.code === 'CLOSED');
  await inflight;
  await closing;
  assert.equal(kv.closed, true);
  await assert.rejects(kv.get('x'), (err) => err.code === 'CLOSED');
});

test('close() waits for a split setMany to send all its parts', async (t) => {
  const srv = await startFakeServer(memoryHandler(), {
    limits: { max_key: 1024, max_value: 1048576, max_frame: 2097152, max_inflight: 128, max_batch: 2 },
  });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  const items = Array.from({ length: 5 }, (_, i) => ({ key: `k${i}`, value: i }));
  const setting = kv.setMany(items);
  const closing = kv.close();
  assert.equal(await setting, true);
  await closing;
  assert.deepEqual(srv.requests.filter((r) => r.op === 'setMany').map((r) => r.items.length), [2, 2, 1]);
});

test('a value that is not JSON fails with NOT_JSON naming the key', async (t) => {
  const srv = await startFakeServer(() => ({ result: Buffer.from('not json') }));
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  await assert.rejects(kv.get('raw'), (err) => err.code === 'NOT_JSON' && err.message.includes('"raw"'));
  await kv.close();
});

test('bad arguments are refused before anything is sent', async (t) => {
  const srv = await startFakeServer(memoryHandler());
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  await assert.rejects(kv.get(42), (err) => err.code === 'BAD_REQUEST' && /key must be a string/.test(err.message));
  await assert.rejects(kv.set('', 1), (err) => err.code === 'BAD_REQUEST' && /must not be empty/.test(err.message));
  await assert.rejects(kv.set('k', undefined), (err) => err.code === 'BAD_REQUEST' && /undefined/.test(err.message));
  await assert.rejects(kv.set('k', 1, -5), (err) => err.code === 'BAD_REQUEST' && /ttl must be a non-negative/.test(err.message));
  await assert.rejects(kv.set('k', 10n), (err) => err.code === 'BAD_REQUEST' && /JSON-encoded/.test(err.message));
  await assert.rejects(kv.incr('k', 1.5), (err) => err.code === 'BAD_REQUEST' && /delta must be an integer/.test(err.message));
  assert.equal(srv.requests.length, 0);
  await kv.close();
});

test('an idle client does not keep the process alive', async () => {
  const { spawn } = await import('node:child_process');
  const srv = await startFakeServer(memoryHandler());
  try {
    const script = `import { createClient } from ${JSON.stringify(new URL('../src/index.js', import.meta.url).href)};
      const kv = createClient({ socketPath: ${JSON.stringify(srv.socketPath)} });
      await kv.set('a', 1); console.log(JSON.stringify(await kv.get('a')));`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (b) => { out += b; });
    const code = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { child.kill(); reject(new Error('the process did not exit')); }, 20000);
      child.on('exit', (c) => { clearTimeout(timer); resolve(c); });
    });
    assert.equal(code, 0);
    assert.equal(out.trim(), '1');
  } finally {
    await srv.close();
  }
});

test('a response claiming more bytes than any answer can hold fails the connection instead of buffering it', async (t) => {
  // A broken daemon (or another program on the socket) announces a 4 GiB
  // frame and keeps sending: the client must not buffer it, nor hang.
  let streamed = 0;
  const srv = await startFakeServer((req, conn) => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(0xfffffff0, 0);
    conn.socket.write(header);
    const iv = setInterval(() => {
      if (conn.socket.destroyed || streamed > 64 * 1024 * 1024) { clearInterval(iv); return; }
      conn.socket.write(Buffer.alloc(1024 * 1024), () => {});
      streamed += 1024 * 1024;
    }, 1);
    conn.socket.once('close', () => clearInterval(iv));
    return undefined;
  });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath, timeout: 0 });
  await assert.rejects(kv.get('a'), (err) => err.code === 'UNAVAILABLE' && /4294967280 bytes/.test(err.message));
  assert.ok(streamed < 64 * 1024 * 1024, `the client kept reading ${streamed} bytes`);
  await kv.close();
});

test('a first frame too large to be a hello result fails at once: not a kvsidecar daemon', async (t) => {
  // E.g. $KV_SOCKET names an HTTP server's socket: "HTTP" reads as a 1.2 GB length.
  const srv = await startFakeServer(() => undefined, {
    onConnect(conn) {
      conn.socket.on('data', () => {});
      conn.socket.write('HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n');
      return false;
    },
  });
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath, timeout: 0 });
  await assert.rejects(kv.ping(), (err) => err.code === 'UNAVAILABLE' && /hello/.test(err.message) && /bytes/.test(err.message));
  await kv.close();
});

test('a timeout longer than a timer can hold is refused, not turned into 1 ms', async (t) => {
  // Node clamps setTimeout delays over 2^31-1 ms to 1 ms: a client made
  // with timeout: 2 ** 31 ("practically never") timed every call out at once.
  const mem = memoryHandler();
  const srv = await startFakeServer((req) => new Promise((r) => setTimeout(() => r(mem(req)), 30)));
  t.after(() => srv.close());
  assert.throws(() => createClient({ socketPath: srv.socketPath, timeout: 2 ** 31 }),
    (err) => err.code === 'BAD_REQUEST' && /at most 2147483647/.test(err.message));
  const kv = createClient({ socketPath: srv.socketPath, timeout: 2 ** 31 - 1 });
  assert.equal(await kv.set('a', 1), true);
  await kv.close();
});

test('NaN and ±Infinity are refused, not stored as null', async (t) => {
  // JSON.stringify(NaN) is "null": set('avg', 0 / 0) used to resolve true
  // and get('avg') then returned null.
  const srv = await startFakeServer(memoryHandler());
  t.after(() => srv.close());
  const kv = createClient({ socketPath: srv.socketPath });
  for (const v of [NaN, Infinity, -Infinity]) {
    await assert.rejects(kv.set('k', v), (err) => err.code === 'BAD_REQUEST' && err.message.includes(String(v)));
    await assert.rejects(kv.setMany([{ key: 'k', value: v }]), (err) => err.code === 'BAD_REQUEST' && err.message.includes(String(v)));
  }
  assert.equal(srv.requests.length, 0);
  assert.equal(await kv.set('z', -0), true);
  assert.equal(await kv.get('z'), 0);
  await kv.close();
});
