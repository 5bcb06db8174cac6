// A caller the daemon refuses: every call fails with FORBIDDEN and the
// daemon's reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createClient, KvError } from '../src/index.js';
import { startDaemon } from './helpers/daemon.js';

test('a caller whose uid maps to no project gets FORBIDDEN with the reason', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvsidecar-uidmap-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const uid = process.getuid();
  const other = uid === 4242 ? 4343 : 4242;
  const map = path.join(dir, 'uids');
  fs.writeFileSync(map, `${other} someone-else\n`);
  const d = await startDaemon({ identity: ['--uid-map', map] });
  t.after(() => d.destroy());
  const kv = createClient({ socketPath: d.socketPath });
  const results = await Promise.allSettled([kv.get('a'), kv.set('b', 1), kv.getMany(['a', 'b'])]);
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    assert.ok(r.reason instanceof KvError);
    assert.equal(r.reason.code, 'FORBIDDEN', r.reason.message);
    assert.match(r.reason.message, new RegExp(`uid ${uid}`));
  }
  await kv.close();
});
