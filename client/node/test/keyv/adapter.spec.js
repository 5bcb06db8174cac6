// KeyvSidecar behaviour beyond the compliance suite: TTL enforced by the
// daemon, exact round-trips of Keyv's serialized strings, namespaces larger
// than one page, bulk methods, 'error' events and disconnect().
import { describe, it, expect, inject, beforeAll, afterAll, beforeEach } from 'vitest';
import Keyv from 'keyv';
import { KeyvSidecar } from 'kvsidecar/keyv';
import { KeyvSidecar as FromMain, createClient, KvError } from 'kvsidecar';
import { startDaemon } from '../helpers/daemon.js';

const socketPath = inject('socketPath');
process.env.KVSIDECAR_BIN ??= inject('kvsidecarBin');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cleanup = [];

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

function adapter(options = {}) {
  const s = new KeyvSidecar({ socketPath, ...options });
  cleanup.push(() => s.disconnect());
  return s;
}

beforeEach(async () => {
  const kv = createClient({ socketPath });
  await kv.clear();
  await kv.close();
});

describe('KeyvSidecar', () => {
  it('is exported from the main entry too', () => {
    expect(FromMain).toBe(KeyvSidecar);
  });

  it('stores the string Keyv serialized, and returns it unchanged', async () => {
    const store = adapter();
    const keyv = new Keyv({ store });
    const value = { name: 'John', tags: ['a'], nested: { n: 1.5, ok: true, none: null } };
    let serialized;
    keyv.hooks.addHandler('postSet', (data) => {
      serialized = data.value;
    });
    await keyv.set('user', value);
    const raw = await store.get('keyv:user');
    expect(typeof serialized).toBe('string');
    expect(raw).toBe(serialized);
    expect(JSON.parse(raw)).toEqual({ value });
    expect(await keyv.get('user')).toEqual(value);
  });

  it('passes Keyv TTLs to the daemon, which expires the entry itself', async () => {
    const store = adapter();
    const keyv = new Keyv({ store });
    await keyv.set('short', 'v', 1000);
    expect(await store.has('keyv:short')).toBe(true);
    await sleep(1200);
    // Not only Keyv's own expiry check: the daemon no longer has the key.
    expect(await store.get('keyv:short')).toBeUndefined();
    expect(await store.has('keyv:short')).toBe(false);
  });

  it('default ttl of the Keyv instance applies', async () => {
    const store = adapter();
    const keyv = new Keyv({ store, ttl: 200 });
    await keyv.set('a', 1);
    await sleep(350);
    expect(await store.has('keyv:a')).toBe(false);
  });

  it('getMany, setMany, hasMany, deleteMany through Keyv', async () => {
    const keyv = new Keyv({ store: adapter(), namespace: 'bulk' });
    // Keyv.setMany resolves to what the store's setMany returns; its
    // contract is one boolean per entry.
    expect(await keyv.setMany([{ key: 'a', value: 1 }, { key: 'b', value: { two: 2 } }, { key: 'c', value: [3], ttl: 60000 }]))
      .toEqual([true, true, true]);
    expect(await keyv.get(['a', 'x', 'b', 'c'])).toEqual([1, undefined, { two: 2 }, [3]]);
    expect(await keyv.getMany(['c', 'a'])).toEqual([[3], 1]);
    expect(await keyv.has(['a', 'x'])).toEqual([true, false]);
    expect(await keyv.delete(['a', 'x'])).toBe(true);
    expect(await keyv.delete(['a', 'x'])).toBe(false);
    expect(await keyv.has(['a', 'b'])).toEqual([false, true]);
  });

  it('clear() empties only its namespace, across many pages, leaving similar prefixes alone', async () => {
    const store1 = adapter();
    const keyv1 = new Keyv({ store: store1, namespace: 'ns1' });
    const keyv10 = new Keyv({ store: adapter(), namespace: 'ns10' });
    const { limits } = await store1.client.connect();
    const n = limits.maxBatch * 2 + 5;
    await keyv1.setMany(Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: i })));
    await keyv10.set('k1', 'other namespace');
    const kv = createClient({ socketPath });
    cleanup.push(() => kv.close());
    await kv.set('plain', 'no namespace');
    await keyv1.clear();
    expect(await collect(kv.keys("ns1:"))).toEqual([]);
    expect(await keyv10.get('k1')).toBe('other namespace');
    expect(await kv.get('plain')).toBe('no namespace');
  });

  it('without a namespace, clear() empties the whole project', async () => {
    const keyv = new Keyv({ store: adapter(), namespace: undefined });
    const kv = createClient({ socketPath });
    cleanup.push(() => kv.close());
    await kv.set('x:1', 1);
    await keyv.set('y', 2);
    await keyv.clear();
    expect((await kv.usage()).entries).toBe(0);
  });

  it('iterator() walks a namespace larger than one page, in key order', async () => {
    const keyv = new Keyv({ store: adapter(), namespace: 'it' });
    const other = new Keyv({ store: adapter(), namespace: 'itx' });
    const n = 250;
    await keyv.setMany(Array.from({ length: n }, (_, i) => ({ key: `k${String(i).padStart(3, '0')}`, value: { i } })));
    await other.set('k000', 'not mine');
    const seen = await collect(keyv.iterator());
    expect(seen.length).toBe(n);
    expect(seen[0]).toEqual(['k000', { i: 0 }]);
    expect(seen[n - 1]).toEqual([`k${n - 1}`, { i: n - 1 }]);
    expect(seen.map(([k]) => k)).toEqual([...seen.map(([k]) => k)].sort());
  });

  it('can share one client between adapters; disconnect() then leaves it open', async () => {
    const client = createClient({ socketPath });
    cleanup.push(() => client.close());
    const a = new KeyvSidecar({ client });
    const b = new KeyvSidecar({ client });
    const ka = new Keyv({ store: a, namespace: 'a' });
    const kb = new Keyv({ store: b, namespace: 'b' });
    await ka.set('k', 'A');
    await kb.set('k', 'B');
    expect([await ka.get('k'), await kb.get('k')]).toEqual(['A', 'B']);
    await ka.disconnect();
    expect(client.closed).toBe(false);
    expect(await kb.get('k')).toBe('B');
  });

  it('disconnect() closes the connection it owns', async () => {
    const store = new KeyvSidecar({ socketPath });
    const keyv = new Keyv({ store });
    await keyv.set('a', 1);
    await keyv.disconnect();
    expect(store.client.closed).toBe(true);
    await expect(store.get('keyv:a')).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it("emits 'error' through Keyv when the daemon cannot be reached", async () => {
    const store = new KeyvSidecar({ socketPath: '/nonexistent/kv.sock' });
    const keyv = new Keyv({ store });
    const errors = [];
    keyv.on('error', (e) => errors.push(e));
    expect(await keyv.get('a')).toBeUndefined(); // Keyv's get swallows store errors
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]).toBeInstanceOf(KvError);
    expect(errors[0].code).toBe('UNAVAILABLE');
    expect(errors[0].message).toContain('/nonexistent/kv.sock');
    await keyv.disconnect();
  });

  it('a store without listeners does not throw on connection errors by itself', async () => {
    const store = new KeyvSidecar({ socketPath: '/nonexistent/kv.sock' });
    await expect(store.get('a')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await store.disconnect();
  });
});

