// The quota error, against a daemon started with a tiny --default-quota.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, KvError } from '../src/index.js';
import { startDaemon } from './helpers/daemon.js';

const QUOTA = 200;
let daemon;
let kv;

before(async () => {
  daemon = await startDaemon({ quota: QUOTA });
  kv = createClient({ socketPath: daemon.socketPath });
});

after(async () => {
  await kv?.close();
  await daemon?.destroy();
});

test('a set over the quota fails with QUOTA_EXCEEDED and writes nothing', async () => {
  assert.equal((await kv.usage()).quota, QUOTA);
  await kv.set('small', 'fits');
  const before = await kv.usage();
  let caught;
  try {
    await kv.set('large-data', 'x'.repeat(QUOTA));
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof KvError);
  assert.equal(caught.code, 'QUOTA_EXCEEDED');
  // The seed's check works unchanged.
  assert.ok(caught.message.includes('quota exceeded'), caught.message);
  assert.equal(caught.op, 'set');
  assert.equal(await kv.has('large-data'), false);
  assert.deepEqual(await kv.usage(), before);
});

test('the limit is exact: usage may reach the quota but not pass it', async () => {
  await kv.clear();
  // key "k" (1 byte) + JSON string with quotes: 1 + 2 + n bytes.
  await kv.set('k', 'x'.repeat(QUOTA - 3));
  assert.equal((await kv.usage()).bytes, QUOTA);
  await assert.rejects(kv.set('j', 1), (err) => err.code === 'QUOTA_EXCEEDED');
  // Overwrites count the difference; deletes free space at once.
  await kv.set('k', 'y'.repeat(QUOTA - 3));
  await assert.rejects(kv.set('k', 'y'.repeat(QUOTA - 2)), (err) => err.code === 'QUOTA_EXCEEDED');
  assert.equal(await kv.delete('k'), true);
  assert.equal(await kv.set('j', 1), true);
});

test('setMany over the quota writes none of its items', async () => {
  await kv.clear();
  await assert.rejects(
    kv.setMany([{ key: 'a', value: 'x'.repeat(50) }, { key: 'b', value: 'x'.repeat(QUOTA) }]),
    (err) => err.code === 'QUOTA_EXCEEDED' && err.message.includes('quota exceeded'),
  );
  assert.deepEqual(await kv.hasMany(['a', 'b']), [false, false]);
});

test('incr that would create a key over the quota fails the same way', async () => {
  await kv.clear();
  await kv.set('filler', 'x'.repeat(QUOTA - 10));
  await assert.rejects(kv.incr('a-long-counter-name'), (err) => err.code === 'QUOTA_EXCEEDED');
});

test('an expired entry never causes a refusal', async () => {
  await kv.clear();
  await kv.set('temp', 'x'.repeat(QUOTA - 10), 100);
  await new Promise((r) => setTimeout(r, 250));
  assert.equal(await kv.set('next', 'x'.repeat(QUOTA - 10)), true);
});
