// Versions, conditional writes, ttl/expire and update against the real daemon.
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

const isConflict = (keys) => (err) => err instanceof KvError && err.code === 'CONFLICT'
  && JSON.stringify(err.keys) === JSON.stringify(keys);

test('getWithVersion and set with ifVersion', async () => {
  assert.equal(await kv.getWithVersion('cart'), undefined);
  assert.equal(await kv.set('cart', ['apple'], 0, { ifVersion: 0 }), true);
  const first = await kv.getWithVersion('cart');
  assert.deepEqual(first.value, ['apple']);
  assert.ok(Number.isInteger(first.version) && first.version > 0);

  await kv.set('cart', ['apple', 'pear'], 0, { ifVersion: first.version });
  const second = await kv.getWithVersion('cart');
  assert.ok(second.version > first.version);

  await assert.rejects(kv.set('cart', ['plum'], 0, { ifVersion: first.version }), isConflict(['cart']));
  await assert.rejects(kv.set('cart', ['plum'], 0, { ifVersion: 0 }), isConflict(['cart']));
  assert.deepEqual(await kv.get('cart'), ['apple', 'pear']);
  await assert.rejects(kv.set('cart', 1, 0, { ifVersion: -1 }), (err) => err.code === 'BAD_REQUEST');
});

test('setIfAbsent is a lock with a TTL', async () => {
  assert.equal(await kv.setIfAbsent('lock:job', 'worker-1', 60000), true);
  assert.equal(await kv.setIfAbsent('lock:job', 'worker-2', 60000), false);
  assert.equal(await kv.get('lock:job'), 'worker-1');
  const left = await kv.ttl('lock:job');
  assert.ok(left > 59000 && left <= 60000, `ttl ${left}`);
  assert.equal(await kv.setIfAbsent('lock:short', 'a', 30), true);
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(await kv.setIfAbsent('lock:short', 'b', 1000), true);
});

test('deleteIf deletes only the version read', async () => {
  await kv.set('k', 1);
  const { version } = await kv.getWithVersion('k');
  await assert.rejects(kv.deleteIf('k', version + 1), isConflict(['k']));
  assert.equal(await kv.has('k'), true);
  assert.equal(await kv.deleteIf('k', version), true);
  assert.equal(await kv.has('k'), false);
  await assert.rejects(kv.deleteIf('k', version), isConflict(['k']));
});

test('ttl and expire', async () => {
  await kv.set('s', 'x');
  assert.equal(await kv.ttl('s'), 0);
  assert.equal(await kv.ttl('missing'), undefined);
  const before = (await kv.getWithVersion('s')).version;
  assert.equal(await kv.expire('s', 30000), true);
  const left = await kv.ttl('s');
  assert.ok(left > 29000 && left <= 30000, `ttl ${left}`);
  assert.ok((await kv.getWithVersion('s')).version > before, 'expire changes the version');
  assert.equal(await kv.expire('s', 0), true);
  assert.equal(await kv.ttl('s'), 0);
  assert.equal(await kv.expire('missing', 1000), false);
  const u = await kv.usage();
  await kv.expire('s', 5000);
  assert.deepEqual(await kv.usage(), u, 'expire leaves the usage alone');
});

test('setMany with conditions is all or nothing and names every failing key', async () => {
  await kv.set('b', 'old');
  const vb = (await kv.getWithVersion('b')).version;
  await assert.rejects(kv.setMany([
    { key: 'a', value: 1, ifVersion: 0 },
    { key: 'b', value: 2, ifVersion: vb + 1 },
    { key: 'c', value: 3, ifVersion: vb },
  ]), isConflict(['b', 'c']));
  assert.equal(await kv.has('a'), false);
  assert.equal(await kv.get('b'), 'old');
  await kv.setMany([{ key: 'a', value: 1, ifVersion: 0 }, { key: 'b', value: 2, ifVersion: vb }]);
  assert.deepEqual(await kv.getMany(['a', 'b']), [1, 2]);
});

test('update applies concurrent increments exactly once', async () => {
  const writers = 32;
  const each = 4;
  await Promise.all(Array.from({ length: writers }, async (_, w) => {
    // Separate clients, so the writes really race on separate connections.
    const c = createClient({ socketPath: daemon.socketPath });
    try {
      for (let i = 0; i < each; i++) {
        await c.update('doc', (old) => {
          const next = old ?? { n: 0, by: {} };
          next.n++;
          next.by[`w${w}`] = (next.by[`w${w}`] ?? 0) + 1;
          return next;
        });
      }
    } finally {
      await c.close();
    }
  }));
  const doc = await kv.get('doc');
  assert.equal(doc.n, writers * each);
  for (let w = 0; w < writers; w++) assert.equal(doc.by[`w${w}`], each);
});

test('update keeps the TTL of an existing key, and an error from fn writes nothing', async () => {
  await kv.set('sess', { views: 1 }, 60000);
  assert.deepEqual(await kv.update('sess', async (old) => ({ views: old.views + 1 })), { views: 2 });
  const left = await kv.ttl('sess');
  assert.ok(left > 59000 && left <= 60000, `ttl ${left}`);
  await assert.rejects(kv.update('sess', () => { throw new Error('nope'); }), /nope/);
  assert.deepEqual(await kv.get('sess'), { views: 2 });
});
