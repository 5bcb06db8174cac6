// `npm test`: builds the daemon once (unless $KVSIDECAR_BIN names one), then
// runs the node:test files, the type check of the declarations, and the Keyv
// suites (vitest) with it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildDaemon } from './helpers/daemon.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '..');
let tmp = null;
const env = { ...process.env };
if (!env.KVSIDECAR_BIN) {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvsidecar-bin-'));
  console.log('building the daemon (go build ./cmd/kvsidecar)…');
  env.KVSIDECAR_BIN = buildDaemon(tmp);
}

function run(args) {
  const r = spawnSync(process.execPath, args, { cwd: pkg, env, stdio: 'inherit' });
  return r.status ?? 1;
}

let status = 0;
try {
  const files = fs.readdirSync(here).filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join('test', f));
  status = run(['--test', ...files]) || status;
  console.log('type-checking index.d.ts and keyv.d.ts (tsc -p test/types)…');
  status = run([path.join('node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join('test', 'types')]) || status;
  status = run([path.join('node_modules', 'vitest', 'vitest.mjs'), 'run']) || status;
} finally {
  if (tmp !== null) fs.rmSync(tmp, { recursive: true, force: true });
}
process.exit(status);
