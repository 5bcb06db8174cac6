// Compiled by `tsc -p test/types` in npm test: the hand-written declarations
// must describe the API and make KeyvSidecar a valid Keyv store.
import Keyv, { type KeyvStoreAdapter } from 'keyv';
import { createClient, Client, KvError, ErrorCodes, KeyvSidecar, type HelloInfo, type Usage, type ErrorCode } from 'kvsidecar';
import KeyvSidecarDefault, { KeyvSidecar as KeyvSidecarNamed } from 'kvsidecar/keyv';

async function main(): Promise<void> {
  const kv: Client = createClient({ socketPath: '/tmp/kv.sock', timeout: 1000 });
  const ok: true = await kv.set('user', { name: 'John', age: 30 }, 3600000);
  const user = await kv.get<{ name: string; age: number }>('user');
  const name: string | undefined = user?.name;
  const exists: boolean = await kv.has('user');
  const existed: boolean = await kv.delete('user');
  const removed: number = await kv.clear();
  const many: Array<number | undefined> = await kv.getMany<number>(['a', 'b']);
  await kv.setMany([{ key: 'a', value: 1 }, { key: 'b', value: 'x', ttl: 10 }]);
  const dels: boolean[] = await kv.deleteMany(['a']);
  const hs: boolean[] = await kv.hasMany(['a']);
  for await (const k of kv.keys('user:')) { const s: string = k; void s; }
  for await (const [k, v] of kv.entries<number>('n:', { pageSize: 10 })) { const n: number = v; void k; void n; }
  const page = await kv.list({ prefix: 'p', limit: 10, values: true });
  const next: string | null = page.cursor;
  const count: number = await kv.incr('hits', 1, 60000);
  const usage: Usage = await kv.usage();
  await kv.ping();
  const info: HelloInfo = await kv.connect();
  const max: number = info.limits.maxBatch;
  kv.on('connectionError', (e) => { const c: ErrorCode = e.code; void c; });
  kv.on('connect', (i) => { const p: string = i.project; void p; });
  try {
    await kv.set('big', 'x');
  } catch (error) {
    if (error instanceof KvError && error.code === ErrorCodes.QUOTA_EXCEEDED) {
      const m: string = error.message;
      void m;
    }
  }
  await kv.close();

  const store: KeyvStoreAdapter = new KeyvSidecar({ socketPath: '/tmp/kv.sock' });
  const keyv = new Keyv({ store: new KeyvSidecar(), namespace: 'app' });
  const k2 = new Keyv(new KeyvSidecarDefault({ client: kv }));
  const same: typeof KeyvSidecar = KeyvSidecarNamed;
  await keyv.set('a', 1, 1000);
  await keyv.disconnect();
  void [ok, name, exists, existed, removed, many, dels, hs, next, count, usage, max, store, k2, same];
}
void main;
