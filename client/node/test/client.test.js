// Every operation of the client against the real daemon.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, KvError } from '../src/index.js';
import { startDaemon } from './helpers/daemon.js';

let daemon;
let kv;

before(async () => {
  daemon = await startDaemon();
  kv = createClient({ socketPath: daemon.socketPath });
});

after(async () => {
  await kv?.close();
  await daemon?.destroy();
});

beforeEach(async () => {
  await kv.clear();
});

async function collect(iterable) {
  const out = [];
  for await (const x of iterable) out.push(x);
  return out;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('connect() reports the project and the limits from the hello', async () => {
  const info = await kv.connect();
  assert.equal(info.version, 2);
  assert.equal(info.project, 'test');
  assert.match(info.server, /kvsidecar/);
  assert.equal(info.limits.maxKey, 1024);
  assert.equal(info.limits.maxValue, 1048576);
  assert.ok(info.limits.maxFrame >= info.limits.maxValue);
  assert.ok(info.limits.maxBatch > 0);
});

test('the README example: set resolves to true, get returns the object', async () => {
  assert.equal(await kv.set('user', { name: 'John', age: 30 }, 3600000), true);
  assert.deepEqual(await kv.get('user'), { name: 'John', age: 30 });
  assert.equal(await kv.has('user'), true);
  assert.equal(await kv.delete('user'), true);
  assert.equal(await kv.get('user'), undefined);
});

test('every JSON type round-trips exactly', async () => {
  const values = {
    object: { name: 'John', age: 30, role: 'admin', nested: { deep: [1, { x: null }] } },
    emptyObject: {},
    array: ['javascript', 'nodejs', 'serverless'],
    emptyArray: [],
    mixedArray: [1, 'two', true, null, { three: 3 }, [4]],
    string: 'john_doe',
    emptyString: '',
    unicode: 'héllo wörld – 日本語 – 🎉',
    quotes: `"'\\\n\t`,
    numberZero: 0,
    negative: -42,
    float: 3.141592653589793,
    big: 1e300,
    tiny: 5e-324,
    maxSafe: Number.MAX_SAFE_INTEGER,
    true: true,
    false: false,
    null: null,
  };
  for (const [k, v] of Object.entries(values)) await kv.set(`t:${k}`, v);
  for (const [k, v] of Object.entries(values)) {
    assert.deepEqual(await kv.get(`t:${k}`), v, k);
  }
  // A stored null is null, not missing; a missing key is undefined.
  assert.strictEqual(await kv.get('t:null'), null);
  assert.equal(await kv.has('t:null'), true);
  assert.strictEqual(await kv.get('t:nope'), undefined);
  // Values read through getMany and list decode the same way.
  const keys = Object.keys(values).map((k) => `t:${k}`);
  assert.deepEqual(await kv.getMany(keys), Object.values(values));
  const listed = Object.fromEntries(await collect(kv.entries('t:')));
  assert.deepEqual(listed, Object.fromEntries(keys.map((k, i) => [k, Object.values(values)[i]])));
});

test('unicode keys', async () => {
  await kv.set('ключ:🔑', 1);
  assert.equal(await kv.get('ключ:🔑'), 1);
  assert.deepEqual(await collect(kv.keys('ключ')), ['ключ:🔑']);
});

test('a key with a lone surrogate is refused, not stored under another key', async () => {
  // Such a string has no UTF-8 form. Long ones used to be sent with U+FFFD
  // in its place, so they read and overwrote the entry of a different key.
  const long = 'x'.repeat(300);
  await kv.set(`${long}\uFFFD`, 'other');
  for (const key of [`${long}\uD800`, 'a\uDC00b']) {
    await assert.rejects(kv.set(key, 'mine'), (err) => err.code === 'BAD_REQUEST' && /UTF-8|surrogate/.test(err.message));
    await assert.rejects(kv.get(key), (err) => err.code === 'BAD_REQUEST');
    await assert.rejects(kv.getMany([key]), (err) => err.code === 'BAD_REQUEST');
  }
  await assert.rejects(kv.list({ prefix: `${long}\uD800` }), (err) => err.code === 'BAD_REQUEST');
  assert.equal(await kv.get(`${long}\uFFFD`), 'other');
});

test('set replaces the value and the TTL', async () => {
  await kv.set('k', 'a', 200);
  await kv.set('k', 'b');
  await sleep(400);
  assert.equal(await kv.get('k'), 'b', 'the second set removed the TTL');
});

test('delete says whether the key existed', async () => {
  assert.equal(await kv.delete('never'), false);
  await kv.set('d', 1);
  assert.equal(await kv.delete('d'), true);
  assert.equal(await kv.delete('d'), false);
  assert.equal(await kv.has('d'), false);
});

test('clear removes every entry and reports how many', async () => {
  await kv.setMany([{ key: 'a', value: 1 }, { key: 'b', value: 2 }, { key: 'c', value: 3 }]);
  assert.equal(await kv.clear(), 3);
  assert.deepEqual(await kv.hasMany(['a', 'b', 'c']), [false, false, false]);
  assert.equal(await kv.clear(), 0);
});

test('getMany, setMany, hasMany, deleteMany keep the order of the keys', async () => {
  assert.equal(await kv.setMany([
    { key: 'm1', value: { one: 1 } },
    { key: 'm2', value: [2] },
    { key: 'm3', value: null, ttl: 60000 },
    { key: 'm1', value: 'later wins' },
  ]), true);
  assert.deepEqual(await kv.getMany(['m3', 'nope', 'm1', 'm2']), [null, undefined, 'later wins', [2]]);
  assert.deepEqual(await kv.hasMany(['m1', 'nope', 'm3']), [true, false, true]);
  assert.deepEqual(await kv.deleteMany(['m1', 'nope', 'm2']), [true, false, true]);
  assert.deepEqual(await kv.hasMany(['m1', 'm2', 'm3']), [false, false, true]);
  assert.deepEqual(await kv.getMany([]), []);
  assert.deepEqual(await kv.hasMany([]), []);
  assert.deepEqual(await kv.deleteMany([]), []);
  assert.equal(await kv.setMany([]), true);
});

test('setMany is atomic: one bad item writes nothing', async () => {
  await assert.rejects(
    kv.setMany([{ key: 'ok1', value: 1 }, { key: 'x'.repeat(2000), value: 2 }, { key: 'ok2', value: 3 }]),
    (err) => err instanceof KvError && err.code === 'KEY_TOO_LARGE',
  );
  assert.deepEqual(await kv.hasMany(['ok1', 'ok2']), [false, false]);
});

test('*Many calls larger than max_batch are split and still complete', async () => {
  const { limits } = await kv.connect();
  const n = limits.maxBatch * 2 + 17;
  const entries = Array.from({ length: n }, (_, i) => ({ key: `bulk:${String(i).padStart(5, '0')}`, value: i }));
  await kv.setMany(entries);
  const keys = entries.map((e) => e.key);
  assert.deepEqual(await kv.getMany(keys), entries.map((e) => e.value));
  assert.equal((await kv.hasMany(keys)).filter(Boolean).length, n);
  assert.equal((await collect(kv.keys('bulk:'))).length, n);
  assert.equal((await kv.deleteMany(keys)).filter(Boolean).length, n);
  assert.equal((await kv.usage()).entries, 0);
});

test('getMany of values larger together than max_response is split and still complete', async () => {
  const { limits } = await kv.connect();
  assert.ok(limits.maxResponse >= limits.maxValue, `max_response ${limits.maxResponse} announced`);
  // Four values of 90% of max_value: together about twice max_response.
  const big = (i) => String(i).repeat(Math.floor(limits.maxValue * 0.9));
  const keys = ['big:0', 'big:1', 'big:2', 'big:3'];
  await Promise.all(keys.map((k, i) => kv.set(k, big(i))));
  const values = await kv.getMany([...keys, 'big:absent']);
  assert.equal(values.length, 5);
  keys.forEach((_, i) => assert.equal(values[i], big(i)));
  assert.equal(values[4], undefined);
  // A page of entries with values ends early where it would exceed
  // max_response; iterating still yields every entry once, in order.
  const entries = await collect(kv.entries('big:'));
  assert.deepEqual(entries.map(([k]) => k), keys);
  entries.forEach(([, v], i) => assert.equal(v, big(i)));
});

test('list pages through keys by prefix in byte order', async () => {
  const keys = ['p:b', 'p:a', 'p:c', 'p:B', 'p:aa', 'q:a', 'p', 'p:é'];
  await kv.setMany(keys.map((key, i) => ({ key, value: i })));
  const expected = ['p:B', 'p:a', 'p:aa', 'p:b', 'p:c', 'p:é'];

  const page1 = await kv.list({ prefix: 'p:', limit: 4 });
  assert.deepEqual(page1.keys, expected.slice(0, 4));
  assert.equal(typeof page1.cursor, 'string');
  assert.equal(page1.values, undefined);
  const page2 = await kv.list({ prefix: 'p:', limit: 4, cursor: page1.cursor, values: true });
  assert.deepEqual(page2.keys, expected.slice(4));
  assert.deepEqual(page2.values, [keys.indexOf('p:c'), keys.indexOf('p:é')]);
  assert.equal(page2.cursor, null);

  assert.deepEqual(await collect(kv.keys('p:', { pageSize: 2 })), expected);
  assert.deepEqual(
    await collect(kv.entries('p:', { pageSize: 3 })),
    expected.map((k) => [k, keys.indexOf(k)]),
  );
  assert.deepEqual(await collect(kv.keys()), [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
  assert.deepEqual(await collect(kv.keys('nothing:')), []);
});

test('incr adds atomically, creates with a TTL, and refuses non-integers', async () => {
  assert.equal(await kv.incr('hits'), 1);
  assert.equal(await kv.incr('hits', 41), 42);
  assert.equal(await kv.incr('hits', -50), -8);
  assert.equal(await kv.incr('hits', 0), -8);
  assert.equal(await kv.get('hits'), -8, 'get returns the counter as a number');

  assert.equal(await kv.incr('rate', 1, 300), 1);
  assert.equal(await kv.incr('rate', 1, 300), 2);
  await waitFor(async () => (await kv.get('rate')) === undefined, 5000);
  assert.equal(await kv.incr('rate', 1, 300), 1, 'a fresh counter after expiry');

  await kv.set('text', 'not a number');
  await assert.rejects(kv.incr('text'), (err) => err.code === 'NOT_INTEGER' && /not an integer/.test(err.message));
  await kv.set('float', 1.5);
  await assert.rejects(kv.incr('float'), (err) => err.code === 'NOT_INTEGER');
});

test('1000 concurrent incr on one key lose no update', async () => {
  const results = await Promise.all(Array.from({ length: 1000 }, () => kv.incr('counter')));
  assert.equal(await kv.get('counter'), 1000);
  assert.deepEqual([...results].sort((a, b) => a - b), Array.from({ length: 1000 }, (_, i) => i + 1));
});

test('usage counts len(key) + len(value) of every entry', async () => {
  assert.deepEqual(await kv.usage(), { bytes: 0, entries: 0, quota: 1024 * 1024 * 1024 });
  await kv.set('ab', 'x'); // key 2 bytes, value "x" with quotes 3 bytes
  await kv.set('cde', { a: 1 }); // 3 + 7
  const u = await kv.usage();
  assert.equal(u.bytes, 2 + 3 + 3 + 7);
  assert.equal(u.entries, 2);
  await kv.delete('cde');
  assert.equal((await kv.usage()).bytes, 5);
});

test('ping resolves', async () => {
  assert.equal(await kv.ping(), undefined);
});

async function waitFor(cond, ms) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(25);
  }
}

test('an entry expires after its TTL for get, has, getMany and list', async () => {
  const started = Date.now();
  await kv.set('session', 'token123', 1000);
  await kv.set('keep', 'forever');
  assert.equal(await kv.get('session'), 'token123');
  assert.equal(await kv.has('session'), true);
  await waitFor(async () => (await kv.get('session')) === undefined, 10000);
  assert.ok(Date.now() - started >= 950, 'not expired before its TTL');
  assert.equal(await kv.has('session'), false);
  assert.deepEqual(await kv.getMany(['session', 'keep']), [undefined, 'forever']);
  assert.deepEqual(await collect(kv.keys()), ['keep']);
  assert.equal(await kv.delete('session'), false);
});

test('setMany items expire by their own TTL', async () => {
  await kv.setMany([{ key: 'short', value: 1, ttl: 200 }, { key: 'long', value: 2, ttl: 60000 }]);
  await waitFor(async () => !(await kv.has('short')), 5000);
  assert.equal(await kv.get('long'), 2);
});

test('errors carry stable codes and messages that name the problem', async () => {
  await assert.rejects(kv.get('k'.repeat(1025)), (err) => {
    assert.ok(err instanceof KvError);
    assert.equal(err.code, 'KEY_TOO_LARGE');
    assert.match(err.message, /1025 bytes.*1024/);
    return true;
  });
  await assert.rejects(kv.set('big', 'x'.repeat(1048577)), (err) => err.code === 'VALUE_TOO_LARGE' && /limit is 1048576 bytes/.test(err.message));
  // The connection is still usable after request errors.
  assert.equal(await kv.set('fine', 1), true);
});

test('a value of exactly max_value bytes is accepted', async () => {
  const { limits } = await kv.connect();
  const s = 'x'.repeat(limits.maxValue - 2); // JSON adds the two quotes
  assert.equal(await kv.set('max', s), true);
  assert.equal((await kv.get('max')).length, s.length);
});

test('1000 concurrent mixed operations on one client, over one connection', async () => {
  const c = createClient({ socketPath: daemon.socketPath });
  let connects = 0;
  c.on('connect', () => connects++);
  try {
    const ops = [];
    for (let i = 0; i < 1000; i++) {
      const key = `c:${Math.floor(i / 4)}`; // set, get, has of one key in a row
      switch (i % 4) {
        case 0: ops.push(c.set(key, { i, key })); break;
        case 1: ops.push(c.get(key)); break;
        case 2: ops.push(c.has(key)); break;
        default: ops.push(c.incr(`n:${Math.floor(i / 4) % 10}`)); break;
      }
    }
    const results = await Promise.all(ops);
    assert.equal(results.length, 1000);
    assert.equal(connects, 1, 'all calls shared one connection');
    for (let i = 0; i < 1000; i += 4) assert.equal(results[i], true);
    // Writes of one connection to one key apply in the order they were sent:
    // each get/has saw the set sent just before it.
    for (let i = 1; i < 1000; i += 4) assert.deepEqual(results[i], { i: i - 1, key: `c:${Math.floor(i / 4)}` });
    for (let i = 2; i < 1000; i += 4) assert.equal(results[i], true);
    const counters = await c.getMany(Array.from({ length: 10 }, (_, n) => `n:${n}`));
    assert.deepEqual(counters, Array(10).fill(25), '250 incr over 10 counters');
  } finally {
    await c.close();
  }
});

test('each client has its own connection; all see the same data', async () => {
  const a = createClient({ socketPath: daemon.socketPath });
  const b = createClient({ socketPath: daemon.socketPath });
  try {
    await a.set('shared', 'from a');
    assert.equal(await b.get('shared'), 'from a');
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});