describe('KeyvSidecar against a daemon with a tiny quota', () => {
  let daemon;
  beforeAll(async () => {
    daemon = await startDaemon({ quota: 100 });
  });
  afterAll(async () => {
    await daemon?.destroy();
  });

  it("a refused set resolves to false and emits 'error' with QUOTA_EXCEEDED", async () => {
    const store = new KeyvSidecar({ socketPath: daemon.socketPath });
    const keyv = new Keyv({ store });
    const errors = [];
    keyv.on('error', (e) => errors.push(e));
    expect(await keyv.set('big', 'x'.repeat(200))).toBe(false);
    expect(errors).toHaveLength(1);
    expect(errors[0].code).toBe('QUOTA_EXCEEDED');
    expect(errors[0].message).toContain('quota exceeded');
    expect(await keyv.has('big')).toBe(false);
    await keyv.disconnect();
  });

  it('with throwOnErrors, Keyv rethrows the KvError', async () => {
    const keyv = new Keyv({ store: new KeyvSidecar({ socketPath: daemon.socketPath }), throwOnErrors: true });
    keyv.on('error', () => {});
    await expect(keyv.set('big', 'x'.repeat(200))).rejects.toMatchObject({ code: 'QUOTA_EXCEEDED' });
    await keyv.disconnect();
  });
});

async function collect(it) {
  const out = [];
  for await (const x of it) out.push(x);
  return out;
}
